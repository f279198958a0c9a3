//! The SEANet encoder and decoder of EnCodec (`EncodecEncoder`, `EncodecDecoder`,
//! `EncodecResnetBlock` in transformers' `modeling_encodec.py`).
//!
//! The reference keeps each stack as one `layers` list in which ELUs take an index but hold no
//! weights; the structs below name the parts instead and keep the running index only to form
//! the checkpoint keys (`encoder.layers.13.lstm.weight_ih_l0`).

use burn::tensor::activation::elu;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use super::conv::{
    ConvShape, EncodecConv1d, EncodecConvTranspose1d, StreamedInput, StreamedTranspose,
};
use super::lstm::{EncodecLstm, LstmState};
use super::rows::{RowBlock, RowConv, RowDecoder, RowTranspose, Rows};
use crate::config::{EncodecConfig, PadMode};
use crate::error::LoadError;
use crate::matvec::WeightFormat;
use crate::nn::{exp_f32, into_host_vec, is_host, map_in_place};
use crate::weights::Weights;

/// Values per parallel piece of [`elu1`] (64 KiB), and the fewest it splits.
const ELU_PARALLEL: usize = 1 << 14;

/// `ELU(x) = x` for `x > 0`, else `e^x − 1` (α = 1, as SEANet uses it).
///
/// On the CPU it is one pass over host values with the branch-free [`exp_f32`]
/// (within 2 ulp): burn's `elu` is several tensor-wide ops (a comparison, `exp`
/// through libm, a subtraction, a masked select), and SEANet applies it to every layer's
/// input, up to 64 channels at 32 kHz (10 s decoded: 1.31 → 1.20 s with the pass split over
/// rayon's threads, against one thread).
fn elu1<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !is_host(&device) {
        return elu(x, 1.0);
    }
    let dims = x.dims();
    let mut values = into_host_vec(x);
    // A streamed frame's few values in place; a batch decode's megabytes on rayon's threads.
    if values.len() < ELU_PARALLEL {
        elu_in_place(&mut values);
    } else {
        values.par_chunks_mut(ELU_PARALLEL).for_each(elu_in_place);
    }
    Tensor::from_data(TensorData::new(values, dims), &device)
}

/// [`elu1`] of host values, on the calling thread.
pub(super) fn elu_in_place(values: &mut [f32]) {
    map_in_place(values, |v| {
        let negative = exp_f32(v.min(0.0)) - 1.0;
        if v > 0.0 { v } else { negative }
    })
}

/// `EncodecResnetBlock`: `ELU → conv(k = residual_kernel_size, dilation) → ELU → conv(k = 1)`,
/// plus the input (through a 1×1 conv when `use_conv_shortcut`). Keys `{prefix}.block.1`,
/// `{prefix}.block.3` (0 and 2 are the ELUs) and `{prefix}.shortcut`.
#[derive(Debug)]
pub struct ResnetBlock {
    block_1: EncodecConv1d,
    block_3: EncodecConv1d,
    shortcut: Option<EncodecConv1d>,
}

impl ResnetBlock {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        edge: PadMode,
        dim: usize,
        dilation: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let hidden = dim / config.compress;
        let block_1 = EncodecConv1d::load(
            weights,
            &format!("{prefix}.block.1"),
            config,
            edge,
            ConvShape::new(dim, hidden, config.residual_kernel_size).with_dilation(dilation),
            device,
        )?;
        let block_3 = EncodecConv1d::load(
            weights,
            &format!("{prefix}.block.3"),
            config,
            edge,
            ConvShape::new(hidden, dim, 1),
            device,
        )?;
        let shortcut = if config.use_conv_shortcut {
            Some(EncodecConv1d::load(
                weights,
                &format!("{prefix}.shortcut"),
                config,
                edge,
                ConvShape::new(dim, dim, 1),
                device,
            )?)
        } else {
            None
        };
        Ok(Self {
            block_1,
            block_3,
            shortcut,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, dim, len]`
    /// - returns `[batch, dim, len]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let residual = match &self.shortcut {
            Some(conv) => conv.forward(x.clone()),
            None => x.clone(),
        };
        let x = self.block_1.forward(elu1(x));
        let x = self.block_3.forward(elu1(x));
        residual + x
    }

