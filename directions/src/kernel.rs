//! The `l2_high_dim` kernel of xRFM (`LightLaplaceKernel`), with the full matrix M:
//!
//! d_M(x, z) = sqrt(max(0, xᵀMx − 2xᵀMz + zᵀMz)),  k(x, z) = exp(−d_M(x, z)^p / L^p).
//!
//! M enters the distance directly (no square root). Matrices are column-major faer matrices
//! with one sample per row.

use faer::linalg::matmul::triangular::BlockStructure;
use faer::linalg::matmul::{matmul, triangular};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::fastmath::{KernelShape, kernel_and_coef, kernel_values};
use crate::scalar::Real;

/// Bandwidth L and exponent p of the kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelParams {
    pub bandwidth: f64,
    pub exponent: f64,
}

impl KernelParams {
    pub(crate) fn shape(&self) -> KernelShape {
        KernelShape::new(self.bandwidth, self.exponent)
    }
}

/// X·M and the squared M-norms xᵢᵀMxᵢ of its rows.
pub(crate) struct Projected<T> {
    pub xm: Mat<T>,
    pub sq_norms: Vec<T>,
}

/// X·M (n×d) and the row norms (M symmetric).
pub(crate) fn project<T: Real>(x: MatRef<'_, T>, m: MatRef<'_, T>, par: Par) -> Projected<T> {
    project_into(x, m, Mat::zeros(x.nrows(), m.ncols()), par)
}

/// [`project`] into `xm` (n×d, overwritten), a buffer kept from an earlier predictor.
pub(crate) fn project_into<T: Real>(
    x: MatRef<'_, T>,
    m: MatRef<'_, T>,
    mut xm: Mat<T>,
    par: Par,
) -> Projected<T> {
    times_m(x, m, xm.as_mut(), par);
    // xᵢᵀMxᵢ = Σ_k (XM)ᵢₖ xᵢₖ in column order, blocks of rows split over rayon's threads
    const ROWS: usize = 256;
    let mut sq_norms = vec![T::zero_impl(); x.nrows()];
    sq_norms
        .par_chunks_mut(ROWS)
        .enumerate()
        .for_each(|(b, norms)| {
            let start = b * ROWS;
            for k in 0..x.ncols() {
                let xc = x.col(k).subrows(start, norms.len());
                let xmc = &xm.col_as_slice(k)[start..start + norms.len()];
                for (i, s) in norms.iter_mut().enumerate() {
                    *s += xmc[i] * xc[i];
                }
            }
        });
    Projected { xm, sq_norms }
}

/// X·M into `xm` (n×d, overwritten).
pub(crate) fn times_m<T: Real>(x: MatRef<'_, T>, m: MatRef<'_, T>, xm: MatMut<'_, T>, par: Par) {
    if is_identity(m) {
        // the first predictor's M: X·I is X exactly, without the product's d²n multiply-adds
        let mut xm = xm;
        xm.copy_from(x);
    } else {
        matmul(xm, Accum::Replace, x, m, T::one_impl(), par);
    }
}

/// Whether `m` is exactly the identity; stops at the first entry that says not.
fn is_identity<T: Real>(m: MatRef<'_, T>) -> bool {
    m.nrows() == m.ncols()
        && (0..m.ncols()).all(|j| {
            (0..m.nrows()).all(|i| {
                let v = m[(i, j)];
                if i == j {
                    v == T::one_impl()
                } else {
                    v == T::zero_impl()
                }
            })
        })
}

/// Squared distances into `g` (which holds the Gram values xᵢᵀMzⱼ), column by column.
fn gram_to_sq_dist<T: Real>(g: &mut [T], rows: &[T], col: T) {
    let two = T::from_f64(2.0);
    for (v, &r) in g.iter_mut().zip(rows) {
        *v = r - two * *v + col;
    }
}

