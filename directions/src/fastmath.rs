//! Element-wise kernel transforms over distance matrices, written so that LLVM vectorises them.
//!
//! `f64::exp`/`f64::ln` call libm one element at a time, which would cost more than the
//! matrix products at n = 2000. These branch-free polynomial versions are accurate to a few
//! ulps in f64 and are compiled three times (baseline, AVX2+FMA, AVX-512) with a run-time pick.

use crate::scalar::Real;

const LOG2_E: f64 = std::f64::consts::LOG2_E;
/// ln 2 split in a high part with trailing zero bits and the remainder (fdlibm).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5 · 2^52: adding and subtracting it rounds to the nearest integer.
const ROUND_SHIFT: f64 = 6_755_399_441_055_744.0;

/// c₀ x^(N−1) + … + c_(N−1) by Horner's rule, coefficients from the highest degree down.
#[inline(always)]
fn horner<F, const N: usize>(x: F, c: [F; N]) -> F
where
    F: Copy + std::ops::Mul<Output = F> + std::ops::Add<Output = F>,
{
    let mut p = c[0];
    for &ci in &c[1..] {
        p = p * x + ci;
    }
    p
}

/// 1/k! for k from N − 1 down to 0: e^r's Taylor coefficients in Horner order. The
/// factorials are exact in either type for the N used, so each entry is 1/k! correctly rounded.
macro_rules! exp_taylor {
    ($name:ident, $t:ty, $n:expr) => {
        const $name: [$t; $n] = {
            let mut c = [0.0; $n];
            let (mut k, mut fact) = (0, 1.0);
            while k < $n {
                if k > 0 {
                    fact *= k as $t;
                }
                c[$n - 1 - k] = 1.0 / fact;
                k += 1;
            }
            c
        };
    };
}
// degree 13 on |r| <= ln2/2: truncation error < 5e-18; degree 7: < 6e-9
exp_taylor!(EXP_TAYLOR_F64, f64, 14);
exp_taylor!(EXP_TAYLOR_F32, f32, 8);

/// e^x, relative error below 1e-15 for x in [-708, 709]; inputs outside are clamped.
#[inline(always)]
pub(crate) fn exp_f64(x: f64) -> f64 {
    let x = x.clamp(-708.0, 709.0);
    let shifted = x * LOG2_E + ROUND_SHIFT;
    let k = shifted - ROUND_SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to degree 13 (`EXP_TAYLOR_F64`)
    let p = horner(r, EXP_TAYLOR_F64);
    // The low mantissa bits of `shifted` hold k; move k + 1023 into the exponent field.
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    p * scale
}

/// e^x in f32, within 2 ulp for x in [-87, 88]; inputs outside are clamped. Branch-free, so
/// the loops around it vectorise (the kernel transforms here; the engine's softmax, GELU, ELU
/// and LSTM gates).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer
    let shifted = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let k = shifted - 12_582_912.0;
    // ln 2 = 0.693_145_75 (9 trailing zero bits: k times it is exact for |k| <= 127)
    // + 1.428_606_8e-6
    let r = (x - k * 0.693_145_75) - k * 1.428_606_8e-6;
    // Taylor series to degree 7 (`EXP_TAYLOR_F32`)
    let p = horner(r, EXP_TAYLOR_F32);
    // the low mantissa bits of `shifted` hold k; move k + 127 into the exponent field
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// ln(x) for positive normal x (callers clamp to at least `f64::MIN_POSITIVE`).
#[inline(always)]
pub(crate) fn ln_f64(x: f64) -> f64 {
    let bits = x.to_bits();
    // exponent as a float without an int->float conversion: 2^52 + e_biased, minus the bias
    let exp_field =
        f64::from_bits((bits >> 52) | 0x4330_0000_0000_0000) - (4_503_599_627_370_496.0 + 1023.0);
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { exp_field + 1.0 } else { exp_field };
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // 2 atanh(s) = 2 (s + s^3/3 + ...), |s| <= 0.1716: stop at s^21
    let p = horner(
        s2,
        [
            1.0 / 21.0,
            1.0 / 19.0,
            1.0 / 17.0,
            1.0 / 15.0,
            1.0 / 13.0,
            1.0 / 11.0,
            1.0 / 9.0,
            1.0 / 7.0,
            1.0 / 5.0,
            1.0 / 3.0,
            1.0,
        ],
    );
    e * LN2_HI + (2.0 * s * p + e * LN2_LO)
}

/// The shape of the `l2_high_dim` kernel: k = exp(-d^p / L^p) with d^p = (d²)^(p/2).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelShape {
    pub exponent: f64,
    /// 1 / L^p
    pub inv_bandwidth_p: f64,
}

impl KernelShape {
    pub fn new(bandwidth: f64, exponent: f64) -> Self {
        Self {
            exponent,
            inv_bandwidth_p: 1.0 / bandwidth.powf(exponent),
        }
    }

