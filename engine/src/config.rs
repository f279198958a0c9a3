//! Typed `config.json` / `generation_config.json` of a Hugging Face MusicGen checkpoint.
//! Field names are the JSON keys, so serde maps them one to one; keys whose value is one of a
//! few strings are enums with those exact strings, so an unknown value fails while parsing, at
//! its key path. What parses but this port cannot run is rejected by one `validate` per
//! sub-config, naming the key.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::LoadError;
pub use crate::nn::Activation;

/// The T5 text encoder (`text_encoder` in `config.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "default_num_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_t5_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default)]
    pub feed_forward_proj: FeedForwardKind,
}

/// The MusicGen decoder LM (`decoder` in `config.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub ffn_dim: usize,
    pub num_codebooks: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_activation")]
    pub activation_function: Activation,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "default_audio_channels")]
    pub audio_channels: usize,
    #[serde(default)]
    pub cross_attention_hidden_size: Option<usize>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
}

/// The EnCodec audio codec (`audio_encoder` in `config.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct EncodecConfig {
    pub sampling_rate: usize,
    #[serde(default = "default_audio_channels")]
    pub audio_channels: usize,
    pub hidden_size: usize,
    pub num_filters: usize,
    pub num_residual_layers: usize,
    pub upsampling_ratios: Vec<usize>,
    pub norm_type: NormType,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    pub use_causal_conv: bool,
    pub pad_mode: PadMode,
    pub compress: usize,
    pub num_lstm_layers: usize,
    #[serde(default = "default_trim_right_ratio")]
    pub trim_right_ratio: f64,
    pub codebook_size: usize,
    #[serde(default)]
    pub codebook_dim: Option<usize>,
    #[serde(default)]
    pub use_conv_shortcut: bool,
    pub target_bandwidths: Vec<f64>,
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub chunk_length_s: Option<f64>,
}

/// `text_encoder.feed_forward_proj`: how each T5 block's feed-forward is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum FeedForwardKind {
    /// `wo(relu(wi x))`: T5 v1.0 / t5-base.
    #[default]
    #[serde(rename = "relu")]
    Relu,
    /// `wo(gelu_tanh(wi_0 x) · wi_1 x)`: T5 v1.1 / flan-t5.
    #[serde(rename = "gated-gelu")]
    GatedGelu,
    /// `wo(relu(wi_0 x) · wi_1 x)`.
    #[serde(rename = "gated-relu")]
    GatedRelu,
}

/// `audio_encoder.norm_type`. The reference also knows `time_group_norm`, which no MusicGen
/// checkpoint uses; it is rejected while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum NormType {
    /// Every conv's weight stored as `weight_g` (magnitude) and `weight_v` (direction).
    #[serde(rename = "weight_norm")]
    WeightNorm,
}

/// `audio_encoder.pad_mode`: how EnCodec's convolutions fill the samples they add at either end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PadMode {
    /// Mirror the signal around its first / last sample (the 32 kHz model).
    #[serde(rename = "reflect")]
    Reflect,
    /// Zeros.
    #[serde(rename = "constant")]
    Constant,
}

/// The whole `config.json` of `MusicgenForConditionalGeneration`.
#[derive(Debug, Clone, Deserialize)]
pub struct MusicgenConfig {
    pub text_encoder: T5Config,
    pub audio_encoder: EncodecConfig,
    pub decoder: DecoderConfig,
}

/// `generation_config.json`: the checkpoint's sampling defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationConfig {
    #[serde(default)]
    pub do_sample: bool,
    #[serde(default)]
    pub guidance_scale: Option<f64>,
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub decoder_start_token_id: Option<i64>,
}

impl Default for GenerationConfig {
    /// audiocraft's defaults, used when a checkpoint has no generation_config.json.
    fn default() -> Self {
        Self {
            do_sample: true,
            guidance_scale: Some(3.0),
            max_length: Some(1500),
            top_k: Some(250),
            top_p: None,
            temperature: None,
            pad_token_id: None,
            decoder_start_token_id: None,
        }
    }
}

impl EncodecConfig {
    /// Samples per frame (the product of the strides): 640 for the 32 kHz model.
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    pub fn frame_rate(&self) -> usize {
        self.sampling_rate.div_ceil(self.hop_length())
    }

    pub fn codebook_dim(&self) -> usize {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Codebooks used at the checkpoint's largest bandwidth.
    pub fn num_quantizers(&self) -> usize {
        let bits = (self.codebook_size as f64).log2().ceil();
        let bandwidth = self.target_bandwidths.iter().cloned().fold(0.0, f64::max);
        (1000.0 * bandwidth / (self.frame_rate() as f64 * bits)).floor() as usize
    }
}

impl T5Config {
    /// Reject sizes the encoder cannot be built with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_heads == 0 || self.d_kv == 0 || self.num_layers == 0 || self.d_model == 0 {
            return Err(
                "text_encoder.d_model, num_heads, d_kv and num_layers must be positive".into(),
            );
        }
        if self.relative_attention_num_buckets < 4 {
            return Err(format!(
                "text_encoder.relative_attention_num_buckets = {}: at least 4 are needed",
                self.relative_attention_num_buckets
            ));
        }
        Ok(())
    }
}