/// The kernel matrix between training points and its gradient coefficients, into the lower
/// triangles of `k` and `coef` (n×n; the upper ones are left as they were): the Cholesky
/// factorisation reads no more, and [`mirror_lower`] completes either where needed. The
/// diagonal distance is exactly zero. `xm` is X·M; the squared M-norms of X's rows, the Gram
/// matrix's diagonal, are returned.
pub(crate) fn train_kernel<T: Real>(
    x: MatRef<'_, T>,
    xm: MatRef<'_, T>,
    params: KernelParams,
    k: &mut Mat<T>,
    coef: &mut Mat<T>,
    par: Par,
) -> Vec<T> {
    let shape = params.shape();
    // lower triangle of (X M) Xᵀ
    triangular::matmul(
        k.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        xm,
        BlockStructure::Rectangular,
        x.transpose(),
        BlockStructure::Rectangular,
        T::one_impl(),
        par,
    );
    // read off the product rather than summed again over X and X·M (another pass over both)
    let q: Vec<T> = (0..x.nrows()).map(|i| k[(i, i)]).collect();
    let k_cols = col_slices_mut(k.as_mut());
    let c_cols = col_slices_mut(coef.as_mut());
    k_cols
        .into_par_iter()
        .zip(c_cols)
        .enumerate()
        .for_each(|(j, (kc, cc))| {
            let (kc, cc) = (&mut kc[j..], &mut cc[j..]);
            gram_to_sq_dist(kc, &q[j..], q[j]);
            kc[0] = T::zero_impl();
            kernel_and_coef(kc, cc, shape);
        });
    q
}

/// K(Z, X) (n_z × n_x) for new points Z against centers X, given X·M's row norms.
pub(crate) fn cross_kernel<T: Real>(
    z: MatRef<'_, T>,
    x: MatRef<'_, T>,
    x_sq_norms: &[T],
    m: MatRef<'_, T>,
    params: KernelParams,
    par: Par,
) -> Mat<T> {
    let zp = project(z, m, par);
    let mut k = Mat::zeros(z.nrows(), x.nrows());
    cross_kernel_into(&zp, x, x_sq_norms, params, &mut k, par);
    k
}

/// [`cross_kernel`] from Z projected, into `k` (n_z × n_x, overwritten).
pub(crate) fn cross_kernel_into<T: Real>(
    zp: &Projected<T>,
    x: MatRef<'_, T>,
    x_sq_norms: &[T],
    params: KernelParams,
    k: &mut Mat<T>,
    par: Par,
) {
    matmul(
        k.as_mut(),
        Accum::Replace,
        zp.xm.as_ref(),
        x.transpose(),
        T::one_impl(),
        par,
    );
    let shape = params.shape();
    col_slices_mut(k.as_mut())
        .into_par_iter()
        .enumerate()
        .for_each(|(j, kc)| {
            gram_to_sq_dist(kc, &zp.sq_norms, x_sq_norms[j]);
            kernel_values(kc, shape);
        });
}

/// The matrix kept in `slot` when it has the shape asked for, else a new one; either way its
/// contents are stale, for a caller that overwrites them.
pub(crate) fn reuse_or_zeros<T: Real>(
    slot: &mut Option<Mat<T>>,
    nrows: usize,
    ncols: usize,
) -> Mat<T> {
    match slot.take() {
        Some(m) if m.nrows() == nrows && m.ncols() == ncols => m,
        _ => Mat::zeros(nrows, ncols),
    }
}

/// Mutable column slices of a column-major view (row stride 1).
pub(crate) fn col_slices_mut<T>(m: MatMut<'_, T>) -> Vec<&mut [T]> {
    let (nrows, ncols) = (m.nrows(), m.ncols());
    if nrows == 0 {
        return (0..ncols).map(|_| <&mut [T]>::default()).collect();
    }
    assert_eq!(
        m.row_stride(),
        1,
        "column slices of a view with row stride ≠ 1"
    );
    let stride = m.col_stride();
    let ptr = m.as_ptr_mut();
    (0..ncols)
        .map(|j| {
            // SAFETY: with row stride 1 each column is contiguous at `ptr + j * col_stride`;
            // a `MatMut`'s columns do not overlap, and the slices take over its borrow.
            unsafe { std::slice::from_raw_parts_mut(ptr.offset(j as isize * stride), nrows) }
        })
        .collect()
}

/// Column `j` of a view with row stride 1 as a slice.
pub(crate) fn col_slice<T>(m: MatRef<'_, T>, j: usize) -> &[T] {
    m.col(j)
        .try_as_col_major()
        .expect("column slice of a view with row stride ≠ 1")
        .as_slice()
}

/// A raw pointer that rayon's closures may share; users keep their writes disjoint.
#[derive(Clone, Copy)]
struct SharedPtr<T>(*mut T);
// SAFETY: only used to write disjoint elements from several threads (see `mirror_lower`).
unsafe impl<T: Send> Send for SharedPtr<T> {}
unsafe impl<T: Send> Sync for SharedPtr<T> {}

