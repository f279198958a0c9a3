//! The standalone app's own transport. nice-plug's cpal and dummy backends report "playing"
//! from the first sample on, forever, with a position that only counts up (JACK passes a real
//! transport, which is left alone): so the standalone editor has Play / Stop / ⏮ of its own.
//!
//! The GUI thread writes requests; the audio thread applies them at the start of each
//! `process()` call and keeps the song position, all in atomics (no lock, no allocation). The
//! audio thread then runs the timeline exactly as for a host transport: Play is a start at the
//! position (the engine seeks to its step), Stop is the stopped path (silence, the engine
//! idles), ⏮ is a jump to 0.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};

use nice_plug::prelude::Transport;

#[derive(Debug, Default)]
pub struct StandaloneTransport {
    /// GUI writes (Play / Stop); audio thread reads.
    playing: AtomicBool,
    /// GUI bumps (⏮); the audio thread compares it with `rewinds_done`.
    rewinds: AtomicU64,
    /// Audio thread only (an atomic so the struct can be shared).
    rewinds_done: AtomicU64,
    /// Song position in samples at the next piece. Audio thread writes; GUI reads.
    position: AtomicU64,
    /// The audio thread's sample rate (f64 bits), for the GUI's clock. Audio thread writes.
    sample_rate: AtomicU64,
    /// Set by the audio thread once it runs inside the standalone wrapper.
    active: AtomicBool,
}

impl StandaloneTransport {
    pub fn set_playing(&self, playing: bool) {
        self.playing.store(playing, Release);
    }

    pub fn rewind(&self) {
        self.rewinds.fetch_add(1, AcqRel);
    }

    pub fn playing(&self) -> bool {
        self.playing.load(Acquire)
    }

    /// Seconds from the start of the timeline.
    pub fn position_seconds(&self) -> f64 {
        let rate = f64::from_bits(self.sample_rate.load(Relaxed));
        if rate > 0.0 {
            self.position.load(Relaxed) as f64 / rate
        } else {
            0.0
        }
    }

    /// Whether the audio thread runs in the standalone app.
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Audio thread, standalone only: the wrapper's always-playing transport replaced by
    /// ours, for a piece of `samples` samples; our position advances past it. Lock- and
    /// allocation-free.
    pub fn apply(&self, host: &Transport, samples: usize) -> Transport {
        let mut transport = Transport::new(host.sample_rate);
        transport.tempo = host.tempo;
        transport.time_sig_numerator = host.time_sig_numerator;
        transport.time_sig_denominator = host.time_sig_denominator;
        self.active.store(true, Relaxed);
        self.sample_rate
            .store(f64::from(transport.sample_rate).to_bits(), Relaxed);
        let rewinds = self.rewinds.load(Acquire);
        if rewinds != self.rewinds_done.load(Relaxed) {
            self.rewinds_done.store(rewinds, Relaxed);
            self.position.store(0, Relaxed);
        }
        let playing = self.playing.load(Acquire);
        let position = self.position.load(Relaxed);
        transport.playing = playing;
        transport.pos_seconds = Some(position as f64 / f64::from(transport.sample_rate));
        if playing {
            self.position.store(position + samples as u64, Relaxed);
        }
        transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(t: &StandaloneTransport, samples: usize) -> (bool, f64) {
        let mut host = Transport::new(48_000.0);
        host.playing = true; // what the cpal / dummy backends always say
        host.pos_samples = Some(123_456);
        host.tempo = Some(120.0);
        let ours = t.apply(&host, samples);
        assert_eq!(ours.tempo, Some(120.0));
        assert_eq!(ours.pos_samples, None);
        (ours.playing, ours.pos_seconds.unwrap())
    }

    #[test]
    fn stop_holds_the_position_play_resumes_it_and_rewind_goes_to_zero() {
        let t = StandaloneTransport::default();
        assert_eq!(piece(&t, 480), (false, 0.0), "starts stopped at 0");
        t.set_playing(true);
        assert_eq!(piece(&t, 480), (true, 0.0));
        assert_eq!(piece(&t, 480), (true, 0.01));
        t.set_playing(false);
        assert_eq!(piece(&t, 480), (false, 0.02), "stopped: the position holds");
        assert_eq!(piece(&t, 480), (false, 0.02));
        t.set_playing(true);
        assert_eq!(
            piece(&t, 480),
            (true, 0.02),
            "play resumes where it stopped"
        );
        t.rewind();
        assert_eq!(piece(&t, 480), (true, 0.0), "⏮ jumps to the origin");
        assert!((t.position_seconds() - 0.01).abs() < 1e-12);
    }
}
