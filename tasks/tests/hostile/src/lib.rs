//! Misbehaves on purpose, as chosen by `--task-opt mode=...`, so the host's sandbox can be
//! tested: `loop` spins forever in `score`, `grow` allocates without bound in `score`,
//! `panic` panics in `score` for request "b" only, `dup` returns duplicate request ids,
//! `nan` returns a NaN metric. Data: one request id per line.
use llq_task_sdk::*;

struct Hostile;

impl Task for Hostile {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "hostile".into(),
            version: "0.0.0".into(),
            description: "sandbox test task".into(),
            metrics: vec![MetricSpec { name: "ok".into(), higher_is_better: true, help: String::new() }],
            options: vec![OptionSpec {
                name: "mode".into(),
                kind: "enum:none|loop|grow|panic|dup|nan".into(),
                default: "none".into(),
                help: String::new(),
            }],
        }
    }

    fn requests(data: Vec<u8>, options: &Options) -> Result<Vec<Request>, String> {
        let text = String::from_utf8(data).map_err(|_| "not text")?;
        let mut ids: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        if options.get("mode") == "dup" {
            ids.push(ids[0].clone());
        }
        Ok(ids
            .into_iter()
            .map(|id| Request {
                id,
                kind: RequestKind::Generate(GenerateUntil {
                    prompt: "p".into(),
                    stop: vec![],
                    max_new_tokens: 1,
                }),
                doc: String::new(),
            })
            .collect())
    }

    fn score(request: Request, _response: Response, options: &Options) -> Result<Vec<Metric>, String> {
        match options.get("mode") {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" if request.id == "b" => panic!("hostile task gives up on request {}", request.id),
            "nan" => Ok(vec![Metric { name: "ok".into(), value: f64::NAN }]),
            _ => Ok(vec![Metric { name: "ok".into(), value: 1.0 }]),
        }
    }

    fn aggregate(samples: Vec<Scored>, _options: &Options) -> Result<Report, String> {
        let v: Vec<f64> = samples.iter().filter_map(|s| metric(s, "ok")).collect();
        Ok(Report {
            metrics: vec![mean_metric("ok", &v)],
            native_json: format!("{{\"scored\": {}}}", v.len()),
        })
    }
}

export_task!(Hostile);