impl DecoderConfig {
    /// Reject sizes and variants the decoder LM cannot be built with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return Err(
                "decoder.hidden_size, num_attention_heads and num_hidden_layers must be positive"
                    .into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "decoder.hidden_size ({}) is not divisible by decoder.num_attention_heads ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_codebooks == 0 {
            return Err("decoder.num_codebooks must be positive".into());
        }
        if self.audio_channels != 1 {
            return Err(format!(
                "decoder.audio_channels = {}: only mono MusicGen checkpoints are supported",
                self.audio_channels
            ));
        }
        Ok(())
    }
}

impl EncodecConfig {
    /// Reject the EnCodec variants this port does not implement, naming the key, instead of
    /// producing audio that silently differs from the reference.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |message: &str| Err(format!("audio_encoder.{message}"));
        if self.normalize {
            return fail("normalize = true: only MusicGen's unnormalised codec is supported");
        }
        if self.chunk_length_s.is_some() {
            return fail("chunk_length_s is set: chunked encoding is not supported");
        }
        if self.upsampling_ratios.is_empty() || self.upsampling_ratios.contains(&0) {
            return fail("upsampling_ratios must be non-empty and positive");
        }
        if self.compress == 0 || self.num_filters == 0 || self.kernel_size == 0 {
            return fail("compress, num_filters and kernel_size must be positive");
        }
        if self.residual_kernel_size == 0 || self.last_kernel_size == 0 {
            return fail("residual_kernel_size and last_kernel_size must be positive");
        }
        if self.codebook_dim() != self.hidden_size {
            return fail(&format!(
                "codebook_dim = {} differs from hidden_size = {}: the reference has no projection",
                self.codebook_dim(),
                self.hidden_size
            ));
        }
        if !self.use_causal_conv && self.trim_right_ratio != 1.0 {
            return fail("trim_right_ratio != 1.0 only makes sense for causal convolutions");
        }
        Ok(())
    }
}

impl MusicgenConfig {
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let config: Self = read_json(path)?;
        config.validate().map_err(|message| LoadError::Config {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Every sub-config's checks, then the ones across them.
    pub fn validate(&self) -> Result<(), String> {
        self.text_encoder.validate()?;
        self.decoder.validate()?;
        self.audio_encoder.validate()?;
        let (quantizers, codebooks) = (
            self.audio_encoder.num_quantizers(),
            self.decoder.num_codebooks,
        );
        if quantizers < codebooks {
            return Err(format!(
                "audio_encoder gives {quantizers} codebooks at its largest bandwidth, the decoder needs {codebooks}"
            ));
        }
        Ok(())
    }
}

impl GenerationConfig {
    /// Read `generation_config.json`; a missing file gives audiocraft's defaults.
    pub fn from_file_or_default(path: &Path) -> Result<Self, LoadError> {
        if !path.exists() {
            return Ok(Self::default());
        }
        read_json(path)
    }
}

/// Read and parse a JSON file. A value of the wrong type or a missing key is reported with its
/// key path (`decoder.num_codebooks`), a syntax error as malformed JSON; both with the line and
/// column.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|cause| LoadError::Io {
        path: path.to_owned(),
        cause,
    })?;
    parse_json(path, &text)
}

/// [`read_json`] on text already read from `path`.
pub fn parse_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, LoadError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| json_error(path, e.path().to_string(), e.into_inner()))?;
    // Trailing characters after the top-level value, as `serde_json::from_str` rejects them.
    deserializer
        .end()
        .map_err(|e| json_error(path, String::new(), e))?;
    Ok(value)
}

fn json_error(path: &Path, key: String, error: serde_json::Error) -> LoadError {
    let (line, column) = (error.line(), error.column());
    // serde_json's message ends in " at line L column C"; the position is kept as fields.
    let message = error.to_string();
    let message = message
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&message)
        .to_owned();
    let path = path.to_owned();
    match error.classify() {
        serde_json::error::Category::Data => LoadError::ConfigValue {
            path,
            // serde_path_to_error writes the root as "."
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message,
            line,
            column,
        },
        _ => LoadError::Json {
            path,
            message,
            line,
            column,
        },
    }
}

fn default_num_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_t5_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}
fn default_activation() -> Activation {
    Activation::Gelu
}
fn default_audio_channels() -> usize {
    1
}
fn default_trim_right_ratio() -> f64 {
    1.0
}
