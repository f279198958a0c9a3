//! A whole MusicGen checkpoint: configs, tokenizer, T5, the text projection, the decoder LM and
//! EnCodec.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::Tokenizer;

use crate::config::{GenerationConfig, MusicgenConfig};
use crate::decoder::{CrossContext, DecoderLm};
use crate::encodec::EncodecModel;
use crate::error::LoadError;
use crate::matvec::WeightFormat;
use crate::nn::Linear;
use crate::t5::T5Encoder;
use crate::weights::Weights;

/// The text condition of one prompt, ready for the decoder's cross-attention.
#[derive(Clone)]
pub struct TextCondition {
    /// Tokenizer ids of the prompt (T5's `</s>` included).
    pub input_ids: Vec<u32>,
    /// `[rows, text_len, d_model]`: the projected, masked T5 states; with classifier-free
    /// guidance row 0 is the prompt and row 1 the unconditional branch (zeros).
    pub encoder_states: Tensor<3>,
    /// `[rows, text_len]`: 1 for tokens; the unconditional row is all 0.
    pub mask: Tensor<2>,
    pub cross: CrossContext,
}

/// How [`MusicGen::load_with`] stores the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The decoder's linear layers (blocks and LM heads), where most of a decode step's bytes
    /// are: f32 by default; bf16, q8 and q4 quantize at load from whatever the checkpoint stores,
    /// on the CPU only. EnCodec's LSTM and transposed convs, which a streamed frame reads whole,
    /// follow in bf16 with a reduced format, the LSTM's recurrence in q8 with q8 and q4
    /// ([`WeightFormat::codec`]); T5, the text projection and the rest of EnCodec stay f32.
    pub weight_format: WeightFormat,
}

/// MusicGen, loaded from a Hugging Face directory.
pub struct MusicGen {
    pub dir: PathBuf,
    pub config: MusicgenConfig,
    pub generation_config: GenerationConfig,
    pub tokenizer: Tokenizer,
    pub text_encoder: T5Encoder,
    /// `enc_to_dec_proj`: present when T5's width differs from the decoder's.
    pub enc_to_dec_proj: Option<Linear>,
    pub decoder: DecoderLm,
    /// EnCodec: codes → waveform (and audio → codes for feature extraction).
    pub audio_encoder: EncodecModel,
    pub device: Device,
}

impl MusicGen {
    /// Load from a model directory (see [`crate::hub::resolve_model`] for repo ids), with
    /// the default [`LoadOptions`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self, LoadError> {
        Self::load_with(dir, device, LoadOptions::default())
    }

    /// [`Self::load`] with explicit options.
    pub fn load_with(dir: &Path, device: &Device, options: LoadOptions) -> Result<Self, LoadError> {
        let config = MusicgenConfig::from_file(&dir.join("config.json"))?;
        let generation_config =
            GenerationConfig::from_file_or_default(&dir.join("generation_config.json"))?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let weights = Weights::open_dir(dir)?;
        Self::from_weights(
            dir,
            config,
            generation_config,
            tokenizer,
            &weights,
            device,
            options,
        )
    }

    pub fn from_weights(
        dir: &Path,
        config: MusicgenConfig,
        generation_config: GenerationConfig,
        tokenizer: Tokenizer,
        weights: &Weights,
        device: &Device,
        options: LoadOptions,
    ) -> Result<Self, LoadError> {
        let text_encoder = T5Encoder::load(weights, "text_encoder", &config.text_encoder, device)?;
        let d_text = config.text_encoder.d_model;
        let d = config.decoder.hidden_size;
        let enc_to_dec_proj = if d_text != d && config.decoder.cross_attention_hidden_size.is_none()
        {
            Some(Linear::load(
                weights,
                "enc_to_dec_proj",
                d_text,
                d,
                true,
                device,
            )?)
        } else {
            None
        };
        let decoder = DecoderLm::load(weights, &config.decoder, device, options.weight_format)?;
        let audio_encoder = EncodecModel::load_with(
            weights,
            "audio_encoder",
            &config.audio_encoder,
            device,
            options.weight_format,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            generation_config,
            tokenizer,
            text_encoder,
            enc_to_dec_proj,
            decoder,
            audio_encoder,
            device: device.clone(),
        })
    }

    /// Tokenizer ids of `prompt`, as `tokenizer(prompt)` gives them in Python.
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>, LoadError> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| LoadError::Tokenizer {
                path: self.dir.join("tokenizer.json"),
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// T5's last hidden state of one prompt, `[1, text_len, d_t5]`.
    pub fn encode_text(&self, input_ids: &[u32]) -> Tensor<3> {
        let n = input_ids.len();
        let ids: Vec<i64> = input_ids.iter().map(|&i| i as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.device);
        let mask = Tensor::<2>::ones([1, n], &self.device);
        self.text_encoder.forward(ids, mask)
    }

    /// The condition for `prompt`: with `guidance` (CFG), a batch of 2 (prompt, unconditional),
    /// built exactly as the reference does (zero states, zero mask, multiplied after the
    /// projection so the projection's bias does not leak into the unconditional row).
    pub fn condition(&self, prompt: &str, guidance: bool) -> Result<TextCondition, LoadError> {
        let input_ids = self.tokenize(prompt)?;
        let n = input_ids.len();
        let t5 = self.encode_text(&input_ids);
        let projected = match &self.enc_to_dec_proj {
            Some(proj) => proj.forward(t5),
            None => t5,
        };
        let mask = Tensor::<2>::ones([1, n], &self.device);
        let (encoder_states, mask) = if guidance {
            let zeros = projected.zeros_like();
            let states = Tensor::cat(vec![projected, zeros], 0);
            let mask = Tensor::cat(vec![mask.clone(), mask.zeros_like()], 0);
            (states, mask)
        } else {
            (projected, mask)
        };
        let rows = encoder_states.dims()[0];
        let encoder_states = encoder_states * mask.clone().reshape([rows, n, 1]);
        let cross = self
            .decoder
            .cross_context(encoder_states.clone(), mask.clone());
        Ok(TextCondition {
            input_ids,
            encoder_states,
            mask,
            cross,
        })
    }
}

pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, LoadError> {
    if !path.is_file() {
        return Err(LoadError::Tokenizer {
            path: path.to_owned(),
            message: "file not found (MusicGen checkpoints ship T5's tokenizer.json)".to_owned(),
        });
    }
    Tokenizer::from_file(path).map_err(|e| LoadError::Tokenizer {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
