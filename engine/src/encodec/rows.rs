//! The SEANet decoder's layers after the LSTM on the host, for a one-shot decode: activations
//! time-major (a row of channels per time step), every conv a few matmuls (faer, one thread
//! each), and pieces of the signal decoded in parallel.
//!
//! burn-flex ran these layers at a fraction of the CPU's peak (about 0.75 s of a 1.1 s decode
//! of 10 s on 2 cores, for some 60 GFLOP): its transposed conv and its im2col conv copied and
//! reshaped tensors the size of the whole piece between ops, and each op split its own work
//! over the threads. Here a conv is `kernel` matmuls of shifted row ranges (no im2col), a
//! transposed conv one matmul per block of inputs over all taps, added into the outputs, the
//! ELU is applied while padding, a residual block's sum is the last matmul's starting value,
//! and each thread decodes a whole piece, whose activations then stay in its caches: the
//! decode takes 0.65–0.73 s. The values are burn's path's up to summation order (see the test
//! in `seanet.rs`).
//!
//! A stream's frames run the same layers on the host too (`SeanetDecoder::upsample_streamed_rows`):
//! each layer carries its state as [`Rows`] and runs on its window (`RowConv::forward_padded`,
//! `RowTranspose::forward_range`, `RowBlock::forward_streamed`).

use std::borrow::Cow;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::conv::{EncodecConv1d, EncodecConvTranspose1d, Signal, StreamedInput};
use crate::config::PadMode;
use crate::nn::into_host_vec;

/// A stride-1 [`EncodecConv1d`] on time-major rows: `y[t] = b + Σ_k x[t + k · dilation] W_k`
/// over the input padded as the conv pads it.
#[derive(Debug)]
pub(super) struct RowConv {
    /// `[kernel, channels_in, channels_out]`: tap `k`'s matrix `W_k`.
    taps: Vec<f32>,
    bias: Vec<f32>,
    channels_in: usize,
    kernel: usize,
    dilation: usize,
    /// The padding before and after the input (the conv's reach: stride 1 adds none).
    left: usize,
    right: usize,
    edge: PadMode,
}

impl RowConv {
    pub(super) fn new(conv: &EncodecConv1d) -> Self {
        let (weight, bias, dilation) = conv.parts();
        let [_, channels_in, kernel] = weight.dims();
        let (left, right) = conv.reach();
        Self {
            taps: into_host_vec(weight.permute([2, 1, 0])),
            bias,
            channels_in,
            kernel,
            dilation,
            left,
            right,
            edge: conv.edge(),
        }
    }

    pub(super) fn channels_out(&self) -> usize {
        self.bias.len()
    }

    /// The conv of `x` (`[len, channels_in]`, ELU'd first if `elu`), plus `add` (`[len,
    /// channels_out]`) if given: the outputs start from it instead of from zero. An owned `x`
    /// is reused where the conv pads nothing; a borrowed one is only read.
    pub(super) fn forward<'a>(
        &self,
        x: impl Into<Cow<'a, [f32]>>,
        elu: bool,
        add: Option<Vec<f32>>,
    ) -> Vec<f32> {
        let x = pad_rows(x.into(), self.channels_in, self.left, self.right, self.edge);
        self.forward_padded(x.into(), elu, add)
    }

    /// [`forward`](Self::forward) of an input that is already padded (every output a full
    /// window): what a streamed layer runs on its carried window. An owned `x` is ELU'd in
    /// place; a borrowed one is copied first if it must be.
    pub(super) fn forward_padded(
        &self,
        mut x: Cow<'_, [f32]>,
        elu: bool,
        add: Option<Vec<f32>>,
    ) -> Vec<f32> {
        let channels_out = self.bias.len();
        if elu {
            super::seanet::elu_in_place(x.to_mut());
        }
        let outputs = x.len() / self.channels_in - (self.kernel - 1) * self.dilation;
        let mut y = add.unwrap_or_else(|| vec![0.0; outputs * channels_out]);
        debug_assert_eq!(y.len(), outputs * channels_out);
        add_bias(&mut y, &self.bias);
        let block = self.channels_in * channels_out;
        for (k, weight) in self.taps.chunks_exact(block).enumerate() {
            let rows = &x[k * self.dilation * self.channels_in..][..outputs * self.channels_in];
            matmul(
                MatMut::from_row_major_slice_mut(&mut y, outputs, channels_out),
                Accum::Add,
                MatRef::from_row_major_slice(rows, outputs, self.channels_in),
                MatRef::from_row_major_slice(weight, self.channels_in, channels_out),
                1.0,
                Par::Seq,
            );
        }
        y
    }
}

