//! Downloads from a Hub lookalike on 127.0.0.1 (see `fake_hub`) into a private cache: the
//! layout `huggingface_hub` shares, resume after a break, integrity, errors, locking, cancel.

mod common;
mod fake_hub;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{device, model_dir};
use engine::MusicGen;
use engine::hub::download::{
    DownloadError, DownloadOptions, DownloadProgress, HubConfig, download_model,
};
use fake_hub::{COMMIT, FakeHub, Repo, sha256_hex};

const REPO: &str = "test-org/musicgen-tiny";
const WEIGHTS: &str = "model.safetensors";

/// A cache directory of the test's own, removed when dropped.
struct TempCache(tempfile::TempDir);

impl TempCache {
    fn new(tag: &str) -> Self {
        Self(common::temp_dir(&format!("hub-dl-{tag}")))
    }

    fn repo_dir(&self) -> PathBuf {
        self.0.path().join("models--test-org--musicgen-tiny")
    }

    fn blob(&self, file: &str) -> PathBuf {
        let bytes = std::fs::read(model_dir("musicgen-tiny").join(file)).unwrap();
        self.repo_dir().join("blobs").join(sha256_hex(&bytes))
    }
}

fn tiny_hub() -> FakeHub {
    let mut repos = HashMap::new();
    repos.insert(REPO.to_owned(), Repo::from_dir(&model_dir("musicgen-tiny")));
    FakeHub::start(repos)
}

fn config(hub: &FakeHub, cache: &TempCache) -> HubConfig {
    HubConfig {
        endpoint: hub.endpoint(),
        cache_dir: cache.0.path().to_owned(),
        token: None,
        offline: false,
    }
}

fn download(config: &HubConfig) -> Result<PathBuf, DownloadError> {
    download_model(
        REPO,
        config,
        &DownloadOptions::default(),
        &DownloadProgress::new(),
    )
}

