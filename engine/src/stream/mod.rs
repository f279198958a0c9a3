//! The streaming engine: a thread that owns the model and turns per-step controls into audio
//! in a lock-free ring (docs/architecture.md, "Threads in the plugin", "Clocks and latency").
//!
//! [`Engine::spawn`] returns an [`EngineHandle`] (commands on a bounded channel: model,
//! prompt, slot directions, sampling, seek — any non-real-time thread) and an
//! [`AudioEndpoint`] (the audio thread: controls in, PCM out, status from atomics).
//!
//! Each decoder step runs [`crate::Generation::step_steered`], the step `render` runs, with
//! slot k steered by `Schedule::External` at c = master · strength_k; sampling is keyed by
//! (seed, step, codebook), so a stream given the controls a render's schedules compute gives
//! the render's codes whatever the block sizes or timing. Completed frames go through the
//! exact streaming EnCodec decode and the resampler into the ring, after a pre-roll of
//! silence as long as the reported latency.

mod cache;
mod conditions;
mod endpoint;
pub mod meters;
pub mod models;
pub mod monitor;
pub mod offline;
mod resample;
mod session;
mod shared;
mod slots;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use crate::generate::Codes;
use crate::model::MusicGen;
use crate::sampling::Sampling;
use crate::steering::LayerWeights;

pub use endpoint::{AudioEndpoint, Naps};
pub use monitor::{LoadedModel, MeterReading, ModelState, Monitor};
pub use resample::StreamResampler;
pub use session::{Session, SessionOptions, Stepper};
pub use shared::{ErrorCode, Status};

/// Slots of directions a control frame drives.
pub const SLOTS: usize = 8;
/// Pitch classes of the notes control.
pub const NOTES: usize = 12;

/// The controls of one decoder step, sent by the audio thread at the step's first sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlFrame {
    /// The timeline step these values drive.
    pub step: u64,
    /// Strength of each slot's direction (already shaped by the caller).
    pub slots: [f32; SLOTS],
    /// Strength of each pitch class of the notes directions, when a notes file is set.
    pub notes: [f32; NOTES],
    /// Scales every slot and note.
    pub master: f32,
}

impl ControlFrame {
    /// Nothing steered.
    pub fn silent(step: u64) -> Self {
        Self {
            step,
            slots: [0.0; SLOTS],
            notes: [0.0; NOTES],
            master: 1.0,
        }
    }
}

/// One timeline step's duration on the engine thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTime {
    pub took: std::time::Duration,
    /// The step ran while a window slide was under way (the next window's generation running
    /// alongside, or catching up after the swap).
    pub sliding: bool,
    /// The step took a new prompt (its condition swapped in, or computed then if it was not
    /// ready).
    pub prompt: bool,
}

/// How the engine paces its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Step s runs once its control has arrived: the result depends on the controls alone.
    Timeline,
    /// Run ahead until the ring holds the latency's worth of audio, with the latest controls.
    Live,
}

/// Frames a window slide re-prompts with, for a window of `window` positions: 40 % of it, as
/// audiocraft keeps 12 s of its 30 s (`max_duration` 30 s, `extend_stride` 18 s).
pub fn reprompt_frames_for(window: usize) -> usize {
    window * 2 / 5
}

/// Frames per streaming-decode run when [`EngineConfig::decode_chunk_frames`] leaves it to the
/// model: 2 where the decoder steps on the CPU, 1 elsewhere.
///
/// On the CPU a streamed frame's codec run reads the LSTM's and the first transposed conv's
/// weights whole (about 50 MB in bf16), which a pair of frames shares: one step in two pays for
/// both, for one frame (20 ms) more latency. Measured 2026-12-01 on the 2-core Xeon with
/// `cargo xtask stream --dtype q4 --seconds 4 --window 150` on the musicgen-small shape,
/// alternating runs: codec 3.97 / 4.14 ms a step and 51.4 / 52.2 steps/s at 1 frame, 3.33 /
/// 3.39 ms and 56.1 / 56.7 steps/s at 2, 2.70 / 2.61 ms and 57.7 / 60.2 steps/s at 4 (latency
/// 180, 200 and 240 ms). On a GPU the codec's share of a step is small: 1 keeps the latency.
pub fn default_decode_chunk(model: &MusicGen) -> usize {
    if model.decoder.steps_on_host() { 2 } else { 1 }
}

