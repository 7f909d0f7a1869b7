//! Quantized checkpoints in and out (`llq_host::checkpoint`):
//! - GPTQ and AWQ layouts against bench/peers/int_checkpoint_reference.py (AutoGPTQ's and
//!   AutoAWQ's packing loops and f16 dequantization in numpy): llq's export packs the same
//!   words, and llq's import of the reference words dequantizes to the reference's f16 values;
//! - GGUF: SmolLM2 as shipped runs natively with exactly the weights the loader dequantizes;
//!   an exported GGUF reads back to the same blocks and candle-transformers' `quantized_llama`
//!   computes llq's logits from it;
//! - every HF export (bnb nf4/fp4, GPTQ, AWQ) reads back to identical packed buffers and
//!   the same weights;
//! - bad input is refused by name.

mod common;

use candle_core::Device;
use common::{llq, p, plugin, root, stderr};
use llq_host::checkpoint::hf_int::{layer_from_tensors, layer_tensors, Layout, Setting};
use llq_host::checkpoint::{export, import, read, ExportFormat};
use llq_host::loader::hf::RawTensor;
use llq_host::loader::{load, LoadedModel};
use llq_host::model::Llama;
use llq_host::plugin::{PackedMatrix, Plugin};
use llq_host::quant::{quantize_model, ModelQuantization, QuantizeOptions};
use llq_sdk::quant::intgroup::{dequantize, GroupParams, IntGroupMatrix, IntGroupSpec};
use safetensors::Dtype;
use std::collections::HashMap;

fn smollm2() -> String {
    let g = root().join("models/smollm2-135m-instruct.gguf");
    assert!(g.exists(), "{} is missing: run `make models` (make test does)", g.display());
    g.display().to_string()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn gptq_and_awq_layouts_match_the_reference_packers() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/checkpoints/int-checkpoint-reference.json"))
            .unwrap(),
    )
    .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for (i, c) in cases.iter().enumerate() {
        let layout = if c["layout"] == "gptq" { Layout::Gptq } else { Layout::Awq };
        let (bits, rows, cols) = (
            c["bits"].as_u64().unwrap() as u32,
            c["rows"].as_u64().unwrap() as usize,
            c["cols"].as_u64().unwrap() as usize,
        );
        let gs_opt = c["group_size"].as_i64().unwrap();
        let gs = if gs_opt == -1 { cols } else { gs_opt as usize };
        let groups = cols.div_ceil(gs);
        let scales: Vec<f64> =
            u32s(&c["scales_f16"]).iter().map(|&b| half::f16::from_bits(b as u16).to_f64()).collect();
        let zeros = u32s(&c["zeros"]);
        let g_idx = (!c["g_idx"].is_null()).then(|| u32s(&c["g_idx"]));
        let m = IntGroupMatrix {
            rows,
            cols,
            spec: IntGroupSpec { bits, group_size: gs, sym: false, whole_row: gs_opt == -1 },
            codes: u32s(&c["codes"]).iter().map(|&v| v as u8).collect(),
            params: scales
                .iter()
                .zip(&zeros)
                .map(|(&scale, &z)| GroupParams { scale, zero: z as f64 })
                .collect(),
            g_idx: g_idx.clone(),
            zero_f16: false,
        };
        let q = m.pack();
        let packed =
            PackedMatrix { rows, cols, buffers: q.buffers.clone(), metadata: q.metadata.to_string() };
        // Export: the same words as the producing library's packer.
        let tensors = layer_tensors(&packed, layout).unwrap();
        let get = |n: &str| tensors.iter().find(|t| t.0 == n).unwrap_or_else(|| panic!("case {i}: no {n}"));
        assert_eq!(get("qweight").3, le(&u32s(&c["qweight"])), "case {i} qweight");
        assert_eq!(get("qzeros").3, le(&u32s(&c["qzeros"])), "case {i} qzeros");
        if layout == Layout::Gptq {
            assert_eq!(get("g_idx").3, le(&u32s(&c["g_idx_tensor"])), "case {i} g_idx");
        }
        // Import of the reference's words: the same packed buffers, and llq's dequantization
        // rounded to f16 is the library's f16 dequantization bit for bit.
        let mut raw: HashMap<String, RawTensor> = HashMap::new();
        let t = |dtype, shape: Vec<usize>, data| RawTensor { dtype, shape, data };
        let (qw_shape, qz_shape) = match layout {
            Layout::Gptq => (vec![cols * bits as usize / 32, rows], vec![groups, rows * bits as usize / 32]),
            Layout::Awq => (vec![cols, rows / 8], vec![groups, rows / 8]),
        };
        raw.insert("qweight".into(), t(Dtype::I32, qw_shape, le(&u32s(&c["qweight"]))));
        raw.insert("qzeros".into(), t(Dtype::I32, qz_shape, le(&u32s(&c["qzeros"]))));
        let sc = u32s(&c["scales_f16"]);
        let sc_t: Vec<u8> = (0..groups)
            .flat_map(|g| (0..rows).map(move |r| (r, g)))
            .flat_map(|(r, g)| (sc[r * groups + g] as u16).to_le_bytes())
            .collect();
        raw.insert("scales".into(), t(Dtype::F16, vec![groups, rows], sc_t));
        if layout == Layout::Gptq {
            raw.insert("g_idx".into(), t(Dtype::I32, vec![cols], le(&u32s(&c["g_idx_tensor"]))));
        }
        let st = Setting {
            layout,
            bits: bits as usize,
            group_size: gs_opt,
            sym: false,
            v1: layout == Layout::Gptq,
        };
        let mut take = |s: &str| raw.remove(s).ok_or_else(|| anyhow::anyhow!("no {s}"));
        let imported = layer_from_tensors("x.weight", rows, cols, &st, &mut take).unwrap();
        assert_eq!(imported.buffers, packed.buffers, "case {i}: imported buffers");
        let view = llq_sdk::PackedView {
            rows,
            cols,
            buffers: imported.buffers.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect(),
            metadata: serde_json::from_str(&imported.metadata).unwrap(),
        };
        let mut out = vec![0f32; rows * cols];
        dequantize(&view, &mut out).unwrap();
        let ours: Vec<u32> = out.iter().map(|&v| half::f16::from_f32(v).to_bits() as u32).collect();
        assert_eq!(ours, u32s(&c["dequantized_f16"]), "case {i}: dequantized values");
    }
}

