//! Progress of a download, shared between the thread that downloads and whoever watches it: the
//! CLI's progress bar and the editor's model picker poll [`DownloadProgress::snapshot`], and
//! either may ask the download to stop with [`DownloadProgress::cancel`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters of one model download. Share it in an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct DownloadProgress {
    /// Bytes of the model present so far: cached blobs, resumed prefixes and fresh bytes.
    /// Written by the download thread, read by watchers.
    done: AtomicU64,
    /// Total bytes of the model's files, known once every file's size has been asked for.
    /// Written by the download thread, read by watchers.
    total: AtomicU64,
    /// Bytes received over the network in this run: the rate counts only these.
    fetched: AtomicU64,
    /// When the first byte of this run arrived (the rate's start).
    started: Mutex<Option<Instant>>,
    /// The file being fetched now, for display.
    file: Mutex<String>,
    /// Set by a watcher; the download thread checks it between chunks and stops with
    /// `DownloadError::Cancelled`.
    cancelled: AtomicBool,
    /// Set by the download thread when every file is in place.
    finished: AtomicBool,
}

/// One reading of a [`DownloadProgress`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressSnapshot {
    pub file: String,
    pub done: u64,
    /// 0 until the sizes are known.
    pub total: u64,
    /// Mean rate of this run's network bytes.
    pub bytes_per_second: f64,
    /// Time left at the mean rate; `None` before the first byte arrives.
    pub eta: Option<Duration>,
    pub finished: bool,
}

impl DownloadProgress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the download to stop at the next chunk; the partial file is kept for a resume.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let fetched = self.fetched.load(Ordering::Relaxed);
        let elapsed = self
            .started
            .lock()
            .map(|s| s.map(|t| t.elapsed()))
            .unwrap_or_default();
        let bytes_per_second = match elapsed {
            Some(e) if e.as_secs_f64() > 0.0 => fetched as f64 / e.as_secs_f64(),
            _ => 0.0,
        };
        let eta = (bytes_per_second > 0.0)
            .then(|| Duration::from_secs_f64(total.saturating_sub(done) as f64 / bytes_per_second));
        ProgressSnapshot {
            file: self.file.lock().map(|f| f.clone()).unwrap_or_default(),
            done,
            total,
            bytes_per_second,
            eta,
            finished: self.finished.load(Ordering::Relaxed),
        }
    }

    pub(super) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(super) fn set_file(&self, file: &str) {
        if let Ok(mut f) = self.file.lock() {
            file.clone_into(&mut f);
        }
    }

    /// Bytes found on disk (a cached blob, a resumed prefix).
    pub(super) fn add_present(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes discarded (a corrupt blob or a prefix the server would not resume).
    pub(super) fn remove_present(&self, bytes: u64) {
        // A watcher may briefly see the smaller value before the refetch; never underflow.
        let _ = self
            .done
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(bytes))
            });
    }

    /// Bytes received from the network.
    pub(super) fn add_fetched(&self, bytes: u64) {
        if let Ok(mut s) = self.started.lock() {
            s.get_or_insert_with(Instant::now);
        }
        self.fetched.fetch_add(bytes, Ordering::Relaxed);
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_follow_fetched_bytes() {
        let p = DownloadProgress::new();
        p.set_total(1000);
        p.add_present(200);
        let s = p.snapshot();
        assert_eq!((s.done, s.total, s.eta), (200, 1000, None));
        std::thread::sleep(Duration::from_millis(20));
        p.add_fetched(300);
        std::thread::sleep(Duration::from_millis(20));
        let s = p.snapshot();
        assert_eq!(s.done, 500);
        assert!(s.bytes_per_second > 0.0);
        let eta = s.eta.expect("an ETA once bytes arrive").as_secs_f64();
        let expected = 500.0 / s.bytes_per_second;
        assert!((eta - expected).abs() < 1e-3, "{eta} vs {expected}");
        p.remove_present(10_000);
        assert_eq!(p.snapshot().done, 0);
    }
}
