//! The plugin's parameters and persisted state. Parameter ids are frozen: hosts store automation
//! and presets by these strings, so renaming one breaks every saved project.
//!
//! Parameters (all read by the audio thread at each step start, or by the engine link thread):
//! `slot{k}-strength`, `slot{k}-shape`, `slot{k}-length` for k = 1..8; `master`, `layers`,
//! `layers-value`, `gate`, `guidance`, `temperature`, `top-k`, `seed`, `clock`, `cushion`,
//! `context`, `weights`, and the hidden read-only `engine` (the engine's counters as its text).
//! Persisted state (`#[persist]`, never touched by the audio thread): `model`, `prompt`, `slots`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

use engine::matvec::WeightFormat;
use engine::steering::{LayerWeights, Schedule};
use nice_plug::prelude::*;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// The prompt a fresh instance starts with.
pub const DEFAULT_PROMPT: &str = "";
/// Slots of directions (the engine's [`engine::stream::SLOTS`]).
pub const SLOTS: usize = engine::stream::SLOTS;
/// Decoder steps per second.
pub const STEPS_PER_SECOND: f64 = 50.0;

/// The shape of a slot's strength over time, on the step clock from the timeline origin.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    #[id = "const"]
    #[name = "Constant"]
    Const,
    /// 0 → 1 over the length.
    #[id = "rise"]
    #[name = "Rise"]
    Rise,
    /// 1 → 0 over the length.
    #[id = "decay"]
    #[name = "Decay"]
    Decay,
    /// Halves every length.
    #[id = "exp"]
    #[name = "Exponential"]
    Exp,
    /// Logistic rise centred at half the length, slope 10 / length.
    #[id = "logistic"]
    #[name = "Logistic"]
    Logistic,
    /// (1 + sin) / 2 with period = length.
    #[id = "sine"]
    #[name = "Sine"]
    Sine,
}

impl Shape {
    /// The engine schedule this shape is, for a length in seconds: the same schedule
    /// `render --steer FILE:CLASS=η@SCHEDULE` takes (see [`Shape::cli`]).
    pub fn schedule(self, length_seconds: f32) -> Schedule {
        let steps = (length_seconds as f64 * STEPS_PER_SECOND).round().max(1.0);
        match self {
            Shape::Const => Schedule::Constant,
            Shape::Rise => Schedule::LinearRise {
                t0: 0,
                t1: steps as usize,
            },
            Shape::Decay => Schedule::LinearDecay {
                steps: steps as usize,
            },
            Shape::Exp => Schedule::ExpDecay {
                rate: 0.5f64.powf(1.0 / steps),
            },
            Shape::Logistic => Schedule::LogisticRise {
                mid: steps / 2.0,
                k: 10.0 / steps,
            },
            Shape::Sine => Schedule::Sine { period: steps },
        }
    }
}

/// How the steered layers are weighted.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayersMode {
    /// w = s̃^(1/τ), τ = `layers-value` (the paper: 0.95).
    #[id = "power"]
    #[name = "Power"]
    Power,
    /// The K = `layers-value` best layers.
    #[id = "top-k"]
    #[name = "Top K"]
    TopK,
    /// Every layer in the file.
    #[id = "all"]
    #[name = "All"]
    All,
}

/// The weight format of the decoder's linear layers ([`engine::matvec::WeightFormat`]).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// q8 on the CPU (the fastest there, 99 % of greedy codes as f32), f32 on a GPU.
    #[id = "auto"]
    #[name = "Auto"]
    Auto,
    #[id = "f32"]
    #[name = "f32"]
    F32,
    #[id = "bf16"]
    #[name = "bf16"]
    Bf16,
    #[id = "q8"]
    #[name = "q8"]
    Q8,
    /// 4-bit weights: the fewest bytes per step, audibly less faithful (71 % of greedy codes
    /// as f32 on the musicgen-small shape).
    #[id = "q4"]
    #[name = "q4"]
    Q4,
}

