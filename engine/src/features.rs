//! The feature-extraction protocol that concept probes are trained on and evaluated with — one
//! implementation, so training (`xtask extract`) and evaluation (`xtask eval-steering`) and the
//! live concept meters read the same features.
//!
//! A clip (mono, any rate) → resampled to the model's rate ([`crate::audio::resample`]) →
//! EnCodec codes → the decoder LM on the *undelayed* codes (all codebooks of frame t at position
//! t, no BOS), without text (cross-attention skipped) unless [`FeatureProtocol::text_conditioned`]
//! (the empty prompt's condition) → every block's output mean-pooled over time (the last one after
//! the final LayerNorm when [`FeatureProtocol::last_block_normed`], MusicRFM's reference layout).

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::audio::{AudioError, read_wav_mono, resample};
use crate::decoder::{CaptureBlocks, CrossContext};
use crate::error::LoadError;
use crate::model::MusicGen;

/// How block features are computed; recorded with the features and the probes trained on them,
/// so evaluation repeats exactly what training did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FeatureProtocol {
    /// Run the decoder with the empty prompt's text condition (cross-attention on).
    pub text_conditioned: bool,
    /// Read the last block after the final LayerNorm, as MusicRFM's reference code does for its
    /// layer −1 (`--layer-protocol reference`); every other block is its raw output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_block_normed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "{first} has {len} samples at {rate} Hz but {other} has {other_len}: clips of one batch must be equally long"
    )]
    UnequalLengths {
        first: String,
        len: usize,
        other: String,
        other_len: usize,
        rate: u32,
    },
    #[error("an empty clip has no features")]
    Empty,
    #[error("reading block features: {0}")]
    Tensor(String),
}

/// What `train-probes` reports of the probe it writes beside a directions file (the `probe`
/// entry of `<stem>.report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// File name of the probe, beside the directions file.
    pub file: String,
    /// The decoder block whose mean-pooled output the probe reads.
    pub block: usize,
    /// `multiclass` or `regression`.
    pub kind: String,
}

/// `<dir>/<stem><suffix>` beside `path` (`<dir>/<stem>.<ext>`): where `train-probes` puts the
/// probe (`.probe.safetensors`) and the report (`.report.json`) of a directions file.
pub fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// Mean-pooled block outputs of clips, per [`FeatureProtocol`].
pub struct BlockFeatures<'m> {
    model: &'m MusicGen,
    protocol: FeatureProtocol,
    /// The empty prompt's `(states, mask)` (one row), when text-conditioned.
    condition: Option<(Tensor<3>, Tensor<2>)>,
}

impl<'m> BlockFeatures<'m> {
    pub fn new(model: &'m MusicGen, protocol: FeatureProtocol) -> Result<Self, LoadError> {
        let condition = if protocol.text_conditioned {
            let c = model.condition("", false)?;
            Some((c.encoder_states, c.mask))
        } else {
            None
        };
        Ok(Self {
            model,
            protocol,
            condition,
        })
    }

    pub fn protocol(&self) -> FeatureProtocol {
        self.protocol
    }

    /// The model's sample rate, which [`Self::pooled`] expects.
    pub fn rate(&self) -> u32 {
        self.model.config.audio_encoder.sampling_rate as u32
    }

    /// Features of WAV files (any rate, resampled): one `files.len() × d_model` row-major matrix
    /// per decoder block. The clips must have equal length after resampling.
    pub fn of_files(&self, files: &[&Path]) -> Result<Vec<Vec<f32>>, FeatureError> {
        let rate = self.rate();
        let audio = files
            .iter()
            .map(|f| {
                let (x, from) = read_wav_mono(f)?;
                Ok(resample(&x, from, rate)?)
            })
            .collect::<Result<Vec<_>, FeatureError>>()?;
        if let Some((i, a)) = audio
            .iter()
            .enumerate()
            .find(|(_, a)| a.len() != audio[0].len())
        {
            return Err(FeatureError::UnequalLengths {
                first: files[0].display().to_string(),
                len: audio[0].len(),
                other: files[i].display().to_string(),
                other_len: a.len(),
                rate,
            });
        }
        self.pooled(&audio)
    }

    /// Features of equally long clips at the model's rate: one `clips.len() × d_model`
    /// row-major matrix per decoder block.
    pub fn pooled(&self, clips: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, FeatureError> {
        let len = clips.first().map_or(0, Vec::len);
        if len == 0 {
            return Err(FeatureError::Empty);
        }
        if let Some((i, c)) = clips.iter().enumerate().find(|(_, c)| c.len() != len) {
            return Err(FeatureError::UnequalLengths {
                first: "clip 0".to_owned(),
                len,
                other: format!("clip {i}"),
                other_len: c.len(),
                rate: self.rate(),
            });
        }
        let model = self.model;
        let b = clips.len();
        let device = &model.device;
        let wave = Tensor::<3>::from_data(TensorData::new(clips.concat(), [b, 1, len]), device);
        let codes = model.audio_encoder.encode(wave);
        let [_, _, frames] = codes.dims();
        let codes = codes.slice([0..b, 0..model.config.decoder.num_codebooks, 0..frames]);
        let context: Option<CrossContext> = self.condition.as_ref().map(|(states, mask)| {
            model.decoder.cross_context(
                states.clone().repeat_dim(0, b),
                mask.clone().repeat_dim(0, b),
            )
        });
        let mut capture = CaptureBlocks::default();
        model.decoder.hidden(codes, context.as_ref(), &mut capture);
        if self.protocol.last_block_normed
            && let Some(last) = capture.outputs.pop()
        {
            capture.outputs.push(model.decoder.final_norm(last));
        }
        capture
            .outputs
            .into_iter()
            .map(|h| {
                h.mean_dim(1)
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| FeatureError::Tensor(format!("{e:?}")))
            })
            .collect()
    }
}
