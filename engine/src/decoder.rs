//! The MusicGen decoder LM: a pre-norm transformer over the sum of 4 codebook embeddings, with
//! cross-attention to the projected text states and one LM head per codebook.
//!
//! Copet et al., "Simple and Controllable Music Generation" (2023). Follows transformers'
//! `models/musicgen/modeling_musicgen.py` (`MusicgenForCausalLM`). Keys live under
//! `decoder.model.decoder.` and `decoder.lm_heads.`.
//!
//! Two entry points run the same `Block::forward`: [`DecoderLm::forward`] runs a whole
//! sequence without a cache (teacher forcing, feature extraction), [`DecoderLm::forward_cached`]
//! appends positions to a preallocated [`KvCache`] (generation, one step per call). A
//! [`BlockHook`] sees every block's output, which is where steering adds its directions.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::DecoderConfig;
use crate::error::{CacheError, LoadError};
use crate::matvec::{Reads, WeightFormat};
use crate::nn::{
    Activation, LayerNorm, Linear, attention, host_vec, is_host, merge_heads, split_heads,
};
use crate::profile::{Phase, timed};
use crate::weights::Weights;

mod host;

pub(crate) use host::HostStep;

/// nn.LayerNorm's default, which MusicGen uses everywhere.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Sees (and may change) the residual stream right after each decoder block.
///
/// `Send`: a step runs on one of rayon's threads ([`crate::Generation::step`]), hook included.
pub trait BlockHook: Send {
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

/// Lets the first hook run, then the second on what it left (e.g. steering, then a capture of
/// the steered outputs).
impl<A: BlockHook, B: BlockHook> BlockHook for (A, B) {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        let hidden = self.0.after_block(block, hidden);
        self.1.after_block(block, hidden)
    }
}

impl<H: BlockHook + ?Sized> BlockHook for &mut H {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        (**self).after_block(block, hidden)
    }
}

