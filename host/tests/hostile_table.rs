//! The hostile-input table (issue 14): one line per careless or hostile input, across model
//! files (llama2.c, GGUF, HF directories), data files, options, plugins, tasks, predictions,
//! resume state and the other subcommands. Each case runs the real binary and must end with a
//! clear error that names what is wrong (`needle`), a non-zero status (1, or 2 for usage
//! errors the argument parser catches), no panic, and no `samples.jsonl` written by a run
//! that failed. `LLQ_HOSTILE_RECORD=1` prints every case's message (to write new needles).
//! The count is in the README; `host/tests/hostile.rs` holds the cases that need more than
//! one command (locks, resume, data limits).

mod common;

use common::*;
use std::path::{Path, PathBuf};

struct Case {
    name: String,
    args: Vec<String>,
    needle: String,
    /// 1 for errors the command reports, 2 for usage errors.
    code: i32,
}

/// Arguments, as owned strings.
fn a(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Fx {
    dir: PathBuf,
    n: std::cell::Cell<usize>,
}

impl Fx {
    /// A fresh path under the fixture folder.
    fn path(&self, name: &str) -> PathBuf {
        self.n.set(self.n.get() + 1);
        let d = self.dir.join(format!("c{:03}", self.n.get()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }
    fn out(&self) -> String {
        self.path("out").display().to_string()
    }
}

/// `run` on the fixture model and CoQA sample, with these replacements and extra args.
fn run(fx: &Fx, model: Option<&str>, task: Option<&str>, data: Option<&str>, extra: &[&str]) -> Vec<String> {
    let (m, t, d) = (p(STORIES), coqa(), p(SAMPLE));
    let out = fx.out();
    let mut v = a(&[
        "run",
        "--model",
        model.unwrap_or(&m),
        "--task",
        task.unwrap_or(&t),
        "--data",
        data.unwrap_or(&d),
        "--out",
        &out,
        "--limit",
        "1",
        "--task-opt",
        "max_new_tokens=4",
    ]);
    v.extend(a(extra));
    v
}

/// `run` with `model` in place of the fixture model.
fn model(fx: &Fx, model: &str) -> Vec<String> {
    run(fx, Some(model), None, None, &[])
}

/// `run` with `data` in place of the CoQA sample.
fn data(fx: &Fx, data: &str) -> Vec<String> {
    run(fx, None, None, Some(data), &[])
}

/// `bytes` behind a UTF-8 byte-order mark.
fn with_bom(bytes: &[u8]) -> Vec<u8> {
    [b"\xEF\xBB\xBF".as_slice(), bytes].concat()
}

/// `run` of the perplexity task over a short text.
fn ppl(fx: &Fx, model: Option<&str>, extra: &[&str]) -> Vec<String> {
    let text = fx.file("t.txt", b"the cat sat on the mat and the dog sat on the log\n");
    let (m, t) = (p(STORIES), wasm("perplexity").display().to_string());
    let out = fx.out();
    let mut v = a(&["run", "--model", model.unwrap_or(&m), "--task", &t, "--data", &text, "--out", &out]);
    v.extend(a(extra));
    v
}

/// `args` with the value of `flag` replaced.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|s| s == flag).unwrap();
    args[i + 1] = value.into();
    args
}

// ---- fixtures: models --------------------------------------------------------------------

fn stories() -> Vec<u8> {
    std::fs::read(p(STORIES)).unwrap()
}

/// The fixture llama2.c model with its header's i-th field replaced.
fn header(i: usize, v: i32) -> Vec<u8> {
    let mut b = stories();
    b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    b
}

/// The fixture model with the f32 at byte offset 28 + 4k replaced (k = 0: the embedding).
fn weight(k: usize, v: f32) -> Vec<u8> {
    let mut b = stories();
    b[28 + 4 * k..32 + 4 * k].copy_from_slice(&v.to_le_bytes());
    b
}

/// A tiny HF model (1 layer, hidden 16, 64-word vocabulary) as files in a fresh directory;
/// `edit` may change any file before it is written.
fn hf(fx: &Fx, edit: impl FnOnce(&mut std::collections::BTreeMap<String, Vec<u8>>)) -> String {
    let dir = fx.path("hf");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = hf_files(1, &[]);
    edit(&mut files);
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir.display().to_string()
}

const VOCAB: usize = 64;

fn hf_config(layers: usize) -> serde_json::Value {
    serde_json::json!({
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": layers,
        "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": VOCAB,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "eos_token_id": 1
    })
}

/// config.json, model.safetensors (tensors for `layers` layers, minus `drop`), tokenizer.json.
fn hf_files(layers: usize, drop: &[&str]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![VOCAB, 16]), ("model.norm.weight".into(), vec![16])];
    for l in 0..layers {
        let pre = format!("model.layers.{l}");
        for (n, s) in [
            ("input_layernorm.weight", vec![16]),
            ("post_attention_layernorm.weight", vec![16]),
            ("self_attn.q_proj.weight", vec![16, 16]),
            ("self_attn.k_proj.weight", vec![8, 16]),
            ("self_attn.v_proj.weight", vec![8, 16]),
            ("self_attn.o_proj.weight", vec![16, 16]),
            ("mlp.gate_proj.weight", vec![32, 16]),
            ("mlp.up_proj.weight", vec![32, 16]),
            ("mlp.down_proj.weight", vec![16, 32]),
        ] {
            tensors.push((format!("{pre}.{n}"), s));
        }
    }
    tensors.retain(|(n, _)| !drop.contains(&n.as_str()));
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let len: usize = s.iter().product();
            let b =
                (0..len).flat_map(|j| (((i * 31 + j * 7) % 17) as f32 / 40.0 - 0.2).to_le_bytes()).collect();
            (n, s, b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    let st = safetensors::serialize(views, None).unwrap();
    let mut f = std::collections::BTreeMap::new();
    f.insert("config.json".into(), serde_json::to_vec(&hf_config(layers)).unwrap());
    f.insert("model.safetensors".into(), st);
    f.insert("tokenizer.json".into(), tokenizer_json());
    f
}

/// A word-level tokenizer over 64 words ([UNK], </s>, then common words).
fn tokenizer_json() -> Vec<u8> {
    let words = "the cat sat on mat and dog log a is was in it to of he she they we you i my his her \
                 what who where when why how one two three did not yes no story once upon time there \
                 little girl boy named day went saw big red happy"
        .split_whitespace();
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    vocab.insert("</s>".into(), 1.into());
    for (i, w) in words.take(VOCAB - 2).enumerate() {
        vocab.insert(w.into(), (i + 2).into());
    }
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    }))
    .unwrap()
}

