//! Kernel ridge regression: α = (K + λI)⁻¹ Y, with the reference's fallback.

use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};

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

/// Solves (K + λI) α = Y. `k` is the full symmetric kernel matrix; it is modified in place
/// (λ, and the fallback ridge when used, are added to its diagonal).
pub(crate) fn solve_krr<T: Real>(
    k: &mut Mat<T>,
    reg: f64,
    y: MatRef<'_, T>,
) -> Result<(Mat<T>, SolveMethod), FitError> {
    let n = k.nrows();
    if reg > 0.0 {
        let r = T::from_f64(reg);
        for i in 0..n {
            k[(i, i)] += r;
        }
    }
    // torch.linalg.solve (LU) in the reference; Cholesky gives the same solution for the SPD
    // systems this kernel produces and is twice as fast. LU takes over where Cholesky fails.
    if let Ok(llt) = k.as_ref().llt(Side::Lower) {
        let alpha = llt.solve(y);
        if all_finite(alpha.as_ref()) {
            return Ok((alpha, SolveMethod::Cholesky));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut k = a.clone();
        let (alpha, method) = solve_krr(&mut k, 0.1, y.as_ref()).expect("solve");
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
        let mut k = k0.clone();
        let (alpha, method) = solve_krr(&mut k, 0.0, y.as_ref()).expect("solve");
        assert_eq!(method, SolveMethod::Lu);
        assert!((alpha[(0, 0)] - 2.0).abs() < 1e-12 && (alpha[(1, 0)] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn singular_system_gets_the_fallback_ridge() {
        let mut k = Mat::<f64>::from_fn(3, 3, |_, _| 1.0);
        let y = Mat::<f64>::from_fn(3, 1, |i, _| i as f64);
        let (alpha, method) = solve_krr(&mut k, 0.0, y.as_ref()).expect("solve");
        assert_eq!(method, SolveMethod::LuWithFallbackRidge);
        // (J + 0.03 I) α = y
        let ridge = 0.03;
        for i in 0..3 {
            let lhs: f64 = (0..3).map(|j| alpha[(j, 0)]).sum::<f64>() + ridge * alpha[(i, 0)];
            assert!((lhs - i as f64).abs() < 1e-9, "row {i}: {lhs}");
        }
    }
}