/// An [`EncodecConvTranspose1d`] on time-major rows: input `t` adds `x[t] W_k` to untrimmed
/// output `t · stride + k`, then the trims are cut off.
///
/// The products of a block of inputs with every tap are one matmul into a small buffer, which
/// is then added into the outputs (faer's matmul into a view of every `stride`-th output row
/// returned wrong values and crashed here, faer 0.24.4).
#[derive(Debug)]
pub(super) struct RowTranspose {
    /// `[channels_in, kernel · channels_out]`: column `k · channels_out + o` is tap `k` of
    /// output channel `o`.
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels_in: usize,
    kernel: usize,
    stride: usize,
    trim_left: usize,
    trim_right: usize,
}

/// Inputs a [`RowTranspose`] multiplies at once: a buffer of 256 × 512 values for SEANet's
/// last stage (kernel 8 × 64 channels), well inside a core's L2.
const TRANSPOSE_ROWS: usize = 256;

impl RowTranspose {
    pub(super) fn new(conv: &EncodecConvTranspose1d) -> Self {
        let (weight, bias, stride, (trim_left, trim_right)) = conv.parts();
        let [channels_in, _, kernel] = weight.dims();
        Self {
            weight: into_host_vec(weight.permute([0, 2, 1])),
            bias,
            channels_in,
            kernel,
            stride,
            trim_left,
            trim_right,
        }
    }

    pub(super) fn channels_out(&self) -> usize {
        self.bias.len()
    }

    /// The transposed conv of `elu(x)`, `x`: `[len, channels_in]` → `[len · stride, channels_out]`
    /// (SEANet's kernel is `2 · stride`, and the trims take `kernel − stride` off).
    pub(super) fn forward(&self, mut x: Vec<f32>) -> Vec<f32> {
        super::seanet::elu_in_place(&mut x);
        let len = x.len() / self.channels_in;
        if len == 0 {
            return Vec::new();
        }
        let full = (len - 1) * self.stride + self.kernel;
        let kept = full - self.trim_left - self.trim_right;
        self.forward_range(&x, self.trim_left, kept)
    }

    /// Untrimmed outputs `from .. from + count` of the transposed conv of `x` (`[len,
    /// channels_in]`, ELU'd already), time-major: each output starts from the bias and adds the
    /// taps that land on it, input by input.
    pub(super) fn forward_range(&self, x: &[f32], from: usize, count: usize) -> Vec<f32> {
        let channels_out = self.bias.len();
        let columns = self.kernel * channels_out;
        let len = x.len() / self.channels_in;
        let mut y = vec![0.0; count * channels_out];
        add_bias(&mut y, &self.bias);
        let weight = MatRef::from_row_major_slice(&self.weight, self.channels_in, columns);
        let mut taps = vec![0.0; TRANSPOSE_ROWS.min(len) * columns];
        for first in (0..len).step_by(TRANSPOSE_ROWS) {
            let rows = TRANSPOSE_ROWS.min(len - first);
            let taps = &mut taps[..rows * columns];
            matmul(
                MatMut::from_row_major_slice_mut(taps, rows, columns),
                Accum::Replace,
                MatRef::from_row_major_slice(
                    &x[first * self.channels_in..][..rows * self.channels_in],
                    rows,
                    self.channels_in,
                ),
                weight,
                1.0,
                Par::Seq,
            );
            for (t, input) in taps.chunks_exact(columns).enumerate() {
                // Taps k of input first + t land on untrimmed outputs start + k, consecutive
                // rows; those in from..from + count are kept.
                let start = (first + t) * self.stride;
                let k0 = from.saturating_sub(start);
                let k1 = (from + count).saturating_sub(start).min(self.kernel);
                if k0 >= k1 {
                    continue;
                }
                let out = &mut y[(start + k0 - from) * channels_out..][..(k1 - k0) * channels_out];
                for (v, tap) in out.iter_mut().zip(&input[k0 * channels_out..]) {
                    *v += tap;
                }
            }
        }
        y
    }
}

