//! The engine link: one thread per instance that owns the engine's command handle and keeps the
//! engine in step with the persisted state (model, prompt, slot files) and the setup parameters
//! (layers, gate, guidance, temperature, top-k, seed). It polls rather than being told, because
//! nice-plug 0.4.2 does not re-activate the plugin after a host loads state (docs/plugin-notes.md).
//!
//! Everything slow happens here or on the engine thread (model and directions loading), never on
//! the audio thread; the audio thread and this one talk through [`LinkShared`]'s atomics only.

use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::matvec::WeightFormat;
use engine::model::LoadOptions;
use engine::sampling::Sampling;
use engine::steering::LayerWeights;
use engine::stream::{EngineHandle, GenerationSettings, ModelSource, SlotDirection};

use crate::audio::StepParams;
use crate::params::{MusicrfmParams, SLOTS, STATE_FORMAT, SlotState};

/// How often the link looks at the state.
const POLL: Duration = Duration::from_millis(10);
/// How long the transport stays stopped, with the parameters unchanged, before the engine
/// pre-generates from where playing would start.
const PREGENERATE_AFTER: Duration = Duration::from_millis(250);
/// How far ahead a pre-generation goes: one minute of music (the timeline cache keeps up to
/// `EngineConfig::timeline_cache_seconds`).
const PREGENERATE_STEPS: u64 = 60 * 50;

/// The transport as the audio thread and the engine link see it ([`LinkShared::transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Transport {
    /// No buffer since activation said whether the host plays.
    Idle = 0,
    Playing = 1,
    Stopped = 2,
    /// Stopped, and the engine link had the engine pre-generate: the engine's stream moved, so
    /// the next start seeks even to the step it was at.
    Pregenerating = 3,
}

/// Between the audio thread and the link thread.
#[derive(Debug)]
pub struct LinkShared {
    /// Bumped by the audio thread when playback starts or jumps somewhere the engine's stream
    /// is not; the link thread answers with a seek to `seek_step`.
    pub seek_requests: AtomicU64,
    /// Written by the audio thread before it bumps `seek_requests`: the step to seek to.
    pub seek_step: AtomicU64,
    /// Written by the link thread: the slot in "MIDI notes" mode (`SLOTS`: none). The audio
    /// thread drives the notes of the control frames from MIDI with that slot's strength.
    pub midi_slot: AtomicUsize,
    /// Written by the link thread: a model is set and no error was reported since the inputs
    /// last changed, so audio will come. The audio thread waits for the engine in an offline
    /// bounce only while this is set.
    pub expect_audio: AtomicBool,
    /// Written by the link thread: an error was reported since the inputs last changed (a model,
    /// directions file or class that failed). The audio thread then outputs silence.
    pub faulted: AtomicBool,
    /// Written by the link thread once it has sent the state it found at start.
    pub settled: AtomicBool,
    /// A [`Transport`]: the audio thread moves it between playing and stopped; the link thread
    /// moves stopped → pre-generating (compare-and-swap, so a start in between is never lost).
    pub transport: AtomicU8,
    /// Written by the audio thread while stopped: the step playing would start at.
    pub parked_step: AtomicU64,
}

impl Default for LinkShared {
    fn default() -> Self {
        Self {
            seek_requests: AtomicU64::new(0),
            seek_step: AtomicU64::new(0),
            midi_slot: AtomicUsize::new(SLOTS),
            expect_audio: AtomicBool::new(false),
            faulted: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            transport: AtomicU8::new(Transport::Idle as u8),
            parked_step: AtomicU64::new(0),
        }
    }
}