fn set(files: &mut std::collections::BTreeMap<String, Vec<u8>>, name: &str, bytes: &[u8]) {
    files.insert(name.into(), bytes.to_vec());
}

fn config_with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut c = hf_config(1);
    edit(&mut c);
    serde_json::to_vec(&c).unwrap()
}

/// A model.safetensors of the tiny model with one tensor's first value set to `v`.
fn safetensors_with_value(v: f32) -> Vec<u8> {
    let st = &hf_files(1, &[])["model.safetensors"];
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let mut b = st.clone();
    b[8 + n..12 + n].copy_from_slice(&v.to_le_bytes());
    b
}

fn cases(fx: &Fx) -> Vec<Case> {
    let mut c: Vec<Case> = vec![];
    let mut add = |name: &str, args: Vec<String>, needle: &str| {
        c.push(Case { name: name.into(), args, needle: needle.into(), code: 1 })
    };
    let st = stories();
    let bin = |fx: &Fx, b: &[u8]| fx.file("model.bin", b);

    // ---- llama2.c model files ----
    add("model: missing file", model(fx, "/no/such/model.bin"), "does not exist");
    add(
        "model: empty .bin",
        model(fx, &bin(fx, b"")),
        "holds 0 bytes: too short to be a GGUF or llama2.c model",
    );
    add("model: 10-byte .bin", model(fx, &bin(fx, &st[..10])), "file is too short for a llama2.c header");
    add("model: header only", model(fx, &bin(fx, &st[..28])), "the header");
    add("model: truncated weights", model(fx, &bin(fx, &st[..st.len() / 2])), "implies");
    add("model: a partial float", model(fx, &bin(fx, &st[..st.len() - 2])), "a partial one");
    let mut longer = st.clone();
    longer.extend_from_slice(&[0u8; 64]);
    add("model: trailing bytes", model(fx, &bin(fx, &longer)), "the header");
    add("model: zero dim", model(fx, &bin(fx, &header(0, 0))), "non-positive sizes");
    add("model: negative layers", model(fx, &bin(fx, &header(2, -3))), "non-positive sizes");
    add("model: zero heads", model(fx, &bin(fx, &header(3, 0))), "non-positive sizes");
    add("model: dim not a multiple of heads", model(fx, &bin(fx, &header(3, 7))), "is not a multiple of");
    add("model: 2^31 layers", model(fx, &bin(fx, &header(2, i32::MAX))), "implies");
    add("model: huge vocabulary", model(fx, &bin(fx, &header(5, i32::MAX))), "implies");
    add("model: zero seq_len", model(fx, &bin(fx, &header(6, 0))), "non-positive sizes");
    add("model: NaN weight", model(fx, &bin(fx, &weight(5, f32::NAN))), "non-finite");
    add("model: +inf weight", model(fx, &bin(fx, &weight(100, f32::INFINITY))), "non-finite");
    add("model: -inf weight", model(fx, &bin(fx, &weight(4000, f32::NEG_INFINITY))), "non-finite");
    add(
        "model: a text file",
        model(fx, &fx.file("model.txt", b"hello world, not a model")),
        "neither GGUF nor a llama2.c",
    );
    add(
        "model: a directory without config",
        model(fx, &fx.path("empty").parent().unwrap().display().to_string()),
        "config.json",
    );
    add("model: unknown synthetic preset", model(fx, "synthetic:llama-9000b"), "llama-9000b");

    // ---- GGUF ----
    let gguf = std::fs::read(p("models/smollm2-135m-instruct.gguf")).unwrap();
    add("gguf: magic only", model(fx, &fx.file("m.gguf", b"GGUF")), "not a readable GGUF file");
    add(
        "gguf: version 99",
        model(fx, &fx.file("m.gguf", b"GGUF\x63\x00\x00\x00rest")),
        "unsupported magic/version Gguf/99",
    );
    add("gguf: cut in its metadata", model(fx, &fx.file("m.gguf", &gguf[..4096])), "only 4072 remaining");
    add(
        "gguf: cut in its tensors",
        model(fx, &fx.file("m.gguf", &gguf[..gguf.len() / 3])),
        "only 0 remaining in file",
    );
    add(
        "gguf: garbage after the magic",
        model(fx, &fx.file("m.gguf", &[b"GGUF".as_slice(), &[0xff; 200]].concat())),
        "unsupported magic/version",
    );

    // ---- HF directories ----
    add(
        "hf: config.json with a BOM",
        model(
            fx,
            &hf(fx, |f| {
                let c = with_bom(&f["config.json"]);
                set(f, "config.json", &c)
            }),
        ),
        "byte-order mark",
    );
    add(
        "hf: config.json cut short",
        model(
            fx,
            &hf(fx, |f| {
                let c = f["config.json"][..40].to_vec();
                set(f, "config.json", &c)
            }),
        ),
        "truncated",
    );
    add("hf: config.json empty", model(fx, &hf(fx, |f| set(f, "config.json", b""))), "is empty");
    add(
        "hf: config.json a list",
        model(fx, &hf(fx, |f| set(f, "config.json", b"[1, 2]"))),
        "not a Llama config",
    );
    add(
        "hf: hidden_size a string",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["hidden_size"] = "16".into())))),
        "invalid type",
    );
    add(
        "hf: no intermediate_size",
        model(
            fx,
            &hf(fx, |f| {
                set(
                    f,
                    "config.json",
                    &config_with(|c| {
                        c.as_object_mut().unwrap().remove("intermediate_size");
                    }),
                )
            }),
        ),
        "missing field `intermediate_size`",
    );
    add(
        "hf: zero heads",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["num_attention_heads"] = 0.into())))),
        "must be positive",
    );
    add(
        "hf: heads not a multiple of kv heads",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["num_key_value_heads"] = 3.into())))),
        "num_key_value_heads",
    );
    add(
        "hf: negative rms_norm_eps",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["rms_norm_eps"] = (-1.0).into())))),
        "rms_norm_eps and rope_theta must be positive",
    );
    add(
        "hf: config says 2 layers, checkpoint has 1",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["num_hidden_layers"] = 2.into())))),
        "model.layers.1.",
    );
    add(
        "hf: checkpoint has 2 layers, config says 1",
        model(
            fx,
            &hf(fx, |f| {
                let s = hf_files(2, &[])["model.safetensors"].clone();
                set(f, "model.safetensors", &s)
            }),
        ),
        "does not use",
    );
    add(
        "hf: a tensor missing",
        model(
            fx,
            &hf(fx, |f| {
                let s = hf_files(1, &["model.layers.0.mlp.up_proj.weight"])["model.safetensors"].clone();
                set(f, "model.safetensors", &s)
            }),
        ),
        "`model.layers.0.mlp.up_proj.weight` is missing",
    );
    add(
        "hf: hidden 32 against 16-wide tensors",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["hidden_size"] = 32.into())))),
        "has shape",
    );
    add(
        "hf: NaN in a tensor",
        model(fx, &hf(fx, |f| set(f, "model.safetensors", &safetensors_with_value(f32::NAN)))),
        "non-finite",
    );
    add(
        "hf: inf in a tensor",
        model(fx, &hf(fx, |f| set(f, "model.safetensors", &safetensors_with_value(f32::INFINITY)))),
        "non-finite",
    );
    add(
        "hf: no model.safetensors",
        model(
            fx,
            &hf(fx, |f| {
                f.remove("model.safetensors");
            }),
        ),
        "model.safetensors",
    );
    add(
        "hf: safetensors cut short",
        model(
            fx,
            &hf(fx, |f| {
                let s = f["model.safetensors"][..300].to_vec();
                set(f, "model.safetensors", &s)
            }),
        ),
        "not a valid safetensors file",
    );
    add(
        "hf: safetensors header length beyond the file",
        model(
            fx,
            &hf(fx, |f| set(f, "model.safetensors", &[0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0, b'{', b'}'])),
        ),
        "not a valid safetensors file",
    );
    add(
        "hf: safetensors header not JSON",
        model(fx, &hf(fx, |f| set(f, "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00notjson!"))),
        "not a valid safetensors file",
    );
    add(
        "hf: empty safetensors",
        model(fx, &hf(fx, |f| set(f, "model.safetensors", b""))),
        "not a valid safetensors file",
    );
    add(
        "hf: an int32 tensor",
        model(
            fx,
            &hf(fx, |f| {
                let b = vec![0u8; 16 * 4];
                let v = safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![16], &b).unwrap();
                let s = safetensors::serialize(vec![("model.norm.weight", v)], None).unwrap();
                set(f, "model.safetensors", &s)
            }),
        ),
        "is not a float type",
    );
    add(
        "hf: no tokenizer.json",
        model(
            fx,
            &hf(fx, |f| {
                f.remove("tokenizer.json");
            }),
        ),
        "tokenizer.json",
    );
    add(
        "hf: tokenizer.json cut short",
        model(
            fx,
            &hf(fx, |f| {
                let t = f["tokenizer.json"][..100].to_vec();
                set(f, "tokenizer.json", &t)
            }),
        ),
        "truncated",
    );
    add(
        "hf: tokenizer.json with a BOM",
        model(
            fx,
            &hf(fx, |f| {
                let t = with_bom(&f["tokenizer.json"]);
                set(f, "tokenizer.json", &t)
            }),
        ),
        "byte-order mark",
    );
    add(
        "hf: tokenizer.json of another kind",
        model(fx, &hf(fx, |f| set(f, "tokenizer.json", b"{\"model\": {\"type\": \"Nope\"}}"))),
        "not a usable tokenizer.json",
    );
    add(
        "hf: generation_config cut short",
        model(fx, &hf(fx, |f| set(f, "generation_config.json", b"{\"eos_token_id\": [1,"))),
        "truncated",
    );
    add(
        "hf: eos_token_id a string",
        model(fx, &hf(fx, |f| set(f, "generation_config.json", b"{\"eos_token_id\": \"</s>\"}"))),
        "is not a token id",
    );
    add(
        "hf: eos_token_id negative in config",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["eos_token_id"] = (-1).into())))),
        "is not a token id",
    );
    add(
        "hf: tokenizer_config.json malformed",
        model(fx, &hf(fx, |f| set(f, "tokenizer_config.json", b"{chat_template:"))),
        "tokenizer_config.json",
    );
    add(
        "hf: chat_template a list",
        model(
            fx,
            &hf(fx, |f| set(f, "tokenizer_config.json", b"{\"chat_template\": [{\"name\": \"default\"}]}")),
        ),
        "not a string",
    );
    add(
        "hf: index.json malformed",
        model(fx, &hf(fx, |f| set(f, "model.safetensors.index.json", b"{\"weight_map\": "))),
        "truncated",
    );
    add(
        "hf: index.json without weight_map",
        model(fx, &hf(fx, |f| set(f, "model.safetensors.index.json", b"{\"metadata\": {}}"))),
        "has no weight_map",
    );
    add(
        "hf: vocabulary smaller than the tokenizer's",
        model(fx, &hf(fx, |f| set(f, "config.json", &config_with(|c| c["vocab_size"] = 8.into())))),
        "has shape",
    );

    // ---- data files ----
    add("data: missing", data(fx, "/no/such/data.json"), "cannot read data /no/such/data.json");
    add("data: empty", data(fx, &fx.file("d.json", b"")), "d.json");
    add("data: not JSON", data(fx, &fx.file("d.json", b"story: once")), "d.json");
    add("data: cut short", data(fx, &fx.file("d.json", &std::fs::read(p(SAMPLE)).unwrap()[..500])), "d.json");
    add(
        "data: with a BOM",
        data(fx, &fx.file("d.json", &with_bom(&std::fs::read(p(SAMPLE)).unwrap()))),
        "d.json",
    );
    add("data: no data list", data(fx, &fx.file("d.json", b"{\"version\": 1}")), "no `data` list");
    add("data: data not a list", data(fx, &fx.file("d.json", b"{\"data\": 5}")), "d.json");
    add(
        "data: a story without questions",
        data(fx, &fx.file("d.json", b"{\"data\": [{\"id\": \"s\", \"story\": \"x\"}]}")),
        "d.json",
    );
    add("data: questions and answers differ in number", data(fx, &fx.file("d.json", b"{\"data\": [{\"id\": \"s\", \"story\": \"x\", \"questions\": [{\"input_text\": \"q\", \"turn_id\": 1}], \"answers\": []}]}")), "d.json");
    add("data: no stories", data(fx, &fx.file("d.json", b"{\"data\": []}")), "d.json");
    add("data: not UTF-8", data(fx, &fx.file("d.json", b"{\"data\": [\"\xff\xfe\"]}")), "d.json");
    add(
        "data: a directory",
        data(fx, &fx.path("dir").parent().unwrap().display().to_string()),
        "cannot read data",
    );
    add(
        "perplexity data: empty",
        {
            let t = fx.file("e.txt", b"");
            let mut v = ppl(fx, None, &[]);
            let i = v.iter().position(|s| s == "--data").unwrap();
            v[i + 1] = t;
            v
        },
        "e.txt",
    );
    add(
        "perplexity data: not UTF-8",
        {
            let t = fx.file("b.txt", b"abc \xff\xfe\xfd def");
            let mut v = ppl(fx, None, &[]);
            let i = v.iter().position(|s| s == "--data").unwrap();
            v[i + 1] = t;
            v
        },
        "b.txt",
    );

    // ---- options ----
    add("--limit 0", with(run(fx, None, None, None, &[]), "--limit", "0"), "--limit 0 is out of range");
    add(
        "--limit past the data",
        with(run(fx, None, None, None, &[]), "--limit", "10000"),
        "--limit 10000 is out of range",
    );
    add("--device bogus", run(fx, None, None, None, &["--device", "tpu"]), "tpu");
    add("--device cuda:x", run(fx, None, None, None, &["--device", "cuda:x"]), "cuda:x");
    add("--task-opt unknown key", run(fx, None, None, None, &["--task-opt", "colour=blue"]), "colour");
    add(
        "--task-opt bad value",
        run(fx, None, None, None, &["--task-opt", "max_new_tokens=lots"]),
        "max_new_tokens",
    );
    add("--opt without --quant", run(fx, None, None, None, &["--opt", "block_size=64"]), "--opt");
    add(
        "--opt unknown key",
        run(fx, None, None, None, &["--quant", &plugin("nf4"), "--opt", "colour=blue"]),
        "colour",
    );
    add(
        "--opt block size off the list",
        run(fx, None, None, None, &["--quant", &plugin("nf4"), "--opt", "block_size=63"]),
        "block_size",
    );
    add(
        "--opt bool not a bool",
        run(fx, None, None, None, &["--quant", &plugin("nf4"), "--opt", "double_quant=maybe"]),
        "double_quant",
    );
    add(
        "--opt negative threshold",
        run(fx, None, None, None, &["--quant", &plugin("int8"), "--opt", "threshold=-1"]),
        "threshold",
    );
    add(
        "--opt bits out of range",
        run(fx, None, None, None, &["--quant", &plugin("rtn"), "--opt", "bits=5"]),
        "bits",
    );
    add(
        "--calib-samples without a calibrating plugin",
        run(fx, None, None, None, &["--quant", &plugin("nf4"), "--calib-samples", "4"]),
        "takes no calibration data",
    );
    add(
        "--calib-* without a plugin",
        run(fx, None, None, None, &["--calib-seed", "3"]),
        "--calib-* options need a --quant plugin",
    );
    add(
        "--calib-samples 0",
        run(fx, None, None, None, &["--quant", &plugin("gptq"), "--calib-samples", "0"]),
        "--calib-samples must be at least 1",
    );
    add(
        "--calib-seq-len 0",
        run(fx, None, None, None, &["--quant", &plugin("gptq"), "--calib-seq-len", "0"]),
        "--calib-seq-len must be at least 1",
    );
    add(
        "--calib-data missing",
        run(fx, None, None, None, &["--quant", &plugin("gptq"), "--calib-data", "/no/such/text.txt"]),
        "/no/such/text.txt",
    );
    add(
        "--calib-data empty",
        run(fx, None, None, None, &["--quant", &plugin("gptq"), "--calib-data", &fx.file("c.txt", b"")]),
        "c.txt",
    );
    add(
        "--calib-data JSONL without text",
        run(
            fx,
            None,
            None,
            None,
            &["--quant", &plugin("gptq"), "--calib-data", &fx.file("c.jsonl", b"{\"body\": \"x\"}\n")],
        ),
        "c.jsonl",
    );
    add(
        "--calib-seq-len beyond the model",
        run(
            fx,
            None,
            None,
            None,
            &[
                "--quant",
                &plugin("gptq"),
                "--calib-seq-len",
                "100000",
                "--calib-samples",
                "1",
                "--calib-data",
                &fx.file("c.txt", b"the cat sat on the mat\n"),
            ],
        ),
        "--calib-seq-len 100000 is out of range",
    );
    add(
        "--chat-template on a perplexity task",
        ppl(fx, None, &["--chat-template"]),
        "--chat-template applies to generation requests",
    );
    add(
        "--chat-template on a model without one",
        run(fx, None, None, None, &["--chat-template"]),
        "chat template",
    );
    add(
        "--kl-baseline without --quant",
        ppl(fx, None, &["--kl-baseline"]),
        "--kl-baseline compares a quantized model",
    );
    add(
        "--kl-baseline on CoQA",
        run(fx, None, None, None, &["--quant", &plugin("nf4"), "--kl-baseline"]),
        "--kl-baseline applies to rolling log-likelihood requests",
    );
    add(
        "--save-logprobs on CoQA",
        run(fx, None, None, None, &["--save-logprobs"]),
        "--save-logprobs applies to rolling",
    );
    add(
        "--kl-baseline-from a folder without a run",
        ppl(fx, None, &["--quant", &plugin("nf4"), "--kl-baseline-from", &fx.out()]),
        "--kl-baseline-from",
    );
    add(
        "--task-timeout negative",
        run(fx, None, None, None, &["--task-timeout=-1"]),
        "--task-timeout must be a positive number",
    );
    add("--task-fuel 0", run(fx, None, None, None, &["--task-fuel", "0"]), "--task-fuel");
    add(
        "--task-data-limit past 64 GiB",
        run(fx, None, None, None, &["--task-data-limit", "65537"]),
        "--task-data-limit 65537 MiB is outside",
    );
    // Usage errors (the parser's own, exit 2).
    let mut usage = |name: &str, args: Vec<String>, needle: &str| {
        c.push(Case { name: name.into(), args, needle: needle.into(), code: 2 })
    };
    usage("--limit not a number", run(fx, None, None, None, &["--limit", "ten"]), "--limit");
    usage(
        "--batch-size negative",
        run(fx, None, None, None, &["--batch-size=-2"]),
        "invalid value '-2' for '--batch-size",
    );
    usage("--window not a number", ppl(fx, None, &["--window", "big"]), "--window");
    usage("--task-opt without =", run(fx, None, None, None, &["--task-opt", "max_new_tokens"]), "--task-opt");
    usage(
        "--opt without =",
        run(fx, None, None, None, &["--quant", &plugin("nf4"), "--opt", "block_size"]),
        "--opt",
    );
    usage(
        "--kl-baseline with --kl-baseline-from",
        ppl(fx, None, &["--kl-baseline", "--kl-baseline-from", "x"]),
        "cannot be used with",
    );
    usage("an unknown flag", run(fx, None, None, None, &["--turbo"]), "--turbo");
    usage("run without --task", a(&["run", "--model", &p(STORIES), "--data", &p(SAMPLE)]), "--task");
    usage("an unknown subcommand", a(&["train"]), "train");
    usage(
        "--calib-mode unknown",
        run(fx, None, None, None, &["--quant", &plugin("gptq"), "--calib-mode", "sideways"]),
        "sideways",
    );
    let mut add = |name: &str, args: Vec<String>, needle: &str| {
        c.push(Case { name: name.into(), args, needle: needle.into(), code: 1 })
    };

    // ---- plugins ----
    let nf4 = std::fs::read(plugin("nf4")).unwrap();
    add(
        "plugin: missing",
        run(fx, None, None, None, &["--quant", "/no/such/plugin.so"]),
        "/no/such/plugin.so",
    );
    add("plugin: empty file", run(fx, None, None, None, &["--quant", &fx.file("p.so", b"")]), "p.so");
    add(
        "plugin: a text file",
        run(fx, None, None, None, &["--quant", &fx.file("p.so", b"not an ELF file at all")]),
        "not a loadable shared library",
    );
    add(
        "plugin: ELF header only",
        run(fx, None, None, None, &["--quant", &fx.file("p.so", &nf4[..64])]),
        "p.so",
    );
    add(
        "plugin: cut in half",
        run(fx, None, None, None, &["--quant", &fx.file("p.so", &nf4[..nf4.len() / 2])]),
        "p.so",
    );
    add(
        "plugin: a directory",
        run(fx, None, None, None, &["--quant", &fx.path("d").parent().unwrap().display().to_string()]),
        "plugin",
    );
    add("plugin: a WASM task", run(fx, None, None, None, &["--quant", &coqa()]), "coqa.wasm");
    add(
        "plugin: wrong ABI version",
        run(fx, None, None, None, &["--quant", &plugin("test_bad_abi")]),
        "ABI v99",
    );
    add(
        "plugin: no entry symbol",
        run(fx, None, None, None, &["--quant", &plugin("test_no_entry")]),
        "no `llq_plugin_entry` symbol",
    );

    // ---- tasks ----
    let coqa_bytes = std::fs::read(coqa()).unwrap();
    add("task: missing", run(fx, None, Some("/no/such/task.wasm"), None, &[]), "/no/such/task.wasm");
    add("task: empty file", run(fx, None, Some(&fx.file("t.wasm", b"")), None, &[]), "t.wasm");
    add("task: a text file", run(fx, None, Some(&fx.file("t.wasm", b"(module)")), None, &[]), "t.wasm");
    add(
        "task: cut in half",
        run(fx, None, Some(&fx.file("t.wasm", &coqa_bytes[..coqa_bytes.len() / 2])), None, &[]),
        "t.wasm",
    );
    add(
        "task: a core module, not a component",
        run(fx, None, Some(&fx.file("t.wasm", b"\0asm\x01\0\0\0")), None, &[]),
        "t.wasm",
    );
    add("task: a plugin library", run(fx, None, Some(&plugin("nf4")), None, &[]), "nf4");
    add(
        "task: a directory",
        run(fx, None, Some(&fx.path("d").parent().unwrap().display().to_string()), None, &[]),
        "task",
    );

    // ---- predictions (score) ----
    let score = |preds: &str| a(&["score", "--task", &coqa(), "--data", &p(SAMPLE), "--predictions", preds]);
    add("score: predictions missing", score("/no/such/preds.json"), "/no/such/preds.json");
    add("score: predictions empty", score(&fx.file("p.json", b"")), "p.json");
    add("score: predictions cut short", score(&fx.file("p.json", b"{\"a#1\": \"yes\", \"b")), "p.json");
    add("score: predictions a number", score(&fx.file("p.json", b"42")), "p.json");
    add(
        "score: prediction values not strings",
        score(&fx.file("p.json", b"[{\"id\": \"x\", \"turn_id\": 1, \"answer\": 5}]")),
        "p.json",
    );
    add(
        "score: predictions not UTF-8",
        score(&fx.file("p.json", b"[{\"id\": \"\xff\", \"turn_id\": 1, \"answer\": \"a\"}]")),
        "p.json",
    );

    // ---- other subcommands ----
    let out = fx.out();
    add(
        "quantize: input missing",
        a(&["quantize", "--quant", &plugin("nf4"), "--input", "/no/such/w.safetensors", "--output", &out]),
        "/no/such/w.safetensors",
    );
    add(
        "quantize: input not safetensors",
        a(&[
            "quantize",
            "--quant",
            &plugin("nf4"),
            "--input",
            &fx.file("w.safetensors", b"plain text"),
            "--output",
            &out,
        ]),
        "w.safetensors",
    );
    add(
        "quantize: calibration missing",
        a(&[
            "quantize",
            "--quant",
            &plugin("gptq"),
            "--input",
            &p("tests/fixtures/gptq/weights.safetensors"),
            "--calibration",
            "/no/such/acts.safetensors",
            "--output",
            &out,
        ]),
        "/no/such/acts.safetensors",
    );
    add(
        "quantize: calibrating plugin without calibration",
        a(&[
            "quantize",
            "--quant",
            &plugin("gptq"),
            "--input",
            &p("tests/fixtures/gptq/weights.safetensors"),
            "--output",
            &out,
        ]),
        "calibration",
    );
    add(
        "convert: model missing",
        a(&["convert", "--model", "/no/such/m.gguf", "--out", &out]),
        "/no/such/m.gguf",
    );
    add(
        "convert: a llama2.c model (no tokenizer.json form)",
        a(&["convert", "--model", &p(STORIES), "--out", &fx.out()]),
        "has no tokenizer.json form",
    );
    add(
        "compare: results missing",
        a(&["compare", "/no/such/results.json", "/no/such/other.json"]),
        "/no/such/results.json",
    );
    add(
        "compare: results cut short",
        a(&["compare", &fx.file("results.json", b"{\"schema\": \"llq-res"), &fx.file("results.json", b"{}")]),
        "truncated",
    );
    add(
        "compare: results of another schema",
        a(&[
            "compare",
            &fx.file("results.json", b"{\"schema\": \"llq-results/1\"}"),
            &fx.file("results.json", b"{\"schema\": \"llq-results/1\"}"),
        ]),
        "is not an llq-results/2 results file",
    );
    add(
        "compare: results with a BOM",
        a(&["compare", &fx.file("results.json", b"\xEF\xBB\xBF{}"), &fx.file("results.json", b"{}")]),
        "byte-order mark",
    );
    add("sweep: spec missing", a(&["sweep", "plan", "/no/such/spec.toml"]), "/no/such/spec.toml");
    add("sweep: spec not TOML", a(&["sweep", "plan", &fx.file("s.toml", b"[[[not toml")]), "s.toml");
    add(
        "sweep: spec with an unknown key",
        a(&["sweep", "plan", &fx.file("s.toml", b"name = \"x\"\ncolour = \"blue\"\n")]),
        "colour",
    );
    add("sweep: spec without models", a(&["sweep", "plan", &fx.file("s.toml", b"name = \"x\"\n")]), "s.toml");
    add("plugins inspect: not a plugin", a(&["plugins", "inspect", &fx.file("p.so", b"junk")]), "p.so");
    add("bench: model missing", a(&["bench", "--model", "/no/such/m.gguf"]), "/no/such/m.gguf");
    add("bench: batch size 0", a(&["bench", "--model", &p(STORIES), "--batch-sizes", "0"]), "batch");
    add("bench: context 0", a(&["bench", "--model", &p(STORIES), "--context", "0"]), "--context");
    add("tasks inspect: not a component", a(&["tasks", "inspect", &fx.file("t.wasm", b"junk")]), "t.wasm");

    // ---- resume state ----
    let resume_dir = |run_json: &[u8]| -> String {
        let d = fx.path("o");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("samples.jsonl"), b"").unwrap();
        std::fs::write(d.join("run.json"), run_json).unwrap();
        d.display().to_string()
    };
    let with_out = |out: String, extra: &[&str]| {
        let mut v = run(fx, None, None, None, extra);
        let i = v.iter().position(|s| s == "--out").unwrap();
        v[i + 1] = out;
        v
    };
    add(
        "resume: run.json cut short",
        with_out(resume_dir(b"{\"schema\": \"llq-run/1\", \"llq_ver"), &["--resume"]),
        "truncated",
    );
    add(
        "resume: run.json with a BOM",
        with_out(resume_dir(b"\xEF\xBB\xBF{}"), &["--resume"]),
        "byte-order mark",
    );
    add(
        "resume: run.json of another schema",
        with_out(resume_dir(b"{\"schema\": \"other/9\"}"), &["--resume"]),
        "is not an llq-run/1 run manifest",
    );
    add(
        "resume: run.json with a missing field",
        with_out(resume_dir(b"{\"schema\": \"llq-run/1\"}"), &["--resume"]),
        "does not follow llq-run/1",
    );
    add(
        "resume: samples but no run.json",
        {
            let d = fx.path("o");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("samples.jsonl"), b"{}\n").unwrap();
            with_out(d.display().to_string(), &["--resume"])
        },
        "has no run.json",
    );
    add(
        "run: samples.jsonl already there",
        {
            let d = fx.path("o");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("samples.jsonl"), b"").unwrap();
            with_out(d.display().to_string(), &[])
        },
        "already holds a run",
    );
    add("run: --out is a file", with_out(fx.file("outfile", b"x"), &[]), "cannot create output directory");
    c
}

