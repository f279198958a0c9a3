//! How far a run's logits are from a reference run's: what `cargo xtask bench decode` and the
//! weight-format tests report for each reduced format against f32, over the same positions
//! (teacher-forced along the reference's codes, so that one format's first different pick does
//! not change every later input).

use crate::generate::{Codes, Generation, GenerationOptions};
use crate::model::MusicGen;
use crate::render::RenderError;

/// A run that takes the argmax of its guided logits at every step (greedy), kept step by step:
/// the reference that another model (another weight format) is forced along
/// ([`GreedyRun::forced`]).
#[derive(Debug, Clone)]
pub struct GreedyRun {
    /// Each step's guided logits `[codebooks, vocab]` (steps that sampled nothing left out).
    pub logits: Vec<Vec<f32>>,
    /// Each of those steps' picks, one per codebook.
    pub picks: Vec<Vec<u32>>,
    pub codes: Codes,
    vocab: usize,
}

impl GreedyRun {
    /// `options.steps` greedy steps of `model` (or its window) for `prompt`, through
    /// [`Generation::step_choosing`] (the same steps as [`crate::Sampling::Greedy`]).
    pub fn record(
        model: &MusicGen,
        prompt: &str,
        options: GenerationOptions,
    ) -> Result<Self, RenderError> {
        let vocab = model.config.decoder.vocab_size;
        let mut generation = Generation::new(model, prompt, options)?;
        let (mut logits, mut picks) = (Vec::new(), Vec::new());
        for _ in 0..generation.capacity() {
            generation.step_choosing(&mut |step_logits| {
                logits.push(step_logits.to_vec());
                let codes: Vec<u32> = step_logits
                    .chunks(vocab)
                    .map(crate::sampling::argmax)
                    .collect();
                picks.push(codes.clone());
                codes
            })?;
        }
        Ok(Self {
            logits,
            picks,
            codes: generation.codes(),
            vocab,
        })
    }

    /// `model` run with the same prompt and options, made to pick this run's codes at every
    /// step, its guided logits gathered against this run's: the error of `model` alone (its
    /// weight format, its cache), not of a sequence that one different pick sent elsewhere.
    /// Also the forced run's codes (this run's, unless a step's choice did not take).
    pub fn forced(
        &self,
        model: &MusicGen,
        prompt: &str,
        options: GenerationOptions,
    ) -> Result<(LogitsError, Codes), RenderError> {
        let mut generation = Generation::new(model, prompt, options)?;
        let (mut error, mut step) = (LogitsError::default(), 0);
        for _ in 0..generation.capacity() {
            generation.step_choosing(&mut |logits| {
                // Past this run's steps the choice is empty: `InvalidChoice`, not a panic.
                let Some(reference) = self.logits.get(step) else {
                    return Vec::new();
                };
                error.add(logits, reference, self.vocab);
                step += 1;
                self.picks[step - 1].clone()
            })?;
        }
        Ok((error, generation.codes()))
    }
}

/// The distance of logits from reference logits, gathered row by row (one row: one codebook's
/// `vocab` logits at one position).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitsError {
    /// The largest |logit − reference logit|.
    pub max_abs_err: f32,
    /// The largest |reference logit|, the scale [`LogitsError::relative_max_abs_err`] takes.
    pub max_abs_reference: f32,
    /// Σ (logit − reference logit)² and Σ reference logit², for
    /// [`LogitsError::relative_rms_err`].
    pub sum_sq_err: f64,
    pub sum_sq_reference: f64,
    /// The smallest cosine similarity of a row with its reference row.
    pub min_cosine: f64,
    /// Rows whose largest logit is where the reference row's is.
    pub same_argmax: usize,
    pub rows: usize,
}

impl Default for LogitsError {
    fn default() -> Self {
        Self {
            max_abs_err: 0.0,
            max_abs_reference: 0.0,
            sum_sq_err: 0.0,
            sum_sq_reference: 0.0,
            min_cosine: 1.0,
            same_argmax: 0,
            rows: 0,
        }
    }
}

impl LogitsError {
    /// `got` against `reference`, rows of `vocab` (both of one length, a multiple of it).
    pub fn of(got: &[f32], reference: &[f32], vocab: usize) -> Self {
        let mut error = Self::default();
        error.add(got, reference, vocab);
        error
    }

    /// Gather the rows of `got` against those of `reference`.
    pub fn add(&mut self, got: &[f32], reference: &[f32], vocab: usize) {
        assert_eq!(got.len(), reference.len(), "logits of different lengths");
        for (x, y) in got.chunks(vocab).zip(reference.chunks(vocab)) {
            for (a, b) in x.iter().zip(y) {
                self.max_abs_err = self.max_abs_err.max((a - b).abs());
                self.max_abs_reference = self.max_abs_reference.max(b.abs());
                self.sum_sq_err += (f64::from(*a) - f64::from(*b)).powi(2);
                self.sum_sq_reference += f64::from(*b).powi(2);
            }
            self.min_cosine = self.min_cosine.min(cosine(x, y));
            self.same_argmax +=
                usize::from(crate::sampling::argmax(x) == crate::sampling::argmax(y));
            self.rows += 1;
        }
    }

    /// [`LogitsError::max_abs_err`] ÷ [`LogitsError::max_abs_reference`].
    pub fn relative_max_abs_err(&self) -> f32 {
        self.max_abs_err / self.max_abs_reference
    }

    /// The error's RMS over the reference's, over every logit gathered.
    pub fn relative_rms_err(&self) -> f64 {
        (self.sum_sq_err / self.sum_sq_reference).sqrt()
    }

    /// The fraction of rows whose argmax is the reference's.
    pub fn argmax_agreement(&self) -> f64 {
        self.same_argmax as f64 / self.rows.max(1) as f64
    }
}

/// The cosine similarity of two rows, in f64 (1 for two zero rows).
pub fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
    let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
    let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
    if nx == 0.0 && ny == 0.0 {
        1.0
    } else {
        dot / (nx * ny)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_of_two_rows_is_gathered_row_by_row() {
        let reference = [1.0, 3.0, -2.0, /* row 2 */ 0.0, 0.0, 4.0];
        let got = [1.0, 2.5, -2.0, /* row 2 */ 0.0, 5.0, 4.0];
        let error = LogitsError::of(&got, &reference, 3);
        assert_eq!(error.rows, 2);
        assert_eq!(error.max_abs_err, 5.0);
        assert_eq!(error.max_abs_reference, 4.0);
        assert_eq!(error.relative_max_abs_err(), 1.25);
        assert!((error.relative_rms_err() - (25.25f64 / 30.0).sqrt()).abs() < 1e-12);
        // Row 1 keeps its argmax (index 1), row 2 moves from 2 to 1.
        assert_eq!(error.same_argmax, 1);
        assert_eq!(error.argmax_agreement(), 0.5);
        let row2 = 16.0 / (4.0 * 41f64.sqrt());
        assert!(
            (error.min_cosine - row2).abs() < 1e-12,
            "{}",
            error.min_cosine
        );
        assert_eq!(LogitsError::of(&reference, &reference, 3).max_abs_err, 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
    }
}
