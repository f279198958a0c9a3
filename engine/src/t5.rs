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
use crate::matvec::{Reads, WeightFormat};
use crate::nn::{Activation, Linear, RmsNorm, attention, merge_heads, split_heads};
use crate::weights::Weights;

/// `T5EncoderModel` as MusicGen stores it under `text_encoder.`: the token table `shared` and
/// the stack `encoder`.
pub struct T5Encoder {
    /// `shared.weight` `[vocab, d_model]` (the tied `encoder.embed_tokens.weight` when a
    /// checkpoint stores only that one).
    shared: Tensor<2>,
    encoder: T5Stack,
    config: T5Config,
    device: Device,
}

/// A prompt's encoding under way ([`T5Encoder::begin`]): the hidden state after `blocks`
/// blocks.
pub struct T5Encoding {
    /// `[batch, seq, d_model]`
    x: Tensor<3>,
    /// `[batch, heads, seq, seq]`: relative positions and padding.
    bias: Tensor<4>,
    blocks: usize,
}

/// `encoder.`: `block.{i}` and `final_layer_norm`.
struct T5Stack {
    block: Vec<T5Block>,
    final_layer_norm: RmsNorm,
}

/// `block.{i}.`: HF's `layer` list holds self-attention at `layer.0` and the feed-forward at
/// `layer.1`.
struct T5Block {
    /// `layer.0`
    layer_0: T5LayerSelfAttention,
    /// `layer.1`
    layer_1: T5LayerFf,
}

/// `layer.0.`: `SelfAttention` and its pre-norm `layer_norm`.
struct T5LayerSelfAttention {
    /// `SelfAttention`
    self_attention: T5Attention,
    layer_norm: RmsNorm,
}

/// `SelfAttention.{q,k,v,o}`, and in block 0 `relative_attention_bias`.
struct T5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `relative_attention_bias.weight` `[num_buckets, heads]`: block 0 owns it, every block
    /// uses the bias it computes.
    relative_attention_bias: Option<Tensor<2>>,
    n_heads: usize,
}

/// `layer.1.`: `DenseReluDense` and its pre-norm `layer_norm`.
struct T5LayerFf {
    /// `DenseReluDense`
    dense_relu_dense: DenseReluDense,
    layer_norm: RmsNorm,
}

/// `DenseReluDense.`, in the variant `feed_forward_proj` names.
#[allow(
    clippy::large_enum_variant,
    reason = "one per T5 block, built once; boxing would only add an indirection"
)]
enum DenseReluDense {
    /// `wo(act(wi x))` (HF `T5DenseActDense`).
    Act {
        wi: Linear,
        wo: Linear,
        act: Activation,
    },
    /// `wo(act(wi_0 x) · wi_1 x)` (HF `T5DenseGatedActDense`).
    GatedAct {
        wi_0: Linear,
        wi_1: Linear,
        wo: Linear,
        act: Activation,
    },
}

impl T5Encoder {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        // `encoder.embed_tokens` is tied to `shared`; hub files store only one of them. When
        // neither is there, the error names `shared`.
        let tied_key = format!("{prefix}.encoder.embed_tokens.weight");
        let shared_key = format!("{prefix}.shared.weight");
        let shared_key = if !weights.contains(&shared_key) && weights.contains(&tied_key) {
            tied_key
        } else {
            shared_key
        };
        let shared = weights.tensor(&shared_key, [config.vocab_size, config.d_model], device)?;
        let encoder = T5Stack::load(weights, &format!("{prefix}.encoder"), config, device)?;
        Ok(Self {
            shared,
            encoder,
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
        let mut encoding = self.begin(ids, mask);
        while self.advance(&mut encoding) {}
        self.finish(encoding)
    }

    /// [`T5Encoder::forward`] in pieces: the embedding and the attention bias here, then one
    /// block per [`T5Encoder::advance`], then the final norm in [`T5Encoder::finish`] (the same
    /// operations, so the same values).
    pub fn begin(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> T5Encoding {
        let [batch, seq] = ids.dims();
        let x = self
            .shared
            .clone()
            .select(0, ids.reshape([batch * seq]))
            .reshape([batch, seq, self.config.d_model]);
        // Padding keys get the most negative f32, as the reference's extended attention mask.
        let mask_bias = (mask.ones_like() - mask)
            .mul_scalar(f32::MIN)
            .reshape([batch, 1, 1, seq]);
        let bias = self.position_bias(seq) + mask_bias;
        T5Encoding { x, bias, blocks: 0 }
    }

    /// Run the next block; whether blocks remain.
    pub fn advance(&self, encoding: &mut T5Encoding) -> bool {
        if let Some(block) = self.encoder.block.get(encoding.blocks) {
            encoding.x = block.forward(encoding.x.clone(), encoding.bias.clone());
            encoding.blocks += 1;
        }
        encoding.blocks < self.encoder.block.len()
    }

    /// The last hidden state of an encoding whose blocks have all run.
    pub fn finish(&self, encoding: T5Encoding) -> Tensor<3> {
        debug_assert_eq!(encoding.blocks, self.encoder.block.len());
        self.encoder.final_layer_norm.forward(encoding.x)
    }

    /// Relative-position bias `[1, heads, seq, seq]` for a bidirectional encoder, from block 0's
    /// table.
    fn position_bias(&self, seq: usize) -> Tensor<4> {
        let c = &self.config;
        let table = self.encoder.block[0]
            .layer_0
            .self_attention
            .relative_attention_bias
            .clone()
            .expect("block 0 owns the relative attention bias");
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
        table
            .select(0, idx)
            .reshape([seq, seq, c.num_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }
}

impl T5Stack {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let block = (0..config.num_layers)
            .map(|i| {
                T5Block::load(
                    weights,
                    &format!("{prefix}.block.{i}"),
                    i == 0,
                    config,
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let final_layer_norm = rms_norm(
            weights,
            &format!("{prefix}.final_layer_norm"),
            config,
            device,
        )?;
        Ok(Self {
            block,
            final_layer_norm,
        })
    }
}

impl T5Block {
    fn load(
        weights: &Weights,
        prefix: &str,
        has_relative_attention_bias: bool,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            layer_0: T5LayerSelfAttention::load(
                weights,
                &format!("{prefix}.layer.0"),
                has_relative_attention_bias,
                config,
                device,
            )?,
            layer_1: T5LayerFf::load(weights, &format!("{prefix}.layer.1"), config, device)?,
        })
    }

    /// # Shapes
    /// `x: [batch, seq, d_model]`, `bias: [batch | 1, heads | 1, seq, seq]` → `[batch, seq, d_model]`
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let x = self.layer_0.forward(x, bias);
        self.layer_1.forward(x)
    }
}

impl T5LayerSelfAttention {
    fn load(
        weights: &Weights,
        prefix: &str,
        has_relative_attention_bias: bool,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            self_attention: T5Attention::load(
                weights,
                &format!("{prefix}.SelfAttention"),
                has_relative_attention_bias,
                config,
                device,
            )?,
            layer_norm: rms_norm(weights, &format!("{prefix}.layer_norm"), config, device)?,
        })
    }

    /// # Shapes
    /// `x: [batch, seq, d_model]`, `bias: [batch | 1, heads | 1, seq, seq]` → `[batch, seq, d_model]`
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let residual = x.clone();
        let x = self.layer_norm.forward(x);
        let x = self.self_attention.forward(x, bias);
        residual + x
    }
}

