//! EnCodec's convolutions: a weight-normalised `Conv1d` that pads its input itself
//! (`EncodecConv1d`) and a weight-normalised `ConvTranspose1d` that trims its output
//! (`EncodecConvTranspose1d`). The padding rules follow transformers'
//! `models/encodec/modeling_encodec.py` exactly, because they decide how many samples every
//! layer sees: one sample off at the input moves every frame boundary after it.

use burn::module::Param;
use burn::nn::PaddingConfig1d;
use burn::nn::conv::{Conv1d, ConvTranspose1d};
use burn::tensor::ops::PadMode as TensorPadding;
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::{EncodecConfig, PadMode};
use crate::error::LoadError;
use crate::matvec::{HostMatrix, WeightFormat};
use crate::nn::into_host_vec;
use crate::weights::Weights;

/// A conv's weights packed for the host's matrix × few-rows kernel ([`HostMatrix`]), which a
/// streamed frame's convs take on the CPU: they multiply big weights by one or a few output
/// positions, a product burn-flex's conv runs far from the bandwidth floor (musicgen-small's
/// first transposed conv, 1024 → 512 channels × 16 taps = 33.5 MB, took 11.6 ms a frame there;
/// its first conv 2.2 ms for 3.6 MB).
#[derive(Debug)]
struct HostWeights {
    matrix: HostMatrix,
    bias: Vec<f32>,
}

/// Up to this many output positions (batch × time) a conv with [`HostWeights`] takes the host
/// kernel; more go through burn's conv, which packs and tiles for them.
const HOST_ROWS: usize = 16;

/// Up to this many inputs a streamed transposed conv on host rows takes the host kernel
/// ([`EncodecConvTranspose1d::forward_host_rows`]); more take the row layers' matmul. A frame
/// pair (the CPU's streamed chunk) gives musicgen-small's second stage 17 inputs, its
/// weights 2.6 MB in bf16 against 5.2 MB as the row layers hold them.
const TRANSPOSE_HOST_ROWS: usize = 32;

/// The geometry of one conv layer, as the reference builds it.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub channels_in: usize,
    pub channels_out: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub dilation: usize,
}

impl ConvShape {
    pub fn new(channels_in: usize, channels_out: usize, kernel_size: usize) -> Self {
        Self {
            channels_in,
            channels_out,
            kernel_size,
            stride: 1,
            dilation: 1,
        }
    }

    pub fn with_stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    pub fn with_dilation(self, dilation: usize) -> Self {
        Self { dilation, ..self }
    }
}

/// `EncodecConv1d`: checkpoint keys `{prefix}.conv.weight_g|weight_v` and `{prefix}.conv.bias`.
#[derive(Debug)]
pub struct EncodecConv1d {
    conv: Conv1d,
    /// For the few-output-channel convs (the decoder's last, 64 → 1): the weight by tap,
    /// `[1, kernel · channels_out, channels_in]`, so the conv becomes one matmul plus `kernel`
    /// shifted adds of a single row. burn's im2col path takes 5× longer on that shape
    /// (87 ms against 17 ms for 10 s of audio).
    taps: Option<Tensor<3>>,
    /// Set by [`pack_for_host`](Self::pack_for_host) for the decoder's first conv.
    host: Option<HostWeights>,
    causal: bool,
    edge: PadMode,
    stride: usize,
    /// `(kernel_size − 1) · dilation + 1 − stride`: the padding that keeps
    /// `output_len = ceil(input_len / stride)`.
    padding_total: usize,
}