    /// `forward` of an input that arrives piece by piece: appends `x` (`None`: no new input)
    /// to `input` (from `streamed_input`) and returns the outputs that became final, or
    /// `None`; `end`: the input ends here.
    ///
    /// The block's delay is its dilated conv's right reach, so the input itself is carried:
    /// one window feeds the branch, and the skip is the window's inputs at the outputs'
    /// positions, delayed with it. The window is padded before the ELU where `forward` pads
    /// after it; both paddings copy input samples or add zeros, which the ELU keeps at zero,
    /// so the values are the same.
    fn forward_streamed(
        &self,
        input: &mut StreamedInput,
        x: Option<Tensor<3>>,
        end: bool,
    ) -> Option<Tensor<3>> {
        let window = input.push(x, end)?;
        let outputs = window.dims()[2] - input.context();
        let skip = window.clone().narrow(2, input.left(), outputs);
        let residual = match &self.shortcut {
            Some(conv) => conv.forward(skip),
            None => skip,
        };
        let x = self.block_1.forward_padded(elu1(window));
        Some(residual + self.block_3.forward(elu1(x)))
    }

    /// An empty input for [`forward_streamed`](Self::forward_streamed) (or the row block's).
    fn streamed_input<S>(&self) -> StreamedInput<S> {
        self.block_1.streamed_input()
    }
}

/// The residual blocks of one resolution, `dilation_growth_rate^j` for block `j`.
fn load_residual_blocks(
    weights: &Weights,
    prefix: &str,
    config: &EncodecConfig,
    edge: PadMode,
    dim: usize,
    index: &mut usize,
    device: &Device,
) -> Result<Vec<ResnetBlock>, LoadError> {
    (0..config.num_residual_layers)
        .map(|j| {
            let dilation = config.dilation_growth_rate.pow(j as u32);
            let block = ResnetBlock::load(
                weights,
                &format!("{prefix}.layers.{index}"),
                config,
                edge,
                dim,
                dilation,
                device,
            );
            *index += 1;
            block
        })
        .collect()
}

/// One encoder resolution: residual blocks, then ELU and a strided conv that halves the time
/// resolution by `ratio` and doubles the channels.
#[derive(Debug)]
struct DownsampleStage {
    residual_blocks: Vec<ResnetBlock>,
    downsample: EncodecConv1d,
}

/// `EncodecEncoder`: `[batch, audio_channels, samples]` → `[batch, hidden_size, frames]`.
/// Keys `{prefix}.layers.{i}`: conv, per ratio (reversed `upsampling_ratios`) the residual
/// blocks, ELU and strided conv, then LSTM, ELU and the final conv.
#[derive(Debug)]
pub struct SeanetEncoder {
    first_conv: EncodecConv1d,
    stages: Vec<DownsampleStage>,
    lstm: EncodecLstm,
    last_conv: EncodecConv1d,
}

impl SeanetEncoder {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        edge: PadMode,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let layer = |i: usize| format!("{prefix}.layers.{i}");
        let filters = config.num_filters;
        let first_conv = EncodecConv1d::load(
            weights,
            &layer(0),
            config,
            edge,
            ConvShape::new(config.audio_channels, filters, config.kernel_size),
            device,
        )?;
        let mut index = 1;
        let mut scale = 1;
        let mut stages = Vec::with_capacity(config.upsampling_ratios.len());
        for &ratio in config.upsampling_ratios.iter().rev() {
            let dim = scale * filters;
            let residual_blocks =
                load_residual_blocks(weights, prefix, config, edge, dim, &mut index, device)?;
            index += 1; // ELU
            let downsample = EncodecConv1d::load(
                weights,
                &layer(index),
                config,
                edge,
                ConvShape::new(dim, 2 * dim, 2 * ratio).with_stride(ratio),
                device,
            )?;
            index += 1;
            stages.push(DownsampleStage {
                residual_blocks,
                downsample,
            });
            scale *= 2;
        }
        let dim = scale * filters;
        let lstm = EncodecLstm::load(
            weights,
            &layer(index),
            dim,
            config.num_lstm_layers,
            device,
            WeightFormat::F32,
        )?;
        index += 2; // LSTM, ELU
        let last_conv = EncodecConv1d::load(
            weights,
            &layer(index),
            config,
            edge,
            ConvShape::new(dim, config.hidden_size, config.last_kernel_size),
            device,
        )?;
        Ok(Self {
            first_conv,
            stages,
            lstm,
            last_conv,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, audio_channels, samples]`
    /// - returns `[batch, hidden_size, ceil(samples / hop_length)]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mut x = self.first_conv.forward(x);
        for stage in &self.stages {
            for block in &stage.residual_blocks {
                x = block.forward(x);
            }
            x = stage.downsample.forward(elu1(x));
        }
        let x = self.lstm.forward(x);
        self.last_conv.forward(elu1(x))
    }
}