    /// d^p from the squared distance (clamped at 0 as the reference does); `SQRT` says p = 1.
    #[inline(always)]
    fn dist_pow<const SQRT: bool>(&self, d2: f64) -> f64 {
        let d2 = d2.max(0.0);
        if SQRT {
            d2.sqrt()
        } else {
            // d2 == 0 gives exp(-huge) = ~0, matching 0^p
            exp_f64(0.5 * self.exponent * ln_f64(d2.max(f64::MIN_POSITIVE)))
        }
    }
}

/// Distances below this get a zero gradient coefficient (the reference's `eps` mask).
const GRAD_EPS: f64 = 1e-10;

// p = 1 on f32 data runs in f32 lanes, twice as many a vector, with the quotient k/d for
// k d^(p-2). Its rounding, a few ulp of k times (1 + d/L), is of the order of what the f32
// squared distance it starts from already carries. Other p keep f64: d^p = exp(p/2 ln d²) in f32
// would lose ulps in proportion to |ln d²|.

#[inline(always)]
fn laplace_values_f32(d2: &mut [f32], shape: KernelShape) {
    let inv = shape.inv_bandwidth_p as f32;
    for v in d2.iter_mut() {
        *v = exp_f32(-v.max(0.0).sqrt() * inv);
    }
}

#[inline(always)]
fn laplace_and_coef_f32(d2_then_k: &mut [f32], coef: &mut [f32], shape: KernelShape) {
    let inv = shape.inv_bandwidth_p as f32;
    let scale = -inv;
    let (eps, eps2) = (GRAD_EPS as f32, (GRAD_EPS * GRAD_EPS) as f32);
    for (v, c) in d2_then_k.iter_mut().zip(coef.iter_mut()) {
        let d2 = v.max(0.0);
        let d = d2.sqrt();
        let k = exp_f32(-d * inv);
        *v = k;
        let g = scale * k / d.max(eps);
        *c = if d2 >= eps2 { g } else { 0.0 };
    }
}

#[inline(always)]
fn kernel_values_body<T: Real>(d2: &mut [T], shape: KernelShape) {
    // p = 1 (sqrt) picked here, not per element: LLVM vectorises a branch inside the loop by
    // computing both arms, ln and exp included, and blending.
    if shape.exponent == 1.0 {
        if let Some(d2) = T::as_f32_mut(d2) {
            return laplace_values_f32(d2, shape);
        }
        kernel_values_loop::<T, true>(d2, shape)
    } else {
        kernel_values_loop::<T, false>(d2, shape)
    }
}

#[inline(always)]
fn kernel_values_loop<T: Real, const SQRT: bool>(d2: &mut [T], shape: KernelShape) {
    for v in d2.iter_mut() {
        let dp = shape.dist_pow::<SQRT>(v.to_f64());
        *v = T::from_f64(exp_f64(-dp * shape.inv_bandwidth_p));
    }
}

#[inline(always)]
fn kernel_and_coef_body<T: Real>(d2_then_k: &mut [T], coef: &mut [T], shape: KernelShape) {
    // as in `kernel_values_body`
    if shape.exponent == 1.0 {
        if let (Some(d2), Some(coef)) = (T::as_f32_mut(d2_then_k), T::as_f32_mut(coef)) {
            return laplace_and_coef_f32(d2, coef, shape);
        }
        kernel_and_coef_loop::<T, true>(d2_then_k, coef, shape)
    } else {
        kernel_and_coef_loop::<T, false>(d2_then_k, coef, shape)
    }
}

#[inline(always)]
fn kernel_and_coef_loop<T: Real, const SQRT: bool>(
    d2_then_k: &mut [T],
    coef: &mut [T],
    shape: KernelShape,
) {
    let scale = -shape.exponent * shape.inv_bandwidth_p;
    for (v, c) in d2_then_k.iter_mut().zip(coef.iter_mut()) {
        let d2 = v.to_f64().max(0.0);
        let dp = shape.dist_pow::<SQRT>(d2);
        let k = exp_f64(-dp * shape.inv_bandwidth_p);
        *v = T::from_f64(k);
        // -(p/L^p) k d^(p-2) = -(p/L^p) k d^p / d², masked where d < eps
        let masked = d2 >= GRAD_EPS * GRAD_EPS;
        let g = scale * k * dp / d2.max(GRAD_EPS * GRAD_EPS);
        *c = T::from_f64(if masked { g } else { 0.0 });
    }
}

