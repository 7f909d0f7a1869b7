//! Calibrated methods against an independent reference: `rtn` and `gptq` through `llq-host
//! quantize --calibration` on the weights and activations of tests/fixtures/gptq, compared
//! with bench/peers/gptq_reference.py (the published GPTQ in numpy, float64): RTN codes and
//! scales bit for bit, GPTQ codes on ≥ 99.9% of weights and the layer output error
//! ‖(W − Ŵ) Xᵀ‖² within 1% of the reference's. `awq` against bench/peers/awq_reference.py
//! (llm-awq's scale and clipping searches in numpy, on the activation rows): the same ratio
//! for every layer group and each layer's output error within 1%.

mod common;

use common::{llq, plugin, root, stderr};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/gptq").join(name)
}

/// Write a safetensors file holding only tensor `name` of `src`.
fn only(src: &SafeTensors, name: &str, path: &Path) {
    let t = src.tensor(name).unwrap();
    let view = safetensors::tensor::TensorView::new(t.dtype(), t.shape().to_vec(), t.data()).unwrap();
    safetensors::serialize_to_file(vec![(name, view)], None, path).unwrap();
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f16s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
}

/// ‖(W − Ŵ) Xᵀ‖² in f64 for row-major W, Ŵ (rows × cols) and X (tokens × cols).
fn output_error(w: &[f32], wq: &[f32], x: &[f32], cols: usize) -> f64 {
    let mut err = 0f64;
    for (wr, qr) in w.chunks(cols).zip(wq.chunks(cols)) {
        for xt in x.chunks(cols) {
            let d: f64 = (0..cols).map(|c| (wr[c] as f64 - qr[c] as f64) * xt[c] as f64).sum();
            err += d * d;
        }
    }
    err
}

/// The codes of a packed int-group matrix, decoded here from the documented layout.
fn decode_codes(words: &[u8], rows: usize, cols: usize, bits: usize) -> Vec<u32> {
    let per_row = (cols * bits).div_ceil(32);
    let w: Vec<u64> =
        words.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64).collect();
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let bit = c * bits;
            let i = r * per_row + bit / 32;
            let two = w[i] | if bit % 32 + bits > 32 { w[i + 1] << 32 } else { 0 };
            out.push(((two >> (bit % 32)) & ((1 << bits) - 1)) as u32);
        }
    }
    out
}

