//! The few building blocks the models share, loaded from checkpoint tensors by key.
//!
//! Weights are plain tensors, not burn `Module`s: the engine never trains, and building each
//! layer from `Weights` by its checkpoint key is what makes a missing or mis-shaped tensor an
//! error that names that key.

use burn::tensor::activation::{gelu, gelu_approximate, relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::LoadError;
use crate::matvec::{HostMatrix, Kernel, Reads, WeightFormat};
use crate::weights::Weights;

/// How a linear layer's weight is stored.
// A model has a few hundred of these: the size of the tensor variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum LinearWeight {
    /// `[d_in, d_out]`, ready for `x @ w`, with the bias: burn's matmul on any device.
    Tensor {
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
    },
    /// Host memory in a [`WeightFormat`], multiplied by [`crate::matvec`]'s kernels: the
    /// decoder's layers on the CPU, where a decode step is a matrix × 2-rows product that a
    /// general matmul runs far from the memory-bandwidth floor.
    Host {
        matrix: HostMatrix,
        bias: Option<Vec<f32>>,
    },
}

/// `y = x W^T + b`, PyTorch `nn.Linear` semantics.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    pub d_in: usize,
    pub d_out: usize,
}

impl Linear {
    /// Load `{prefix}.weight` (`[d_out, d_in]`) and, if `with_bias`, `{prefix}.bias`, as a
    /// tensor on `device`.
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
            weight: LinearWeight::Tensor { weight, bias },
            d_in,
            d_out,
        })
    }

    /// [`Self::load`] for a layer that may live in host memory: on the CPU the weight is packed
    /// as `format` for the host kernels, its products reading it as `reads` says; on other
    /// devices it must be f32 and is a tensor.
    pub fn load_as(
        weights: &Weights,
        prefix: &str,
        (d_in, d_out): (usize, usize),
        with_bias: bool,
        device: &Device,
        (format, reads): (WeightFormat, Reads),
    ) -> Result<Self, LoadError> {
        if !is_host(device) {
            if format != WeightFormat::F32 {
                return Err(LoadError::WeightFormat {
                    format,
                    device: format!("{device:?}"),
                });
            }
            return Self::load(weights, prefix, d_in, d_out, with_bias, device);
        }
        let values = weights.read_f32(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let bias = if with_bias {
            Some(weights.read_f32(&format!("{prefix}.bias"), &[d_out])?)
        } else {
            None
        };
        Ok(Self {
            weight: LinearWeight::Host {
                matrix: HostMatrix::pack_read_as(&values, d_in, d_out, format, reads),
                bias,
            },
            d_in,
            d_out,
        })
    }

    /// A loader of the bias-free linears under `prefix`, as tensors: `load("q", d_in, d_out)`
    /// reads `{prefix}.q.weight`.
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

    /// [`Self::loader`] in `format`, read as `reads` ([`Self::load_as`]).
    pub fn loader_as<'a>(
        weights: &'a Weights,
        prefix: &'a str,
        device: &'a Device,
        format: (WeightFormat, Reads),
    ) -> impl Fn(&str, usize, usize) -> Result<Self, LoadError> + 'a {
        move |name, d_in, d_out| {
            Self::load_as(
                weights,
                &format!("{prefix}.{name}"),
                (d_in, d_out),
                false,
                device,
                format,
            )
        }
    }

    /// # Shapes
    /// `x: [batch, seq, d_in]` → `[batch, seq, d_out]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.weight {
            LinearWeight::Tensor { weight, bias } => {
                let y = x.matmul(weight.clone().unsqueeze::<3>());
                match bias {
                    Some(b) => y + b.clone().unsqueeze::<3>(),
                    None => y,
                }
            }
            LinearWeight::Host { matrix, bias } => {
                let [batch, seq, _] = x.dims();
                let device = x.device();
                let data = x.into_data().convert::<f32>();
                let rows = data
                    .as_slice::<f32>()
                    .expect("activations converted to f32");
                let y = matrix.matmul(rows, batch * seq, bias.as_deref());
                Tensor::from_data(TensorData::new(y, [batch, seq, self.d_out]), &device)
            }
        }
    }

    /// `y = x Wᵀ + b` on host rows (`x`: `rows` rows of `d_in`), or `None` where the weight is
    /// a tensor ([`Self::is_host`] is false).
    pub(crate) fn forward_rows(&self, x: &[f32], rows: usize) -> Option<Vec<f32>> {
        self.forward_rows_then(x, rows, None)
    }

    /// [`Self::forward_rows`], then `activation` on the outputs, each work item's on the thread
    /// that computed them ([`crate::matvec::HostMatrix::matmul_then`]).
    pub(crate) fn forward_rows_then(
        &self,
        x: &[f32],
        rows: usize,
        activation: Option<Activation>,
    ) -> Option<Vec<f32>> {
        match &self.weight {
            LinearWeight::Host { matrix, bias } => {
                let apply = |values: &mut [f32]| activation.map_or((), |a| a.apply(values));
                let then = activation.map(|_| &apply as &crate::matvec::Epilogue<'_>);
                Some(matrix.matmul_then(Kernel::detect(), x, rows, bias.as_deref(), then))
            }
            LinearWeight::Tensor { .. } => None,
        }
    }

    /// A host weight's matrix, or `None` for a tensor weight.
    pub(crate) fn host_matrix(&self) -> Option<&HostMatrix> {
        match &self.weight {
            LinearWeight::Host { matrix, .. } => Some(matrix),
            LinearWeight::Tensor { .. } => None,
        }
    }

    /// Whether the weight lives in host memory ([`Self::load_as`] on the CPU).
    pub(crate) fn is_host(&self) -> bool {
        matches!(self.weight, LinearWeight::Host { .. })
    }

    /// The weight as `[d_in, d_out]` f32 (for probes of the LM head, tests); a packed weight
    /// gives the values it multiplies by.
    pub fn weight_f32(&self) -> Tensor<2> {
        match &self.weight {
            LinearWeight::Tensor { weight, .. } => weight.clone(),
            LinearWeight::Host { matrix, .. } => {
                let device = Device::flex();
                Tensor::<2>::from_data(
                    TensorData::new(matrix.unpack(), [self.d_out, self.d_in]),
                    &device,
                )
                .transpose()
            }
        }
    }

    /// The bytes of weights one forward reads.
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            LinearWeight::Tensor { .. } => WeightFormat::F32.matrix_bytes(self.d_out, self.d_in),
            LinearWeight::Host { matrix, .. } => {
                matrix.format().matrix_bytes(self.d_out, self.d_in)
            }
        }
    }
}

