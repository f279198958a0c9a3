//! Concept directions from an AGOP: its top eigenvectors (unit norm, eigenvalues descending)
//! and MusicRFM's sign rule (Pearson correlation with the training targets must be positive).

use faer::{Mat, MatRef, Side};

use crate::error::FitError;
use crate::metrics::pearson;
use crate::scalar::Real;

/// The `k` eigenvectors of the symmetric matrix `a` with the largest eigenvalues, largest first,
/// computed in f64 with a full symmetric eigendecomposition. Returns (eigenvalues, vectors).
pub fn top_eigenvectors<T: Real>(
    a: MatRef<'_, T>,
    k: usize,
) -> Result<(Vec<f64>, Vec<Vec<f64>>), FitError> {
    let d = a.nrows();
    if a.ncols() != d || k == 0 || k > d {
        return Err(FitError::Shape {
            what: format!(
                "top {k} eigenvectors of a {}×{} matrix",
                a.nrows(),
                a.ncols()
            ),
        });
    }
    let a64 = Mat::<f64>::from_fn(d, d, |i, j| a[(i, j)].to_f64());
    let evd = a64
        .as_ref()
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| FitError::Eigen)?;
    let (s, u) = (evd.S(), evd.U());
    let mut values = Vec::with_capacity(k);
    let mut vectors = Vec::with_capacity(k);
    for c in (d - k..d).rev() {
        values.push(s[c]);
        let mut v: Vec<f64> = (0..d).map(|i| u[(i, c)]).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        vectors.push(v);
    }
    Ok((values, vectors))
}

/// Flips `v` unless Pearson(y, X v) > 0 on the training split (a NaN correlation flips too, as
/// MusicRFM's `+1 if corr > 0 else -1` does). Returns whether it flipped.
pub fn align_sign<T: Real>(v: &mut [f64], x: MatRef<'_, T>, y: &[f64]) -> bool {
    let proj: Vec<f64> = (0..x.nrows())
        .map(|i| (0..x.ncols()).map(|j| x[(i, j)].to_f64() * v[j]).sum())
        .collect();
    let flip = pearson(y, &proj).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater);
    if flip {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    flip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Fixture;

    #[test]
    fn top_eigenvector_matches_numpy_up_to_sign_and_aligns_like_musicrfm() {
        for name in ["binary", "regression", "multiclass"] {
            let fx = Fixture::load(name);
            let agop = fx.mat("agop_best");
            let (vals, vecs) = top_eigenvectors(agop.as_ref(), 2).expect("eigen");
            assert!(vals[0] >= vals[1]);
            let want = fx.mat("top_eigvec");
            let dot: f64 = (0..want.nrows()).map(|i| vecs[0][i] * want[(i, 0)]).sum();
            let sign = dot.signum();
            let err = (0..want.nrows())
                .map(|i| (sign * vecs[0][i] - want[(i, 0)]).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-8, "{name}: eigenvector error {err:e}");
            assert!((vals[0] - fx.mat("top_eigval")[(0, 0)]).abs() < 1e-10);
            if name != "multiclass" {
                let x = fx.mat("x_train");
                let y: Vec<f64> = (0..x.nrows()).map(|i| fx.mat("y_train")[(i, 0)]).collect();
                let mut v = vecs[0].clone();
                align_sign(&mut v, x.as_ref(), &y);
                let aligned = fx.mat("top_eigvec_aligned");
                let err = (0..v.len())
                    .map(|i| (v[i] - aligned[(i, 0)]).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-8, "{name}: aligned eigenvector error {err:e}");
            }
        }
    }
}
