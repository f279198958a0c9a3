//! One continuous stream: a generation stepped one control at a time, its completed frames
//! decoded by the streaming EnCodec decoder and resampled to the host rate. Past the window the
//! generation is replaced by one re-prompted with the last `reprompt_frames` frames
//! (audiocraft's `extend_stride`, `audiocraft/models/genmodel.py`) on the same global clock,
//! while the codec stream and the resampler go on unbroken.
//!
//! Owned by the engine thread (and usable offline: the same steps, no thread).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::encodec::StreamingDecoder;
use crate::generate::{Codes, GenerateError, Generation, GenerationOptions, StepOutput};
use crate::model::{MusicGen, TextCondition};
use crate::profile::{Phase, timed};

use super::resample::StreamResampler;
use super::{GenerationSettings, StreamError};

/// What a session is built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionOptions {
    /// The timeline step the session starts at (its first generation's step 0).
    pub start_step: u64,
    pub settings: GenerationSettings,
    /// Decoder positions per generation.
    pub window: usize,
    /// Frames a slide keeps as the next generation's prefix.
    pub reprompt_frames: usize,
    pub decode_chunk_frames: usize,
    /// Host rate in Hz.
    pub sample_rate: u32,
    /// Steps of headroom in the latency.
    pub cushion_steps: usize,
}

/// Runs a generation's next step with the steering plan of its timeline step (a step of a
/// window's successor runs a few steps after its timeline step, so the plans of recent steps
/// must still be at hand). `fresh`: the step computes a new position of the stream, not a
/// successor's replay of known frames (the concept meters see only fresh steps).
pub trait Stepper {
    fn step(
        &mut self,
        generation: &mut Generation<'_>,
        fresh: bool,
    ) -> Result<StepOutput, GenerateError>;

    /// The window's fresh step and its successor's replay step in one pass through the
    /// weights ([`Generation::step_together`]), each with the plan of its own timeline step:
    /// the same results as `step(window, true)` then `step(successor, false)`.
    fn step_together(
        &mut self,
        window: &mut Generation<'_>,
        successor: &mut Generation<'_>,
    ) -> Result<(StepOutput, StepOutput), GenerateError>;
}

/// Generation steps one [`Session::step`] may run: the timeline step, plus one step of the
/// next window's generation while the window ends, or a second step of the new generation
/// catching up after the swap. No step stalls for a whole re-prefill.
const STEP_BUDGET: usize = 2;

/// Frames of codes a session keeps for [`Session::codes`]: the last hour.
const HISTORY_FRAMES: usize = 50 * 3600;

pub struct Session<'m> {
    model: &'m MusicGen,
    options: SessionOptions,
    prompt: String,
    generation: Generation<'m>,
    /// The global frame of the current generation's frame 0.
    base_frame: u64,
    /// The next window's generation, fed the current one's last frames as they complete.
    successor: Option<Successor<'m>>,
    /// The timeline step the next [`Session::step`] runs.
    next: u64,
    /// The global frames before this one have been decoded (or wait in `undecoded`).
    fed: u64,
    /// The codec and the resampler; `None` only while a step decodes beside its generation
    /// work ([`Session::step`]).
    audio: Option<AudioOut>,
    /// Whether a step's generation work runs beside the codec decoding the frames the previous
    /// step completed ([`super::decodes_beside`]).
    decode_beside: bool,
    /// Set while a step's generation work runs beside the codec: frames completed meanwhile
    /// wait in `undecoded` for the next step.
    deferring: bool,
    /// Completed frames not decoded yet, frame-major.
    undecoded: Vec<u32>,
    /// The frames a step's codec decodes: `undecoded` swapped out, kept with its capacity
    /// so that no step allocates for them.
    decoding: Vec<u32>,
    /// The last [`HISTORY_FRAMES`] frames, frame-major, and the global frame of the first.
    frames: Vec<u32>,
    first_frame: u64,
    slides: usize,
}

/// The streaming codec and the resampler to the host rate, with their scratch.
struct AudioOut {
    decoder: StreamingDecoder,
    resampler: StreamResampler,
    pcm: Vec<f32>,
}

impl AudioOut {
    /// Decode `codes` (whole frames, frame-major) one frame at a time, as they completed: the
    /// codec's runs, and so its output bits, do not depend on how many frames waited. The
    /// audio that became final goes to `out` at the host rate.
    fn decode(&mut self, model: &MusicGen, codes: &[u32], out: &mut Vec<f32>) {
        for frame in codes.chunks_exact(model.config.decoder.num_codebooks) {
            timed(Phase::Codec, || {
                self.decoder
                    .push(&model.audio_encoder, frame, &mut self.pcm);
                self.resampler.process(&self.pcm, out);
            });
            self.pcm.clear();
        }
    }
}