#[test]
fn every_hostile_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fx { dir: dir.path().to_path_buf(), n: Default::default() };
    let all = cases(&fx);
    let record = std::env::var("LLQ_HOSTILE_RECORD").is_ok();
    let failures = std::sync::Mutex::new(vec![]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(case) = all.get(i) else { break };
                let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
                let o = llq(&args);
                let e = stderr(&o);
                if record {
                    eprintln!(
                        "[{}] exit {:?}: {}",
                        case.name,
                        o.status.code(),
                        e.trim().lines().last().unwrap_or("")
                    );
                }
                let out_samples = case
                    .args
                    .iter()
                    .position(|a| a == "--out")
                    .map(|i| Path::new(&case.args[i + 1]).join("samples.jsonl"));
                let wrote = out_samples.is_some_and(|p| {
                    p.exists() && std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false)
                }) && !case.name.starts_with("resume")
                    && !case.name.starts_with("run: samples");
                let ok = o.status.code() == Some(case.code)
                    && !case.needle.is_empty()
                    && e.contains(&case.needle)
                    && !e.contains("panicked")
                    && !wrote;
                if !ok {
                    failures.lock().unwrap().push(format!(
                        "{}: exit {:?} (want {}), needle {:?}{}\n    {}",
                        case.name,
                        o.status.code(),
                        case.code,
                        case.needle,
                        if wrote { ", wrote samples" } else { "" },
                        e.trim().lines().last().unwrap_or("")
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!("{} hostile inputs, {} failed", all.len(), failures.len());
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), all.len(), failures.join("\n"));
    assert!(all.len() >= 150, "the README promises at least 150 table cases; {} here", all.len());
}
