//! Distribution distances between two sets of clip embeddings (rows), for the steering
//! evaluation's FD and MMD columns (docs/algorithms.md §6).
//!
//! - **Fréchet distance** of the Gaussians fitted to each set (means, unbiased covariances):
//!   `‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½`. The trace of the square root is taken
//!   on the symmetric product form `Σ₁^½ Σ₂ Σ₁^½` (PSD), whose eigenvalues are those of `Σ₁Σ₂`, so
//!   both square roots are symmetric eigendecompositions (faer, f64) with negative round-off
//!   eigenvalues clamped to 0. Works for rank-deficient covariances (fewer clips than dimensions).
//! - **MMD²** with the RBF kernel `k(x, y) = exp(−‖x − y‖² / (2σ²))`, σ² from the median
//!   heuristic (the median pairwise squared distance of the pooled rows, over 2), and the unbiased
//!   estimator of Gretton et al. (2012): for equally many rows the paired U-statistic
//!   `1/(n(n−1)) Σ_{i≠j} k(xᵢ,xⱼ) + k(yᵢ,yⱼ) − k(xᵢ,yⱼ) − k(xⱼ,yᵢ)` (Lemma 6), which is exactly
//!   0 for identical sets; otherwise the two-sample form with the full cross mean. Unbiased means
//!   it can be slightly negative when the distributions agree.

use anyhow::{bail, ensure};
use directions::faer::{Mat, Side};

/// Check rows are non-empty and of one width; returns the width.
fn width(x: &[Vec<f64>], y: &[Vec<f64>]) -> anyhow::Result<usize> {
    ensure!(!x.is_empty() && !y.is_empty(), "both sets need rows");
    let d = x[0].len();
    ensure!(d > 0, "rows must not be empty");
    if let Some(r) = x.iter().chain(y).find(|r| r.len() != d) {
        bail!("rows of width {d} and {} mixed", r.len());
    }
    Ok(d)
}

/// Mean and unbiased covariance (divided by n − 1; zero for one row).
pub fn moments(x: &[Vec<f64>]) -> (Vec<f64>, Mat<f64>) {
    let (n, d) = (x.len(), x.first().map_or(0, Vec::len));
    let mut mean = vec![0.0; d];
    for r in x {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n as f64;
        }
    }
    let c = Mat::<f64>::from_fn(n, d, |i, j| x[i][j] - mean[j]);
    let denom = n.saturating_sub(1).max(1) as f64;
    let product = c.transpose() * &c;
    let cov = Mat::<f64>::from_fn(d, d, |i, j| product[(i, j)] / denom);
    (mean, cov)
}

/// Eigenvalues of a symmetric matrix (its lower triangle is read).
fn sym_eigenvalues(a: &Mat<f64>) -> anyhow::Result<Vec<f64>> {
    let evd = a
        .as_ref()
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| anyhow::anyhow!("symmetric eigendecomposition failed: {e:?}"))?;
    let s = evd.S();
    Ok((0..a.nrows()).map(|i| s[i]).collect())
}

/// The PSD square root `U diag(√max(λ, 0)) Uᵀ` of a symmetric matrix.
fn sym_sqrt(a: &Mat<f64>) -> anyhow::Result<Mat<f64>> {
    let evd = a
        .as_ref()
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| anyhow::anyhow!("symmetric eigendecomposition failed: {e:?}"))?;
    let (s, u) = (evd.S(), evd.U());
    let n = a.nrows();
    let scaled = Mat::<f64>::from_fn(n, n, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    Ok(&scaled * u.transpose())
}

/// Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).
pub fn frechet_from_moments(
    mu1: &[f64],
    cov1: &Mat<f64>,
    mu2: &[f64],
    cov2: &Mat<f64>,
) -> anyhow::Result<f64> {
    let d = mu1.len();
    ensure!(
        mu2.len() == d
            && [cov1, cov2]
                .iter()
                .all(|c| c.nrows() == d && c.ncols() == d),
        "means and covariances must share one width"
    );
    let mean_term: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let trace = |m: &Mat<f64>| (0..d).map(|i| m[(i, i)]).sum::<f64>();
    let s1 = sym_sqrt(cov1)?;
    let product = &s1 * cov2 * &s1;
    let product = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (product[(i, j)] + product[(j, i)]));
    let cross: f64 = sym_eigenvalues(&product)?
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    Ok((mean_term + trace(cov1) + trace(cov2) - 2.0 * cross).max(0.0))
}

