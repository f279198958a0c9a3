//! x86-64 kernels: AVX-512F (16 lanes) and AVX2 + FMA (8 lanes). Each loads four weight rows
//! a vector at a time, widens bf16 / scales q8 to f32 in registers, and fuses the
//! multiply-add into 8 accumulators (4 rows × 2 inputs), so every weight is read once.

use std::arch::x86_64::*;

use super::{Bf16Rows, F32Rows, Q4_BLOCK, Q4Rows, Q8_BLOCK, Q8Rows, RowFormat, Tile};

/// Vector loads of one row's weights at `i`, widened to f32.
///
/// # Safety (both methods)
/// `i + lanes ≤ d_in`, and the CPU has the instruction set of the vector type.
pub(crate) trait Widen {
    /// Whether [`Widen::load16_pair`] / [`Widen::load8_pair`] read less than two loads: the
    /// kernels then walk each block of 32 weights as pairs `(i, i + 16)`.
    const PAIRED: bool = true;

    unsafe fn load16(&self, d_in: usize, o: usize, i: usize) -> __m512;
    unsafe fn load8(&self, d_in: usize, o: usize, i: usize) -> __m256;

    /// The weights at `i` and at `i + 16` (`i % 32 < 16`, `i + 32 ≤` the row's padded length).
    #[inline(always)]
    unsafe fn load16_pair(&self, d_in: usize, o: usize, i: usize) -> (__m512, __m512) {
        unsafe { (self.load16(d_in, o, i), self.load16(d_in, o, i + 16)) }
    }

    #[inline(always)]
    unsafe fn load8_pair(&self, d_in: usize, o: usize, i: usize) -> (__m256, __m256) {
        unsafe { (self.load8(d_in, o, i), self.load8(d_in, o, i + 16)) }
    }
}

// SAFETY (every load below): `o * d_in + i + lanes ≤ len` by the caller's contract; the loads
// are unaligned.
impl Widen for F32Rows<'_> {
    #[inline(always)]
    unsafe fn load16(&self, d_in: usize, o: usize, i: usize) -> __m512 {
        unsafe { _mm512_loadu_ps(self.0.as_ptr().add(o * d_in + i)) }
    }

    #[inline(always)]
    unsafe fn load8(&self, d_in: usize, o: usize, i: usize) -> __m256 {
        unsafe { _mm256_loadu_ps(self.0.as_ptr().add(o * d_in + i)) }
    }
}

/// bf16 is the top half of an f32: zero-extend to 32 bits and shift left by 16.
impl Widen for Bf16Rows<'_> {
    #[inline(always)]
    unsafe fn load16(&self, d_in: usize, o: usize, i: usize) -> __m512 {
        unsafe {
            let halves = _mm256_loadu_si256(self.0.as_ptr().add(o * d_in + i).cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves)))
        }
    }

    #[inline(always)]
    unsafe fn load8(&self, d_in: usize, o: usize, i: usize) -> __m256 {
        unsafe {
            let halves = _mm_loadu_si128(self.0.as_ptr().add(o * d_in + i).cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
        }
    }
}

/// Sign-extend to i32, convert, multiply by the block's scale. A vector never straddles two
/// blocks: `i` is a multiple of the lane count, which divides [`Q8_BLOCK`].
impl Widen for Q8Rows<'_> {
    #[inline(always)]
    unsafe fn load16(&self, d_in: usize, o: usize, i: usize) -> __m512 {
        let scale = self.scales[o * self.blocks + i / Q8_BLOCK];
        unsafe {
            let bytes = _mm_loadu_si128(self.values.as_ptr().add(o * d_in + i).cast());
            let ints = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
            _mm512_mul_ps(ints, _mm512_set1_ps(scale))
        }
    }

    #[inline(always)]
    unsafe fn load8(&self, d_in: usize, o: usize, i: usize) -> __m256 {
        let scale = self.scales[o * self.blocks + i / Q8_BLOCK];
        unsafe {
            let bytes = _mm_loadl_epi64(self.values.as_ptr().add(o * d_in + i).cast());
            let ints = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
            _mm256_mul_ps(ints, _mm256_set1_ps(scale))
        }
    }
}

