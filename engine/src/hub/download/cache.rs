//! One repo's corner of the Hugging Face cache, laid out as `huggingface_hub` lays it out so
//! both share it:
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>                  the bytes, named by etag
//! <cache>/models--org--name/blobs/<etag>.incomplete       a download in progress (resumable)
//! <cache>/models--org--name/snapshots/<commit>/<file>     relative symlink → ../../blobs/<etag>
//! <cache>/models--org--name/refs/<revision>               the commit the revision named
//! <cache>/.locks/models--org--name/<etag>.lock             held (flock) while a blob is written
//! ```
//!
//! The lock path and flock are `huggingface_hub`'s (its `filelock` uses `flock` on Unix too), so a
//! Python download and ours of the same blob wait for each other.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{DownloadError, DownloadProgress};

pub(super) struct RepoCache {
    /// `<cache>/models--org--name`
    root: PathBuf,
    /// `<cache>/.locks/models--org--name`
    locks: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, org: &str, name: &str) -> Self {
        let folder = format!("models--{org}--{name}");
        Self {
            root: cache_dir.join(&folder),
            locks: cache_dir.join(".locks").join(folder),
        }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// Hold the blob's lock, waiting for another process (or thread) that holds it; a cancel
    /// while waiting stops the wait.
    pub fn lock_blob(
        &self,
        etag: &str,
        progress: &DownloadProgress,
    ) -> Result<Option<File>, DownloadError> {
        std::fs::create_dir_all(&self.locks).map_err(DownloadError::io(&self.locks))?;
        let path = self.locks.join(format!("{etag}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(DownloadError::io(&path))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(file)),
                Err(TryLockError::WouldBlock) if progress.is_cancelled() => return Ok(None),
                Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(50)),
                Err(TryLockError::Error(e)) => return Err(DownloadError::io(&path)(e)),
            }
        }
    }

    /// Point `snapshots/<commit>/<file>` at the blob, atomically (a complete link or none).
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<(), DownloadError> {
        let pointer = self.snapshot(commit).join(file);
        let dir = pointer.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(DownloadError::io(dir))?;
        let tmp = dir.join(unique_temp_name(file));
        let depth = Path::new(file).components().count() + 1;
        let target = "../".repeat(depth) + "blobs/" + etag;
        place(&self.blob(etag), &target, &tmp).map_err(DownloadError::io(&tmp))?;
        std::fs::rename(&tmp, &pointer).map_err(DownloadError::io(&pointer))
    }

    /// The commit `refs/<revision>` names.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        Some(text.trim().to_owned()).filter(|c| !c.is_empty())
    }

    /// Write `refs/<revision>` (atomically); a revision that is the commit itself needs none.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), DownloadError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(DownloadError::io(dir))?;
        let tmp = dir.join(unique_temp_name("ref"));
        std::fs::write(&tmp, commit).map_err(DownloadError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(DownloadError::io(&path))
    }
}

/// A name no other thread or process uses at the same moment; dot-prefixed so no one takes it for
/// a model file.
fn unique_temp_name(base: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = Path::new(base)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        ".{base}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(unix)]
fn place(_blob: &Path, target: &str, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

/// Where symlinks need privileges, `huggingface_hub` copies the blob; so do we.
#[cfg(not(unix))]
fn place(blob: &Path, _target: &str, at: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, at).map(|_| ())
}
