//! Loading plugins through the real C ABI: built-in methods, misbehaving plugins (each must
//! be a clear error, never a crash), calibration plumbing, and a plugin built out of tree.
//! The `.so` files come from `cargo build --release --workspace` (`make build` / `make test`).

mod common;

use common::{root, so, target_dir};
use llq_host::plugin::{CalibrationData, Plugin};
use std::process::Command;

fn load_err(path: &std::path::Path) -> String {
    match Plugin::load(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn builtin_plugins_load_and_describe_themselves() {
    for (name, opts, bits) in
        [("nf4", 2, 4.5), ("fp4", 2, 4.5), ("int8", 1, 8.0 + 32.0 / 64.0), ("fp16", 1, 16.0)]
    {
        let p = Plugin::load(&so(name)).unwrap();
        assert_eq!(p.info.name, name);
        assert_eq!(p.info.abi_version, 1);
        assert_eq!(p.info.options.len(), opts);
        let q = p.configure(&[]).unwrap();
        let b = q.packed_size(64, 64).unwrap() as f64 * 8.0 / 4096.0;
        assert!((b - bits).abs() < 1e-9, "{name}: {b} bits/weight");
    }
    assert!(Plugin::load(&so("int8")).unwrap().info.has_matmul);
}

#[test]
fn wrong_abi_version_is_refused() {
    let e = load_err(&so("test_bad_abi"));
    assert!(e.contains("ABI v99") && e.contains("this host speaks v1"), "{e}");
}

#[test]
fn library_without_the_entry_symbol_is_refused() {
    let e = load_err(&so("test_no_entry"));
    assert!(e.contains("no `llq_plugin_entry` symbol"), "{e}");
}

#[test]
fn files_that_are_not_libraries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, b"this is not an ELF file").unwrap();
    let e = load_err(&junk);
    assert!(e.contains("junk.so") && e.contains("not a loadable shared library"), "{e}");
    let e = load_err(&dir.path().join("missing.so"));
    assert!(e.contains("file not found"), "{e}");
}

#[test]
fn plugin_panics_become_errors_and_the_host_survives() {
    let p = Plugin::load(&so("test_panicky")).unwrap();
    let e = format!("{:#}", p.quantize("layer.0", 2, 2, &[1.0; 4], "{}", None).unwrap_err());
    assert!(e.contains("panicked in quantize (layer layer.0)") && e.contains("index out of bounds"), "{e}");
    let packed = llq_host::plugin::PackedMatrix {
        rows: 1,
        cols: 1,
        buffers: vec![("x".into(), vec![0])],
        metadata: "{}".into(),
    };
    let e = format!("{:#}", p.dequantize(&packed).unwrap_err());
    assert!(e.contains("panicked in dequantize") && e.contains("exploded on purpose"), "{e}");
    // The process is fine: another plugin still works.
    let nf4 = Plugin::load(&so("nf4")).unwrap();
    assert_eq!(nf4.quantize("l", 1, 64, &[0.5; 64], "{}", None).unwrap().bytes(), 32 + 4);
}

#[test]
fn results_that_disagree_with_the_declared_size_are_rejected() {
    let p = Plugin::load(&so("test_wrong_size")).unwrap();
    let e = format!("{:#}", p.quantize("blk.3", 4, 4, &[0.0; 16], "{}", None).unwrap_err());
    assert!(e.contains("returned 21 bytes for layer blk.3 (4×4) but declared packed_size 16"), "{e}");
}

#[test]
fn bad_options_and_non_finite_weights_are_clear_errors() {
    let p = Plugin::load(&so("nf4")).unwrap();
    let e = format!("{:#}", p.configure(&[("block_size".into(), "63".into())]).err().unwrap());
    assert!(e.contains("nf4.so") && e.contains("block_size") && e.contains("must be one of"), "{e}");
    let e = format!("{:#}", p.configure(&[("colour".into(), "red".into())]).err().unwrap());
    assert!(e.contains("unknown option `colour`"), "{e}");
    let mut w = vec![0.1f32; 128];
    w[70] = f32::NAN;
    let e = format!("{:#}", p.quantize("model.layers.0.mlp.up_proj", 2, 64, &w, "{}", None).unwrap_err());
    assert!(e.contains("model.layers.0.mlp.up_proj") && e.contains("row 1, column 6"), "{e}");
}

