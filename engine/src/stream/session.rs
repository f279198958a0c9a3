//! One continuous stream: a generation stepped one control at a time, its completed frames
//! decoded by the streaming EnCodec decoder and resampled to the host rate. Past the window the
//! generation is replaced by one re-prompted with the last `reprompt_frames` frames
//! (audiocraft's `extend_stride`, `audiocraft/models/genmodel.py`) on the same global clock,
//! while the codec stream and the resampler go on unbroken.
//!
//! Owned by the engine thread (and usable offline: the same steps, no thread).

use crate::encodec::StreamingDecoder;
use crate::generate::{Codes, Generation, GenerationOptions};
use crate::model::MusicGen;
use crate::steering::SteeringPlan;

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

pub struct Session<'m> {
    model: &'m MusicGen,
    options: SessionOptions,
    prompt: String,
    generation: Generation<'m>,
    /// The current generation's frames already decoded (its prefix counts as decoded).
    fed: usize,
    /// The global frame of the current generation's frame 0.
    base_frame: u64,
    decoder: StreamingDecoder,
    resampler: StreamResampler,
    /// Every frame of the stream so far, frame-major.
    frames: Vec<u32>,
    pcm: Vec<f32>,
    slides: usize,
}

impl<'m> Session<'m> {
    pub fn new(
        model: &'m MusicGen,
        prompt: &str,
        options: SessionOptions,
    ) -> Result<Self, StreamError> {
        let generation = new_generation(model, prompt, &options, options.start_step)?;
        let codec = &model.audio_encoder;
        let model_rate = model.config.audio_encoder.sampling_rate as u32;
        Ok(Self {
            model,
            options,
            prompt: prompt.to_owned(),
            generation,
            fed: 0,
            base_frame: options.start_step,
            decoder: codec.streaming_decoder(options.decode_chunk_frames),
            resampler: StreamResampler::new(model_rate, options.sample_rate),
            frames: Vec::new(),
            pcm: Vec::new(),
            slides: 0,
        })
    }

    /// The timeline step the next [`Session::step`] runs.
    pub fn next_step(&self) -> u64 {
        self.generation.global_step() as u64
    }

    /// Host samples between a step's start and its audio: the delay pattern, the codec's
    /// look-ahead and the cushion in steps, plus the resampler's delay.
    pub fn latency_samples(&self) -> usize {
        let steps = (self.model.config.decoder.num_codebooks - 1)
            + self.decoder.lookahead_frames()
            + self.options.cushion_steps;
        let rate = self.options.sample_rate as usize;
        (steps * rate).div_ceil(50) + self.resampler.delay_samples()
    }

    /// Window slides so far.
    pub fn slides(&self) -> usize {
        self.slides
    }

    /// Condition the steps from the next one on on `prompt`.
    pub fn set_prompt(&mut self, prompt: &str) -> Result<(), StreamError> {
        self.generation
            .set_prompt(prompt)
            .map_err(|error| StreamError::Prompt {
                prompt: prompt.to_owned(),
                error: Box::new(error),
            })?;
        self.prompt = prompt.to_owned();
        Ok(())
    }

    /// Run the next timeline step with `plan` (its external values set for this step) and
    /// append the host-rate audio that became final to `out`.
    pub fn step(&mut self, plan: &mut SteeringPlan, out: &mut Vec<f32>) -> Result<(), StreamError> {
        if self.generation.steps_done() >= self.generation.capacity() {
            self.slide(plan)?;
        }
        let step = self.next_step();
        let done = self
            .generation
            .step_steered(plan)
            .map_err(|error| StreamError::Generate { step, error })?;
        if let Some(frame) = done.completed_frame.filter(|&f| f >= self.fed) {
            let codes = self
                .generation
                .frame(frame)
                .expect("a completed frame has codes");
            self.frames.extend_from_slice(&codes);
            self.decoder
                .push(&self.model.audio_encoder, &codes, &mut self.pcm);
            self.resampler.process(&self.pcm, out);
            self.pcm.clear();
            self.fed = frame + 1;
        }
        Ok(())
    }

    /// Replace the full generation by one that continues its last `reprompt_frames` complete
    /// frames, and run its prefix steps, so that its next step is the timeline's next step.
    fn slide(&mut self, plan: &mut SteeringPlan) -> Result<(), StreamError> {
        let complete = self.generation.complete_frames();
        let keep = self.options.reprompt_frames.min(complete);
        let all = self.generation.codes();
        let first = complete - keep;
        let mut data = Vec::with_capacity(all.codebooks * keep);
        for c in 0..all.codebooks {
            data.extend_from_slice(&all.data[c * all.frames + first..c * all.frames + complete]);
        }
        let prefix = Codes {
            data,
            codebooks: all.codebooks,
            frames: keep,
        };
        let next = self.next_step();
        let base_frame = self.base_frame + first as u64;
        let generation = new_generation(self.model, &self.prompt, &self.options, base_frame)?;
        self.generation = generation.with_prefix(prefix);
        self.base_frame = base_frame;
        self.fed = keep;
        while self.next_step() < next {
            let step = self.next_step();
            self.generation
                .step_steered(plan)
                .map_err(|error| StreamError::Generate { step, error })?;
        }
        self.slides += 1;
        Ok(())
    }

    /// Every frame decoded so far, undelayed `[codebooks, frames]`.
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
}

fn new_generation<'m>(
    model: &'m MusicGen,
    prompt: &str,
    options: &SessionOptions,
    clock: u64,
) -> Result<Generation<'m>, StreamError> {
    let generation_options = GenerationOptions {
        steps: None,
        window: options.window,
        guidance: options.settings.guidance,
        sampling: options.settings.sampling,
        seed: options.settings.seed,
    };
    Generation::new(model, prompt, generation_options)
        .map(|g| g.starting_at(clock as usize))
        .map_err(|error| StreamError::Prompt {
            prompt: prompt.to_owned(),
            error: Box::new(error),
        })
}
