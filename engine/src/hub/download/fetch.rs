//! One file's bytes into `blobs/<etag>`: under the blob's lock, into `<etag>.incomplete`,
//! resumed with `Range` after a break, checked (size; sha256 for LFS files), then renamed into
//! place. A blob is either absent or whole.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::cache::RepoCache;
use super::protocol::{FileMeta, HubClient};
use super::{DownloadError, DownloadProgress};

/// Network breaks tolerated per file before giving up; each retry resumes where the last stopped.
const MAX_ATTEMPTS: usize = 5;
const CHUNK: usize = 256 * 1024;

pub(super) struct BlobFetch<'a> {
    pub client: &'a HubClient,
    pub cache: &'a RepoCache,
    pub repo: &'a str,
    pub progress: &'a DownloadProgress,
    /// Hash a cached blob before trusting it (else its size is checked).
    pub verify_existing: bool,
}

impl BlobFetch<'_> {
    /// Make sure `blobs/<etag>` holds `meta`'s bytes; returns its path.
    pub fn ensure(&self, meta: &FileMeta) -> Result<std::path::PathBuf, DownloadError> {
        let blob = self.cache.blob(&meta.etag);
        self.progress.set_file(&meta.file);
        if self.is_valid(meta, &blob)? {
            self.progress.add_present(meta.size);
            return Ok(blob);
        }
        let Some(_lock) = self.cache.lock_blob(&meta.etag, self.progress)? else {
            return Err(self.cancelled(meta));
        };
        // Another process may have finished it while we waited for the lock.
        if self.is_valid(meta, &blob)? {
            self.progress.add_present(meta.size);
            return Ok(blob);
        }
        if blob.exists() {
            std::fs::remove_file(&blob).map_err(DownloadError::io(&blob))?;
        }
        let partial = self.cache.incomplete(&meta.etag);
        self.download_to(meta, &partial)?;
        std::fs::rename(&partial, &blob).map_err(DownloadError::io(&blob))?;
        Ok(blob)
    }

    /// A cached blob is valid when its size matches (and, if asked, its sha256).
    fn is_valid(&self, meta: &FileMeta, blob: &Path) -> Result<bool, DownloadError> {
        match std::fs::metadata(blob) {
            Ok(m) if m.len() == meta.size => {}
            _ => return Ok(false),
        }
        match meta.sha256() {
            Some(expected) if self.verify_existing => {
                let mut file = File::open(blob).map_err(DownloadError::io(blob))?;
                let mut hasher = Sha256::new();
                std::io::copy(&mut file, &mut hasher).map_err(DownloadError::io(blob))?;
                Ok(hex(&hasher.finalize()) == expected)
            }
            _ => Ok(true),
        }
    }

    /// Fill `partial` up to `meta.size`, resuming what is there.
    fn download_to(&self, meta: &FileMeta, partial: &Path) -> Result<(), DownloadError> {
        let dir = partial.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(DownloadError::io(dir))?;
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(DownloadError::io(partial))?;
        let mut hasher = Sha256::new();
        let mut have = file.metadata().map_err(DownloadError::io(partial))?.len();
        if have > meta.size {
            have = self.restart(&mut file, &mut hasher, partial, 0)?;
        } else if have > 0 {
            // The resumed prefix is hashed again: the digest must cover the whole file.
            file.seek(SeekFrom::Start(0))
                .map_err(DownloadError::io(partial))?;
            std::io::copy(&mut (&file).take(have), &mut hasher)
                .map_err(DownloadError::io(partial))?;
            self.progress.add_present(have);
        }
        let mut last_break = String::new();
        let mut attempts = 0;
        while have < meta.size {
            if attempts == MAX_ATTEMPTS {
                return Err(DownloadError::Interrupted {
                    file: meta.file.clone(),
                    url: meta.url.clone(),
                    message: last_break,
                });
            }
            attempts += 1;
            let response = self.client.get(self.repo, meta, have)?;
            let resumed_at = response
                .headers()
                .get("Content-Range")
                .and_then(|v| v.to_str().ok())
                .and_then(|r| {
                    r.strip_prefix("bytes ")?
                        .split('-')
                        .next()?
                        .parse::<u64>()
                        .ok()
                });
            match response.status().as_u16() {
                206 if resumed_at == Some(have) => {}
                // The server ignored the range, answered another one, or refused it: start over.
                416 => {
                    have = self.restart(&mut file, &mut hasher, partial, have)?;
                    continue;
                }
                _ if have > 0 => have = self.restart(&mut file, &mut hasher, partial, have)?,
                _ => {}
            }
            file.seek(SeekFrom::Start(have))
                .map_err(DownloadError::io(partial))?;
            let mut body = response.into_body().into_reader();
            match self.stream(meta, &mut body, &mut file, &mut hasher, partial, &mut have) {
                Ok(()) => {}
                Err(Break::Network(message)) => last_break = message,
                Err(Break::Fatal(e)) => return Err(e),
            }
        }
        if let Some(expected) = meta.sha256() {
            let got = hex(&hasher.finalize());
            if got != expected {
                drop(file);
                self.progress.remove_present(have);
                std::fs::remove_file(partial).map_err(DownloadError::io(partial))?;
                return Err(DownloadError::Integrity {
                    repo: self.repo.to_owned(),
                    file: meta.file.clone(),
                    url: meta.url.clone(),
                    detail: format!("sha256 {got}, expected {expected}"),
                });
            }
        }
        file.sync_all().map_err(DownloadError::io(partial))
    }

    /// Copy the body to the file until it ends, the server breaks off, or a cancel arrives.
    fn stream(
        &self,
        meta: &FileMeta,
        body: &mut impl Read,
        file: &mut File,
        hasher: &mut Sha256,
        partial: &Path,
        have: &mut u64,
    ) -> Result<(), Break> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if self.progress.is_cancelled() {
                return Err(Break::Fatal(self.cancelled(meta)));
            }
            // Bytes past the announced size are never written: the sizes must agree.
            let room = (meta.size - *have).min(CHUNK as u64) as usize;
            if room == 0 {
                return Ok(());
            }
            let n = match body.read(&mut buf[..room]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Break::Network(e.to_string())),
            };
            file.write_all(&buf[..n]).map_err(|e| {
                Break::Fatal(match e.kind() {
                    ErrorKind::StorageFull | ErrorKind::QuotaExceeded => DownloadError::DiskFull {
                        path: partial.to_owned(),
                        file: meta.file.clone(),
                        remaining: meta.size - *have,
                    },
                    _ => DownloadError::io(partial)(e),
                })
            })?;
            hasher.update(&buf[..n]);
            *have += n as u64;
            self.progress.add_fetched(n as u64);
        }
    }

    /// Empty the partial file (its `had` bytes leave the progress count); returns the new length.
    fn restart(
        &self,
        file: &mut File,
        hasher: &mut Sha256,
        partial: &Path,
        had: u64,
    ) -> Result<u64, DownloadError> {
        file.set_len(0).map_err(DownloadError::io(partial))?;
        hasher.reset();
        self.progress.remove_present(had);
        Ok(0)
    }

    fn cancelled(&self, meta: &FileMeta) -> DownloadError {
        DownloadError::Cancelled {
            repo: self.repo.to_owned(),
            file: meta.file.clone(),
        }
    }
}

/// Why a body stopped early: the network (retry with a range) or anything else (give up).
enum Break {
    Network(String),
    Fatal(DownloadError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