#[test]
fn calibration_statistics_reach_the_plugin() {
    let p = Plugin::load(&so("test_calib_probe")).unwrap();
    assert_eq!(p.info.calibration, "stats");
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 10.0).collect();
    let e = format!("{:#}", p.quantize("l", 3, 4, &w, "{}", None).unwrap_err());
    assert!(e.contains("needs calibration statistics"), "{e}");
    let calib = CalibrationData {
        n_tokens: 17,
        abs_max: vec![1.0, 2.0, 3.0, 4.0],
        mean_sq: vec![0.25, 1.0, 4.0, 9.0],
        ..Default::default()
    };
    let q = p.quantize("l", 3, 4, &w, "{}", Some(&calib)).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&q.metadata).unwrap();
    assert_eq!(meta["n_tokens"], 17);
    assert_eq!(meta["mean_sq"], serde_json::json!([0.25, 1.0, 4.0, 9.0]));
    assert_eq!(meta["abs_max"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
    let d = p.dequantize(&q).unwrap();
    for (a, b) in w.iter().zip(&d) {
        assert!((a - b).abs() < 0.01, "{a} vs {b}");
    }
}

#[test]
fn a_plugin_built_out_of_tree_loads_and_runs() {
    // Build it exactly as a third party would: its own workspace, SDK by path, own target dir.
    let dir = root().join("tests/third-party-plugin");
    let target = target_dir().join("third-party");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the third-party plugin failed");
    let p = Plugin::load(&target.join("release/libsign_quant.so")).unwrap();
    assert_eq!(p.info.name, "sign");
    let w = [0.5f32, -1.0, 0.25, -0.25, 2.0, -2.0, 0.0, 4.0];
    let q = p.quantize("l", 2, 4, &w, "{}", None).unwrap();
    assert_eq!(q.bytes(), 2 + 8);
    let d = p.dequantize(&q).unwrap();
    // Row scales: mean |w| = 0.5 and 2.0; signs kept (0 counts as +).
    assert_eq!(d, vec![0.5, -0.5, 0.5, -0.5, 2.0, -2.0, 2.0, 2.0]);
}

#[test]
fn int8_reference_matmul_runs_through_the_abi() {
    let p = Plugin::load(&so("int8")).unwrap();
    let w: Vec<f32> = (0..32).map(|i| ((i * 7) % 11) as f32 / 10.0 - 0.5).collect();
    let q = p.quantize("l", 4, 8, &w, r#"{"threshold":"6"}"#, None).unwrap();
    let mut x: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) / 4.0).collect();
    x[3] = 9.0; // an outlier column (computed in 16-bit)
    let y = p.matmul(&q, &x, 2).unwrap();
    for m in 0..2 {
        for r in 0..4 {
            let exact: f32 = (0..8).map(|c| x[m * 8 + c] * w[r * 8 + c]).sum();
            assert!((y[m * 4 + r] - exact).abs() < 0.05, "y[{m},{r}] {} vs {exact}", y[m * 4 + r]);
        }
    }
}

#[test]
fn a_plugin_from_before_abi_1_2_loads_and_is_never_asked_for_scales() {
    // Its method would search scales and answer calibration_for (and panics if asked either),
    // but its descriptor is v1.1-sized: it calibrates by its declared kind.
    let p = Plugin::load(&so("test_abi_1_1")).unwrap();
    assert!(!p.info.group_scales);
    let q = p.configure(&[]).unwrap();
    assert_eq!(q.calibration(), llq_sdk::CalibrationNeed::Stats);
    let data = [1.0f32, -2.0, 3.5, 0.25];
    let packed = q.quantize("x", 2, 2, &data, None).unwrap();
    assert_eq!(q.dequantize(&packed).unwrap(), data);
    let calib = CalibrationData {
        n_tokens: 1,
        abs_max: vec![1.0; 2],
        mean_sq: vec![1.0; 2],
        abs_mean: vec![1.0; 2],
        ..Default::default()
    };
    let layers = vec![llq_host::plugin::GroupLayer { name: "x", rows: 2, cols: 2, data: &data }];
    let g = llq_host::plugin::LayerGroup {
        producer: "n",
        producer_kind: llq_sdk::Producer::Norm,
        layers,
        calibration: &calib,
    };
    assert!(q.search_scales(&g).unwrap().is_none());
    // A plugin exporting the 1.2 descriptor says that it searches.
    let probe = Plugin::load(&so("test_calib_probe")).unwrap();
    assert!(probe.info.group_scales);
}

#[test]
fn a_plugin_says_per_option_set_whether_it_calibrates() {
    // ABI 1.3: gguf declares `stats` but needs it only with imatrix=true.
    let p = Plugin::load(&so("gguf")).unwrap();
    assert_eq!(p.info.calibration, "stats");
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(p.configure(&[kv("type", "q4_k")]).unwrap().calibration(), llq_sdk::CalibrationNeed::None);
    let q = p.configure(&[kv("type", "q4_k"), kv("imatrix", "true")]).unwrap();
    assert_eq!(q.calibration(), llq_sdk::CalibrationNeed::Stats);
    assert_eq!(
        q.with_overrides(&[kv("imatrix", "false")]).unwrap().calibration(),
        llq_sdk::CalibrationNeed::None
    );
}

#[test]
fn gguf_cuda_decoder_compiled_for_the_host_matches_the_cpu_dequantization() {
    // plugins/gguf/src/ggml.cu as host C++ (bench/peers/ggml_decoder_emulation): every type's
    // decoder against the plugin's CPU dequantization, bit for bit, without a GPU.
    let o = Command::new("bash")
        .arg(root().join("bench/peers/ggml_decoder_emulation/run.sh"))
        .env("LLQ_HOST", env!("CARGO_BIN_EXE_llq-host"))
        .env("GGUF_PLUGIN", so("gguf"))
        .output()
        .expect("run bash");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out.matches(": 0 mismatches of 2304").count(), 10, "{out}");
}