impl Weights {
    pub fn format(self) -> WeightFormat {
        match self {
            Weights::Auto if cfg!(feature = "cuda") => WeightFormat::F32,
            Weights::Auto => WeightFormat::Q8,
            Weights::F32 => WeightFormat::F32,
            Weights::Bf16 => WeightFormat::Bf16,
            Weights::Q8 => WeightFormat::Q8,
            Weights::Q4 => WeightFormat::Q4,
        }
    }
}

/// How the engine paces its steps (see [`engine::stream::Clock`]).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    #[id = "timeline"]
    #[name = "Timeline"]
    Timeline,
    #[id = "live"]
    #[name = "Live"]
    Live,
}

/// One slot's parameters.
pub struct SlotParams {
    /// η of the slot's direction. Host automation / GUI write; the audio thread reads per step.
    pub strength: FloatParam,
    pub shape: EnumParam<Shape>,
    /// The shape's length in seconds.
    pub length: FloatParam,
}

impl SlotParams {
    fn new(k: usize) -> Self {
        Self {
            strength: FloatParam::new(
                format!("Slot {k} strength"),
                0.0,
                FloatRange::Linear {
                    min: -2.0,
                    max: 2.0,
                },
            )
            .with_step_size(0.001)
            .with_value_to_string(formatters::v2s_f32_rounded(3)),
            shape: EnumParam::new(format!("Slot {k} shape"), Shape::Const),
            length: FloatParam::new(
                format!("Slot {k} length"),
                8.0,
                FloatRange::Skewed {
                    min: 0.1,
                    max: 120.0,
                    factor: FloatRange::skew_factor(-2.0),
                },
            )
            .with_unit(" s")
            .with_value_to_string(formatters::v2s_f32_rounded(2)),
        }
    }
}

/// The 8 slots, with ids `slot{k}-strength`, `slot{k}-shape`, `slot{k}-length`.
pub struct SlotBank(pub [SlotParams; SLOTS]);

// SAFETY: every pointer points into `self`, which the wrapper keeps alive in an `Arc`.
unsafe impl Params for SlotBank {
    fn param_map(&self) -> Vec<(String, ParamPtr, String)> {
        let mut map = Vec::with_capacity(3 * SLOTS);
        for (i, slot) in self.0.iter().enumerate() {
            let k = i + 1;
            let group = format!("Slot {k}");
            map.push((
                format!("slot{k}-strength"),
                slot.strength.as_ptr(),
                group.clone(),
            ));
            map.push((format!("slot{k}-shape"), slot.shape.as_ptr(), group.clone()));
            map.push((format!("slot{k}-length"), slot.length.as_ptr(), group));
        }
        map
    }
}

/// A slot's directions: persisted, edited by the GUI / host state, read by the engine link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    /// Path of the directions file ("" = the slot is empty).
    pub file: String,
    /// Class name or 0-based index (unused in MIDI notes mode).
    pub class: String,
    /// "MIDI notes" mode: the file is a notes directions file whose class p is driven by the
    /// held MIDI notes of pitch class p (velocity × the slot's strength). One slot at most: the
    /// first one set wins.
    #[serde(default)]
    pub midi: bool,
}

/// The layout of the persisted state this build writes. A state with a larger number comes from
/// a newer musicrfm: it is not applied (an error says so) rather than half-understood.
pub const STATE_FORMAT: u32 = 1;

/// Engine status for the editor: written by the engine link thread, read by the GUI thread.
#[derive(Debug, Default)]
pub struct EngineStatusLine(pub Mutex<String>);

