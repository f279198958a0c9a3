//! Gradients of the kernel predictor at the training points and their average gradient outer
//! product (AGOP), as xRFM's `LightLaplaceKernel.get_function_grads` / `RFM.fit_M`:
//!
//! g_{l,j} = Σ_i α_{i,l} κ_ij (M x_j − M x_i),  κ_ij = −(p/L^p) k_ij d_ij^(p−2),
//! G = Σ_rows g gᵀ (rows centred first if asked), M_new = G / (max G + 1e−30).
//!
//! Like xRFM's `RFM.fit_M`, the sum runs over batches of training rows, each centred on its own,
//! and stops after the first 1 + ⌊20 000 / B⌋ batches (see [`agop_batches`]).

use faer::linalg::matmul::triangular::BlockStructure;
use faer::linalg::matmul::{matmul, triangular};
use std::ops::Range;

use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::kernel::{col_slice, col_slices_mut, mirror_lower, reuse_or_zeros};
use crate::scalar::Real;

/// `total_points_to_sample`: xRFM's default cap on the rows the AGOP is evaluated at.
pub(crate) const AGOP_POINTS: usize = 20_000;
/// xRFM's `_compute_optimal_M_batch` on the CPU (and for its light Laplace kernel on a GPU with
/// 40 GB or more free): B = min(n, 10 000).
pub(crate) const AGOP_BATCH: usize = 10_000;

/// The row batches xRFM's `fit_M` sums the AGOP over: `arange(n).split(B)[:1 + points // B]`,
/// B = min(n, `batch`). Every row up to n = `points`; beyond, the first (1 + ⌊points / B⌋)·B rows
/// (30 000 with the defaults), in the order given. Our splits hand the training rows over in
/// seeded shuffled order (`splits.rs`), so that prefix is a seeded random sample of them.
pub(crate) fn agop_batches(n: usize, points: usize, batch: usize) -> Vec<Range<usize>> {
    let b = n.min(batch).max(1);
    (0..=points / b)
        .map(|i| (i * b).min(n)..((i + 1) * b).min(n))
        .filter(|r| !r.is_empty())
        .collect()
}

/// The n×(c·d + c) matrices of the gradients, kept from one AGOP to the next (see
/// `rfm::Buffers`).
#[derive(Default)]
pub(crate) struct AgopScratch<T> {
    b: Option<Mat<T>>,
    g: Option<Mat<T>>,
}

/// Σ over [`agop_batches`] of the batch's AGOP (centred within the batch when `center`), for the
/// predictor with centres `xm` (= X·M), gradient coefficients `coef` and weights `alpha`, into
/// `out` (d×d, overwritten).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batched_agop<T: Real>(
    xm: MatRef<'_, T>,
    coef: MatRef<'_, T>,
    alpha: MatRef<'_, T>,
    center: bool,
    (points, batch): (usize, usize),
    par: Par,
    scratch: &mut AgopScratch<T>,
    out: &mut Mat<T>,
) {
    let d = xm.ncols();
    assert_eq!((out.nrows(), out.ncols()), (d, d), "AGOP output shape");
    let batches = agop_batches(xm.nrows(), points, batch);
    if batches.is_empty() {
        out.fill(T::zero_impl());
    }
    for (i, rows) in batches.into_iter().enumerate() {
        let (start, len) = (rows.start, rows.len());
        let grads = gradients(
            xm,
            coef.subrows(start, len),
            xm.subrows(start, len),
            alpha,
            par,
            scratch,
        );
        let accum = if i == 0 { Accum::Replace } else { Accum::Add };
        agop_lower(grads, d, center, out.as_mut(), accum, par);
    }
    mirror_lower(out);
}

/// The stacked gradients at the points whose rows of κ are `coef` (m × n) and whose projections
/// are `at` (m × d), laid out m × (c·d): block l holds ∇f_l at every point. They are written
/// into `scratch`, whose matrix is returned.
pub(crate) fn gradients<'s, T: Real>(
    xm: MatRef<'_, T>,
    coef: MatRef<'_, T>,
    at: MatRef<'_, T>,
    alpha: MatRef<'_, T>,
    par: Par,
    scratch: &'s mut AgopScratch<T>,
) -> MatMut<'s, T> {
    let (n, d) = (xm.nrows(), xm.ncols());
    let (m, c) = (at.nrows(), alpha.ncols());
    // B = [α_1 ∘ XM, …, α_c ∘ XM, α]: one product gives C = κ B and s = κ α, rather than a
    // second pass over κ for s
    let mut b = reuse_or_zeros(&mut scratch.b, n, c * d + c);
    col_slices_mut(b.as_mut())
        .into_par_iter()
        .enumerate()
        .for_each(|(j, col)| {
            if j < c * d {
                let (a, xmc) = (col_slice(alpha, j / d), col_slice(xm, j % d));
                for ((v, &a), &x) in col.iter_mut().zip(a).zip(xmc) {
                    *v = a * x;
                }
            } else {
                col.copy_from_slice(col_slice(alpha, j - c * d));
            }
        });
    let g = reuse_or_zeros(&mut scratch.g, m, c * d + c);
    let g = scratch.g.insert(g);
    matmul(
        g.as_mut(),
        Accum::Replace,
        coef,
        b.as_ref(),
        T::one_impl(),
        par,
    );
    scratch.b = Some(b);
    let (mut grads, s) = g.as_mut().split_at_col_mut(c * d);
    let s = s.as_ref();
    // g_l = s_l ∘ XM_at − κ B_l
    col_slices_mut(grads.as_mut())
        .into_par_iter()
        .enumerate()
        .for_each(|(j, col)| {
            let (sc, xmc) = (col_slice(s, j / d), col_slice(at, j % d));
            for ((v, &s), &x) in col.iter_mut().zip(sc).zip(xmc) {
                *v = s * x - *v;
            }
        });
    grads
}

