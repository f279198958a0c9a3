//! Kernel ridge regression: α = (K + λI)⁻¹ Y, with the reference's fallback.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::cholesky::llt::factor::LltParams;
use faer::linalg::solvers::Solve;
use faer::{Auto, Mat, MatRef, Par};

use crate::error::FitError;
use crate::scalar::Real;

/// How the system was solved (for diagnostics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolveMethod {
    /// Cholesky of K + λI.
    Cholesky,
    /// LU with partial pivoting (K + λI not numerically positive definite).
    Lu,
    /// LU after adding 1% of the largest absolute row sum of K + λI to the diagonal, the
    /// reference's retry when its solver fails.
    LuWithFallbackRidge,
}

fn all_finite<T: Real>(m: MatRef<'_, T>) -> bool {
    (0..m.ncols()).all(|j| (0..m.nrows()).all(|i| m[(i, j)].to_f64().is_finite()))
}

/// Solves (K + λI) α = Y. `k` holds K in its lower triangle (the upper one is not read); the
/// Cholesky factorisation overwrites it in place. Where that fails, `full_kernel` is asked to
/// write the full symmetric K into `k` again for the LU fallback, which adds λ, and the fallback
/// ridge when used, to its diagonal.
pub(crate) fn solve_krr<T: Real>(
    k: &mut Mat<T>,
    reg: f64,
    y: MatRef<'_, T>,
    par: Par,
    full_kernel: impl FnOnce(&mut Mat<T>),
) -> Result<(Mat<T>, SolveMethod), FitError> {
    let n = k.nrows();
    let add_reg = |k: &mut Mat<T>| {
        if reg > 0.0 {
            let r = T::from_f64(reg);
            for i in 0..n {
                k[(i, i)] += r;
            }
        }
    };
    add_reg(k);
    // torch.linalg.solve (LU) in the reference; Cholesky gives the same solution for the SPD
    // systems this kernel produces and is twice as fast. In place, it spares faer's `llt` its
    // n×n copy. LU takes over where Cholesky fails.
    if let Some(alpha) = cholesky_solve(k, y, par) {
        return Ok((alpha, SolveMethod::Cholesky));
    }
    full_kernel(k);
    add_reg(k);
    if all_finite(k.as_ref()) {
        let alpha = k.as_ref().partial_piv_lu().solve(y);
        if all_finite(alpha.as_ref()) {
            return Ok((alpha, SolveMethod::Lu));
        }
    }
    // Gershgorin: 1% of the max absolute row sum bounds 1% of the largest eigenvalue.
    let max_row_sum = (0..n)
        .map(|i| (0..n).map(|j| k[(i, j)].to_f64().abs()).sum::<f64>())
        .fold(0.0_f64, f64::max);
    if !max_row_sum.is_finite() {
        return Err(FitError::Singular);
    }
    let ridge = T::from_f64(max_row_sum * 1e-2);
    for i in 0..n {
        k[(i, i)] += ridge;
    }
    let alpha = k.as_ref().partial_piv_lu().solve(y);
    if all_finite(alpha.as_ref()) {
        Ok((alpha, SolveMethod::LuWithFallbackRidge))
    } else {
        Err(FitError::Singular)
    }
}

/// L Lᵀ of the lower triangle of `a`, in place, and the solution of L Lᵀ α = Y; `None` where
/// the factorisation fails or the solution is not finite.
fn cholesky_solve<T: Real>(a: &mut Mat<T>, y: MatRef<'_, T>, par: Par) -> Option<Mat<T>> {
    let n = a.nrows();
    // Diagonal blocks up to 128 columns factored unblocked rather than faer's 64: fewer
    // synchronised triangular solves and updates (n = 2000, f32, 2 threads: 15.7 → 14.1 ms).
    let mut params = <LltParams as Auto<T>>::auto();
    params.recursion_threshold = params.recursion_threshold.max(128);
    let mut mem = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<T>(
        n,
        par,
        params.into(),
    ));
    let stack = MemStack::new(&mut mem);
    llt::factor::cholesky_in_place(a.as_mut(), Default::default(), par, stack, params.into())
        .ok()?;
    let mut alpha = y.to_owned();
    llt::solve::solve_in_place(a.as_ref(), alpha.as_mut(), par, stack);
    all_finite(alpha.as_ref()).then_some(alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `k`'s lower triangle with NaN above the diagonal, which the Cholesky path must not read.
    fn lower_only(k: &Mat<f64>) -> Mat<f64> {
        Mat::from_fn(k.nrows(), k.ncols(), |i, j| {
            if i >= j { k[(i, j)] } else { f64::NAN }
        })
    }

    #[test]
    fn spd_system_uses_cholesky_and_solves() {
        let a = Mat::<f64>::from_fn(4, 4, |i, j| {
            if i == j {
                2.0
            } else {
                0.5 / (1.0 + (i + j) as f64)
            }
        });
        let y = Mat::<f64>::from_fn(4, 1, |i, _| i as f64 - 1.0);
        let mut k = lower_only(&a);
        let (alpha, method) = solve_krr(&mut k, 0.1, y.as_ref(), Par::Seq, |_| {
            panic!("the Cholesky path asked for the full kernel")
        })
        .expect("solve");
        assert_eq!(method, SolveMethod::Cholesky);
        let mut reg = a.clone();
        for i in 0..4 {
            reg[(i, i)] += 0.1;
        }
        let back = &reg * &alpha;
        for i in 0..4 {
            assert!((back[(i, 0)] - y[(i, 0)]).abs() < 1e-12);
        }
    }

    #[test]
    fn indefinite_system_falls_back_to_lu() {
        let k0 = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 0.0 } else { 1.0 });
        let y = Mat::<f64>::from_fn(2, 1, |i, _| (i + 1) as f64);
        let mut k = lower_only(&k0);
        let (alpha, method) =
            solve_krr(&mut k, 0.0, y.as_ref(), Par::Seq, |k| k.copy_from(&k0)).expect("solve");
        assert_eq!(method, SolveMethod::Lu);
        assert!((alpha[(0, 0)] - 2.0).abs() < 1e-12 && (alpha[(1, 0)] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn singular_system_gets_the_fallback_ridge() {
        let k0 = Mat::<f64>::from_fn(3, 3, |_, _| 1.0);
        let y = Mat::<f64>::from_fn(3, 1, |i, _| i as f64);
        let mut k = lower_only(&k0);
        let (alpha, method) =
            solve_krr(&mut k, 0.0, y.as_ref(), Par::Seq, |k| k.copy_from(&k0)).expect("solve");
        assert_eq!(method, SolveMethod::LuWithFallbackRidge);
        // (J + 0.03 I) α = y
        let ridge = 0.03;
        for i in 0..3 {
            let lhs: f64 = (0..3).map(|j| alpha[(j, 0)]).sum::<f64>() + ridge * alpha[(i, 0)];
            assert!((lhs - i as f64).abs() < 1e-9, "row {i}: {lhs}");
        }
    }
}