struct Successor<'m> {
    generation: Generation<'m>,
    base_frame: u64,
    /// Its prefix: global frames `base_frame..base_frame + frames`.
    frames: u64,
}

impl<'m> Session<'m> {
    pub fn new(
        model: &'m MusicGen,
        prompt: &str,
        options: SessionOptions,
    ) -> Result<Self, StreamError> {
        let condition = model
            .condition(prompt, options.settings.guidance > 1.0)
            .map_err(|error| prompt_error(prompt, error))?;
        Ok(Self::with_condition(model, prompt, condition, options))
    }

    /// [`Session::new`] with `prompt`'s condition computed ahead: `model.condition(prompt,
    /// options.settings.guidance > 1.0)`.
    pub(crate) fn with_condition(
        model: &'m MusicGen,
        prompt: &str,
        condition: TextCondition,
        options: SessionOptions,
    ) -> Self {
        let generation_options = GenerationOptions {
            steps: None,
            window: options.window,
            guidance: options.settings.guidance,
            sampling: options.settings.sampling,
            seed: options.settings.seed,
        };
        let generation = Generation::with_condition(model, condition, generation_options)
            .starting_at(options.start_step as usize);
        let codec = &model.audio_encoder;
        let model_rate = model.config.audio_encoder.sampling_rate as u32;
        Self {
            model,
            options,
            prompt: prompt.to_owned(),
            generation,
            base_frame: options.start_step,
            successor: None,
            next: options.start_step,
            fed: options.start_step,
            audio: Some(AudioOut {
                decoder: codec.streaming_decoder(options.decode_chunk_frames),
                resampler: StreamResampler::new(model_rate, options.sample_rate),
                pcm: Vec::new(),
            }),
            decode_beside: super::decodes_beside(model),
            deferring: false,
            undecoded: Vec::new(),
            decoding: Vec::new(),
            frames: Vec::new(),
            first_frame: options.start_step,
            slides: 0,
        }
    }

    /// The timeline step the session started at.
    pub fn start_step(&self) -> u64 {
        self.options.start_step
    }

    /// The timeline step the next [`Session::step`] runs.
    pub fn next_step(&self) -> u64 {
        self.next
    }

    /// Host samples between a step's start and its audio: the delay pattern, the codec's
    /// look-ahead, the step a frame waits to be decoded beside the next one (on the CPU) and
    /// the cushion in steps, plus the resampler's delay.
    pub fn latency_samples(&self) -> usize {
        let audio = self.audio.as_ref().expect("no step is running");
        let steps = (self.model.config.decoder.num_codebooks - 1)
            + audio.decoder.lookahead_frames()
            + usize::from(self.decode_beside)
            + self.options.cushion_steps;
        let rate = self.options.sample_rate as usize;
        (steps * rate).div_ceil(50) + audio.resampler.delay_samples()
    }

