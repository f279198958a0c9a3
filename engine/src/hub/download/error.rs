//! What can go wrong fetching a model from the Hub. Every message names the repo and the file or
//! URL at fault, and says what to do about it.

use std::path::PathBuf;

use crate::error::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("`{0}` is not a Hugging Face repo id like `facebook/musicgen-small`")]
    InvalidRepoId(String),
    #[error(
        "HF_HUB_OFFLINE is set and {repo} (revision {revision}) is not fully in the Hugging Face \
         cache {}; unset HF_HUB_OFFLINE to download it, or pass a model directory",
        cache.display()
    )]
    Offline {
        repo: String,
        revision: String,
        cache: PathBuf,
    },
    #[error(
        "cannot reach {url} for {repo} ({message}); check the network connection and HF_ENDPOINT, \
         or pass a local model directory"
    )]
    Network {
        repo: String,
        url: String,
        message: String,
    },
    #[error(
        "{repo} is gated or private: {url} answered HTTP {status}{}. Accept the model's terms on \
         its Hub page, then set HF_TOKEN to an access token (or save one to $HF_HOME/token)",
        if *token_sent { " although a token was sent" } else { " and no token was set" }
    )]
    Unauthorized {
        repo: String,
        url: String,
        status: u16,
        token_sent: bool,
    },
    #[error(
        "repository {repo} not found ({url} answered HTTP {status}); check the repo id, and set \
         HF_TOKEN if it is private"
    )]
    RepoNotFound {
        repo: String,
        url: String,
        status: u16,
    },
    #[error("revision `{revision}` of {repo} not found ({url} answered HTTP 404)")]
    RevisionNotFound {
        repo: String,
        revision: String,
        url: String,
    },
    #[error(
        "{repo} has no file {file} at revision `{revision}` ({url} answered HTTP 404); is it a \
         MusicGen checkpoint?"
    )]
    FileNotFound {
        repo: String,
        revision: String,
        file: String,
        url: String,
    },
    #[error("{url} answered HTTP {status} for {file} of {repo}")]
    Http {
        repo: String,
        file: String,
        url: String,
        status: u16,
    },
    #[error("{url} sent no {header} header for {file}; is HF_ENDPOINT a Hugging Face hub?")]
    MissingHeader {
        file: String,
        url: String,
        header: &'static str,
    },
    #[error("{file} of {repo} from {url} is corrupt ({detail}); it was removed: run again")]
    Integrity {
        repo: String,
        file: String,
        url: String,
        detail: String,
    },
    #[error(
        "the download of {file} from {url} kept breaking off ({message}); run again to resume it"
    )]
    Interrupted {
        file: String,
        url: String,
        message: String,
    },
    #[error(
        "the disk is full writing {} ({} MB of {file} still to download); free some space or \
         point HF_HUB_CACHE at a bigger disk",
        path.display(),
        remaining.div_ceil(1_000_000)
    )]
    DiskFull {
        path: PathBuf,
        file: String,
        remaining: u64,
    },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "download of {repo} cancelled during {file}; the partial file is kept and the next \
         download resumes it"
    )]
    Cancelled { repo: String, file: String },
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl DownloadError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
