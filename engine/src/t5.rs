//! The T5 text encoder MusicGen conditions on (t5-base for musicgen-small/medium/large).
//!
//! Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
//! Transformer" (2020). Follows transformers' `models/t5/modeling_t5.py` (`T5EncoderModel`):
//! pre-norm blocks with RMS norm, unscaled dot-product attention, a bucketed relative-position
//! bias computed by the first block and shared by all, and the feed-forward variant the config
//! names (`relu` for t5-base, `gated-gelu` for T5 v1.1).

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{FeedForwardKind, T5Config};
use crate::error::LoadError;
use crate::nn::{Activation, Linear, RmsNorm, attention, merge_heads, split_heads};
use crate::weights::Weights;

struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

/// `wo(act(wi x))`, or gated `wo(act(wi_0 x) · wi_1 x)` when `linear` (wi_1) is present.
struct FeedForward {
    /// `wi`, or `wi_0` in the gated variant.
    wi: Linear,
    /// `wi_1`: the gated variant's linear branch.
    linear: Option<Linear>,
    wo: Linear,
    act: Activation,
}

struct Block {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

/// `T5EncoderModel` as MusicGen stores it under `text_encoder.`.
pub struct T5Encoder {
    embed: Tensor<2>,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    /// `[num_buckets, heads]`, owned by block 0 in the checkpoint.
    relative_attention_bias: Tensor<2>,
    config: T5Config,
    device: Device,
}

impl T5Encoder {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let d = config.d_model;
        let inner = config.num_heads * config.d_kv;
        let eps = config.layer_norm_epsilon;
        // `encoder.embed_tokens` is tied to `shared`; hub files store only one of them.
        let shared = format!("{prefix}.shared.weight");
        let embed_key = if weights.contains(&shared) {
            shared
        } else {
            format!("{prefix}.encoder.embed_tokens.weight")
        };
        let embed = weights.tensor(&embed_key, [config.vocab_size, d], device)?;
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("{prefix}.encoder.block.{i}.layer");
            let lin = |name: &str, d_in, d_out| {
                Linear::load(weights, &format!("{p}.{name}"), d_in, d_out, false, device)
            };
            let attn = SelfAttention {
                q: lin("0.SelfAttention.q", d, inner)?,
                k: lin("0.SelfAttention.k", d, inner)?,
                v: lin("0.SelfAttention.v", d, inner)?,
                o: lin("0.SelfAttention.o", inner, d)?,
                heads: config.num_heads,
            };
            let ff = match config.feed_forward_kind() {
                Some(FeedForwardKind::Relu) | None => FeedForward {
                    wi: lin("1.DenseReluDense.wi", d, config.d_ff)?,
                    linear: None,
                    wo: lin("1.DenseReluDense.wo", config.d_ff, d)?,
                    act: Activation::Relu,
                },
                Some(kind) => FeedForward {
                    wi: lin("1.DenseReluDense.wi_0", d, config.d_ff)?,
                    linear: Some(lin("1.DenseReluDense.wi_1", d, config.d_ff)?),
                    wo: lin("1.DenseReluDense.wo", config.d_ff, d)?,
                    act: if kind == FeedForwardKind::GatedGelu {
                        Activation::GeluTanh
                    } else {
                        Activation::Relu
                    },
                },
            };
            blocks.push(Block {
                attn_norm: RmsNorm::load(
                    weights,
                    &format!("{p}.0.layer_norm.weight"),
                    d,
                    eps,
                    device,
                )?,
                attn,
                ff_norm: RmsNorm::load(
                    weights,
                    &format!("{p}.1.layer_norm.weight"),
                    d,
                    eps,
                    device,
                )?,
                ff,
            });
        }
        let relative_attention_bias = weights.tensor(
            &format!(
                "{prefix}.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            ),
            [config.relative_attention_num_buckets, config.num_heads],
            device,
        )?;
        let final_norm = RmsNorm::load(
            weights,
            &format!("{prefix}.encoder.final_layer_norm.weight"),
            d,
            eps,
            device,
        )?;
        Ok(Self {
            embed,
            blocks,
            final_norm,
            relative_attention_bias,
            config: config.clone(),
            device: device.clone(),
        })
    }

