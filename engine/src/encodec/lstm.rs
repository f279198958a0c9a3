//! EnCodec's LSTM (`EncodecLSTM`): a stack of PyTorch `nn.LSTM` layers over the time axis of
//! the SEANet bottleneck, with a skip connection around the whole stack.
//!
//! PyTorch's LSTM step, gate order `i, f, g, o`:
//! `gates = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh`,
//! `c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g)`, `h_t = σ(o) ⊙ tanh(c_t)`.
//!
//! The input projection of every time step is one matmul (burn). Only `W_hh h_{t−1}` is
//! sequential (500 steps per 10 s of audio, per layer): it runs through the host matrix ×
//! few-rows kernel (`crate::matvec`, f32), split across the rayon pool burn also uses. A burn
//! matmul of that shape costs 1.6–1.8 ms (docs/stack.md, `[2,1,1024]×[1,1024,4096]`); the
//! host kernel reads musicgen-small's 16 MiB `W_hh` from L3 (where it stays from one step to
//! the next) in a fraction of that.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::LoadError;
use crate::matvec::{HostMatrix, WeightFormat};
use crate::nn::{exp_f32, host_vec, into_host_vec, is_host, vectorized};
use crate::weights::Weights;

/// One `nn.LSTM` layer: keys `{prefix}.weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
/// `bias_hh_l{k}`.
#[derive(Debug)]
struct LstmLayer {
    /// `W_ih` transposed to `[hidden, 4 · hidden]` for the batched input projection.
    weight_ih_t: Tensor<2>,
    /// `b_ih + b_hh`, folded into the input projection: `[4 · hidden]`.
    bias: Tensor<1>,
    /// `W_hh` (`[4 · hidden, hidden]`, in the load's format: f32 as stored, bf16 or q8, see
    /// [`WeightFormat::codec`]) for the host kernel, which every decode's recurrence takes.
    weight_hh: HostMatrix,
    /// On the CPU, `W_ih` and the folded bias for the host matrix × few-rows kernel: a streamed
    /// frame projects one row, which a general matmul runs far from the bandwidth floor.
    host_ih: Option<(HostMatrix, Vec<f32>)>,
}

/// Up to this many input rows (batch × time steps) take the host kernel for the input
/// projection; more go through burn's matmul, which packs and tiles for them.
const HOST_ROWS: usize = 16;

/// `EncodecLSTM`: keys `{prefix}.lstm.*`.
#[derive(Debug)]
pub struct EncodecLstm {
    layers: Vec<LstmLayer>,
    hidden: usize,
}