impl EncodecConv1d {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        edge: PadMode,
        shape: ConvShape,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let ConvShape {
            channels_in,
            channels_out,
            kernel_size,
            stride,
            dilation,
        } = shape;
        let weight = weights.weight_norm(
            &format!("{prefix}.conv"),
            [channels_out, channels_in, kernel_size],
            device,
        )?;
        let bias = weights.tensor(&format!("{prefix}.conv.bias"), [channels_out], device)?;
        let effective_kernel = (kernel_size - 1) * dilation + 1;
        let taps =
            (stride == 1 && kernel_size > 1 && channels_out <= TAPS_MAX_CHANNELS_OUT).then(|| {
                weight.clone().permute([2, 0, 1]).reshape([
                    1,
                    kernel_size * channels_out,
                    channels_in,
                ])
            });
        Ok(Self {
            taps,
            host: None,
            conv: Conv1d {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
                stride,
                kernel_size,
                dilation,
                groups: 1,
                padding: PaddingConfig1d::Valid,
            },
            causal: config.use_causal_conv,
            edge,
            stride,
            // A stride larger than the kernel would need negative padding; SEANet never
            // builds one (its strided convs have kernel = 2 · stride).
            padding_total: effective_kernel.saturating_sub(stride),
        })
    }

    /// # Shapes
    /// - `x`: `[batch, channels_in, len]`
    /// - returns `[batch, channels_out, ceil(len / stride)]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (left, right) = self.padding(x.dims()[2]);
        self.forward_padded(pad1d(x, left, right, self.edge))
    }

    /// The padding `forward` puts `(left, right)` of an input of `len` samples.
    fn padding(&self, len: usize) -> (usize, usize) {
        let (left, right) = self.reach();
        (left, right + extra_padding_for_conv1d(len, self.stride))
    }

    /// The conv over an input that is already padded (every output is a full window): what
    /// `forward` runs after padding, and what a streamed layer runs on its carried window.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels_in, len]`, `len ≥ (kernel_size − 1) · dilation + 1`
    /// - returns `[batch, channels_out, (len − (kernel_size − 1) · dilation − 1) / stride + 1]`
    pub(super) fn forward_padded(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, _, len] = x.dims();
        let span = (self.conv.kernel_size - 1) * self.conv.dilation;
        match (&self.host, &self.taps) {
            (Some(host), _) if batch * (len - span) <= HOST_ROWS => self.forward_host(host, x),
            (_, Some(taps)) => self.forward_by_taps(x, taps.clone()),
            _ => self.conv.forward(x),
        }
    }

    /// On the host (`device` is burn-flex), pack the weights for streamed frames' few-output
    /// products (see [`HostWeights`]); elsewhere a no-op. Only the decoder's first conv pays the
    /// copy: the encoder never streams, and the stride-1 convs after the LSTM stream on the row
    /// layers on the host (`SeanetDecoder::upsample_streamed_rows`).
    pub(super) fn pack_for_host(&mut self, device: &Device) {
        if !crate::nn::is_host(device) || self.stride != 1 {
            return;
        }
        let [channels_out, channels_in, kernel] = self.conv.weight.val().dims();
        // `[channels_out, channels_in · kernel]` row-major is the weight as stored.
        let weight = into_host_vec(self.conv.weight.val());
        let bias = match &self.conv.bias {
            Some(bias) => into_host_vec(bias.val()),
            None => vec![0.0; channels_out],
        };
        let matrix = HostMatrix::pack(
            &weight,
            channels_in * kernel,
            channels_out,
            WeightFormat::F32,
        );
        self.host = Some(HostWeights { matrix, bias });
    }

    /// The stride-1 conv of a padded input as one host product: each output position's
    /// receptive field, `[channels_in, kernel]` as the weight's rows are laid out, is a row.
    fn forward_host(&self, host: &HostWeights, x: Tensor<3>) -> Tensor<3> {
        let [batch, channels_in, len] = x.dims();
        let (kernel, dilation) = (self.conv.kernel_size, self.conv.dilation);
        let outputs = len - (kernel - 1) * dilation;
        let device = x.device();
        let values = into_host_vec(x);
        let mut fields = Vec::with_capacity(batch * outputs * channels_in * kernel);
        for b in 0..batch {
            for t in 0..outputs {
                for c in 0..channels_in {
                    let row = &values[(b * channels_in + c) * len + t..];
                    fields.extend((0..kernel).map(|k| row[k * dilation]));
                }
            }
        }
        let y = host
            .matrix
            .matmul(&fields, batch * outputs, Some(&host.bias));
        let channels_out = host.bias.len();
        Tensor::<3>::from_data(TensorData::new(y, [batch, outputs, channels_out]), &device)
            .swap_dims(1, 2)
    }

    /// The weight (`[channels_out, channels_in, kernel]`), the bias and the dilation, for
    /// [`RowConv`](super::rows::RowConv), which takes stride-1 convs only.
    pub(super) fn parts(&self) -> (Tensor<3>, Vec<f32>, usize) {
        debug_assert_eq!(self.stride, 1, "row convs have stride 1");
        let weight = self.conv.weight.val();
        let bias = match &self.conv.bias {
            Some(bias) => into_host_vec(bias.val()),
            None => vec![0.0; weight.dims()[0]],
        };
        (weight, bias, self.conv.dilation)
    }

    pub(super) fn edge(&self) -> PadMode {
        self.edge
    }

    /// How many input steps before and after its own position one output reads, for a
    /// stride-1 conv: the fixed padding on each side (the reference puts the odd sample on the
    /// left). Outputs that far from a cut see no padding.
    pub fn reach(&self) -> (usize, usize) {
        if self.causal {
            (self.padding_total, 0)
        } else {
            let right = self.padding_total / 2;
            (self.padding_total - right, right)
        }
    }

    /// An empty [`StreamedInput`] for this conv, which must have stride 1 (every conv the
    /// SEANet decoder runs after its LSTM, and its first conv, has).
    pub(super) fn streamed_input<S>(&self) -> StreamedInput<S> {
        debug_assert_eq!(self.stride, 1, "streamed convs have stride 1");
        let (left, right) = self.reach();
        StreamedInput {
            left,
            right,
            edge: self.edge,
            buffer: None,
            received: 0,
            started: false,
        }
    }

    /// `y[:, o, t] = b[o] + Σ_k (W_k x)[o, t + k · dilation]`, with every `W_k x` from one matmul.
    fn forward_by_taps(&self, x: Tensor<3>, taps: Tensor<3>) -> Tensor<3> {
        let (kernel, dilation) = (self.conv.kernel_size, self.conv.dilation);
        let channels_out = taps.dims()[1] / kernel;
        let len_out = x.dims()[2] + 1 - ((kernel - 1) * dilation + 1);
        let per_tap = taps.matmul(x); // [batch, kernel · channels_out, padded_len]
        let tap = |k: usize| {
            per_tap
                .clone()
                .narrow(1, k * channels_out, channels_out)
                .narrow(2, k * dilation, len_out)
        };
        let mut y = tap(0);
        for k in 1..kernel {
            y = y + tap(k);
        }
        match &self.conv.bias {
            Some(bias) => y + bias.val().reshape([1, channels_out, 1]),
            None => y,
        }
    }
}

