//! WASM tasks end to end: CoQA scoring against hand-derived official scores, the two CoQA
//! modes, the sandbox against hostile tasks, and a task built out of tree. The components
//! come from `make build` (cargo build --target wasm32-wasip2 of the tasks workspace).

mod common;

use common::{llq, root, stderr, target_dir, wasm, write};
use llq_host::task::{score_all, Limits, Request, Response, TaskRuntime};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn sample() -> PathBuf {
    root().join("tests/fixtures/coqa/coqa-dev-sample.json")
}

/// Predictions for the 12 turns of the real sample dialogue (story 3dr23u6we5exclen4th8uq9rb42tel,
/// source mctest), chosen to exercise each rule. Expected per-turn scores, derived by hand
/// from the official formulas (normalize; multiset F1; leave-one-out over the 4 golds):
///  1 "White."  golds white×4                                → em 1, f1 1
///  2 "a barn"  golds "in a barn"×3, "in a barn near"; norm "barn" vs "in barn" → F1 2/3,
///              every leave-one-out set keeps an "in barn"   → em 0, f1 2/3
///  3 "yes"     golds no×4                                   → 0, 0
///  4 "her mommy and 5 other sisters" (3 of 4 golds)         → every set keeps a match: 1, 1
///  5 "white"   golds "orange and white" (F1 1/2), "orange with white tiger stripes" (1/3),
///              orange×2 (0): sets without g0 → 1/3, the other three → 1/2: f1 (1/3+3/2)/4 = 11/24
///  6 (no prediction)                                        → counts as 0, 0
///  7 "She painted herself like them": vs "she painted herself" 3/5·1 → F1 3/4; vs
///              "paint herself like them" 3/5·3/4 → 2/3; every set keeps a 3/4 → f1 3/4, em 0
///  8 "farmer"  golds "the farmer" → "farmer" (match), "the farmer's" → "farmers" (apostrophe
///              dropped, no match) ×2, "the old farmer's": only the set without g0 misses → 3/4, 3/4
///  9 "laughing" golds "they started laughing"×2 (1/2), "rubbed her face" (0), "started laughing"
///              (2/3): sets without g3 → 1/2, others → 2/3: f1 (3·2/3 + 1/2)/4 = 5/8
/// 10 "the bucket" → "bucket": vs "bucket of water" 1/2, "dropped her into big bucket of water" 2/7,
///              "into big bucket of water" 1/3, "big bucket of water" 2/5: set without g0 → 2/5,
///              others → 1/2: f1 (2/5 + 3/2)/4 = 19/40
/// 11 "licked her face and purred": 3 of 5 tokens, recall 1 → f1 3/4
/// 12 ""        empty prediction                            → 0, 0
/// EM total 1+1+3/4 = 2.75 → 2.75/12 = 22.916… → 22.9.
/// F1 total 1+2/3+1+11/24+3/4+3/4+5/8+19/40+3/4 = 6.475 → 6.475/12 = 53.958… → 54.0.
const SAMPLE_PREDICTIONS: &[(u32, &str)] = &[
    (1, "White."),
    (2, "a barn"),
    (3, "yes"),
    (4, "her mommy and 5 other sisters"),
    (5, "white"),
    (7, "She painted herself like them"),
    (8, "farmer"),
    (9, "laughing"),
    (10, "the bucket"),
    (11, "licked her face and purred"),
    (12, ""),
];