    pub fn d_model(&self) -> usize {
        self.config.d_model
    }

    /// The encoder's last hidden state.
    ///
    /// # Shapes
    /// - `ids: [batch, seq]`, `mask: [batch, seq]` (1 = token, 0 = padding)
    /// - returns `[batch, seq, d_model]`
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [batch, seq] = ids.dims();
        let d = self.config.d_model;
        let mut x = self
            .embed
            .clone()
            .select(0, ids.reshape([batch * seq]))
            .reshape([batch, seq, d]);
        // Padding keys get the most negative f32, as the reference's extended attention mask.
        let mask_bias = (mask.ones_like() - mask)
            .mul_scalar(f32::MIN)
            .reshape([batch, 1, 1, seq]);
        let bias = self.position_bias(seq) + mask_bias;
        for block in &self.blocks {
            let residual = x.clone();
            let h = block.attn_norm.forward(x);
            let h = block.attn.forward(h, bias.clone());
            x = residual + h;

            let residual = x.clone();
            let h = block.ff_norm.forward(x);
            x = residual + block.ff.forward(h);
        }
        self.final_norm.forward(x)
    }

    /// Relative-position bias `[1, heads, seq, seq]` for a bidirectional encoder.
    fn position_bias(&self, seq: usize) -> Tensor<4> {
        let c = &self.config;
        let mut buckets = Vec::with_capacity(seq * seq);
        for query in 0..seq as i64 {
            for key in 0..seq as i64 {
                buckets.push(relative_position_bucket(
                    key - query,
                    c.relative_attention_num_buckets,
                    c.relative_attention_max_distance,
                ));
            }
        }
        let idx = Tensor::<1, Int>::from_data(TensorData::new(buckets, [seq * seq]), &self.device);
        self.relative_attention_bias
            .clone()
            .select(0, idx)
            .reshape([seq, seq, c.num_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }
}

impl SelfAttention {
    /// # Shapes
    /// `x: [batch, seq, d_model]`, `bias: [batch | 1, heads | 1, seq, seq]` → `[batch, seq, d_model]`
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let q = split_heads(self.q.forward(x.clone()), self.heads);
        let k = split_heads(self.k.forward(x.clone()), self.heads);
        let v = split_heads(self.v.forward(x), self.heads);
        // T5 folds 1/sqrt(d_kv) into its initialisation: no scaling here.
        let out = attention(q, k, v, 1.0, Some(bias));
        self.o.forward(merge_heads(out))
    }
}

impl FeedForward {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.act.forward(self.wi.forward(x.clone()));
        let h = match &self.linear {
            Some(linear) => h * linear.forward(x),
            None => h,
        };
        self.wo.forward(h)
    }
}

/// T5's bucketing of `key − query` (bidirectional): exact buckets for small distances,
/// logarithmic ones up to `max_distance`. Computed in f32 as the reference does, so the
/// truncation lands on the same bucket.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> i64 {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if relative > 0 { half } else { 0 };
    let distance = relative.abs();
    let max_exact = half / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let scaled = (distance as f32 / max_exact as f32).ln()
            / (max_distance as f32 / max_exact as f32).ln()
            * (half - max_exact) as f32;
        bucket += (max_exact + scaled as i64).min(half - 1);
    }
    bucket
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    #[test]
    fn buckets_match_t5_tables() {
        // Values from transformers' T5Attention._relative_position_bucket(bidirectional=True,
        // num_buckets=32, max_distance=128).
        let cases = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-7, 7),
            (8, 24),
            (-8, 8),
            (12, 25),
            (-20, 10),
            (64, 30),
            (127, 31),
            (-500, 15),
            (500, 31),
        ];
        for (relative, expected) in cases {
            assert_eq!(
                relative_position_bucket(relative, 32, 128),
                expected,
                "relative position {relative}"
            );
        }
    }
}