/// Whether a stream's step decodes the frames completed before it on one thread while its
/// generation work runs on the other (`Session::step`): where the decoder steps on
/// the CPU, for one step (20 ms) more latency. A step's decoder products wait on memory; the
/// codec's convolutions are arithmetic and fill that time. Measured 2026-12-02 on the 2-core
/// EPYC with `cargo xtask stream --dtype q4 --seconds 4 --window 1500` on the musicgen-small
/// shape, alternating runs: 39.3 / 39.2 / 44.0 → 46.1 / 43.1 / 46.5 steps/s (P50 step 25.4 /
/// 24.3 / 21.3 → 21.1 / 22.8 / 21.5 ms); with a window of 150, where most steps also replay
/// the next window's prefix (four rows a product, arithmetic-bound), 35.3 / 34.6 / 30.0 →
/// 34.9 / 35.7 / 35.2. On a GPU both would queue on the one device: the codec stays in the
/// step.
pub fn decodes_beside(model: &MusicGen) -> bool {
    model.decoder.steps_on_host()
}

/// Fixed when the engine starts.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Host sample rate in Hz.
    pub sample_rate: u32,
    pub clock: Clock,
    /// Steps of compute headroom added to the latency (realtime playback needs ≥ 1).
    pub cushion_steps: usize,
    /// Frames per streaming-decode run (see [`crate::encodec::StreamingDecoder`]): the codec
    /// waits for this many frames and decodes them together. 1 adds no latency; more reads the
    /// codec's weights once per run instead of once per frame, for `n − 1` frames of latency.
    /// `None`: [`default_decode_chunk`] for the model.
    pub decode_chunk_frames: Option<usize>,
    /// Decoder positions per generation before the window slides.
    pub window: usize,
    /// Frames of the last codes a slide re-prompts with.
    pub reprompt_frames: usize,
    /// PCM ring capacity in host samples.
    pub ring_samples: usize,
    /// Control queue capacity in frames.
    pub control_capacity: usize,
    /// Seconds of each timeline stream kept for replay (0: no timeline cache); see
    /// `engine/src/stream/cache.rs`.
    pub timeline_cache_seconds: u32,
    /// The least time a timeline step takes: the engine sleeps out the rest of a faster step.
    /// Zero (the default) runs at full speed; a value above 20 ms shows on a fast machine what
    /// a machine slower than real time does (underruns, the timeline cache), for a user trying
    /// that out and for tests. The plugin reads it from `MUSICRFM_SIMULATE_STEP_MS`.
    pub step_floor: std::time::Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sample_rate: 48_000,
            clock: Clock::Timeline,
            cushion_steps: 2,
            decode_chunk_frames: None,
            window: 1500,
            reprompt_frames: reprompt_frames_for(1500),
            ring_samples: 1 << 17,
            control_capacity: 4096,
            // 4 minutes: 46 MB per recording at 48 kHz, three recordings at most.
            timeline_cache_seconds: 240,
            step_floor: std::time::Duration::ZERO,
        }
    }
}

/// Where a model comes from.
#[derive(Clone)]
pub enum ModelSource {
    /// A directory or a Hugging Face repo id in the local cache ([`crate::hub::resolve_model`]);
    /// engines that name the same model share one copy ([`models::load_shared`]).
    Path(String),
    /// A model already loaded (tests, a host that shares one).
    Loaded(Arc<MusicGen>),
}

/// A directions file's class for one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotDirection {
    pub file: PathBuf,
    /// A class name or a 0-based index.
    pub class: String,
    /// `None`: [`LayerWeights::default_for`] the file.
    pub layers: Option<LayerWeights>,
    pub gate: f32,
}

