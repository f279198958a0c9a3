//! Typed `config.json` / `generation_config.json` of a Hugging Face MusicGen checkpoint.
//! Field names are the JSON keys, so serde maps them one to one.

use std::path::Path;

use serde::Deserialize;

use crate::error::LoadError;

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
    #[serde(default = "default_ff_proj")]
    pub feed_forward_proj: String,
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
    pub activation_function: String,
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
    pub norm_type: String,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    pub use_causal_conv: bool,
    pub pad_mode: String,
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

/// How the T5 feed-forward block is built, parsed from `feed_forward_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForwardKind {
    /// `relu`: wo(relu(wi x)), T5 v1.0 / t5-base.
    Relu,
    /// `gated-gelu`: wo(gelu_tanh(wi_0 x) · wi_1 x), T5 v1.1 / flan-t5.
    GatedGelu,
    /// `gated-relu`.
    GatedRelu,
}

impl T5Config {
    pub fn feed_forward_kind(&self) -> Option<FeedForwardKind> {
        match self.feed_forward_proj.as_str() {
            "relu" => Some(FeedForwardKind::Relu),
            "gated-gelu" => Some(FeedForwardKind::GatedGelu),
            "gated-relu" => Some(FeedForwardKind::GatedRelu),
            _ => None,
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

impl MusicgenConfig {
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: path.to_owned(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), LoadError> {
        let fail = |message: String| {
            Err(LoadError::Config {
                path: path.to_owned(),
                message,
            })
        };
        let d = &self.decoder;
        if d.hidden_size == 0 || d.num_attention_heads == 0 || d.num_hidden_layers == 0 {
            return fail(
                "decoder.hidden_size, num_attention_heads and num_hidden_layers must be positive"
                    .into(),
            );
        }
        if !d.hidden_size.is_multiple_of(d.num_attention_heads) {
            return fail(format!(
                "decoder.hidden_size ({}) is not divisible by decoder.num_attention_heads ({})",
                d.hidden_size, d.num_attention_heads
            ));
        }
        if d.audio_channels != 1 {
            return fail(format!(
                "decoder.audio_channels = {}: only mono MusicGen checkpoints are supported",
                d.audio_channels
            ));
        }
        if d.activation_function != "gelu" {
            return fail(format!(
                "decoder.activation_function = {:?}: only \"gelu\" is supported",
                d.activation_function
            ));
        }
        let t = &self.text_encoder;
        if t.feed_forward_kind().is_none() {
            return fail(format!(
                "text_encoder.feed_forward_proj = {:?}: expected \"relu\", \"gated-gelu\" or \"gated-relu\"",
                t.feed_forward_proj
            ));
        }
        if t.num_heads == 0 || t.d_kv == 0 || t.num_layers == 0 {
            return fail("text_encoder.num_heads, d_kv and num_layers must be positive".into());
        }
        let a = &self.audio_encoder;
        if a.upsampling_ratios.is_empty() || a.upsampling_ratios.contains(&0) {
            return fail("audio_encoder.upsampling_ratios must be positive".into());
        }
        if a.norm_type != "weight_norm" {
            return fail(format!(
                "audio_encoder.norm_type = {:?}: only \"weight_norm\" is supported",
                a.norm_type
            ));
        }
        if !matches!(a.pad_mode.as_str(), "reflect" | "constant") {
            return fail(format!(
                "audio_encoder.pad_mode = {:?}: expected \"reflect\" or \"constant\"",
                a.pad_mode
            ));
        }
        if a.num_quantizers() < d.num_codebooks {
            return fail(format!(
                "audio_encoder gives {} codebooks at its largest bandwidth, the decoder needs {}",
                a.num_quantizers(),
                d.num_codebooks
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
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: path.to_owned(),
            source,
        })
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
fn default_ff_proj() -> String {
    "relu".to_owned()
}
fn default_max_positions() -> usize {
    2048
}
fn default_activation() -> String {
    "gelu".to_owned()
}
fn default_audio_channels() -> usize {
    1
}
fn default_trim_right_ratio() -> f64 {
    1.0
}