#[test]
fn rtn_and_gptq_match_the_numpy_reference() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let weights_bytes = std::fs::read(fixture("weights.safetensors")).unwrap();
    let weights = SafeTensors::deserialize(&weights_bytes).unwrap();
    let acts_bytes = std::fs::read(fixture("activations.safetensors")).unwrap();
    let acts = SafeTensors::deserialize(&acts_bytes).unwrap();
    let acts_path = fixture("activations.safetensors").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 11);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let method = case["method"].as_str().unwrap();
        let (rows, cols) = (case["rows"].as_u64().unwrap() as usize, case["cols"].as_u64().unwrap() as usize);
        let bits = case["bits"].as_u64().unwrap() as usize;
        let input = dir.path().join(format!("{name}.in.safetensors"));
        only(&weights, name, &input);
        let mut opts = vec![
            format!("bits={bits}"),
            format!("group_size={}", case["group_size"]),
            format!("sym={}", case["sym"]),
        ];
        for k in ["act_order", "static_groups"] {
            if case[k].as_bool() == Some(true) {
                opts.push(format!("{k}=true"));
            }
        }
        let run = |extra: &[&str], out: &Path| {
            let (p, i, o) = (plugin(method), input.display().to_string(), out.display().to_string());
            let mut args = vec!["quantize", "--quant", &p, "--input", &i, "--output", &o];
            if method == "gptq" {
                args.extend(["--calibration", acts_path.as_str()]);
            }
            for o in &opts {
                args.extend(["--opt", o.as_str()]);
            }
            args.extend_from_slice(extra);
            let r = llq(&args);
            assert!(r.status.success(), "{name} ({method} {opts:?}): {}", stderr(&r));
        };
        let packed_path = dir.path().join(format!("{name}.packed"));
        run(&[], &packed_path);
        let packed_bytes = std::fs::read(&packed_path).unwrap();
        let packed = SafeTensors::deserialize(&packed_bytes).unwrap();
        let codes = decode_codes(packed.tensor(&format!("{name}.codes")).unwrap().data(), rows, cols, bits);
        let want: Vec<u32> =
            case["codes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let same = codes.iter().zip(&want).filter(|(a, b)| a == b).count();
        let label = format!("{name} {method} {opts:?}");
        if method == "rtn" {
            assert_eq!(same, want.len(), "{label}: RTN codes differ");
            let scales: Vec<u16> = packed
                .tensor(&format!("{name}.scales"))
                .unwrap()
                .data()
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let want_s: Vec<u16> = case["scales"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| half::f16::from_f64(v.as_f64().unwrap()).to_bits())
                .collect();
            assert_eq!(scales, want_s, "{label}: RTN scales differ");
        } else {
            let frac = same as f64 / want.len() as f64;
            assert!(frac >= 0.999, "{label}: only {:.4}% of GPTQ codes match", 100.0 * frac);
        }
        if case["g_idx"].as_array().is_some() && (case["act_order"].as_bool() == Some(true)) {
            let stored = packed.tensor(&format!("{name}.g_idx")).ok().map(|t| t.data().to_vec());
            let want_g: Vec<u8> = case["g_idx"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|v| (v.as_u64().unwrap() as u32).to_le_bytes())
                .collect();
            if case["static_groups"].as_bool() != Some(true) {
                assert_eq!(stored.as_deref(), Some(want_g.as_slice()), "{label}: g_idx differs");
            }
        }
        // The layer output error of what llq computes with, against the reference's.
        let deq_path = dir.path().join(format!("{name}.deq"));
        run(&["--dequantize"], &deq_path);
        let deq_bytes = std::fs::read(&deq_path).unwrap();
        let deq = SafeTensors::deserialize(&deq_bytes).unwrap();
        let wq = f32s(deq.tensor(name).unwrap().data());
        let w = f32s(weights.tensor(name).unwrap().data());
        let err = output_error(&w, &wq, &f16s(acts.tensor(name).unwrap().data()), cols);
        let want_err = case["output_error"].as_f64().unwrap();
        let ratio = err / want_err;
        assert!((ratio - 1.0).abs() <= 0.01, "{label}: output error {err:.6e} vs reference {want_err:.6e}");
        eprintln!(
            "{label}: codes {:.4}% equal, output error ratio {ratio:.5}",
            100.0 * same as f64 / want.len() as f64
        );
    }
}

