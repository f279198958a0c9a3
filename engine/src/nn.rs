//! The few building blocks the models share, loaded from checkpoint tensors by key.
//!
//! Weights are plain tensors, not burn `Module`s: the engine never trains, and building each
//! layer from `Weights` by its checkpoint key is what makes a missing or mis-shaped tensor an
//! error that names that key.

use burn::tensor::activation::{gelu, gelu_approximate, relu, softmax};
use burn::tensor::{Device, Tensor};

use crate::error::LoadError;
use crate::weights::Weights;

/// How a linear layer's weight is stored. Only f32 today; reduced-precision variants (bf16,
/// int8 with per-row scales) slot in here without touching model code, which only calls
/// [`Linear::forward`].
#[derive(Debug, Clone)]
enum LinearWeight {
    /// `[d_in, d_out]`, ready for `x @ w`.
    F32(Tensor<2>),
}

/// `y = x W^T + b`, PyTorch `nn.Linear` semantics.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor<1>>,
    pub d_in: usize,
    pub d_out: usize,
}

impl Linear {
    /// Load `{prefix}.weight` (`[d_out, d_in]`) and, if `with_bias`, `{prefix}.bias`.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        with_bias: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let weight = weights.linear_weight(&format!("{prefix}.weight"), d_in, d_out, device)?;
        let bias = if with_bias {
            Some(weights.tensor(&format!("{prefix}.bias"), [d_out], device)?)
        } else {
            None
        };
        Ok(Self {
            weight: LinearWeight::F32(weight),
            bias,
            d_in,
            d_out,
        })
    }

    /// A loader of the bias-free linears under `prefix`: `load("q", d_in, d_out)` reads
    /// `{prefix}.q.weight`.
    pub fn loader<'a>(
        weights: &'a Weights,
        prefix: &'a str,
        device: &'a Device,
    ) -> impl Fn(&str, usize, usize) -> Result<Self, LoadError> + 'a {
        move |name, d_in, d_out| {
            Self::load(
                weights,
                &format!("{prefix}.{name}"),
                d_in,
                d_out,
                false,
                device,
            )
        }
    }

    /// # Shapes
    /// `x: [batch, seq, d_in]` → `[batch, seq, d_out]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let LinearWeight::F32(w) = &self.weight;
        let y = x.matmul(w.clone().unsqueeze::<3>());
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<3>(),
            None => y,
        }
    }

    /// The weight as `[d_in, d_out]` f32 (for probes of the LM head, tests).
    pub fn weight_f32(&self) -> Tensor<2> {
        let LinearWeight::F32(w) = &self.weight;
        w.clone()
    }
}

/// PyTorch `nn.LayerNorm` over the last dimension, with affine weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            weight: weights.tensor(&format!("{prefix}.weight"), [dim], device)?,
            bias: weights.tensor(&format!("{prefix}.bias"), [dim], device)?,
            eps,
        })
    }

    /// # Shapes
    /// `x: [batch, seq, dim]` → same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().powf_scalar(2.0).mean_dim(2);
        let normed = centered / (var + self.eps).sqrt();
        normed * self.weight.clone().unsqueeze::<3>() + self.bias.clone().unsqueeze::<3>()
    }
}

/// T5's RMS norm: no mean subtraction, no bias (`T5LayerNorm`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn load(
        weights: &Weights,
        key: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            weight: weights.tensor(key, [dim], device)?,
            eps,
        })
    }

    /// # Shapes
    /// `x: [batch, seq, dim]` → same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let var = x.clone().powf_scalar(2.0).mean_dim(2);
        x / (var + self.eps).sqrt() * self.weight.clone().unsqueeze::<3>()
    }
}

/// Activation functions, deserialised from transformers' names for them (the decoder's
/// `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Activation {
    #[serde(rename = "relu")]
    Relu,
    /// Exact (erf) GELU: PyTorch `nn.GELU()`, transformers' `"gelu"`.
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh-approximated GELU: transformers' `"gelu_new"` (T5 v1.1's gated-gelu).
    #[serde(rename = "gelu_new")]
    GeluTanh,
}

impl Activation {
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
        }
    }
}

/// Scaled dot-product attention over heads.
///
/// # Shapes
/// - `q: [batch, heads, q_len, head_dim]`, `k`, `v: [batch, heads, kv_len, head_dim]`
/// - `bias`: added to the scores, broadcastable to `[batch, heads, q_len, kv_len]`
/// - returns `[batch, heads, q_len, head_dim]`
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f64,
    bias: Option<Tensor<4>>,
) -> Tensor<4> {
    let mut scores = q.matmul(k.swap_dims(2, 3));
    if scale != 1.0 {
        scores = scores * scale;
    }
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    softmax(scores, 3).matmul(v)
}

/// `[batch, seq, heads * head_dim]` → `[batch, heads, seq, head_dim]`
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [batch, seq, width] = x.dims();
    x.reshape([batch, seq, heads, width / heads])
        .swap_dims(1, 2)
}

/// `[batch, heads, seq, head_dim]` → `[batch, seq, heads * head_dim]`
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [batch, heads, seq, head_dim] = x.dims();
    x.swap_dims(1, 2).reshape([batch, seq, heads * head_dim])
}