/// SmolLM2 quantized by `name` with `opts`, its packed layers kept.
fn quantized(name: &str, opts: &[(&str, &str)]) -> (LoadedModel, ModelQuantization) {
    let pl = Plugin::load(std::path::Path::new(&plugin(name))).unwrap();
    let q =
        pl.configure(&opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>()).unwrap();
    let mut m = load(&smollm2()).unwrap();
    let o = QuantizeOptions { include_lm_head: false, threads: 2, calibration: None, layer_opts: &[] };
    let qm = quantize_model(&q, &mut m, &o, &Device::Cpu, true).unwrap();
    (m, qm)
}

/// The checkpoint at `path` reads back to `qm`'s packed buffers, and importing it with the
/// plugin gives `m`'s weights bit for bit.
fn assert_round_trip(path: &str, name: &str, m: &LoadedModel, qm: &ModelQuantization) {
    let stored = read(path).unwrap();
    assert_eq!(stored.layers.len(), qm.layers);
    for l in &stored.layers {
        let want = &qm.packed[&l.name];
        assert_eq!((l.packed.rows, l.packed.cols), (want.rows, want.cols), "{}", l.name);
        let mut a = l.packed.buffers.clone();
        let mut b = want.buffers.clone();
        a.sort();
        b.sort();
        assert!(a == b, "{path}: layer {} reads back to other buffers", l.name);
    }
    let pl = Plugin::load(std::path::Path::new(&plugin(name))).unwrap();
    let (im, p) = import(path, &pl, &Device::Cpu).unwrap();
    assert_eq!(p.quantization.quantized_bytes, qm.quantized_bytes);
    assert!(p.quantization.imported.is_some());
    for (n, t) in &m.weights {
        let got = &im.weights[n];
        assert_eq!(got.shape, t.shape, "{n}");
        assert!(got.data.iter().zip(&t.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{path}: {n} differs");
    }
}

#[test]
fn smollm2_runs_natively_with_the_weights_the_loader_dequantizes() {
    let base = load(&smollm2()).unwrap();
    let pl = Plugin::load(std::path::Path::new(&plugin("gguf"))).unwrap();
    let (m, p) = import(&smollm2(), &pl, &Device::Cpu).unwrap();
    assert_eq!(p.quantization.layers, 210);
    assert!(p.quantization.imported.as_deref().unwrap().contains("GGUF"), "{:?}", p.quantization.imported);
    assert!(m.precision_note.contains("as stored"), "{}", m.precision_note);
    // Every layer is the file's own type, and the plugin's dequantization is candle's.
    let types: std::collections::BTreeSet<String> = p
        .quantization
        .per_layer
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(&l.metadata).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(types.contains("q4_1"), "{types:?}");
    for (n, t) in &base.weights {
        assert!(
            m.weights[n].data.iter().zip(&t.data).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{n} differs"
        );
    }
}

#[test]
fn gguf_export_reads_back_and_candle_transformers_computes_its_logits() {
    use candle_core::quantized::gguf_file;
    use candle_transformers::models::quantized_llama::ModelWeights;
    // Q4_K_M-like: q4_k where rows are whole 256-blocks, llama-quantize's q5_0 fallback elsewhere,
    // and q6_k for the down projections.
    let pl = Plugin::load(std::path::Path::new(&plugin("gguf"))).unwrap();
    let q = pl.configure(&[("type".into(), "q4_k".into())]).unwrap();
    let mut m = load(&smollm2()).unwrap();
    let lo = [llq_host::quant::layer_opt::parse("*.down_proj:type=q6_k").unwrap()];
    let o = QuantizeOptions { include_lm_head: false, threads: 2, calibration: None, layer_opts: &lo };
    let qm = quantize_model(&q, &mut m, &o, &Device::Cpu, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q4k.gguf");
    export(ExportFormat::Gguf, &m, &qm, &smollm2(), &out).unwrap();
    assert_round_trip(out.to_str().unwrap(), "gguf", &m, &qm);

    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut f = std::fs::File::open(&out).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    assert_eq!(content.metadata["llq.quantization.method"].to_string().unwrap(), "gguf");
    let mut reference = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let model = Llama::new(&m.config, &m.weights, &Device::Cpu).unwrap();
    let tokens = m.tokenizer.encode("The whale surfaced beside the boat, and the sailors cheered.").unwrap();
    let ours: Vec<Vec<f32>> = model
        .step(std::slice::from_ref(&tokens), &[0], &mut model.new_cache(), false)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (pos, &t) in tokens.iter().enumerate() {
        let x = candle_core::Tensor::new(&[t], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let r: Vec<f32> = reference.forward(&x, pos).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let max_ref = r.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = ours[pos].iter().zip(&r).fold(0f32, |a, (x, y)| a.max((x - y).abs())) / max_ref;
        assert!(err <= 1e-4, "position {pos}: relative error {err}");
    }
}

#[test]
fn hf_exports_read_back_to_identical_packed_buffers() {
    /// Plugin, options, format.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], ExportFormat);
    let cases: [Case; 5] = [
        ("nf4", &[("double_quant", "true")], ExportFormat::HfBnb),
        ("fp4", &[("block_size", "128")], ExportFormat::HfBnb),
        ("rtn", &[("bits", "4"), ("group_size", "128"), ("sym", "true")], ExportFormat::HfGptq),
        ("rtn", &[("bits", "3"), ("group_size", "64"), ("sym", "true")], ExportFormat::HfGptq),
        ("rtn", &[("bits", "4"), ("group_size", "64"), ("sym", "false")], ExportFormat::HfAwq),
    ];
    for (name, opts, fmt) in cases {
        let (m, qm) = quantized(name, opts);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ck");
        export(fmt, &m, &qm, &smollm2(), &out).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert!(cfg["quantization_config"]["quant_method"].is_string(), "{cfg}");
        assert_round_trip(out.to_str().unwrap(), name, &m, &qm);
    }
}

#[test]
fn bad_checkpoint_input_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("text.txt");
    std::fs::write(&data, "It was a bright cold day in April, and the clocks were striking thirteen.")
        .unwrap();
    let ppl = common::wasm("perplexity").display().to_string();
    let out = dir.path().join("r").display().to_string();
    let (g, d) = (smollm2(), data.display().to_string());
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "--model", &g, "--task", &ppl, "--data", &d, "--out", &out];
        a.extend_from_slice(extra);
        llq(&a)
    };
    let nf4 = plugin("nf4");
    let gguf = plugin("gguf");
    for (args, want) in [
        (vec!["--native"], "--native needs --quant"),
        (vec!["--quant", &nf4, "--native"], "runs it with the gguf plugin, not nf4"),
        (vec!["--quant", &gguf, "--native", "--opt", "type=q4_0"], "drop --opt"),
        (vec!["--quant", &gguf, "--native", "--kl-baseline"], "--kl-baseline-from"),
    ] {
        let o = run(&args);
        assert!(!o.status.success() && stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // GGUF export needs a GGUF source; the int-group layouts refuse other plugins' formats.
    let ck = dir.path().join("x.gguf").display().to_string();
    let o = llq(&[
        "quantize",
        "--model",
        &p(common::STORIES),
        "--quant",
        &gguf,
        "--export",
        "gguf",
        "--output",
        &ck,
    ]);
    assert!(!o.status.success() && stderr(&o).contains("is not one"), "{}", stderr(&o));
    let ckd = dir.path().join("ck").display().to_string();
    let o = llq(&["quantize", "--model", &g, "--quant", &nf4, "--export", "hf-gptq", "--output", &ckd]);
    assert!(!o.status.success() && stderr(&o).contains("no place in that format"), "{}", stderr(&o));
    let o = llq(&["quantize", "--model", &g, "--quant", &nf4, "--export", "hf-sth", "--output", &ckd]);
    assert!(!o.status.success() && stderr(&o).contains("unknown export format"), "{}", stderr(&o));
    // A quantized HF checkpoint run without --native says how to run it.
    let o = llq(&["quantize", "--model", &g, "--quant", &nf4, "--export", "hf-bnb", "--output", &ckd]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = llq(&["run", "--model", &ckd, "--task", &ppl, "--data", &d, "--out", &out]);
    assert!(!o.status.success() && stderr(&o).contains("--native"), "{}", stderr(&o));
    let o = llq(&[
        "run", "--model", &ckd, "--quant", &nf4, "--native", "--task", &ppl, "--data", &d, "--out", &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/results.json")).unwrap()).unwrap();
    assert!(
        r["quantization"]["imported"].as_str().unwrap().contains("bitsandbytes nf4"),
        "{}",
        r["quantization"]
    );
}

/// Rewrite `dir`'s model.safetensors keeping the tensors `keep` accepts, with `edit` applied to
/// each kept tensor's bytes.
fn rewrite(dir: &std::path::Path, keep: impl Fn(&str) -> bool, edit: impl Fn(&str, &mut Vec<u8>)) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    for (n, t) in st.tensors() {
        if keep(&n) {
            let mut d = t.data().to_vec();
            edit(&n, &mut d);
            let shape = if d.len() == t.data().len() {
                t.shape().to_vec()
            } else {
                vec![d.len() * 8 / t.dtype().bitsize()]
            };
            owned.push((n.to_string(), t.dtype(), shape, d));
        }
    }
    let views: Vec<(&str, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
}

fn edit_config(dir: &std::path::Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut c);
    std::fs::write(&p, c.to_string()).unwrap();
}

#[test]
fn damaged_checkpoints_are_refused_by_name() {
    let copy = |src: &std::path::Path, dst: &std::path::Path| {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (gptq, bnb) = (dir.path().join("gptq"), dir.path().join("bnb"));
    let (m, qm) = quantized("rtn", &[("bits", "4"), ("group_size", "128"), ("sym", "true")]);
    export(ExportFormat::HfGptq, &m, &qm, &smollm2(), &gptq).unwrap();
    let (m, qm) = quantized("nf4", &[("double_quant", "true")]);
    export(ExportFormat::HfBnb, &m, &qm, &smollm2(), &bnb).unwrap();
    /// What is damaged, in which checkpoint, how, and what the error must say.
    type Damage<'a> = (&'a str, &'a std::path::Path, Box<dyn Fn(&std::path::Path)>, &'a str);
    let cases: Vec<Damage> = vec![
        (
            "a missing qweight",
            &gptq,
            Box::new(|d| rewrite(d, |n| n != "model.layers.3.mlp.up_proj.qweight", |_, _| {})),
            "model.layers.3.mlp.up_proj.qweight is missing",
        ),
        (
            "a truncated qzeros",
            &gptq,
            Box::new(|d| {
                rewrite(
                    d,
                    |_| true,
                    |n, b| {
                        if n.ends_with("0.self_attn.q_proj.qzeros") {
                            b.truncate(8)
                        }
                    },
                )
            }),
            "qzeros is I32 [2]",
        ),
        (
            "bits 9",
            &gptq,
            Box::new(|d| edit_config(d, |c| c["quantization_config"]["bits"] = 9.into())),
            "2 to 8 bits",
        ),
        (
            "an unknown checkpoint_format",
            &gptq,
            Box::new(|d| edit_config(d, |c| c["quantization_config"]["checkpoint_format"] = "marlin".into())),
            "checkpoint_format `marlin`",
        ),
        (
            "an AWQ layout llq does not read",
            &gptq,
            Box::new(|d| {
                edit_config(d, |c| {
                    c["quantization_config"]["quant_method"] = "awq".into();
                    c["quantization_config"]["version"] = "gemv".into();
                })
            }),
            "llq reads AutoAWQ's gemm layout",
        ),
        (
            "a quant_state that is not JSON",
            &bnb,
            Box::new(|d| {
                rewrite(
                    d,
                    |_| true,
                    |n, b| {
                        if n.ends_with("1.mlp.down_proj.weight.quant_state.bitsandbytes__nf4") {
                            b[0] = b'#'
                        }
                    },
                )
            }),
            "quant_state is not JSON",
        ),
        (
            "a foreign code map",
            &bnb,
            Box::new(|d| {
                rewrite(
                    d,
                    |_| true,
                    |n, b| {
                        if n.ends_with("2.self_attn.v_proj.weight.quant_map") {
                            b[4] ^= 1
                        }
                    },
                )
            }),
            "custom code maps are not supported",
        ),
        (
            "an LLM.int8 checkpoint",
            &bnb,
            Box::new(|d| edit_config(d, |c| c["quantization_config"]["load_in_4bit"] = false.into())),
            "LLM.int8 checkpoints are not",
        ),
        (
            "an unknown quant_method",
            &bnb,
            Box::new(|d| edit_config(d, |c| c["quantization_config"]["quant_method"] = "exl2".into())),
            "`exl2` is not one llq reads",
        ),
    ];
    let pl = Plugin::load(std::path::Path::new(&plugin("rtn"))).unwrap();
    for (i, (what, src, damage, want)) in cases.iter().enumerate() {
        let d = dir.path().join(format!("case{i}"));
        copy(src, &d);
        damage(&d);
        let e = match import(d.to_str().unwrap(), &pl, &Device::Cpu) {
            Ok(_) => panic!("{what}: imported"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(want), "{what}: {e}");
        assert!(e.contains(d.to_str().unwrap()), "{what}: the message names the checkpoint: {e}");
    }
}

#[test]
fn bench_runs_a_checkpoint_natively() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let (g, gguf) = (smollm2(), plugin("gguf"));
    let args = ["bench", "--model", &g, "--quant", &gguf, "--native", "--device", "cpu"];
    let o = llq(&[
        &args[..],
        &["--prompt-lens", "8", "--batch-sizes", "1", "--decode-steps", "2", "--repeats", "1"],
        &["--out", out.to_str().unwrap()],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["method"], "gguf");
    // The file's own type, not the plugin's default (q4_0).
    assert!(r["options"].as_str().unwrap().contains("\"type\":\"q4_1\""), "{}", r["options"]);
    let o = llq(&[&args[..], &["--calib-samples", "4"]].concat());
    assert!(!o.status.success() && stderr(&o).contains("drop the --calib-* options"), "{}", stderr(&o));
}