impl T5Attention {
    fn load(
        weights: &Weights,
        prefix: &str,
        has_relative_attention_bias: bool,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let (d, inner) = (config.d_model, config.num_heads * config.d_kv);
        let lin = Linear::loader_as(weights, prefix, device, (WeightFormat::F32, Reads::Cached));
        let relative_attention_bias = if has_relative_attention_bias {
            Some(weights.tensor(
                &format!("{prefix}.relative_attention_bias.weight"),
                [config.relative_attention_num_buckets, config.num_heads],
                device,
            )?)
        } else {
            None
        };
        Ok(Self {
            q: lin("q", d, inner)?,
            k: lin("k", d, inner)?,
            v: lin("v", d, inner)?,
            o: lin("o", inner, d)?,
            relative_attention_bias,
            n_heads: config.num_heads,
        })
    }

    /// # Shapes
    /// `x: [batch, seq, d_model]`, `bias: [batch | 1, heads | 1, seq, seq]` → `[batch, seq, d_model]`
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let q = split_heads(self.q.forward(x.clone()), self.n_heads);
        let k = split_heads(self.k.forward(x.clone()), self.n_heads);
        let v = split_heads(self.v.forward(x), self.n_heads);
        // T5 folds 1/sqrt(d_kv) into its initialisation: no scaling here.
        let out = attention(q, k, v, 1.0, Some(bias));
        self.o.forward(merge_heads(out))
    }
}

impl T5LayerFf {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            dense_relu_dense: DenseReluDense::load(
                weights,
                &format!("{prefix}.DenseReluDense"),
                config,
                device,
            )?,
            layer_norm: rms_norm(weights, &format!("{prefix}.layer_norm"), config, device)?,
        })
    }

    /// # Shapes
    /// `x: [batch, seq, d_model]` → same
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let residual = x.clone();
        let x = self.layer_norm.forward(x);
        let x = self.dense_relu_dense.forward(x);
        residual + x
    }
}

impl DenseReluDense {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &T5Config,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let (d, d_ff) = (config.d_model, config.d_ff);
        let lin = Linear::loader_as(weights, prefix, device, (WeightFormat::F32, Reads::Cached));
        let gated = |act| -> Result<Self, LoadError> {
            Ok(Self::GatedAct {
                wi_0: lin("wi_0", d, d_ff)?,
                wi_1: lin("wi_1", d, d_ff)?,
                wo: lin("wo", d_ff, d)?,
                act,
            })
        };
        match config.feed_forward_proj {
            FeedForwardKind::Relu => Ok(Self::Act {
                wi: lin("wi", d, d_ff)?,
                wo: lin("wo", d_ff, d)?,
                act: Activation::Relu,
            }),
            // transformers maps T5's "gated-gelu" to `gelu_new`, the tanh approximation.
            FeedForwardKind::GatedGelu => gated(Activation::GeluTanh),
            FeedForwardKind::GatedRelu => gated(Activation::Relu),
        }
    }

    /// # Shapes
    /// `x: [batch, seq, d_model]` → same
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Act { wi, wo, act } => wo.forward(act.forward(wi.forward(x))),
            Self::GatedAct {
                wi_0,
                wi_1,
                wo,
                act,
            } => {
                let gate = act.forward(wi_0.forward(x.clone()));
                wo.forward(gate * wi_1.forward(x))
            }
        }
    }
}

/// The RMS norm `{prefix}.weight` of width `d_model`.
fn rms_norm(
    weights: &Weights,
    prefix: &str,
    config: &T5Config,
    device: &Device,
) -> Result<RmsNorm, LoadError> {
    let key = format!("{prefix}.weight");
    RmsNorm::load(
        weights,
        &key,
        config.d_model,
        config.layer_norm_epsilon,
        device,
    )
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
