//! EnCodec's residual vector quantizer (`EncodecResidualVectorQuantizer` and
//! `EncodecEuclideanCodebook` in transformers' `modeling_encodec.py`): codebook `k` quantises
//! what codebooks `0..k` left over, each by the nearest code in Euclidean distance.

use burn::tensor::{Device, Int, Tensor};

use crate::error::LoadError;
use crate::weights::Weights;

/// One codebook: key `{prefix}.layers.{k}.codebook.embed` `[codebook_size, dim]`. The
/// training-time buffers (`embed_avg`, `cluster_size`, `inited`) play no part at inference.
#[derive(Debug)]
struct Codebook {
    embed: Tensor<2>,
    /// `embed` transposed, `[dim, codebook_size]`, for the distance matmul.
    embed_t: Tensor<2>,
    /// `‖e‖²` per code, `[1, codebook_size]`.
    embed_sq: Tensor<2>,
}

impl Codebook {
    /// Index of the nearest code per row, as the reference computes the distance:
    /// `‖x‖² − 2 x·e + ‖e‖²` (the first index wins a tie).
    ///
    /// # Shapes
    /// - `x`: `[n, dim]`
    /// - returns `[n]`
    fn nearest(&self, x: Tensor<2>) -> Tensor<1, Int> {
        let x_sq = x.clone().powi_scalar(2).sum_dim(1);
        let dist = x_sq - x.matmul(self.embed_t.clone()).mul_scalar(2.0) + self.embed_sq.clone();
        dist.argmin(1).squeeze_dim::<1>(1)
    }

    /// # Shapes
    /// - `codes`: `[n]`
    /// - returns `[n, dim]`
    fn lookup(&self, codes: Tensor<1, Int>) -> Tensor<2> {
        self.embed.clone().select(0, codes)
    }
}

/// `EncodecResidualVectorQuantizer`: keys `{prefix}.layers.{k}.codebook.embed`.
#[derive(Debug)]
pub struct ResidualVectorQuantizer {
    layers: Vec<Codebook>,
    dim: usize,
    codebook_size: usize,
}

impl ResidualVectorQuantizer {
    pub fn load(
        weights: &Weights,
        prefix: &str,
        num_quantizers: usize,
        codebook_size: usize,
        dim: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let layers = (0..num_quantizers)
            .map(|k| {
                let embed = weights.tensor(
                    &format!("{prefix}.layers.{k}.codebook.embed"),
                    [codebook_size, dim],
                    device,
                )?;
                // Contiguous, so the distance matmul does not copy a transposed view per call.
                let embed_t = Tensor::from_data(embed.clone().transpose().into_data(), device);
                let embed_sq = embed_t.clone().powi_scalar(2).sum_dim(0);
                Ok(Codebook {
                    embed,
                    embed_t,
                    embed_sq,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(Self {
            layers,
            dim,
            codebook_size,
        })
    }

    pub fn num_quantizers(&self) -> usize {
        self.layers.len()
    }

    pub fn codebook_size(&self) -> usize {
        self.codebook_size
    }

    /// Codes of every codebook.
    ///
    /// # Shapes
    /// - `embeddings`: `[batch, dim, frames]`
    /// - returns `[batch, num_quantizers, frames]`
    pub fn encode(&self, embeddings: Tensor<3>) -> Tensor<3, Int> {
        let [batch, dim, frames] = embeddings.dims();
        let mut residual = embeddings.swap_dims(1, 2).reshape([batch * frames, dim]);
        let mut codes = Vec::with_capacity(self.layers.len());
        for codebook in &self.layers {
            let nearest = codebook.nearest(residual.clone());
            residual = residual - codebook.lookup(nearest.clone());
            codes.push(nearest.reshape([batch, 1, frames]));
        }
        Tensor::cat(codes, 1)
    }

    /// The sum of the code embeddings of the first `n_q` codebooks.
    ///
    /// # Shapes
    /// - `codes`: `[batch, n_q, frames]`, `n_q ≤ num_quantizers`, values `< codebook_size`
    /// - returns `[batch, dim, frames]`
    pub fn decode(&self, codes: Tensor<3, Int>) -> Tensor<3> {
        let [batch, n_q, frames] = codes.dims();
        assert!(
            n_q <= self.layers.len(),
            "{n_q} codebooks of codes, but the quantizer has {}",
            self.layers.len()
        );
        let mut sum: Option<Tensor<2>> = None;
        for (k, codebook) in self.layers.iter().take(n_q).enumerate() {
            let layer_codes = codes.clone().narrow(1, k, 1).reshape([batch * frames]);
            let quantized = codebook.lookup(layer_codes);
            sum = Some(match sum {
                Some(sum) => sum + quantized,
                None => quantized,
            });
        }
        let sum = sum.unwrap_or_else(|| Tensor::zeros([batch * frames, self.dim], &codes.device()));
        sum.reshape([batch, frames, self.dim]).swap_dims(1, 2)
    }
}
