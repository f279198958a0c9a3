//! aarch64 kernels: NEON (4 lanes, part of the aarch64 baseline, so always available there).
//!
//! Float formats: loads four weight rows a vector at a time, widens bf16 to f32 in registers,
//! and fuses the multiply-add into 8 accumulators (4 rows × 2 inputs), so every weight is read
//! once — the x86 kernels' scheme at NEON's width.
//!
//! Integer formats (q8, q4): a superblock's 16 block lanes in four quarters of 4 lanes. The codes
//! are recentred to the signed weights (q8: `xor 0x80`, q4: `− 8`), multiplied by the quantized
//! inputs into i16 (`smull`, |w · q| ≤ 128 · 127) and pairwise added into i32 (`sadalp`); one
//! pairwise add (`addp`) per quarter then leaves each lane with its block's exact dot product,
//! scaled and added in the order of [`super::reduce16`], as every integer kernel does.
//!
//! Type-checked on x86-64 hosts with `cargo check --target aarch64-unknown-linux-gnu`; the
//! CI machines cannot run it, so its tests run only on an aarch64 machine.

use std::arch::aarch64::*;

use super::{
    Bf16Rows, F32Rows, FloatSlots, IntTile, Q4Super, Q8Super, RowFormat, SUPER_BLOCKS, Superblock,
    Tile, f16_to_f32,
};

const LANES: usize = 4;

/// Four of one row's weights at `i`, widened to f32.
///
/// # Safety
/// `i + 4 ≤ d_in`.
pub(crate) trait Widen {
    unsafe fn load4(&self, d_in: usize, o: usize, i: usize) -> float32x4_t;
}

// SAFETY (every load below): the caller's `i + 4 ≤ d_in` with `i % 4 == 0` keeps a load inside
// one block of 32 or inside the row's rest, which both layouts store consecutively
// (`FloatSlots`); the loads are unaligned.
impl Widen for F32Rows<'_> {
    #[inline(always)]
    unsafe fn load4(&self, d_in: usize, o: usize, i: usize) -> float32x4_t {
        unsafe { vld1q_f32(self.0.as_ptr().add(Self::slot(d_in, o, i))) }
    }
}

/// bf16 is the top half of an f32: widen each to 32 bits shifted left by 16. Inside a whole
/// block of 32 the halves are interleaved (`super::bf16_slot`): a de-interleaving load of 8
/// slots gives weights `i..i + 4` of the first half in its even lanes, of the second in its odd.
impl Widen for Bf16Rows<'_> {
    #[inline(always)]
    unsafe fn load4(&self, d_in: usize, o: usize, i: usize) -> float32x4_t {
        unsafe {
            let at = |i: usize| self.0.as_ptr().add(Self::slot(d_in, o, i));
            let halves = if i < d_in / 32 * 32 {
                // `i % 4 == 0`: the four weights lie in one half of their block.
                let pairs = vld2_u16(at(super::bf16_slot(d_in, i / 32 * 32 + i % 16)));
                if i % 32 < 16 { pairs.0 } else { pairs.1 }
            } else {
                vld1_u16(at(i))
            };
            vreinterpretq_f32_u32(vshll_n_u16::<16>(halves))
        }
    }
}

/// # Safety
/// The CPU supports NEON (every aarch64 target Rust builds for does by default).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn tile_neon<W: RowFormat + Widen>(t: &Tile<'_, W>) -> [[f32; 4]; 2] {
    let full = t.d_in / LANES * LANES;
    // acc[j][r]: weight row j · input row r
    let mut acc = [[vdupq_n_f32(0.0); 2]; 4];
    let mut i = 0;
    while i < full {
        // SAFETY: `i + 4 ≤ d_in` for the input rows and every weight row.
        let (x0, x1) = unsafe {
            (
                vld1q_f32(t.x[0].as_ptr().add(i)),
                vld1q_f32(t.x[1].as_ptr().add(i)),
            )
        };
        for (a, &o) in acc.iter_mut().zip(&t.rows) {
            // SAFETY: as above.
            let w = unsafe { t.w.load4(t.d_in, o, i) };
            a[0] = vfmaq_f32(a[0], w, x0);
            a[1] = vfmaq_f32(a[1], w, x1);
        }
        i += LANES;
    }
    let mut out = [[0f32; 4]; 2];
    for (j, a) in acc.iter().enumerate() {
        out[0][j] = vaddvq_f32(a[0]);
        out[1][j] = vaddvq_f32(a[1]);
    }
    for (x, sums) in t.x.iter().zip(out.iter_mut()) {
        for (sum, &o) in sums.iter_mut().zip(&t.rows) {
            *sum += (full..t.d_in)
                .map(|i| t.w.get(t.d_in, o, i) * x[i])
                .sum::<f32>();
        }
    }
    out
}