/// The lower triangle of Σ over rows of g gᵀ (d×d) into `out` as `accum` says, after
/// subtracting the pooled mean gradient when `center` is set (in place). The upper triangle of
/// `out` is left as it was.
pub(crate) fn agop_lower<T: Real>(
    mut grads: MatMut<'_, T>,
    d: usize,
    center: bool,
    mut out: MatMut<'_, T>,
    accum: Accum,
    par: Par,
) {
    let n = grads.nrows();
    let c = grads.ncols() / d;
    if center {
        let count = T::from_f64((n * c) as f64);
        let g = grads.as_ref();
        let means: Vec<T> = (0..d)
            .into_par_iter()
            .map(|k| {
                let mut mean = T::zero_impl();
                for l in 0..c {
                    for &v in col_slice(g, l * d + k) {
                        mean += v;
                    }
                }
                mean / count
            })
            .collect();
        col_slices_mut(grads.as_mut())
            .into_par_iter()
            .enumerate()
            .for_each(|(j, col)| {
                let mean = means[j % d];
                for v in col {
                    *v -= mean;
                }
            });
    }
    for l in 0..c {
        let block = grads.as_ref().subcols(l * d, d);
        triangular::matmul(
            out.as_mut(),
            BlockStructure::TriangularLower,
            if l == 0 { accum } else { Accum::Add },
            block.transpose(),
            BlockStructure::Rectangular,
            block,
            BlockStructure::Rectangular,
            T::one_impl(),
            par,
        );
    }
}