/// One decoder resolution: ELU and a transposed conv that multiplies the time resolution by
/// `ratio` and halves the channels, then residual blocks.
#[derive(Debug)]
struct UpsampleStage {
    upsample: EncodecConvTranspose1d,
    residual_blocks: Vec<ResnetBlock>,
}

/// `EncodecDecoder`: `[batch, hidden_size, frames]` → `[batch, audio_channels, samples]`.
/// Keys `{prefix}.layers.{i}`: conv, LSTM, per ratio the ELU, transposed conv and residual
/// blocks, then ELU and the final conv.
#[derive(Debug)]
pub struct SeanetDecoder {
    first_conv: EncodecConv1d,
    lstm: EncodecLstm,
    stages: Vec<UpsampleStage>,
    last_conv: EncodecConv1d,
    hop_length: usize,
    /// Frames per piece when the layers after the LSTM run piece by piece (see `forward`).
    chunk_frames: usize,
    /// Frames of context before and after a piece: the reach of the layers after the LSTM
    /// ([`tail_reach`]), so each piece's kept samples equal the whole signal's.
    halo_frames: (usize, usize),
    /// On the host: the same layers on time-major rows (set by `pack_for_host`).
    rows: Option<RowDecoder>,
}

/// 1 s per piece. Its largest activation (64 channels × 58 frames × 640 samples with the
/// halo, 9.5 MB) stays well under glibc's 32 MiB mmap ceiling and mostly in L3, so buffers are
/// reused instead of faulted in fresh for every op. Measured on 10 s of musicgen-small (2
/// cores, shared), burn's layers: 1.5 s whole, 1.35 s in 2 s pieces, 1.2 s in 1 s pieces. The
/// row layers, a piece per thread: 0.77 s in 0.2 s pieces, 0.72 in 0.4 s, 0.68 in 0.5 s, 0.67–
/// 0.73 in 1 s, 0.74 in 2 s (the whole decode, LSTM included, best of 3).
const CHUNK_FRAMES: usize = 50;

/// The LSTM-output frames one audio frame reads through the layers after the LSTM: `(before,
/// after)` its own frame. Found by carrying the frame's sample range back through each layer
/// (the paddings and trims the layers themselves use), so a piece with this much context on
/// each side computes its middle exactly as the whole signal does — and no more context than
/// that is decoded per piece. (The streaming decoder does not use it: its layers carry their
/// own context, see `streaming.rs`.)
fn tail_reach(config: &EncodecConfig) -> (usize, usize) {
    // (left, right) input steps a stride-1 conv reads around its output, as EncodecConv1d pads.
    let conv = |kernel: usize, dilation: usize| -> (i64, i64) {
        let total = ((kernel - 1) * dilation) as i64;
        if config.use_causal_conv {
            (total, 0)
        } else {
            (total - total / 2, total / 2)
        }
    };
    let widen = |(a, b): (i64, i64), (left, right): (i64, i64)| (a - left, b + right);
    let hop = config.hop_length() as i64;
    // A frame in the middle: every stride divides the hop, so the result is the same for all.
    let frame = 1000i64;
    let mut range = (frame * hop, frame * hop + hop - 1);
    range = widen(range, conv(config.last_kernel_size, 1));
    for &ratio in config.upsampling_ratios.iter().rev() {
        for j in (0..config.num_residual_layers).rev() {
            let dilation = config.dilation_growth_rate.pow(j as u32);
            // The branch's dilated conv (its 1-wide conv and the shortcut read in place).
            range = widen(range, conv(config.residual_kernel_size, dilation));
        }
        // EncodecConvTranspose1d, kernel 2 · ratio: output u is full output u + trim_left,
        // which inputs ⌊(u + trim_left) / ratio⌋ − 1 ..= ⌊(u + trim_left) / ratio⌋ reach.
        let (r, total) = (ratio as i64, ratio as i64);
        let trim_right = if config.use_causal_conv {
            (total as f64 * config.trim_right_ratio).ceil() as i64
        } else {
            total / 2
        };
        let trim_left = total - trim_right.min(total);
        range = (
            (range.0 + trim_left).div_euclid(r) - 1,
            (range.1 + trim_left).div_euclid(r),
        );
    }
    let before = usize::try_from(frame - range.0).unwrap_or(0);
    let after = usize::try_from(range.1 - frame).unwrap_or(0);
    (before, after)
}