fn assert_same_file(a: &Path, b: &Path) {
    let (a_bytes, b_bytes) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        a_bytes == b_bytes,
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

#[test]
fn fresh_download_fills_the_shared_cache_layout_and_loads() {
    let (hub, cache) = (tiny_hub(), TempCache::new("fresh"));
    let progress = DownloadProgress::new();
    let snapshot = download_model(
        REPO,
        &config(&hub, &cache),
        &DownloadOptions::default(),
        &progress,
    )
    .unwrap();

    assert_eq!(snapshot, cache.repo_dir().join("snapshots").join(COMMIT));
    let main = std::fs::read_to_string(cache.repo_dir().join("refs/main")).unwrap();
    assert_eq!(main, COMMIT);
    for file in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        WEIGHTS,
    ] {
        let link = snapshot.join(file);
        let target = std::fs::read_link(&link).unwrap();
        assert!(
            target.starts_with("../../blobs/"),
            "{file} → {}",
            target.display()
        );
        assert_same_file(&link, &model_dir("musicgen-tiny").join(file));
    }
    // LFS blobs are named by sha256, as huggingface_hub names them.
    assert!(cache.blob(WEIGHTS).is_file());
    let leftovers: Vec<_> = std::fs::read_dir(cache.repo_dir().join("blobs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let seen = progress.snapshot();
    assert!(seen.finished);
    assert_eq!(seen.done, seen.total);
    let fixture_bytes: u64 = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        WEIGHTS,
    ]
    .iter()
    .map(|f| {
        std::fs::metadata(model_dir("musicgen-tiny").join(f))
            .unwrap()
            .len()
    })
    .sum();
    assert_eq!(seen.total, fixture_bytes);

    MusicGen::load(&snapshot, &device()).expect("the downloaded model loads");

    // A second run finds everything cached: metadata requests only.
    let before = hub.seen().len();
    assert_eq!(download(&config(&hub, &cache)).unwrap(), snapshot);
    let again = &hub.seen()[before..];
    assert!(again.iter().all(|s| s.method == "HEAD"), "{again:?}");
}

#[test]
fn a_broken_transfer_resumes_with_a_range_request() {
    let (hub, cache) = (tiny_hub(), TempCache::new("resume"));
    hub.faults().break_after = Some(1_500_000);
    let snapshot = download(&config(&hub, &cache)).unwrap();

    let gets = hub.blob_gets(REPO, WEIGHTS);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=1500000-"));
    assert_same_file(
        &snapshot.join(WEIGHTS),
        &model_dir("musicgen-tiny").join(WEIGHTS),
    );
}

#[test]
fn a_cancelled_download_stops_cleanly_and_the_next_run_resumes_it() {
    let (hub, cache) = (tiny_hub(), TempCache::new("cancel"));
    hub.faults().throttle = Some(Duration::from_millis(5));
    let progress = Arc::new(DownloadProgress::new());
    let watcher = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            for _ in 0..2000 {
                let s = progress.snapshot();
                if s.file == WEIGHTS && s.done > 1_000_000 {
                    progress.cancel();
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let err = download_model(
        REPO,
        &config(&hub, &cache),
        &DownloadOptions::default(),
        &progress,
    )
    .unwrap_err();
    watcher.join().unwrap();
    assert!(matches!(err, DownloadError::Cancelled { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(REPO) && message.contains(WEIGHTS),
        "{message}"
    );
    // Nothing half-done is visible: no snapshot, the partial blob waits under blobs/.
    assert!(!cache.repo_dir().join("snapshots").exists());
    let partial = cache.blob(WEIGHTS).with_extension("incomplete");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0);

    hub.faults().throttle = None;
    let snapshot = download(&config(&hub, &cache)).unwrap();
    let gets = hub.blob_gets(REPO, WEIGHTS);
    let expected_range = format!("bytes={kept}-");
    assert_eq!(
        gets.last().unwrap().range.as_deref(),
        Some(&*expected_range)
    );
    assert_same_file(
        &snapshot.join(WEIGHTS),
        &model_dir("musicgen-tiny").join(WEIGHTS),
    );
}

#[test]
fn corrupt_blobs_are_detected_and_fetched_again() {
    let (hub, cache) = (tiny_hub(), TempCache::new("corrupt"));
    let config = config(&hub, &cache);
    let fixture = model_dir("musicgen-tiny").join(WEIGHTS);

    // Corrupted in transit: the sha256 check refuses it and nothing is kept.
    hub.faults().corrupt = true;
    let message = download(&config).unwrap_err().to_string();
    assert!(
        message.contains(WEIGHTS) && message.contains("sha256"),
        "{message}"
    );
    assert!(!cache.blob(WEIGHTS).exists());
    assert!(!cache.blob(WEIGHTS).with_extension("incomplete").exists());

    // A truncated cached blob is noticed by its size.
    let snapshot = download(&config).unwrap();
    let blob = cache.blob(WEIGHTS);
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..1000]).unwrap();
    download(&config).unwrap();
    assert_same_file(&snapshot.join(WEIGHTS), &fixture);

    // A flipped byte keeps the size: verifying the cached blobs finds it.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 1;
    std::fs::write(&blob, &flipped).unwrap();
    let gets_before = hub.blob_gets(REPO, WEIGHTS).len();
    let options = DownloadOptions {
        verify_existing: true,
        ..DownloadOptions::default()
    };
    download_model(REPO, &config, &options, &DownloadProgress::new()).unwrap();
    assert_eq!(hub.blob_gets(REPO, WEIGHTS).len(), gets_before + 1);
    assert_same_file(&snapshot.join(WEIGHTS), &fixture);
}

#[test]
fn offline_mode_uses_the_cache_or_says_what_is_missing() {
    let (hub, cache) = (tiny_hub(), TempCache::new("offline"));
    let offline = HubConfig {
        offline: true,
        ..config(&hub, &cache)
    };
    let message = download(&offline).unwrap_err().to_string();
    assert!(
        message.contains("HF_HUB_OFFLINE") && message.contains(REPO),
        "{message}"
    );
    assert!(hub.seen().is_empty(), "offline mode sent {:?}", hub.seen());

    let snapshot = download(&config(&hub, &cache)).unwrap();
    let requests = hub.seen().len();
    assert_eq!(download(&offline).unwrap(), snapshot);
    assert_eq!(hub.seen().len(), requests, "offline mode sent a request");
}

#[test]
fn missing_files_repos_and_tokens_give_errors_that_name_them() {
    let mut repos = HashMap::new();
    let mut no_tokenizer = Repo::from_dir(&model_dir("musicgen-tiny"));
    no_tokenizer.files.remove("tokenizer.json");
    repos.insert("test-org/no-tokenizer".to_owned(), no_tokenizer);
    let mut gated = Repo::from_dir(&model_dir("musicgen-tiny"));
    gated.token = Some("hf_secret".to_owned());
    repos.insert("test-org/gated".to_owned(), gated);
    let hub = FakeHub::start(repos);
    let cache = TempCache::new("errors");
    let config = config(&hub, &cache);
    let fetch = |repo: &str, config: &HubConfig| {
        download_model(
            repo,
            config,
            &DownloadOptions::default(),
            &DownloadProgress::new(),
        )
    };

    let err = fetch("test-org/no-tokenizer", &config).unwrap_err();
    assert!(matches!(err, DownloadError::FileNotFound { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("tokenizer.json") && message.contains("test-org/no-tokenizer"),
        "{message}"
    );
    assert!(message.contains(&hub.endpoint()), "no URL in: {message}");

    let message = fetch("test-org/nothing-here", &config)
        .unwrap_err()
        .to_string();
    assert!(message.contains("test-org/nothing-here"), "{message}");

    let err = fetch("test-org/gated", &config).unwrap_err();
    assert!(
        matches!(err, DownloadError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    let with_token = HubConfig {
        token: Some("hf_secret".to_owned()),
        ..config.clone()
    };
    fetch("test-org/gated", &with_token).unwrap();
    // The token goes to the Hub, never to the blob store it redirects to.
    let seen = hub.seen();
    assert!(
        seen.iter()
            .any(|s| s.authorization.as_deref() == Some("Bearer hf_secret"))
    );
    assert!(
        seen.iter()
            .filter(|s| s.path.starts_with("/blobs/"))
            .all(|s| s.authorization.is_none())
    );

    let err = fetch(
        REPO,
        &HubConfig {
            endpoint: closed_port(),
            ..config.clone()
        },
    )
    .unwrap_err();
    assert!(matches!(err, DownloadError::Network { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

/// An endpoint on a loopback port nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[test]
fn simultaneous_downloads_share_one_transfer_and_leave_a_sound_cache() {
    let (hub, cache) = (tiny_hub(), TempCache::new("concurrent"));
    hub.faults().throttle = Some(Duration::from_millis(2));
    let config = config(&hub, &cache);
    let snapshots: Vec<PathBuf> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..3).map(|_| s.spawn(|| download(&config))).collect();
        runs.into_iter()
            .map(|r| r.join().unwrap().unwrap())
            .collect()
    });
    assert!(snapshots.iter().all(|s| *s == snapshots[0]));
    // The blob lock makes the others wait and then find the blob whole.
    assert_eq!(hub.blob_gets(REPO, WEIGHTS).len(), 1);
    assert_same_file(
        &snapshots[0].join(WEIGHTS),
        &model_dir("musicgen-tiny").join(WEIGHTS),
    );
    MusicGen::load(&snapshots[0], &device()).expect("the shared download loads");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_reported_with_the_path() {
    let (hub, cache) = (tiny_hub(), TempCache::new("full"));
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let partial = cache.blob(WEIGHTS).with_extension("incomplete");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", &partial).unwrap();
    let err = download(&config(&hub, &cache)).unwrap_err();
    assert!(matches!(err, DownloadError::DiskFull { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("disk is full") && message.contains(WEIGHTS),
        "{message}"
    );
    assert!(!cache.repo_dir().join("snapshots").exists());
}

#[test]
fn a_sharded_checkpoint_comes_with_its_index_and_every_shard() {
    let fixture = model_dir("musicgen-tiny");
    let mut repo = Repo::from_dir(&fixture);
    let single = repo.files.remove(WEIGHTS).unwrap();
    let st = safetensors::SafeTensors::deserialize(&single).unwrap();
    let mut names = st.names();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let shard = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        repo.files
            .insert(shard.clone(), safetensors::serialize(views, None).unwrap());
        for n in part {
            weight_map.insert(n.to_string(), shard.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    repo.files.insert(
        "model.safetensors.index.json".to_owned(),
        index.to_string().into_bytes(),
    );
    let hub = FakeHub::start(HashMap::from([(REPO.to_owned(), repo)]));
    let cache = TempCache::new("sharded");

    let snapshot = download(&config(&hub, &cache)).unwrap();
    for file in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snapshot.join(file).is_file(), "{file} missing");
    }
    assert!(!snapshot.join(WEIGHTS).exists());
    MusicGen::load(&snapshot, &device()).expect("the sharded download loads");
}
