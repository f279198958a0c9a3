//! The real-time side of the stream: what the plugin's audio thread calls.
//!
//! Rules for everything in this file: no allocation, no lock, no I/O, no blocking — except
//! [`AudioEndpoint::wait_for`] and [`Naps`], the waiting of offline bounces only. Controls go
//! out through a preallocated SPSC queue, PCM comes back through a preallocated ring, status
//! is read from atomics.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use super::ControlFrame;
use super::shared::{Shared, Status};

/// The longest of [`Naps`].
const MAX_NAP: Duration = Duration::from_millis(2);

/// The sleeps of an offline wait between two looks at what it waits for: 100 µs, doubling up to
/// 2 ms. A fast engine is noticed within 100 µs, and a slow one (a CPU, where a block takes tens
/// of milliseconds) is not woken up 10 000 times a second: on two cores those wake-ups
/// preempted the engine's threads. `cargo xtask stream --dtype q4 --seconds 3` on the
/// musicgen-small shape made 38.5–38.8 steps/s with a fixed 100 µs nap and 42.9–43.4 with these
/// (2026-12-01, alternating runs). The engine runs ahead of the host by the reported latency, so
/// a late wake-up delays only the wait, not the audio.
pub struct Naps {
    next: Duration,
    start: Instant,
    timeout: Duration,
}

impl Naps {
    /// Naps for a wait of at most `timeout` from now.
    pub fn new(timeout: Duration) -> Self {
        Self {
            next: Duration::from_micros(100),
            start: Instant::now(),
            timeout,
        }
    }

    /// Sleep the next nap (never past the timeout); false, without sleeping, once the timeout
    /// has passed.
    pub fn sleep(&mut self) -> bool {
        let waited = self.start.elapsed();
        if waited >= self.timeout {
            return false;
        }
        std::thread::sleep(self.next.min(self.timeout - waited));
        self.next = (self.next * 2).min(MAX_NAP);
        true
    }
}

/// Owned by the host's audio thread.
pub struct AudioEndpoint {
    pub(super) controls: rtrb::Producer<ControlFrame>,
    pub(super) pcm: rtrb::Consumer<f32>,
    pub(super) shared: Arc<Shared>,
    /// The last flush epoch this side has acted on (see [`Shared::epoch`]).
    pub(super) epoch: u64,
    /// Samples played as silence during underruns: the late samples are skipped when they
    /// arrive, so an underrun never shifts the timeline.
    pub(super) owed: usize,
}

impl AudioEndpoint {
    /// Queue the control of one step. `false` when the queue is full (the control is dropped;
    /// the engine holds the previous values for that step).
    pub fn push_control(&mut self, frame: ControlFrame) -> bool {
        self.controls.push(frame).is_ok()
    }

    /// Fill `out` with the next samples of the stream; what is not there yet is silence, counted
    /// as an underrun while the engine is running. Returns the samples that came from the ring.
    pub fn pop(&mut self, out: &mut [f32]) -> usize {
        self.follow_flush();
        let n = out.len().min(self.pcm.slots());
        if let Ok(chunk) = self.pcm.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            out[..a.len()].copy_from_slice(a);
            out[a.len()..n].copy_from_slice(b);
            chunk.commit_all();
        }
        out[n..].fill(0.0);
        self.shared
            .ring_fill
            .store(self.pcm.slots() as u64, Relaxed);
        if n < out.len() && self.shared.running.load(Acquire) {
            self.shared.underruns.fetch_add(1, Relaxed);
            self.owed += out.len() - n;
        }
        n
    }

    /// Offline bounce only: wait until `samples` samples can be popped, or `timeout` passed
    /// (sleeping [`Naps`] in between). Returns whether they are there.
    pub fn wait_for(&mut self, samples: usize, timeout: Duration) -> bool {
        let mut naps = Naps::new(timeout);
        loop {
            self.follow_flush();
            if self.pcm.slots() >= samples {
                return true;
            }
            if !naps.sleep() {
                return false;
            }
        }
    }

    /// Drop the next `samples` samples of the stream as they arrive: the audio thread started
    /// late on the timeline (a realtime seek that took a while), so they would play late.
    pub fn skip(&mut self, samples: usize) {
        self.follow_flush();
        self.owed += samples;
        self.follow_flush();
    }

    /// The flush epoch this side last followed: it changes when the engine restarts its stream
    /// (a seek, new settings), after the stale audio was dropped. Updated by `pop`/`wait_for`.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a stream is producing audio (a model is loaded and the current stream runs; a
    /// pre-generation while the transport is stopped does not count).
    pub fn running(&self) -> bool {
        self.shared.running.load(Acquire)
    }

    /// Samples in the ring now (a new stream's first ones are its pre-roll of silence).
    pub fn available(&self) -> usize {
        self.pcm.slots()
    }

    /// Whether the engine thread has ended (its handle was dropped).
    pub fn engine_stopped(&self) -> bool {
        self.pcm.is_abandoned()
    }

    /// A snapshot of the engine's state.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Drop the ring's stale audio after a seek or restart, then skip what underruns owe.
    fn follow_flush(&mut self) {
        let epoch = self.shared.epoch.load(Acquire);
        if epoch != self.epoch {
            let stale = self.pcm.slots();
            if let Ok(chunk) = self.pcm.read_chunk(stale) {
                chunk.commit_all();
            }
            self.owed = 0;
            self.epoch = epoch;
            self.shared.acknowledged.store(epoch, Release);
        }
        if self.owed > 0 {
            let skip = self.owed.min(self.pcm.slots());
            if let Ok(chunk) = self.pcm.read_chunk(skip) {
                chunk.commit_all();
            }
            self.owed -= skip;
        }
    }
}