/// `self_attn.` / `encoder_attn.` of a block (HF `MusicgenAttention`, no biases).
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
        format: WeightFormat,
    ) -> Result<Self, LoadError> {
        let lin = Linear::loader_as(weights, prefix, device, (format, Reads::Streamed));
        Ok(Self {
            q_proj: lin("q_proj", d, d)?,
            k_proj: lin("k_proj", d, d)?,
            v_proj: lin("v_proj", d, d)?,
            out_proj: lin("out_proj", d, d)?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    /// Keys and values of `x`, split into heads.
    ///
    /// # Shapes
    /// `x: [batch, seq, d_model]` → `[batch, heads, seq, head_dim]` each
    fn project_kv(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = timed(Phase::Linears, || {
            (self.k_proj.forward(x.clone()), self.v_proj.forward(x))
        });
        (split_heads(k, self.heads), split_heads(v, self.heads))
    }

    /// Queries of `x` attend to `k`, `v`.
    ///
    /// # Shapes
    /// - `x: [batch, seq, d_model]`, `k`, `v: [batch, heads, kv_len, head_dim]`
    /// - `bias`: broadcastable to `[batch, heads, seq, kv_len]`
    /// - returns `[batch, seq, d_model]`
    fn attend(
        &self,
        x: Tensor<3>,
        k: Tensor<4>,
        v: Tensor<4>,
        bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let q = split_heads(timed(Phase::Linears, || self.q_proj.forward(x)), self.heads);
        let heads = timed(Phase::Attention, || {
            merge_heads(attention(q, k, v, self.scale, bias))
        });
        timed(Phase::Linears, || self.out_proj.forward(heads))
    }
}

/// `layers.{i}.` (HF `MusicgenDecoderLayer`).
struct Block {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    /// `activation_function` from the config (not a checkpoint key).
    activation_fn: Activation,
}

/// One block's cross-attention inputs: the text keys and values, and the padding bias.
type CrossKv<'a> = (&'a (Tensor<4>, Tensor<4>), &'a Tensor<4>);

impl Block {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &DecoderConfig,
        device: &Device,
        format: WeightFormat,
    ) -> Result<Self, LoadError> {
        let (d, heads) = (config.hidden_size, config.num_attention_heads);
        let attn = |name: &str| {
            Attention::load(
                weights,
                &format!("{prefix}.{name}"),
                d,
                heads,
                device,
                format,
            )
        };
        let norm = |name: &str| {
            LayerNorm::load(
                weights,
                &format!("{prefix}.{name}"),
                d,
                LAYER_NORM_EPS,
                device,
            )
        };
        let lin = Linear::loader_as(weights, prefix, device, (format, Reads::Streamed));
        Ok(Self {
            self_attn: attn("self_attn")?,
            self_attn_layer_norm: norm("self_attn_layer_norm")?,
            encoder_attn: attn("encoder_attn")?,
            encoder_attn_layer_norm: norm("encoder_attn_layer_norm")?,
            fc1: lin("fc1", d, config.ffn_dim)?,
            fc2: lin("fc2", config.ffn_dim, d)?,
            final_layer_norm: norm("final_layer_norm")?,
            activation_fn: config.activation_function,
        })
    }

    /// Self-attention, cross-attention (when there is text) and the feed-forward block, each
    /// pre-norm residual. With a `cache`, `x` holds the positions after the cached ones: their
    /// keys and values are appended and they attend to every cached position too.
    ///
    /// # Shapes
    /// - `x: [batch, seq, d_model]`
    /// - `causal: [1, 1, seq, past + seq]`, or `None` where every key is visible (one new
    ///   position)
    /// - returns `[batch, seq, d_model]`
    fn forward(
        &self,
        x: Tensor<3>,
        cache: Option<&mut LayerCache>,
        causal: Option<Tensor<4>>,
        cross: Option<CrossKv<'_>>,
    ) -> Tensor<3> {
        let residual = x.clone();
        let h = timed(Phase::Norms, || self.self_attn_layer_norm.forward(x));
        let (k, v) = self.self_attn.project_kv(h.clone());
        let (k, v) = match cache {
            Some(cache) => timed(Phase::Attention, || cache.append(k, v)),
            None => (k, v),
        };
        let h = self.self_attn.attend(h, k, v, causal);
        let mut x = residual + h;

        if let Some(((k, v), bias)) = cross {
            let residual = x.clone();
            let h = timed(Phase::Norms, || self.encoder_attn_layer_norm.forward(x));
            let h = self
                .encoder_attn
                .attend(h, k.clone(), v.clone(), Some(bias.clone()));
            x = residual + h;
        }

        let residual = x.clone();
        let h = timed(Phase::Norms, || self.final_layer_norm.forward(x));
        let h = timed(Phase::Linears, || self.fc1.forward(h));
        let h = timed(Phase::Norms, || self.activation_fn.forward(h));
        let h = timed(Phase::Linears, || self.fc2.forward(h));
        residual + h
    }
}

impl Block {
    /// Whether every linear and norm of the block lives in host memory.
    fn is_host(&self) -> bool {
        let (s, c) = (&self.self_attn, &self.encoder_attn);
        [
            &s.q_proj,
            &s.k_proj,
            &s.v_proj,
            &s.out_proj,
            &c.q_proj,
            &c.k_proj,
            &c.v_proj,
            &c.out_proj,
            &self.fc1,
            &self.fc2,
        ]
        .iter()
        .all(|l| l.is_host())
            && [
                &self.self_attn_layer_norm,
                &self.encoder_attn_layer_norm,
                &self.final_layer_norm,
            ]
            .iter()
            .all(|n| n.is_host())
    }
}

/// Text keys/values for every block's cross-attention, computed once per prompt.
#[derive(Clone)]
pub struct CrossContext {
    pub(crate) kv: Vec<(Tensor<4>, Tensor<4>)>,
    /// `[batch, 1, 1, text_len]`: 0 for tokens, f32::MIN for padding (and for every key of the
    /// unconditional CFG row, whose states are zero: its cross-attention output is exactly 0).
    bias: Tensor<4>,
    /// The same keys, values and bias in host memory, on the CPU (for the host step).
    host: Option<std::sync::Arc<host::HostCross>>,
}

/// A prompt's cross-attention keys and values under way ([`DecoderLm::begin_cross`]).
pub(crate) struct CrossParts {
    /// Rows with a token (not CFG's unconditional row).
    live: Vec<bool>,
    /// One zero position, projected for the rows that are not live (none when all are).
    zero: Option<Tensor<3>>,
    /// The blocks' keys and values so far.
    kv: Vec<(Tensor<4>, Tensor<4>)>,
    /// The blocks' cross-attention folded into their projections so far, per row
    /// ([`host::CrossFold`]), where the host step takes them.
    folds: Option<Vec<Vec<Option<host::CrossFold>>>>,
}

impl CrossContext {
    fn block(&self, block: usize) -> CrossKv<'_> {
        (&self.kv[block], &self.bias)
    }
}

