//! Shared helpers for the parity tests: fixture paths, reference tensors, error metrics.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use engine::Weights;

pub const MODELS: [&str; 2] = ["musicgen-tiny", "musicgen-tiny-b"];

/// `tests/fixtures` of the clone under test: `cargo test` names the package's directory at run
/// time, which is right even where a test binary built in another clone sharing the target
/// directory is reused (cargo's fingerprints do not see the clone's path, so `env!` can name
/// another clone, or one deleted since); the build's own path otherwise.
pub fn fixtures() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
        .join("../tests/fixtures")
}

pub fn model_dir(model: &str) -> PathBuf {
    fixtures().join(model)
}

pub fn device() -> Device {
    Device::default()
}

/// A fresh scratch directory `musicrfm-{name}-…` in the system's temp directory for one test's
/// files, removed with them when dropped: keep it bound while they are used.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("musicrfm-{name}-"))
        .tempdir()
        .unwrap()
}

/// The reference outputs of `model` (see tests/fixtures/README.md).
pub struct Reference(Weights);

impl Reference {
    pub fn open(model: &str) -> Self {
        let path = fixtures()
            .join("reference")
            .join(format!("{model}.safetensors"));
        Self(Weights::open_files(&fixtures(), &[path]).expect("reference file"))
    }

    pub fn f32(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let shape = self
            .0
            .shape(key)
            .unwrap_or_else(|| panic!("no reference `{key}`"))
            .to_vec();
        (self.0.read_f32(key, &shape).expect("f32 reference"), shape)
    }

    pub fn i64(&self, key: &str) -> (Vec<i64>, Vec<usize>) {
        let shape = self
            .0
            .shape(key)
            .unwrap_or_else(|| panic!("no reference `{key}`"))
            .to_vec();
        (self.0.read_i64(key, &shape).expect("i64 reference"), shape)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains(key)
    }
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

pub fn max_abs_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The smallest cosine similarity between corresponding rows of length `row`.
pub fn min_row_cosine(a: &[f32], b: &[f32], row: usize) -> f64 {
    engine::accuracy::LogitsError::of(a, b, row).min_cosine
}

/// Prompt `p` of `model`'s reference JSON.
pub fn prompt_text(model: &str, p: usize) -> String {
    let path = fixtures().join("reference").join(format!("{model}.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["prompts"][p]["text"].as_str().unwrap().to_owned()
}
pub mod host;