#[test]
fn coqa_official_scores_of_the_sample_dialogue_match_the_hand_derived_ones() {
    let dir = tempfile::tempdir().unwrap();
    let preds: Vec<serde_json::Value> = SAMPLE_PREDICTIONS
        .iter()
        .map(|(t, a)| serde_json::json!({"id": "3dr23u6we5exclen4th8uq9rb42tel", "turn_id": t, "answer": a}))
        .collect();
    let p = write(dir.path(), "preds.json", &serde_json::to_string(&preds).unwrap());
    let out_json = dir.path().join("report.json");
    let out = llq(&[
        "score",
        "--task",
        wasm("coqa").to_str().unwrap(),
        "--data",
        sample().to_str().unwrap(),
        "--predictions",
        &p,
        "--out",
        out_json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 of 12 requests have no prediction"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expect = |k: &str, em: f64, f1: f64, turns: u64| {
        assert_eq!(v[k], serde_json::json!({"em": em, "f1": f1, "turns": turns}), "{k}");
    };
    expect("children_stories", 22.9, 54.0, 12);
    expect("in_domain", 22.9, 54.0, 12);
    expect("overall", 22.9, 54.0, 12);
    for k in ["literature", "mid-high_school", "news", "wikipedia", "reddit", "science", "out_domain"] {
        expect(k, 0.0, 0.0, 0);
    }
    // The report file keeps unrounded metrics with standard errors.
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(out_json).unwrap()).unwrap();
    let f1 = r["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "f1").unwrap();
    assert!((f1["value"].as_f64().unwrap() - 6.475 / 12.0 * 100.0).abs() < 1e-9, "{f1}");
    assert!(f1["stderr"].as_f64().unwrap() > 0.0);
    assert_eq!(r["missing"], 1);
}

/// A two-turn story whose last turn has golds [white, white, White, grey].
fn white_grey_story(dir: &Path) -> String {
    let row = serde_json::json!({
        "id": "s1", "source": "wikipedia", "story": "A cat sat.",
        "questions": {"input_text": ["What sat?", "What color?"]},
        "answers": {"input_text": ["a cat", "white"]},
        "additional_answers": {"0": {"input_text": ["a cat", "white"]}, "1": {"input_text": ["the cat", "White"]}, "2": {"input_text": ["cat", "grey"]}}
    });
    write(dir, "story.jsonl", &format!("{row}\n"))
}

#[test]
fn coqa_modes_differ_exactly_where_lm_eval_deduplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data = white_grey_story(dir.path());
    let preds = write(
        dir.path(),
        "p.json",
        r#"[{"id":"s1","turn_id":1,"answer":"a cat"},{"id":"s1","turn_id":2,"answer":"white"}]"#,
    );
    let f1_of = |mode: &str| {
        let out_json = dir.path().join(format!("{mode}.json"));
        let o = llq(&[
            "score",
            "--task",
            wasm("coqa").to_str().unwrap(),
            "--data",
            &data,
            "--predictions",
            &preds,
            "--task-opt",
            &format!("mode={mode}"),
            "--out",
            out_json.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(out_json).unwrap()).unwrap();
        let f1 = r["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "f1").unwrap()["value"]
            .as_f64()
            .unwrap();
        (r["requests"].as_u64().unwrap(), f1, serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap())
    };
    // Official: both turns, no de-duplication: every leave-one-out set of turn 2 still holds a
    // "white" → 100; turn 1 "a cat" vs a cat/a cat/the cat/cat all normalize to "cat" → 100.
    let (n, f1, native) = f1_of("official");
    assert_eq!((n, f1), (2, 100.0));
    assert_eq!(native["wikipedia"]["f1"], 100.0);
    // lm-eval: last turn only, golds de-duplicated case-insensitively to [white, grey]:
    // leave-one-out gives max over [grey] = 0 and over [white] = 1 → 0.5, on a 0–1 scale.
    let (n, f1, native) = f1_of("lm-eval");
    assert_eq!((n, f1), (1, 0.5));
    assert_eq!(native["coqa"]["f1"], 0.5);
}

#[test]
fn coqa_requests_carry_lm_eval_prompts_and_options() {
    let mut rt = TaskRuntime::load(&wasm("coqa"), Limits::default()).unwrap();
    let data = std::fs::read(sample()).unwrap();
    let reqs = rt.requests(&data, &[]).unwrap();
    assert_eq!(reqs.len(), 12);
    assert_eq!(reqs[1].id, "3dr23u6we5exclen4th8uq9rb42tel#2");
    let llq_host::task::RequestKind::Generate(g) = &reqs[1].kind else { panic!("not a generation request") };
    assert!(
        g.prompt.ends_with("\n\nQ: What color was Cotton?\n\nA: white\n\nQ: Where did she live?\n\nA:"),
        "{}",
        g.prompt
    );
    assert_eq!((g.stop.clone(), g.max_new_tokens), (vec!["\nQ:".to_string()], 256));
    let reqs = rt
        .requests(&data, &[("max_new_tokens".into(), "32".into()), ("mode".into(), "lm-eval".into())])
        .unwrap();
    let llq_host::task::RequestKind::Generate(g) = &reqs[0].kind else { panic!() };
    assert_eq!((reqs.len(), g.max_new_tokens), (1, 32));
    // Bad options and bad data are errors that say what is wrong.
    let e = format!("{:#}", rt.requests(&data, &[("mode".into(), "fast".into())]).unwrap_err());
    assert!(e.contains("option `mode` must be one of official, lm-eval, got `fast`"), "{e}");
    let e = format!("{:#}", rt.check_options(&[("limit".into(), "3".into())]).unwrap_err());
    assert!(
        e.contains("task `coqa`") && e.contains("unknown option `limit` (known: mode, max_new_tokens)"),
        "{e}"
    );
    // The host checks values with the same parser before any work, with the same message.
    let e = format!("{:#}", rt.check_options(&[("max_new_tokens".into(), "many".into())]).unwrap_err());
    assert!(e.contains("option `max_new_tokens` expects int, got `many`"), "{e}");
    let e = format!("{:#}", rt.requests(b"{\"version\": 1}", &[]).unwrap_err());
    assert!(e.contains("rejected the data: CoQA JSON object has no `data` list"), "{e}");
}

#[test]
fn score_command_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad_preds = write(dir.path(), "bad.json", "{\"answers\": 3}");
    let o = llq(&[
        "score",
        "--task",
        wasm("coqa").to_str().unwrap(),
        "--data",
        sample().to_str().unwrap(),
        "--predictions",
        &bad_preds,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.json") && stderr(&o).contains("not the official CoQA layout"),
        "{}",
        stderr(&o)
    );
    let o = llq(&[
        "score",
        "--task",
        "no/such.wasm",
        "--data",
        sample().to_str().unwrap(),
        "--predictions",
        &bad_preds,
    ]);
    assert!(stderr(&o).contains("cannot read task no/such.wasm"), "{}", stderr(&o));
    let not_wasm = write(dir.path(), "fake.wasm", "hello");
    let o = llq(&["tasks", "inspect", &not_wasm]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("fake.wasm is not a WASM component"), "{}", stderr(&o));
}

// ---- the sandbox -------------------------------------------------------------------------

fn hostile(limits: Limits) -> TaskRuntime {
    TaskRuntime::load(&wasm("hostile"), limits).unwrap()
}
fn mode(m: &str) -> Vec<(String, String)> {
    vec![("mode".into(), m.into())]
}
fn three_requests(rt: &mut TaskRuntime, m: &str) -> Vec<Request> {
    rt.requests(b"a\nb\nc\n", &mode(m)).unwrap()
}
fn answer(_: &Request) -> Option<Response> {
    Some(Response::Generated("x".into()))
}

#[test]
fn a_trap_in_score_costs_one_sample_and_shows_the_panic_message() {
    let mut rt = hostile(Limits::default());
    let reqs = three_requests(&mut rt, "panic");
    let out = score_all(&mut rt, &reqs, answer, &mode("panic"));
    assert_eq!(out.failed.len(), 1);
    let (id, e) = &out.failed[0];
    assert_eq!(id, "b");
    assert!(
        e.contains("task `hostile`")
            && e.contains("score(request \"b\")")
            && e.contains("hostile task gives up on request b"),
        "{e}"
    );
    // a and c were scored, c by a fresh instance after the trap.
    let scored: Vec<&str> =
        out.samples.iter().filter(|s| !s.metrics.is_empty()).map(|s| s.request.id.as_str()).collect();
    assert_eq!(scored, ["a", "c"]);
    let report = rt.aggregate(&out.samples, &mode("panic")).unwrap();
    assert_eq!(report.native_json, "{\"scored\": 2}");
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let mut rt = hostile(Limits { fuel: 50_000_000, ..Limits::default() });
    let reqs = three_requests(&mut rt, "loop");
    let out = score_all(&mut rt, &reqs[..1], answer, &mode("loop"));
    assert!(
        out.failed[0]
            .1
            .contains("ran out of fuel (50000000 units; raise --task-fuel) in score(request \"a\")"),
        "{}",
        out.failed[0].1
    );
    // The host and the runtime survive: the next call works on a fresh instance.
    assert_eq!(rt.describe().unwrap().name, "hostile");
    assert_eq!(rt.score(&reqs[1], &Response::Generated("x".into()), &mode("none")).unwrap()[0].value, 1.0);
}

#[test]
fn an_infinite_loop_hits_the_wall_clock_deadline() {
    let mut rt = hostile(Limits { fuel: u64::MAX, timeout: Duration::from_millis(200), ..Limits::default() });
    let reqs = three_requests(&mut rt, "loop");
    let t = std::time::Instant::now();
    let e = format!("{:#}", rt.score(&reqs[0], &Response::Generated("x".into()), &mode("loop")).unwrap_err());
    assert!(e.contains("exceeded its time limit (200ms; raise --task-timeout)"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn unbounded_memory_growth_hits_the_memory_limit() {
    let mut rt = hostile(Limits { memory: 64 << 20, ..Limits::default() });
    let reqs = three_requests(&mut rt, "grow");
    let e = format!("{:#}", rt.score(&reqs[0], &Response::Generated("x".into()), &mode("grow")).unwrap_err());
    assert!(e.contains("hit its memory limit (64 MiB; raise --task-memory)"), "{e}");
    assert!(!e.contains("backtrace"), "{e}");
}

#[test]
fn malformed_requests_and_metrics_are_refused() {
    let mut rt = hostile(Limits::default());
    let e = format!("{:#}", rt.requests(b"a\nb\n", &mode("dup")).unwrap_err());
    assert!(e.contains("malformed request #2: duplicate id \"a\""), "{e}");
    let reqs = three_requests(&mut rt, "nan");
    let e = format!("{:#}", rt.score(&reqs[0], &Response::Generated("x".into()), &mode("nan")).unwrap_err());
    assert!(e.contains("non-finite metric `ok` = NaN for request \"a\""), "{e}");
}

#[test]
fn a_task_importing_the_filesystem_is_refused_at_load() {
    let e = match TaskRuntime::load(&wasm("hostile_fs"), Limits::default()) {
        Ok(_) => panic!("a filesystem-importing task loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("imports")
            && e.contains("wasi:filesystem/preopens")
            && e.contains("grants tasks no filesystem"),
        "{e}"
    );
}

#[test]
fn a_task_built_out_of_tree_runs_in_the_same_host_binary() {
    // Its own workspace and lock file, the SDK by path: what a third party does.
    let manifest = root().join("tests/third-party-task/Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the third-party task failed");
    let task = target_dir().join("wasm32-wasip2/release/exact_match.wasm");
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d.tsv", "2+2=\t4\nCapital of France?\tParis\nSky color?\tblue\n");
    let preds = write(dir.path(), "p.jsonl", "{\"id\":\"1\",\"prediction\":\" 4\\nmore\"}\n{\"id\":\"2\",\"prediction\":\"paris\"}\n{\"id\":\"3\",\"prediction\":\"green\"}\n");
    let o = llq(&["score", "--task", task.to_str().unwrap(), "--data", &data, "--predictions", &preds]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["acc"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12, "{v}");
}

#[test]
fn perplexity_and_kl_aggregate_to_hand_computed_values() {
    use llq_host::task::{RequestKind, RollingResult};
    let mut rt = TaskRuntime::load(&wasm("perplexity"), Limits::default()).unwrap();
    let reqs = rt.requests("First doc,\nsame doc.\n\nSecond doc.\n".as_bytes(), &[]).unwrap();
    assert_eq!(reqs.len(), 2);
    assert!(matches!(&reqs[0].kind, RequestKind::LoglikelihoodRolling(t) if t == "First doc,\nsame doc."));
    let roll = |lp: &[f64], bytes: u32, kl: &[f64], top1: &[u8]| {
        Response::Rolling(RollingResult {
            logprob: lp.iter().sum(),
            token_logprobs: lp.to_vec(),
            tokens: lp.len() as u32,
            bytes,
            kl: kl.to_vec(),
            top1_agree: top1.to_vec(),
        })
    };
    let responses =
        [roll(&[-1.0, -2.0], 10, &[0.1, 0.3], &[1, 0]), roll(&[-0.5, -0.5], 6, &[0.0, 0.2], &[1, 1])];
    let out = score_all(&mut rt, &reqs, |r| Some(responses[if r.id == "doc1" { 0 } else { 1 }].clone()), &[]);
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let report = rt.aggregate(&out.samples, &[]).unwrap();
    let get =
        |n: &str| report.metrics.iter().find(|m| m.name == n).unwrap_or_else(|| panic!("no {n}")).clone();
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    // NLL per token 1, 2, 0.5, 0.5: mean 1 → perplexity e; sample variance (5.5 − 4)/3 = 0.5,
    // stderr √(0.5/4) = 0.353553…; perplexity ± e·0.353553… = 0.961055…
    close(get("nll").value, 1.0);
    close(get("perplexity").value, std::f64::consts::E);
    close(get("perplexity").stderr.unwrap(), std::f64::consts::E * 0.125f64.sqrt());
    // 4 nats over 16 bytes: 4 / (16 ln 2) bits per byte.
    close(get("bits_per_byte").value, 4.0 / (16.0 * std::f64::consts::LN_2));
    // KL 0.1, 0.3, 0, 0.2: mean 0.15, variance (0.14 − 0.09)/3, stderr √(0.05/12); max 0.3; top-1 3/4.
    close(get("kl_mean").value, 0.15);
    close(get("kl_mean").stderr.unwrap(), (0.05f64 / 12.0).sqrt());
    close(get("kl_max").value, 0.3);
    close(get("top1_agree").value, 0.75);
    // Inconsistent results from a host are the task's errors, naming the request.
    let bad = roll(&[-1.0], 3, &[0.1, 0.2], &[1, 1]);
    let e = format!("{:#}", rt.score(&reqs[0], &bad, &[]).unwrap_err());
    assert!(
        e.contains("request doc1: baseline comparison has 2 KL values and 2 top-1 flags for 1 tokens"),
        "{e}"
    );
    let e = format!("{:#}", rt.score(&reqs[0], &Response::Generated("x".into()), &[]).unwrap_err());
    assert!(e.contains("needs a rolling log-likelihood result"), "{e}");
}

#[test]
fn tasks_inspect_shows_options_in_the_plugin_layout() {
    let o = llq(&["tasks", "inspect", wasm("coqa").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mode = v["options"].as_array().unwrap().iter().find(|o| o["name"] == "mode").unwrap();
    // The same fields as `plugins inspect` (llq_sdk::OptionSpec): type + choices, not the WIT spelling.
    assert_eq!(mode["type"], "string");
    assert_eq!(mode["choices"], serde_json::json!(["official", "lm-eval"]));
    assert_eq!(mode["default"], "official");
    let spec: llq_sdk::OptionSpec = serde_json::from_value(mode.clone()).unwrap();
    assert_eq!(spec.kind_spelling(), "string:official|lm-eval");
}

/// The store caps memories, instances and tables (issue 14: sixteen memories, each up to
/// --task-memory, and tables of any size were allowed). The built tasks fit the defaults; one
/// instance or table fewer than a cargo-built component needs and it is refused, with the
/// task named.
#[test]
fn the_sandbox_caps_instances_and_tables() {
    for limits in [Limits::default(), Limits { tables: 3, instances: 3, ..Limits::default() }] {
        let mut rt = TaskRuntime::load(&wasm("coqa"), limits).unwrap();
        assert_eq!(rt.describe().unwrap().name, "coqa");
    }
    for (limits, what) in [
        (Limits { instances: 2, ..Limits::default() }, "instances 2"),
        (Limits { tables: 1, ..Limits::default() }, "tables 1"),
        (Limits { memories: 0, ..Limits::default() }, "memories 0"),
    ] {
        let mut rt = TaskRuntime::load(&wasm("coqa"), limits).unwrap();
        let e = format!("{:#}", rt.describe().map(|_| ()).expect_err(what));
        assert!(e.contains("coqa"), "{what}: {e}");
    }
}
