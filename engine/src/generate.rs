//! Step-wise generation: one decoder step per call, with the delay pattern and classifier-free
//! guidance exactly as transformers' `MusicgenForConditionalGeneration.generate` does them.
//!
//! Step s feeds the tokens of position s (position 0 is BOS = 2048 in every codebook) and
//! samples position s + 1. Codebook k is delayed by k: it carries frame f at position f + k + 1,
//! so frame f is complete after step f + K − 1 (K = 4 codebooks). Where the pattern has no code
//! (codebook k before step k, and — for a run of known length N — after step N − K + k), the
//! token is the pad id 2048, as the reference masks it.

use burn::tensor::{Int, Tensor, TensorData};

use crate::decoder::{BlockHook, KvCache};
use crate::error::LoadError;
use crate::model::{MusicGen, TextCondition};
use crate::sampling::{Rng, Sampler, Sampling};

/// What a generation run is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationOptions {
    /// Decoder steps, counted as Hugging Face's `max_new_tokens`. `Some(n)` pads the tail of the
    /// delay pattern as the reference does and sizes the cache to n; `None` runs open-ended
    /// (streaming) with a cache of `window` positions.
    pub steps: Option<usize>,
    /// Positions the KV cache holds when `steps` is `None`.
    pub window: usize,
    /// Classifier-free guidance scale; ≤ 1 runs the conditional branch alone.
    pub guidance: f32,
    pub sampling: Sampling,
    pub seed: u64,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            steps: None,
            window: 1500,
            guidance: 3.0,
            sampling: Sampling::MUSICGEN_DEFAULT,
            seed: 0,
        }
    }
}

/// What one step produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutput {
    /// The step just run (0-based).
    pub step: usize,
    /// A frame completed by this step (all K codebooks known), if any.
    pub completed_frame: Option<usize>,
}

/// A generation in progress. Owns its cache and condition; holds no global state.
pub struct Generation<'m> {
    model: &'m MusicGen,
    condition: TextCondition,
    cache: KvCache,
    options: GenerationOptions,
    rows: usize,
    codebooks: usize,
    pad: u32,
    rng: Rng,
    sampler: Sampler,
    /// Delayed tokens by position, `codebooks` per position; position 0 is BOS.
    history: Vec<u32>,
    /// Host copy of one step's logits `[rows, codebooks, vocab]`, and the guided row.
    guided: Vec<f32>,
    step: usize,
}

impl<'m> Generation<'m> {
    pub fn new(
        model: &'m MusicGen,
        prompt: &str,
        options: GenerationOptions,
    ) -> Result<Self, LoadError> {
        let guided = options.guidance > 1.0;
        let condition = model.condition(prompt, guided)?;
        let rows = if guided { 2 } else { 1 };
        let capacity = options.steps.unwrap_or(options.window).max(1);
        let cache = model.decoder.new_cache(rows, capacity);
        let codebooks = model.config.decoder.num_codebooks;
        let pad = model
            .generation_config
            .pad_token_id
            .or(model.config.decoder.pad_token_id)
            .unwrap_or(model.config.decoder.vocab_size as i64) as u32;
        let mut history = Vec::with_capacity((capacity + 1) * codebooks);
        history.extend(std::iter::repeat_n(pad, codebooks));
        Ok(Self {
            model,
            condition,
            cache,
            options,
            rows,
            codebooks,
            pad,
            rng: Rng::new(options.seed),
            sampler: Sampler::default(),
            history,
            guided: vec![0.0; model.config.decoder.vocab_size],
            step: 0,
        })
    }

    /// Steps run so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Frames whose K codes are all known.
    pub fn complete_frames(&self) -> usize {
        let known = self.step + 1; // positions 0..=step hold tokens
        let frames = known.saturating_sub(self.codebooks);
        match self.options.steps {
            Some(n) => frames.min(n.saturating_sub(self.codebooks - 1)),
            None => frames,
        }
    }

    /// Whether the pattern has a real code for `codebook` at the position sampled by `step`.
    fn in_pattern(&self, step: usize, codebook: usize) -> bool {
        step >= codebook
            && match self.options.steps {
                Some(n) => step + self.codebooks - 1 < n + codebook,
                None => true,
            }
    }

    /// Run one decoder step; `hook` sees every block's output.
    pub fn step(&mut self, hook: &mut impl BlockHook) -> StepOutput {
        let s = self.step;
        let k = self.codebooks;
        let device = &self.model.device;
        let row: Vec<i64> = self.history[s * k..(s + 1) * k]
            .iter()
            .map(|&t| t as i64)
            .collect();
        let mut tokens = Vec::with_capacity(self.rows * k);
        for _ in 0..self.rows {
            tokens.extend_from_slice(&row);
        }
        let tokens =
            Tensor::<3, Int>::from_data(TensorData::new(tokens, [self.rows, k, 1]), device);
        let logits = self.model.decoder.forward_cached(
            tokens,
            &mut self.cache,
            Some(&self.condition.cross),
            hook,
        );
        let logits: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 logits");
        let vocab = self.guided.len();
        let g = self.options.guidance;
        for codebook in 0..k {
            let cond = &logits[codebook * vocab..(codebook + 1) * vocab];
            let code = if self.rows == 2 {
                let uncond = &logits[(k + codebook) * vocab..(k + codebook + 1) * vocab];
                for ((out, c), u) in self.guided.iter_mut().zip(cond).zip(uncond) {
                    *out = u + (c - u) * g;
                }
                self.sampler
                    .pick(&self.guided, self.options.sampling, &mut self.rng)
            } else {
                self.sampler
                    .pick(cond, self.options.sampling, &mut self.rng)
            };
            let code = if self.in_pattern(s, codebook) {
                code
            } else {
                self.pad
            };
            self.history.push(code);
        }
        self.step += 1;
        let completed_frame = (s + 1 >= k)
            .then(|| s + 1 - k)
            .filter(|&f| f < self.complete_frames());
        StepOutput {
            step: s,
            completed_frame,
        }
    }

    /// The codes of frame `f` (undelayed, one per codebook), if complete.
    pub fn frame(&self, f: usize) -> Option<Vec<u32>> {
        (f < self.complete_frames()).then(|| {
            (0..self.codebooks)
                .map(|c| self.history[(f + c + 1) * self.codebooks + c])
                .collect()
        })
    }

    /// All complete frames as the `[codebooks, frames]` matrix EnCodec decodes (row-major).
    pub fn codes(&self) -> (Vec<i64>, [usize; 2]) {
        let frames = self.complete_frames();
        let mut out = Vec::with_capacity(self.codebooks * frames);
        for c in 0..self.codebooks {
            for f in 0..frames {
                out.push(self.history[(f + c + 1) * self.codebooks + c] as i64);
            }
        }
        (out, [self.codebooks, frames])
    }

    /// The prompt's token ids.
    pub fn input_ids(&self) -> &[u32] {
        &self.condition.input_ids
    }
}
