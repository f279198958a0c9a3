//! Step-wise generation: one decoder step per call, with the delay pattern and classifier-free
//! guidance exactly as transformers' `MusicgenForConditionalGeneration.generate` does them.
//!
//! Step s feeds the tokens of position s (position 0 is BOS = 2048 in every codebook) and
//! samples position s + 1. Codebook k is delayed by k: it carries frame f at position f + k + 1,
//! so frame f is complete after step f + K − 1 (K = 4 codebooks). Where the pattern has no code
//! (codebook k before step k, and — for a run of known length N — after step N − K + k), the
//! token is the pad id 2048, as the reference masks it.
//!
//! Sampling draws are keyed by (seed, step, codebook) — not a running random stream — so a step
//! samples the same code whoever drives the loop (a render, a stream in chunks of any size).
//! [`Generation::step_steered`] is the one step of every caller: render, evaluation, benchmarks
//! and the streaming engine all go through it.

use burn::tensor::{Int, Tensor, TensorData};

use crate::decoder::{BlockHook, HostStep, KvCache, NoHook};
use crate::error::LoadError;
use crate::model::{MusicGen, TextCondition};
use crate::profile::{Phase, timed};
use crate::sampling::{Rng, Sampler, Sampling};
use crate::steering::SteeringPlan;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenerateError {
    /// Every position of the KV cache is used. An open-ended run holds `window` positions; going
    /// on past it needs the window to slide (re-prompting with the last seconds of codes).
    #[error(
        "step {step}: the KV cache holds {capacity} positions and is full (a run of known length \
         sizes it to its steps; an open-ended run to its window)"
    )]
    WindowFull { step: usize, capacity: usize },
    /// The step would sample a position whose prefix frame has not been pushed yet.
    #[error("step {step}: prefix frame {frame} has not been pushed yet")]
    PrefixPending { step: usize, frame: usize },
    /// [`Generation::step_choosing`]'s choice was not one code per codebook below the
    /// vocabulary size. The step did not advance: the generation is as before the call.
    #[error(
        "step {step}: the chosen codes {codes:?} are not one code per codebook ({codebooks}) \
         below the vocabulary size {vocab}"
    )]
    InvalidChoice {
        step: usize,
        codes: Vec<u32>,
        codebooks: usize,
        vocab: usize,
    },
}

/// What a generation run is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationOptions {
    /// Decoder steps, counted as Hugging Face's `max_new_tokens`. `Some(n)` pads the tail of the
    /// delay pattern as the reference does and sizes the cache to n; `None` runs open-ended with
    /// a cache of `window` positions: steps `0..window` run, the next one returns
    /// [`GenerateError::WindowFull`] (a [`Generation`] does not slide; a caller that goes on
    /// starts a new one re-prompted with the last codes).
    pub steps: Option<usize>,
    /// Positions the KV cache holds when `steps` is `None` (1500 = MusicGen's 30 s).
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

/// Undelayed codes, `[codebooks, frames]` row-major: codebook c of frame f at `c * frames + f`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    pub data: Vec<i64>,
    pub codebooks: usize,
    pub frames: usize,
}

impl Codes {
    pub fn shape(&self) -> [usize; 2] {
        [self.codebooks, self.frames]
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

/// What [`Generation::step_choosing`] calls with a step's guided logits `[codebooks, vocab]`
/// to have the step's codes, one per codebook.
pub type Choose<'a> = dyn FnMut(&[f32]) -> Vec<u32> + 'a;

/// A generation in progress. Owns its cache and condition; holds no global state.
pub struct Generation<'m> {
    model: &'m MusicGen,
    condition: TextCondition,
    cache: KvCache,
    options: GenerationOptions,
    rows: usize,
    codebooks: usize,
    pad: u32,
    capacity: usize,
    sampler: Sampler,
    /// Delayed tokens by position, `codebooks` per position; position 0 is BOS.
    history: Vec<u32>,
    /// Codes a codebook picks from (2048).
    vocab: usize,
    step: usize,
    /// The global step of this generation's step 0: sampling draws and steering are keyed by
    /// the global step, so a stream that restarts a generation mid-timeline (a seek, a window
    /// slide) keeps its clock. 0 unless set with [`Generation::starting_at`].
    clock: usize,
    /// Frames the steps must reproduce instead of sampling (a re-prompt with earlier codes,
    /// audiocraft's continuation).
    prefix: Prefix,
}

/// The frames a generation continues: `planned` of them, the first `data.len() / codebooks`
/// known so far (frame-major), so a successor can start before its last frame exists.
#[derive(Debug, Clone, Default)]
struct Prefix {
    planned: usize,
    data: Vec<u32>,
}

impl<'m> Generation<'m> {
    pub fn new(
        model: &'m MusicGen,
        prompt: &str,
        options: GenerationOptions,
    ) -> Result<Self, LoadError> {
        let condition = model.condition(prompt, options.guidance > 1.0)?;
        Ok(Self::with_condition(model, condition, options))
    }