/// The input of a stride-1 [`EncodecConv1d`] arriving piece by piece, padded exactly as
/// `forward` pads the whole input, so that `forward_padded` of each window [`push`] returns
/// gives the outputs that just became final and equal the whole input's.
///
/// Output `t` reads input `t − left ..= t + right`, so it is final once input `t + right` is in
/// (or the input has ended). The window handed out runs from the first output not yet given
/// out, `left + right` samples of context included; those samples are kept for the next piece.
///
/// The ends are the whole input's: the left padding is added once the input is known to be
/// longer than the larger padding (reflect padding needs that many samples, and a whole input
/// no longer than it takes the reference's short-input rule instead, see [`pad1d`]), and the
/// right padding at the end. Until then nothing is given out, which delays only the first
/// outputs of a causal conv with reflect padding (a non-causal one needs `right` inputs ahead
/// anyway, and `left ≤ right + 1`).
///
/// [`push`]: StreamedInput::push
#[derive(Debug, Clone)]
pub(super) struct StreamedInput<S = Tensor<3>> {
    left: usize,
    right: usize,
    edge: PadMode,
    /// Before `started` the raw input so far; after it the padded input from the position of
    /// the next output on (its window's first sample).
    buffer: Option<S>,
    /// Input samples received.
    received: usize,
    /// The left padding has been added.
    started: bool,
}

impl<S: Signal> StreamedInput<S> {
    /// Padded positions before an output's own: where its input sample sits in its window.
    pub(super) fn left(&self) -> usize {
        self.left
    }

    /// Samples of context a window holds beyond its outputs: `len − outputs`.
    pub(super) fn context(&self) -> usize {
        self.left + self.right
    }

    /// Outputs final once `received` input samples are in (and more may follow), and whether
    /// the left padding could be added by then: the count [`push`] gives out, for working out
    /// a stream's look-ahead without running it.
    ///
    /// [`push`]: StreamedInput::push
    pub(super) fn outputs_final(&self, received: usize) -> (usize, bool) {
        if received <= self.left.max(self.right) {
            (0, false)
        } else {
            (received - self.right, true)
        }
    }

    /// Append `x: [batch, channels, len]` (`None`: no new input) and return the window whose
    /// full windows are the outputs that became final, in order; `end`: the input ends here,
    /// so the rest are final. `None` when no output became final.
    pub(super) fn push(&mut self, x: Option<S>, end: bool) -> Option<S> {
        let mut window = append(&mut self.buffer, &mut self.received, x)?;
        if !self.started {
            if end {
                // The whole input, padded as `forward` pads it (short-input rule included).
                self.started = true;
                return Some(window.padded(self.left, self.right, self.edge));
            }
            if self.outputs_final(self.received).0 == 0 {
                self.buffer = Some(window);
                return None;
            }
            window = window.padded(self.left, 0, self.edge);
            self.started = true;
        } else if end {
            // Reflecting reads the last `right + 1` samples, all input: the buffer holds at
            // least `left + right` input samples once started, and `left ≥ 1` when `right ≥ 1`.
            window = window.padded(0, self.right, self.edge);
        }
        let (len, context) = (window.steps(), self.context());
        if len <= context {
            if !end {
                self.buffer = Some(window);
            }
            return None;
        }
        if !end && context > 0 {
            self.buffer = Some(window.last(context));
        }
        Some(window)
    }
}