impl SeanetDecoder {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        edge: PadMode,
        device: &Device,
        format: WeightFormat,
    ) -> Result<Self, LoadError> {
        let layer = |i: usize| format!("{prefix}.layers.{i}");
        let filters = config.num_filters;
        let mut scale = 1usize << config.upsampling_ratios.len();
        let first_conv = EncodecConv1d::load(
            weights,
            &layer(0),
            config,
            edge,
            ConvShape::new(config.hidden_size, scale * filters, config.kernel_size),
            device,
        )?;
        let lstm = EncodecLstm::load(
            weights,
            &layer(1),
            scale * filters,
            config.num_lstm_layers,
            device,
            format,
        )?;
        let mut index = 2;
        let mut stages = Vec::with_capacity(config.upsampling_ratios.len());
        for &ratio in &config.upsampling_ratios {
            let dim = scale * filters;
            index += 1; // ELU
            let upsample = EncodecConvTranspose1d::load(
                weights,
                &layer(index),
                config,
                ConvShape::new(dim, dim / 2, 2 * ratio).with_stride(ratio),
                device,
            )?;
            index += 1;
            let residual_blocks =
                load_residual_blocks(weights, prefix, config, edge, dim / 2, &mut index, device)?;
            stages.push(UpsampleStage {
                upsample,
                residual_blocks,
            });
            scale /= 2;
        }
        index += 1; // ELU
        let last_conv = EncodecConv1d::load(
            weights,
            &layer(index),
            config,
            edge,
            ConvShape::new(filters, config.audio_channels, config.last_kernel_size),
            device,
        )?;
        let mut decoder = Self {
            first_conv,
            lstm,
            stages,
            last_conv,
            hop_length: config.hop_length(),
            chunk_frames: CHUNK_FRAMES,
            halo_frames: tail_reach(config),
            rows: None,
        };
        decoder.pack_for_host(device, format);
        Ok(decoder)
    }

    /// If `device` is the host: pack the first conv's weights and the transposed convs' (in
    /// `format`) for the host kernel, which a streamed frame's few positions take (see
    /// `EncodecConv1d::pack_for_host`), and build the row layers, which the one-shot decode and
    /// the rest of a streamed frame's layers run on.
    fn pack_for_host(&mut self, device: &Device, format: WeightFormat) {
        self.first_conv.pack_for_host(device);
        for stage in &mut self.stages {
            stage.upsample.pack_for_host(device, format.codec_float());
        }
        if is_host(device) {
            // After the transposed convs' weights are rounded to `format`.
            let stages = self.stages.iter().map(|stage| {
                let blocks = stage.residual_blocks.iter().map(|block| RowBlock {
                    block_1: RowConv::new(&block.block_1),
                    block_3: RowConv::new(&block.block_3),
                    shortcut: block.shortcut.as_ref().map(RowConv::new),
                });
                (RowTranspose::new(&stage.upsample), blocks.collect())
            });
            self.rows = Some(RowDecoder {
                stages: stages.collect(),
                last_conv: RowConv::new(&self.last_conv),
            });
        }
    }

    /// # Shapes
    /// - `x`: `[batch, hidden_size, frames]`
    /// - returns `[batch, audio_channels, frames · hop_length]`
    ///
    /// Everything after the LSTM is local in time, so it runs on overlapping pieces of
    /// `chunk_frames` frames plus `halo_frames` of context on its sides, and only each piece's
    /// middle is kept. The result is the whole-signal computation's (the pieces at the ends
    /// see the true ends, so the reflect padding there is the reference's); it just never
    /// holds a 10 s activation at 64 channels × 32 kHz.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.first_conv.forward(x);
        let x = self.lstm.forward(x);
        let pieces = self.pieces(x.dims()[2]);
        if let Some(rows) = &self.rows {
            return self.upsample_rows(rows, x, &pieces);
        }
        if let [whole] = pieces[..] {
            debug_assert_eq!(whole, (0, x.dims()[2], 0, x.dims()[2]));
            return self.upsample(x);
        }
        let pieces = pieces.into_iter().map(|(from, to, start, end)| {
            let audio = self.upsample(x.clone().narrow(2, from, to - from));
            let keep = (start - from) * self.hop_length;
            audio.narrow(2, keep, (end - start) * self.hop_length)
        });
        Tensor::cat(pieces.collect(), 2)
    }

    /// The pieces `forward` decodes `frames` LSTM output frames in: `(from, to, start, end)`,
    /// frames `from..to` decoded to keep the audio of frames `start..end`; one piece, the whole
    /// signal, if that is not much longer than a piece with its context.
    fn pieces(&self, frames: usize) -> Vec<(usize, usize, usize, usize)> {
        let (before, after) = self.halo_frames;
        if frames <= self.chunk_frames + before + after {
            return vec![(0, frames, 0, frames)];
        }
        let starts = (0..frames).step_by(self.chunk_frames);
        let piece = |start: usize| {
            let end = (start + self.chunk_frames).min(frames);
            let (from, to) = (start.saturating_sub(before), (end + after).min(frames));
            (from, to, start, end)
        };
        starts.map(piece).collect()
    }

    /// `forward`'s layers after the LSTM on the host: the same pieces, each decoded on rows by
    /// one of rayon's threads.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, frames]`
    /// - returns `[batch, audio_channels, frames · hop_length]`
    fn upsample_rows(
        &self,
        rows: &RowDecoder,
        x: Tensor<3>,
        pieces: &[(usize, usize, usize, usize)],
    ) -> Tensor<3> {
        let [batch, channels, frames] = x.dims();
        let device = x.device();
        let values = into_host_vec(x.swap_dims(1, 2)); // [batch, frames, channels]
        let hop = self.hop_length;
        let jobs: Vec<_> = (0..batch)
            .flat_map(|b| pieces.iter().map(move |&piece| (b, piece)))
            .collect();
        let audio: Vec<Vec<f32>> = jobs
            .par_iter()
            .map(|&(b, (from, to, start, end))| {
                let frame = |f: usize| (b * frames + f) * channels;
                let mut samples = rows.upsample(values[frame(from)..frame(to)].to_vec());
                let per_frame = samples.len() / (to - from);
                samples.truncate((end - from) * per_frame);
                samples.drain(..(start - from) * per_frame);
                samples
            })
            .collect();
        let audio_channels = rows.last_conv.channels_out();
        let samples = frames * hop;
        let mut out = vec![0.0; batch * audio_channels * samples];
        for (&(b, (_, _, start, _)), piece) in jobs.iter().zip(&audio) {
            for (t, row) in piece.chunks_exact(audio_channels).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    out[(b * audio_channels + c) * samples + start * hop + t] = v;
                }
            }
        }
        Tensor::from_data(
            TensorData::new(out, [batch, audio_channels, samples]),
            &device,
        )
    }

    /// The first conv (before the LSTM) of an input that arrives piece by piece: appends `x:
    /// [batch, hidden_size, frames]` (`None`: no new frames) to `input` (from
    /// [`first_conv_input`](Self::first_conv_input)) and returns the output frames that became
    /// final, or `None`; `end`: no frames follow.
    pub(super) fn first_conv_streamed(
        &self,
        input: &mut StreamedInput,
        x: Option<Tensor<3>>,
        end: bool,
    ) -> Option<Tensor<3>> {
        input
            .push(x, end)
            .map(|window| self.first_conv.forward_padded(window))
    }

    pub(super) fn first_conv_input(&self) -> StreamedInput {
        self.first_conv.streamed_input()
    }

    /// The LSTM continued from `state` (see [`EncodecLstm::forward_with_state`]).
    pub(super) fn lstm(&self, x: Tensor<3>, state: &mut LstmState) -> Tensor<3> {
        self.lstm.forward_with_state(x, state)
    }

    pub(super) fn lstm_zero_state(&self) -> LstmState {
        self.lstm.zero_state(1)
    }

    /// The layers after the LSTM.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, frames]`
    /// - returns `[batch, audio_channels, frames · hop_length]`
    fn upsample(&self, mut x: Tensor<3>) -> Tensor<3> {
        for stage in &self.stages {
            x = stage.upsample.forward(elu1(x));
            for block in &stage.residual_blocks {
                x = block.forward(x);
            }
        }
        self.last_conv.forward(elu1(x))
    }

    /// An empty state for [`upsample_streamed`](Self::upsample_streamed) (tensors) or
    /// [`upsample_streamed_rows`](Self::upsample_streamed_rows) (rows).
    pub(super) fn upsample_state<S>(&self) -> UpsampleState<S> {
        UpsampleState {
            stages: self
                .stages
                .iter()
                .map(|stage| {
                    let blocks = stage.residual_blocks.iter();
                    (
                        StreamedTranspose::default(),
                        blocks.map(ResnetBlock::streamed_input).collect(),
                    )
                })
                .collect(),
            last_conv: self.last_conv.streamed_input(),
        }
    }

    /// The layers after the LSTM over an input that arrives piece by piece: appends LSTM
    /// output frames `x` (`None`: none new) and returns the audio samples that became final,
    /// in order, or `None`; `end`: no frames follow, so the rest is final. Every layer carries
    /// in `state` just the inputs its next outputs still read and computes only those
    /// outputs, so a frame costs one frame of each layer (plus each conv's few samples of
    /// context), and the samples equal [`upsample`](Self::upsample) of the whole input's.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, frames]`
    /// - returns `[batch, audio_channels, samples]`
    pub(super) fn upsample_streamed(
        &self,
        state: &mut UpsampleState,
        mut x: Option<Tensor<3>>,
        end: bool,
    ) -> Option<Tensor<3>> {
        for (stage, (upsample, blocks)) in self.stages.iter().zip(&mut state.stages) {
            x = stage.upsample.forward_streamed(upsample, x.map(elu1), end);
            for (block, input) in stage.residual_blocks.iter().zip(blocks) {
                x = block.forward_streamed(input, x, end);
            }
        }
        state
            .last_conv
            .push(x.map(elu1), end)
            .map(|window| self.last_conv.forward_padded(window))
    }

    /// Whether the layers after the LSTM stream on host rows
    /// ([`upsample_streamed_rows`](Self::upsample_streamed_rows)): on the CPU.
    pub(super) fn streams_rows(&self) -> bool {
        self.rows.is_some()
    }

    /// [`upsample_streamed`](Self::upsample_streamed) on the host's row layers (`rows.rs`), the
    /// layers and the carried state the same, one signal's rows (`[frames, channels]`) in and
    /// audio rows (`[samples, audio_channels]`) out. The transposed convs of few inputs (a
    /// frame's first stages) take the host kernel over their packed weights, the rest faer's
    /// matmuls, as the one-shot decode does; burn-flex's convs spent most of a streamed frame
    /// in packing, copies and memsets.
    ///
    /// # Panics
    /// If the layers have no rows (not on the host: [`streams_rows`](Self::streams_rows)).
    pub(super) fn upsample_streamed_rows(
        &self,
        state: &mut UpsampleState<Rows>,
        mut x: Option<Rows>,
        end: bool,
    ) -> Option<Rows> {
        let rows = self
            .rows
            .as_ref()
            .expect("the decoder has row layers on the host");
        let elu = |mut x: Rows| {
            elu_in_place(&mut x.values);
            x
        };
        let stages = self.stages.iter().zip(&rows.stages);
        for ((stage, (transpose, blocks)), (upsample, inputs)) in stages.zip(&mut state.stages) {
            let window = stage.upsample.streamed_window(upsample, x.map(elu), end);
            x = window.map(|(window, from, count)| Rows {
                values: stage
                    .upsample
                    .forward_host_rows(&window.values, from, count)
                    .unwrap_or_else(|| transpose.forward_range(&window.values, from, count)),
                channels: transpose.channels_out(),
            });
            for (block, input) in blocks.iter().zip(inputs) {
                x = block.forward_streamed(input, x, end);
            }
        }
        let window = state.last_conv.push(x.map(elu), end)?;
        Some(Rows {
            values: rows
                .last_conv
                .forward_padded(window.values.into(), false, None),
            channels: rows.last_conv.channels_out(),
        })
    }

    /// Audio samples [`upsample_streamed`](Self::upsample_streamed) has given out once
    /// `frames` LSTM output frames are in (and more may follow), and whether every layer has
    /// started (added its left padding; from then on each frame adds `hop_length`): the
    /// layers' delays without running them.
    pub(super) fn upsample_samples_final(&self, frames: usize) -> (usize, bool) {
        let mut count = frames;
        let mut started = true;
        let mut conv = |input: StreamedInput, count: usize| {
            let (out, ok) = input.outputs_final(count);
            started &= ok;
            out
        };
        for stage in &self.stages {
            count = stage.upsample.outputs_final(count);
            for block in &stage.residual_blocks {
                count = conv(block.streamed_input(), count);
            }
        }
        let count = conv(self.last_conv.streamed_input(), count);
        (count, started)
    }
}

