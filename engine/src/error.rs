//! Errors of the engine. Every message names the file, key or flag at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid safetensors file ({source}); is it truncated or still downloading?"
    )]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("malformed JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
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
}
