//! Error types of the crate (one enum per subsystem; every message names what is at fault).

use std::path::PathBuf;

/// Fitting an RFM, searching hyper-parameters or training a concept probe failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("shape mismatch: {what}")]
    Shape { what: String },
    #[error("invalid hyper-parameter `{name}` = {value}: {reason}")]
    HyperParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    #[error("the kernel system K + λI could not be solved even after the 1% diagonal fallback")]
    Singular,
    #[error("metric `{metric}` is undefined: {reason}")]
    Metric {
        metric: &'static str,
        reason: String,
    },
    #[error("not enough samples: {what}")]
    TooFewSamples { what: String },
    #[error("eigendecomposition of the AGOP failed")]
    Eigen,
    #[error("every one of the {samples} hyper-parameter samples failed; last error: {last}")]
    AllSamplesFailed { samples: usize, last: String },
}

/// A probe file (`musicrfm.probe.v1`) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a safetensors file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingMetadata { path: PathBuf, key: &'static str },
    #[error("{path}: unknown probe format `{found}` (expected `musicrfm.probe.v1`)")]
    UnknownFormat { path: PathBuf, found: String },
    #[error("{path}: metadata `{key}` = `{value}` is invalid: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: &'static str },
    #[error("{path}: tensor `{name}` has dtype {found}, expected F32 or F64")]
    WrongDtype {
        path: PathBuf,
        name: &'static str,
        found: String,
    },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected}")]
    WrongShape {
        path: PathBuf,
        name: &'static str,
        found: Vec<usize>,
        expected: String,
    },
    #[error("{path}: tensor `{name}` holds a non-finite value")]
    NonFinite { path: PathBuf, name: &'static str },
    #[error("{path}: could not serialise: {reason}")]
    Serialize { path: PathBuf, reason: String },
}

/// A directions file (format v1, see docs/architecture.md) is invalid or could not be read/written.
#[derive(Debug, thiserror::Error)]
pub enum DirectionsFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a safetensors file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingMetadata { path: PathBuf, key: &'static str },
    #[error(
        "{path}: unknown directions format version `{found}` (expected `musicrfm.directions.v1`)"
    )]
    UnknownFormat { path: PathBuf, found: String },
    #[error("{path}: metadata `{key}` = `{value}` is invalid: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: &'static str },
    #[error("{path}: tensor `{name}` has dtype {found}, expected {expected}")]
    WrongDtype {
        path: PathBuf,
        name: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?} ({why})")]
    WrongDims {
        path: PathBuf,
        name: &'static str,
        found: Vec<usize>,
        expected: Vec<usize>,
        why: &'static str,
    },
    #[error(
        "{path}: direction of class {class} at layer row {row} (block {block}) has norm {norm:.4}, expected a unit vector"
    )]
    NonUnitVector {
        path: PathBuf,
        class: usize,
        row: usize,
        block: i64,
        norm: f64,
    },
    #[error("{path}: tensor `{name}` holds a non-finite value")]
    NonFinite { path: PathBuf, name: &'static str },
    #[error("{path}: layer index {block} at row {row} is outside 0..{n_layers_model}")]
    LayerOutOfRange {
        path: PathBuf,
        row: usize,
        block: i64,
        n_layers_model: usize,
    },
    #[error("{path}: layer index {block} appears twice")]
    DuplicateLayer { path: PathBuf, block: i64 },
    #[error("{path}: could not serialise: {reason}")]
    Serialize { path: PathBuf, reason: String },
}
