//! aarch64 kernel: NEON (4 lanes, part of the aarch64 baseline, so always available there).
//! Loads four weight rows a vector at a time, widens bf16 / scales q8 and q4 to f32 in
//! registers, and fuses the multiply-add into 8 accumulators (4 rows × 2 inputs), so every
//! weight is read once — the x86 kernels' scheme at NEON's width.
//!
//! Type-checked on x86-64 hosts with `cargo check --target aarch64-unknown-linux-gnu`; the
//! CI machines cannot run it, so its tests run only on an aarch64 machine.

use std::arch::aarch64::*;

use super::{Bf16Rows, F32Rows, Q4_BLOCK, Q4Rows, Q8_BLOCK, Q8Rows, RowFormat, Tile};

const LANES: usize = 4;

/// Four of one row's weights at `i`, widened to f32.
///
/// # Safety
/// `i + 4 ≤ d_in`.
pub(crate) trait Widen {
    unsafe fn load4(&self, d_in: usize, o: usize, i: usize) -> float32x4_t;
}

// SAFETY (every load below): `o * d_in + i + 4 ≤ len` (q4: the four bytes lie in the row's
// padded block) by the caller's contract; the loads are unaligned.
impl Widen for F32Rows<'_> {
    #[inline(always)]
    unsafe fn load4(&self, d_in: usize, o: usize, i: usize) -> float32x4_t {
        unsafe { vld1q_f32(self.0.as_ptr().add(o * d_in + i)) }
    }
}

/// bf16 is the top half of an f32: widen each to 32 bits shifted left by 16.
impl Widen for Bf16Rows<'_> {
    #[inline(always)]
    unsafe fn load4(&self, d_in: usize, o: usize, i: usize) -> float32x4_t {
        unsafe {
            let halves = vld1_u16(self.0.as_ptr().add(o * d_in + i));
            vreinterpretq_f32_u32(vshll_n_u16::<16>(halves))
        }
    }
}

/// Four bytes read as one unaligned u32, widened byte by byte to 32-bit lanes.
#[inline(always)]
unsafe fn four_bytes(ptr: *const u8) -> uint32x4_t {
    unsafe {
        let word = ptr.cast::<u32>().read_unaligned();
        let bytes = vreinterpret_u8_u32(vdup_n_u32(word));
        vmovl_u16(vget_low_u16(vmovl_u8(bytes)))
    }
}

/// Sign-extend, convert, multiply by the block's scale. Four lanes never straddle two blocks.
impl Widen for Q8Rows<'_> {
    #[inline(always)]
    unsafe fn load4(&self, d_in: usize, o: usize, i: usize) -> float32x4_t {
        let scale = self.scales[o * self.blocks + i / Q8_BLOCK];
        unsafe {
            let word = self
                .values
                .as_ptr()
                .add(o * d_in + i)
                .cast::<u32>()
                .read_unaligned();
            let bytes = vreinterpret_s8_u32(vdup_n_u32(word));
            let ints = vmovl_s16(vget_low_s16(vmovl_s8(bytes)));
            vmulq_n_f32(vcvtq_f32_s32(ints), scale)
        }
    }
}

/// The half-block's nibbles (low: its first 16 weights, high: its last 16), recentred and
/// scaled. Four lanes never straddle two halves.
impl Widen for Q4Rows<'_> {
    #[inline(always)]
    unsafe fn load4(&self, _d_in: usize, o: usize, i: usize) -> float32x4_t {
        let scale = self.scales[o * self.blocks + i / Q4_BLOCK];
        let (byte, high) = self.byte(o, i);
        unsafe {
            let bytes = four_bytes(self.nibbles.as_ptr().add(byte));
            let codes = if high {
                vshrq_n_u32::<4>(bytes)
            } else {
                vandq_u32(bytes, vdupq_n_u32(0x0f))
            };
            let steps = vsubq_s32(vreinterpretq_s32_u32(codes), vdupq_n_s32(8));
            vmulq_n_f32(vcvtq_f32_s32(steps), scale)
        }
    }
}

/// # Safety
/// The CPU supports NEON (every aarch64 target Rust builds for does by default).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn tile_neon<W: RowFormat>(t: &Tile<'_, W>) -> [[f32; 4]; 2] {
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
