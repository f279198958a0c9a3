//! `cargo xtask render --model <repo id>` downloads a model missing from the Hugging Face cache
//! by itself (from a Hub lookalike on 127.0.0.1), then renders from the cache; with
//! `HF_HUB_OFFLINE=1` it sends nothing and says the model is missing.

#[path = "../../engine/tests/fake_hub/mod.rs"]
mod fake_hub;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use fake_hub::{COMMIT, FakeHub, Repo};

fn fixture() -> PathBuf {
    xtask::workspace_root().join("tests/fixtures/musicgen-tiny")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("musicrfm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `xtask render` with a private cache and no token, whatever the caller's environment holds.
fn render(
    endpoint: &str,
    cache: &std::path::Path,
    offline: bool,
    wav: &std::path::Path,
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args([
        "render",
        "--model",
        "test-org/musicgen-tiny",
        "--prompt",
        "calm piano",
    ])
    .args(["--seconds", "0.5", "--out", wav.to_str().unwrap()])
    .env("HF_ENDPOINT", endpoint)
    .env("HF_HUB_CACHE", cache)
    .env("HF_HOME", cache.join("home"))
    .env_remove("HF_TOKEN")
    .env_remove("HUGGINGFACE_HUB_CACHE");
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    } else {
        cmd.env_remove("HF_HUB_OFFLINE");
    }
    cmd.output().expect("run xtask")
}

#[test]
fn render_downloads_a_missing_model_then_reuses_the_cache() {
    let mut repos = HashMap::new();
    repos.insert(
        "test-org/musicgen-tiny".to_owned(),
        Repo::from_dir(&fixture()),
    );
    let hub = FakeHub::start(repos);
    let dir = scratch("render-download");
    let cache = dir.join("hub");
    let wav = dir.join("out.wav");

    let offline = render(&hub.endpoint(), &cache, true, &wav);
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(!offline.status.success());
    assert!(
        stderr.contains("HF_HUB_OFFLINE") && stderr.contains("test-org/musicgen-tiny"),
        "{stderr}"
    );
    assert!(hub.seen().is_empty(), "offline run sent {:?}", hub.seen());

    let online = render(&hub.endpoint(), &cache, false, &wav);
    let stderr = String::from_utf8_lossy(&online.stderr);
    assert!(online.status.success(), "{stderr}");
    assert!(stderr.contains("downloading"), "{stderr}");
    let snapshot = cache
        .join("models--test-org--musicgen-tiny/snapshots")
        .join(COMMIT);
    assert!(snapshot.join("model.safetensors").is_file());
    assert_eq!(hound::WavReader::open(&wav).expect("a WAV").len(), 16_000);

    // Now cached: rendering again needs no network at all.
    let requests = hub.seen().len();
    let again = render(&hub.endpoint(), &cache, true, &wav);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(hub.seen().len(), requests);
    std::fs::remove_dir_all(dir).unwrap();
}