/// A residual block on rows: `x + block_3(elu(block_1(elu(x))))`, the skip through
/// `shortcut` if the block has one.
#[derive(Debug)]
pub(super) struct RowBlock {
    pub(super) block_1: RowConv,
    pub(super) block_3: RowConv,
    pub(super) shortcut: Option<RowConv>,
}

impl RowBlock {
    fn forward(&self, x: Vec<f32>) -> Vec<f32> {
        let hidden = self.block_1.forward(&x[..], true, None);
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x, false, None),
            None => x,
        };
        self.block_3.forward(hidden, true, Some(skip))
    }

    /// [`forward`](Self::forward) of an input that arrives piece by piece, as
    /// `ResnetBlock::forward_streamed` runs it on tensors: the block carries its input through
    /// `block_1`'s window, and the skip is the window's inputs at the outputs' positions.
    pub(super) fn forward_streamed(
        &self,
        input: &mut StreamedInput<Rows>,
        x: Option<Rows>,
        end: bool,
    ) -> Option<Rows> {
        let window = input.push(x, end)?;
        let channels = window.channels;
        let outputs = window.steps() - input.context();
        let skip = &window.values[input.left() * channels..][..outputs * channels];
        let residual = match &self.shortcut {
            Some(conv) => conv.forward_padded(skip.into(), false, None),
            None => skip.to_vec(),
        };
        let hidden = self
            .block_1
            .forward_padded(window.values.into(), true, None);
        let values = self
            .block_3
            .forward_padded(hidden.into(), true, Some(residual));
        Some(Rows {
            values,
            channels: self.block_3.channels_out(),
        })
    }
}

/// One signal's host rows: `values` time-major, `channels` a step. What the row layers pass
/// between them when streamed ([`Signal`]).
#[derive(Debug, Clone)]
pub(super) struct Rows {
    pub(super) values: Vec<f32>,
    pub(super) channels: usize,
}

impl Signal for Rows {
    fn steps(&self) -> usize {
        self.values.len() / self.channels
    }

    fn then(mut self, next: Self) -> Self {
        debug_assert_eq!(self.channels, next.channels);
        self.values.extend_from_slice(&next.values);
        self
    }

    fn last(&self, n: usize) -> Self {
        Rows {
            values: self.values[self.values.len() - n * self.channels..].to_vec(),
            channels: self.channels,
        }
    }

    fn padded(self, left: usize, right: usize, edge: PadMode) -> Self {
        let values = pad_rows(self.values.into(), self.channels, left, right, edge);
        Rows {
            values,
            channels: self.channels,
        }
    }
}

/// The decoder's layers after the LSTM on rows (see the module documentation).
#[derive(Debug)]
pub(super) struct RowDecoder {
    pub(super) stages: Vec<(RowTranspose, Vec<RowBlock>)>,
    pub(super) last_conv: RowConv,
}

impl RowDecoder {
    /// LSTM outputs `[frames, channels]` → audio `[frames · hop_length, audio_channels]`.
    pub(super) fn upsample(&self, mut x: Vec<f32>) -> Vec<f32> {
        for (upsample, blocks) in &self.stages {
            x = upsample.forward(x);
            for block in blocks {
                x = block.forward(x);
            }
        }
        self.last_conv.forward(x, true, None)
    }
}

/// `rows` (`[len, channels]`) padded by `left` and `right` rows as `conv::pad1d` pads the time
/// axis: zeros, or a reflection about the end rows; reflect padding of an input no longer than
/// the padding first appends zeros, reflects, and cuts the zeros' share off the end again.
fn pad_rows(
    rows: Cow<'_, [f32]>,
    channels: usize,
    left: usize,
    right: usize,
    edge: PadMode,
) -> Vec<f32> {
    if left == 0 && right == 0 {
        return rows.into_owned();
    }
    let len = rows.len() / channels;
    let mut out = Vec::with_capacity((left + len + right) * channels);
    match edge {
        PadMode::Constant => {
            out.resize(left * channels, 0.0);
            out.extend_from_slice(&rows);
            out.resize((left + len + right) * channels, 0.0);
        }
        PadMode::Reflect => {
            let max_pad = left.max(right);
            let zeros = (max_pad + 1).saturating_sub(len);
            let extended = len + zeros; // > max_pad, so every reflected index is in range
            let end = left + extended + right - zeros;
            for i in 0..end {
                // Index into the zero-extended input, reflected about its first and last rows.
                let j = i as isize - left as isize;
                let j = if j < 0 {
                    (-j) as usize
                } else if j as usize >= extended {
                    2 * (extended - 1) - j as usize
                } else {
                    j as usize
                };
                if j < len {
                    out.extend_from_slice(&rows[j * channels..][..channels]);
                } else {
                    out.resize(out.len() + channels, 0.0);
                }
            }
        }
    }
    out
}

