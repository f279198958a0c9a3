//! The MusicGen decoder LM: a pre-norm transformer over the sum of 4 codebook embeddings, with
//! cross-attention to the projected text states and one LM head per codebook.
//!
//! Copet et al., "Simple and Controllable Music Generation" (2023). Follows transformers'
//! `models/musicgen/modeling_musicgen.py` (`MusicgenForCausalLM`). Keys live under
//! `decoder.model.decoder.` and `decoder.lm_heads.`.
//!
//! Two entry points share the block code: [`DecoderLm::forward`] runs a whole sequence without
//! a cache (teacher forcing, feature extraction), [`DecoderLm::forward_cached`] appends positions
//! to a preallocated [`KvCache`] (generation, one step per call). A [`BlockHook`] sees every
//! block's output, which is where steering adds its directions.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::DecoderConfig;
use crate::error::LoadError;
use crate::nn::{Activation, LayerNorm, Linear, attention, merge_heads, split_heads};
use crate::weights::Weights;

/// nn.LayerNorm's default, which MusicGen uses everywhere.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Sees (and may change) the residual stream right after each decoder block.
pub trait BlockHook {
    /// `hidden: [batch, seq, d_model]` is block `block`'s output; the return value flows on.
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3>;
}

/// The hook that does nothing: unsteered generation pays nothing for the hook point.
pub struct NoHook;

impl BlockHook for NoHook {
    #[inline]
    fn after_block(&mut self, _block: usize, hidden: Tensor<3>) -> Tensor<3> {
        hidden
    }
}

/// Records every block's output (feature extraction, parity tests).
#[derive(Default)]
pub struct CaptureBlocks {
    pub outputs: Vec<Tensor<3>>,
}

impl BlockHook for CaptureBlocks {
    fn after_block(&mut self, _block: usize, hidden: Tensor<3>) -> Tensor<3> {
        self.outputs.push(hidden.clone());
        hidden
    }
}

