//! `search-bits` on the tiny llama2.c model: the exact per-layer KL it caches equals the KL
//! computed here from scratch (the layer replaced in a fresh model, full forward, softmax in
//! f64); the option file it writes makes `run` quantize each layer with the chosen setting
//! and store exactly the predicted bytes; the sensitivity is reused when nothing changed and
//! re-measured when the inputs change; bad input is refused by name.

mod common;

use common::{llq, plugin, root, stderr, stdout};
use std::path::Path;

const MODEL: &str = "tests/fixtures/tinyllama/stories260K.bin";
const CANDIDATES: [&str; 3] = ["bits=2,group_size=32", "bits=4,group_size=32", "bits=8,group_size=32"];

/// The CoQA story as calibration text.
fn story(dir: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(common::SAMPLE)).unwrap()).unwrap();
    common::write(dir, "calib.txt", v["data"][0]["story"].as_str().unwrap())
}

fn search(dir: &Path, text: &str, measure: &str, extra: &[&str]) -> std::process::Output {
    let model = root().join(MODEL);
    let out = dir.join("search");
    let mut args = vec!["search-bits", "--model", model.to_str().unwrap(), "--quant"];
    let p = plugin("rtn");
    args.push(&p);
    for c in CANDIDATES {
        args.extend(["--candidate", c]);
    }
    args.extend([
        "--measure",
        measure,
        "--calib-data",
        text,
        "--calib-samples",
        "2",
        "--calib-seq-len",
        "48",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend(extra);
    llq(&args)
}

/// KL(p ‖ q) per token, mean, from two logit matrices (rows × vocab) in f64.
fn kl(p: &[f32], q: &[f32], vocab: usize) -> f64 {
    let lsm = |r: &[f32]| {
        let m = r.iter().fold(f64::MIN, |a, &b| a.max(b as f64));
        let z = r.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
        r.iter().map(|&v| v as f64 - z).collect::<Vec<f64>>()
    };
    let rows = p.len() / vocab;
    let mut sum = 0.0;
    for t in 0..rows {
        let (a, b) = (lsm(&p[t * vocab..(t + 1) * vocab]), lsm(&q[t * vocab..(t + 1) * vocab]));
        sum += a.iter().zip(&b).map(|(x, y)| x.exp() * (x - y)).sum::<f64>();
    }
    sum / rows as f64
}

fn logits(cfg: &llq_host::model::Config, w: &llq_host::model::Weights, tokens: &[u32]) -> Vec<f32> {
    let model = llq_host::model::Llama::new(cfg, w, &candle_core::Device::Cpu).unwrap();
    let mut cache = model.new_cache();
    model.step(&[tokens.to_vec()], &[0], &mut cache, false).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn exact_sensitivities_match_a_full_forward_and_run_follows_the_option_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = story(dir.path());
    let r = search(dir.path(), &text, "exact", &["--budget-of", CANDIDATES[1], "--max-kl", "0.001"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stdout(&r).contains("searched, ≤ the size of uniform bits=4,group_size=32"), "{}", stdout(&r));
    let out = dir.path().join("search");
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sensitivity.json")).unwrap()).unwrap();
    let layers = cached["sensitivity"]["layers"].as_array().unwrap();
    let m = llq_host::loader::load(root().join(MODEL).to_str().unwrap()).unwrap();
    assert_eq!(layers.len(), 7 * m.config.num_hidden_layers);

    // The same windows the search drew, and the unquantized logits over them.
    let t = llq_host::calib::text::from_file(Path::new(&text)).unwrap();
    let windows = llq_host::calib::text::windows(&m.tokenizer, &t, 2, 48, 0).unwrap();
    let base: Vec<Vec<f32>> = windows.iter().map(|w| logits(&m.config, &m.weights, w)).collect();
    let rtn = llq_host::plugin::Plugin::load(Path::new(&plugin("rtn"))).unwrap();
    let vocab = m.config.vocab_size;
    // Three layers in different blocks and roles, at 2 and 4 bits.
    for (li, c) in [(0usize, 0usize), (10, 1), (7 * m.config.num_hidden_layers - 1, 0)] {
        let name = layers[li]["name"].as_str().unwrap();
        let (k, v) = CANDIDATES[c].split_once(',').unwrap();
        let opts: Vec<(String, String)> = [k, v]
            .iter()
            .map(|kv| {
                let (a, b) = kv.split_once('=').unwrap();
                (a.to_string(), b.to_string())
            })
            .collect();
        let q = rtn.configure(&opts).unwrap();
        let mut w = m.weights.clone();
        let t = w.get_mut(name).unwrap();
        let p = q.quantize(name, t.shape[0], t.shape[1], &t.data, None).unwrap();
        t.data = q.dequantize(&p).unwrap();
        let want: f64 =
            windows.iter().zip(&base).map(|(win, b)| kl(b, &logits(&m.config, &w, win), vocab)).sum::<f64>()
                / windows.len() as f64;
        let got = layers[li]["kl"][c].as_f64().unwrap();
        assert!(want > 0.0, "{name}: quantizing it changed nothing");
        assert!(
            (got - want).abs() <= 1e-4 * want + 1e-7,
            "{name} at {}: search {got} vs full forward {want}",
            CANDIDATES[c]
        );
        assert_eq!(layers[li]["bytes"][c].as_u64().unwrap(), p.bytes(), "{name}");
    }

    // The option file through `run`: every layer gets its chosen bits, the bytes add up.
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("search.json")).unwrap()).unwrap();
    let al = &s["outcome"]["allocations"][0];
    let file = out.join(al["file"].as_str().unwrap());
    assert!(file.exists());
    let mixed =
        al["layers_per_candidate"].as_array().unwrap().iter().filter(|c| c[1].as_u64().unwrap() > 0).count();
    assert!(mixed >= 2, "the allocation at 4-bit size mixes settings: {al}");
    assert!(
        al["bits_per_weight"].as_f64().unwrap()
            <= s["outcome"]["uniform"][1][1]["bits_per_weight"].as_f64().unwrap()
    );
    let run_out = dir.path().join("run");
    let r = llq(&[
        "run",
        "--model",
        root().join(MODEL).to_str().unwrap(),
        "--quant",
        &plugin("rtn"),
        "--opt-layer-file",
        file.to_str().unwrap(),
        "--task",
        &root().join("tasks/perplexity.wasm").to_string_lossy(),
        "--data",
        &text,
        "--device",
        "cpu",
        "--out",
        run_out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let res: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_out.join("results.json")).unwrap()).unwrap();
    assert_eq!(res["size"]["quantized_bytes"].as_u64().unwrap(), al["bytes"].as_u64().unwrap());
    let pick_bytes: u64 = res["quantization"]["layers_detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(pick_bytes, al["bytes"].as_u64().unwrap());

    // Nothing changed: the sensitivity is reused; another seed measures again.
    let r = search(dir.path(), &text, "exact", &["--budget-bpw", "5"]);
    assert!(stdout(&r).contains("sensitivity reused"), "{}", stdout(&r));
    let r = search(dir.path(), &text, "exact", &["--budget-bpw", "5", "--calib-seed", "1"]);
    assert!(r.status.success() && !stdout(&r).contains("sensitivity reused"), "{}", stdout(&r));
}

#[test]
fn the_calibrated_measure_scales_the_proxy_by_one_exact_kl_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let text = story(dir.path());
    let r = search(dir.path(), &text, "calibrated", &["--reference", CANDIDATES[0], "--budget-bpw", "4"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("search/sensitivity.json")).unwrap())
            .unwrap();
    for l in cached["sensitivity"]["layers"].as_array().unwrap() {
        // Measured exactly at the reference only; the proxy falls with more bits.
        assert!(l["kl"][0].as_f64().is_some() && l["kl"][1].is_null() && l["kl"][2].is_null(), "{l}");
        let p: Vec<f64> = (0..3).map(|c| l["proxy"][c].as_f64().unwrap()).collect();
        assert!(p[0] > p[1] && p[1] > p[2] && p[2] >= 0.0, "{l}");
    }
}

#[test]
fn bad_search_input_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = story(dir.path());
    let cases: [(&[&str], &str); 6] = [
        (&["--budget-bpw", "0"], "--budget-bpw 0 must be a positive number"),
        (&[], "give a budget"),
        (&["--budget-of", "bits=3,group_size=32"], "not one of the candidates"),
        (&["--within", "bits=8,group_size=32"], "is not CANDIDATE:EPS"),
        (&["--budget-bpw", "1"], "no allocation meets budget ≤ 1 bits/weight"),
        (&["--reference", "bits=5", "--budget-bpw", "4"], "--reference bits=5 is not one of the --candidate"),
    ];
    for (extra, want) in cases {
        let r = search(dir.path(), &text, "calibrated", extra);
        assert_eq!(r.status.code(), Some(1), "{extra:?}: {}", stderr(&r));
        assert!(stderr(&r).contains(want), "{extra:?}: {}", stderr(&r));
        assert!(!stderr(&r).contains("panicked"), "{}", stderr(&r));
    }
    // A plugin that calibrates, a candidate the plugin refuses, a proxy-measured KL budget.
    let model = root().join(MODEL);
    let r = llq(&[
        "search-bits",
        "--model",
        model.to_str().unwrap(),
        "--quant",
        &plugin("gptq"),
        "--candidate",
        "bits=3",
        "--candidate",
        "bits=4",
        "--budget-bpw",
        "4",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(stderr(&r).contains("search-bits takes methods without calibration"), "{}", stderr(&r));
    let r =
        search(dir.path(), &text, "proxy", &["--candidate", "bits=99,group_size=32", "--budget-bpw", "4"]);
    assert!(stderr(&r).contains("--candidate bits=99,group_size=32"), "{}", stderr(&r));
    let r = search(dir.path(), &text, "proxy", &["--max-kl", "0.1"]);
    assert!(stderr(&r).contains("a KL budget needs a measure in nats"), "{}", stderr(&r));
    // A malformed option file for run names the file and line.
    let f = common::write(dir.path(), "bad.opts", "# ok\n*:bits=4\nlayers.0.mlp.up_proj bits=8\n");
    let r = llq(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--quant",
        &plugin("rtn"),
        "--opt-layer-file",
        &f,
        "--task",
        &root().join("tasks/perplexity.wasm").to_string_lossy(),
        "--data",
        &text,
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(stderr(&r).contains("bad.opts line 3"), "{}", stderr(&r));
}
