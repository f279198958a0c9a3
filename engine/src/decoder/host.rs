//! The one-position decode step on the CPU, on host values end to end.
//!
//! A generation step feeds one position per CFG row through every block. On burn-flex each
//! block of that step was a few dozen tensor ops on `[2, 1, 1024]` activations, whose fixed
//! cost (allocation, dispatch, shape checks) exceeded their arithmetic: attention, norms,
//! activations and residual adds took 7 ms of a 56 ms q8 step on the musicgen-small shape
//! (issue 13). Here the activations stay in host `Vec`s between the host kernels
//! ([`crate::matvec`]), the keys and values are read and written in place in a host
//! [`HostKv`], and only the steering hook still sees a tensor (one 8 KB copy each way).
//!
//! It computes what [`super::Block::forward`] computes, in the same order of operations per
//! value except for the summation order inside dot products and softmax sums;
//! `cached_steps_equal_full_recompute` (engine/tests/text_decoder_parity.rs) holds every step
//! of it to the burn-op full-sequence forward within 1e-4.
//!
//! Several positions at once (a prefill, a window slide) still take the burn path, which reads
//! and writes the same host cache.

use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;

use super::{Block, BlockHook, CrossContext, DecoderLm, KvCache, LayerCache};
use crate::nn::host_vec;
use crate::profile::{Phase, timed};

/// Keys and values of one block in host memory, `[batch, heads, capacity, head_dim]` each.
pub(crate) struct HostKv {
    k: Vec<f32>,
    v: Vec<f32>,
    dims: [usize; 4],
}

impl HostKv {
    pub(crate) fn zeros(dims: [usize; 4]) -> Self {
        let len = dims.iter().product();
        Self {
            k: vec![0.0; len],
            v: vec![0.0; len],
            dims,
        }
    }

    /// Write `seq` positions from `start`, given per head (`[batch, heads, seq, head_dim]`).
    pub(crate) fn write_heads(&mut self, start: usize, seq: usize, k: &[f32], v: &[f32]) {
        let [batch, heads, capacity, head_dim] = self.dims;
        let span = seq * head_dim;
        for bh in 0..batch * heads {
            let dst = (bh * capacity + start) * head_dim;
            self.k[dst..dst + span].copy_from_slice(&k[bh * span..(bh + 1) * span]);
            self.v[dst..dst + span].copy_from_slice(&v[bh * span..(bh + 1) * span]);
        }
    }

    /// Write one position given per row (`[batch, heads * head_dim]`, a projection's output).
    fn write_position(&mut self, position: usize, k: &[f32], v: &[f32]) {
        let [batch, heads, capacity, head_dim] = self.dims;
        for b in 0..batch {
            for h in 0..heads {
                let dst = ((b * heads + h) * capacity + position) * head_dim;
                let src = (b * heads + h) * head_dim;
                self.k[dst..dst + head_dim].copy_from_slice(&k[src..src + head_dim]);
                self.v[dst..dst + head_dim].copy_from_slice(&v[src..src + head_dim]);
            }
        }
    }

    /// Positions `0..len` as `[batch, heads, len, head_dim]` copies.
    pub(crate) fn live(&self, len: usize) -> (Vec<f32>, Vec<f32>) {
        let [batch, heads, capacity, head_dim] = self.dims;
        let span = len * head_dim;
        let gather = |buffer: &[f32]| {
            (0..batch * heads)
                .flat_map(|bh| {
                    let start = bh * capacity * head_dim;
                    buffer[start..start + span].iter().copied()
                })
                .collect()
        };
        (gather(&self.k), gather(&self.v))
    }
}

/// The text keys, values and padding bias of every block in host memory, copied once per prompt.
pub(crate) struct HostCross {
    /// Per block, `[batch, heads, text_len, head_dim]` each.
    kv: Vec<HostKv>,
    /// `[batch, text_len]`: 0 or f32::MIN, as [`CrossContext`]'s tensor.
    bias: Vec<f32>,
}

impl HostCross {
    pub(crate) fn new(kv: &[(Tensor<4>, Tensor<4>)], bias: &Tensor<4>) -> Self {
        Self {
            kv: kv
                .iter()
                .map(|(k, v)| HostKv {
                    k: host_vec(k),
                    v: host_vec(v),
                    dims: k.dims(),
                })
                .collect(),
            bias: host_vec(bias),
        }
    }
}

/// Attention work (query rows × heads × keys × head_dim) below which one thread is faster than
/// splitting the heads over rayon's.
const PARALLEL_WORK: usize = 1 << 18;