/// Lets a hook run, then records what it left (steered outputs).
impl<H: BlockHook> BlockHook for (H, CaptureBlocks) {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        let hidden = self.0.after_block(block, hidden);
        self.1.after_block(block, hidden)
    }
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(
        weights: &Weights,
        prefix: &str,
        d: usize,
        heads: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let lin =
            |name: &str| Linear::load(weights, &format!("{prefix}.{name}"), d, d, false, device);
        Ok(Self {
            q_proj: lin("q_proj")?,
            k_proj: lin("k_proj")?,
            v_proj: lin("v_proj")?,
            out_proj: lin("out_proj")?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    /// Keys and values of `x`, split into heads: `[batch, heads, seq, head_dim]` each.
    fn project_kv(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (
            split_heads(self.k_proj.forward(x.clone()), self.heads),
            split_heads(self.v_proj.forward(x), self.heads),
        )
    }

    fn attend(
        &self,
        x: Tensor<3>,
        k: Tensor<4>,
        v: Tensor<4>,
        bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let q = split_heads(self.q_proj.forward(x), self.heads);
        self.out_proj
            .forward(merge_heads(attention(q, k, v, self.scale, bias)))
    }
}

struct Block {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

/// Text keys/values for every block's cross-attention, computed once per prompt.
#[derive(Clone)]
pub struct CrossContext {
    kv: Vec<(Tensor<4>, Tensor<4>)>,
    /// `[batch, 1, 1, text_len]`: 0 for tokens, f32::MIN for padding (and for every key of the
    /// unconditional CFG row, whose states are zero: its cross-attention output is exactly 0).
    bias: Tensor<4>,
}

/// Self-attention keys and values of every block, preallocated to `capacity` positions and
/// written in place.
pub struct KvCache {
    k: Vec<Tensor<4>>,
    v: Vec<Tensor<4>>,
    len: usize,
    capacity: usize,
    batch: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forget every position (the buffers stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// The decoder LM (`MusicgenForCausalLM`).
pub struct DecoderLm {
    embed_tokens: Vec<Tensor<2>>,
    layers: Vec<Block>,
    layer_norm: LayerNorm,
    lm_heads: Vec<Linear>,
    /// Sinusoidal position table `[positions, d_model]`.
    positions: Tensor<2>,
    pub config: DecoderConfig,
    device: Device,
}

impl DecoderLm {
    pub fn load(
        weights: &Weights,
        config: &DecoderConfig,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let d = config.hidden_size;
        let p = "decoder.model.decoder";
        let embed_tokens = (0..config.num_codebooks)
            .map(|k| {
                weights.tensor(
                    &format!("{p}.embed_tokens.{k}.weight"),
                    [config.vocab_size + 1, d],
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let lp = format!("{p}.layers.{i}");
            let norm = |name: &str| {
                LayerNorm::load(weights, &format!("{lp}.{name}"), d, LAYER_NORM_EPS, device)
            };
            layers.push(Block {
                self_attn: Attention::load(
                    weights,
                    &format!("{lp}.self_attn"),
                    d,
                    config.num_attention_heads,
                    device,
                )?,
                self_attn_layer_norm: norm("self_attn_layer_norm")?,
                encoder_attn: Attention::load(
                    weights,
                    &format!("{lp}.encoder_attn"),
                    d,
                    config.num_attention_heads,
                    device,
                )?,
                encoder_attn_layer_norm: norm("encoder_attn_layer_norm")?,
                fc1: Linear::load(
                    weights,
                    &format!("{lp}.fc1"),
                    d,
                    config.ffn_dim,
                    false,
                    device,
                )?,
                fc2: Linear::load(
                    weights,
                    &format!("{lp}.fc2"),
                    config.ffn_dim,
                    d,
                    false,
                    device,
                )?,
                final_layer_norm: norm("final_layer_norm")?,
            });
        }
        let layer_norm = LayerNorm::load(
            weights,
            &format!("{p}.layer_norm"),
            d,
            LAYER_NORM_EPS,
            device,
        )?;
        let lm_heads = (0..config.num_codebooks)
            .map(|k| {
                Linear::load(
                    weights,
                    &format!("decoder.lm_heads.{k}"),
                    d,
                    config.vocab_size,
                    false,
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let positions = sinusoidal_positions(config.max_position_embeddings, d, device);
        Ok(Self {
            embed_tokens,
            layers,
            layer_norm,
            lm_heads,
            positions,
            config: config.clone(),
            device: device.clone(),
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    pub fn d_model(&self) -> usize {
        self.config.hidden_size
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The LM head of `codebook` as `[d_model, vocab]` (for directions built from it).
    pub fn lm_head_weight(&self, codebook: usize) -> Tensor<2> {
        self.lm_heads[codebook].weight_f32()
    }

    /// A cache for `batch` rows and `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache {
        let heads = self.config.num_attention_heads;
        let head_dim = self.config.hidden_size / heads;
        let zeros = || Tensor::<4>::zeros([batch, heads, capacity, head_dim], &self.device);
        KvCache {
            k: (0..self.layers.len()).map(|_| zeros()).collect(),
            v: (0..self.layers.len()).map(|_| zeros()).collect(),
            len: 0,
            capacity,
            batch,
        }
    }

    /// Cross-attention keys/values of the projected text states.
    ///
    /// # Shapes
    /// `encoder_states: [batch, text_len, d_model]`, `mask: [batch, text_len]`
    pub fn cross_context(&self, encoder_states: Tensor<3>, mask: Tensor<2>) -> CrossContext {
        let [batch, text_len, _] = encoder_states.dims();
        let kv = self
            .layers
            .iter()
            .map(|layer| layer.encoder_attn.project_kv(encoder_states.clone()))
            .collect();
        let bias = (mask.ones_like() - mask)
            .mul_scalar(f32::MIN)
            .reshape([batch, 1, 1, text_len]);
        CrossContext { kv, bias }
    }

    /// Sum of the codebook embeddings plus sinusoidal positions from `start`.
    ///
    /// # Shapes
    /// `tokens: [batch, codebooks, seq]` → `[batch, seq, d_model]`
    fn embed(&self, tokens: Tensor<3, Int>, start: usize) -> Tensor<3> {
        let [batch, codebooks, seq] = tokens.dims();
        let d = self.config.hidden_size;
        let mut x: Option<Tensor<3>> = None;
        for (k, table) in self.embed_tokens.iter().enumerate().take(codebooks) {
            let ids = tokens
                .clone()
                .slice([0..batch, k..k + 1, 0..seq])
                .reshape([batch * seq]);
            let e = table.clone().select(0, ids).reshape([batch, seq, d]);
            x = Some(match x {
                Some(acc) => acc + e,
                None => e,
            });
        }
        let x = x.expect("at least one codebook");
        x + self
            .position_table(start + seq)
            .slice([start..start + seq, 0..d])
            .unsqueeze::<3>()
    }

    fn position_table(&self, needed: usize) -> Tensor<2> {
        if needed <= self.positions.dims()[0] {
            self.positions.clone()
        } else {
            sinusoidal_positions(needed, self.config.hidden_size, &self.device)
        }
    }

    /// A whole sequence without a cache, causal self-attention. `cross: None` skips the
    /// cross-attention sub-block entirely (the feature-extraction protocol).
    ///
    /// # Shapes
    /// `tokens: [batch, codebooks, seq]` → logits `[batch, codebooks, seq, vocab]`
    pub fn forward(
        &self,
        tokens: Tensor<3, Int>,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Tensor<4> {
        let hidden = self.hidden(tokens, cross, hook);
        self.logits(hidden)
    }

    /// Like [`Self::forward`], but returns the last block's output before the final norm and
    /// the heads (feature extraction needs only the hook's captures).
    pub fn hidden(
        &self,
        tokens: Tensor<3, Int>,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Tensor<3> {
        let seq = tokens.dims()[2];
        let mut x = self.embed(tokens, 0);
        let causal = causal_bias(seq, 0, &self.device);
        for (b, layer) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let h = layer.self_attn_layer_norm.forward(x);
            let (k, v) = layer.self_attn.project_kv(h.clone());
            let h = layer.self_attn.attend(h, k, v, Some(causal.clone()));
            x = layer.cross_and_ffn(residual + h, cross.map(|c| (&c.kv[b], &c.bias)));
            x = hook.after_block(b, x);
        }
        x
    }

    /// Append `tokens` at positions `cache.len()..` and return the logits of those positions.
    ///
    /// # Shapes
    /// `tokens: [batch, codebooks, seq]` → `[batch, codebooks, seq, vocab]`
    pub fn forward_cached(
        &self,
        tokens: Tensor<3, Int>,
        cache: &mut KvCache,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Tensor<4> {
        let [batch, _, seq] = tokens.dims();
        let start = cache.len;
        let end = start + seq;
        assert!(
            end <= cache.capacity && batch == cache.batch,
            "KV cache holds {} rows × {} positions; asked for {batch} × {end}",
            cache.batch,
            cache.capacity
        );
        let mut x = self.embed(tokens, start);
        // One new position attends to every cached one; a block of several needs a causal mask.
        let causal = (seq > 1).then(|| causal_bias(seq, start, &self.device));
        let heads = self.config.num_attention_heads;
        let head_dim = self.config.hidden_size / heads;
        for (b, layer) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let h = layer.self_attn_layer_norm.forward(x);
            let (k_new, v_new) = layer.self_attn.project_kv(h.clone());
            let range = [0..batch, 0..heads, start..end, 0..head_dim];
            let k_all =
                std::mem::replace(&mut cache.k[b], Tensor::empty([0, 0, 0, 0], &self.device));
            cache.k[b] = k_all.slice_assign(range.clone(), k_new);
            let v_all =
                std::mem::replace(&mut cache.v[b], Tensor::empty([0, 0, 0, 0], &self.device));
            cache.v[b] = v_all.slice_assign(range, v_new);
            let live = [0..batch, 0..heads, 0..end, 0..head_dim];
            let k = cache.k[b].clone().slice(live.clone());
            let v = cache.v[b].clone().slice(live);
            let h = layer.self_attn.attend(h, k, v, causal.clone());
            x = layer.cross_and_ffn(residual + h, cross.map(|c| (&c.kv[b], &c.bias)));
            x = hook.after_block(b, x);
        }
        cache.len = end;
        self.logits(x)
    }

    /// Final norm and the per-codebook heads.
    ///
    /// # Shapes
    /// `hidden: [batch, seq, d_model]` → `[batch, codebooks, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<4> {
        let h = self.layer_norm.forward(hidden);
        let per_codebook: Vec<Tensor<4>> = self
            .lm_heads
            .iter()
            .map(|head| head.forward(h.clone()).unsqueeze_dim::<4>(1))
            .collect();
        Tensor::cat(per_codebook, 1)
    }
}

impl Block {
    /// Cross-attention (when there is text) and the feed-forward block, both pre-norm residual.
    fn cross_and_ffn(
        &self,
        x: Tensor<3>,
        cross: Option<(&(Tensor<4>, Tensor<4>), &Tensor<4>)>,
    ) -> Tensor<3> {
        let mut x = x;
        if let Some(((k, v), bias)) = cross {
            let residual = x.clone();
            let h = self.encoder_attn_layer_norm.forward(x);
            let h = self
                .encoder_attn
                .attend(h, k.clone(), v.clone(), Some(bias.clone()));
            x = residual + h;
        }
        let residual = x.clone();
        let h = self.final_layer_norm.forward(x);
        let h = self
            .fc2
            .forward(Activation::Gelu.forward(self.fc1.forward(h)));
        residual + h
    }
}

/// `[1, 1, seq, start + seq]`: query i (at position start + i) sees keys 0..=start + i.
fn causal_bias(seq: usize, start: usize, device: &Device) -> Tensor<4> {
    let keys = start + seq;
    let mut values = vec![0f32; seq * keys];
    for i in 0..seq {
        for j in (start + i + 1)..keys {
            values[i * keys + j] = f32::MIN;
        }
    }
    Tensor::<2>::from_data(TensorData::new(values, [seq, keys]), device).unsqueeze::<4>()
}

/// MusicGen's sinusoidal table: `[cos | sin]` halves, frequency step ln(10000) / (d/2 − 1),
/// computed in f32 like the reference.
pub fn sinusoidal_positions(positions: usize, d: usize, device: &Device) -> Tensor<2> {
    let half = d / 2;
    let step = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut table = vec![0f32; positions * d];
    for p in 0..positions {
        let row = &mut table[p * d..(p + 1) * d];
        for (i, f) in freqs.iter().enumerate() {
            let angle = p as f32 * f;
            row[i] = angle.cos();
            row[half + i] = angle.sin();
        }
    }
    Tensor::from_data(TensorData::new(table, [positions, d]), device)
}
