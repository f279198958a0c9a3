//! Bad checkpoints give errors that name the file and the key at fault, never a panic.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use engine::MusicGen;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// A private copy of a fixture model directory, removed when dropped.
fn copy_model(model: &str, tag: &str) -> tempfile::TempDir {
    let dst = temp_dir(&format!("{tag}-{model}"));
    for entry in std::fs::read_dir(model_dir(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.path().join(entry.file_name())).unwrap();
    }
    dst
}

/// Rewrite `file` through `edit(name, dtype, shape, bytes)`, which returns the tensors to write.
fn rewrite(
    file: &Path,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some((dtype, shape, data)) = edit(
            &name,
            view.dtype(),
            view.shape().to_vec(),
            view.data().to_vec(),
        ) {
            owned.push((name, dtype, shape, data));
        }
    }
    let views: HashMap<String, TensorView> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, file).unwrap();
}

fn load_err(dir: &Path) -> String {
    match MusicGen::load(dir, &device()) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_safetensors_names_the_file() {
    let copy = copy_model("musicgen-tiny", "truncated");
    let dir = copy.path();
    let file = dir.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    let err = load_err(dir);
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn misshaped_tensor_names_key_and_shapes() {
    let copy = copy_model("musicgen-tiny", "misshaped");
    let dir = copy.path();
    let key = "decoder.model.decoder.layers.1.fc1.weight";
    rewrite(
        &dir.join("model.safetensors"),
        |name, dtype, shape, data| {
            if name == key {
                // same bytes, transposed shape
                Some((dtype, vec![shape[1], shape[0]], data))
            } else {
                Some((dtype, shape, data))
            }
        },
    );
    let err = load_err(dir);
    assert!(err.contains(key), "{err}");
    assert!(
        err.contains("[32, 96]") && err.contains("[96, 32]"),
        "{err}"
    );
}

#[test]
fn missing_tensor_names_key() {
    let copy = copy_model("musicgen-tiny", "missing");
    let dir = copy.path();
    let key = "decoder.lm_heads.2.weight";
    rewrite(
        &dir.join("model.safetensors"),
        |name, dtype, shape, data| (name != key).then_some((dtype, shape, data)),
    );
    let err = load_err(dir);
    assert!(err.contains(key) && err.contains("missing"), "{err}");
}

#[test]
fn wrong_dtype_names_key() {
    let copy = copy_model("musicgen-tiny", "dtype");
    let dir = copy.path();
    let key = "enc_to_dec_proj.bias";
    rewrite(
        &dir.join("model.safetensors"),
        |name, dtype, shape, data| {
            if name == key {
                Some((Dtype::I32, shape, data))
            } else {
                Some((dtype, shape, data))
            }
        },
    );
    let err = load_err(dir);
    assert!(err.contains(key) && err.contains("I32"), "{err}");
}

#[test]
fn malformed_and_invalid_configs_are_named() {
    let copy = copy_model("musicgen-tiny", "config");
    let dir = copy.path();
    let config = dir.join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, &good[..good.len() / 2]).unwrap();
    let err = load_err(dir);
    assert!(
        err.contains("config.json") && err.contains("malformed JSON"),
        "{err}"
    );

    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    json["decoder"]["num_attention_heads"] = serde_json::json!(5);
    std::fs::write(&config, json.to_string()).unwrap();
    let err = load_err(dir);
    assert!(err.contains("decoder.num_attention_heads"), "{err}");

    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    json["decoder"]
        .as_object_mut()
        .unwrap()
        .remove("hidden_size");
    std::fs::write(&config, json.to_string()).unwrap();
    let err = load_err(dir);
    assert!(err.contains("hidden_size"), "{err}");

    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    json["text_encoder"]["feed_forward_proj"] = serde_json::json!("swish");
    std::fs::write(&config, json.to_string()).unwrap();
    let err = load_err(dir);
    assert!(
        err.contains("feed_forward_proj") && err.contains("swish"),
        "{err}"
    );
}

#[test]
fn sharded_index_with_missing_shard_is_named() {
    let copy = copy_model("musicgen-tiny-b", "shard");
    let dir = copy.path();
    std::fs::remove_file(dir.join("model-00003-of-00004.safetensors")).unwrap();
    let err = load_err(dir);
    assert!(
        err.contains("model-00003-of-00004.safetensors") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn half_precision_checkpoints_load() {
    // The hub's musicgen-medium/large ship f16 shards; bf16 appears in re-uploads.
    for (dtype, tolerance) in [(Dtype::F16, 2e-2f32), (Dtype::BF16, 2e-1)] {
        let copy = copy_model("musicgen-tiny", &format!("{dtype:?}"));
        let dir = copy.path();
        rewrite(&dir.join("model.safetensors"), |_, d, shape, data| {
            if d != Dtype::F32 {
                return Some((d, shape, data));
            }
            let out: Vec<u8> = data
                .chunks_exact(4)
                .flat_map(|b| {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    match dtype {
                        Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                        _ => half::bf16::from_f32(x).to_le_bytes(),
                    }
                })
                .collect();
            Some((dtype, shape, out))
        });
        let half_model = MusicGen::load(dir, &device()).expect("half-precision checkpoint");
        let full = MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap();
        let ids = full.tokenize("A relaxing jazz song with piano").unwrap();
        let a = to_vec(full.encode_text(&ids));
        let b = to_vec(half_model.encode_text(&ids));
        let err = max_abs_err(&a, &b);
        assert!(
            err > 0.0 && err < tolerance,
            "{dtype:?}: T5 differs from f32 by {err}"
        );
    }
}

/// The message of `err` and of every error in its `source()` chain, joined as anyhow's `{:#}`
/// prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn load_error(dir: &Path) -> engine::LoadError {
    match MusicGen::load(dir, &device()) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn a_bad_config_value_is_named_by_its_key_path_once() {
    let copy = copy_model("musicgen-tiny", "keypath");
    let dir = copy.path();
    let config = dir.join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();
    let bad = good.replacen("\"num_codebooks\": 4", "\"num_codebooks\": \"four\"", 1);
    assert_ne!(bad, good, "the fixture config has `\"num_codebooks\": 4`");
    std::fs::write(&config, &bad).unwrap();
    // serde_json reports the position just after the bad value.
    let at = bad.find("\"four\"").unwrap() + "\"four\"".len();
    let line = bad[..at].matches('\n').count() + 1;
    let column = at - bad[..at].rfind('\n').map_or(0, |i| i + 1);

    let err = load_error(dir);
    let expected = format!(
        "{}: decoder.num_codebooks: invalid type: string \"four\", expected usize \
         (line {line}, column {column})",
        config.display()
    );
    assert_eq!(err.to_string(), expected);
    let full = chain(&err);
    assert_eq!(full, expected, "no cause repeats the message");
    assert_eq!(full.matches("invalid type").count(), 1, "{full}");
}

#[test]
fn unknown_config_strings_are_rejected_at_their_key() {
    let copy = copy_model("musicgen-tiny", "enums");
    let dir = copy.path();
    let config = dir.join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();
    let cases = [
        (
            "audio_encoder",
            "norm_type",
            "time_group_norm",
            "weight_norm",
        ),
        ("audio_encoder", "pad_mode", "circular", "reflect"),
        ("text_encoder", "feed_forward_proj", "swish", "gated-gelu"),
        ("decoder", "activation_function", "silu", "gelu"),
    ];
    for (section, key, value, expected) in cases {
        let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
        json[section][key] = serde_json::json!(value);
        std::fs::write(&config, json.to_string()).unwrap();
        let err = chain(&load_error(dir));
        assert!(
            err.contains(&format!("{section}.{key}: unknown variant `{value}`"))
                && err.contains(&format!("`{expected}`")),
            "{err}"
        );
        assert_eq!(err.matches("unknown variant").count(), 1, "{err}");
    }
}

#[test]
fn missing_tensors_are_named_by_their_checkpoint_key() {
    // One key per kind of module, T5 and decoder, both feed-forward variants.
    let cases = [
        ("musicgen-tiny", "text_encoder.shared.weight"),
        (
            "musicgen-tiny",
            "text_encoder.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        ),
        (
            "musicgen-tiny",
            "text_encoder.encoder.block.1.layer.0.SelfAttention.o.weight",
        ),
        (
            "musicgen-tiny",
            "text_encoder.encoder.block.1.layer.1.DenseReluDense.wi.weight",
        ),
        (
            "musicgen-tiny",
            "text_encoder.encoder.block.0.layer.1.layer_norm.weight",
        ),
        (
            "musicgen-tiny",
            "text_encoder.encoder.final_layer_norm.weight",
        ),
        (
            "musicgen-tiny-b",
            "text_encoder.encoder.block.2.layer.1.DenseReluDense.wi_1.weight",
        ),
        (
            "musicgen-tiny",
            "decoder.model.decoder.layers.1.encoder_attn.v_proj.weight",
        ),
        (
            "musicgen-tiny",
            "decoder.model.decoder.layers.0.self_attn_layer_norm.bias",
        ),
        (
            "musicgen-tiny",
            "decoder.model.decoder.embed_tokens.3.weight",
        ),
        ("musicgen-tiny", "decoder.model.decoder.layer_norm.weight"),
    ];
    for (model, key) in cases {
        let copy = copy_model(model, "missing-key");
        let dir = copy.path();
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        for file in &files {
            rewrite(file, |name, dtype, shape, data| {
                (name != key).then_some((dtype, shape, data))
            });
        }
        let err = load_err(dir);
        assert!(
            err.contains(&format!("`{key}`")) && err.contains("missing"),
            "{model} without {key}: {err}"
        );
    }
}
