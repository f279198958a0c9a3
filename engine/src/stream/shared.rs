//! State shared between the engine thread, the audio thread and non-real-time readers (GUI,
//! tools). Numbers are atomics; only the error message is behind a lock, which the audio
//! thread never touches.

use std::sync::Mutex;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

/// What went wrong last, as the audio thread can read it (the message is in
/// [`Shared::error_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    None = 0,
    /// A model failed to load (a bad directory, repo id or checkpoint).
    ModelLoad = 1,
    /// A directions file failed to load or does not fit the model.
    Directions = 2,
    /// A prompt could not be tokenised or encoded.
    Prompt = 3,
    /// A decoder step failed or panicked.
    Step = 4,
    /// A command was invalid (a slot out of range, a bad setting).
    Command = 5,
}

impl ErrorCode {
    fn from_u32(code: u32) -> Self {
        match code {
            1 => Self::ModelLoad,
            2 => Self::Directions,
            3 => Self::Prompt,
            4 => Self::Step,
            5 => Self::Command,
            _ => Self::None,
        }
    }
}

/// A snapshot of the stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Decoder steps run since the stream (re)started, on the timeline's clock: the next step
    /// to run.
    pub step: u64,
    /// Steps run since the engine started (all streams).
    pub steps_done: u64,
    /// `pop` calls that found fewer samples than asked for while running.
    pub underruns: u64,
    pub error: ErrorCode,
    /// Errors reported since the engine started: a new one bumps it even when its code and
    /// message repeat an earlier one's.
    pub errors: u64,
    /// Host samples from a control's step start to the audio it made.
    pub latency_samples: u64,
    /// A model is loaded and a stream is producing audio.
    pub running: bool,
    /// Window slides of the current stream (re-prompts past the model's window).
    pub slides: u64,
    /// Timeline steps replayed from the timeline cache, without decoder steps (all streams).
    pub cached_steps: u64,
    /// Steps the pre-generation under way has generated so far (0 when none runs).
    pub pregenerated: u64,
    /// The timeline step from which the prompt in effect conditions the stream.
    pub prompt_step: u64,
    /// A prompt asked for while playing waits for its condition (T5 and the cross-attention's
    /// keys and values, computed beside the steps); the stream takes it at the first step after.
    pub prompt_pending: bool,
}

/// One slot's live concept meter (see [`super::meters`]): written by the engine thread, read by
/// anyone without a lock.
#[derive(Debug, Default)]
pub struct SlotMeter {
    /// Classes metered; 0: the slot has no probe.
    pub classes: AtomicU32,
    /// Class probabilities as `f32` bits.
    pub scores: [AtomicU32; super::meters::METER_CLASSES],
    /// Publications so far.
    pub updates: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Shared {
    /// Written by the engine thread after each step; read by anyone.
    pub step: AtomicU64,
    pub steps_done: AtomicU64,
    pub slides: AtomicU64,
    pub cached_steps: AtomicU64,
    pub pregenerated: AtomicU64,
    pub prompt_step: AtomicU64,
    pub prompt_pending: AtomicBool,
    /// Written by the audio thread (`pop`); read by anyone.
    pub underruns: AtomicU64,
    /// Written by the engine thread; read by anyone.
    pub error_code: AtomicU32,
    /// Written by the engine thread after each error report; read by anyone.
    pub errors: AtomicU64,
    /// Written by the engine thread; read by non-real-time threads only.
    pub error_message: Mutex<String>,
    /// Written by the engine thread when a stream starts; read by anyone.
    pub latency_samples: AtomicU64,
    /// Written by the engine thread; read by the audio thread (underruns count only while set).
    pub running: AtomicBool,
    /// Bumped by the engine thread when the ring's audio is stale (seek, restart); the audio
    /// thread then drains the ring and stores the epoch in `acknowledged`, and the engine
    /// writes no new audio before it has.
    pub epoch: AtomicU64,
    pub acknowledged: AtomicU64,
    pub meters: [SlotMeter; super::SLOTS],
    /// Set once when the engine starts (host rate, ring capacity in samples); read by anyone.
    pub sample_rate: AtomicU32,
    pub ring_capacity: AtomicU64,
    /// Written by the audio thread after each `pop`: samples left in the ring. Read by
    /// displays ([`super::Monitor`]).
    pub ring_fill: AtomicU64,
    /// Written by the engine thread after each timeline step: the step time in nanoseconds,
    /// smoothed (exponential average, weight 1/8). Read by displays.
    pub step_nanos: AtomicU64,
    /// Written by the engine thread around a model load; read by displays.
    pub loading: AtomicBool,
    /// The loaded model's decoder width and blocks (0: none). Engine thread writes.
    pub model_width: AtomicU64,
    pub model_blocks: AtomicU64,
    /// The model source being loaded or loaded. Engine thread writes; non-real-time readers
    /// only (displays use `try_lock`).
    pub model_name: Mutex<String>,
}

impl Shared {
    pub fn status(&self) -> Status {
        Status {
            step: self.step.load(Acquire),
            steps_done: self.steps_done.load(Relaxed),
            underruns: self.underruns.load(Relaxed),
            error: ErrorCode::from_u32(self.error_code.load(Acquire)),
            errors: self.errors.load(Acquire),
            latency_samples: self.latency_samples.load(Acquire),
            running: self.running.load(Acquire),
            slides: self.slides.load(Acquire),
            cached_steps: self.cached_steps.load(Relaxed),
            pregenerated: self.pregenerated.load(Acquire),
            prompt_step: self.prompt_step.load(Acquire),
            prompt_pending: self.prompt_pending.load(Acquire),
        }
    }
}