/// Whether `device` is burn-flex's, whose tensors live in host memory.
pub fn is_host(device: &Device) -> bool {
    *device == Device::flex()
}

/// PyTorch `nn.LayerNorm` over the last dimension, with affine weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
    /// The weight and bias in host memory, on the CPU: a decode step normalises 72 rows of
    /// 1024, where nine burn ops per norm cost more than the arithmetic.
    host: Option<(Vec<f32>, Vec<f32>)>,
}

impl LayerNorm {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let weight = weights.tensor(&format!("{prefix}.weight"), [dim], device)?;
        let bias = weights.tensor(&format!("{prefix}.bias"), [dim], device)?;
        let host = is_host(device).then(|| (host_vec(&weight), host_vec(&bias)));
        Ok(Self {
            weight,
            bias,
            eps,
            host,
        })
    }

    /// # Shapes
    /// `x: [batch, seq, dim]` → same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if let Some((weight, bias)) = &self.host {
            return self.forward_host(x, weight, bias);
        }
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().powf_scalar(2.0).mean_dim(2);
        let normed = centered / (var + self.eps).sqrt();
        normed * self.weight.clone().unsqueeze::<3>() + self.bias.clone().unsqueeze::<3>()
    }
}

impl LayerNorm {
    /// [`Self::forward`] on host values.
    fn forward_host(&self, x: Tensor<3>, weight: &[f32], bias: &[f32]) -> Tensor<3> {
        let dims = x.dims();
        let device = x.device();
        let mut values = host_vec(&x);
        self.normalize_rows(&mut values, weight, bias);
        Tensor::from_data(TensorData::new(values, dims), &device)
    }