impl EncodecLstm {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        hidden: usize,
        num_layers: usize,
        device: &Device,
        format: WeightFormat,
    ) -> Result<Self, LoadError> {
        let layers = (0..num_layers)
            .map(|k| {
                let key = |name: &str| format!("{prefix}.lstm.{name}_l{k}");
                // Stored transposed, not a transposed view: burn-flex's matmul would copy a view
                // into a contiguous 16 MB buffer on every call, which a streamed frame (one
                // call per frame) paid in full — half of its decode time.
                let mut weight_ih_t =
                    weights.linear_weight(&key("weight_ih"), hidden, 4 * hidden, device)?;
                // `W_ih` in the codec's float format, on the host kernel and in burn alike.
                let float = format.codec_float();
                if float != WeightFormat::F32 {
                    // The batch projection multiplies by the values the host matrices hold.
                    let rounded = float.round_float(into_host_vec(weight_ih_t));
                    weight_ih_t =
                        Tensor::from_data(TensorData::new(rounded, [hidden, 4 * hidden]), device);
                }
                let bias_ih = weights.tensor(&key("bias_ih"), [4 * hidden], device)?;
                let bias_hh = weights.tensor(&key("bias_hh"), [4 * hidden], device)?;
                let weight_hh = HostMatrix::pack(
                    &weights.read_f32(&key("weight_hh"), &[4 * hidden, hidden])?,
                    hidden,
                    4 * hidden,
                    format,
                );
                let bias = bias_ih + bias_hh;
                let host_ih = if is_host(device) {
                    let w = weights.read_f32(&key("weight_ih"), &[4 * hidden, hidden])?;
                    Some((
                        HostMatrix::pack(&w, hidden, 4 * hidden, float),
                        host_vec(&bias),
                    ))
                } else {
                    None
                };
                Ok(LstmLayer {
                    weight_ih_t,
                    bias,
                    weight_hh,
                    host_ih,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(Self { layers, hidden })
    }

    /// # Shapes
    /// - `x`: `[batch, hidden, time]` (convolutional layout)
    /// - returns `[batch, hidden, time]`: the last layer's hidden states plus `x`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mut state = self.zero_state(x.dims()[0]);
        self.forward_with_state(x, &mut state)
    }

    /// Every layer's `(h, c)` at rest: what `forward` starts from.
    pub fn zero_state(&self, batch: usize) -> LstmState {
        let zeros = || vec![0.0f32; batch * self.hidden];
        LstmState {
            layers: self.layers.iter().map(|_| (zeros(), zeros())).collect(),
            batch,
        }
    }

    /// `forward` continued from `state`, which is left at the last time step: running a
    /// sequence in consecutive pieces through one state gives the whole sequence's result (the
    /// streaming decoder's use).
    ///
    /// # Shapes
    /// - `x`: `[state.batch, hidden, time]`
    /// - returns `[state.batch, hidden, time]`
    pub fn forward_with_state(&self, x: Tensor<3>, state: &mut LstmState) -> Tensor<3> {
        let [batch, hidden, time] = x.dims();
        assert_eq!(batch, state.batch, "LSTM state for another batch size");
        let device = x.device();
        let input = x.swap_dims(1, 2); // [batch, time, hidden]
        let mut seq = input.clone();
        for (layer, (h, c)) in self.layers.iter().zip(&mut state.layers) {
            let projected = match &layer.host_ih {
                Some((w, bias)) if batch * time <= HOST_ROWS => {
                    w.matmul(&host_vec(&seq), batch * time, Some(bias))
                }
                _ => into_host_vec(
                    seq.clone()
                        .matmul(layer.weight_ih_t.clone().unsqueeze::<3>())
                        + layer.bias.clone().unsqueeze::<3>(),
                ),
            };
            let states = recur(&projected, &layer.weight_hh, time, self.hidden, h, c);
            seq = Tensor::from_data(TensorData::new(states, [batch, time, hidden]), &device);
        }
        (seq + input).swap_dims(1, 2)
    }
}

/// The recurrent state of every layer between two pieces of a sequence.
#[derive(Debug, Clone)]
pub struct LstmState {
    /// Per layer `(h, c)`, each `[batch, hidden]` row-major.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    batch: usize,
}

/// Run one layer's recurrence from `(h, c)` (`[batch, hidden]` each, left at the last step)
/// over precomputed input projections `projected: [batch, time, 4 · hidden]`; returns the
/// hidden states `[batch, time, hidden]`.
fn recur(
    projected: &[f32],
    weight_hh: &HostMatrix,
    time: usize,
    hidden: usize,
    h: &mut [f32],
    c: &mut [f32],
) -> Vec<f32> {
    let gates_len = 4 * hidden;
    let batch = h.len() / hidden.max(1);
    let mut out = vec![0.0f32; batch * time * hidden];
    for t in 0..time {
        let gates = weight_hh.matmul(h, batch, None);
        for b in 0..batch {
            let g = &gates[b * gates_len..(b + 1) * gates_len];
            let x = &projected[(b * time + t) * gates_len..(b * time + t + 1) * gates_len];
            let h_b = &mut h[b * hidden..(b + 1) * hidden];
            let c_b = &mut c[b * hidden..(b + 1) * hidden];
            cell(g, x, c_b, h_b);
            out[(b * time + t) * hidden..(b * time + t + 1) * hidden].copy_from_slice(h_b);
        }
    }
    out
}

/// One row's step from its gates `recurrent + projected` (`i, f, g, o`, each `hidden`): `c` and
/// `h` updated in place. Branch-free over [`exp_f32`] and vectorised ([`vectorized`]):
/// libm's `expf`/`tanhf` one value at a time cost 5 calls × 1024 values × 1000 steps per 10 s
/// decoded.
fn cell(recurrent: &[f32], projected: &[f32], c: &mut [f32], h: &mut [f32]) {
    let hidden = c.len();
    let gate = |k: usize| {
        let range = k * hidden..(k + 1) * hidden;
        (&recurrent[range.clone()], &projected[range])
    };
    let [(ri, pi), (rf, pf), (rg, pg), (ro, po)] = [0, 1, 2, 3].map(gate);
    vectorized(
        #[inline(always)]
        || {
            for j in 0..hidden {
                let c_new =
                    sigmoid(rf[j] + pf[j]) * c[j] + sigmoid(ri[j] + pi[j]) * tanh(rg[j] + pg[j]);
                c[j] = c_new;
                h[j] = sigmoid(ro[j] + po[j]) * tanh(c_new);
            }
        },
    )
}

/// `1 / (1 + e^−x)`, relative error below 1e-6 (from [`exp_f32`]'s 2 ulp).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_f32(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

/// `tanh x = (1 − e^−2|x|) / (1 + e^−2|x|)` with the sign of `x`, absolute error below 1e-6.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp_f32(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free gate functions against libm's over the range the gates take.
    #[test]
    fn sigmoid_and_tanh_match_libm() {
        let (mut worst_sigmoid, mut worst_tanh) = (0f64, 0f64);
        for k in -200_000..=200_000 {
            let x = k as f32 * 1e-4; // −20..20, through 0 and the small values
            let want_sigmoid = 1.0 / (1.0 + (-(x as f64)).exp());
            worst_sigmoid =
                worst_sigmoid.max((sigmoid(x) as f64 - want_sigmoid).abs() / want_sigmoid);
            worst_tanh = worst_tanh.max((tanh(x) as f64 - (x as f64).tanh()).abs());
        }
        assert!(
            worst_sigmoid < 1e-6,
            "sigmoid relative error {worst_sigmoid:e}"
        );
        assert!(worst_tanh < 1e-6, "tanh absolute error {worst_tanh:e}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(100.0), 1.0);
        assert!(sigmoid(-100.0) < 1e-37);
    }
}
