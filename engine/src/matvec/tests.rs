use super::*;
use crate::Rng;

fn normal(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// Every kernel this CPU runs: each is forced in turn, whatever `detect` would pick.
fn kernels() -> Vec<Kernel> {
    [Kernel::Portable, Kernel::Avx2, Kernel::Avx512, Kernel::Neon]
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

/// Each kernel, format and odd shape (d_in not a multiple of the SIMD width nor of the Q8
/// block; d_out not a multiple of the 4-row tile nor of a work chunk; 1, 2, 3 and 5 input rows)
/// against an f64 product with the packed matrix's own f32 weights. f32 accumulation of
/// `d_in` terms stays within 1e-5 of Σ|wᵢxᵢ| (measured ≤ 1e-6 here).
#[test]
fn kernels_match_an_f64_reference_on_odd_shapes() {
    let mut rng = Rng::new(13);
    let mut checked = 0;
    for (d_in, d_out) in [(1, 1), (7, 5), (37, 9), (100, 33), (1029, 70), (33, 2000)] {
        let values = normal(&mut rng, d_in * d_out);
        let bias = normal(&mut rng, d_out);
        for format in WeightFormat::ALL {
            let matrix = HostMatrix::pack(&values, d_in, d_out, format);
            let w = matrix.unpack();
            for rows in [1, 2, 3, 5] {
                let x = normal(&mut rng, rows * d_in);
                for kernel in kernels() {
                    let y = matrix.matmul_with(kernel, &x, rows, Some(&bias));
                    assert_eq!(y.len(), rows * d_out);
                    for r in 0..rows {
                        for o in 0..d_out {
                            let terms =
                                (0..d_in).map(|i| w[o * d_in + i] as f64 * x[r * d_in + i] as f64);
                            let exact: f64 = terms.clone().sum::<f64>() + bias[o] as f64;
                            let magnitude: f64 =
                                terms.map(f64::abs).sum::<f64>() + bias[o].abs() as f64;
                            let err = (y[r * d_out + o] as f64 - exact).abs();
                            assert!(
                                err <= 1e-5 * magnitude + 1e-6,
                                "{} {format} d_in {d_in} d_out {d_out} rows {rows}: y[{r}][{o}] = {} vs {exact}",
                                kernel.name(),
                                y[r * d_out + o]
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 6 * 3 * 4,
        "every shape, format and row count ran"
    );
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
    assert_eq!(WeightFormat::Q8.matrix_bytes(2, 40), 2 * (40 + 4 * 2));
    assert_eq!(WeightFormat::Q4.matrix_bytes(2, 40), 2 * 2 * (16 + 4));
}

/// The largest weight of a q4 block is exact, zeros stay zero, and a short last block's
/// padding adds nothing.
#[test]
fn q4_keeps_each_blocks_extreme_and_zeros() {
    let d_in = 40; // one whole block and one of 8
    let mut values: Vec<f32> = (0..d_in).map(|i| (i as f32 - 20.0) / 7.0).collect();
    values[5] = 0.0;
    values[35] = -9.5; // the extreme of the short block
    let matrix = HostMatrix::pack(&values, d_in, 1, WeightFormat::Q4);
    let unpacked = matrix.unpack();
    assert_eq!(unpacked[0], values[0], "block 0's extreme, −20/7");
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