/// Widen the bytes of a [`Q4_BLOCK`]'s half (`high`: its last 16 weights, in the high nibbles)
/// to the codes, recentre them (−8) and scale. A vector never straddles two halves: `i` is a
/// multiple of the lane count, which divides `Q4_BLOCK / 2`.
impl Widen for Q4Rows<'_> {
    const PAIRED: bool = true;

    /// Both halves from one 16-byte load: low nibbles are weights `i..i + 16`, high ones
    /// `i + 16..i + 32`.
    #[inline(always)]
    unsafe fn load16_pair(&self, _d_in: usize, o: usize, i: usize) -> (__m512, __m512) {
        let scale = self.scales[o * self.blocks + i / Q4_BLOCK];
        let (byte, _) = self.byte(o, i);
        // The 16 codes' weights (code − 8) · scale, looked up per lane: `permutexvar` reads
        // only an index's low 4 bits, so the low nibbles need no mask.
        unsafe {
            let steps = _mm512_setr_ps(
                -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0,
                7.0,
            );
            let table = _mm512_mul_ps(steps, _mm512_set1_ps(scale));
            let bytes =
                _mm512_cvtepu8_epi32(_mm_loadu_si128(self.nibbles.as_ptr().add(byte).cast()));
            (
                _mm512_permutexvar_ps(bytes, table),
                _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(bytes), table),
            )
        }
    }

    #[inline(always)]
    unsafe fn load8_pair(&self, _d_in: usize, o: usize, i: usize) -> (__m256, __m256) {
        let scale = self.scales[o * self.blocks + i / Q4_BLOCK];
        let (byte, _) = self.byte(o, i);
        unsafe {
            let scale = _mm256_set1_ps(scale);
            let bytes =
                _mm256_cvtepu8_epi32(_mm_loadl_epi64(self.nibbles.as_ptr().add(byte).cast()));
            let eight = _mm256_set1_epi32(8);
            let low = _mm256_sub_epi32(_mm256_and_si256(bytes, _mm256_set1_epi32(0x0f)), eight);
            let high = _mm256_sub_epi32(_mm256_srli_epi32::<4>(bytes), eight);
            (
                _mm256_mul_ps(_mm256_cvtepi32_ps(low), scale),
                _mm256_mul_ps(_mm256_cvtepi32_ps(high), scale),
            )
        }
    }

    #[inline(always)]
    unsafe fn load16(&self, _d_in: usize, o: usize, i: usize) -> __m512 {
        let scale = self.scales[o * self.blocks + i / Q4_BLOCK];
        let (byte, high) = self.byte(o, i);
        unsafe {
            let bytes =
                _mm512_cvtepu8_epi32(_mm_loadu_si128(self.nibbles.as_ptr().add(byte).cast()));
            let codes = if high {
                _mm512_srli_epi32::<4>(bytes)
            } else {
                _mm512_and_si512(bytes, _mm512_set1_epi32(0x0f))
            };
            let steps = _mm512_cvtepi32_ps(_mm512_sub_epi32(codes, _mm512_set1_epi32(8)));
            _mm512_mul_ps(steps, _mm512_set1_ps(scale))
        }
    }

    #[inline(always)]
    unsafe fn load8(&self, _d_in: usize, o: usize, i: usize) -> __m256 {
        let scale = self.scales[o * self.blocks + i / Q4_BLOCK];
        let (byte, high) = self.byte(o, i);
        unsafe {
            let bytes =
                _mm256_cvtepu8_epi32(_mm_loadl_epi64(self.nibbles.as_ptr().add(byte).cast()));
            let codes = if high {
                _mm256_srli_epi32::<4>(bytes)
            } else {
                _mm256_and_si256(bytes, _mm256_set1_epi32(0x0f))
            };
            let steps = _mm256_cvtepi32_ps(_mm256_sub_epi32(codes, _mm256_set1_epi32(8)));
            _mm256_mul_ps(steps, _mm256_set1_ps(scale))
        }
    }
}