/// What [`SeanetDecoder::upsample_streamed`] (or its row version) carries from piece to piece:
/// per stage the transposed conv's and each residual block's, and the last conv's.
#[derive(Debug, Clone)]
pub(super) struct UpsampleState<S = Tensor<3>> {
    stages: Vec<(StreamedTranspose<S>, Vec<StreamedInput<S>>)>,
    last_conv: StreamedInput<S>,
}

#[cfg(test)]
mod tests {

    use burn::tensor::Distribution;

    use super::*;
    use crate::config::MusicgenConfig;

    /// The decoders the tests below run: each fixture's, with the LSTM and transposed convs in
    /// f32, one in bf16, and one with a q8 codec's recurrence (`WeightFormat::codec`).
    const DECODERS: [(&str, WeightFormat); 4] = [
        ("musicgen-tiny", WeightFormat::F32),
        ("musicgen-tiny-b", WeightFormat::F32),
        ("musicgen-tiny-b", WeightFormat::Bf16),
        ("musicgen-tiny", WeightFormat::Q8),
    ];

    /// The SEANet decoder of fixture `model`, loaded on the default device in `format`.
    fn fixture_decoder(model: &str, format: WeightFormat) -> (EncodecConfig, SeanetDecoder) {
        let dir = crate::model::fixture_dir(model);
        let config = MusicgenConfig::from_file(&dir.join("config.json"))
            .expect("fixture config")
            .audio_encoder;
        let weights = Weights::open_dir(&dir).expect("fixture weights");
        let decoder = SeanetDecoder::load(
            &weights,
            "audio_encoder.decoder",
            &config,
            PadMode::Reflect,
            &Device::default(),
            format,
        )
        .expect("decoder loads");
        (config, decoder)
    }