/// Self-attention keys and values of every block, preallocated to `capacity` positions and
/// written in place; never concatenated per step.
pub struct KvCache {
    layers: Vec<LayerCache>,
    capacity: usize,
    batch: usize,
}

/// One block's keys and values, `[batch, heads, capacity, head_dim]` each; positions `0..len`
/// are live.
struct LayerCache {
    store: CacheStore,
    len: usize,
}

// One per block: the size of the tensor variant does not matter.
#[allow(clippy::large_enum_variant)]
enum CacheStore {
    /// burn tensors (a GPU backend).
    Tensor { k: Tensor<4>, v: Tensor<4> },
    /// Host memory (the CPU), which the one-position host step ([`host`]) reads and writes in
    /// place; the tensor path copies the live positions out.
    Host(host::HostKv),
}

impl LayerCache {
    /// Write `k_new`, `v_new` at the next positions and return the live keys and values,
    /// new ones included. The caller has checked the room ([`KvCache::check_room`]).
    ///
    /// # Shapes
    /// - `k_new`, `v_new: [batch, heads, seq, head_dim]`
    /// - returns `[batch, heads, len + seq, head_dim]` each
    fn append(&mut self, k_new: Tensor<4>, v_new: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [batch, heads, seq, head_dim] = k_new.dims();
        let end = self.len + seq;
        let (k, v) = match &mut self.store {
            CacheStore::Tensor { k, v } => {
                debug_assert!(end <= k.dims()[2], "KvCache::check_room runs first");
                let range = [0..batch, 0..heads, self.len..end, 0..head_dim];
                *k = Self::write(k, range.clone(), k_new);
                *v = Self::write(v, range, v_new);
                let live = [0..batch, 0..heads, 0..end, 0..head_dim];
                (k.clone().slice(live.clone()), v.clone().slice(live))
            }
            CacheStore::Host(kv) => {
                let device = k_new.device();
                kv.write_heads(self.len, seq, &host_vec(&k_new), &host_vec(&v_new));
                let (k, v) = kv.live(end);
                let shape = [batch, heads, end, head_dim];
                (
                    Tensor::from_data(TensorData::new(k, shape), &device),
                    Tensor::from_data(TensorData::new(v, shape), &device),
                )
            }
        };
        self.len = end;
        (k, v)
    }

    /// `buffer[range] = values`, in place.
    fn write(
        buffer: &mut Tensor<4>,
        range: [std::ops::Range<usize>; 4],
        values: Tensor<4>,
    ) -> Tensor<4> {
        // burn-flex's `slice_assign` writes into the buffer in place only when the tensor it is
        // given is the buffer's sole owner; otherwise it first copies the whole preallocated
        // cache. Take the tensor out of `self` (an empty placeholder stays behind) so that the
        // call consumes the only handle.
        let placeholder = Tensor::empty([0, 0, 0, 0], &buffer.device());
        std::mem::replace(buffer, placeholder).slice_assign(range, values)
    }
}

impl KvCache {
    /// A cache for `blocks` blocks, `batch` rows and `capacity` positions; in host memory on
    /// the CPU, in `format`.
    fn new(blocks: usize, dims: [usize; 4], format: host::KvFormat, device: &Device) -> Self {
        let [batch, _, capacity, _] = dims;
        let store = || {
            if is_host(device) {
                CacheStore::Host(host::HostKv::zeros(dims, format))
            } else {
                CacheStore::Tensor {
                    k: Tensor::<4>::zeros(dims, device),
                    v: Tensor::<4>::zeros(dims, device),
                }
            }
        };
        Self {
            layers: (0..blocks)
                .map(|_| LayerCache {
                    store: store(),
                    len: 0,
                })
                .collect(),
            capacity,
            batch,
        }
    }