/// The codes of blocks `4 quarter..4 quarter + 4` of one superblock ([`Superblock`]), as signed
/// weights: group `g` (weights `4 g..4 g + 4` of each block) in element `g`.
pub(crate) trait Codes {
    /// # Safety
    /// `quarter < 4`.
    unsafe fn weights128(&self, quarter: usize) -> [int8x16_t; 8];
}

// SAFETY (every load below): 16 bytes at `16 · quarter < 64` inside a `[u8; 64]`.
impl Codes for Q8Super {
    #[inline(always)]
    unsafe fn weights128(&self, quarter: usize) -> [int8x16_t; 8] {
        unsafe {
            let flip = vdupq_n_u8(0x80);
            std::array::from_fn(|g| {
                let codes = vld1q_u8(self.codes[g].as_ptr().add(16 * quarter));
                vreinterpretq_s8_u8(veorq_u8(codes, flip))
            })
        }
    }
}

impl Codes for Q4Super {
    #[inline(always)]
    unsafe fn weights128(&self, quarter: usize) -> [int8x16_t; 8] {
        let mut out = [unsafe { vdupq_n_s8(0) }; 8];
        unsafe {
            let (mask, eight) = (vdupq_n_u8(0x0f), vdupq_n_s8(8));
            for (v, bytes) in self.nibbles.iter().enumerate() {
                let bytes = vld1q_u8(bytes.as_ptr().add(16 * quarter));
                let low = vreinterpretq_s8_u8(vandq_u8(bytes, mask));
                let high = vreinterpretq_s8_u8(vshrq_n_u8::<4>(bytes));
                out[2 * v] = vsubq_s8(low, eight);
                out[2 * v + 1] = vsubq_s8(high, eight);
            }
        }
        out
    }
}

/// # Safety
/// The CPU supports NEON (every aarch64 target Rust builds for does by default).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn int_tile_neon<S: Superblock + Codes>(t: &IntTile<'_, S>) -> [[f32; 4]; 2] {
    let mut out = [[0f32; 4]; 2];
    for (j, &row) in t.rows.iter().enumerate() {
        // acc[r][quarter]: per block lane, weight row j · input row r
        let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
        for (s, group) in t.w.iter().enumerate() {
            let w = &group.rows[row];
            let scales: [f32; SUPER_BLOCKS] = group.scales[row].map(f16_to_f32);
            for quarter in 0..4 {
                // SAFETY: `quarter < 4`.
                let weights = unsafe { w.weights128(quarter) };
                // SAFETY: 16 bytes at `16 · quarter` inside a `[f32; 16]`.
                let w_scale = unsafe { vld1q_f32(scales.as_ptr().add(4 * quarter)) };
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = &t.x[r][s];
                    // Lanes (block 4 quarter, 4 quarter + 1) and (+ 2, + 3), each as two i32
                    // halves of its 4-product groups.
                    let (mut low, mut high) = (vdupq_n_s32(0), vdupq_n_s32(0));
                    for (g, &w) in weights.iter().enumerate() {
                        // SAFETY: 16 bytes at `16 · quarter` inside a `[i8; 64]`.
                        let q = unsafe { vld1q_s8(x.q[g].as_ptr().add(16 * quarter)) };
                        low = vpadalq_s16(low, vmull_s8(vget_low_s8(w), vget_low_s8(q)));
                        high = vpadalq_s16(high, vmull_high_s8(w, q));
                    }
                    let dot = vpaddq_s32(low, high);
                    // SAFETY: as for `w_scale`.
                    let x_scale = unsafe { vld1q_f32(x.scales.as_ptr().add(4 * quarter)) };
                    let scale = vmulq_f32(w_scale, x_scale);
                    acc[quarter] = vfmaq_f32(acc[quarter], vcvtq_f32_s32(dot), scale);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // The lanes `l + 8` onto `l`, `l + 4`, `l + 2`, then the last two: `reduce16`.
            let (a_low, a_high) = (vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
            let b = vaddq_f32(a_low, a_high);
            let c = vadd_f32(vget_low_f32(b), vget_high_f32(b));
            out[r][j] = vget_lane_f32::<0>(c) + vget_lane_f32::<1>(c);
        }
    }
    out
}
