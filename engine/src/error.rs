//! Errors of the engine. Every message names the file, key or flag at fault.
//!
//! A variant that wraps a lower-level error writes that error's text into its own message and
//! does not also return it from `source()`: printers that walk the chain (anyhow's `{:#}`)
//! would otherwise repeat it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{path} is not a valid safetensors file ({cause}); is it truncated or still downloading?"
    )]
    Safetensors {
        path: PathBuf,
        cause: safetensors::SafeTensorError,
    },
    /// Not JSON at all (a syntax error, a truncated file).
    #[error("malformed JSON in {path}: {message} (line {line}, column {column})")]
    Json {
        path: PathBuf,
        message: String,
        line: usize,
        column: usize,
    },
    /// Valid JSON with a value of the wrong type, an unknown variant or a missing key at `key`
    /// (a dotted path such as `decoder.num_codebooks`).
    #[error("{path}: {key}: {message} (line {line}, column {column})")]
    ConfigValue {
        path: PathBuf,
        key: String,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error("tensor `{key}` is missing from the checkpoint in {dir}")]
    MissingTensor { key: String, dir: PathBuf },
    #[error("tensor `{key}` in {file} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        key: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{key}` in {file} has dtype {dtype}, expected F32, F16 or BF16")]
    UnsupportedDtype {
        key: String,
        file: PathBuf,
        dtype: String,
    },
    #[error(
        "no model weights in {dir}: expected model.safetensors or model.safetensors.index.json"
    )]
    NoWeights { dir: PathBuf },
    #[error("model `{source_name}` not found: {hint}")]
    ModelNotFound { source_name: String, hint: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("weight format {format} runs on the CPU only; {device} takes f32 (choose --dtype f32)")]
    WeightFormat {
        format: crate::matvec::WeightFormat,
        device: String,
    },
}

/// Tokens that do not fit a [`KvCache`](crate::KvCache).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("the KV cache is full: {len} of {capacity} positions used, {requested} more asked for")]
    Full {
        len: usize,
        capacity: usize,
        requested: usize,
    },
    #[error("the KV cache holds {cache} rows, the tokens have {tokens}")]
    BatchMismatch { cache: usize, tokens: usize },
}