    /// Positions written so far.
    pub fn len(&self) -> usize {
        // Every block holds the same positions between forward calls.
        self.layers.first().map_or(0, |layer| layer.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions the cache was allocated for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len()
    }

    /// Whether no further position fits.
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Whether the keys and values live in host memory (the CPU), where a one-position step
    /// runs on host values end to end.
    fn is_host(&self) -> bool {
        self.layers
            .iter()
            .all(|layer| matches!(layer.store, CacheStore::Host(_)))
    }

    /// Forget the positions from `len` on, if written (the buffers stay allocated; the next
    /// forward writes position `len` again).
    pub fn truncate(&mut self, len: usize) {
        for layer in &mut self.layers {
            layer.len = layer.len.min(len);
        }
    }

    /// Forget every position (the buffers stay allocated).
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            layer.len = 0;
        }
    }

    /// Whether `seq` more positions of `batch` rows fit.
    pub fn check_room(&self, batch: usize, seq: usize) -> Result<(), CacheError> {
        if batch != self.batch {
            return Err(CacheError::BatchMismatch {
                cache: self.batch,
                tokens: batch,
            });
        }
        if seq > self.remaining() {
            return Err(CacheError::Full {
                len: self.len(),
                capacity: self.capacity,
                requested: seq,
            });
        }
        Ok(())
    }
}

/// The decoder LM (`MusicgenForCausalLM`, keys under `decoder.`; HF's `model.decoder.` level
/// is flattened into this struct).
pub struct DecoderLm {
    /// `model.decoder.embed_tokens.{k}.weight`: `[vocab + 1, d_model]` per codebook (the
    /// extra row is BOS / pad).
    embed_tokens: Vec<Tensor<2>>,
    /// `model.decoder.layers.{i}`
    layers: Vec<Block>,
    /// `model.decoder.layer_norm`: the final norm before the heads.
    layer_norm: LayerNorm,
    /// `lm_heads.{k}`
    lm_heads: Vec<Linear>,
    /// Sinusoidal position table `[positions, d_model]` (computed, not stored).
    positions: Tensor<2>,
    pub config: DecoderConfig,
    device: Device,
    /// Whether every block's linears and norms live in host memory (the CPU), so a
    /// one-position step runs on host values end to end ([`host`]).
    host_step: bool,
    /// How a host cache stores its keys and values ([`host::KvFormat::for_weights`]).
    kv_format: host::KvFormat,
    /// The blocks' weight format.
    format: WeightFormat,
}