/// Sampling, guidance and seed of the stream's generations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationSettings {
    pub sampling: Sampling,
    pub guidance: f32,
    pub seed: u64,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            sampling: Sampling::MUSICGEN_DEFAULT,
            guidance: 3.0,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("model `{model}`: {error}")]
    Model {
        model: String,
        error: Box<crate::error::LoadError>,
    },
    #[error("slot {slot} ({file}): {error}")]
    Slot {
        slot: usize,
        file: PathBuf,
        error: Box<crate::steering::SteeringError>,
    },
    #[error("slot {0}: there are {SLOTS} slots (0..{SLOTS})")]
    NoSuchSlot(usize),
    #[error("prompt `{prompt}`: {error}")]
    Prompt {
        prompt: String,
        error: Box<crate::error::LoadError>,
    },
    #[error("step {step}: {error}")]
    Generate {
        step: u64,
        error: crate::generate::GenerateError,
    },
    #[error("step {step} panicked: {message}")]
    Panic { step: u64, message: String },
    #[error("engine config: {0}")]
    Config(String),
    #[error("the engine thread has stopped")]
    Stopped,
    #[error("no audio for host samples {}..{} after {waited:?}", samples.start, samples.end)]
    NoAudio {
        samples: std::ops::Range<usize>,
        waited: std::time::Duration,
    },
}

pub(crate) enum Command {
    LoadModel(ModelSource, crate::model::LoadOptions),
    SetPrompt {
        prompt: String,
        at_step: u64,
    },
    SetSlot(usize, Option<SlotDirection>),
    SetNotes(Option<SlotDirection>),
    SetGeneration(GenerationSettings),
    Seek(u64),
    Pregenerate {
        start: u64,
        steps: u64,
        controls: Box<dyn Fn(u64) -> ControlFrame + Send>,
    },
    Codes(Sender<Option<Codes>>),
    StepTimes(Sender<Vec<StepTime>>),
    /// Fault injection: the next step panics (tests of the panic path).
    PanicInStep,
}

/// Non-real-time control of the engine thread. Dropping it stops the thread.
pub struct EngineHandle {
    commands: Option<Sender<Command>>,
    shared: Arc<shared::Shared>,
    thread: Option<JoinHandle<()>>,
}

pub struct Engine;

impl Engine {
    /// Start the engine thread. No model is loaded yet; the endpoint outputs silence until one
    /// is and a prompt is set.
    pub fn spawn(config: EngineConfig) -> Result<(EngineHandle, AudioEndpoint), StreamError> {
        if config.sample_rate == 0 || config.ring_samples == 0 || config.control_capacity == 0 {
            return Err(StreamError::Config(format!(
                "sample_rate {}, ring_samples {}, control_capacity {}: each must be positive",
                config.sample_rate, config.ring_samples, config.control_capacity
            )));
        }
        if config.reprompt_frames + 8 > config.window {
            return Err(StreamError::Config(format!(
                "reprompt_frames {} must leave room in window {}",
                config.reprompt_frames, config.window
            )));
        }
        let shared = Arc::new(shared::Shared::default());
        shared
            .sample_rate
            .store(config.sample_rate, std::sync::atomic::Ordering::Relaxed);
        shared.ring_capacity.store(
            config.ring_samples as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let (control_tx, control_rx) = rtrb::RingBuffer::new(config.control_capacity);
        let (pcm_tx, pcm_rx) = rtrb::RingBuffer::new(config.ring_samples);
        let (command_tx, command_rx) = bounded(64);
        let worker = worker::Worker::new(config, command_rx, control_rx, pcm_tx, shared.clone());
        let thread = std::thread::Builder::new()
            .name("musicrfm-engine".into())
            .spawn(move || worker.run())
            .map_err(|e| StreamError::Config(format!("engine thread: {e}")))?;
        let handle = EngineHandle {
            commands: Some(command_tx),
            shared: shared.clone(),
            thread: Some(thread),
        };
        let endpoint = AudioEndpoint {
            controls: control_tx,
            pcm: pcm_rx,
            shared,
            epoch: 0,
            owed: 0,
        };
        Ok((handle, endpoint))
    }
}

impl EngineHandle {
    fn send(&self, command: Command) -> Result<(), StreamError> {
        let sender = self.commands.as_ref().ok_or(StreamError::Stopped)?;
        sender.send(command).map_err(|_| StreamError::Stopped)
    }