    pub fn model(&self) -> &'m MusicGen {
        self.model
    }

    /// A window slide is under way: the next window's generation exists, or the new one is
    /// still catching up.
    pub fn sliding(&self) -> bool {
        self.successor.is_some() || (self.generation.global_step() as u64) < self.next
    }

    /// Window slides so far.
    pub fn slides(&self) -> usize {
        self.slides
    }

    /// Condition the steps from the next one on on `prompt`. The deferred generation work (see
    /// [`Session::work`]) is done first, so which steps see the new prompt does not depend on
    /// when the engine found time for it.
    pub fn set_prompt(
        &mut self,
        prompt: &str,
        plans: &mut impl Stepper,
        out: &mut Vec<f32>,
    ) -> Result<(), StreamError> {
        let condition = self
            .model
            .condition(prompt, self.generation.guided())
            .map_err(|error| prompt_error(prompt, error))?;
        self.set_condition(prompt, condition, plans, out)
    }

    /// [`Session::set_prompt`] with `prompt`'s condition computed ahead: `model.condition(prompt,
    /// guidance > 1.0)`.
    pub(crate) fn set_condition(
        &mut self,
        prompt: &str,
        condition: TextCondition,
        plans: &mut impl Stepper,
        out: &mut Vec<f32>,
    ) -> Result<(), StreamError> {
        // Frames the flush completes wait behind those the codec has not decoded yet, in
        // order: the next step decodes them all beside its work, as it would have (the codec
        // does not depend on the prompt, so a prompt change leaves it beside the step).
        let deferring = std::mem::replace(&mut self.deferring, self.decode_beside);
        let flushed = (|| {
            while self.generation_work(plans, out)? {}
            Ok(())
        })();
        self.deferring = deferring;
        flushed?;
        if let Some(next) = &mut self.successor {
            next.generation.set_condition(condition.clone());
        }
        self.generation.set_condition(condition);
        self.prompt = prompt.to_owned();
        Ok(())
    }

    /// Run timeline step [`Session::next_step`]: at most [`STEP_BUDGET`] units of
    /// [`Session::work`], the rest left for when the engine is idle. Audio that became final
    /// is appended to `out` at the host rate.
    ///
    /// On the CPU the codec decodes the frames that earlier work completed on one thread while
    /// this step's generation work starts on the other (`rayon::join`): the decoder's products
    /// wait on memory, and the codec's convolutions fill that time (the step's frame is decoded
    /// beside the next step, one step of latency more). The codec sees the same frames in the
    /// same order either way, so the audio is the same, bit for bit.
    ///
    /// While the window slides, its step and its successor's run together, in one pass through
    /// the weights, when the successor's step was possible before the window's: so a successor
    /// step that only the window's step of this timeline step made possible waits for the next
    /// one, where it has a partner. The successor replays one step later than it could; it
    /// catches up after the swap as before.
    pub fn step(
        &mut self,
        plans: &mut (impl Stepper + Send),
        out: &mut Vec<f32>,
    ) -> Result<(), StreamError> {
        self.next += 1;
        if !self.decode_beside {
            return self.step_work(plans, out);
        }
        let mut codes = std::mem::take(&mut self.decoding);
        std::mem::swap(&mut codes, &mut self.undecoded);
        let mut audio = self.audio.take().expect("one step at a time");
        let model = self.model;
        self.deferring = true;
        // Each side's panic is held until both are done and the codec is back in place.
        let (work, decoded) = rayon::join(
            || catch_unwind(AssertUnwindSafe(|| self.step_work(plans, &mut Vec::new()))),
            || catch_unwind(AssertUnwindSafe(|| audio.decode(model, &codes, out))),
        );
        self.deferring = false;
        self.audio = Some(audio);
        codes.clear();
        self.decoding = codes;
        decoded.unwrap_or_else(|panic| resume_unwind(panic));
        work.unwrap_or_else(|panic| resume_unwind(panic))
    }

    /// [`Session::step`]'s generation work.
    fn step_work(
        &mut self,
        plans: &mut impl Stepper,
        out: &mut Vec<f32>,
    ) -> Result<(), StreamError> {
        if self.work_together(plans, out)? {
            return Ok(());
        }
        for _ in 0..STEP_BUDGET {
            let window_due = (self.generation.global_step() as u64) < self.next;
            if !self.work(plans, out)? {
                break;
            }
            if window_due && self.successor.is_some() {
                break;
            }
        }
        Ok(())
    }

    /// The window's step and its successor's together, if both are due and the window is not
    /// full; whether they ran.
    fn work_together(
        &mut self,
        plans: &mut impl Stepper,
        out: &mut Vec<f32>,
    ) -> Result<bool, StreamError> {
        let window = &mut self.generation;
        let Some(next) = &mut self.successor else {
            return Ok(false);
        };
        let due = (window.global_step() as u64) < self.next
            && window.steps_done() < window.capacity()
            && next.generation.ready()
            && next.generation.global_step() < window.global_step();
        if !due {
            return Ok(false);
        }
        let step = window.global_step() as u64;
        let (done, _) = plans
            .step_together(window, &mut next.generation)
            .map_err(|error| StreamError::Generate { step, error })?;
        if let Some(frame) = done.completed_frame {
            self.completed(frame, out);
        }
        Ok(true)
    }

    /// One generation step of the work the timeline steps so far ask for, each with the plan
    /// of its own timeline step, or the decoding of the frames the last step completed (outside
    /// a step); whether there was any.
    ///
    /// Past the window, the generation is replaced by one that continues its last
    /// `reprompt_frames` complete frames from their own global step (audiocraft's
    /// `extend_stride`). That successor runs its steps alongside the window's last steps, as
    /// each prefix frame completes, and after the swap it catches up the codebook delay: so
    /// no timeline step waits for a whole re-prefill. Results do not depend on when the work
    /// runs: every step's inputs (prefix frames, plan of its timeline step) are fixed.
    pub fn work(
        &mut self,
        plans: &mut impl Stepper,
        out: &mut Vec<f32>,
    ) -> Result<bool, StreamError> {
        if !self.deferring && !self.undecoded.is_empty() {
            let mut codes = std::mem::take(&mut self.undecoded);
            let audio = self.audio.as_mut().expect("one step at a time");
            audio.decode(self.model, &codes, out);
            codes.clear();
            self.undecoded = codes;
            return Ok(true);
        }
        self.generation_work(plans, out)
    }

    /// [`Session::work`] without the codec: one step of a generation's deferred work.
    fn generation_work(
        &mut self,
        plans: &mut impl Stepper,
        out: &mut Vec<f32>,
    ) -> Result<bool, StreamError> {
        if (self.generation.global_step() as u64) < self.next {
            if self.generation.steps_done() >= self.generation.capacity() {
                self.swap()?;
            }
            let step = self.generation.global_step() as u64;
            let done = plans
                .step(&mut self.generation, true)
                .map_err(|error| StreamError::Generate { step, error })?;
            if let Some(frame) = done.completed_frame {
                self.completed(frame, out);
            }
            return Ok(true);
        }
        match &mut self.successor {
            Some(next)
                if next.generation.ready()
                    && next.generation.global_step() < self.generation.global_step() =>
            {
                let step = next.generation.global_step() as u64;
                plans
                    .step(&mut next.generation, false)
                    .map_err(|error| StreamError::Generate { step, error })?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The current generation completed its frame `frame`: decode it if new, hand it to the
    /// successor if it is part of its prefix (creating the successor at its first frame).
    fn completed(&mut self, frame: usize, out: &mut Vec<f32>) {
        let global = self.base_frame + frame as u64;
        let codes = self
            .generation
            .frame(frame)
            .expect("a completed frame has codes");
        if global >= self.fed {
            self.remember(&codes);
            if self.deferring {
                self.undecoded.extend_from_slice(&codes);
            } else {
                let audio = self.audio.as_mut().expect("one step at a time");
                audio.decode(self.model, &codes, out);
            }
            self.fed = global + 1;
        }
        let capacity = self.generation.capacity();
        let k = self.model.config.decoder.num_codebooks;
        // Complete frames when the window is full, and the first of them the next one keeps.
        let complete = (capacity + 1).saturating_sub(k);
        let keep = self.options.reprompt_frames.min(complete);
        let first = complete - keep;
        // Made at frame `first` — or, when the re-prompt is over half the window, at the first
        // frame this window completes as the window, `first` having been among the prefix frames
        // it completed as a successor: then given the frames of its prefix known so far. Its
        // steps' inputs are fixed either way, so its codes do not depend on when it was made.
        if frame >= first && self.successor.is_none() && keep > 0 {
            let mut next = Successor {
                generation: self
                    .generation
                    .successor((self.base_frame + first as u64) as usize, keep),
                base_frame: self.base_frame + first as u64,
                frames: keep as u64,
            };
            for known in first..frame.min(first + keep) {
                let codes = self
                    .generation
                    .frame(known)
                    .expect("an earlier frame is complete");
                next.generation.push_prefix_frame(&codes);
            }
            self.successor = Some(next);
        }
        if let Some(next) = &mut self.successor
            && (next.base_frame..next.base_frame + next.frames).contains(&global)
        {
            next.generation.push_prefix_frame(&codes);
        }
    }

    /// The window is full: its successor takes over (its prefix is complete by now).
    fn swap(&mut self) -> Result<(), StreamError> {
        let next = self.successor.take().ok_or_else(|| {
            StreamError::Config(format!(
                "window {} leaves no frames to re-prompt with",
                self.options.window
            ))
        })?;
        self.generation = next.generation;
        self.base_frame = next.base_frame;
        self.slides += 1;
        Ok(())
    }

    fn remember(&mut self, codes: &[u32]) {
        if self.frames.len() >= 2 * HISTORY_FRAMES * codes.len() {
            self.frames.drain(..HISTORY_FRAMES * codes.len());
            self.first_frame += HISTORY_FRAMES as u64;
        }
        self.frames.extend_from_slice(codes);
    }

    /// The frames decoded so far (the last hour at most), undelayed `[codebooks, frames]`.
    pub fn codes(&self) -> Codes {
        let k = self.model.config.decoder.num_codebooks;
        let frames = self.frames.len() / k;
        let mut data = Vec::with_capacity(self.frames.len());
        for c in 0..k {
            data.extend(self.frames.iter().skip(c).step_by(k).map(|&x| i64::from(x)));
        }
        Codes {
            data,
            codebooks: k,
            frames,
        }
    }

    /// The global frame of [`Session::codes`]' first frame.
    pub fn first_frame(&self) -> u64 {
        self.first_frame
    }
}

/// A prompt that could not be tokenised or encoded.
pub(super) fn prompt_error(prompt: &str, error: crate::LoadError) -> StreamError {
    StreamError::Prompt {
        prompt: prompt.to_owned(),
        error: Box::new(error),
    }
}