    /// A generation conditioned on `condition`, which must be `model.condition(prompt,
    /// options.guidance > 1.0)` (computed ahead: `crate::stream`'s prompt conditions).
    pub(crate) fn with_condition(
        model: &'m MusicGen,
        condition: TextCondition,
        options: GenerationOptions,
    ) -> Self {
        let rows = if options.guidance > 1.0 { 2 } else { 1 };
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
        Self {
            model,
            condition,
            cache,
            options,
            rows,
            codebooks,
            pad,
            capacity,
            sampler: Sampler::default(),
            history,
            vocab: model.config.decoder.vocab_size,
            step: 0,
            clock: 0,
            prefix: Prefix::default(),
        }
    }

    /// A generation with this one's prompt condition and options (no T5 run), starting at
    /// global step `clock` and continuing `prefix_frames` frames that are pushed one by one
    /// with [`Generation::push_prefix_frame`] as they become known: a window slide prepared
    /// while the full window still runs.
    pub fn successor(&self, clock: usize, prefix_frames: usize) -> Generation<'m> {
        let mut next = Self::with_condition(self.model, self.condition.clone(), self.options)
            .starting_at(clock);
        next.prefix = Prefix {
            planned: prefix_frames,
            data: Vec::with_capacity(prefix_frames * self.codebooks),
        };
        next
    }

    /// Append the next prefix frame (one code per codebook) of a [`Generation::successor`].
    pub fn push_prefix_frame(&mut self, frame: &[u32]) {
        debug_assert_eq!(frame.len(), self.codebooks);
        if self.prefix_known() < self.prefix.planned {
            self.prefix.data.extend_from_slice(frame);
        }
    }

    fn prefix_known(&self) -> usize {
        self.prefix.data.len() / self.codebooks
    }

    /// Whether the next step has every prefix frame it takes (always, without a prefix).
    pub fn ready(&self) -> bool {
        self.prefix_known() >= (self.step + 1).min(self.prefix.planned)
    }

    /// Put this generation's step 0 at global step `clock` (sampling keys, steering clock).
    pub fn starting_at(mut self, clock: usize) -> Self {
        self.clock = clock;
        self
    }

    /// Continue `prefix` (undelayed codes with this model's codebooks): its frames are taken as
    /// they are, the steps after it sample. The first `prefix.frames` frames of [`Generation::codes`]
    /// are the prefix.
    pub fn with_prefix(mut self, prefix: Codes) -> Self {
        let mut data = Vec::with_capacity(prefix.frames * self.codebooks);
        for f in 0..prefix.frames {
            data.extend((0..self.codebooks).map(|c| prefix.data[c * prefix.frames + f] as u32));
        }
        self.prefix = Prefix {
            planned: prefix.frames,
            data,
        };
        self
    }

    /// The code the prefix fixes for `codebook` at the position `step` samples, if any.
    fn prefix_code(&self, step: usize, codebook: usize) -> Option<u32> {
        let frame = step.checked_sub(codebook)?;
        (frame < self.prefix.planned).then(|| self.prefix.data[frame * self.codebooks + codebook])
    }

    /// The global step the next call to [`Generation::step`] runs.
    pub fn global_step(&self) -> usize {
        self.clock + self.step
    }

    /// Condition the steps from now on on `prompt` (the cache of past positions stays).
    pub fn set_prompt(&mut self, prompt: &str) -> Result<(), LoadError> {
        self.set_condition(self.model.condition(prompt, self.guided())?);
        Ok(())
    }

    /// [`Generation::set_prompt`] with the prompt's condition computed ahead
    /// (`self.model.condition(prompt, self.guided())`).
    pub(crate) fn set_condition(&mut self, condition: TextCondition) {
        self.condition = condition;
    }