#[test]
fn awq_matches_the_numpy_reference() {
    let dir_of = |n: &str| root().join("tests/fixtures/awq").join(n);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir_of("reference.json")).unwrap()).unwrap();
    let weights_bytes = std::fs::read(dir_of("weights.safetensors")).unwrap();
    let weights = SafeTensors::deserialize(&weights_bytes).unwrap();
    let acts_bytes = std::fs::read(dir_of("activations.safetensors")).unwrap();
    let acts = SafeTensors::deserialize(&acts_bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let configs = reference["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 3);
    for (k, cfg) in configs.iter().enumerate() {
        let o = &cfg["options"];
        let opts = [
            format!("bits={}", o["bits"]),
            format!("group_size={}", o["group_size"]),
            format!("sym={}", o["sym"]),
        ];
        let out = dir.path().join(format!("awq{k}.safetensors"));
        let (p, i, a, op) = (
            plugin("awq"),
            dir_of("weights.safetensors").display().to_string(),
            dir_of("activations.safetensors").display().to_string(),
            out.display().to_string(),
        );
        let mut args = vec![
            "quantize",
            "--quant",
            &p,
            "--input",
            &i,
            "--calibration",
            &a,
            "--output",
            &op,
            "--dequantize",
        ];
        for o in &opts {
            args.extend(["--opt", o.as_str()]);
        }
        let r = llq(&args);
        assert!(r.status.success(), "awq {opts:?}: {}", stderr(&r));
        let bytes = std::fs::read(&out).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let llq_meta: serde_json::Value =
            serde_json::from_str(&meta.metadata().as_ref().unwrap()["__llq__"]).unwrap();
        let got = llq_meta["scale_groups"].as_array().unwrap();
        let want = cfg["groups"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{opts:?}: groups {got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((&g["producer"], &g["layers"]), (&w["producer"], &w["layers"]), "{opts:?}");
            let (gr, wr) = (g["info"]["ratio"].as_f64().unwrap(), w["ratio"].as_f64().unwrap());
            assert!(
                (gr - wr).abs() < 1e-12,
                "{opts:?} group after {}: ratio {gr} vs reference {wr}",
                w["producer"]
            );
            // The loss at the chosen ratio: the Hessian form against the reference's rows.
            let wl = w["losses"][(wr * 20.0).round() as usize].as_f64().unwrap();
            let gl = g["info"]["loss"].as_f64().unwrap();
            assert!((gl / wl - 1.0).abs() < 1e-6, "{opts:?}: loss {gl} vs {wl}");
        }
        let deq = SafeTensors::deserialize(&bytes).unwrap();
        for (name, want_err) in cfg["output_error"].as_object().unwrap() {
            let wq = f32s(deq.tensor(name).unwrap().data());
            let wt = weights.tensor(name).unwrap();
            let (rows, cols) = (wt.shape()[0], wt.shape()[1]);
            let w = f16s(wt.data());
            assert_eq!(wq.len(), rows * cols);
            let err = output_error(&w, &wq, &f16s(acts.tensor(name).unwrap().data()), cols);
            let want_err = want_err.as_f64().unwrap();
            let ratio = err / want_err;
            assert!(
                (ratio - 1.0).abs() <= 0.01,
                "{opts:?} {name}: output error {err:.6e} vs reference {want_err:.6e}"
            );
            eprintln!("awq {opts:?} {name}: output error ratio {ratio:.5}");
        }
    }
}

#[test]
fn gptq_without_calibration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let weights_bytes = std::fs::read(fixture("weights.safetensors")).unwrap();
    let weights = SafeTensors::deserialize(&weights_bytes).unwrap();
    let input = dir.path().join("w.safetensors");
    only(&weights, "case3.weight", &input);
    let (i, o) = (input.display().to_string(), dir.path().join("o").display().to_string());
    let r = llq(&["quantize", "--quant", &plugin("gptq"), "--input", &i, "--output", &o]);
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).contains("needs calibration: pass --calibration"), "{}", stderr(&r));
    // Activations of the wrong width name the tensor.
    let bad = dir.path().join("a.safetensors");
    let x = vec![0u8; 4 * 3 * 5];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 5], &x).unwrap();
    safetensors::serialize_to_file(vec![("case3.weight", view)], None, &bad).unwrap();
    let b = bad.display().to_string();
    let r =
        llq(&["quantize", "--quant", &plugin("gptq"), "--input", &i, "--output", &o, "--calibration", &b]);
    assert!(
        stderr(&r).contains("tensor case3.weight has shape [3, 5]; the weight needs [tokens, 128]"),
        "{}",
        stderr(&r)
    );
    // RTN takes no calibration.
    let r = llq(&["quantize", "--quant", &plugin("rtn"), "--input", &i, "--output", &o, "--calibration", &b]);
    assert!(stderr(&r).contains("plugin rtn takes no calibration data"), "{}", stderr(&r));
}

/// A calibration text for the tiny model: the CoQA story, long enough for a few windows.
fn story_text(dir: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(common::SAMPLE)).unwrap()).unwrap();
    common::write(dir, "calib.txt", v["data"][0]["story"].as_str().unwrap())
}

/// Sequential calibration of the tiny model on the story text.
fn story_settings(dir: &Path, samples: usize, seq_len: usize, seed: u64) -> llq_host::quant::CalibSettings {
    let text = std::fs::read_to_string(story_text(dir)).unwrap();
    llq_host::quant::CalibSettings {
        text: llq_host::calib::text::CalibText { source: "story".into(), sha256: String::new(), text },
        samples,
        seq_len: Some(seq_len),
        seed,
        mode: llq_host::quant::CalibMode::Sequential,
        max_sample_rows: 0,
    }
}

/// Layer 0's q/k/v input for every calibration token, computed here from the stored weights:
/// RMSNorm(embedding), one row of `hidden` values per token.
fn layer0_attention_input(m: &llq_host::loader::LoadedModel, windows: &[Vec<u32>]) -> Vec<Vec<f64>> {
    let (h, eps) = (m.config.hidden_size, m.config.rms_norm_eps);
    let embed = &m.weights["model.embed_tokens.weight"].data;
    let norm = &m.weights["model.layers.0.input_layernorm.weight"].data;
    windows
        .iter()
        .flatten()
        .map(|&t| {
            let x = &embed[t as usize * h..(t as usize + 1) * h];
            let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / h as f64;
            (0..h).map(|c| x[c] as f64 / (ms + eps).sqrt() * norm[c] as f64).collect()
        })
        .collect()
}