/// Add `bias` to every row of `rows`.
fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values transformers' `EncodecConv1d._pad1d` printed (`conv::REFERENCE_PADDINGS`),
    /// short inputs included, and whole rows moving together.
    #[test]
    fn padding_rows_matches_the_reference_including_short_inputs() {
        for (input, left, right, edge, expected) in super::super::conv::REFERENCE_PADDINGS {
            let padded = pad_rows(Cow::Borrowed(input), 1, left, right, edge);
            assert_eq!(padded, expected, "{input:?} {left} {right}");
        }
        let reflect = PadMode::Reflect;
        let two = pad_rows(vec![1., 10., 2., 20., 3., 30.].into(), 2, 1, 2, reflect);
        assert_eq!(two, [2., 20., 1., 10., 2., 20., 3., 30., 2., 20., 1., 10.]);
    }

    /// A small deterministic pseudo-random fill (values in [−1, 1)).
    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Rows convs against the definitions, summed naively: a dilated conv with reflect padding
    /// and an added start, and a transposed conv with its trims, over several shapes.
    #[test]
    fn row_convs_match_their_definitions() {
        for (channels_in, channels_out, kernel, dilation, len) in [
            (3, 5, 3, 1, 9),
            (8, 4, 3, 2, 40),
            (64, 1, 7, 1, 300),
            (32, 64, 1, 1, 130),
        ] {
            let total = (kernel - 1) * dilation;
            let conv = RowConv {
                taps: fill(kernel * channels_in * channels_out, 1),
                bias: fill(channels_out, 2),
                channels_in,
                kernel,
                dilation,
                left: total - total / 2,
                right: total / 2,
                edge: PadMode::Reflect,
            };
            let x = fill(len * channels_in, 3);
            let add = fill(len * channels_out, 4);
            let y = conv.forward(&x[..], true, Some(add.clone()));
            let mut padded = pad_rows(x.into(), channels_in, conv.left, conv.right, conv.edge);
            super::super::seanet::elu_in_place(&mut padded);
            for t in 0..len {
                for o in 0..channels_out {
                    let mut sum = (conv.bias[o] + add[t * channels_out + o]) as f64;
                    for k in 0..kernel {
                        for c in 0..channels_in {
                            let w = conv.taps[(k * channels_in + c) * channels_out + o];
                            sum += (w * padded[(t + k * dilation) * channels_in + c]) as f64;
                        }
                    }
                    let got = y[t * channels_out + o];
                    assert!(
                        (got as f64 - sum).abs() < 1e-4,
                        "conv {t},{o}: {got} vs {sum}"
                    );
                }
            }
        }
        for (channels_in, channels_out, stride, len) in
            [(6, 3, 2, 5), (16, 8, 4, 300), (32, 8, 8, 3)]
        {
            let kernel = 2 * stride;
            let (trim_left, trim_right) = (stride / 2, stride - stride / 2);
            let conv = RowTranspose {
                weight: fill(channels_in * kernel * channels_out, 5),
                kernel,
                bias: fill(channels_out, 6),
                channels_in,
                stride,
                trim_left,
                trim_right,
            };
            let mut x = fill(len * channels_in, 7);
            let y = conv.forward(x.clone());
            assert_eq!(y.len(), len * stride * channels_out);
            super::super::seanet::elu_in_place(&mut x);
            for u in 0..len * stride {
                for o in 0..channels_out {
                    let mut sum = conv.bias[o] as f64;
                    for t in 0..len {
                        let Some(k) = (u + trim_left).checked_sub(t * stride) else {
                            continue;
                        };
                        if k >= kernel {
                            continue;
                        }
                        for c in 0..channels_in {
                            let w = conv.weight[(c * kernel + k) * channels_out + o];
                            sum += (w * x[t * channels_in + c]) as f64;
                        }
                    }
                    let got = y[u * channels_out + o];
                    assert!(
                        (got as f64 - sum).abs() < 1e-4,
                        "transpose {u},{o}: {got} vs {sum}"
                    );
                }
            }
        }
    }
}