/// The running link thread; dropping it stops the thread and with it the engine.
pub struct EngineLink {
    pub shared: Arc<LinkShared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EngineLink {
    pub fn spawn(handle: EngineHandle, params: Arc<MusicrfmParams>) -> std::io::Result<Self> {
        let shared = Arc::new(LinkShared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("musicrfm-link".into())
                .spawn(move || Link::new(handle, params, shared).run(&stop))?
        };
        Ok(Self {
            shared,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        self.stop.store(true, Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the engine was last given.
#[derive(Default)]
struct Applied {
    /// The model source and the weight format it was loaded in.
    model: Option<(String, WeightFormat)>,
    prompt: Option<String>,
    /// The prompt the stream's step 0 uses (what a seek to the origin restarts with).
    prompt_at_origin: Option<String>,
    slots: [Option<Option<SlotDirection>>; SLOTS],
    notes: Option<Option<SlotDirection>>,
    generation: Option<GenerationSettings>,
    seeks: u64,
    /// Bumped whenever a command changed the engine's state (a recording made before no longer
    /// replays).
    version: u64,
}

/// What a pre-generation was made for: where, with which controls, in which engine state.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PregenKey {
    step: u64,
    controls: StepParams,
    midi_slot: usize,
    version: u64,
}

struct Link {
    handle: EngineHandle,
    params: Arc<MusicrfmParams>,
    shared: Arc<LinkShared>,
    applied: Applied,
    /// `Status::errors` when the inputs last changed.
    errors_at_change: u64,
    /// While stopped: the pre-generation key seen last and since when it holds.
    candidate: Option<(PregenKey, Instant)>,
    /// The last pre-generation sent.
    pregenerated: Option<PregenKey>,
}

impl Link {
    fn new(handle: EngineHandle, params: Arc<MusicrfmParams>, shared: Arc<LinkShared>) -> Self {
        let errors_at_change = handle.status().errors;
        Self {
            handle,
            params,
            shared,
            applied: Applied::default(),
            errors_at_change,
            candidate: None,
            pregenerated: None,
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Acquire) {
            // A send fails only when the engine thread has ended; then there is nothing to do.
            if self.sync().is_err() {
                return;
            }
            self.shared.settled.store(true, Release);
            std::thread::sleep(POLL);
        }
    }

    /// Send the engine whatever changed; update the flags and the status line.
    fn sync(&mut self) -> Result<(), engine::stream::StreamError> {
        let format = *self.params.format.read();
        if format > STATE_FORMAT {
            // A newer musicrfm's state: apply none of it, say so, play silence.
            self.shared.faulted.store(true, Release);
            self.shared.expect_audio.store(false, Release);
            let line = format!(
                "Engine error: this project was saved by a newer musicrfm (state format \
                 {format}, this one reads {STATE_FORMAT}); update the plugin. Nothing of it is \
                 played."
            );
            let mut shown = self.params.status.0.lock();
            if *shown != line {
                *shown = line;
            }
            return Ok(());
        }
        let errors_before = self.handle.status().errors;
        let mut changed = false;
        let model = self.params.model.read().clone();
        let weights = self.params.weights.value().format();
        let wanted = (model.clone(), weights);
        if self.applied.model.as_ref() != Some(&wanted) {
            if !model.trim().is_empty() {
                self.handle.load_model_with(
                    ModelSource::Path(model.trim().to_owned()),
                    LoadOptions {
                        weight_format: weights,
                    },
                )?;
            }
            self.applied.model = Some(wanted);
            changed = true;
        }
        let generation = self.generation_settings();
        if self.applied.generation != Some(generation) {
            self.handle.set_generation(generation)?;
            self.applied.generation = Some(generation);
            changed = true;
        }
        let files: [SlotState; SLOTS] = self.params.slot_files.read().clone();
        let layers = self.params.layer_weights();
        let gate = self.params.gate.value();
        // The first slot in MIDI notes mode gives the engine its notes file; it steers no class
        // of its own.
        let midi_slot = files
            .iter()
            .position(|f| f.midi && !f.file.trim().is_empty());
        for (k, state) in files.iter().enumerate() {
            let direction = slot_direction(state, &layers, gate).filter(|_| !state.midi);
            if self.applied.slots[k].as_ref() != Some(&direction) {
                self.handle.set_slot(k, direction.clone())?;
                self.applied.slots[k] = Some(direction);
                changed = true;
            }
        }
        let notes = midi_slot.and_then(|k| slot_direction(&files[k], &layers, gate));
        if self.applied.notes.as_ref() != Some(&notes) {
            self.handle.set_notes(notes.clone())?;
            self.applied.notes = Some(notes);
            changed = true;
        }
        self.shared
            .midi_slot
            .store(midi_slot.unwrap_or(SLOTS), Release);
        let prompt = self.params.prompt.read().clone();
        if self.applied.prompt.as_ref() != Some(&prompt) {
            self.handle.set_prompt(&prompt, 0)?;
            if self.handle.status().step == 0 {
                self.applied.prompt_at_origin = Some(prompt.clone());
            }
            self.applied.prompt = Some(prompt);
            changed = true;
        }
        let seeks = self.shared.seek_requests.load(Acquire);
        if seeks != self.applied.seeks {
            let step = self.shared.seek_step.load(Acquire);
            self.handle.seek(step)?;
            // The prompt map is a timeline: a prompt set mid-stream applies from that step, so
            // the origin gets the current prompt anew.
            if self.applied.prompt_at_origin != self.applied.prompt
                && let Some(prompt) = &self.applied.prompt
            {
                self.handle.set_prompt(prompt, 0)?;
                self.applied.prompt_at_origin = Some(prompt.clone());
            }
            self.applied.seeks = seeks;
        }

        if changed {
            self.applied.version += 1;
        }
        let has_model = !model.trim().is_empty();
        let faulted_before = self.handle.status().errors > self.errors_at_change;
        self.pregenerate(
            has_model && !faulted_before && !changed,
            midi_slot.unwrap_or(SLOTS),
        )?;

        if changed {
            // A round trip: the engine has handled every command above when it answers, so
            // their errors are counted before anyone is told the state is settled.
            self.handle.codes()?;
            self.errors_at_change = errors_before;
        }
        let status = self.handle.status();
        let faulted = status.errors > self.errors_at_change;
        self.report(&status);
        self.shared.faulted.store(faulted, Release);
        self.shared
            .expect_audio
            .store(has_model && !faulted, Release);
        let line = if faulted {
            format!("Engine error: {}", self.handle.last_error())
        } else if !has_model {
            "Engine: no model set.".to_owned()
        } else if status.running {
            format!(
                "Engine: playing step {}, latency {} samples, {} underruns; {} decoder steps, \
                 {} replayed from the cache.",
                status.step,
                status.latency_samples,
                status.underruns,
                status.steps_done,
                status.cached_steps
            )
        } else if let Some(start) = self.pregenerating() {
            format!(
                "Engine: stopped; generated {:.1} s ahead of step {start} (plays at once from \
                 there).",
                status.pregenerated as f64 / 50.0,
            )
        } else {
            format!("Engine: loading {}…", model.trim())
        };
        let mut shown = self.params.status.0.lock();
        if *shown != line {
            *shown = line;
        }
        Ok(())
    }

    /// The pre-generation under way: the transport is stopped and the engine generates ahead
    /// from the returned step.
    fn pregenerating(&self) -> Option<u64> {
        let transport = self.shared.transport.load(Acquire);
        (transport == Transport::Pregenerating as u8).then_some(self.pregenerated?.step)
    }

    /// While the transport is stopped, have the engine generate ahead from where playing would
    /// start, with the parameters as they stand (no MIDI notes held), once they have held for
    /// [`PREGENERATE_AFTER`]: playing from there then replays it from the timeline cache.
    fn pregenerate(
        &mut self,
        ready: bool,
        midi_slot: usize,
    ) -> Result<(), engine::stream::StreamError> {
        let transport = self.shared.transport.load(Acquire);
        let stopped =
            transport == Transport::Stopped as u8 || transport == Transport::Pregenerating as u8;
        if !stopped || !ready {
            self.candidate = None;
            if transport == Transport::Playing as u8 {
                self.pregenerated = None;
            }
            return Ok(());
        }
        let key = PregenKey {
            step: self.shared.parked_step.load(Acquire),
            controls: StepParams::read(&self.params),
            midi_slot,
            version: self.applied.version,
        };
        let since = match self.candidate {
            Some((seen, since)) if seen == key => since,
            _ => {
                self.candidate = Some((key, Instant::now()));
                return Ok(());
            }
        };
        if since.elapsed() < PREGENERATE_AFTER || self.pregenerated == Some(key) {
            return Ok(());
        }
        // Stopped → pre-generating, unless the audio thread started playing meanwhile; a
        // start after this swap sees `Pregenerating` and seeks, and its seek reaches the
        // engine after this command.
        let claimed = transport == Transport::Pregenerating as u8
            || self
                .shared
                .transport
                .compare_exchange(
                    Transport::Stopped as u8,
                    Transport::Pregenerating as u8,
                    AcqRel,
                    Acquire,
                )
                .is_ok();
        if claimed {
            let controls = key.controls;
            self.handle
                .pregenerate(key.step, PREGENERATE_STEPS, move |step| {
                    controls.control(step, midi_slot, [0.0; engine::stream::NOTES])
                })?;
            self.pregenerated = Some(key);
        }
        Ok(())
    }

    /// Publish the engine's counters ([`crate::params::EngineReport`]).
    fn report(&self, status: &engine::stream::Status) {
        let report = &self.params.report;
        report.running.store(status.running, Release);
        report.step.store(status.step, Release);
        report.decoder_steps.store(status.steps_done, Release);
        report.replayed_steps.store(status.cached_steps, Release);
        report.underruns.store(status.underruns, Release);
        report.slides.store(status.slides, Release);
        report
            .latency_samples
            .store(status.latency_samples, Release);
        report.errors.store(status.errors, Release);
        report
            .pregenerated_steps
            .store(status.pregenerated, Release);
    }

    fn generation_settings(&self) -> GenerationSettings {
        let params = &self.params;
        // Top-k 1 is greedy: argmax with ties to the lowest index, as `render --greedy`.
        let top_k = params.top_k.value().max(0) as usize;
        GenerationSettings {
            sampling: if top_k == 1 {
                Sampling::Greedy
            } else {
                Sampling::Sample {
                    temperature: params.temperature.value(),
                    top_k,
                    top_p: 1.0,
                }
            },
            guidance: params.guidance.value(),
            seed: params.seed.value().max(0) as u64,
        }
    }
}

/// The engine's slot setting for a persisted slot ("" file = empty).
fn slot_direction(state: &SlotState, layers: &LayerWeights, gate: f32) -> Option<SlotDirection> {
    let file = state.file.trim();
    (!file.is_empty()).then(|| SlotDirection {
        file: file.into(),
        class: state.class.trim().to_owned(),
        layers: Some(layers.clone()),
        gate,
    })
}

/// Ask for a seek to `step`, from the audio thread (lock- and allocation-free).
pub fn request_seek(shared: &LinkShared, step: u64) {
    shared.seek_step.store(step, Release);
    shared.seek_requests.fetch_add(1, AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::stream::{AudioEndpoint, Engine, EngineConfig};

    /// Polls the link's status line until `done` holds (the link thread works on its own time).
    fn status_until(params: &MusicrfmParams, done: impl Fn(&str) -> bool) -> String {
        for _ in 0..2000 {
            let line = params.status.0.lock().clone();
            if done(&line) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        params.status.0.lock().clone()
    }

    /// A link (and engine) for `params`, its audio endpoint, and the first error line it shows.
    fn first_error(params: &Arc<MusicrfmParams>) -> (EngineLink, AudioEndpoint, String) {
        let (handle, endpoint) = Engine::spawn(EngineConfig::default()).unwrap();
        let link = EngineLink::spawn(handle, params.clone()).unwrap();
        let line = status_until(params, |l| l.starts_with("Engine error"));
        (link, endpoint, line)
    }

    #[test]
    fn a_missing_model_is_an_error_naming_it_and_silences_the_plugin() {
        let params = Arc::new(MusicrfmParams::default());
        *params.model.write() = "/no/such/musicgen-dir".to_owned();
        let (link, _endpoint, line) = first_error(&params);
        assert!(line.contains("/no/such/musicgen-dir"), "{line}");
        assert!(link.shared.faulted.load(Acquire));
        assert!(!link.shared.expect_audio.load(Acquire));
    }

    #[test]
    fn a_state_from_a_newer_format_is_refused_with_an_error() {
        let params = Arc::new(MusicrfmParams::default());
        *params.format.write() = STATE_FORMAT + 1;
        let (link, _endpoint, line) = first_error(&params);
        assert!(line.contains("newer musicrfm"), "{line}");
        assert!(link.shared.faulted.load(Acquire));
    }
}
