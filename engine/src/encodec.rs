//! EnCodec, the neural audio codec MusicGen generates tokens for (Défossez et al., "High
//! Fidelity Neural Audio Compression", 2022): a SEANet convolutional encoder with an LSTM
//! bottleneck turns 32 kHz audio into 50 frames per second, a residual vector quantizer turns
//! each frame into one code per codebook, and the mirrored decoder turns summed code
//! embeddings back into audio. Follows transformers' `models/encodec/modeling_encodec.py`
//! (`EncodecModel` without chunking or normalisation, as MusicGen's 32 kHz codec uses it),
//! including its padding rules, so decoded audio matches it sample for sample.

mod conv;
mod lstm;
mod quantizer;
mod rows;
mod seanet;
mod streaming;

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor};

use crate::config::EncodecConfig;
use crate::error::LoadError;
use crate::matvec::WeightFormat;
use crate::weights::Weights;

use quantizer::ResidualVectorQuantizer;
use seanet::{SeanetDecoder, SeanetEncoder};
pub use streaming::StreamingDecoder;

/// The EnCodec codec: keys `{prefix}.encoder.*`, `{prefix}.decoder.*`, `{prefix}.quantizer.*`
/// (`prefix` is `audio_encoder` in a MusicGen checkpoint).
#[derive(Debug)]
pub struct EncodecModel {
    encoder: SeanetEncoder,
    decoder: SeanetDecoder,
    quantizer: ResidualVectorQuantizer,
    hop_length: usize,
    device: Device,
}

impl EncodecModel {
    /// Load the codec from `weights`, checking every tensor's name and shape against `config`;
    /// every weight f32, as stored.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Self::load_with(weights, prefix, config, device, WeightFormat::F32)
    }

    /// [`Self::load`] next to a decoder LM in `decoder_format`: the decoder's LSTM and
    /// transposed convs take [`WeightFormat::codec`] (bf16 with a reduced format, the LSTM's
    /// recurrence q8 with q8 and q4), in the one-shot
    /// decode and the streamed one alike, so the two still agree.
    pub fn load_with(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        device: &Device,
        decoder_format: WeightFormat,
    ) -> Result<Self, LoadError> {
        // Callers may build the config in code; `MusicgenConfig::from_file` ran the same check.
        config.validate().map_err(|message| LoadError::Config {
            path: PathBuf::from("config.json"),
            message,
        })?;
        let edge = config.pad_mode;
        let encoder =
            SeanetEncoder::load(weights, &format!("{prefix}.encoder"), config, edge, device)?;
        let decoder = SeanetDecoder::load(
            weights,
            &format!("{prefix}.decoder"),
            config,
            edge,
            device,
            decoder_format.codec(),
        )?;
        let quantizer = ResidualVectorQuantizer::load(
            weights,
            &format!("{prefix}.quantizer"),
            config.num_quantizers(),
            config.codebook_size,
            config.codebook_dim(),
            device,
        )?;
        Ok(Self {
            encoder,
            decoder,
            quantizer,
            hop_length: config.hop_length(),
            device: device.clone(),
        })
    }

    /// Codebooks per frame at the checkpoint's largest bandwidth (4 for MusicGen).
    pub fn num_quantizers(&self) -> usize {
        self.quantizer.num_quantizers()
    }

    /// Codes per codebook (2048).
    pub fn codebook_size(&self) -> usize {
        self.quantizer.codebook_size()
    }

    /// The device the codec's weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Samples per frame (640 at 32 kHz).
    pub fn hop_length(&self) -> usize {
        self.hop_length
    }

    /// Audio to codes at the largest bandwidth. A signal that is not a whole number of frames
    /// is padded on the right, as the reference does, so it gives `ceil(samples / hop_length)`
    /// frames.
    ///
    /// # Shapes
    /// - `audio`: `[batch, audio_channels, samples]`
    /// - returns `[batch, num_quantizers, ceil(samples / hop_length)]`
    pub fn encode(&self, audio: Tensor<3>) -> Tensor<3, Int> {
        self.quantizer.encode(self.encoder.forward(audio))
    }

    /// Codes to audio: the code embeddings of the first `n_q` codebooks are summed and decoded.
    ///
    /// # Shapes
    /// - `codes`: `[batch, n_q, frames]` with `n_q ≤ num_quantizers`
    /// - returns `[batch, audio_channels, frames · hop_length]`
    ///
    /// # Panics
    /// If `n_q > num_quantizers`, or a code is negative or not below `codebook_size` (2048):
    /// codes come from the decoder LM, whose heads cannot produce one, or from `encode`.
    pub fn decode(&self, codes: Tensor<3, Int>) -> Tensor<3> {
        // On the CPU, rayon's threads stay awake between the LSTM's 2 × frames recurrent
        // products (`crate::pool::step`).
        let host = crate::nn::is_host(&self.device);
        crate::pool::step(host, || self.decoder.forward(self.quantizer.decode(codes)))
    }
}