/// The scalar rest of each dot product, past the last full vector at `full`.
#[inline(always)]
fn add_tail<W: RowFormat>(t: &Tile<'_, W>, full: usize, out: &mut [[f32; 4]; 2]) {
    for (x, sums) in t.x.iter().zip(out.iter_mut()) {
        for (sum, &o) in sums.iter_mut().zip(&t.rows) {
            *sum += (full..t.d_in)
                .map(|i| t.w.get(t.d_in, o, i) * x[i])
                .sum::<f32>();
        }
    }
}

/// A tile kernel for one vector width: `$lanes` f32 per `$vector`, loaded from the weights by
/// `Widen::$load`, fused with `$fma`, summed across lanes by `$sum`.
macro_rules! tile_kernel {
    (
        $(#[$doc:meta])*
        $name:ident, $features:literal, $lanes:literal, $zero:ident, $loadx:ident,
        $load:ident, $load_pair:ident, $fma:ident, $sum:ident
    ) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name<W: RowFormat>(t: &Tile<'_, W>) -> [[f32; 4]; 2] {
            let full = t.d_in / $lanes * $lanes;
            // acc[j][r]: weight row j · input row r
            let mut acc = [[$zero(); 2]; 4];
            let mut i = 0;
            if W::PAIRED {
                // Whole blocks of 32 as pairs (i, i + 16), one load each.
                let blocks_end = t.d_in / 32 * 32;
                while i < blocks_end {
                    for half in (i..i + 16).step_by($lanes) {
                        // SAFETY: `half + 16 + lanes ≤ blocks_end ≤ d_in`.
                        let x = unsafe {
                            [
                                $loadx(t.x[0].as_ptr().add(half)),
                                $loadx(t.x[1].as_ptr().add(half)),
                                $loadx(t.x[0].as_ptr().add(half + 16)),
                                $loadx(t.x[1].as_ptr().add(half + 16)),
                            ]
                        };
                        for (a, &o) in acc.iter_mut().zip(&t.rows) {
                            // SAFETY: as above.
                            let (w, v) = unsafe { t.w.$load_pair(t.d_in, o, half) };
                            a[0] = $fma(w, x[0], a[0]);
                            a[1] = $fma(w, x[1], a[1]);
                            a[0] = $fma(v, x[2], a[0]);
                            a[1] = $fma(v, x[3], a[1]);
                        }
                    }
                    i += 32;
                }
            }
            while i < full {
                // SAFETY: `i + lanes ≤ d_in` for the input rows and every weight row.
                let (x0, x1) = unsafe {
                    (
                        $loadx(t.x[0].as_ptr().add(i)),
                        $loadx(t.x[1].as_ptr().add(i)),
                    )
                };
                for (a, &o) in acc.iter_mut().zip(&t.rows) {
                    // SAFETY: as above.
                    let w = unsafe { t.w.$load(t.d_in, o, i) };
                    a[0] = $fma(w, x0, a[0]);
                    a[1] = $fma(w, x1, a[1]);
                }
                i += $lanes;
            }
            let mut out = [[0f32; 4]; 2];
            for (j, a) in acc.iter().enumerate() {
                out[0][j] = $sum(a[0]);
                out[1][j] = $sum(a[1]);
            }
            add_tail(t, full, &mut out);
            out
        }
    };
}

tile_kernel!(
    /// # Safety
    /// The CPU supports AVX-512F.
    tile_avx512, "avx512f", 16, _mm512_setzero_ps, _mm512_loadu_ps,
    load16, load16_pair, _mm512_fmadd_ps, _mm512_reduce_add_ps
);

tile_kernel!(
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    tile_avx2, "avx2,fma", 8, _mm256_setzero_ps, _mm256_loadu_ps,
    load8, load8_pair, _mm256_fmadd_ps, horizontal_sum_avx
);

#[target_feature(enable = "avx2")]
fn horizontal_sum_avx(v: __m256) -> f32 {
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let single = _mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair));
    _mm_cvtss_f32(single)
}