/// Fréchet distance of the Gaussians fitted to the rows of `x` and of `y`.
pub fn frechet_distance(x: &[Vec<f64>], y: &[Vec<f64>]) -> anyhow::Result<f64> {
    width(x, y)?;
    let (m1, c1) = moments(x);
    let (m2, c2) = moments(y);
    frechet_from_moments(&m1, &c1, &m2, &c2)
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum()
}

/// σ² of the median heuristic: half the median squared distance over distinct pairs of the
/// pooled rows (so `2σ²` is the median); 1 when every pair coincides.
pub fn median_heuristic(x: &[Vec<f64>], y: &[Vec<f64>]) -> f64 {
    let pooled: Vec<&Vec<f64>> = x.iter().chain(y).collect();
    let mut d2: Vec<f64> = Vec::new();
    for i in 0..pooled.len() {
        for j in i + 1..pooled.len() {
            d2.push(sq_dist(pooled[i], pooled[j]));
        }
    }
    d2.sort_by(f64::total_cmp);
    let median = match d2.len() {
        0 => 0.0,
        n if n % 2 == 1 => d2[n / 2],
        n => 0.5 * (d2[n / 2 - 1] + d2[n / 2]),
    };
    if median > 0.0 { median / 2.0 } else { 1.0 }
}

/// Unbiased MMD² with the RBF kernel of variance `sigma2` (see the module doc).
pub fn mmd2_rbf_with(x: &[Vec<f64>], y: &[Vec<f64>], sigma2: f64) -> anyhow::Result<f64> {
    width(x, y)?;
    ensure!(sigma2 > 0.0, "the RBF bandwidth must be positive");
    let (m, n) = (x.len(), y.len());
    ensure!(m >= 2 && n >= 2, "MMD needs at least 2 rows per set");
    let k = |a: &[f64], b: &[f64]| (-sq_dist(a, b) / (2.0 * sigma2)).exp();
    if m == n {
        let mut sum = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    sum += k(&x[i], &x[j]) + k(&y[i], &y[j]) - k(&x[i], &y[j]) - k(&x[j], &y[i]);
                }
            }
        }
        return Ok(sum / (n * (n - 1)) as f64);
    }
    let within = |s: &[Vec<f64>]| {
        let mut sum = 0.0;
        for i in 0..s.len() {
            for j in 0..s.len() {
                if i != j {
                    sum += k(&s[i], &s[j]);
                }
            }
        }
        sum / (s.len() * (s.len() - 1)) as f64
    };
    let cross: f64 = x.iter().flat_map(|a| y.iter().map(move |b| k(a, b))).sum();
    Ok(within(x) + within(y) - 2.0 * cross / (m * n) as f64)
}

