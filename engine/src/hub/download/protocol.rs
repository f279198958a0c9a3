//! The Hub's HTTP side: settings from the environment, `HEAD …/resolve/<rev>/<file>` for a
//! file's commit, etag, size and download URL, and ranged `GET`s of its bytes.

use std::path::PathBuf;
use std::time::Duration;

use super::DownloadError;

/// Where the Hub is and how to talk to it; [`HubConfig::from_env`] reads what
/// `huggingface_hub` reads.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// The cache downloads go to: the first of [`crate::hub::cache_dirs`].
    pub cache_dir: PathBuf,
    /// `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, default `$HF_HOME/token`); sent as
    /// `Authorization: Bearer` to the endpoint's host only.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: no request at all, the cache alone.
    pub offline: bool,
}

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl HubConfig {
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`HubConfig::from_env`] with the environment read through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let endpoint = set("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
            .trim_end_matches('/')
            .to_owned();
        let cache_dir = crate::hub::cache_dirs_from(&var)
            .into_iter()
            .next()
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let hf_home = set("HF_HOME").map(PathBuf::from).or_else(|| {
            let cache = set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("huggingface"))
        });
        let token_file = set("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .or_else(|| hf_home.map(|h| h.join("token")));
        let token = set("HF_TOKEN")
            .or_else(|| std::fs::read_to_string(token_file?).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let offline = set("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            endpoint,
            cache_dir,
            token,
            offline,
        }
    }
}

/// What a `HEAD` on a file's resolve URL tells.
#[derive(Clone, Debug)]
pub(super) struct FileMeta {
    pub file: String,
    /// `X-Repo-Commit`: the commit the revision points at.
    pub commit: String,
    /// `X-Linked-Etag` (LFS files: their sha256) or `ETag` (a git blob id), unquoted: the blob's
    /// name in the cache.
    pub etag: String,
    /// `X-Linked-Size`, else `Content-Length`.
    pub size: u64,
    /// Where the bytes are: the redirect target, else the resolve URL itself.
    pub url: String,
}

impl FileMeta {
    /// The sha256 to check the bytes against: LFS etags are one.
    pub fn sha256(&self) -> Option<&str> {
        (self.etag.len() == 64 && self.etag.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(self.etag.as_str())
    }
}

pub(super) struct HubClient {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

impl HubClient {
    pub fn new(config: &HubConfig) -> Self {
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| config.endpoint.starts_with(p));
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed by hand: the hub's 302 carries the file's metadata.
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("musicrfm/", env!("CARGO_PKG_VERSION")));
        if loopback {
            builder = builder.proxy(None);
        }
        Self {
            agent: builder.build().into(),
            endpoint: config.endpoint.clone(),
            token: config.token.clone(),
        }
    }

    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        // A revision like `refs/pr/1` is one path segment.
        let revision = revision.replace('/', "%2F");
        format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint)
    }

    /// `HEAD` the file; relative redirects (a renamed repo) are followed, an absolute one (the
    /// blob store) is where the bytes are.
    pub fn head(&self, repo: &str, revision: &str, file: &str) -> Result<FileMeta, DownloadError> {
        let mut url = self.resolve_url(repo, revision, file);
        for _ in 0..5 {
            let response = self
                .authorised(self.agent.head(&url), &url)
                .header("Accept-Encoding", "identity")
                .call()
                .map_err(|e| network_error(repo, &url, e))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let location = header("Location");
            if (300..400).contains(&status) {
                if let Some(next) = location.as_deref().filter(|l| l.starts_with('/')) {
                    url = format!("{}{next}", origin(&url));
                    continue;
                }
            } else if status >= 400 {
                return Err(status_error(
                    status,
                    header("X-Error-Code").as_deref(),
                    repo,
                    revision,
                    file,
                    &url,
                    self.token.is_some(),
                ));
            }
            let missing = |header: &'static str| DownloadError::MissingHeader {
                file: file.to_owned(),
                url: url.clone(),
                header,
            };
            let commit = header("X-Repo-Commit").ok_or_else(|| missing("X-Repo-Commit"))?;
            let etag = header("X-Linked-Etag")
                .or_else(|| header("ETag"))
                .map(|e| normalize_etag(&e))
                .filter(|e| is_safe_name(e))
                .ok_or_else(|| missing("ETag"))?;
            let size = header("X-Linked-Size")
                .or_else(|| (status < 300).then(|| header("Content-Length")).flatten())
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| missing("X-Linked-Size"))?;
            if !is_safe_name(&commit) {
                return Err(missing("X-Repo-Commit"));
            }
            let url = match location {
                Some(l) if (300..400).contains(&status) => l,
                _ => url,
            };
            return Ok(FileMeta {
                file: file.to_owned(),
                commit,
                etag,
                size,
                url,
            });
        }
        Err(DownloadError::Http {
            repo: repo.to_owned(),
            file: file.to_owned(),
            url,
            status: 310,
        })
    }

    /// `GET` the bytes of `meta` from offset `from` (a `Range` request when `from > 0`);
    /// redirects are followed, without the token when they leave the endpoint's host.
    pub fn get(
        &self,
        repo: &str,
        meta: &FileMeta,
        from: u64,
    ) -> Result<ureq::http::Response<ureq::Body>, DownloadError> {
        let mut url = meta.url.clone();
        for _ in 0..5 {
            let mut request = self
                .authorised(self.agent.get(&url), &url)
                .header("Accept-Encoding", "identity");
            if from > 0 {
                request = request.header("Range", format!("bytes={from}-"));
            }
            let response = request.call().map_err(|e| network_error(repo, &url, e))?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("Location")
                .and_then(|v| v.to_str().ok());
            match (status, location) {
                (300..400, Some(l)) => {
                    url = if l.starts_with('/') {
                        format!("{}{l}", origin(&url))
                    } else {
                        l.to_owned()
                    };
                }
                (200 | 206 | 416, _) => return Ok(response),
                _ => {
                    let code = response
                        .headers()
                        .get("X-Error-Code")
                        .and_then(|v| v.to_str().ok());
                    return Err(status_error(
                        status,
                        code,
                        repo,
                        &meta.commit,
                        &meta.file,
                        &url,
                        self.token.is_some(),
                    ));
                }
            }
        }
        Err(DownloadError::Http {
            repo: repo.to_owned(),
            file: meta.file.clone(),
            url,
            status: 310,
        })
    }

    fn authorised<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        url: &str,
    ) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) if origin(url) == origin(&self.endpoint) => {
                request.header("Authorization", format!("Bearer {token}"))
            }
            _ => request,
        }
    }
}

