//! `exact-match`: a minimal llq task. Data is `prompt<TAB>answer` per line; the request id
//! is the line number; a sample scores 1 when the first line of the generation equals the
//! answer, ignoring case and surrounding space.
use llq_task_sdk::*;

struct ExactMatch;

impl Task for ExactMatch {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "exact-match".into(),
            version: "0.1.0".into(),
            description: "first generated line equals the answer (case-insensitive)".into(),
            metrics: vec![MetricSpec {
                name: "acc".into(),
                higher_is_better: true,
                help: "fraction answered exactly".into(),
            }],
            options: vec![],
        }
    }

    fn requests(data: Vec<u8>, _options: &Options) -> Result<Vec<Request>, String> {
        let text = String::from_utf8(data).map_err(|_| "data is not UTF-8".to_string())?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let (prompt, answer) =
                    l.split_once('\t').ok_or(format!("line {}: expected prompt<TAB>answer", i + 1))?;
                Ok(Request {
                    id: (i + 1).to_string(),
                    kind: RequestKind::Generate(GenerateUntil {
                        prompt: prompt.into(),
                        stop: vec!["\n".into()],
                        max_new_tokens: 16,
                    }),
                    doc: answer.into(),
                })
            })
            .collect()
    }

    fn score(request: Request, response: Response, _options: &Options) -> Result<Vec<Metric>, String> {
        let Response::Generated(text) = response else { return Err("needs generated text".into()) };
        let first = text.trim().lines().next().unwrap_or("").trim().to_lowercase();
        Ok(vec![Metric {
            name: "acc".into(),
            value: (first == request.doc.trim().to_lowercase()) as u8 as f64,
        }])
    }

    fn aggregate(samples: Vec<Scored>, _options: &Options) -> Result<Report, String> {
        let acc: Vec<f64> = samples.iter().map(|s| metric(s, "acc").unwrap_or(0.0)).collect();
        let m = mean_metric("acc", &acc);
        Ok(Report { native_json: format!("{{\"acc\": {}}}", m.value), metrics: vec![m] })
    }
}

export_task!(ExactMatch);