/// A piece of a signal that a streamed layer carries and extends: burn tensors `[batch,
/// channels, len]`, or one signal's host rows ([`super::rows::Rows`], time-major).
pub(super) trait Signal: Sized {
    /// Time steps.
    fn steps(&self) -> usize;
    /// `self`, then `next`.
    fn then(self, next: Self) -> Self;
    /// The last `n` steps.
    fn last(&self, n: usize) -> Self;
    /// `left` steps before and `right` after, as [`pad1d`] pads.
    fn padded(self, left: usize, right: usize, edge: PadMode) -> Self;
}

impl Signal for Tensor<3> {
    fn steps(&self) -> usize {
        self.dims()[2]
    }

    fn then(self, next: Self) -> Self {
        Tensor::cat(vec![self, next], 2)
    }

    fn last(&self, n: usize) -> Self {
        let len = self.dims()[2];
        self.clone().narrow(2, len - n, n)
    }

    fn padded(self, left: usize, right: usize, edge: PadMode) -> Self {
        pad1d(self, left, right, edge)
    }
}

/// A streamed layer's carried input (taken out of `buffer`) followed by the new input `x`,
/// counted into `received`; `None` when there is neither.
fn append<S: Signal>(buffer: &mut Option<S>, received: &mut usize, x: Option<S>) -> Option<S> {
    if let Some(x) = &x {
        *received += x.steps();
    }
    match (buffer.take(), x) {
        (Some(buffer), Some(x)) => Some(buffer.then(x)),
        (buffer, x) => buffer.or(x),
    }
}

/// Up to this many output channels `EncodecConv1d` convolves tap by tap (see `taps`).
const TAPS_MAX_CHANNELS_OUT: usize = 4;

/// `_get_extra_padding_for_conv1d`: the right padding that makes the last window complete,
/// so no input sample is dropped. The reference computes
/// `ceil((len − kernel + padding_total) / stride + 1) − 1` frames in floating point; with
/// `padding_total = kernel − stride` that is `ceil(len / stride) − 1`, exact in integers.
fn extra_padding_for_conv1d(len: usize, stride: usize) -> usize {
    len.div_ceil(stride) * stride - len
}

/// `_pad1d`: pad the last axis. Reflect padding needs more samples than it adds; on a shorter
/// input the reference first appends zeros, reflects, and then cuts the zeros' share off the
/// end again, so the small-input case matches it sample for sample.
///
/// # Shapes
/// - `x`: `[batch, channels, len]`
/// - returns `[batch, channels, left + len + right]`
fn pad1d(x: Tensor<3>, left: usize, right: usize, edge: PadMode) -> Tensor<3> {
    if left == 0 && right == 0 {
        return x;
    }
    match edge {
        PadMode::Constant => x.pad([(left, right)], TensorPadding::Constant(0.0)),
        PadMode::Reflect => {
            let len = x.dims()[2];
            let max_pad = left.max(right);
            if len > max_pad {
                return x.pad([(left, right)], TensorPadding::Reflect);
            }
            let zeros = max_pad - len + 1;
            let padded = x
                .pad([(0, zeros)], TensorPadding::Constant(0.0))
                .pad([(left, right)], TensorPadding::Reflect);
            let end = padded.dims()[2] - zeros;
            padded.narrow(2, 0, end)
        }
    }
}

/// `EncodecConvTranspose1d`: checkpoint keys `{prefix}.conv.weight_g|weight_v` (weight
/// `[channels_in, channels_out, kernel]`, normalised over the input channel as PyTorch's
/// `weight_norm(dim=0)` does) and `{prefix}.conv.bias`.
#[derive(Debug)]
pub struct EncodecConvTranspose1d {
    conv: ConvTranspose1d,
    /// Set by [`pack_for_host`](Self::pack_for_host) for the decoder.
    host: Option<HostWeights>,
    trim_left: usize,
    trim_right: usize,
}

