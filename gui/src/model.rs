//! What the editor reads and edits: [`EditorModel`], implemented by the plugin's parameters,
//! and the plain-data views it hands over. The editor never sees the engine or the model
//! itself, only these views, which the plugin builds from lock-free reads.

use nice_plug::prelude::{Enum, EnumParam, FloatParam};

/// Slots of directions the editor shows.
pub const SLOTS: usize = 8;
/// Decoder steps per second of audio.
pub const STEPS_PER_SECOND: f64 = 50.0;

/// The editor's view of the plugin. Every method is called on the GUI thread and must not
/// block: parameters are atomics, persisted state sits behind locks that nobody holds for
/// long, engine readouts are atomics (see `engine::stream::Monitor`).
pub trait EditorModel: Send + Sync + 'static {
    /// The schedule shape enum of the slots.
    type Shape: Enum + PartialEq + Copy + 'static;

    /// Scales every slot's strength.
    fn master(&self) -> &FloatParam;
    /// Probability that a steer acts on a given step and layer.
    fn gate(&self) -> &FloatParam;
    /// Slot `slot`'s (0-based) automatable strength.
    fn slot_strength(&self, slot: usize) -> &FloatParam;
    /// Slot `slot`'s schedule shape.
    fn slot_shape(&self, slot: usize) -> &EnumParam<Self::Shape>;
    /// Slot `slot`'s schedule length (seconds).
    fn slot_length(&self, slot: usize) -> &FloatParam;
    /// The coefficient the engine applies to slot `slot` at steps `from_step ..` (master ×
    /// strength × shape, as the audio thread computes it), one value per step into `out`.
    fn alpha_preview(&self, slot: usize, from_step: u64, out: &mut [f32]);

    /// The persisted model source (directory or Hugging Face repo id).
    fn model_source(&self) -> String;
    fn set_model_source(&self, source: &str);
    /// Repo ids of the MusicGen models in the local Hugging Face cache.
    fn cached_models(&self) -> Vec<String>;
    /// The persisted text prompt.
    fn prompt(&self) -> String;
    /// Apply a new prompt (the engine takes it at its next step).
    fn set_prompt(&self, prompt: &str);
    /// Slot `slot`'s persisted directions.
    fn slot_directions(&self, slot: usize) -> SlotDirections;
    fn set_slot_directions(&self, slot: usize, directions: SlotDirections);

    /// One line on the engine's state from the plugin; `None` while it is being written.
    fn status_line(&self) -> Option<String>;
    /// The running engine's readout; `None` when no engine runs (not activated).
    fn engine(&self) -> Option<EngineView>;

    /// The persisted editor size (logical points).
    fn editor_size(&self) -> (f32, f32);
    fn set_editor_size(&self, size: (f32, f32));

    /// The standalone app's own transport (`None` inside a host, whose transport rules).
    fn transport(&self) -> Option<TransportView>;
    /// Standalone: start or stop playback.
    fn set_playing(&self, playing: bool);
    /// Standalone: go back to the start of the timeline.
    fn rewind(&self);
}

/// What the editor shows and edits of one slot's persisted directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotDirections {
    /// A directions file ("" = the slot is empty).
    pub file: String,
    /// A class name or 0-based index (unused in MIDI notes mode).
    pub class: String,
    /// MIDI notes mode: the file is a 12-class notes file played from MIDI.
    pub midi: bool,
}

/// The engine's model, as the editor shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelView {
    None,
    Loading(String),
    Loaded {
        name: String,
        d_model: usize,
        blocks: usize,
    },
    /// Being written this instant; show the last known one.
    Busy,
}

/// One slot's live concept meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterView {
    /// Class probabilities, in the directions file's class order.
    pub scores: Vec<f32>,
    /// Publications so far (moves while generating).
    pub updates: u64,
}

/// A snapshot of the running engine, read without locks.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineView {
    pub model: ModelView,
    /// Where it runs, in words ("CPU (burn flex)").
    pub backend: &'static str,
    /// A model is loaded and a stream produces audio.
    pub running: bool,
    /// The next timeline step (50 per second from the origin).
    pub step: u64,
    pub steps_done: u64,
    pub underruns: u64,
    pub slides: u64,
    pub cached_steps: u64,
    /// A prompt applied while playing is being encoded beside the steps; the stream takes it
    /// at the first step after.
    pub prompt_pending: bool,
    /// Steps per second the engine manages at its recent pace (`None` before any step).
    pub steps_per_second: Option<f64>,
    /// Audio waiting for the audio thread, and the ring's size, in seconds.
    pub buffered_seconds: f64,
    pub buffer_capacity_seconds: f64,
    pub latency_seconds: f64,
    pub meters: [Option<MeterView>; SLOTS],
}

impl EngineView {
    /// Generation speed relative to real time (≥ 1 keeps up).
    pub fn real_time_factor(&self) -> Option<f64> {
        self.steps_per_second.map(|r| r / STEPS_PER_SECOND)
    }

    /// The engine runs on the CPU (its backend's words begin with "CPU", as
    /// `engine::stream::monitor::backend` gives them).
    pub fn on_cpu(&self) -> bool {
        self.backend.starts_with("CPU")
    }
}

/// The standalone app's transport.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransportView {
    pub playing: bool,
    /// Seconds from the start of the timeline.
    pub position_seconds: f64,
}
