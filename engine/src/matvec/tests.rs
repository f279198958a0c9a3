use super::*;
use crate::Rng;

fn normal(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// Every kernel this CPU runs: each is forced in turn, whatever `detect` would pick.
fn kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

/// d_in not a multiple of the SIMD width, of the Q8 block nor of a superblock (and T5's 768,
/// musicgen-medium's 1536); d_out not a multiple of the 4-row tile nor of a work chunk.
const SHAPES: [(usize, usize); 9] = [
    (1, 1),
    (7, 5),
    (37, 9),
    (100, 33),
    (1029, 70),
    (768, 13),
    (1536, 6),
    (512, 7),
    (33, 2000),
];

/// Unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// The inputs an integer product multiplies by: each row quantized to Q8_0 and back, exactly
/// (`q · scale` is exact in f64).
fn dequantized(x: &[f32], rows: usize, d_in: usize) -> (Vec<f64>, Vec<f64>) {
    let supers = quantize_rows(x, rows, d_in);
    let per_row = d_in.div_ceil(SUPER_WEIGHTS);
    let mut values = Vec::with_capacity(rows * d_in);
    let mut scales = Vec::with_capacity(rows * d_in);
    for r in 0..rows {
        for i in 0..d_in {
            let sup = &supers[r * per_row + i / SUPER_WEIGHTS];
            let (l, e) = (i % SUPER_WEIGHTS / 32, i % 32);
            values.push(sup.get(l, e) as f64 * sup.scales[l] as f64);
            scales.push(sup.scales[l] as f64);
        }
    }
    (values, scales)
}

/// Each kernel, format, [`Reads`] and odd shape ([`SHAPES`]; 1, 2, 3 and 5 input rows) against
/// an f64 product with the packed matrix's own f32 weights.
///
/// f32, bf16: f32 accumulation of `d_in` terms stays within 1e-5 of Σ|wᵢxᵢ| (measured ≤ 1e-6).
///
/// q8, q4 (integer dot products on inputs quantized to Q8_0, [`quantize_rows`]), two checks:
/// - exact: against the f64 product with the *quantized* inputs `x̂`, the only error is f32
///   rounding: the integer block sums are exact, then per block lane one product of scales and
///   one FMA per superblock, 4 tree additions and the bias: at most `n = superblocks + 6`
///   roundings, `|y − ŷ| ≤ γₙ (Σ|wᵢx̂ᵢ| + |b|)` with `γₙ = n u / (1 − n u)`;
/// - rigorous, against the true inputs: each input is within half its block's step of `x̂`, so
///   `|y − Σ wᵢxᵢ − b| ≤ Σᵢ |wᵢ| · scaleᵢ / 2 · (1 + 1e-5) + the above`.
#[test]
fn kernels_match_an_f64_reference_on_odd_shapes() {
    let mut rng = Rng::new(13);
    let mut checked = 0;
    let (mut bound_total, mut magnitude_total) = (0f64, 0f64);
    for (d_in, d_out) in SHAPES {
        let values = normal(&mut rng, d_in * d_out);
        let bias = normal(&mut rng, d_out);
        for (format, matrix) in WeightFormat::ALL.into_iter().flat_map(|format| {
            [
                (format, HostMatrix::pack(&values, d_in, d_out, format)),
                (
                    format,
                    HostMatrix::pack_read_as(&values, d_in, d_out, format, Reads::Streamed),
                ),
            ]
        }) {
            let w = matrix.unpack();
            let integer = matches!(format, WeightFormat::Q8 | WeightFormat::Q4);
            for rows in [1, 2, 3, 5] {
                let x = normal(&mut rng, rows * d_in);
                let (x_hat, x_scale) = dequantized(&x, rows, d_in);
                let n = (d_in.div_ceil(SUPER_WEIGHTS) + 6) as f64;
                let gamma = n * U / (1.0 - n * U);
                for kernel in kernels() {
                    let y = matrix.matmul_with(kernel, &x, rows, Some(&bias));
                    assert_eq!(y.len(), rows * d_out);
                    for r in 0..rows {
                        for o in 0..d_out {
                            let got = y[r * d_out + o] as f64;
                            let b = bias[o] as f64;
                            let wi = |i: usize| w[o * d_in + i] as f64;
                            let exact: f64 = (0..d_in)
                                .map(|i| wi(i) * x[r * d_in + i] as f64)
                                .sum::<f64>()
                                + b;
                            let magnitude: f64 = (0..d_in)
                                .map(|i| (wi(i) * x[r * d_in + i] as f64).abs())
                                .sum::<f64>()
                                + b.abs();
                            let what = || {
                                format!(
                                    "{} {format} {:?} d_in {d_in} d_out {d_out} rows {rows}: y[{r}][{o}] = {got}",
                                    kernel.name(),
                                    matrix.reads()
                                )
                            };
                            if !integer {
                                let err = (got - exact).abs();
                                assert!(err <= 1e-5 * magnitude + 1e-6, "{} vs {exact}", what());
                                continue;
                            }
                            let on_quantized: f64 =
                                (0..d_in).map(|i| wi(i) * x_hat[r * d_in + i]).sum::<f64>() + b;
                            let rounding = gamma
                                * ((0..d_in)
                                    .map(|i| (wi(i) * x_hat[r * d_in + i]).abs())
                                    .sum::<f64>()
                                    + b.abs());
                            assert!(
                                (got - on_quantized).abs() <= rounding,
                                "{} vs {on_quantized} on the quantized inputs (bound {rounding})",
                                what()
                            );
                            let quantization: f64 = (0..d_in)
                                .map(|i| wi(i).abs() * 0.5 * x_scale[r * d_in + i])
                                .sum::<f64>()
                                * (1.0 + 1e-5);
                            assert!(
                                (got - exact).abs() <= quantization + rounding,
                                "{} vs {exact} (bound {quantization} + {rounding})",
                                what()
                            );
                            bound_total += quantization;
                            magnitude_total += magnitude;
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= SHAPES.len() * 4 * 2 * 4,
        "every shape, format and row count ran"
    );
    // The rigorous bound is not vacuous: the inputs' quantization is ≈ 1.5 % of Σ|wᵢxᵢ|.
    assert!(
        bound_total <= 0.03 * magnitude_total,
        "{bound_total} vs {magnitude_total}"
    );
}

/// The integer kernels add exact integer block sums in one float order, so every kernel gives
/// the q8 and q4 products bit for bit (the portable kernel is the reference).
#[test]
fn integer_kernels_agree_bit_for_bit() {
    let mut rng = Rng::new(29);
    for (d_in, d_out) in SHAPES {
        let values = normal(&mut rng, d_in * d_out);
        for format in [WeightFormat::Q8, WeightFormat::Q4] {
            let matrix = HostMatrix::pack(&values, d_in, d_out, format);
            // 4 and 7: several pairs of input rows per tile (a paired step, a prefill).
            for rows in [1, 2, 3, 4, 7] {
                let mut x = normal(&mut rng, rows * d_in);
                // Extremes: a block of large values, and one of ±max (codes ±127).
                x.iter_mut().take(32).for_each(|v| *v *= 1e4);
                let reference = matrix.matmul_with(Kernel::Portable, &x, rows, None);
                for kernel in kernels() {
                    let y = matrix.matmul_with(kernel, &x, rows, None);
                    let same = y
                        .iter()
                        .zip(&reference)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} {format} d_in {d_in} d_out {d_out} rows {rows}: differs from portable",
                        kernel.name()
                    );
                }
            }
        }
    }
}

/// The integer kernels' extremes: q8 weights and inputs of ±127 steps everywhere (the largest
/// block sums, 32 · 127², and the pair sums that would saturate a naive `vpmaddubsw` on
/// `w + 128`), q4 codes at both ends. ±1 inputs quantize to ±127 steps of 1/127, within 2⁻²⁴
/// relative of ±1, so every product is within 1e-6 relative of the one on the exact inputs.
#[test]
fn integer_kernels_are_exact_at_the_extremes() {
    let d_in = 1024;
    for (sign_w, sign_x) in [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)] {
        let values: Vec<f32> = (0..4 * d_in)
            .map(|k| if k % 3 == 0 { sign_w } else { -sign_w })
            .collect();
        let x: Vec<f32> = (0..2 * d_in)
            .map(|k| if k % 5 == 0 { -sign_x } else { sign_x })
            .collect();
        for format in [WeightFormat::Q8, WeightFormat::Q4] {
            let matrix = HostMatrix::pack(&values, d_in, 4, format);
            let w = matrix.unpack();
            for kernel in kernels() {
                let y = matrix.matmul_with(kernel, &x, 2, None);
                for r in 0..2 {
                    for o in 0..4 {
                        let terms =
                            (0..d_in).map(|i| w[o * d_in + i] as f64 * x[r * d_in + i] as f64);
                        let exact: f64 = terms.clone().sum();
                        let magnitude: f64 = terms.map(f64::abs).sum();
                        let got = y[r * 4 + o] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-6 * magnitude,
                            "{} {format} signs ({sign_w}, {sign_x}) y[{r}][{o}] = {got} vs {exact}",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }
}

/// Q8_0 of the inputs: one scale per block of 32 (max |x| / 127, 0 for a zero block and the
/// padding), |q| ≤ 127 with the block's extreme at ±127, within half a step of x, the block sums
/// of q, and each input where the kernels expect it.
#[test]
fn activation_quantization_round_trips() {
    let mut rng = Rng::new(5);
    let (rows, d_in) = (3, 1100); // 3 superblocks per row, the last one mostly padding
    let mut x = normal(&mut rng, rows * d_in);
    x[d_in..2 * d_in].iter_mut().for_each(|v| *v = 0.0); // a zero row
    x[64..96].iter_mut().for_each(|v| *v = 0.0); // a zero block
    x[100] = 1e-30; // a block whose other inputs are tiny next to it
    x[2 * d_in + 5] = -7.5; // the extreme of its block
    let supers = quantize_rows(&x, rows, d_in);
    let per_row = d_in.div_ceil(SUPER_WEIGHTS);
    assert_eq!(supers.len(), rows * per_row);
    for r in 0..rows {
        for b in 0..per_row * SUPER_BLOCKS {
            let sup = &supers[r * per_row + b / SUPER_BLOCKS];
            let l = b % SUPER_BLOCKS;
            let start = (32 * b).min(d_in);
            let block = &x[r * d_in + start..r * d_in + (32 * b + 32).min(d_in)];
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(sup.scales[l], max / 127.0, "row {r} block {b}: scale");
            let mut sum = 0;
            for e in 0..32 {
                let q = sup.get(l, e);
                sum += q as i32;
                assert!(q != -128, "row {r} block {b}: q = -128");
                let v = block.get(e).copied().unwrap_or(0.0);
                if v == 0.0 {
                    assert_eq!(q, 0, "row {r} block {b} input {e}: zero");
                }
                if v.abs() == max && max > 0.0 {
                    assert_eq!(q.unsigned_abs(), 127, "row {r} block {b}: extreme");
                    assert_eq!(q.signum() as f32, v.signum(), "row {r} block {b}: sign");
                }
                let err = (q as f64 * sup.scales[l] as f64 - v as f64).abs();
                assert!(
                    err <= 0.5 * sup.scales[l] as f64 * (1.0 + 1e-5),
                    "row {r} block {b} input {e}: {v} → {q}"
                );
            }
            assert_eq!(sup.sums[l], sum, "row {r} block {b}: sum");
        }
    }
    assert_eq!(supers[2 * per_row].get(0, 5), -127);
    // Ties go to even: 0.5 and 1.5 steps.
    let mut ties = vec![0f32; 32];
    ties[0] = 127.0;
    ties[1] = 0.5;
    ties[2] = 1.5;
    ties[3] = -2.5;
    let sup = &quantize_rows(&ties, 1, 32)[0];
    assert_eq!(sup.scales[0], 1.0);
    assert_eq!([0, 1, 2, 3].map(|e| sup.get(0, e)), [127, 0, 2, -2]);
    // The portable quantizer and the AVX2 one agree bit for bit (here with ties: inputs on
    // half steps).
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        let mut x = normal(&mut rng, 2000);
        x[7] = 127.0;
        for (k, v) in x[..32].iter_mut().enumerate() {
            if k != 7 {
                *v = (k as f32 - 16.0) + 0.5;
            }
        }
        let per_row = 2000usize.div_ceil(SUPER_WEIGHTS);
        let (mut portable, mut avx2) = (vec![XSuper::ZERO; per_row], vec![XSuper::ZERO; per_row]);
        quantize_row(&mut portable, &x);
        // SAFETY: the CPU has AVX2.
        unsafe { quantize_row_avx2(&mut avx2, &x) };
        for (a, b) in portable.iter().zip(&avx2) {
            assert_eq!(a.q, b.q);
            assert_eq!(a.sums, b.sums);
            assert_eq!(a.scales.map(f32::to_bits), b.scales.map(f32::to_bits));
        }
        assert_eq!(portable[0].get(0, 0), -16, "−15.5 steps: ties to even");
    }
    // No rows, and rows of no inputs.
    assert!(quantize_rows(&[], 0, 10).is_empty());
    assert!(quantize_rows(&[], 2, 0).is_empty());
}

/// Packing loses what the format cannot hold and nothing more: f32 is exact, bf16 is within
/// half a unit in the last place (≤ 2⁻⁸ relative: 8 significant bits), q8 and q4 within half a
/// step of their block's scale (q4: a whole step where a weight clamps at +7 steps).
#[test]
fn packing_error_is_bounded_by_the_format() {
    let mut rng = Rng::new(7);
    let (d_in, d_out) = (75, 6);
    let mut values = normal(&mut rng, d_in * d_out);
    values[3] = 0.0;
    values[d_in..2 * d_in].iter_mut().for_each(|v| *v = 0.0); // an all-zero row: scale 0
    for format in WeightFormat::ALL {
        let unpacked = HostMatrix::pack(&values, d_in, d_out, format).unpack();
        for (k, (&v, &u)) in values.iter().zip(&unpacked).enumerate() {
            let (o, i) = (k / d_in, k % d_in);
            let bound = match format {
                WeightFormat::F32 => 0.0,
                WeightFormat::Bf16 => v.abs() * 2f32.powi(-8),
                WeightFormat::Q8 => {
                    let block = i / Q8_BLOCK * Q8_BLOCK;
                    let row = &values[o * d_in..(o + 1) * d_in];
                    let max = row[block..(block + Q8_BLOCK).min(d_in)]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()));
                    0.5 * max / 127.0 * (1.0 + 1e-6)
                }
                WeightFormat::Q4 => {
                    let block = i / Q4_BLOCK * Q4_BLOCK;
                    let row = &values[o * d_in..(o + 1) * d_in];
                    let max = row[block..(block + Q4_BLOCK).min(d_in)]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()));
                    // Half a step of max / 8; the opposite extreme may clamp at 7 steps, a
                    // whole step short of 8.
                    let step = max / 8.0 * (1.0 + 1e-6);
                    if (v / step).abs() > 7.5 {
                        step
                    } else {
                        0.5 * step
                    }
                }
            };
            assert!(
                (v - u).abs() <= bound,
                "{format} weight ({o}, {i}): {v} → {u}"
            );
        }
    }
}

#[test]
fn weight_format_names_round_trip_and_bad_names_are_refused() {
    for format in WeightFormat::ALL {
        assert_eq!(format.name().parse::<WeightFormat>(), Ok(format));
    }
    assert_eq!("BF16".parse::<WeightFormat>(), Ok(WeightFormat::Bf16));
    let err = "q9".parse::<WeightFormat>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown weight format `q9`: expected f32, bf16, q8 or q4"
    );
    // q8 and q4 rows are padded to superblocks of 512 weights, 16 f16 scales each, and the rows
    // to whole tiles of 4.
    assert_eq!(WeightFormat::Q8.matrix_bytes(2, 40), 4 * (512 + 2 * 16));
    assert_eq!(WeightFormat::Q4.matrix_bytes(2, 40), 4 * (256 + 2 * 16));
    assert_eq!(WeightFormat::Q8.matrix_bytes(3, 1024), 4 * (1024 + 2 * 32));
    assert_eq!(WeightFormat::Q4.matrix_bytes(8, 1024), 8 * (512 + 2 * 32));
    assert_eq!(WeightFormat::Q8.matrix_bytes(1, 1025), 4 * (1536 + 2 * 48));
}

/// The largest weight of a q4 block is code 0 (−8 steps of its f16 scale, exact where that
/// scale is), zeros stay zero, and a short last block's padding adds nothing.
#[test]
fn q4_keeps_each_blocks_extreme_and_zeros() {
    let d_in = 40; // one whole block and one of 8
    let mut values: Vec<f32> = (0..d_in).map(|i| (i as f32 - 20.0) / 7.0).collect();
    values[5] = 0.0;
    values[35] = -9.5; // the extreme of the short block: 9.5 / 8 is an f16
    let matrix = HostMatrix::pack(&values, d_in, 1, WeightFormat::Q4);
    let unpacked = matrix.unpack();
    let step = super::f16_scale(values[0] / -8.0).1;
    assert_eq!(unpacked[0], -8.0 * step, "block 0's extreme, −20/7");
    assert!(
        (unpacked[0] - values[0]).abs() <= values[0].abs() / 2048.0,
        "−20/7 within f16 rounding: {}",
        unpacked[0]
    );
    assert_eq!(unpacked[5], 0.0);
    assert_eq!(unpacked[35], -9.5);
    let ones = vec![1f32; d_in];
    for kernel in kernels() {
        let y = matrix.matmul_with(kernel, &ones, 1, None);
        let sum: f32 = unpacked.iter().sum();
        assert!(
            (y[0] - sum).abs() < 1e-4,
            "{}: {} vs {sum}",
            kernel.name(),
            y[0]
        );
    }
}

/// Every q8 and q4 weight is within half a step of its block's scale (or of the code range's
/// end, where q4's asymmetric range or a saturated scale clamps it), the scale being the f16 at
/// or above the exact one (`max / 127`, `extreme / −8`), from blocks of 1e-9 (subnormal f16
/// steps) to 1e9 (past f16's range: the scale saturates at 65504).
#[test]
fn integer_weights_stay_within_half_a_step_of_their_f16_scale() {
    let d_in = 32 * 6;
    let magnitudes = [1e-9f32, 3e-6, 0.02, 1.7, 3e3, 1e9];
    let values: Vec<f32> = (0..2 * d_in)
        .map(|i| {
            let sign = if i < d_in { 1.0 } else { -0.7 };
            (((i * 7919) % 1000) as f32 / 500.0 - 1.0) * sign * magnitudes[i % d_in / 32]
        })
        .collect();
    for (format, codes) in [
        (WeightFormat::Q8, -127.0..=127.0),
        (WeightFormat::Q4, -8.0..=7.0),
    ] {
        let unpacked = HostMatrix::pack(&values, d_in, 2, format).unpack();
        for (block, (want, got)) in values.chunks(32).zip(unpacked.chunks(32)).enumerate() {
            let exact = match format {
                WeightFormat::Q8 => want.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0,
                _ => {
                    want.iter()
                        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
                        / -8.0
                }
            };
            let (_, scale) = super::f16_scale(exact);
            assert!(
                scale.abs() >= exact.abs().min(65504.0) && scale.signum() == exact.signum(),
                "{format} block {block}: scale {scale} for {exact}"
            );
            for (w, g) in want.iter().zip(got) {
                let ideal = (w / scale).clamp(*codes.start(), *codes.end()) * scale;
                assert!(
                    (g - ideal).abs() <= 0.5 * scale.abs() * (1.0 + 1e-6),
                    "{format} block {block}: {w} → {g} (scale {scale})"
                );
            }
        }
    }
}

/// A float product gives each input row the bits that row gets alone, whatever rows share the
/// product, with either [`Reads`] (a slide's paired step against a plain step, a prefill
/// against a step); and on AVX-512 a streamed bf16 matrix's products are the 256-bit tile's
/// (the AVX2 kernel's bits), the others' the 512-bit tile's, as [`Reads`] says.
#[test]
fn float_products_do_not_depend_on_the_rows_beside_them() {
    let mut rng = Rng::new(19);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    #[cfg(target_arch = "x86_64")]
    let mut compared = 0;
    for (d_in, d_out) in [(37, 9), (1029, 70), (1536, 6)] {
        let values = normal(&mut rng, d_in * d_out);
        let x = normal(&mut rng, 6 * d_in);
        for format in [WeightFormat::F32, WeightFormat::Bf16] {
            for matrix in [
                HostMatrix::pack(&values, d_in, d_out, format),
                HostMatrix::pack_read_as(&values, d_in, d_out, format, Reads::Streamed),
            ] {
                let what = |kernel: Kernel| {
                    format!(
                        "{format} {:?} {} {d_in}×{d_out}",
                        matrix.reads(),
                        kernel.name()
                    )
                };
                for kernel in kernels() {
                    let alone: Vec<Vec<u32>> = (0..6)
                        .map(|r| bits(&matrix.matmul_with(kernel, &x[r * d_in..][..d_in], 1, None)))
                        .collect();
                    for rows in [2, 3, 4, 6] {
                        let y = matrix.matmul_with(kernel, &x[..rows * d_in], rows, None);
                        for (r, alone) in alone.iter().take(rows).enumerate() {
                            assert_eq!(
                                &bits(&y[r * d_out..][..d_out]),
                                alone,
                                "{}: row {r} of {rows}",
                                what(kernel)
                            );
                        }
                    }
                }
                #[cfg(target_arch = "x86_64")]
                for wide in [Kernel::Avx512, Kernel::Avx512Vnni] {
                    if !wide.is_available() {
                        continue;
                    }
                    let y = bits(&matrix.matmul_with(wide, &x, 6, None));
                    let narrow = bits(&matrix.matmul_with(Kernel::Avx2, &x, 6, None));
                    let same = y == narrow;
                    match matrix.reads() {
                        Reads::Streamed if format == WeightFormat::Bf16 => {
                            assert!(same, "{}: not the 256-bit tile", what(wide))
                        }
                        // Sums of 16 lanes against 8 round differently somewhere in 6 × d_out
                        // outputs of ≥ 37 terms.
                        _ => assert!(!same, "{}: not the 512-bit tile", what(wide)),
                    }
                    compared += 1;
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if Kernel::Avx512.is_available() {
        assert!(compared >= 12, "every shape, format and Reads compared");
    }
}

/// An activation applied inside the product, each work item's outputs on its own thread, gives
/// the values of the product with its bias and then the activation over the whole output, bit
/// for bit: for every format and kernel, 1, 2 and 3 input rows, and outputs of one work item and
/// of several (with a short last tile).
#[test]
fn an_activation_inside_the_product_equals_one_after_it() {
    let mut rng = Rng::new(17);
    let gelu = |v: &mut [f32]| crate::nn::Activation::Gelu.apply(v);
    for (d_in, d_out) in [(37, 9), (1029, 70), (512, 1030)] {
        let values = normal(&mut rng, d_in * d_out);
        let bias = normal(&mut rng, d_out);
        for format in WeightFormat::ALL {
            let matrix = HostMatrix::pack(&values, d_in, d_out, format);
            for kernel in kernels() {
                for rows in [1, 2, 3] {
                    let x = normal(&mut rng, rows * d_in);
                    let mut after = matrix.matmul_with(kernel, &x, rows, Some(&bias));
                    gelu(&mut after);
                    let inside = matrix.matmul_then(kernel, &x, rows, Some(&bias), Some(&gelu));
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&inside),
                        bits(&after),
                        "{format} {} {d_in}×{d_out}, {rows} rows",
                        kernel.name()
                    );
                }
            }
        }
    }
}

/// `unpack` (a row at a time, each block's scale converted once) gives every weight as
/// [`RowFormat::get`] reads it, bit for bit, over partial superblocks and blocks.
#[test]
fn unpacking_by_rows_gives_each_weight_as_read_one_by_one() {
    fn check<W: RowFormat>(w: W, d_in: usize, unpacked: &[f32]) {
        for (k, &u) in unpacked.iter().enumerate() {
            let (o, i) = (k / d_in, k % d_in);
            assert_eq!(
                u.to_bits(),
                w.get(d_in, o, i).to_bits(),
                "weight ({o}, {i})"
            );
        }
    }
    let mut rng = Rng::new(29);
    for (d_in, d_out) in [(1100, 7), (75, 6), (512, 4)] {
        let values = normal(&mut rng, d_in * d_out);
        for format in WeightFormat::ALL {
            let matrix = HostMatrix::pack(&values, d_in, d_out, format);
            let unpacked = matrix.unpack();
            assert_eq!(unpacked.len(), d_in * d_out);
            let per_row = d_in.div_ceil(SUPER_WEIGHTS);
            match &matrix.packed {
                Packed::F32(v) => check(F32Rows(v), d_in, &unpacked),
                Packed::Bf16(v) => check(Bf16Rows(v), d_in, &unpacked),
                Packed::Q8(groups) => check(SuperRows { groups, per_row }, d_in, &unpacked),
                Packed::Q4(groups) => check(SuperRows { groups, per_row }, d_in, &unpacked),
            }
        }
    }
}

/// The lane-wise maxima give what one fold over the values gives, bit for bit: `abs_max` the
/// largest magnitude, `q4_scale` the first value of it over −8 (−0 for all zeros), with ties of
/// magnitude (first of ±m wins), zeros of both signs, NaNs (passed over) and lengths around 16.
#[test]
fn lane_wise_maxima_equal_one_fold() {
    let fold_max = |x: &[f32]| x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let fold_q4 = |x: &[f32]| {
        x.iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
            / -8.0
    };
    let mut rng = Rng::new(23);
    for len in [0, 1, 5, 15, 16, 17, 31, 32, 33, 64, 70] {
        for case in 0..6 {
            let mut x = normal(&mut rng, len);
            match case {
                1 if len > 3 => {
                    // A tie of magnitude, the negative first.
                    let m = fold_max(&x) * 2.0;
                    x[len / 3] = -m;
                    x[len - 1] = m;
                }
                2 => x.iter_mut().for_each(|v| *v = 0.0),
                3 => x
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = if i % 2 == 0 { -0.0 } else { 0.0 }),
                4 if len > 1 => {
                    x[0] = f32::NAN;
                    x[len - 1] = f32::NAN;
                }
                5 => x.iter_mut().for_each(|v| *v = (*v * 4.0).round()),
                _ => {}
            }
            assert_eq!(
                abs_max(&x).to_bits(),
                fold_max(&x).to_bits(),
                "abs_max {x:?}"
            );
            assert_eq!(
                q4_scale(&x).to_bits(),
                fold_q4(&x).to_bits(),
                "q4_scale {x:?}"
            );
        }
    }
}

/// The packers' rounding of a block (`round_steps`: the clamp and the truncation in f32, one
/// plain conversion) gives the codes that `round_to_i32` and an integer clamp give: at ties, just
/// below them, past the clamp, at ±∞, at signed zeros and at NaN (0).
#[test]
fn block_rounding_equals_rounding_then_clamping() {
    let mut rng = Rng::new(31);
    let mut values: Vec<f32> = normal(&mut rng, 32 * 8).iter().map(|v| v * 60.0).collect();
    values.extend([
        0.5,
        -0.5,
        1.5,
        -2.5,
        0.499_999_97,
        -0.499_999_97,
        126.5,
        127.49,
        127.5,
        -127.5,
        -128.7,
        7.49,
        7.5,
        -8.49,
        -8.5,
        1e9,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
    ]);
    values.resize(values.len().next_multiple_of(32), 3.25);
    for (lo, hi) in [(-127, 127), (-8, 7)] {
        for block in values.chunks_exact(32) {
            let steps: [f32; 32] = block.try_into().expect("a block of 32");
            let codes = round_steps(&steps, (lo as f32, hi as f32));
            for (&step, &code) in steps.iter().zip(&codes) {
                let want = crate::nn::round_to_i32(step).clamp(lo, hi);
                assert_eq!(code, want, "{step} in {lo}..={hi}");
            }
        }
    }
}
