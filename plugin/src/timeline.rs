//! The audio thread's bookkeeping, as plain arithmetic (no engine, no host): where the timeline's
//! origin is and which step a host position falls on, the notes a MIDI slot holds, and whether
//! the host drives us faster than real time. Everything here is allocation-free and unit-tested.

use std::time::{Duration, Instant};

use engine::stream::NOTES;

/// Decoder steps per second.
pub const STEP_RATE: u64 = 50;

/// Host sample (relative to the origin) where step `step` starts: `ceil(step · fs / 50)`.
pub fn step_start(step: u64, sample_rate: u64) -> u64 {
    (step * sample_rate).div_ceil(STEP_RATE)
}

/// The first step starting at or after `position` samples from the origin: the least s with
/// `step_start(s) >= position` (at rates whose steps are whole samples, `ceil(position·50/fs)`).
pub fn step_at(position: u64, sample_rate: u64) -> u64 {
    match position {
        0 => 0,
        p => (p - 1) * STEP_RATE / sample_rate + 1,
    }
}

/// A host position in samples from a transport position in seconds.
pub fn samples_at(seconds: f64, sample_rate: u64) -> i64 {
    (seconds * sample_rate as f64).round() as i64
}

/// Where playback starts on the step timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Samples from the origin.
    pub position: u64,
    /// The first step whose control is still to come.
    pub step: u64,
}

/// The timeline's origin: the song position where playback started first since activation.
/// A later start (or a jump: a loop, a seek) at or after it lands on the step for that
/// position; one before it moves the origin there.
#[derive(Debug, Default, Clone, Copy)]
pub struct Origin {
    song_sample: Option<i64>,
}

impl Origin {
    pub fn reset(&mut self) {
        self.song_sample = None;
    }

    /// The step playback would start at from song sample `at`, without moving the origin.
    pub fn peek(&self, at: i64, sample_rate: u64) -> u64 {
        match self.song_sample {
            Some(origin) if origin <= at => step_at((at - origin) as u64, sample_rate),
            _ => 0,
        }
    }

    /// Playback (re)starts at song sample `at`.
    pub fn start_at(&mut self, at: i64, sample_rate: u64) -> Start {
        let origin = match self.song_sample {
            Some(origin) if origin <= at => origin,
            _ => {
                self.song_sample = Some(at);
                at
            }
        };
        let position = (at - origin) as u64;
        Start {
            position,
            step: step_at(position, sample_rate),
        }
    }
}

/// Steps a released note takes to fade out.
pub const RELEASE_STEPS: u32 = 5;

/// The notes of the MIDI slot: each key's velocity while held, and each pitch class's level,
/// which follows the loudest held key of that class and ramps down over [`RELEASE_STEPS`] once
/// none is held.
#[derive(Debug, Clone)]
pub struct Notes {
    held: [f32; 128],
    level: [f32; NOTES],
    /// The level each class had when its last key was released, and the steps since.
    released_from: [f32; NOTES],
    released_for: [u32; NOTES],
}

impl Default for Notes {
    fn default() -> Self {
        Self {
            held: [0.0; 128],
            level: [0.0; NOTES],
            released_from: [0.0; NOTES],
            released_for: [RELEASE_STEPS; NOTES],
        }
    }
}

impl Notes {
    pub fn note_on(&mut self, key: u8, velocity: f32) {
        self.held[usize::from(key & 127)] = velocity.clamp(0.0, 1.0);
    }

    pub fn note_off(&mut self, key: u8) {
        self.held[usize::from(key & 127)] = 0.0;
    }

    /// Every held key released (each class ramps down).
    pub fn release_all(&mut self) {
        self.held = [0.0; 128];
    }

    /// Everything silent at once (transport stop, reset).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Advance one step; the pitch-class levels that drive it (velocity 0..1).
    pub fn step(&mut self) -> [f32; NOTES] {
        for class in 0..NOTES {
            let held = (class..128)
                .step_by(NOTES)
                .map(|key| self.held[key])
                .fold(0.0, f32::max);
            if held > 0.0 {
                self.level[class] = held;
                self.released_from[class] = held;
                self.released_for[class] = 0;
            } else {
                let k = (self.released_for[class] + 1).min(RELEASE_STEPS);
                self.released_for[class] = k;
                let left = (RELEASE_STEPS - k) as f32 / RELEASE_STEPS as f32;
                self.level[class] = self.released_from[class] * left;
            }
        }
        self.level
    }
}

/// Whether the host is rendering offline, judged by how it calls us: the time between our
/// return and its next call, summed over a window of audio. A host playing in real time idles
/// about a buffer's length between calls; one rendering offline calls again at once. Guards
/// against hosts that switch the render mode without re-activating the plugin, and against a
/// host that activated us offline but plays in real time (which must never be made to wait).
#[derive(Debug, Default, Clone, Copy)]
pub struct Pacing {
    returned: Option<Instant>,
    idle: Duration,
    samples: u64,
    verdict: Option<bool>,
}