    pub fn load_model(&self, source: ModelSource) -> Result<(), StreamError> {
        self.load_model_with(source, crate::model::LoadOptions::default())
    }

    /// [`EngineHandle::load_model`] with a weight format (ignored for a model already loaded).
    pub fn load_model_with(
        &self,
        source: ModelSource,
        options: crate::model::LoadOptions,
    ) -> Result<(), StreamError> {
        self.send(Command::LoadModel(source, options))
    }

    /// Condition the steps from `at_step` on (step 0: the stream's first prompt).
    pub fn set_prompt(&self, prompt: &str, at_step: u64) -> Result<(), StreamError> {
        self.send(Command::SetPrompt {
            prompt: prompt.to_owned(),
            at_step,
        })
    }

    /// Set (or clear) slot `slot`'s direction; the next steps use it.
    pub fn set_slot(
        &self,
        slot: usize,
        direction: Option<SlotDirection>,
    ) -> Result<(), StreamError> {
        self.send(Command::SetSlot(slot, direction))
    }

    /// Set (or clear) the notes directions file: class i is driven by `notes[i]`.
    pub fn set_notes(&self, direction: Option<SlotDirection>) -> Result<(), StreamError> {
        self.send(Command::SetNotes(direction))
    }

    /// New sampling, guidance or seed: the stream restarts at its current step.
    pub fn set_generation(&self, settings: GenerationSettings) -> Result<(), StreamError> {
        self.send(Command::SetGeneration(settings))
    }

    /// Restart the stream at timeline step `step` (0: reset). The ring's audio is dropped.
    pub fn seek(&self, step: u64) -> Result<(), StreamError> {
        self.send(Command::Seek(step))
    }

    /// While the transport is stopped: generate `steps` steps from timeline step `start` with
    /// the controls `controls` gives each step (the automation as it stands), into the
    /// timeline cache and not the ring. Playing from `start` with those controls then replays
    /// them at once and goes on from where the pre-generation got to. Any command ends it.
    pub fn pregenerate(
        &self,
        start: u64,
        steps: u64,
        controls: impl Fn(u64) -> ControlFrame + Send + 'static,
    ) -> Result<(), StreamError> {
        self.send(Command::Pregenerate {
            start,
            steps,
            controls: Box::new(controls),
        })
    }

    /// The codes of the current stream's generation (`None` when none runs).
    pub fn codes(&self) -> Result<Option<Codes>, StreamError> {
        let (tx, rx) = bounded(1);
        self.send(Command::Codes(tx))?;
        rx.recv().map_err(|_| StreamError::Stopped)
    }

    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// A read-only, lock-free view of this engine for displays; it stays valid (reading the
    /// last values) after the engine stops.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            shared: self.shared.clone(),
        }
    }

    /// How long each timeline step since the engine started took (the last 65 536 at most;
    /// benchmarks, monitoring).
    pub fn step_times(&self) -> Result<Vec<StepTime>, StreamError> {
        let (tx, rx) = bounded(1);
        self.send(Command::StepTimes(tx))?;
        rx.recv().map_err(|_| StreamError::Stopped)
    }

    /// Make the next step panic, to exercise the engine's recovery (tests only).
    #[doc(hidden)]
    pub fn inject_step_panic(&self) -> Result<(), StreamError> {
        self.send(Command::PanicInStep)
    }

    /// Slot `slot`'s live concept meter: the class probabilities last published and how many
    /// publications there were; `None` when the slot has no multiclass probe beside its file.
    pub fn meter(&self, slot: usize) -> Option<(Vec<f32>, u64)> {
        use std::sync::atomic::Ordering::Acquire;
        let meter = self.shared.meters.get(slot)?;
        let classes = meter.classes.load(Acquire) as usize;
        (classes > 0).then(|| {
            let scores = meter.scores[..classes]
                .iter()
                .map(|c| f32::from_bits(c.load(Acquire)))
                .collect();
            (scores, meter.updates.load(Acquire))
        })
    }

    /// The last error's message (empty when none).
    pub fn last_error(&self) -> String {
        match self.shared.error_message.lock() {
            Ok(message) => message.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.commands = None; // the worker sees the channel disconnect and returns
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