/// G / (max G + 1e−30): the reference's normalisation by the largest entry.
pub(crate) fn normalize_by_max<T: Real>(g: &mut Mat<T>) {
    let max = col_slices_mut(g.as_mut())
        .into_par_iter()
        .map(|col| col.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64())))
        .reduce(|| f64::NEG_INFINITY, f64::max);
    let inv = T::from_f64(1.0 / (max + 1e-30));
    col_slices_mut(g.as_mut()).into_par_iter().for_each(|col| {
        for v in col {
            *v *= inv;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastmath::{KernelShape, kernel_and_coef};
    use crate::kernel::{KernelParams, project, train_kernel};
    use crate::test_support::{Fixture, rel_err};

    /// The full AGOP of `grads` alone.
    fn agop(mut grads: Mat<f64>, d: usize, center: bool) -> Mat<f64> {
        let mut out = Mat::zeros(d, d);
        agop_lower(
            grads.as_mut(),
            d,
            center,
            out.as_mut(),
            Accum::Replace,
            Par::Seq,
        );
        mirror_lower(&mut out);
        out
    }

    fn batched(
        xm: MatRef<'_, f64>,
        coef: MatRef<'_, f64>,
        alpha: MatRef<'_, f64>,
        sizes: (usize, usize),
        scratch: &mut AgopScratch<f64>,
    ) -> Mat<f64> {
        // stale contents, as a buffer from an earlier iteration has
        let mut out = Mat::from_fn(xm.ncols(), xm.ncols(), |_, _| f64::NAN);
        batched_agop(xm, coef, alpha, true, sizes, Par::Seq, scratch, &mut out);
        out
    }

    /// Gradients at points z (not the centers) through the same formula, for the fixture.
    fn grads_at(
        x: MatRef<'_, f64>,
        z: MatRef<'_, f64>,
        m: MatRef<'_, f64>,
        coefs: MatRef<'_, f64>,
        params: KernelParams,
    ) -> Vec<Mat<f64>> {
        let xp = project(x, m, Par::Seq);
        let zp = project(z, m, Par::Seq);
        let shape = KernelShape::new(params.bandwidth, params.exponent);
        let (nx, nz, d) = (x.nrows(), z.nrows(), x.ncols());
        let mut out = Vec::new();
        for l in 0..coefs.nrows() {
            let mut g = Mat::<f64>::zeros(nz, d);
            for j in 0..nz {
                for i in 0..nx {
                    let mut d2 = xp.sq_norms[i] + zp.sq_norms[j];
                    for k in 0..d {
                        d2 -= 2.0 * xp.xm[(i, k)] * z[(j, k)];
                    }
                    let (mut kv, mut cv) = ([d2], [0.0]);
                    kernel_and_coef(&mut kv, &mut cv, shape);
                    for k in 0..d {
                        g[(j, k)] += coefs[(l, i)] * cv[0] * (zp.xm[(j, k)] - xp.xm[(i, k)]);
                    }
                }
            }
            out.push(g);
        }
        out
    }

    #[test]
    fn function_gradients_match_xrfm() {
        let fx = Fixture::load("kernel");
        let params = KernelParams {
            bandwidth: 3.0,
            exponent: 0.9,
        };
        let (x, z, m, coefs) = (fx.mat("x"), fx.mat("z"), fx.mat("m"), fx.mat("coefs"));
        let grads = grads_at(x.as_ref(), z.as_ref(), m.as_ref(), coefs.as_ref(), params);
        let want = fx.mat("grads"); // (c·n_z) × d
        let nz = z.nrows();
        for (l, g) in grads.iter().enumerate() {
            let err = rel_err(g.as_ref(), want.as_ref().subrows(l * nz, nz));
            assert!(err < 1e-10, "output {l}: gradient relative error {err:e}");
        }
        // the AGOP with centring over the pooled (output, point) rows
        let d = x.ncols();
        let stacked = Mat::<f64>::from_fn(nz, 2 * d, |j, col| grads[col / d][(j, col % d)]);
        let g = agop(stacked, d, true);
        let err = rel_err(g.as_ref(), fx.mat("agop_centered").as_ref());
        assert!(err < 1e-10, "agop relative error {err:e}");
    }

    #[test]
    fn batches_follow_xrfm_fit_m() {
        // arange(n).split(min(n, 10_000))[:1 + 20_000 // B]
        let b = |n| agop_batches(n, AGOP_POINTS, AGOP_BATCH);
        assert_eq!(b(7), vec![0..7]);
        assert_eq!(b(10_000), vec![0..10_000]);
        assert_eq!(b(15_000), vec![0..10_000, 10_000..15_000]);
        assert_eq!(b(20_000), vec![0..10_000, 10_000..20_000]);
        assert_eq!(b(45_000), vec![0..10_000, 10_000..20_000, 20_000..30_000]);
        // B = n below the batch size: every row, one batch.
        assert_eq!(agop_batches(9, 4, 16), vec![0..9]);
    }

    #[test]
    fn batched_agop_sums_the_centred_agop_of_each_batch() {
        let fx = Fixture::load("kernel");
        let (x, m, coefs) = (fx.mat("x"), fx.mat("m"), fx.mat("coefs"));
        let params = KernelParams {
            bandwidth: 3.0,
            exponent: 0.9,
        };
        let proj = project(x.as_ref(), m.as_ref(), Par::Seq);
        let n = x.nrows();
        let (mut k, mut coef) = (Mat::zeros(n, n), Mat::zeros(n, n));
        train_kernel(
            x.as_ref(),
            proj.xm.as_ref(),
            params,
            &mut k,
            &mut coef,
            Par::Seq,
        );
        mirror_lower(&mut coef);
        let alpha = coefs.transpose().to_owned();
        let (xm, d) = (proj.xm.as_ref(), x.ncols());
        assert!(n >= 4, "the fixture has {n} rows");
        let scratch = &mut AgopScratch::default();
        let all = gradients(xm, coef.as_ref(), xm, alpha.as_ref(), Par::Seq, scratch).to_owned();
        // 2 rows a batch, 1 + 2 / 2 = 2 batches: rows 0..4 in two centred halves.
        let got = batched(xm, coef.as_ref(), alpha.as_ref(), (2, 2), scratch);
        let mut want = agop(all.subrows(0, 2).to_owned(), d, true);
        want += agop(all.subrows(2, 2).to_owned(), d, true);
        assert!(rel_err(got.as_ref(), want.as_ref()) < 1e-12);
        // No cap: one batch of every row is the plain AGOP.
        let got = batched(xm, coef.as_ref(), alpha.as_ref(), (n, n), scratch);
        let want = agop(all, d, true);
        assert!(rel_err(got.as_ref(), want.as_ref()) < 1e-12);
    }

    #[test]
    fn normalization_divides_by_the_largest_entry() {
        let mut g = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 4.0 } else { 1.0 });
        normalize_by_max(&mut g);
        assert_eq!(g[(0, 0)], 1.0);
        assert_eq!(g[(0, 1)], 0.25);
    }
}
