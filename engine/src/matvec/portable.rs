//! The portable kernels: plain Rust over lanes of 8 (float formats), which the compiler
//! vectorises for the target's baseline (SSE2 on x86-64, NEON on aarch64), and the integer
//! formats' block sums in plain integer arithmetic, scaled and added in the order every integer
//! kernel keeps ([`super::reduce16`]).

use super::{IntTile, RowFormat, SUPER_BLOCKS, Superblock, Tile, f16_to_f32, reduce16};

const LANES: usize = 8;

pub(crate) fn tile<W: RowFormat>(t: &Tile<'_, W>) -> [[f32; 4]; 2] {
    let d_in = t.d_in;
    let full = d_in / LANES * LANES;
    let mut acc = [[[0f32; LANES]; 4]; 2];
    let mut w = [[0f32; LANES]; 4];
    for i in (0..full).step_by(LANES) {
        for (j, lanes) in w.iter_mut().enumerate() {
            for (l, v) in lanes.iter_mut().enumerate() {
                *v = t.w.get(d_in, t.rows[j], i + l);
            }
        }
        for (r, x) in t.x.iter().enumerate() {
            let x = &x[i..i + LANES];
            for (j, lanes) in w.iter().enumerate() {
                for l in 0..LANES {
                    acc[r][j][l] += lanes[l] * x[l];
                }
            }
        }
    }
    let mut out = [[0f32; 4]; 2];
    for (r, x) in t.x.iter().enumerate() {
        for j in 0..4 {
            let tail: f32 = (full..d_in)
                .map(|i| t.w.get(d_in, t.rows[j], i) * x[i])
                .sum();
            out[r][j] = acc[r][j].iter().sum::<f32>() + tail;
        }
    }
    out
}

/// Per superblock and block lane `l`: the exact integer dot product of the weights
/// (`code − OFFSET`) with the quantized inputs, then `acc[l] += sum · (w_scale · x_scale)` in one
/// fused multiply-add.
pub(crate) fn int_tile<S: Superblock>(t: &IntTile<'_, S>) -> [[f32; 4]; 2] {
    let mut out = [[0f32; 4]; 2];
    for (j, &row) in t.rows.iter().enumerate() {
        for (r, x) in t.x.iter().enumerate() {
            let mut acc = [0f32; SUPER_BLOCKS];
            for (group, x) in t.w.iter().zip(x.iter()) {
                let w = &group.rows[row];
                for (l, acc) in acc.iter_mut().enumerate() {
                    let sum: i32 = (0..32)
                        .map(|e| (w.code(l, e) as i32 - S::OFFSET) * x.get(l, e) as i32)
                        .sum();
                    let w_scale = f16_to_f32(group.scales[row][l]);
                    *acc = (sum as f32).mul_add(w_scale * x.scales[l], *acc);
                }
            }
            out[r][j] = reduce16(acc);
        }
    }
    out
}