impl EncodecConvTranspose1d {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        shape: ConvShape,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let ConvShape {
            channels_in,
            channels_out,
            kernel_size,
            stride,
            ..
        } = shape;
        let weight = weights.weight_norm(
            &format!("{prefix}.conv"),
            [channels_in, channels_out, kernel_size],
            device,
        )?;
        let bias = weights.tensor(&format!("{prefix}.conv.bias"), [channels_out], device)?;
        // Only the fixed padding is trimmed here; the encoder's extra right padding stays in the
        // output, as in the reference (decoded audio is `frames · hop_length` samples).
        let padding_total = kernel_size.saturating_sub(stride);
        let trim_right = if config.use_causal_conv {
            (padding_total as f64 * config.trim_right_ratio).ceil() as usize
        } else {
            padding_total / 2
        };
        Ok(Self {
            host: None,
            conv: ConvTranspose1d {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
                stride,
                kernel_size,
                dilation: 1,
                groups: 1,
                padding: 0,
                padding_out: 0,
                channels: [channels_in, channels_out],
            },
            trim_left: padding_total - trim_right.min(padding_total),
            trim_right: trim_right.min(padding_total),
        })
    }

    /// # Shapes
    /// - `x`: `[batch, channels_in, len]`
    /// - returns `[batch, channels_out, len · stride]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = self.conv.forward(x);
        let len = y.dims()[2];
        y.narrow(2, self.trim_left, len - self.trim_left - self.trim_right)
    }

    /// The weight (`[channels_in, channels_out, kernel]`, as rounded by `pack_for_host`), the
    /// bias, the stride and the trims `(left, right)`, for
    /// [`RowTranspose`](super::rows::RowTranspose).
    pub(super) fn parts(&self) -> (Tensor<3>, Vec<f32>, usize, (usize, usize)) {
        let weight = self.conv.weight.val();
        let bias = match &self.conv.bias {
            Some(bias) => into_host_vec(bias.val()),
            None => vec![0.0; weight.dims()[1]],
        };
        let trims = (self.trim_left, self.trim_right);
        (weight, bias, self.conv.stride, trims)
    }

    /// Inputs before the newest that still add to outputs not yet final: the untrimmed output
    /// `u` sums inputs `⌈(u + 1 − kernel) / stride⌉ ..= ⌊u / stride⌋`, so once the outputs
    /// before `received · stride` are out, the next ones read back this far (1 for SEANet's
    /// kernel = 2 · stride).
    fn overlap_inputs(&self) -> usize {
        (self.conv.kernel_size - 1) / self.conv.stride
    }

    /// Trimmed outputs final once `received` inputs are in and more may follow (see
    /// [`forward_streamed`](Self::forward_streamed)).
    pub(super) fn outputs_final(&self, received: usize) -> usize {
        (received * self.conv.stride).saturating_sub(self.trim_left)
    }

    /// `forward` of an input that arrives piece by piece: appends `x: [batch, channels_in,
    /// len]` (`None`: no new input) to `state` and returns the trimmed outputs that became
    /// final, in order, or `None` if none did; `end`: the input ends here.
    ///
    /// An untrimmed output is final once the input at `⌊u / stride⌋` is in, so each input
    /// finishes `stride` outputs; the input carried in `state` supplies the overlap with the
    /// earlier ones (carrying inputs rather than overlapped output sums keeps the bias out of
    /// the bookkeeping, and the conv gives each output its whole sum at once). At the end, the
    /// outputs past the last input's `stride` up to the right trim are final too: the
    /// `trim_left` samples the first trim held back.
    pub(super) fn forward_streamed(
        &self,
        state: &mut StreamedTranspose,
        x: Option<Tensor<3>>,
        end: bool,
    ) -> Option<Tensor<3>> {
        let (window, from, count) = self.streamed_window(state, x, end)?;
        Some(match &self.host {
            Some(host) if window.dims()[0] * window.dims()[2] <= HOST_ROWS => {
                self.forward_host(host, window, from, count)
            }
            _ => self.conv.forward(window).narrow(2, from, count),
        })
    }

    /// [`forward_streamed`](Self::forward_streamed)'s bookkeeping, for tensors or host rows:
    /// appends `x` to `state` and returns the window of inputs whose untrimmed outputs `from ..
    /// from + count` became final, `(window, from, count)`, or `None` if none did.
    pub(super) fn streamed_window<S: Signal>(
        &self,
        state: &mut StreamedTranspose<S>,
        x: Option<S>,
        end: bool,
    ) -> Option<(S, usize, usize)> {
        let window = append(&mut state.buffer, &mut state.received, x)?;
        let (stride, kernel) = (self.conv.stride, self.conv.kernel_size);
        let len = window.steps();
        let first = state.received - len;
        if !end {
            let keep = self.overlap_inputs().min(len);
            state.buffer = (keep > 0).then(|| window.last(keep));
        }
        // Untrimmed output positions: the next one not given out, and the end of the final ones.
        let from = state.emitted + self.trim_left;
        let to = if end {
            (state.received - 1) * stride + kernel - self.trim_right
        } else {
            state.received * stride
        };
        if to <= from {
            return None;
        }
        let count = to - from;
        state.emitted += count;
        // The window's outputs start at its first input's.
        Some((window, from - first * stride, count))
    }

    /// On the host (`device` is burn-flex), pack the weights for streamed frames' few-input
    /// products (see [`HostWeights`]) in `format` (f32 or bf16), and round the conv's own
    /// weights to it, so that batch and streamed decodes multiply by the same values; elsewhere
    /// a no-op.
    pub(super) fn pack_for_host(&mut self, device: &Device, format: WeightFormat) {
        if !crate::nn::is_host(device) {
            return;
        }
        let [channels_in, channels_out, kernel] = self.conv.weight.val().dims();
        if format != WeightFormat::F32 {
            let rounded = format.round_float(into_host_vec(self.conv.weight.val()));
            self.conv.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(rounded, [channels_in, channels_out, kernel]),
                device,
            ));
        }
        // Rows `(o, k)`, one per output channel and tap, each over the input channels.
        let weight = into_host_vec(self.conv.weight.val().permute([1, 2, 0]));
        let bias = match &self.conv.bias {
            Some(bias) => into_host_vec(bias.val()),
            None => vec![0.0; channels_out],
        };
        let matrix = HostMatrix::pack(&weight, channels_in, channels_out * kernel, format);
        self.host = Some(HostWeights { matrix, bias });
    }

    /// Untrimmed outputs `from .. from + count` of the transposed conv of `x`, by one host
    /// product (every input's `kernel` taps of every output channel) and the overlap-add of
    /// the taps that land in that range.
    fn forward_host(
        &self,
        host: &HostWeights,
        x: Tensor<3>,
        from: usize,
        count: usize,
    ) -> Tensor<3> {
        let [batch, channels_in, len] = x.dims();
        let channels_out = host.bias.len();
        let device = x.device();
        let rows = into_host_vec(x.swap_dims(1, 2)); // [batch, len, channels_in]
        let mut y = vec![0.0f32; batch * channels_out * count];
        for b in 0..batch {
            let rows = &rows[b * len * channels_in..][..len * channels_in];
            let outputs = self.host_rows(host, rows, from, count);
            for (t, row) in outputs.chunks_exact(channels_out).enumerate() {
                for (o, &v) in row.iter().enumerate() {
                    y[(b * channels_out + o) * count + t] = v;
                }
            }
        }
        Tensor::from_data(TensorData::new(y, [batch, channels_out, count]), &device)
    }

    /// Untrimmed outputs `from .. from + count` of the transposed conv of one signal's host
    /// rows `x` (`[len, channels_in]`), time-major (`[count, channels_out]`), by the host kernel:
    /// `None` without packed weights ([`pack_for_host`](Self::pack_for_host)) or past
    /// [`TRANSPOSE_HOST_ROWS`] inputs.
    pub(super) fn forward_host_rows(
        &self,
        x: &[f32],
        from: usize,
        count: usize,
    ) -> Option<Vec<f32>> {
        let host = self.host.as_ref()?;
        (x.len() <= TRANSPOSE_HOST_ROWS * self.conv.channels[0])
            .then(|| self.host_rows(host, x, from, count))
    }

    /// [`forward_host_rows`](Self::forward_host_rows) by `host`: one product (every input's
    /// `kernel` taps of every output channel), then per output the bias and the taps that land
    /// on it, input by input.
    fn host_rows(&self, host: &HostWeights, x: &[f32], from: usize, count: usize) -> Vec<f32> {
        let (stride, kernel) = (self.conv.stride, self.conv.kernel_size);
        let channels_out = host.bias.len();
        let len = x.len() / self.conv.channels[0];
        let taps = host.matrix.matmul(x, len, None); // [len, out · kernel]
        let mut y = Vec::with_capacity(count * channels_out);
        for _ in 0..count {
            y.extend_from_slice(&host.bias);
        }
        for i in 0..len {
            // Taps k with from ≤ i · stride + k < from + count.
            let start = i * stride;
            let k0 = from.saturating_sub(start);
            let k1 = (from + count).saturating_sub(start).min(kernel);
            for (o, tap) in taps[i * channels_out * kernel..][..channels_out * kernel]
                .chunks_exact(kernel)
                .enumerate()
            {
                for k in k0..k1 {
                    y[(start + k - from) * channels_out + o] += tap[k];
                }
            }
        }
        y
    }
}

