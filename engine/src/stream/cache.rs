//! The timeline cache: what a timeline stream produced, kept with the controls that produced it,
//! so that playing the same section again with unchanged automation replays the audio without
//! running the decoder, identical sample for sample (DAW loops, replays after a stop).
//!
//! A recording belongs to one stream start (timeline step) and one engine state (model, prompt
//! map, slots, sampling: any command that changes them bumps the version). Its audio is the
//! stream after the pre-roll; `marks[i]` is how much of it existed before step `start + i` ran,
//! so `audio[..marks[i + 1]]` depends on the controls up to step `start + i` only and may be
//! replayed once those controls are seen to be the recorded ones.

use std::collections::VecDeque;

use super::ControlFrame;

/// Recordings kept (different start points or engine states), oldest dropped first.
const RECORDINGS: usize = 3;

pub(super) struct Recording {
    pub version: u64,
    pub start: u64,
    pub latency: usize,
    pub controls: Vec<ControlFrame>,
    pub marks: Vec<usize>,
    pub audio: Vec<f32>,
    /// Stopped growing at the size limit.
    full: bool,
    limit: usize,
}

impl Recording {
    /// `limit`: the most audio samples to keep.
    pub fn new(version: u64, start: u64, latency: usize, limit: usize) -> Self {
        Self {
            version,
            start,
            latency,
            controls: Vec::new(),
            marks: Vec::new(),
            audio: Vec::new(),
            full: false,
            limit,
        }
    }

    /// Step `start + controls.len()` is about to run with `control`.
    pub fn step(&mut self, control: &ControlFrame) {
        if self.full || self.audio.len() >= self.limit {
            self.full = true;
            return;
        }
        self.marks.push(self.audio.len());
        self.controls.push(*control);
    }

    /// The recording reached its size limit.
    pub fn is_full(&self) -> bool {
        self.full || self.audio.len() >= self.limit
    }

    /// The stream produced `samples`.
    pub fn audio(&mut self, samples: &[f32]) {
        if !self.full {
            self.audio.extend_from_slice(samples);
        }
    }

    /// Audio that depends only on the controls of the first `steps` recorded steps.
    pub fn bound(&self, steps: usize) -> usize {
        self.marks.get(steps).copied().unwrap_or(self.audio.len())
    }

    /// Keep the first `steps` steps' controls, to be continued by a stream that reproduced them
    /// and whose audio so far is `audio`.
    pub fn continue_after(&mut self, steps: usize, audio: Vec<f32>) {
        self.controls.truncate(steps);
        self.marks.truncate(steps);
        self.audio = audio;
        self.full = false;
    }
}

#[derive(Default)]
pub(super) struct TimelineCache {
    recordings: VecDeque<Recording>,
}

impl TimelineCache {
    /// The recording of a stream that started at `start` in engine state `version`.
    pub fn take(&mut self, version: u64, start: u64) -> Option<Recording> {
        let i = self
            .recordings
            .iter()
            .position(|r| r.version == version && r.start == start)?;
        self.recordings.remove(i)
    }

    pub fn put(&mut self, recording: Recording) {
        if recording.controls.is_empty() {
            return;
        }
        self.recordings
            .retain(|r| !(r.version == recording.version && r.start == recording.start));
        if self.recordings.len() == RECORDINGS {
            self.recordings.pop_front();
        }
        self.recordings.push_back(recording);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_stops_at_its_limit_and_the_cache_keeps_the_newest() {
        let mut recording = Recording::new(1, 0, 10, 100);
        for s in 0..30 {
            recording.step(&ControlFrame::silent(s));
            recording.audio(&[0.5; 7]);
        }
        // Steps are recorded while the audio is under the limit: 15 steps make 105 samples.
        assert_eq!(recording.controls.len(), 15);
        assert_eq!(recording.audio.len(), 105);
        assert_eq!(recording.bound(15), 105);
        assert_eq!(recording.bound(3), 21);
        let mut cache = TimelineCache::default();
        for start in 0..5 {
            let mut r = Recording::new(1, start, 0, 10);
            r.step(&ControlFrame::silent(start));
            cache.put(r);
        }
        assert!(cache.take(1, 1).is_none(), "the oldest were dropped");
        assert!(cache.take(2, 4).is_none(), "another engine state");
        assert_eq!(cache.take(1, 4).map(|r| r.start), Some(4));
        assert!(cache.take(1, 4).is_none(), "taken");
    }
}
