//! The SEANet encoder and decoder of EnCodec (`EncodecEncoder`, `EncodecDecoder`,
//! `EncodecResnetBlock` in transformers' `modeling_encodec.py`).
//!
//! The reference keeps each stack as one `layers` list in which ELUs take an index but hold no
//! weights; the structs below name the parts instead and keep the running index only to form
//! the checkpoint keys (`encoder.layers.13.lstm.weight_ih_l0`).

use burn::tensor::activation::elu;
use burn::tensor::{Device, Tensor};

use super::conv::{ConvShape, EdgePadding, EncodecConv1d, EncodecConvTranspose1d};
use super::lstm::EncodecLstm;
use crate::config::EncodecConfig;
use crate::error::LoadError;
use crate::weights::Weights;

fn elu1<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    elu(x, 1.0)
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
        edge: EdgePadding,
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
}

/// The residual blocks of one resolution, `dilation_growth_rate^j` for block `j`.
fn load_residual_blocks(
    weights: &Weights,
    prefix: &str,
    config: &EncodecConfig,
    edge: EdgePadding,
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
        edge: EdgePadding,
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
        let lstm = EncodecLstm::load(weights, &layer(index), dim, config.num_lstm_layers, device)?;
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
}

impl SeanetDecoder {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &EncodecConfig,
        edge: EdgePadding,
        device: &Device,
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
        Ok(Self {
            first_conv,
            lstm,
            stages,
            last_conv,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, hidden_size, frames]`
    /// - returns `[batch, audio_channels, frames · hop_length]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.first_conv.forward(x);
        let mut x = self.lstm.forward(x);
        for stage in &self.stages {
            x = stage.upsample.forward(elu1(x));
            for block in &stage.residual_blocks {
                x = block.forward(x);
            }
        }
        self.last_conv.forward(elu1(x))
    }
}