/// What [`EncodecConvTranspose1d::forward_streamed`] carries from piece to piece.
#[derive(Debug, Clone)]
pub(super) struct StreamedTranspose<S = Tensor<3>> {
    /// The last inputs, which still add to outputs not yet given out.
    buffer: Option<S>,
    /// Inputs received.
    received: usize,
    /// Trimmed outputs given out.
    emitted: usize,
}

impl<S> Default for StreamedTranspose<S> {
    fn default() -> Self {
        Self {
            buffer: None,
            received: 0,
            emitted: 0,
        }
    }
}

/// `(input, left, right, edge, padded)`.
#[cfg(test)]
pub(super) type ReferencePadding = (&'static [f32], usize, usize, PadMode, &'static [f32]);

/// [`ReferencePadding`]s as transformers' `EncodecConv1d._pad1d` printed them,
/// short inputs included: what `pad1d` and the row layers' padding must give.
#[cfg(test)]
pub(super) const REFERENCE_PADDINGS: [ReferencePadding; 4] = [
    (
        &[1., 2., 3.],
        2,
        2,
        PadMode::Reflect,
        &[3., 2., 1., 2., 3., 2., 1.],
    ),
    (
        &[1., 2., 3.],
        5,
        4,
        PadMode::Reflect,
        &[0., 0., 0., 3., 2., 1., 2., 3., 0., 0., 0., 0.],
    ),
    (&[7.], 3, 3, PadMode::Reflect, &[0., 0., 0., 7., 0., 0., 0.]),
    (&[1., 2.], 1, 0, PadMode::Constant, &[0., 1., 2.]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn padded(values: &[f32], left: usize, right: usize, edge: PadMode) -> Vec<f32> {
        let device = Device::default();
        let x = Tensor::<3>::from_data(
            TensorData::new(values.to_vec(), [1, 1, values.len()]),
            &device,
        );
        pad1d(x, left, right, edge)
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 tensor")
    }

    #[test]
    fn reflect_padding_matches_the_reference_including_short_inputs() {
        for (input, left, right, edge, expected) in REFERENCE_PADDINGS {
            assert_eq!(
                padded(input, left, right, edge),
                expected,
                "{input:?} {left} {right}"
            );
        }
    }

    /// The tap-by-tap path against burn's conv, with what the fixtures do not cover: dilation,
    /// a batch of two, several output channels.
    #[test]
    fn tap_by_tap_conv_matches_burn_conv() {
        use burn::tensor::Distribution;
        let device = Device::default();
        let (channels_in, channels_out, kernel, dilation) = (5, 3, 3, 2);
        let weight = Tensor::<3>::random(
            [channels_out, channels_in, kernel],
            Distribution::Default,
            &device,
        );
        let bias = Tensor::<1>::random([channels_out], Distribution::Default, &device);
        let conv = |taps: bool| EncodecConv1d {
            conv: Conv1d {
                weight: Param::from_tensor(weight.clone()),
                bias: Some(Param::from_tensor(bias.clone())),
                stride: 1,
                kernel_size: kernel,
                dilation,
                groups: 1,
                padding: PaddingConfig1d::Valid,
            },
            host: None,
            taps: taps.then(|| {
                weight
                    .clone()
                    .permute([2, 0, 1])
                    .reshape([1, kernel * channels_out, channels_in])
            }),
            causal: false,
            edge: PadMode::Reflect,
            stride: 1,
            padding_total: (kernel - 1) * dilation,
        };
        let x = Tensor::<3>::random([2, channels_in, 37], Distribution::Default, &device);
        let by_taps = conv(true).forward(x.clone());
        let by_burn = conv(false).forward(x);
        assert_eq!(by_taps.dims(), [2, channels_out, 37]);
        let err = (by_taps - by_burn).abs().max().into_scalar::<f32>();
        assert!(err < 1e-5, "max abs err {err}");
    }

    /// `forward_padded` over `StreamedInput` windows, the input cut into `pieces`.
    fn streamed_conv(conv: &EncodecConv1d, x: &Tensor<3>, pieces: usize) -> Tensor<3> {
        let len = x.dims()[2];
        let mut input = conv.streamed_input();
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let n = pieces.min(len - at);
            let end = at + n == len;
            let piece = (n > 0).then(|| x.clone().narrow(2, at, n));
            at += n;
            out.extend(input.push(piece, end).map(|w| conv.forward_padded(w)));
            if end {
                return Tensor::cat(out, 2);
            }
        }
    }

    fn random_conv(shape: ConvShape, causal: bool, edge: PadMode, host: bool) -> EncodecConv1d {
        use burn::tensor::Distribution;
        let device = Device::default();
        let ConvShape {
            channels_in,
            channels_out,
            kernel_size,
            dilation,
            ..
        } = shape;
        let weight = Tensor::<3>::random(
            [channels_out, channels_in, kernel_size],
            Distribution::Default,
            &device,
        );
        let bias = Tensor::<1>::random([channels_out], Distribution::Default, &device);
        let mut conv = EncodecConv1d {
            conv: Conv1d {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
                stride: 1,
                kernel_size,
                dilation,
                groups: 1,
                padding: PaddingConfig1d::Valid,
            },
            taps: None,
            host: None,
            causal,
            edge,
            stride: 1,
            padding_total: (kernel_size - 1) * dilation,
        };
        if host {
            conv.pack_for_host(&device);
            assert!(conv.host.is_some(), "the default device is the host");
        }
        conv
    }

    /// A streamed conv gives the whole input's outputs for what the fixtures leave out:
    /// dilation, an odd padding (one more sample on the left), a batch of two, the host
    /// kernel and burn's conv, inputs shorter than the padding, and causal convs.
    #[test]
    fn streamed_conv_equals_the_whole_input_conv() {
        use burn::tensor::Distribution;
        let device = Device::default();
        for (kernel, dilation) in [(3, 2), (4, 1), (7, 1), (1, 1)] {
            for causal in [false, true] {
                for edge in [PadMode::Reflect, PadMode::Constant] {
                    for host in [false, true] {
                        let shape = ConvShape::new(5, 3, kernel).with_dilation(dilation);
                        let conv = random_conv(shape, causal, edge, host);
                        for len in [1, 2, 3, 4, 7, 41] {
                            let x =
                                Tensor::<3>::random([2, 5, len], Distribution::Default, &device);
                            let whole = conv.forward(x.clone());
                            for pieces in [1, 2, 3, 40] {
                                let streamed = streamed_conv(&conv, &x, pieces);
                                assert_eq!(streamed.dims(), whole.dims());
                                let err =
                                    (streamed - whole.clone()).abs().max().into_scalar::<f32>();
                                assert!(
                                    err < 1e-5,
                                    "k {kernel} d {dilation} causal {causal} {edge:?} host \
                                     {host}, {len} in pieces of {pieces}: max abs err {err}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// A streamed transposed conv gives the whole input's trimmed outputs, for SEANet's
    /// kernel = 2 · stride and a kernel that overlaps two inputs back, causal trims (all on the
    /// right, or split) and the non-causal split, with the host kernel and burn's conv.
    #[test]
    fn streamed_transposed_conv_equals_the_whole_input_one() {
        use burn::tensor::Distribution;
        let device = Device::default();
        for kernel in [6, 7] {
            for (trim_left, trim_right) in [(0, kernel - 3), (1, kernel - 4), (2, kernel - 5)] {
                for host in [false, true] {
                    let weight =
                        Tensor::<3>::random([5, 3, kernel], Distribution::Default, &device);
                    let bias = Tensor::<1>::random([3], Distribution::Default, &device);
                    let mut conv = EncodecConvTranspose1d {
                        conv: ConvTranspose1d {
                            weight: Param::from_tensor(weight),
                            bias: Some(Param::from_tensor(bias)),
                            stride: 3,
                            kernel_size: kernel,
                            dilation: 1,
                            groups: 1,
                            padding: 0,
                            padding_out: 0,
                            channels: [5, 3],
                        },
                        host: None,
                        trim_left,
                        trim_right,
                    };
                    if host {
                        conv.pack_for_host(&device, WeightFormat::F32);
                    }
                    for len in [1, 2, 5, 30] {
                        let x = Tensor::<3>::random([2, 5, len], Distribution::Default, &device);
                        let whole = conv.forward(x.clone());
                        for pieces in [1, 2, 20] {
                            let mut state = StreamedTranspose::default();
                            let mut out = Vec::new();
                            for at in (0..len).step_by(pieces) {
                                let n = pieces.min(len - at);
                                let piece = x.clone().narrow(2, at, n);
                                out.extend(conv.forward_streamed(&mut state, Some(piece), false));
                                let final_ = conv.outputs_final(at + n);
                                assert_eq!(state.emitted, final_, "outputs_final counts them");
                            }
                            out.extend(conv.forward_streamed(&mut state, None, true));
                            let streamed = Tensor::cat(out, 2);
                            assert_eq!(streamed.dims(), whole.dims());
                            let err = (streamed - whole.clone()).abs().max().into_scalar::<f32>();
                            assert!(
                                err < 1e-5,
                                "kernel {kernel}, trims {trim_left} {trim_right}, host {host}, \
                                 {len} in pieces of {pieces}: max abs err {err}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn extra_padding_completes_the_last_window() {
        assert_eq!(extra_padding_for_conv1d(16320, 640), 320);
        assert_eq!(extra_padding_for_conv1d(16, 8), 0);
        assert_eq!(extra_padding_for_conv1d(17, 8), 7);
        assert_eq!(extra_padding_for_conv1d(3, 1), 0);
    }
}