    /// Piecewise decoding equals whole-signal decoding, with pieces far smaller than the
    /// fixtures' sequences (which fit in one piece) so that many seams are crossed; in each of
    /// [`DECODERS`]' formats.
    #[test]
    fn piecewise_decoding_equals_whole_signal_decoding() {
        for (model, format) in DECODERS {
            let (config, mut decoder) = fixture_decoder(model, format);
            let device = Device::default();
            let (before, after) = decoder.halo_frames;
            assert!(before >= 1 && after >= 1, "halo {before}, {after}");
            let x =
                Tensor::<3>::random([2, config.hidden_size, 61], Distribution::Default, &device);
            decoder.chunk_frames = usize::MAX / 4;
            let whole = decoder.forward(x.clone());
            decoder.chunk_frames = 7;
            let pieces = decoder.forward(x.clone());
            assert_eq!(pieces.dims(), [2, 1, 61 * config.hop_length()]);
            let err = (pieces - whole.clone()).abs().max().into_scalar::<f32>();
            assert!(err < 1e-5, "{model}: max abs err {err}");
            // The reach is exact, not just enough: one frame less context on either side
            // changes the seams.
            for short in [(before - 1, after), (before, after - 1)] {
                decoder.halo_frames = short;
                let err = (decoder.forward(x.clone()) - whole.clone())
                    .abs()
                    .max()
                    .into_scalar::<f32>();
                assert!(err > 1e-4, "{model}: halo {short:?} still exact ({err})");
            }
            decoder.halo_frames = (before, after);
        }
    }