    /// Normalise host rows of `dim` in place, or `false` (nothing done) where the norm's
    /// parameters are tensors (not on the CPU).
    pub(crate) fn forward_rows(&self, values: &mut [f32]) -> bool {
        match &self.host {
            Some((weight, bias)) => {
                self.normalize_rows(values, weight, bias);
                true
            }
            None => false,
        }
    }

    /// Mean and variance accumulated in f64 per row.
    fn normalize_rows(&self, values: &mut [f32], weight: &[f32], bias: &[f32]) {
        let dim = weight.len();
        for row in values.chunks_exact_mut(dim.max(1)) {
            let mean = sum_f64(row, |v| v) / dim as f64;
            let var = sum_f64(row, |v| (v - mean).powi(2)) / dim as f64;
            let inverse = 1.0 / (var + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
                *v = ((*v as f64 - mean) * inverse) as f32 * w + b;
            }
        }
    }

    /// Whether the parameters live in host memory (on the CPU).
    pub(crate) fn is_host(&self) -> bool {
        self.host.is_some()
    }
}

/// `Σ f(v)` over `values` in f64, in 8 independent partial sums (then added in a fixed order):
/// one running sum makes every add wait for the one before, which made a decode step's 146 rows
/// of layer norm cost about half a millisecond.
#[inline(always)]
fn sum_f64(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v as f64);
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// A tensor's values as f32, row-major.
pub(crate) fn host_vec<const D: usize>(x: &Tensor<D>) -> Vec<f32> {
    into_host_vec(x.clone())
}

/// [`host_vec`] of a tensor given up (no copy of a shared handle's data first).
pub(crate) fn into_host_vec<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32")
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

    /// [`Self::forward`] on host values, in place; branch-free, so the loops vectorise. Exact
    /// GELU takes [`erf`], within 6e-7 of the `erff` burn-flex evaluates.
    pub(crate) fn apply(self, values: &mut [f32]) {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        match self {
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Gelu => map_in_place(values, |v| {
                0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
            }),
            Activation::GeluTanh => values.iter_mut().for_each(|v| {
                let x = *v;
                *v = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh());
            }),
        }
    }
}

/// The widest vector instructions the element-wise loops (attention, activations) are
/// compiled for, detected once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

pub(crate) fn isa() -> Isa {
    static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    })
}

/// `v = f(v)` for every value, the loop compiled for [`isa`]'s vectors: a branch-free `f`
/// (such as GELU over [`erf`], ELU over [`exp_f32`]) then runs 16 or 8 values at a
/// time instead of the baseline's 4 (a decode step's GELU, 24 × 2 rows of 4096, took about a
/// third of a millisecond in the baseline copy). Rust does not fuse multiplies and adds on its
/// own, so every copy computes the same values.
pub(crate) fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32) {
    vectorized(
        #[inline(always)]
        || {
            for v in values {
                *v = f(*v);
            }
        },
    )
}

/// `f()` compiled for [`isa`]'s vectors: `f` is inlined into one copy per instruction set, so
/// its loops over slices vectorise 16 or 8 lanes wide ([`map_in_place`]; the LSTM cell).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match isa() {
            // SAFETY: `isa` detected AVX-512F on this CPU.
            Isa::Avx512 => return unsafe { avx512(f) },
            // SAFETY: `isa` detected AVX2 and FMA on this CPU.
            Isa::Avx2 => return unsafe { avx2(f) },
            Isa::Baseline => {}
        }
    }
    f()
}

/// `e^x`, branch-free so the loops around it vectorise (`directions`' implementation: one for
/// the workspace).
pub(crate) use directions::exp_f32;