#[test]
fn the_probe_plugin_receives_the_statistics_of_the_right_rows() {
    use llq_host::quant::{quantize_model, QuantizeOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut m = llq_host::loader::load(&common::p(common::STORIES)).unwrap();
    let probe = llq_host::plugin::Plugin::load(&common::so("test_calib_probe")).unwrap();
    let q = probe.configure(&[]).unwrap();
    let settings = story_settings(dir.path(), 3, 40, 5);
    let windows = settings.windows(&m).unwrap();
    let h = m.config.hidden_size;
    let (mut amax, mut sumsq) = (vec![0f64; h], vec![0f64; h]);
    for y in layer0_attention_input(&m, &windows) {
        for c in 0..h {
            amax[c] = amax[c].max(y[c].abs());
            sumsq[c] += y[c] * y[c];
        }
    }
    let o =
        QuantizeOptions { include_lm_head: false, threads: 2, calibration: Some(&settings), layer_opts: &[] };
    let r = quantize_model(&q, &mut m, &o, &candle_core::Device::Cpu, true).unwrap();
    let info = r.calibration.as_ref().unwrap();
    assert_eq!((info.samples, info.seq_len, info.tokens, info.mode.as_str()), (3, 40, 120, "sequential"));
    for layer in ["q_proj", "k_proj", "v_proj"] {
        let meta: serde_json::Value =
            serde_json::from_str(&r.packed[&format!("model.layers.0.self_attn.{layer}.weight")].metadata)
                .unwrap();
        assert_eq!(meta["n_tokens"], 120);
        for c in 0..h {
            let (a, s) = (meta["abs_max"][c].as_f64().unwrap(), meta["mean_sq"][c].as_f64().unwrap());
            assert!(
                (a - amax[c]).abs() <= 1e-5 * amax[c].max(1e-3),
                "{layer} abs_max[{c}] {a} vs {}",
                amax[c]
            );
            let want = sumsq[c] / 120.0;
            assert!((s - want).abs() <= 1e-4 * want.max(1e-6), "{layer} mean_sq[{c}] {s} vs {want}");
        }
    }
    // Every layer got calibration of its own width (the probe refuses to quantize without).
    assert_eq!(r.layers, 5 * 7);
}

#[test]
fn scale_searches_see_the_unquantized_block_and_quantization_sees_the_fold() {
    use llq_host::quant::{quantize_model, QuantizeOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut m = llq_host::loader::load(&common::p(common::STORIES)).unwrap();
    let norm = m.weights["model.layers.0.input_layernorm.weight"].data.clone();
    let probe = llq_host::plugin::Plugin::load(&common::so("test_calib_probe")).unwrap();
    assert!(probe.info.group_scales);
    let q = probe.configure(&[("scales".into(), "true".into())]).unwrap();
    let settings = story_settings(dir.path(), 2, 32, 1);
    let windows = settings.windows(&m).unwrap();
    let h = m.config.hidden_size;
    let mut abs_sum = vec![0f64; h];
    for y in layer0_attention_input(&m, &windows) {
        abs_sum.iter_mut().zip(&y).for_each(|(a, v)| *a += v.abs());
    }
    let o =
        QuantizeOptions { include_lm_head: false, threads: 2, calibration: Some(&settings), layer_opts: &[] };
    let r = quantize_model(&q, &mut m, &o, &candle_core::Device::Cpu, true).unwrap();
    let groups = &r.calibration.as_ref().unwrap().scale_groups;
    // stories260K has grouped-query attention: no v→o group; 3 groups × 5 blocks.
    assert_eq!(groups.len(), 15, "{groups:?}");
    let g0 = &groups[0];
    assert_eq!(g0.producer, "model.layers.0.input_layernorm.weight");
    assert_eq!(g0.info["layers"].as_array().unwrap().len(), 3);
    assert_eq!((g0.min, g0.max), (1.0, 1.5));
    assert_eq!(groups[2].info["norm"], false);
    assert_eq!(groups[2].producer, "model.layers.0.mlp.up_proj.weight");
    let s = |c: usize| 1.0 + (c % 3) as f64 / 4.0;
    for c in 0..h {
        // The search saw the unquantized, unfolded block input ...
        let want = abs_sum[c] / 64.0;
        let got = g0.info["abs_mean"][c].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-5 * want.max(1e-3), "abs_mean[{c}] {got} vs {want}");
        // ... the norm took the inverse scale ...
        let n = m.weights["model.layers.0.input_layernorm.weight"].data[c] as f64;
        assert!((n - norm[c] as f64 / s(c)).abs() <= 1e-6 * n.abs().max(1e-3), "norm[{c}]");
        // ... and q's quantization saw the folded input x / s.
        let meta: serde_json::Value =
            serde_json::from_str(&r.packed["model.layers.0.self_attn.q_proj.weight"].metadata).unwrap();
        let (got, unfolded) = (meta["mean_sq"][c].as_f64().unwrap(), g0.info["mean_sq"][c].as_f64().unwrap());
        let want = unfolded / (s(c) * s(c));
        assert!((got - want).abs() <= 1e-4 * want.max(1e-6), "q mean_sq[{c}] {got} vs {want}");
    }
}

#[test]
fn run_calibrates_gptq_and_refuses_bad_calibration_input() {
    let dir = tempfile::tempdir().unwrap();
    let calib = story_text(dir.path());
    let (model, data, task) = (common::p(common::STORIES), common::p(common::SAMPLE), common::coqa());
    let run = |out: &str, quant: &str, extra: &[&str]| {
        let (o, q) = (dir.path().join(out).display().to_string(), plugin(quant));
        let mut args =
            vec!["run", "--model", &model, "--quant", &q, "--task", &task, "--data", &data, "--out", &o];
        args.extend_from_slice(&["--limit", "2", "--task-opt", "max_new_tokens=8"]);
        args.extend_from_slice(extra);
        llq(&args)
    };
    let ok = run("gptq", "gptq", &["--calib-data", &calib, "--calib-samples", "4", "--calib-seq-len", "64"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let r = llq_host::results::RunResults::read(&dir.path().join("gptq/results.json")).unwrap();
    let q = r.quantization.unwrap();
    let c = q.calibration.unwrap();
    assert_eq!((c.samples, c.seq_len, c.tokens, c.mode.as_str()), (4, 64, 256, "sequential"));
    assert!(c.seconds > 0.0 && c.peak_rss_bytes.unwrap() > 0);
    // 4-bit codes plus an f16 scale and a u8 zero per group (rows padded to 32-bit words).
    assert!((4.0..5.0).contains(&r.size.bits_per_weight), "{}", r.size.bits_per_weight);
    assert!(c.scale_groups.is_empty());
    // The time split: quantize calls are part of the total; no scale search for GPTQ.
    let qs = c.quantize_seconds.unwrap();
    assert!(qs > 0.0 && qs <= c.seconds && c.search_seconds.is_none(), "{qs} of {}", c.seconds);
    // AWQ records the ratio it chose for each of the 15 groups (3 a block: grouped-query
    // attention has no v→o group) in results.json.
    let ok = run("awq", "awq", &["--calib-data", &calib, "--calib-samples", "4", "--calib-seq-len", "64"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let r = llq_host::results::RunResults::read(&dir.path().join("awq/results.json")).unwrap();
    let c = r.quantization.unwrap().calibration.unwrap();
    assert_eq!(c.scale_groups.len(), 15);
    let split = c.quantize_seconds.unwrap() + c.search_seconds.unwrap();
    assert!(c.search_seconds.unwrap() > 0.0 && split <= c.seconds, "{c:?}");
    for g in &c.scale_groups {
        let ratio = g.info["ratio"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&ratio) && g.min > 0.0 && g.max >= g.min, "{g:?}");
        assert!(g.info["loss"].as_f64().unwrap() <= g.info["loss_ratio0"].as_f64().unwrap());
    }
    // `bench` calibrates too (and leaves the per-call dequantize timing out for it).
    let (g, out) = (plugin("gptq"), dir.path().join("bench.json").display().to_string());
    let b = llq(&[
        "bench",
        "--model",
        &model,
        "--quant",
        &g,
        "--calib-data",
        &calib,
        "--calib-samples",
        "2",
        "--calib-seq-len",
        "32",
        "--prompt-lens",
        "16",
        "--batch-sizes",
        "1",
        "--decode-steps",
        "2",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--out",
        &out,
    ]);
    assert!(b.status.success(), "{}", stderr(&b));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!((report["method"].as_str(), report["dequantize_all_s"].is_null()), (Some("gptq"), true));
    let fail = |out: &str, quant: &str, extra: &[&str], needle: &str| {
        let o = run(out, quant, extra);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "expected {needle:?} in {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    };
    let empty = common::write(dir.path(), "empty.txt", " \n\n");
    fail("e1", "gptq", &["--calib-data", &empty], "holds no text");
    let bin = dir.path().join("bin.txt");
    std::fs::write(&bin, b"text \xff\xfe").unwrap();
    fail(
        "e2",
        "gptq",
        &["--calib-data", bin.to_str().unwrap()],
        "is not UTF-8 text (invalid byte at offset 5)",
    );
    fail(
        "e3",
        "gptq",
        &["--calib-data", &calib, "--calib-seq-len", "100000"],
        "--calib-seq-len 100000 is out of range",
    );
    let short = common::write(dir.path(), "short.txt", "Once upon a time.");
    fail(
        "e3b",
        "gptq",
        &["--calib-data", &short, "--calib-seq-len", "64"],
        "fewer than --calib-seq-len 64 + 1",
    );
    fail(
        "e4",
        "gptq",
        &["--calib-data", &calib, "--calib-seq-len", "0"],
        "--calib-seq-len must be at least 1",
    );
    fail("e5", "gptq", &["--calib-data", "/no/such/file"], "cannot read /no/such/file");
    fail("e6", "nf4", &["--calib-samples", "4"], "plugin nf4 takes no calibration data");
    // Per-layer options: GPTQ takes them (one calibration, each layer its own bits); AWQ, whose
    // layer groups share one folded input scale, refuses them by name.
    let per_layer = ["--calib-data", calib.as_str(), "--calib-samples", "2", "--calib-seq-len", "32"];
    let mut gptq_args = per_layer.to_vec();
    gptq_args.extend_from_slice(&["--opt-layer", "layers.1.mlp.down_proj:bits=3"]);
    let ok = run("gptq-mixed", "gptq", &gptq_args);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let r = llq_host::results::RunResults::read(&dir.path().join("gptq-mixed/results.json")).unwrap();
    let q = r.quantization.unwrap();
    let bpw = |n: &str| q.layers_detail.iter().find(|l| l.name == n).unwrap().bits_per_weight;
    assert!(bpw("model.layers.1.mlp.down_proj.weight") < bpw("model.layers.0.mlp.down_proj.weight"));
    assert!(q.calibration.is_some() && q.layer_options.len() == 1);
    fail(
        "e6b",
        "awq",
        &gptq_args,
        "--opt-layer is not supported yet for plugins that fold input scales (awq)",
    );
    // A value clap cannot parse is a usage error (exit 2) naming the option.
    let o = run("e7", "gptq", &["--calib-data", &calib, "--calib-mode", "random"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`random` is not a calibration mode (sequential, block or parallel)"),
        "{}",
        stderr(&o)
    );
}

/// ABI 1.3: gguf calibrates only with `imatrix=true` and then records, per layer, whether the
/// importance matrix was used (SmolLM2: the 1536-wide down_proj rows are whole q4_k blocks; the
/// 576-wide rows fall back to q5_0, which has no weighted quantizer here); without it
/// `--calib-*` is refused.
#[test]
fn run_calibrates_gguf_only_when_the_importance_matrix_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let calib = story_text(dir.path());
    let model = common::p("models/smollm2-135m-instruct.gguf");
    let (data, task, q) = (common::p(common::SAMPLE), common::coqa(), plugin("gguf"));
    let run = |out: &str, extra: &[&str]| {
        let o = dir.path().join(out).display().to_string();
        let mut args =
            vec!["run", "--model", &model, "--quant", &q, "--task", &task, "--data", &data, "--out", &o];
        args.extend_from_slice(&["--limit", "1", "--task-opt", "max_new_tokens=4", "--opt", "type=q4_k"]);
        args.extend_from_slice(extra);
        llq(&args)
    };
    let calib_args = ["--calib-data", calib.as_str(), "--calib-samples", "2", "--calib-seq-len", "32"];
    let mut with: Vec<&str> = vec!["--opt", "imatrix=true", "--calib-mode", "parallel"];
    with.extend_from_slice(&calib_args);
    let ok = run("im", &with);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let r = llq_host::results::RunResults::read(&dir.path().join("im/results.json")).unwrap();
    let q = r.quantization.unwrap();
    let c = q.calibration.unwrap();
    assert_eq!((c.samples, c.mode.as_str()), (2, "parallel"));
    for l in &q.layers_detail {
        let p = l.packed.as_ref().unwrap();
        let want = if l.name.contains("down_proj") { ("q4_k", true) } else { ("q5_0", false) };
        assert_eq!((p["type"].as_str(), p["imatrix"].as_bool()), (Some(want.0), Some(want.1)), "{}", l.name);
    }
    assert_eq!(q.layers_detail.iter().filter(|l| l.packed.as_ref().unwrap()["imatrix"] == true).count(), 30);
    let plain = run("plain", &[]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let r = llq_host::results::RunResults::read(&dir.path().join("plain/results.json")).unwrap();
    assert!(r.quantization.unwrap().calibration.is_none());
    // Per-layer options in a calibrated run (a Q4_K_M-like recipe with the importance matrix):
    // each layer quantized with its own options and the one calibration.
    let mut recipe = with.clone();
    recipe.extend_from_slice(&["--opt-layer", "layers.0.mlp.down_proj:type=q6_k"]);
    let ok = run("recipe", &recipe);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let r = llq_host::results::RunResults::read(&dir.path().join("recipe/results.json")).unwrap();
    let q = r.quantization.unwrap();
    assert!(q.calibration.is_some());
    let packed = |n: &str| q.layers_detail.iter().find(|l| l.name == n).unwrap().packed.clone().unwrap();
    assert_eq!(packed("model.layers.0.mlp.down_proj.weight")["type"], "q6_k");
    assert_eq!(packed("model.layers.0.mlp.down_proj.weight")["imatrix"], true);
    assert_eq!(packed("model.layers.1.mlp.down_proj.weight")["type"], "q4_k");
    let refused = run("refused", &calib_args);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("plugin gguf takes no calibration data with these options"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn block_and_parallel_modes_differ_only_after_the_first_block() {
    use llq_host::calib::text::CalibText;
    use llq_host::quant::{quantize_model, CalibMode, CalibSettings, QuantizeOptions};
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(story_text(dir.path())).unwrap();
    let gptq = llq_host::plugin::Plugin::load(&common::so("gptq")).unwrap();
    let q = gptq.configure(&[]).unwrap();
    let quantized = |mode| {
        let mut m = llq_host::loader::load(&common::p(common::STORIES)).unwrap();
        let settings = CalibSettings {
            text: CalibText { source: "story".into(), sha256: String::new(), text: text.clone() },
            samples: 2,
            seq_len: Some(32),
            seed: 1,
            mode,
            max_sample_rows: 0,
        };
        let o = QuantizeOptions {
            include_lm_head: false,
            threads: 2,
            calibration: Some(&settings),
            layer_opts: &[],
        };
        quantize_model(&q, &mut m, &o, &candle_core::Device::Cpu, false).unwrap();
        m.weights
    };
    let (block, parallel) = (quantized(CalibMode::Block), quantized(CalibMode::Parallel));
    // Block 0 sees the same unquantized inputs in both modes; block 1's inputs come through
    // the quantized block 0 in `block` mode and through the unquantized one in `parallel`.
    let w = |ws: &llq_host::model::Weights, n: &str| ws[n].data.clone();
    for t in ["self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"] {
        let name = format!("model.layers.0.{t}.weight");
        assert_eq!(w(&block, &name), w(&parallel, &name), "{name}");
    }
    let name = "model.layers.1.self_attn.q_proj.weight";
    assert_ne!(w(&block, name), w(&parallel, name), "{name}");
}

/// Logits of `tokens` under `weights` (f32, CPU), flattened.
fn logits(cfg: &llq_host::model::Config, weights: &llq_host::model::Weights, tokens: &[u32]) -> Vec<f32> {
    let model = llq_host::model::Llama::new(cfg, weights, &candle_core::Device::Cpu).unwrap();
    let mut cache = model.new_cache();
    let l = model.step(&[tokens.to_vec()], &[0], &mut cache, false).unwrap();
    l.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn folding_positive_input_scales_leaves_the_logits_unchanged() {
    use llq_host::quant::fold::{block_groups, fold};
    use llq_host::util::synth::synthetic_weights;
    // stories260K (grouped-query attention: three groups a block) and a synthetic
    // multi-head model (four: v→o too).
    let stories =
        llq_host::loader::load(root().join("tests/fixtures/tinyllama/stories260K.bin").to_str().unwrap())
            .unwrap();
    let mha: llq_host::model::Config = serde_json::from_value(serde_json::json!({
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 97
    }))
    .unwrap();
    let mut synth = llq_host::model::Weights::new();
    for (i, (name, shape)) in mha.expected_tensors().into_iter().enumerate() {
        let n = shape.iter().product();
        let mut data = synthetic_weights(i as u64 + 1, n, 0.1);
        if shape.len() == 1 {
            data.iter_mut().for_each(|v| *v += 1.0);
        }
        synth.insert(name, llq_host::model::HostTensor { shape, data });
    }
    for (label, cfg, mut weights, groups_per_block) in [
        ("stories260K", stories.config.clone(), stories.weights.clone(), 3),
        ("synthetic MHA", mha, synth, 4),
    ] {
        let tokens: Vec<u32> = (0..12).map(|i| (i * 7 + 1) % cfg.vocab_size as u32).collect();
        let before = logits(&cfg, &weights, &tokens);
        let mut seed = 0u64;
        for l in 0..cfg.num_hidden_layers {
            let groups = block_groups(&cfg, l);
            assert_eq!(groups.len(), groups_per_block, "{label}");
            for g in groups {
                let cols = weights[&g.layers[0]].shape[1];
                seed += 1;
                // Arbitrary positive scales, log-uniform over [1/4, 4].
                let s: Vec<f32> = synthetic_weights(seed, cols, 1.0)
                    .iter()
                    .map(|v| 4f32.powf(v.clamp(-1.0, 1.0)))
                    .collect();
                fold(&mut weights, &g, &s).unwrap();
            }
        }
        let after = logits(&cfg, &weights, &tokens);
        let scale = before.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = before.iter().zip(&after).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(worst <= 1e-5, "{label}: folding moved the logits by {worst:e} (relative)");
        eprintln!("{label}: logits moved by {worst:e} (relative to max |logit|)");
        // The control: the same scale on the layers without the producer does change them.
        let g = &block_groups(&cfg, 0)[2];
        for name in &g.layers {
            let w = weights.get_mut(name).unwrap();
            let cols = w.shape[1];
            w.data.iter_mut().enumerate().for_each(|(i, v)| *v *= 1.0 + (i % cols) as f32 / cols as f32);
        }
        let broken = logits(&cfg, &weights, &tokens);
        let moved = after.iter().zip(&broken).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(moved > 1e-3, "{label}: an unfolded scale moved the logits only by {moved:e}");
    }
}

#[test]
fn awq_packed_output_carries_input_scales_and_a_group_needs_one_input() {
    let dir_of = |n: &str| root().join("tests/fixtures/awq").join(n);
    let dir = tempfile::tempdir().unwrap();
    let (p, i) = (plugin("awq"), dir_of("weights.safetensors").display().to_string());
    let a = dir_of("activations.safetensors").display().to_string();
    let out = dir.path().join("packed.safetensors").display().to_string();
    let r = llq(&["quantize", "--quant", &p, "--input", &i, "--calibration", &a, "--output", &out]);
    assert!(r.status.success(), "{}", stderr(&r));
    let bytes = std::fs::read(&out).unwrap();
    let packed = SafeTensors::deserialize(&bytes).unwrap();
    let scales =
        |m: &str| f32s(packed.tensor(&format!("model.layers.0.{m}.weight.input_scales")).unwrap().data());
    // Every layer carries its group's scale: q/k/v one, gate/up one, o and down their own.
    for (m, cols) in [("self_attn.o_proj", 128), ("mlp.down_proj", 384), ("mlp.gate_proj", 128)] {
        let s = scales(m);
        assert!(s.len() == cols && s.iter().all(|v| *v > 0.0), "{m}");
    }
    assert_eq!(scales("self_attn.q_proj"), scales("self_attn.v_proj"));
    assert_eq!(scales("mlp.gate_proj"), scales("mlp.up_proj"));
    // k given o's activations: q/k/v read one input in the model, so this is refused.
    let src_bytes = std::fs::read(dir_of("activations.safetensors")).unwrap();
    let src = SafeTensors::deserialize(&src_bytes).unwrap();
    let names: Vec<String> = src.names().into_iter().map(|s| s.to_string()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = names
        .iter()
        .map(|n| {
            let from = if n.contains("k_proj") { n.replace("k_proj", "o_proj") } else { n.clone() };
            let t = src.tensor(&from).unwrap();
            (
                n.clone(),
                safetensors::tensor::TensorView::new(t.dtype(), t.shape().to_vec(), t.data()).unwrap(),
            )
        })
        .collect();
    let bad = dir.path().join("bad.safetensors");
    safetensors::serialize_to_file(views, None, &bad).unwrap();
    let b = bad.display().to_string();
    let r = llq(&["quantize", "--quant", &p, "--input", &i, "--calibration", &b, "--output", &out]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stderr(&r).contains("gives model.layers.0.self_attn.q_proj.weight and model.layers.0.self_attn.k_proj.weight different activations"),
        "{}",
        stderr(&r)
    );
}
