//! A read-only view of a running engine for displays (the plugin's editor, tools): the status
//! atomics, the live concept meters, the ring's fill, the model and a step-rate estimate.
//!
//! Every read is an atomic load, except the model name and the last error message, which sit
//! behind a lock that the engine thread holds only to write them; [`Monitor`] reads them with
//! `try_lock` and answers `None` rather than wait. So a GUI thread never blocks on the engine,
//! and nothing here touches the command channel or the model.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::meters::METER_CLASSES;
use super::shared::{Shared, Status};

/// Decoder steps per second of audio (real time).
pub const REAL_TIME_STEPS_PER_SECOND: f64 = 50.0;

/// Cheap to clone (one `Arc`); see the module doc.
#[derive(Clone)]
pub struct Monitor {
    pub(super) shared: Arc<Shared>,
}

/// One slot's concept meter as last published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeterReading {
    /// Classes metered (the first `classes` entries of `scores`).
    pub classes: usize,
    /// Class probabilities.
    pub scores: [f32; METER_CLASSES],
    /// Publications so far: it moves while the engine generates.
    pub updates: u64,
}

impl MeterReading {
    pub fn scores(&self) -> &[f32] {
        &self.scores[..self.classes]
    }
}

/// What the engine holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// No model was asked for.
    None,
    /// A model is being resolved, downloaded or loaded.
    Loading(String),
    /// A model is loaded.
    Loaded(LoadedModel),
    /// The name or state is being written right now: ask again next frame.
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModel {
    /// The source it was loaded from (directory or repo id).
    pub name: String,
    /// The decoder's width: a directions file must have been made for this `d_model`.
    pub d_model: usize,
    /// Decoder blocks.
    pub blocks: usize,
}

/// The backend the engine runs on, in words.
pub fn backend() -> &'static str {
    if cfg!(feature = "cuda") {
        "CUDA (burn-cuda)"
    } else {
        "CPU (burn flex)"
    }
}

impl Monitor {
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Slot `slot`'s live concept meter; `None` when the slot has no multiclass probe beside
    /// its directions file (or no slot `slot`).
    pub fn meter(&self, slot: usize) -> Option<MeterReading> {
        let meter = self.shared.meters.get(slot)?;
        let classes = (meter.classes.load(Acquire) as usize).min(METER_CLASSES);
        if classes == 0 {
            return None;
        }
        let mut scores = [0.0; METER_CLASSES];
        for (score, cell) in scores.iter_mut().zip(&meter.scores[..classes]) {
            *score = f32::from_bits(cell.load(Acquire));
        }
        Some(MeterReading {
            classes,
            scores,
            updates: meter.updates.load(Acquire),
        })
    }

    /// Host sample rate the engine was started for.
    pub fn sample_rate(&self) -> u32 {
        self.shared.sample_rate.load(Relaxed)
    }

    /// Seconds one decoder step takes on the engine thread, smoothed over the last steps
    /// (an exponential average with weight 1/8); `None` before the first step.
    pub fn step_seconds(&self) -> Option<f64> {
        let nanos = self.shared.step_nanos.load(Relaxed);
        (nanos > 0).then_some(nanos as f64 * 1e-9)
    }

    /// Decoder steps per second the engine can run at its recent pace.
    pub fn steps_per_second(&self) -> Option<f64> {
        self.step_seconds().map(|s| 1.0 / s)
    }

    /// How much faster than real time the engine generates (≥ 1: it keeps up).
    pub fn real_time_factor(&self) -> Option<f64> {
        self.steps_per_second()
            .map(|rate| rate / REAL_TIME_STEPS_PER_SECOND)
    }

    /// Samples of audio waiting in the ring for the audio thread, and the ring's capacity.
    pub fn buffered(&self) -> (u64, u64) {
        (
            self.shared.ring_fill.load(Relaxed),
            self.shared.ring_capacity.load(Relaxed),
        )
    }

    /// Samples → seconds at the engine's rate.
    pub fn seconds(&self, samples: u64) -> f64 {
        samples as f64 / f64::from(self.sample_rate().max(1))
    }

    pub fn model(&self) -> ModelState {
        let Ok(name) = self.shared.model_name.try_lock() else {
            return ModelState::Busy;
        };
        if self.shared.loading.load(Acquire) {
            return ModelState::Loading(name.clone());
        }
        let d_model = self.shared.model_width.load(Acquire) as usize;
        if d_model == 0 {
            return ModelState::None;
        }
        ModelState::Loaded(LoadedModel {
            name: name.clone(),
            d_model,
            blocks: self.shared.model_blocks.load(Acquire) as usize,
        })
    }

    /// The last error's message (it names the file, key or model at fault); `None` when there
    /// was none, or while the engine is writing it.
    pub fn last_error(&self) -> Option<String> {
        let message = self.shared.error_message.try_lock().ok()?;
        (!message.is_empty()).then(|| message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Release;

    fn monitor() -> Monitor {
        Monitor {
            shared: Arc::new(Shared::default()),
        }
    }

    #[test]
    fn rates_follow_the_smoothed_step_time() {
        let m = monitor();
        assert_eq!(m.steps_per_second(), None);
        m.shared.step_nanos.store(40_000_000, Release); // 40 ms per step
        assert!((m.steps_per_second().unwrap() - 25.0).abs() < 1e-9);
        assert!((m.real_time_factor().unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_meter_reads_only_its_classes_and_a_slot_without_probe_has_none() {
        let m = monitor();
        assert_eq!(m.meter(0), None);
        assert_eq!(m.meter(99), None);
        let meter = &m.shared.meters[2];
        meter.classes.store(3, Release);
        for (i, p) in [0.2f32, 0.5, 0.3].iter().enumerate() {
            meter.scores[i].store(p.to_bits(), Release);
        }
        meter.updates.store(7, Release);
        let reading = m.meter(2).unwrap();
        assert_eq!(reading.scores(), &[0.2, 0.5, 0.3]);
        assert_eq!(reading.updates, 7);
    }

    #[test]
    fn the_model_state_follows_loading_and_width() {
        let m = monitor();
        assert_eq!(m.model(), ModelState::None);
        *m.shared.model_name.lock().unwrap() = "tiny".into();
        m.shared.loading.store(true, Release);
        assert_eq!(m.model(), ModelState::Loading("tiny".into()));
        m.shared.loading.store(false, Release);
        m.shared.model_width.store(64, Release);
        m.shared.model_blocks.store(2, Release);
        assert_eq!(
            m.model(),
            ModelState::Loaded(LoadedModel {
                name: "tiny".into(),
                d_model: 64,
                blocks: 2
            })
        );
    }
}