/// Audio per verdict.
const PACING_WINDOW_SECONDS: f64 = 0.05;

impl Pacing {
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// A process call for `samples` samples begins now.
    pub fn enter(&mut self, samples: usize, sample_rate: u64) {
        let now = Instant::now();
        if let Some(returned) = self.returned {
            self.idle += now.saturating_duration_since(returned);
            self.samples += samples as u64;
        }
        let audio = self.samples as f64 / sample_rate as f64;
        if audio >= PACING_WINDOW_SECONDS {
            self.verdict = Some(self.idle.as_secs_f64() < 0.25 * audio);
            self.idle = Duration::ZERO;
            self.samples = 0;
        }
    }

    /// The process call returns now.
    pub fn leave(&mut self) {
        self.returned = Some(Instant::now());
    }

    /// `Some(true)`: the host renders faster than real time; `Some(false)`: it plays in real
    /// time; `None`: not known yet.
    pub fn offline(&self) -> Option<bool> {
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_start_at_the_ceiling_of_their_sample() {
        assert_eq!(step_start(1, 44_100), 882);
        assert_eq!(step_start(3, 44_100), 2646);
        assert_eq!(step_start(1, 48_000), 960);
        // 22 050 Hz: 441 per step; at 11 025: 220.5 → 221, 441, 662.
        assert_eq!(
            (1..4).map(|s| step_start(s, 11_025)).collect::<Vec<_>>(),
            [221, 441, 662]
        );
        for rate in [32_000, 44_100, 48_000, 11_025] {
            for position in 0..3000 {
                let s = step_at(position, rate);
                assert!(step_start(s, rate) >= position, "{rate} {position}");
                assert!(
                    s == 0 || step_start(s - 1, rate) < position,
                    "{rate} {position}"
                );
            }
        }
    }

    #[test]
    fn a_start_after_the_origin_lands_on_its_step_and_one_before_moves_it() {
        let mut origin = Origin::default();
        let first = origin.start_at(1000, 48_000);
        assert_eq!(
            first,
            Start {
                position: 0,
                step: 0
            }
        );
        let later = origin.start_at(1000 + 961, 48_000);
        assert_eq!(
            later,
            Start {
                position: 961,
                step: 2
            }
        );
        let exact = origin.start_at(1000 + 960, 48_000);
        assert_eq!(exact.step, 1);
        let before = origin.start_at(10, 48_000);
        assert_eq!(
            before,
            Start {
                position: 0,
                step: 0
            }
        );
        assert_eq!(origin.start_at(10 + 960, 48_000).step, 1);
        origin.reset();
        assert_eq!(origin.start_at(5000, 48_000).step, 0);
    }

    #[test]
    fn notes_follow_the_loudest_key_of_a_class_and_release_over_a_ramp() {
        let mut notes = Notes::default();
        notes.note_on(60, 0.5); // C
        notes.note_on(72, 0.8); // C an octave up
        notes.note_on(64, 0.25); // E
        let levels = notes.step();
        assert_eq!(levels[0], 0.8);
        assert_eq!(levels[4], 0.25);
        assert_eq!(levels[1], 0.0);
        notes.note_off(72);
        assert_eq!(notes.step()[0], 0.5, "the other C still holds");
        notes.note_off(60);
        let ramp: Vec<f32> = (0..6).map(|_| notes.step()[0]).collect();
        assert!((ramp[0] - 0.4).abs() < 1e-6, "{ramp:?}");
        assert!(ramp.windows(2).all(|w| w[1] <= w[0]), "{ramp:?}");
        assert_eq!(
            ramp[4], 0.0,
            "released within {RELEASE_STEPS} steps: {ramp:?}"
        );
        assert_eq!(notes.step()[4], 0.25, "E still held");
    }

    #[test]
    fn pacing_tells_an_offline_host_from_a_realtime_one() {
        let rate = 48_000;
        let mut offline = Pacing::default();
        for _ in 0..20 {
            offline.enter(512, rate);
            offline.leave();
        }
        assert_eq!(offline.offline(), Some(true));

        // A host that idles a buffer's length between calls (512 samples: 10.7 ms).
        let mut realtime = Pacing::default();
        for _ in 0..8 {
            realtime.enter(512, rate);
            realtime.leave();
            realtime.returned = realtime.returned.map(|r| r - Duration::from_micros(10_000));
        }
        assert_eq!(realtime.offline(), Some(false));
        assert_eq!(Pacing::default().offline(), None);
    }
}