/// One query position per row attends to positions `0..len` of `kv`; `bias` (`[batch, len]`)
/// is added to the scaled scores.
///
/// # Shapes
/// `q: [batch, heads * head_dim]` → `[batch, heads * head_dim]`
fn attend_one(q: &[f32], kv: &HostKv, len: usize, scale: f32, bias: Option<&[f32]>) -> Vec<f32> {
    let [batch, heads, capacity, head_dim] = kv.dims;
    let mut out = vec![0f32; batch * heads * head_dim];
    let head = |bh: usize, out: &mut [f32]| {
        let b = bh / heads;
        let q = &q[bh * head_dim..(bh + 1) * head_dim];
        let base = bh * capacity * head_dim;
        let keys = &kv.k[base..base + len * head_dim];
        let values = &kv.v[base..base + len * head_dim];
        let mut scores: Vec<f32> = keys
            .chunks_exact(head_dim)
            .map(|k| dot(q, k) * scale)
            .collect();
        if let Some(bias) = bias {
            for (s, b) in scores.iter_mut().zip(&bias[b * len..(b + 1) * len]) {
                *s += b;
            }
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (p, v) in scores.iter().zip(values.chunks_exact(head_dim)) {
            let p = p / sum;
            for (o, v) in out.iter_mut().zip(v) {
                *o += p * v;
            }
        }
    };
    if batch * heads * len * head_dim >= PARALLEL_WORK {
        out.par_chunks_mut(head_dim)
            .enumerate()
            .for_each(|(bh, out)| head(bh, out));
    } else {
        out.chunks_mut(head_dim)
            .enumerate()
            .for_each(|(bh, out)| head(bh, out));
    }
    out
}

/// A dot product over 8 partial sums, which the compiler keeps in one vector register.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let whole = a.len() / 8 * 8;
    for (a, b) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// A linear layer on host rows; [`DecoderLm::host_step`] checked at load that it has a host
/// weight.
macro_rules! linear {
    ($layer:expr, $x:expr, $rows:expr) => {
        timed(Phase::Linears, || {
            $layer
                .forward_rows($x, $rows)
                .expect("host step: every linear was checked to be in host memory at load")
        })
    };
}

/// A layer norm on a copy of host rows, checked at load like [`linear!`].
fn norm(norm: &crate::nn::LayerNorm, x: &[f32]) -> Vec<f32> {
    timed(Phase::Norms, || {
        let mut h = x.to_vec();
        let done = norm.forward_rows(&mut h);
        debug_assert!(
            done,
            "host step: every norm was checked to be in host memory"
        );
        h
    })
}

impl Block {
    /// [`Block::forward`] for one new position per row, in place on host rows `x`
    /// (`[batch, d_model]`); its keys and values go to `cache` at `position`.
    fn forward_host(
        &self,
        x: &mut [f32],
        batch: usize,
        cache: &mut HostKv,
        position: usize,
        cross: Option<(&HostKv, &[f32])>,
    ) {
        let attn = &self.self_attn;
        let h = norm(&self.self_attn_layer_norm, x);
        let q = linear!(attn.q_proj, &h, batch);
        let k = linear!(attn.k_proj, &h, batch);
        let v = linear!(attn.v_proj, &h, batch);
        let heads = timed(Phase::Attention, || {
            cache.write_position(position, &k, &v);
            attend_one(&q, cache, position + 1, attn.scale as f32, None)
        });
        add_into(x, &linear!(attn.out_proj, &heads, batch));

        if let Some((kv, bias)) = cross {
            let attn = &self.encoder_attn;
            let h = norm(&self.encoder_attn_layer_norm, x);
            let q = linear!(attn.q_proj, &h, batch);
            let text_len = kv.dims[2];
            let heads = timed(Phase::Attention, || {
                attend_one(&q, kv, text_len, attn.scale as f32, Some(bias))
            });
            add_into(x, &linear!(attn.out_proj, &heads, batch));
        }

        let h = norm(&self.final_layer_norm, x);
        let mut h = linear!(self.fc1, &h, batch);
        timed(Phase::Norms, || self.activation_fn.apply(&mut h));
        add_into(x, &linear!(self.fc2, &h, batch));
    }
}

impl DecoderLm {
    /// Whether a one-position step over `cache` and `cross` can run on host values.
    pub(super) fn host_step_ready(&self, cache: &KvCache, cross: Option<&CrossContext>) -> bool {
        self.host_step && cache.is_host() && cross.is_none_or(|c| c.host.is_some())
    }

    /// [`DecoderLm::try_forward_cached`] for one position per row on host values; the caller
    /// checked the room and [`Self::host_step_ready`].
    ///
    /// # Shapes
    /// `tokens: [batch, codebooks, 1]` → `[batch, codebooks, 1, vocab]`
    pub(super) fn step_host(
        &self,
        tokens: Tensor<3, Int>,
        cache: &mut KvCache,
        cross: Option<&CrossContext>,
        hook: &mut impl BlockHook,
    ) -> Tensor<4> {
        let batch = tokens.dims()[0];
        let position = cache.len();
        let d = self.config.hidden_size;
        let mut x = timed(Phase::Embed, || host_vec(&self.embed(tokens, position)));
        for (b, block) in self.layers.iter().enumerate() {
            let layer: &mut LayerCache = &mut cache.layers[b];
            let super::CacheStore::Host(kv) = &mut layer.store else {
                unreachable!("host_step_ready checked every layer's cache");
            };
            let cross = cross
                .and_then(|c| c.host.as_ref())
                .map(|c| (&c.kv[b], c.bias.as_slice()));
            block.forward_host(&mut x, batch, kv, position, cross);
            layer.len = position + 1;
            let hidden = Tensor::<3>::from_data(TensorData::new(x, [batch, 1, d]), &self.device);
            x = host_vec(&hook.after_block(b, hidden));
        }
        timed(Phase::LmHeads, || {
            let mut h = x;
            let done = self.layer_norm.forward_rows(&mut h);
            debug_assert!(
                done,
                "host step: the final norm was checked to be in host memory"
            );
            let vocab = self.config.vocab_size;
            let codebooks = self.lm_heads.len();
            let mut logits = vec![0f32; batch * codebooks * vocab];
            for (c, head) in self.lm_heads.iter().enumerate() {
                let y = head
                    .forward_rows(&h, batch)
                    .expect("host step: the heads were checked to be in host memory at load");
                for b in 0..batch {
                    let dst = (b * codebooks + c) * vocab;
                    logits[dst..dst + vocab].copy_from_slice(&y[b * vocab..(b + 1) * vocab]);
                }
            }
            Tensor::from_data(
                TensorData::new(logits, [batch, codebooks, 1, vocab]),
                &self.device,
            )
        })
    }
}