/// `x` rounded to the nearest integer, ties away from zero (`f32::round`), as an `i32`
/// (saturating, NaN → 0): `x + (½ − ulp)` with the sign of `x`, truncated by the conversion,
/// as LLVM expands `round` where SSE4.1 is present. `f32::round` is a libm call on the x86-64
/// baseline: the key/value cache's int8 writes paid it per value. The weight packers round a
/// block at a time with the same constant (`matvec::round_steps`, tested to give these codes).
#[inline(always)]
pub(crate) fn round_to_i32(x: f32) -> i32 {
    (x + BELOW_HALF.copysign(x)) as i32
}

/// 0.5 − 2⁻²⁵, the f32 just below ½: what [`round_to_i32`] adds (with the value's sign) before
/// truncating, and the weight packers' block rounding with it.
pub(crate) const BELOW_HALF: f32 = 0.499_999_97;

/// The error function, Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, below 6e-7 in f32,
/// tested against
/// libm's `erf`), branch-free.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp_f32(-z * z)).copysign(x)
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

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    /// `round_to_i32` is `f32::round`, ties away from zero, on every half-integer and its
    /// neighbours one ulp away, a dense sweep of bit patterns, and the edges (huge, NaN).
    #[test]
    fn round_to_i32_is_f32_round() {
        let check = |x: f32| {
            let want = x.round() as i32;
            assert_eq!(round_to_i32(x), want, "{x:e} ({:#x})", x.to_bits());
        };
        for k in -4000..=4000 {
            let half = k as f32 * 0.5;
            for x in [half, half.next_up(), half.next_down()] {
                check(x);
            }
        }
        let top = 1.0e6f32.to_bits();
        for bits in (0..top).step_by(101) {
            let x = f32::from_bits(bits);
            check(x);
            check(-x);
        }
        for x in [
            0.499_999_97,
            -0.499_999_97,
            8_388_607.5,
            8_388_609.0,
            3.0e9,
            -3.0e9,
            f32::MAX,
        ] {
            check(x);
        }
        assert_eq!(round_to_i32(f32::NAN), 0);
    }

    /// The vectorisable `exp` and `erf` of the host step against the standard library's `exp`
    /// and a double-precision `erf` (libm's, which burn-flex's GELU evaluates).
    #[test]
    fn host_exp_and_erf_are_within_their_stated_error() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in 0..=200_000 {
            let x = -90.0 + 90.0 * i as f32 / 200_000.0;
            let exact = (x as f64).exp();
            let got = exp_f32(x) as f64;
            if x >= -87.0 {
                worst_exp = worst_exp.max((got - exact).abs() / exact);
            } else {
                assert!(got < 2e-38, "e^{x} = {got}");
            }
            let z = x / 10.0 + 4.5; // −4.5 ..= 4.5
            let err = (erf(z) as f64 - libm::erf(z as f64)).abs();
            worst_erf = worst_erf.max(err);
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 6e-7, "erf absolute error {worst_erf}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(-1.0), -erf(1.0));
    }

    /// The host layer norm equals the burn-op one (f32 accumulation there, f64 here).
    #[test]
    fn host_layer_norm_matches_the_tensor_ops() {
        let device = Device::flex();
        let dim = 1024;
        let weight = Tensor::<1>::random([dim], Distribution::Normal(1.0, 0.2), &device);
        let bias = Tensor::<1>::random([dim], Distribution::Normal(0.0, 0.2), &device);
        let x = Tensor::<3>::random([2, 3, dim], Distribution::Normal(0.5, 3.0), &device);
        let mut norm = LayerNorm {
            host: Some((host_vec(&weight), host_vec(&bias))),
            weight,
            bias,
            eps: 1e-5,
        };
        let host = norm.forward(x.clone());
        norm.host = None;
        let ops = norm.forward(x);
        let err = (host - ops).abs().max().into_scalar::<f32>();
        assert!(err < 1e-5, "max abs err {err}");
    }
}