    /// The layers after the LSTM streamed, on burn's tensors (elsewhere than the CPU) and on
    /// host rows (the CPU), give the whole signal's audio: in pieces of 1, 2 and 4 frames, and
    /// over inputs so short that reflect padding takes its short-input rule at the end.
    #[test]
    fn streamed_layers_after_the_lstm_decode_the_whole_signal() {
        let time_major = |audio: Tensor<3>| into_host_vec(audio.swap_dims(1, 2));
        for (model, format) in DECODERS {
            let (config, decoder) = fixture_decoder(model, format);
            let device = Device::default();
            let channels = config.num_filters << config.upsampling_ratios.len();
            for frames in [1, 2, 9] {
                let x = Tensor::<3>::random([1, channels, frames], Distribution::Default, &device);
                let whole = time_major(decoder.upsample(x.clone()));
                let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(scale > 1e-3, "{model}: silent output");
                for piece in [1, 2, 4] {
                    let (mut tensors, mut rows) =
                        (decoder.upsample_state(), decoder.upsample_state());
                    let (mut on_tensors, mut on_rows) = (Vec::new(), Vec::new());
                    let mut at = 0;
                    loop {
                        let n = piece.min(frames - at);
                        let end = at + n == frames;
                        let part = (n > 0).then(|| x.clone().narrow(2, at, n));
                        let part_rows = part.clone().map(|p| Rows {
                            channels,
                            values: time_major(p),
                        });
                        at += n;
                        let audio = decoder.upsample_streamed(&mut tensors, part, end);
                        on_tensors.extend(audio.map(time_major).unwrap_or_default());
                        let audio = decoder.upsample_streamed_rows(&mut rows, part_rows, end);
                        on_rows.extend(audio.map(|a| a.values).unwrap_or_default());
                        if end {
                            break;
                        }
                    }
                    for (path, audio) in [("tensors", &on_tensors), ("rows", &on_rows)] {
                        assert_eq!(audio.len(), whole.len(), "{model} {path}");
                        let err = audio
                            .iter()
                            .zip(&whole)
                            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            err <= 1e-5 * scale,
                            "{model} {path}, {frames} frames in pieces of {piece}: {err} of {scale}"
                        );
                    }
                }
            }
        }
    }

    /// On the host the layers after the LSTM run on rows (`rows.rs`); they decode what burn's
    /// layers decode: a batch of two over many pieces, and inputs so short that reflect
    /// padding takes its short-input rule in the first layers.
    #[test]
    fn row_layers_decode_as_burn_layers_do() {
        for (model, format) in DECODERS {
            let (config, mut decoder) = fixture_decoder(model, format);
            let device = Device::default();
            decoder.chunk_frames = 7;
            for frames in [1, 2, 3, 61] {
                let shape = [2, config.hidden_size, frames];
                let x = Tensor::<3>::random(shape, Distribution::Default, &device);
                let on_rows = decoder.forward(x.clone());
                let rows = decoder
                    .rows
                    .take()
                    .expect("the host decoder has row layers");
                let on_burn = decoder.forward(x);
                decoder.rows = Some(rows);
                assert_eq!(on_rows.dims(), on_burn.dims());
                let scale = on_burn.clone().abs().max().into_scalar::<f32>();
                let err = (on_rows - on_burn).abs().max().into_scalar::<f32>();
                assert!(scale > 1e-3, "{model}: silent output");
                assert!(
                    err <= 1e-5 * scale,
                    "{model}, {frames} frames: {err} of {scale}"
                );
            }
        }
    }
}
