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

/// e^x, relative error below 1e-15 for x in [-708, 709]; inputs outside are clamped.
#[inline(always)]
pub(crate) fn exp_f64(x: f64) -> f64 {
    let x = x.clamp(-708.0, 709.0);
    let shifted = x * LOG2_E + ROUND_SHIFT;
    let k = shifted - ROUND_SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to degree 13 on |r| <= ln2/2: truncation error < 5e-18.
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The low mantissa bits of `shifted` hold k; move k + 1023 into the exponent field.
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
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
    let mut p = 1.0 / 21.0;
    p = p * s2 + 1.0 / 19.0;
    p = p * s2 + 1.0 / 17.0;
    p = p * s2 + 1.0 / 15.0;
    p = p * s2 + 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
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

#[inline(always)]
fn kernel_values_body<T: Real>(d2: &mut [T], shape: KernelShape) {
    // p = 1 (sqrt) picked here, not per element: LLVM vectorises a branch inside the loop by
    // computing both arms, ln and exp included, and blending.
    if shape.exponent == 1.0 {
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
}