impl DecoderLm {
    /// Load the decoder; its linear layers (blocks and LM heads) in `format` (see
    /// [`Linear::load_as`]).
    pub fn load(
        weights: &Weights,
        config: &DecoderConfig,
        device: &Device,
        format: WeightFormat,
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
        let layers = (0..config.num_hidden_layers)
            .map(|i| Block::load(weights, &format!("{p}.layers.{i}"), config, device, format))
            .collect::<Result<Vec<_>, _>>()?;
        let layer_norm = LayerNorm::load(
            weights,
            &format!("{p}.layer_norm"),
            d,
            LAYER_NORM_EPS,
            device,
        )?;
        // The heads set the logits directly and are 2 % of a step's weights: q4 keeps them at
        // 8 bits (as llama.cpp keeps its output matrix wider than Q4_0).
        let head_format = match format {
            WeightFormat::Q4 => WeightFormat::Q8,
            other => other,
        };
        let lm_heads = (0..config.num_codebooks)
            .map(|k| {
                Linear::load_as(
                    weights,
                    &format!("decoder.lm_heads.{k}"),
                    (d, config.vocab_size),
                    false,
                    device,
                    (head_format, Reads::Streamed),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let positions = sinusoidal_positions(config.max_position_embeddings, d, device);
        let host_step = layer_norm.is_host()
            && lm_heads.iter().all(Linear::is_host)
            && layers.iter().all(Block::is_host);
        Ok(Self {
            embed_tokens,
            layers,
            layer_norm,
            lm_heads,
            positions,
            config: config.clone(),
            device: device.clone(),
            host_step,
            kv_format: host::KvFormat::for_weights(format),
            format,
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

    /// Whether a one-position step runs on host values end to end ([`host`]): every linear and
    /// norm lives in host memory, and the step's work is the CPU's.
    pub fn steps_on_host(&self) -> bool {
        self.host_step
    }

    /// Bytes of linear weights one decode step with `cross`'s text reads: every block's
    /// self-attention, the cross-attention's query and output (the text's keys and values are
    /// cached) or, where the host step folds them into the text ([`host::CrossFold`]), the
    /// folds, the feed-forward layers, and the LM heads.
    pub fn weight_bytes_per_step(&self, cross: Option<&CrossContext>) -> usize {
        let folds = cross.and_then(|c| c.host.as_ref()).map(|c| c.fold_bytes());
        let blocks: usize = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (s, c) = (&b.self_attn, &b.encoder_attn);
                let cross = match folds.as_ref().and_then(|f| f.get(i)) {
                    Some(&bytes) => bytes,
                    None => c.q_proj.weight_bytes() + c.out_proj.weight_bytes(),
                };
                cross
                    + [&s.q_proj, &s.k_proj, &s.v_proj, &s.out_proj, &b.fc1, &b.fc2]
                        .iter()
                        .map(|l| l.weight_bytes())
                        .sum::<usize>()
            })
            .sum();
        blocks
            + self
                .lm_heads
                .iter()
                .map(Linear::weight_bytes)
                .sum::<usize>()
    }

    /// A cache for `batch` rows and `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache {
        let heads = self.config.num_attention_heads;
        KvCache::new(
            self.layers.len(),
            [batch, heads, capacity, self.config.hidden_size / heads],
            self.kv_format,
            &self.device,
        )
    }

    /// Cross-attention keys/values of the projected text states.
    ///
    /// # Shapes
    /// `encoder_states: [batch, text_len, d_model]`, `mask: [batch, text_len]`
    pub fn cross_context(&self, encoder_states: Tensor<3>, mask: Tensor<2>) -> CrossContext {
        let mut parts = self.begin_cross(&encoder_states, &mask);
        while self.advance_cross(&mut parts, &encoder_states) {}
        self.finish_cross(parts, mask)
    }

    /// [`DecoderLm::cross_context`] in pieces: which rows are live here, one block's keys and
    /// values per [`DecoderLm::advance_cross`], the bias and the host copy in
    /// [`DecoderLm::finish_cross`] (the same operations, so the same values).
    pub(crate) fn begin_cross(&self, encoder_states: &Tensor<3>, mask: &Tensor<2>) -> CrossParts {
        let [batch, text_len, d] = encoder_states.dims();
        // A row whose mask is all zero holds zero states (`MusicGen::condition` multiplies the
        // states by the mask: CFG's unconditional row), so each of its positions projects to the
        // same keys and values: one zero position is projected for it and repeated, which
        // halves a CFG prompt's projections. Each position is projected alone, so the values
        // are those of the whole row's projection, bit for bit.
        let mask_rows = mask
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>();
        let live: Vec<bool> = match &mask_rows {
            Ok(values) if text_len > 1 => values
                .chunks_exact(text_len)
                .map(|row| row.iter().any(|&m| m != 0.0))
                .collect(),
            _ => vec![true; batch],
        };
        let zero = (!live.iter().all(|&l| l))
            .then(|| Tensor::<3>::zeros([1, 1, d], &encoder_states.device()));
        let heads = self.config.num_attention_heads;
        let fold = self.host_step && host::CrossFold::pays(self.format, d, heads, text_len);
        CrossParts {
            live,
            zero,
            kv: Vec::with_capacity(self.layers.len()),
            folds: fold.then(|| Vec::with_capacity(self.layers.len())),
        }
    }

    /// The next block's cross-attention keys and values; whether blocks remain.
    pub(crate) fn advance_cross(&self, parts: &mut CrossParts, encoder_states: &Tensor<3>) -> bool {
        if let Some(layer) = self.layers.get(parts.kv.len()) {
            let attn = &layer.encoder_attn;
            let kv = match &parts.zero {
                None => attn.project_kv(encoder_states.clone()),
                Some(zero) => {
                    let text_len = encoder_states.dims()[1];
                    let (k0, v0) = attn.project_kv(zero.clone());
                    let rows: Vec<(Tensor<4>, Tensor<4>)> = parts
                        .live
                        .iter()
                        .enumerate()
                        .map(|(r, &live)| {
                            if live {
                                attn.project_kv(encoder_states.clone().narrow(0, r, 1))
                            } else {
                                (
                                    k0.clone().repeat_dim(2, text_len),
                                    v0.clone().repeat_dim(2, text_len),
                                )
                            }
                        })
                        .collect();
                    let (k, v): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
                    (Tensor::cat(k, 0), Tensor::cat(v, 0))
                }
            };
            if let Some(folds) = &mut parts.folds {
                folds.push(host::fold_block(attn, &kv, &parts.live));
            }
            parts.kv.push(kv);
        }
        parts.kv.len() < self.layers.len()
    }

    /// The context of parts whose blocks have all run.
    pub(crate) fn finish_cross(&self, parts: CrossParts, mask: Tensor<2>) -> CrossContext {
        debug_assert_eq!(parts.kv.len(), self.layers.len());
        let [batch, text_len] = mask.dims();
        let kv = parts.kv;
        let bias = (mask.ones_like() - mask)
            .mul_scalar(f32::MIN)
            .reshape([batch, 1, 1, text_len]);
        let folds = parts.folds.unwrap_or_default();
        let host = self.host_step.then(|| {
            std::sync::Arc::new(host::HostCross::new(
                &kv,
                &bias,
                self.kv_format.for_text(),
                folds,
            ))
        });
        CrossContext { kv, bias, host }
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
    ///
    /// # Shapes
    /// `tokens: [batch, codebooks, seq]` → `[batch, seq, d_model]`
    pub fn hidden(
        &self,
        tokens: Tensor<3, Int>,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Tensor<3> {
        let seq = tokens.dims()[2];
        let x = self.embed(tokens, 0);
        let causal = causal_bias(seq, 0, &self.device);
        self.blocks(x, None, Some(causal), cross, hook)
    }

    /// Append `tokens` at positions `cache.len()..` and return the logits of those positions.
    ///
    /// # Shapes
    /// `tokens: [batch, codebooks, seq]` → `[batch, codebooks, seq, vocab]`
    ///
    /// # Panics
    /// If the tokens do not fit the cache (rows differ, or more than
    /// [`KvCache::remaining`] positions): check [`KvCache::is_full`] first, or call
    /// [`Self::try_forward_cached`].
    pub fn forward_cached(
        &self,
        tokens: Tensor<3, Int>,
        cache: &mut KvCache,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Tensor<4> {
        self.try_forward_cached(tokens, cache, cross, hook)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::forward_cached`], with an error instead of a panic when the tokens do not fit
    /// the cache (which is then left unchanged).
    pub fn try_forward_cached(
        &self,
        tokens: Tensor<3, Int>,
        cache: &mut KvCache,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Result<Tensor<4>, CacheError> {
        self.try_forward_positions(tokens, cache, cross, hook, true)
            .map(|logits| logits.expect("logits were asked for"))
    }

    /// [`Self::try_forward_cached`], the LM heads run only when `logits` is true (`Ok(None)`
    /// otherwise): a step whose codes are all fixed already (a continued prefix, a window's
    /// replayed frames) needs the cache's new keys and values, not the next codes.
    pub(crate) fn try_forward_positions(
        &self,
        tokens: Tensor<3, Int>,
        cache: &mut KvCache,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
        logits: bool,
    ) -> Result<Option<Tensor<4>>, CacheError> {
        let [batch, _, seq] = tokens.dims();
        cache.check_room(batch, seq)?;
        if seq == 1 && self.host_step_ready(cache, cross) {
            let mut steps = [HostStep {
                tokens,
                cache,
                cross,
                logits,
            }];
            let mut out = self.step_host(&mut steps, &mut |_, b, h| hook.after_block(b, h));
            return Ok(out.remove(0));
        }
        let start = cache.len();
        let x = timed(Phase::Embed, || self.embed(tokens, start));
        // One new position attends to every cached one; a block of several needs a causal mask.
        let causal = (seq > 1).then(|| causal_bias(seq, start, &self.device));
        let x = self.blocks(x, Some(cache), causal, cross, hook);
        Ok(logits.then(|| self.logits(x)))
    }

    /// Several generations' next positions (one each) as one host step, each weight read once
    /// for all of them and each row computed as alone (the same values as
    /// [`Self::try_forward_cached`] on each in turn); `hook(i, block, hidden)` is generation `i`'s
    /// hook. `Ok(None)` when they cannot share a host step (not on the CPU, not one position
    /// each, or text for some and not others): run them one by one then.
    pub(crate) fn try_forward_cached_together(
        &self,
        steps: &mut [HostStep<'_>],
        hook: &mut (dyn FnMut(usize, usize, Tensor<3>) -> Tensor<3> + Send),
    ) -> Result<Option<Vec<Option<Tensor<4>>>>, CacheError> {
        let together = steps
            .iter()
            .all(|s| s.tokens.dims()[2] == 1 && self.host_step_ready(s.cache, s.cross))
            && steps
                .iter()
                .all(|s| s.cross.is_some() == steps[0].cross.is_some());
        if !together {
            return Ok(None);
        }
        for step in steps.iter() {
            step.cache.check_room(step.tokens.dims()[0], 1)?;
        }
        Ok(Some(self.step_host(steps, hook)))
    }

    /// Every block in turn, the hook after each.
    ///
    /// # Shapes
    /// `x: [batch, seq, d_model]` → same
    fn blocks(
        &self,
        x: Tensor<3>,
        mut cache: Option<&mut KvCache>,
        causal: Option<Tensor<4>>,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Tensor<3> {
        let mut x = x;
        for (b, block) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[b]);
            x = block.forward(x, layer_cache, causal.clone(), cross.map(|c| c.block(b)));
            x = hook.after_block(b, x);
        }
        x
    }

    /// The final LayerNorm alone (`model.decoder.layer_norm`), as the heads see the last block.
    ///
    /// # Shapes
    /// `hidden: [batch, seq, d_model]` → same
    pub fn final_norm(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(hidden)
    }

    /// Final norm and the per-codebook heads.
    ///
    /// # Shapes
    /// `hidden: [batch, seq, d_model]` → `[batch, codebooks, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<4> {
        timed(Phase::LmHeads, || {
            let h = self.layer_norm.forward(hidden);
            let per_codebook: Vec<Tensor<4>> = self
                .lm_heads
                .iter()
                .map(|head| head.forward(h.clone()).unsqueeze_dim::<4>(1))
                .collect();
            Tensor::cat(per_codebook, 1)
        })
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

#[cfg(test)]
mod tests {
    use crate::WeightFormat;

    /// A CFG prompt's cross-attention keys and values, the unconditional row's projected from
    /// one zero position and repeated, equal the projection of every row of the masked states,
    /// bit for bit, in every layer (host f32 and q4 weights, two fixture models).
    #[test]
    fn the_unconditional_rows_keys_and_values_are_those_of_its_zero_states() {
        for (name, weight_format) in [
            ("musicgen-tiny", WeightFormat::F32),
            ("musicgen-tiny-b", WeightFormat::Q4),
        ] {
            let model = crate::model::fixture_model(name, weight_format);
            let condition = model
                .condition("80s pop track with bassy drums", true)
                .unwrap();
            let [rows, text_len, _] = condition.encoder_states.dims();
            assert_eq!(rows, 2);
            assert!(text_len > 1, "{name}: a prompt of several tokens");
            let values = |t: &burn::tensor::Tensor<4>| t.to_data().try_to_vec::<f32>().unwrap();
            for (b, layer) in model.decoder.layers.iter().enumerate() {
                let (k, v) = layer
                    .encoder_attn
                    .project_kv(condition.encoder_states.clone());
                let (ck, cv) = &condition.cross.kv[b];
                assert_eq!(
                    values(ck),
                    values(&k),
                    "{name} {weight_format}: keys of block {b}"
                );
                assert_eq!(
                    values(cv),
                    values(&v),
                    "{name} {weight_format}: values of block {b}"
                );
            }
        }
    }
}