    /// Whether the steps run classifier-free guidance (two rows): the condition's second
    /// argument.
    pub(crate) fn guided(&self) -> bool {
        self.rows == 2
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

    /// Whether the next step samples any code: not when the prefix fixes every codebook's
    /// code at its position or the pattern pads it (a continued prefix's steps, all but the
    /// last few of a replayed window's), which then need no logits.
    fn needs_logits(&self) -> bool {
        let s = self.step;
        (0..self.codebooks).any(|c| self.prefix_code(s, c).is_none() && self.in_pattern(s, c))
    }

    /// Whether the pattern has a real code for `codebook` at the position sampled by `step`.
    fn in_pattern(&self, step: usize, codebook: usize) -> bool {
        step >= codebook
            && match self.options.steps {
                Some(n) => step + self.codebooks - 1 < n + codebook,
                None => true,
            }
    }

    /// Positions the cache holds: the number of steps this generation can run.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Run one decoder step with `plan`'s steering at this step (nothing added when it is empty).
    pub fn step_steered(&mut self, plan: &mut SteeringPlan) -> Result<StepOutput, GenerateError> {
        if plan.is_empty() {
            self.step(&mut NoHook)
        } else {
            let step = self.global_step();
            self.step(&mut plan.hook(step))
        }
    }

    /// [`Generation::step_steered`], with `observer` seeing every block's steered output.
    pub fn step_observed(
        &mut self,
        plan: &mut SteeringPlan,
        observer: &mut impl BlockHook,
    ) -> Result<StepOutput, GenerateError> {
        if plan.is_empty() {
            self.step(observer)
        } else {
            let step = self.global_step();
            self.step(&mut (plan.hook(step), observer))
        }
    }

    /// Run one decoder step; `hook` sees every block's output.
    pub fn step(&mut self, hook: &mut impl BlockHook) -> Result<StepOutput, GenerateError> {
        self.step_picking(hook, None)
    }

    /// Run one decoder step whose codes `choose` picks instead of the sampler, from the step's
    /// guided logits `[codebooks, vocab]` (CFG applied as [`Generation::step`] applies it before
    /// sampling; the conditional row's alone without guidance): teacher forcing along another
    /// run's codes, or a likelihood read out along them. `choose` returns one code per codebook;
    /// codes the prefix fixes or the pattern pads are kept as they are, and a step that samples
    /// no code (all of them fixed or padded) computes no logits and does not call `choose`. A
    /// choice that is not one code per codebook below the vocabulary size is
    /// [`GenerateError::InvalidChoice`], the step not taken.
    pub fn step_choosing(&mut self, choose: &mut Choose<'_>) -> Result<StepOutput, GenerateError> {
        self.step_picking(&mut NoHook, Some(choose))
    }

    /// [`Generation::step`], its codes picked by `choose` where given.
    fn step_picking(
        &mut self,
        hook: &mut impl BlockHook,
        choose: Option<&mut Choose<'_>>,
    ) -> Result<StepOutput, GenerateError> {
        let tokens = self.next_tokens()?;
        let written = self.cache.len();
        // On one of rayon's threads, with the others kept awake for a host step
        // (`crate::pool::step`): the step's ~200 parallel products and attentions fork from
        // inside the pool, where a join waits by working, and each is picked up at once.
        let wanted = self.needs_logits();
        let (model, cache, cross) = (self.model, &mut self.cache, &self.condition.cross);
        let logits = crate::pool::step(model.decoder.steps_on_host(), || {
            model
                .decoder
                .try_forward_positions(tokens, cache, Some(cross), hook, wanted)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let picked = match (logits, choose) {
            (None, _) => None,
            (Some(logits), None) => Some(timed(Phase::Sampling, || self.pick_codes(logits))),
            (Some(logits), Some(choose)) => {
                let codes = choose(&self.guided_logits(logits));
                if codes.len() != self.codebooks || codes.iter().any(|&c| c as usize >= self.vocab)
                {
                    // Forget this step's position: the step is not taken.
                    self.cache.truncate(written);
                    return Err(GenerateError::InvalidChoice {
                        step: self.step,
                        codes,
                        codebooks: self.codebooks,
                        vocab: self.vocab,
                    });
                }
                Some(codes)
            }
        };
        Ok(self.finish_step(picked))
    }

    /// This generation's next step and `other`'s in one pass through the decoder's weights
    /// (on the CPU: each weight read once for both, which is most of a step's cost), with the
    /// same results as `self.step(hook 0)` then `other.step(hook 1)`; `hook(i, block, hidden)`
    /// sees generation `i`'s blocks. Elsewhere, or where the two cannot share a step, they run
    /// in turn. Both must be generations of the same model.
    pub fn step_together(
        &mut self,
        other: &mut Generation<'_>,
        hook: &mut (dyn FnMut(usize, usize, Tensor<3>) -> Tensor<3> + Send),
    ) -> Result<(StepOutput, StepOutput), GenerateError> {
        assert!(
            std::ptr::eq(self.model, other.model),
            "step_together: generations of one model"
        );
        let first = self.next_tokens()?;
        let second = other.next_tokens()?;
        let model = self.model;
        let mut steps = [
            HostStep {
                tokens: first,
                logits: self.needs_logits(),
                cache: &mut self.cache,
                cross: Some(&self.condition.cross),
            },
            HostStep {
                tokens: second,
                logits: other.needs_logits(),
                cache: &mut other.cache,
                cross: Some(&other.condition.cross),
            },
        ];
        let together = crate::pool::step(model.decoder.steps_on_host(), || {
            model.decoder.try_forward_cached_together(&mut steps, hook)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        match together {
            Some(logits) => {
                let [first, second]: [Option<Tensor<4>>; 2] = logits
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("one logits tensor per generation"));
                let first = first.map(|l| timed(Phase::Sampling, || self.pick_codes(l)));
                let second = second.map(|l| timed(Phase::Sampling, || other.pick_codes(l)));
                Ok((self.finish_step(first), other.finish_step(second)))
            }
            None => {
                let first = self.step(&mut FnHook {
                    which: 0,
                    hook: &mut *hook,
                })?;
                let second = other.step(&mut FnHook { which: 1, hook })?;
                Ok((first, second))
            }
        }
    }

    /// The next step's input tokens `[rows, codebooks, 1]`, once it may run.
    fn next_tokens(&self) -> Result<Tensor<3, Int>, GenerateError> {
        let s = self.step;
        if s >= self.capacity {
            return Err(GenerateError::WindowFull {
                step: s,
                capacity: self.capacity,
            });
        }
        if !self.ready() {
            return Err(GenerateError::PrefixPending {
                step: s,
                frame: self.prefix_known(),
            });
        }
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
        Ok(Tensor::<3, Int>::from_data(
            TensorData::new(tokens, [self.rows, k, 1]),
            device,
        ))
    }

    /// Take the step's codes (`picked`: sampled or chosen from its logits, one per codebook)
    /// and advance. Without logits ([`Self::needs_logits`] false) no codebook samples: each code
    /// is the prefix's or the pattern's padding. Every draw is keyed by its step and codebook,
    /// so skipping one changes no other.
    fn finish_step(&mut self, picked: Option<Vec<u32>>) -> StepOutput {
        let (s, k) = (self.step, self.codebooks);
        for codebook in 0..k {
            let code = match self.prefix_code(s, codebook) {
                Some(forced) => forced,
                None if self.in_pattern(s, codebook) => picked
                    .as_ref()
                    .expect("a step with a code to sample has its logits")[codebook],
                None => self.pad,
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

    /// A step's logits `[rows, codebooks, 1, vocab]` as [`Self::pick_codes`] guides them,
    /// `[codebooks, vocab]`.
    fn guided_logits(&self, logits: Tensor<4>) -> Vec<f32> {
        let mut logits: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 logits");
        let (k, vocab, g) = (self.codebooks, self.vocab, self.options.guidance);
        if self.rows == 2 {
            let (cond, uncond) = logits.split_at_mut(k * vocab);
            for (c, u) in cond.iter_mut().zip(&*uncond) {
                *c = u + (*c - u) * g;
            }
        }
        logits.truncate(k * vocab);
        logits
    }

    /// One code per codebook from a step's logits `[rows, codebooks, 1, vocab]`: guided (CFG)
    /// when there are two rows ([`Self::guided_logits`]), then sampled with the step's keyed
    /// draws.
    fn pick_codes(&mut self, logits: Tensor<4>) -> Vec<u32> {
        let (k, s, vocab) = (self.codebooks, self.step, self.vocab);
        let guided = self.guided_logits(logits);
        (0..k)
            .map(|codebook| {
                let key = (self.clock + s) as u64;
                let mut rng = Rng::keyed(self.options.seed, &[key, codebook as u64]);
                let row = &guided[codebook * vocab..][..vocab];
                self.sampler.pick(row, self.options.sampling, &mut rng)
            })
            .collect()
    }

    /// The codes of frame `f` (undelayed, one per codebook), if complete.
    pub fn frame(&self, f: usize) -> Option<Vec<u32>> {
        (f < self.complete_frames()).then(|| {
            (0..self.codebooks)
                .map(|c| self.history[(f + c + 1) * self.codebooks + c])
                .collect()
        })
    }

    /// All complete frames, undelayed: the matrix EnCodec decodes.
    pub fn codes(&self) -> Codes {
        let frames = self.complete_frames();
        let mut data = Vec::with_capacity(self.codebooks * frames);
        for c in 0..self.codebooks {
            for f in 0..frames {
                data.push(self.history[(f + c + 1) * self.codebooks + c] as i64);
            }
        }
        Codes {
            data,
            codebooks: self.codebooks,
            frames,
        }
    }

    /// The prompt's token ids.
    pub fn input_ids(&self) -> &[u32] {
        &self.condition.input_ids
    }
}

/// Generation `which`'s share of a [`Generation::step_together`] hook, as a block hook.
struct FnHook<'h> {
    which: usize,
    hook: &'h mut (dyn FnMut(usize, usize, Tensor<3>) -> Tensor<3> + Send),
}

impl BlockHook for FnHook<'_> {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        (self.hook)(self.which, block, hidden)
    }
}