/// The engine's counters as the engine link last read them (every 10 ms): atomics, so any
/// thread reads them without a lock. Hosts read them as the text of the hidden `engine`
/// parameter ([`EngineReport::line`]); `cargo xtask bounce` prints it and the tests count
/// decoder steps with it.
#[derive(Debug, Default)]
pub struct EngineReport {
    /// A model is loaded and a stream is producing audio.
    pub running: AtomicBool,
    /// The engine's next timeline step.
    pub step: AtomicU64,
    /// Decoder steps run since the engine started (every stream, pre-generation included).
    pub decoder_steps: AtomicU64,
    /// Timeline steps replayed from the timeline cache, without decoder steps.
    pub replayed_steps: AtomicU64,
    /// Steps generated ahead by the pre-generation under way while the transport is stopped.
    pub pregenerated_steps: AtomicU64,
    /// Output buffers that found less audio than they needed while playing in real time.
    pub underruns: AtomicU64,
    /// Window slides of the current stream.
    pub slides: AtomicU64,
    /// Host samples from a step's start to its audio (what the plugin reports as latency).
    pub latency_samples: AtomicU64,
    /// Errors reported by the engine since it started.
    pub errors: AtomicU64,
}

impl EngineReport {
    /// `key=value` pairs, one per counter, after the parameter's own value (`report=`, so the
    /// text converts back to the value, as hosts and validators expect of parameter text).
    pub fn line(&self, value: i32) -> String {
        format!(
            "report={value} running={} step={} decoder_steps={} replayed_steps={} pregenerated_steps={} \
             underruns={} slides={} latency_samples={} errors={}",
            self.running.load(Relaxed),
            self.step.load(Relaxed),
            self.decoder_steps.load(Relaxed),
            self.replayed_steps.load(Relaxed),
            self.pregenerated_steps.load(Relaxed),
            self.underruns.load(Relaxed),
            self.slides.load(Relaxed),
            self.latency_samples.load(Relaxed),
            self.errors.load(Relaxed),
        )
    }

    /// The value of `key` in a [`EngineReport::line`].
    pub fn value(line: &str, key: &str) -> Option<u64> {
        line.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
    }
}

#[derive(Params)]
pub struct MusicrfmParams {
    #[nested(group = "Slots")]
    pub slots: SlotBank,

    /// Scales every slot. Audio thread reads per step.
    #[id = "master"]
    pub master: FloatParam,
    /// Layer weighting of every slot; read by the engine link thread (rebuilds the slots).
    #[id = "layers"]
    pub layers: EnumParam<LayersMode>,
    /// τ for `power`, K for `top-k`.
    #[id = "layers-value"]
    pub layers_value: FloatParam,
    /// Bernoulli gate probability per (steer, block, step); engine link thread.
    #[id = "gate"]
    pub gate: FloatParam,
    /// Classifier-free guidance scale; engine link thread (restarts the stream at its step).
    #[id = "guidance"]
    pub guidance: FloatParam,
    /// Sampling temperature; engine link thread.
    #[id = "temperature"]
    pub temperature: FloatParam,
    /// Top-k sampling (0 = all codes); engine link thread.
    #[id = "top-k"]
    pub top_k: IntParam,
    /// Sampling seed; engine link thread.
    #[id = "seed"]
    pub seed: IntParam,
    /// Timeline or live clock; read in `activate()` (the engine is built for it).
    #[id = "clock"]
    pub clock: EnumParam<ClockMode>,
    /// Steps of compute headroom in the latency; read in `activate()`.
    #[id = "cushion"]
    pub cushion: IntParam,
    /// Seconds of music the model attends to: its window, past which it re-prompts with the
    /// last 40 % ([`engine::stream::reprompt_frames_for`]); read in `activate()`. 30 s is what
    /// MusicGen was trained on; a shorter context reads fewer keys and values a step, which keeps
    /// long pieces in real time on a CPU (`cargo xtask stream --window`).
    #[id = "context"]
    pub context: IntParam,
    /// The decoder's weight format; engine link thread (a change reloads the model).
    #[id = "weights"]
    pub weights: EnumParam<Weights>,
    /// Read-only and hidden: its value means nothing, its text is the engine's counters
    /// ([`EngineReport::line`]) for hosts, `cargo xtask bounce` and tests.
    #[id = "engine"]
    pub engine: IntParam,