/// `scheme://host[:port]` of `url`.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// `W/"abc"` → `abc`, as `huggingface_hub` names blobs.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// A header value we are about to use as a file name in the cache.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with('.')
}

fn network_error(repo: &str, url: &str, error: ureq::Error) -> DownloadError {
    DownloadError::Network {
        repo: repo.to_owned(),
        url: url.to_owned(),
        message: error.to_string(),
    }
}

/// Map an HTTP error status, refined by the Hub's `X-Error-Code`, to the error a user can act on.
fn status_error(
    status: u16,
    code: Option<&str>,
    repo: &str,
    revision: &str,
    file: &str,
    url: &str,
    token_sent: bool,
) -> DownloadError {
    let (repo, url) = (repo.to_owned(), url.to_owned());
    match (status, code) {
        (_, Some("GatedRepo")) | (401 | 403, None) => DownloadError::Unauthorized {
            repo,
            url,
            status,
            token_sent,
        },
        (_, Some("RepoNotFound")) => DownloadError::RepoNotFound { repo, url, status },
        (_, Some("RevisionNotFound")) => DownloadError::RevisionNotFound {
            repo,
            revision: revision.to_owned(),
            url,
        },
        (404, _) | (_, Some("EntryNotFound")) => DownloadError::FileNotFound {
            repo,
            revision: revision.to_owned(),
            file: file.to_owned(),
            url,
        },
        _ => DownloadError::Http {
            repo,
            file: file.to_owned(),
            url,
            status,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_unquoted_like_huggingface_hub() {
        assert_eq!(normalize_etag("W/\"abc123\""), "abc123");
        assert_eq!(normalize_etag("\"a1b2\""), "a1b2");
        assert!(!is_safe_name("../../etc"));
        assert!(is_safe_name("0123abcd"));
    }

    #[test]
    fn origins() {
        assert_eq!(origin("http://127.0.0.1:80/a/b"), "http://127.0.0.1:80");
        assert_eq!(origin("https://huggingface.co"), "https://huggingface.co");
    }

    #[test]
    fn settings_come_from_the_environment() {
        let vars = |k: &str| {
            match k {
                "HF_ENDPOINT" => Some("http://127.0.0.1:9/"),
                "HF_HOME" => Some("/nonexistent/hf"),
                "HF_HUB_OFFLINE" => Some("TRUE"),
                "HF_TOKEN" => Some(" hf_abc\n"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let c = HubConfig::from_vars(vars);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.cache_dir, PathBuf::from("/nonexistent/hf/hub"));
        assert_eq!(c.token.as_deref(), Some("hf_abc"));
        assert!(c.offline);
        let c = HubConfig::from_vars(|_| None);
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert!(!c.offline && c.token.is_none());
    }
}
