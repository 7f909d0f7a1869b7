//! The `llq-host` binary end to end: `plugins inspect` and `quantize`, good and bad input.

mod common;

use common::{llq, plugin};
use std::path::Path;

fn write_safetensors(path: &Path) -> Vec<f32> {
    let w: Vec<f32> = (0..4 * 64).map(|i| ((i * 13) % 29) as f32 / 29.0 - 0.5).collect();
    let bias = [1.0f32, 2.0, 3.0, 4.0];
    let wb: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bb: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        (
            "layer.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 64], &wb).unwrap(),
        ),
        ("layer.bias", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &bb).unwrap()),
    ];
    safetensors::serialize_to_file(tensors, None, path).unwrap();
    w
}

#[test]
fn inspect_prints_the_descriptor_as_json() {
    let out = llq(&["plugins", "inspect", &plugin("nf4")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "nf4");
    assert_eq!(v["options"][0]["name"], "block_size");
    assert_eq!(v["options"][1]["default"], "false");
    assert_eq!(v["bits_per_weight"]["bits"], 4.5);
    // Bits per weight for other options and shapes: awq 3-bit g128 on 576×1536 stores 3-bit
    // codes plus an f16 scale and a u8 zero per 128 columns (24/128 bits).
    let out = llq(&["plugins", "inspect", &plugin("awq"), "--opt", "bits=3", "--shape", "576x1536"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["group_scales"].as_bool(), v["calibration"].as_str()), (Some(true), Some("hessian")));
    assert!((v["bits_per_weight"]["bits"].as_f64().unwrap() - (3.0 + 24.0 / 128.0)).abs() < 1e-12, "{v}");
    let out = llq(&["plugins", "inspect", &plugin("awq"), "--shape", "4096"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shape `4096` is not ROWSxCOLS"));
}

#[test]
fn quantize_writes_packed_and_dequantized_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let w = write_safetensors(&input);
    let packed = dir.path().join("packed.safetensors");
    let out = llq(&[
        "quantize",
        "--quant",
        &plugin("nf4"),
        "--opt",
        "double_quant=true",
        "--input",
        input.to_str().unwrap(),
        "--output",
        packed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&packed).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        vec![
            "layer.bias",
            "layer.weight.absmax2",
            "layer.weight.absmax_codes",
            "layer.weight.absmax_offset",
            "layer.weight.codes"
        ]
    );
    assert_eq!(st.tensor("layer.weight.codes").unwrap().data().len(), 128);

    let deq = dir.path().join("deq.safetensors");
    let out = llq(&[
        "quantize",
        "--quant",
        &plugin("fp16"),
        "--input",
        input.to_str().unwrap(),
        "--output",
        deq.to_str().unwrap(),
        "--dequantize",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&deq).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("layer.weight").unwrap();
    assert_eq!(t.shape(), &[4, 64]);
    let d: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    for (a, b) in w.iter().zip(&d) {
        assert!((a - b).abs() <= a.abs() / 1024.0, "{a} vs {b}");
    }
}

#[test]
fn bad_input_gives_a_clear_error_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    write_safetensors(&input);
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "quantize".into(),
                "--quant".into(),
                plugin("nf4"),
                "--input".into(),
                corrupt.display().to_string(),
                "--output".into(),
                dir.path().join("o").display().to_string(),
            ],
            "is not a valid safetensors file",
        ),
        (
            vec![
                "quantize".into(),
                "--quant".into(),
                plugin("nf4"),
                "--opt".into(),
                "block_size=7".into(),
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                dir.path().join("o").display().to_string(),
            ],
            "must be one of",
        ),
        (
            vec![
                "quantize".into(),
                "--quant".into(),
                plugin("nf4"),
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                "/nonexistent-dir/o.safetensors".into(),
            ],
            "cannot write",
        ),
        (vec!["plugins".into(), "inspect".into(), "/no/such/plugin.so".into()], "file not found"),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = llq(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected `{want}` in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