    /// The model: a directory or a Hugging Face repo id in the local cache ("" = none).
    /// GUI / host state write; the engine link thread reads. Never the audio thread.
    #[persist = "model"]
    pub model: Arc<RwLock<String>>,
    /// The text prompt. GUI / host state write; the engine link thread reads.
    #[persist = "prompt"]
    pub prompt: Arc<RwLock<String>>,
    /// Each slot's directions file and class. GUI / host state write; engine link thread reads.
    #[persist = "slots"]
    pub slot_files: Arc<RwLock<[SlotState; SLOTS]>>,

    /// The state layout ([`STATE_FORMAT`]) of the state last loaded; host state writes, the
    /// engine link thread reads.
    #[persist = "format"]
    pub format: Arc<RwLock<u32>>,

    /// What the engine says (model loaded, errors); engine link thread writes, GUI reads.
    pub status: Arc<EngineStatusLine>,
    /// The engine's counters; engine link thread writes, anyone reads.
    pub report: Arc<EngineReport>,

    /// The editor window's logical size. GUI writes (on resize); read when the editor opens.
    #[persist = "editor-size"]
    pub editor_size: Arc<RwLock<(f32, f32)>>,
    /// The running engine's readout for the editor; main thread writes in `activate()`, GUI
    /// reads. Never the audio thread.
    pub editor_feed: Arc<crate::editor_feed::EditorFeed>,
    /// The standalone app's own play / stop: GUI writes, audio thread applies (atomics).
    pub transport: Arc<crate::standalone::StandaloneTransport>,
}

impl Default for MusicrfmParams {
    fn default() -> Self {
        let report = Arc::new(EngineReport::default());
        Self {
            slots: SlotBank(std::array::from_fn(|i| SlotParams::new(i + 1))),
            master: FloatParam::new("Master", 1.0, FloatRange::Linear { min: 0.0, max: 2.0 })
                .with_step_size(0.001)
                .with_value_to_string(formatters::v2s_f32_rounded(3)),
            layers: EnumParam::new("Layers", LayersMode::Power),
            layers_value: FloatParam::new(
                "Layers value",
                0.95,
                FloatRange::Linear {
                    min: 0.05,
                    max: 48.0,
                },
            )
            .with_step_size(0.01),
            gate: FloatParam::new(
                "Gate",
                engine::steering::DEFAULT_GATE,
                FloatRange::Linear { min: 0.0, max: 1.0 },
            )
            .with_step_size(0.001),
            guidance: FloatParam::new(
                "Guidance",
                3.0,
                FloatRange::Linear {
                    min: 1.0,
                    max: 10.0,
                },
            )
            .with_step_size(0.01),
            temperature: FloatParam::new(
                "Temperature",
                1.0,
                FloatRange::Linear {
                    min: 0.05,
                    max: 2.0,
                },
            )
            .with_step_size(0.01),
            top_k: IntParam::new("Top k", 250, IntRange::Linear { min: 0, max: 2048 }),
            seed: IntParam::new(
                "Seed",
                0,
                IntRange::Linear {
                    min: 0,
                    max: 65_535,
                },
            ),
            clock: EnumParam::new("Clock", ClockMode::Timeline),
            cushion: IntParam::new("Cushion", 2, IntRange::Linear { min: 0, max: 50 })
                .with_unit(" steps"),
            context: IntParam::new("Context", 30, IntRange::Linear { min: 5, max: 30 })
                .with_unit(" s")
                .non_automatable(),
            weights: EnumParam::new("Weights", Weights::Auto).non_automatable(),
            engine: {
                let report = report.clone();
                IntParam::new("Engine report", 0, IntRange::Linear { min: 0, max: 1 })
                    .hide()
                    .non_automatable()
                    .with_value_to_string(Arc::new(move |value| report.line(value)))
                    .with_string_to_value(Arc::new(|text| {
                        EngineReport::value(text, "report").and_then(|v| i32::try_from(v).ok())
                    }))
            },
            model: Arc::new(RwLock::new(String::new())),
            prompt: Arc::new(RwLock::new(DEFAULT_PROMPT.to_owned())),
            slot_files: Arc::new(RwLock::new(Default::default())),
            format: Arc::new(RwLock::new(STATE_FORMAT)),
            status: Arc::new(EngineStatusLine::default()),
            report,
            editor_size: Arc::new(RwLock::new(gui::EDITOR_SIZE)),
            editor_feed: Arc::default(),
            transport: Arc::default(),
        }
    }
}