/// Copies the strict lower triangle onto the upper one, split over rayon's threads. It goes by
/// tiles small enough for L1 that both sides of the copy stay in cache: element by element, the
/// transposed side touches a new cache line at every step.
pub(crate) fn mirror_lower<T: Real>(m: &mut Mat<T>) {
    const TILE: usize = 32;
    let n = m.nrows();
    assert_eq!(n, m.ncols(), "mirror_lower of a non-square matrix");
    if n == 0 {
        return;
    }
    let stride = m.col_stride() as usize;
    let ptr = SharedPtr(m.as_mut().as_ptr_mut());
    // Tile column b writes above the diagonal in columns b·TILE.. and reads rows b·TILE.. left
    // of them, below the diagonal: no tile column reads what another writes.
    (0..n.div_ceil(TILE)).into_par_iter().for_each(move |b| {
        let ptr = ptr;
        let cols = b * TILE..((b + 1) * TILE).min(n);
        for rows_start in (0..cols.end).step_by(TILE) {
            for j in cols.clone() {
                for i in rows_start..(rows_start + TILE).min(j) {
                    // SAFETY: i < j < n: (i, j) is above the diagonal in this tile column and
                    // (j, i) below it, both inside the n×n allocation.
                    unsafe { *ptr.0.add(i + j * stride) = *ptr.0.add(j + i * stride) };
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Fixture, rel_err};

    #[test]
    fn kernel_matrix_matches_xrfm() {
        let fx = Fixture::load("kernel");
        let (x, z, m) = (fx.mat("x"), fx.mat("z"), fx.mat("m"));
        let params = KernelParams {
            bandwidth: 3.0,
            exponent: 0.9,
        };
        let xp = project(x.as_ref(), m.as_ref(), Par::Seq);
        // the reference's kernel(x, z) is K(x rows, z rows)
        let zp = project(z.as_ref(), m.as_ref(), Par::Seq);
        let k = cross_kernel(
            x.as_ref(),
            z.as_ref(),
            &zp.sq_norms,
            m.as_ref(),
            params,
            Par::Seq,
        );
        let err = rel_err(k.as_ref(), fx.mat("kernel").as_ref());
        assert!(err < 1e-12, "kernel relative error {err:e}");
        assert_eq!(xp.sq_norms.len(), 30);
    }

    #[test]
    fn train_kernel_is_symmetric_with_unit_diagonal() {
        let fx = Fixture::load("kernel");
        let (x, m) = (fx.mat("x"), fx.mat("m"));
        let params = KernelParams {
            bandwidth: 3.0,
            exponent: 0.9,
        };
        let xp = project(x.as_ref(), m.as_ref(), Par::Seq);
        let n = x.nrows();
        // buffers from an earlier fit hold anything: every entry must be overwritten
        let mut k = Mat::<f64>::from_fn(n, n, |_, _| f64::NAN);
        let mut coef = k.clone();
        let q = train_kernel(
            x.as_ref(),
            xp.xm.as_ref(),
            params,
            &mut k,
            &mut coef,
            Par::Seq,
        );
        for (a, b) in q.iter().zip(&xp.sq_norms) {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "squared norm {a} vs {b}");
        }
        mirror_lower(&mut k);
        mirror_lower(&mut coef);
        let cross = cross_kernel(
            x.as_ref(),
            x.as_ref(),
            &xp.sq_norms,
            m.as_ref(),
            params,
            Par::Seq,
        );
        for i in 0..x.nrows() {
            assert_eq!(k[(i, i)], 1.0);
            assert_eq!(coef[(i, i)], 0.0);
            for j in 0..x.nrows() {
                assert_eq!(k[(i, j)], k[(j, i)]);
                assert_eq!(coef[(i, j)], coef[(j, i)]);
                assert!(coef[(i, j)].is_finite());
                if i != j {
                    assert!((k[(i, j)] - cross[(i, j)]).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn mirror_copies_the_lower_triangle_over_ragged_tiles() {
        for n in [1, 31, 32, 33, 70] {
            let lower = |i: usize, j: usize| (i.max(j) * 1000 + i.min(j)) as f64;
            let mut m = Mat::<f64>::from_fn(n, n, |i, j| if i >= j { lower(i, j) } else { -1.0 });
            mirror_lower(&mut m);
            for j in 0..n {
                for i in 0..n {
                    assert_eq!(m[(i, j)], lower(i, j), "n = {n}, ({i}, {j})");
                }
            }
        }
    }
}
