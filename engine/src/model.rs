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
        let (ids, mask) = self.text_input(input_ids);
        self.text_encoder.forward(ids, mask)
    }

    /// One prompt's ids `[1, n]` and its all-ones mask.
    fn text_input(&self, input_ids: &[u32]) -> (Tensor<2, Int>, Tensor<2>) {
        let n = input_ids.len();
        let ids: Vec<i64> = input_ids.iter().map(|&i| i as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.device);
        (ids, Tensor::<2>::ones([1, n], &self.device))
    }

    /// The condition for `prompt`: with `guidance` (CFG), a batch of 2 (prompt, unconditional),
    /// built exactly as the reference does (zero states, zero mask, multiplied after the
    /// projection so the projection's bias does not leak into the unconditional row).
    pub fn condition(&self, prompt: &str, guidance: bool) -> Result<TextCondition, LoadError> {
        let mut build = self.begin_condition(prompt, guidance)?;
        loop {
            if let Some(condition) = self.advance_condition(&mut build) {
                return Ok(condition);
            }
        }
    }

    /// [`MusicGen::condition`] in pieces, each about one block's work (a T5 block, then the
    /// projection, then one decoder block's cross-attention keys and values), so that a stream
    /// can spread a prompt change over several steps: the prompt tokenised and embedded here.
    pub fn begin_condition(
        &self,
        prompt: &str,
        guidance: bool,
    ) -> Result<ConditionBuild, LoadError> {
        let input_ids = self.tokenize(prompt)?;
        let (ids, mask) = self.text_input(&input_ids);
        let encoding = self.text_encoder.begin(ids, mask);
        Ok(ConditionBuild {
            input_ids,
            guidance,
            stage: Some(BuildStage::Text(encoding)),
        })
    }

    /// The next piece of `build`; the condition once it is complete (`build` is then spent:
    /// advancing it again panics).
    pub fn advance_condition(&self, build: &mut ConditionBuild) -> Option<TextCondition> {
        let stage = build
            .stage
            .take()
            .expect("a condition build advanced past its end");
        let next = match stage {
            BuildStage::Text(mut encoding) => {
                if self.text_encoder.advance(&mut encoding) {
                    BuildStage::Text(encoding)
                } else {
                    let t5 = self.text_encoder.finish(encoding);
                    let (encoder_states, mask) = self.masked_states(t5, build.guidance);
                    let parts = Box::new(self.decoder.begin_cross(&encoder_states, &mask));
                    BuildStage::Cross {
                        encoder_states,
                        mask,
                        parts,
                    }
                }
            }
            BuildStage::Cross {
                encoder_states,
                mask,
                mut parts,
            } => {
                if self.decoder.advance_cross(&mut parts, &encoder_states) {
                    BuildStage::Cross {
                        encoder_states,
                        mask,
                        parts,
                    }
                } else {
                    let cross = self.decoder.finish_cross(*parts, mask.clone());
                    return Some(TextCondition {
                        input_ids: std::mem::take(&mut build.input_ids),
                        encoder_states,
                        mask,
                        cross,
                    });
                }
            }
        };
        build.stage = Some(next);
        None
    }

    /// T5's states projected to the decoder's width, with the unconditional row under
    /// guidance, multiplied by the mask: `[rows, n, d_model]` and the mask `[rows, n]`.
    fn masked_states(&self, t5: Tensor<3>, guidance: bool) -> (Tensor<3>, Tensor<2>) {
        let n = t5.dims()[1];
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
        (encoder_states * mask.clone().reshape([rows, n, 1]), mask)
    }
}

/// The committed fixture model directory `tests/fixtures/<name>`, for unit tests. `cargo test`
/// names the package's directory at run time, which is right even where a test binary built in
/// another clone sharing the target directory is reused (cargo's fingerprints do not see the
/// clone's path, so `env!` can name another clone, or one deleted since); the build's own path
/// otherwise.
#[cfg(test)]
pub(crate) fn fixture_dir(name: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("../tests/fixtures")
        .join(name)
}

/// A committed fixture model ([`fixture_dir`]) loaded with `weight_format`, for unit tests.
#[cfg(test)]
pub(crate) fn fixture_model(name: &str, weight_format: WeightFormat) -> MusicGen {
    let dir = fixture_dir(name);
    let options = LoadOptions { weight_format };
    MusicGen::load_with(&dir, &Device::default(), options).unwrap()
}

/// A prompt's condition under way ([`MusicGen::begin_condition`]).
pub struct ConditionBuild {
    input_ids: Vec<u32>,
    guidance: bool,
    /// `None` once the condition is out.
    stage: Option<BuildStage>,
}

enum BuildStage {
    /// T5's blocks.
    Text(crate::t5::T5Encoding),
    /// The decoder blocks' cross-attention keys and values.
    Cross {
        encoder_states: Tensor<3>,
        mask: Tensor<2>,
        parts: Box<crate::decoder::CrossParts>,
    },
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