macro_rules! dispatch {
    ($body:ident, $avx512:ident, $avx2:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
        unsafe fn $avx512<T: Real>($($arg: $ty),*) {
            $body($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2<T: Real>($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

dispatch!(kernel_values_body, kernel_values_avx512, kernel_values_avx2, (d2: &mut [T], shape: KernelShape));
dispatch!(kernel_and_coef_body, kernel_and_coef_avx512, kernel_and_coef_avx2, (d2: &mut [T], coef: &mut [T], shape: KernelShape));

/// In place: squared distances → kernel values.
pub(crate) fn kernel_values<T: Real>(d2: &mut [T], shape: KernelShape) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
            // SAFETY: the required CPU features were detected at run time.
            return unsafe { kernel_values_avx512(d2, shape) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { kernel_values_avx2(d2, shape) };
        }
    }
    kernel_values_body(d2, shape)
}

/// In place: squared distances → kernel values, and `coef` ← the gradient coefficient
/// κ = -(p/L^p) k d^(p-2) (zero where d < 1e-10).
pub(crate) fn kernel_and_coef<T: Real>(d2: &mut [T], coef: &mut [T], shape: KernelShape) {
    debug_assert_eq!(d2.len(), coef.len());
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
            // SAFETY: the required CPU features were detected at run time.
            return unsafe { kernel_and_coef_avx512(d2, coef, shape) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { kernel_and_coef_avx2(d2, coef, shape) };
        }
    }
    kernel_and_coef_body(d2, coef, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_1e15() {
        let mut worst: f64 = 0.0;
        for i in 0..200_001 {
            let x = -700.0 + 1400.0 * (i as f64) / 200_000.0;
            let rel = ((exp_f64(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 1e-15, "worst relative error {worst:e}");
    }

    #[test]
    fn ln_matches_std_to_1e15() {
        let mut worst: f64 = 0.0;
        for i in 1..200_001 {
            let x = 10f64.powf(-300.0 + 600.0 * (i as f64) / 200_000.0);
            let err = (ln_f64(x) - x.ln()).abs() / x.ln().abs().max(1.0);
            worst = worst.max(err);
        }
        for x in [
            1.0,
            2.0,
            0.5,
            std::f64::consts::SQRT_2,
            1.0 + 1e-12,
            1.0 - 1e-12,
        ] {
            assert!((ln_f64(x) - x.ln()).abs() < 1e-15, "ln({x})");
        }
        assert!(worst < 1e-15, "worst error {worst:e}");
    }

    #[test]
    fn kernel_and_coef_match_the_formula() {
        // p = 1 takes the square-root loop, any other p the ln/exp one
        for p in [0.9, 1.0] {
            let shape = KernelShape::new(3.0, p);
            let d2s = [0.0, 1e-22, 0.25, 4.0, 100.0];
            let mut k = d2s.to_vec();
            let mut c = vec![0.0; d2s.len()];
            kernel_and_coef(&mut k, &mut c, shape);
            for (i, &d2) in d2s.iter().enumerate() {
                let d: f64 = f64::sqrt(d2);
                let want_k = (-(d.powf(p)) / 3f64.powf(p)).exp();
                assert!((k[i] - want_k).abs() < 1e-14, "p={p}: k at d2={d2}");
                let want_c = if d >= 1e-10 {
                    -p / 3f64.powf(p) * want_k * d.powf(p - 2.0)
                } else {
                    0.0
                };
                assert!(
                    (c[i] - want_c).abs() <= 1e-13 * want_c.abs().max(1.0),
                    "p={p}: coef at d2={d2}: {} vs {want_c}",
                    c[i]
                );
            }
            let mut kv = d2s.to_vec();
            kernel_values(&mut kv, shape);
            assert_eq!(kv, k);
        }
    }

    #[test]
    fn exp_f32_within_2_ulp() {
        let mut worst: f64 = 0.0;
        for i in 0..200_001 {
            let x = -87.0 + 175.0 * (i as f32) / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64 - want) / want).abs());
        }
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
    }

    #[test]
    fn f32_laplace_kernel_matches_the_f64_formula() {
        let shape = KernelShape::new(3.0, 1.0);
        let mut d2s: Vec<f32> = vec![0.0, 1e-22, 1e-19];
        d2s.extend((0..4000).map(|i| 10f32.powf(-6.0 + 10.0 * i as f32 / 4000.0)));
        let mut k = d2s.clone();
        let mut c = vec![0.0f32; d2s.len()];
        kernel_and_coef(&mut k, &mut c, shape);
        let mut kv = d2s.clone();
        kernel_values(&mut kv, shape);
        assert_eq!(kv, k);
        for (i, &d2) in d2s.iter().enumerate() {
            let d = (d2 as f64).sqrt();
            let want_k = (-d / 3.0).exp();
            let want_c = if d >= 1e-10 { -want_k / (3.0 * d) } else { 0.0 };
            // a few ulp, growing with the exponent's magnitude d/L (its rounding in f32)
            let tol = 4.0 * f32::EPSILON as f64 * (1.0 + d / 3.0);
            let err_k = (k[i] as f64 - want_k).abs() / want_k;
            assert!(err_k <= tol, "k at d2={d2}: {} vs {want_k}", k[i]);
            let err_c = (c[i] as f64 - want_c).abs() / want_c.abs().max(f64::MIN_POSITIVE);
            assert!(err_c <= tol, "coef at d2={d2}: {} vs {want_c}", c[i]);
        }
    }

    #[test]
    fn taylor_tables_hold_the_inverse_factorials() {
        assert_eq!(EXP_TAYLOR_F64[0], 1.0 / 6_227_020_800.0);
        assert_eq!(EXP_TAYLOR_F64[7], 1.0 / 720.0);
        assert_eq!(EXP_TAYLOR_F64[11..], [0.5, 1.0, 1.0]);
        assert_eq!(EXP_TAYLOR_F32[0], 1.0 / 5_040.0);
        assert_eq!(EXP_TAYLOR_F32[5..], [0.5, 1.0, 1.0]);
    }
}
