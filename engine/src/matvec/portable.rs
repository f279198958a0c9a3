//! The portable kernel: plain Rust over lanes of 8, which the compiler vectorises for the
//! target's baseline (SSE2 on x86-64, NEON on aarch64).

use super::{RowFormat, Tile};

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
