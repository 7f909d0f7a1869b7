//! `llq-host sweep`: a spec over the llama2.c fixture model, the unquantized baseline, two
//! plugins and a method whose options the plugin refuses, on the perplexity task. Cells run
//! as separate processes; a failed cell is recorded and does not stop the others; a second
//! `run` redoes nothing that is done; shards split the plan without overlap; changing an input
//! makes exactly the cells that depend on it pending again.

mod common;

use common::*;
use std::path::Path;

fn write_spec(dir: &Path, name: &str, nf4_opts: &str) -> String {
    let text = write(
        dir,
        "story.txt",
        "Once upon a time, there was a little girl named Lily. She loved to play outside.\n\nOne day, she saw a big red ball in the park.\n",
    );
    let body = format!(
        r#"name = "smoke"
[[models]]
name = "stories"
path = "{model}"
[[methods]]
name = "none"
[[methods]]
name = "nf4"
plugin = "{nf4}"
opts = [{nf4_opts}]
[[methods]]
name = "int8"
plugin = "{int8}"
[[methods]]
name = "broken"
plugin = "{nf4}"
opts = ["block_size=7"]
[[tasks]]
name = "ppl"
wasm = "{ppl}"
data = "{text}"
"#,
        model = p(STORIES),
        nf4 = plugin("nf4"),
        int8 = plugin("int8"),
        ppl = wasm("perplexity").display(),
    );
    write(dir, name, &body)
}

fn out_str(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status(spec: &str, out: &str) -> String {
    let o = llq(&["sweep", "status", spec, "--out", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    out_str(&o)
}

#[test]
fn sweep_runs_resumes_records_failures_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "smoke.toml", "\"double_quant=true\"");
    let out = dir.path().join("out").display().to_string();

    let o = llq(&["sweep", "plan", &spec, "--out", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = out_str(&o);
    for id in ["stories.none.ppl", "stories.nf4.ppl", "stories.int8.ppl", "stories.broken.ppl"] {
        assert!(plan.contains(id), "{plan}");
    }
    assert!(plan.contains("--opt double_quant=true") && plan.contains("4 cells"), "{plan}");

    // The broken cell fails, the others finish; the exit status says so.
    let o = llq(&["sweep", "run", &spec, "--out", &out, "--jobs", "2"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("1 of 4 cells failed (stories.broken.ppl)"), "{}", stderr(&o));
    let st = status(&spec, &out);
    assert!(st.contains("3 done") && st.contains("1 failed"), "{st}");
    let failed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&out).join("stories.broken.ppl.failed.json")).unwrap(),
    )
    .unwrap();
    assert!(failed["error"].as_str().unwrap().contains("block_size"), "{failed}");
    let results = Path::new(&out).join("stories.nf4.ppl/results.json");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    assert_eq!(r["quantization"]["method"], "nf4");
    let cell: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&out).join("stories.nf4.ppl/cell.json")).unwrap())
            .unwrap();
    assert_eq!(cell["address"].as_str().unwrap().len(), 64);
    let before = std::fs::metadata(&results).unwrap().modified().unwrap();

    // Again: only the failed cell is tried; nothing done is redone.
    let o = llq(&["sweep", "run", &spec, "--out", &out]);
    assert!(out_str(&o).contains("1 of 4 cells to run (3 done)"), "{}", out_str(&o));
    assert_eq!(std::fs::metadata(&results).unwrap().modified().unwrap(), before);

    // The report: every finished cell, the failed one named, paired differences vs `none`.
    let o = llq(&["sweep", "report", &spec, "--out", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(Path::new(&out).join("report.md")).unwrap();
    for needle in [
        "## stories × ppl",
        "| nf4 |",
        "| int8 |",
        "`stories.broken.ppl`: failed",
        "Against `none`",
        "- nf4: Δ mean token log-prob",
        "- int8: Δ mean token log-prob",
    ] {
        assert!(md.contains(needle), "{needle}:\n{md}");
    }

    // A changed option makes that method's cell stale, and only it.
    let spec2 = write_spec(dir.path(), "smoke2.toml", "\"double_quant=false\"");
    let st = status(&spec2, &out);
    assert!(st.contains("stale    stories.nf4.ppl") && st.contains("2 done"), "{st}");

    // Shards: disjoint, and together the whole plan.
    let out2 = dir.path().join("sharded").display().to_string();
    for s in ["0/2", "1/2"] {
        let o = llq(&["sweep", "run", &spec, "--out", &out2, "--shard", s]);
        let text = out_str(&o);
        assert!(text.contains("2 of 2 cells to run"), "{s}: {text}");
    }
    let st = status(&spec, &out2);
    assert!(st.contains("3 done") && st.contains("1 failed"), "{st}");

    // Bad input names what is wrong.
    let o = llq(&["sweep", "run", &spec, "--out", &out, "--shard", "2/2"]);
    assert!(!o.status.success() && stderr(&o).contains("--shard 2/2"), "{}", stderr(&o));
    let bad = write(dir.path(), "bad.toml", "name = \"x\"\nmodels = []\n");
    let o = llq(&["sweep", "plan", &bad]);
    assert!(!o.status.success() && stderr(&o).contains("bad.toml"), "{}", stderr(&o));
}