/// Unbiased MMD² with the RBF kernel at the median-heuristic bandwidth.
pub fn mmd2_rbf(x: &[Vec<f64>], y: &[Vec<f64>]) -> anyhow::Result<f64> {
    mmd2_rbf_with(x, y, median_heuristic(x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use directions::Rng;

    /// `n` rows of N(mean, diag(std²)) rotated by the orthogonal `rot`.
    fn gaussian(
        rng: &mut Rng,
        n: usize,
        mean: &[f64],
        std: &[f64],
        rot: &Mat<f64>,
    ) -> Vec<Vec<f64>> {
        let d = mean.len();
        (0..n)
            .map(|_| {
                let z: Vec<f64> = std.iter().map(|s| s * rng.normal()).collect();
                (0..d)
                    .map(|i| mean[i] + (0..d).map(|j| rot[(i, j)] * z[j]).sum::<f64>())
                    .collect()
            })
            .collect()
    }

    /// A rotation in the (0, 1) and (1, 2) planes.
    fn rotation(d: usize) -> Mat<f64> {
        let mut r = Mat::<f64>::identity(d, d);
        let (c, s) = (0.6f64, 0.8f64);
        let mut g = Mat::<f64>::identity(d, d);
        g[(0, 0)] = c;
        g[(0, 1)] = -s;
        g[(1, 0)] = s;
        g[(1, 1)] = c;
        r = &g * &r;
        let mut h = Mat::<f64>::identity(d, d);
        h[(1, 1)] = c;
        h[(1, 2)] = s;
        h[(2, 1)] = -s;
        h[(2, 2)] = c;
        &h * &r
    }

    #[test]
    fn frechet_of_gaussians_matches_the_closed_form() {
        // Commuting covariances R diag(a) Rᵀ and R diag(b) Rᵀ: FD = ‖Δμ‖² + Σ (√a − √b)².
        let d = 4;
        let rot = rotation(d);
        let (a, b) = ([1.0, 4.0, 0.25, 9.0], [4.0, 1.0, 0.25, 1.0]);
        let cov = |v: &[f64]| {
            let diag = Mat::<f64>::from_fn(d, d, |i, j| if i == j { v[i] } else { 0.0 });
            &rot * &diag * rot.transpose()
        };
        let (mu1, mu2) = ([0.0, 1.0, -1.0, 2.0], [1.0, 1.0, 1.0, 2.0]);
        let want = 1.0 + 4.0 + (1.0f64 - 2.0).powi(2) + (2.0f64 - 1.0).powi(2) + 0.0 + 4.0;
        let got = frechet_from_moments(&mu1, &cov(&a), &mu2, &cov(&b)).unwrap();
        assert!((got - want).abs() < 1e-9, "FD {got}, closed form {want}");
        // Identical Gaussians: 0; a rank-deficient covariance still works.
        let same = frechet_from_moments(&mu1, &cov(&a), &mu1, &cov(&a)).unwrap();
        assert!(same.abs() < 1e-9, "{same}");
        let singular = cov(&[1.0, 0.0, 0.0, 4.0]);
        let got = frechet_from_moments(&mu1, &singular, &mu1, &cov(&[4.0, 0.0, 1.0, 1.0])).unwrap();
        // (zero eigenvalues carry round-off of order √ε through the square root)
        assert!((got - (1.0 + 0.0 + 1.0 + 1.0)).abs() < 1e-6, "{got}");

        // From samples: close to the closed form of the generating Gaussians.
        let mut rng = Rng::new(7);
        let std = |v: &[f64]| v.iter().map(|x: &f64| x.sqrt()).collect::<Vec<_>>();
        let x = gaussian(&mut rng, 20_000, &mu1, &std(&a), &rot);
        let y = gaussian(&mut rng, 20_000, &mu2, &std(&b), &rot);
        let got = frechet_distance(&x, &y).unwrap();
        assert!(
            (got - want).abs() < 0.3,
            "sample FD {got}, closed form {want}"
        );
        let same = frechet_distance(&x, &x).unwrap();
        assert!(same.abs() < 1e-8, "{same}");
    }

    #[test]
    fn mmd_is_zero_for_one_distribution_and_positive_for_a_shift() {
        let d = 3;
        let id = Mat::<f64>::identity(d, d);
        let mut rng = Rng::new(11);
        let zero = [0.0; 3];
        let ones = [1.0; 3];
        let x = gaussian(&mut rng, 300, &zero, &ones, &id);
        let y = gaussian(&mut rng, 300, &zero, &ones, &id);
        let shifted = gaussian(&mut rng, 300, &[1.0, 0.0, 0.0], &ones, &id);
        // Identical sets: exactly 0 (the paired U-statistic).
        assert_eq!(mmd2_rbf(&x, &x).unwrap(), 0.0);
        let same = mmd2_rbf(&x, &y).unwrap();
        let moved = mmd2_rbf(&x, &shifted).unwrap();
        assert!(same.abs() < 0.01, "same distribution: {same}");
        assert!(
            moved > 0.05 && moved > 10.0 * same.abs(),
            "shift 1: {moved} vs {same}"
        );

        // Closed form at a fixed bandwidth: for N(a, I) and N(b, I) with k of variance σ²,
        // MMD² = 2 (σ²/(σ²+2))^(d/2) (1 − exp(−‖a−b‖² / (2(σ²+2)))).
        let sigma2: f64 = 2.0;
        let want = 2.0
            * (sigma2 / (sigma2 + 2.0)).powf(d as f64 / 2.0)
            * (1.0 - (-1.0 / (2.0 * (sigma2 + 2.0))).exp());
        let x = gaussian(&mut rng, 1500, &zero, &ones, &id);
        let shifted = gaussian(&mut rng, 1500, &[1.0, 0.0, 0.0], &ones, &id);
        let got = mmd2_rbf_with(&x, &shifted, sigma2).unwrap();
        assert!((got - want).abs() < 0.02, "MMD² {got}, closed form {want}");
        // Unequal sizes use the two-sample form, with the same expectation.
        let got = mmd2_rbf_with(&x[..1000], &shifted, sigma2).unwrap();
        assert!((got - want).abs() < 0.02, "MMD² {got}, closed form {want}");
    }
}
