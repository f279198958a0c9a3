//! The one generation path from a prompt to audio: the defaults every front end shares (sampling
//! and guidance from the checkpoint's generation config, lengths in seconds), text → codes with
//! steering ([`generate_codes`]) and codes → audio ([`decode_audio`]). `xtask render`,
//! `eval-steering`, the benchmarks and the tests call these; the streaming engine runs the same
//! step ([`Generation::step_steered`]) one control at a time.

use burn::tensor::{Int, Tensor, TensorData};

use crate::config::GenerationConfig;
use crate::error::LoadError;
use crate::generate::{Codes, GenerateError, Generation, GenerationOptions, StepOutput};
use crate::model::MusicGen;
use crate::sampling::Sampling;
use crate::steering::SteeringPlan;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("EnCodec output: {0}")]
    Decode(String),
}

/// The sampling a user asked for; unset fields fall back to the checkpoint's generation config.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingChoice {
    pub greedy: bool,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub temperature: Option<f32>,
}

impl SamplingChoice {
    /// Greedy when asked, or when nothing is set and the checkpoint does not sample; otherwise
    /// the set values over the checkpoint's (temperature 1, top-k all, top-p 1 when absent).
    pub fn resolve(&self, config: &GenerationConfig) -> Sampling {
        if self.greedy {
            return Sampling::Greedy;
        }
        let set = self.top_k.is_some() || self.top_p.is_some() || self.temperature.is_some();
        if !set && !config.do_sample {
            return Sampling::Greedy;
        }
        Sampling::Sample {
            temperature: self
                .temperature
                .or(config.temperature.map(|t| t as f32))
                .unwrap_or(1.0),
            top_k: self.top_k.or(config.top_k).unwrap_or(0),
            top_p: self.top_p.or(config.top_p.map(|p| p as f32)).unwrap_or(1.0),
        }
    }
}

/// The checkpoint's guidance scale (1 = none when it has none).
pub fn default_guidance(config: &GenerationConfig) -> f32 {
    config.guidance_scale.map(|g| g as f32).unwrap_or(1.0)
}

/// Decoder steps for `seconds` of audio: the frames plus the delay pattern's K − 1 steps.
pub fn steps_for_seconds(seconds: f64, codebooks: usize, frame_rate: usize) -> usize {
    let frames = (seconds * frame_rate as f64).round().max(1.0) as usize;
    frames + codebooks - 1
}

/// Run `options.steps` decoder steps (an open-ended `options` runs its window) for `prompt`
/// with `plan`'s steering; `on_step` sees each step (progress bars, timing).
pub fn generate_codes(
    model: &MusicGen,
    prompt: &str,
    options: GenerationOptions,
    plan: &mut SteeringPlan,
    on_step: impl FnMut(StepOutput),
) -> Result<Codes, RenderError> {
    let steps = options.steps.unwrap_or(options.window).max(1);
    generate_steps(model, prompt, options, steps, plan, on_step)
}

/// Run the first `steps` steps of a generation with `options` (open-ended ones, `steps: None`,
/// stop there without a padded tail, as a stream does) and return its complete frames.
pub fn generate_steps(
    model: &MusicGen,
    prompt: &str,
    options: GenerationOptions,
    steps: usize,
    plan: &mut SteeringPlan,
    mut on_step: impl FnMut(StepOutput),
) -> Result<Codes, RenderError> {
    let mut generation = Generation::new(model, prompt, options)?;
    for _ in 0..steps {
        on_step(generation.step_steered(plan)?);
    }
    Ok(generation.codes())
}

/// EnCodec-decode codes to mono samples at the model's rate.
pub fn decode_audio(model: &MusicGen, codes: &Codes) -> Result<Vec<f32>, RenderError> {
    if codes.frames == 0 {
        return Ok(Vec::new());
    }
    let tensor = Tensor::<3, Int>::from_data(
        TensorData::new(codes.data.clone(), [1, codes.codebooks, codes.frames]),
        &model.device,
    );
    model
        .audio_encoder
        .decode(tensor)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| RenderError::Decode(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_choice_falls_back_to_the_generation_config() {
        let config = GenerationConfig::default();
        assert_eq!(
            SamplingChoice::default().resolve(&config),
            Sampling::MUSICGEN_DEFAULT
        );
        let greedy_config = GenerationConfig {
            do_sample: false,
            ..GenerationConfig::default()
        };
        assert_eq!(
            SamplingChoice::default().resolve(&greedy_config),
            Sampling::Greedy
        );
        let choice = SamplingChoice {
            top_p: Some(0.9),
            ..SamplingChoice::default()
        };
        assert_eq!(
            choice.resolve(&greedy_config),
            Sampling::Sample {
                temperature: 1.0,
                top_k: 250,
                top_p: 0.9
            }
        );
        assert_eq!(default_guidance(&config), 3.0);
        assert_eq!(steps_for_seconds(10.0, 4, 50), 503);
        assert_eq!(steps_for_seconds(0.001, 4, 50), 4);
    }
}