impl MusicrfmParams {
    /// The layer weights the `layers` and `layers-value` parameters select.
    pub fn layer_weights(&self) -> LayerWeights {
        let value = self.layers_value.value();
        match self.layers.value() {
            LayersMode::Power => LayerWeights::Power {
                beta: 1.0,
                tau: value.clamp(0.05, 1.0),
            },
            LayersMode::TopK => LayerWeights::TopK(value.round().max(1.0) as usize),
            LayersMode::All => LayerWeights::All,
        }
    }
}

impl gui::EditorModel for MusicrfmParams {
    type Shape = Shape;

    fn master(&self) -> &FloatParam {
        &self.master
    }

    fn gate(&self) -> &FloatParam {
        &self.gate
    }

    fn slot_strength(&self, slot: usize) -> &FloatParam {
        &self.slots.0[slot].strength
    }

    fn slot_shape(&self, slot: usize) -> &EnumParam<Shape> {
        &self.slots.0[slot].shape
    }

    fn slot_length(&self, slot: usize) -> &FloatParam {
        &self.slots.0[slot].length
    }

    /// As the audio thread computes each step's control: the engine scales the shaped
    /// strength by master.
    fn alpha_preview(&self, slot: usize, from_step: u64, out: &mut [f32]) {
        let params = &self.slots.0[slot];
        let schedule = params.shape.value().schedule(params.length.value());
        let (master, strength) = (self.master.value(), params.strength.value());
        for (i, alpha) in out.iter_mut().enumerate() {
            *alpha = master * schedule.coefficient(strength, from_step as usize + i, 0.0);
        }
    }

    fn model_source(&self) -> String {
        self.model.read().clone()
    }

    fn set_model_source(&self, source: &str) {
        *self.model.write() = source.to_owned();
    }

    fn cached_models(&self) -> Vec<String> {
        crate::editor_feed::cached_models()
    }

    fn prompt(&self) -> String {
        self.prompt.read().clone()
    }

    fn set_prompt(&self, prompt: &str) {
        *self.prompt.write() = prompt.to_owned();
    }

    fn slot_directions(&self, slot: usize) -> gui::SlotDirections {
        let state = self.slot_files.read()[slot].clone();
        gui::SlotDirections {
            file: state.file,
            class: state.class,
            midi: state.midi,
        }
    }

    fn set_slot_directions(&self, slot: usize, directions: gui::SlotDirections) {
        self.slot_files.write()[slot] = SlotState {
            file: directions.file,
            class: directions.class,
            midi: directions.midi,
        };
    }

    fn status_line(&self) -> Option<String> {
        self.status.0.try_lock().map(|line| line.clone())
    }

    fn engine(&self) -> Option<gui::EngineView> {
        self.editor_feed.view()
    }

    fn editor_size(&self) -> (f32, f32) {
        let (w, h) = *self.editor_size.read();
        (w.max(gui::MIN_SIZE.0), h.max(gui::MIN_SIZE.1))
    }

    fn set_editor_size(&self, size: (f32, f32)) {
        *self.editor_size.write() = size;
    }

    fn transport(&self) -> Option<gui::TransportView> {
        Some(gui::TransportView {
            playing: self.transport.playing(),
            position_seconds: self.transport.position_seconds(),
        })
    }

    fn set_playing(&self, playing: bool) {
        self.transport.set_playing(playing);
    }

    fn rewind(&self) {
        self.transport.rewind();
    }
}
