//! Matrix × few-rows products on the host, for the decoder's linear layers on the CPU.
//!
//! A decode step multiplies every weight matrix by two rows (the two classifier-free-guidance
//! branches) or one: a matrix–vector product, bound by how fast the weights stream from memory.
//! A general matmul (burn-flex drives `gemm`) packs and tiles for large products and reached a
//! third of the bandwidth floor on the bench machine (issue 13). This kernel reads each weight
//! once for both rows, in the format chosen at load ([`WeightFormat`]: f32, bf16 widened in
//! registers, 8-bit with one f16 scale per 32 weights as llama.cpp's Q8_0, or 4-bit with one
//! f16 scale per 32 weights as its Q4_0), and splits the output rows over rayon's threads.
//! burn's own quantized tensors were not measured against it: they would still go through a
//! general matmul per CFG pair, which is what the f32 path had to leave first.
//!
//! f32 and bf16 accumulate in f32: the weights are widened in registers and fused-multiply-added
//! against the f32 inputs.
//!
//! q8 and q4 take an integer path. Widening 8- or 4-bit weights to f32 costs several
//! instructions per weight, and on the bench machine that made the q8 linears compute-bound at
//! ≈ 8 GB/s of weights, a third of the ≈ 25–31 GB/s the two cores can read. Instead, each call
//! quantizes its input rows once to i8 with one f32 scale per block of 32 (Q8_0, as llama.cpp
//! does for its integer dot products: `quantize_rows`), and the kernels take exact integer dot
//! products per block (AVX512-VNNI / AVX-VNNI `vpdpbusd`: 4 u8 × i8 products summed into each
//! i32 lane), then scale each block's sum by the weight scale × the input scale in f32. The
//! weights are repacked at load for that (`Q8Super`, `Q4Super`): superblocks of 16 blocks
//! (512 weights of a row), one 64-byte vector holding 4 consecutive weights of each of the 16
//! blocks, so that 8 `vpdpbusd` leave each i32 lane with one block's dot product; rows are
//! padded with zero weights to a multiple of 512. The four rows of a tile share a [`Group`] per
//! superblock: their 4 × 16 scales as f16 in two cache lines, then their codes. The weights are stored unsigned (q8: `w + 128`,
//! q4: the code `w + 8`), and each input block's sum of codes corrects the offset. The weight
//! values are those of the float formats they replace (same scales, same codes), but the inputs
//! now carry a rounding error of up to half a step of their block's scale (≈ 0.4 % of the
//! block's largest |x|).
//!
//! Integer sums are exact, and every kernel adds the scaled block sums in the same order
//! (per block lane across superblocks with one FMA each, then the same tree over the 16 lanes),
//! so the q8 and q4 outputs are bit-identical whichever kernel runs. The input quantization is
//! shared (8 lanes wide with AVX2, with the same results as the portable code).
//!
//! Measured with `matvec_bench` (AVX512-VNNI, musicgen-small's decoder shapes, 2 threads, on a
//! shared machine whose read bandwidth varied from 9 to 20 GB/s): one thread multiplies an
//! in-cache q8 matrix by 2 rows at ≈ 60 G weights/s (68 GB/s of weights), f32 at 7.5 G weights/s;
//! streamed, q8 reads its weights about as fast as f32 does (≈ 19 GB/s each in the same run), q4
//! at ≈ 60 % of that rate (its `vpdpbusd` per byte are twice q8's). Every x86 kernel prefetches
//! its next weights in software (`x86::PREFETCH_BYTES`).
//!
//! Many rows (a prompt's cross-attention keys, an audio prompt's prefill) take the same path:
//! the output rows are cut into chunks of about [`CHUNK_BYTES`] of weights, which stay in the
//! core's L2 while every pair of input rows passes over them, so the weights still come from
//! memory once.
//!
//! Instruction sets are chosen at run time ([`Kernel::detect`]): AVX-512F with VNNI, AVX2 + FMA
//! with AVX-VNNI, AVX-512F, AVX2 + FMA, NEON on aarch64, or portable Rust (any target). AMX
//! (the tile unit of Sapphire Rapids and later Xeons) is not used: its tiles pay off where
//! one weight meets many input rows, and a decode step's 2 rows leave the products bound by
//! memory (one thread's VNNI kernel takes an in-cache q8 matrix at ≈ 68 GB/s of weights, two
//! to three times what the two cores can read); a prefill's many rows go through the L2-sized
//! chunks below, a small share of a stream's time.

#[cfg(target_arch = "aarch64")]
mod neon;
mod pages;
mod portable;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use rayon::prelude::*;

pub use pages::Pages;

/// Q8 weights per scale (llama.cpp's Q8_0 block).
pub const Q8_BLOCK: usize = 32;

/// Q4 weights per scale (llama.cpp's Q4_0 block).
pub const Q4_BLOCK: usize = 32;

/// Blocks of 32 per superblock: the 16 i32 lanes of one 512-bit vector.
pub const SUPER_BLOCKS: usize = 16;

/// Weights (of one row) per superblock, the unit the integer kernels walk: rows are padded with
/// zero weights to a multiple of it.
pub const SUPER_WEIGHTS: usize = 32 * SUPER_BLOCKS;

/// Weight bytes per work item: small enough to stay in a core's L2 while every pair of input
/// rows passes over it, large enough that rayon's per-item cost is small next to streaming it.
const CHUNK_BYTES: usize = 64 * 1024;

/// How the decoder's linear weights are stored on the CPU, chosen at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// 4 bytes per weight: exactly the checkpoint's values (f16/bf16 checkpoints widen).
    #[default]
    F32,
    /// 2 bytes per weight: f32 rounded to nearest-even bf16.
    Bf16,
    /// 1.0625 bytes per weight (rows padded to [`SUPER_WEIGHTS`]): i8 with one f16 scale per
    /// [`Q8_BLOCK`] weights of a row ([`Group`]).
    Q8,
    /// 0.5625 bytes per weight (rows padded to [`SUPER_WEIGHTS`]): 4-bit codes 0..=15 standing
    /// for −8..=7 steps of one f16 scale per [`Q4_BLOCK`] weights of a row ([`Group`]).
    Q4,
}

impl WeightFormat {
    /// How EnCodec stores its largest decoder weights (the LSTM and the transposed convs, which
    /// a streamed frame reads whole) next to a decoder in `self`: f32 with f32 (exact parity
    /// with the reference), bf16 with bf16, and q8 with the integer formats, whose own error is
    /// far larger. A q8 codec keeps only the LSTM's recurrent weights in q8 (every frame reads
    /// them whole, and every decode multiplies them on the host kernel); the weights that a
    /// batch decode also multiplies in burn's float matmuls stay in
    /// [`codec_float`](Self::codec_float).
    pub fn codec(self) -> WeightFormat {
        match self {
            WeightFormat::F32 => WeightFormat::F32,
            WeightFormat::Bf16 => WeightFormat::Bf16,
            WeightFormat::Q8 | WeightFormat::Q4 => WeightFormat::Q8,
        }
    }

    /// The float format of a codec in `self` ([`codec`](Self::codec)): the LSTM's input
    /// projection and the transposed convs. `self` for the float formats, bf16 for q8.
    pub fn codec_float(self) -> WeightFormat {
        match self {
            WeightFormat::Q8 | WeightFormat::Q4 => WeightFormat::Bf16,
            float => float,
        }
    }

    /// `values` as a [`WeightFormat::codec`] format stores them (bf16: rounded to nearest even),
    /// for a burn tensor that must hold the same weights as a host matrix packed in it.
    ///
    /// # Panics
    /// For an integer format, which the codec never takes.
    pub(crate) fn round_float(self, mut values: Vec<f32>) -> Vec<f32> {
        match self {
            WeightFormat::F32 => {}
            WeightFormat::Bf16 => {
                for v in &mut values {
                    *v = bf16_to_f32(f32_to_bf16(*v));
                }
            }
            WeightFormat::Q8 | WeightFormat::Q4 => panic!("{self} is not a float format"),
        }
        values
    }

    pub const ALL: [WeightFormat; 4] = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Q8,
        WeightFormat::Q4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Q8 => "q8",
            WeightFormat::Q4 => "q4",
        }
    }

    /// Bytes a `[d_out, d_in]` matrix takes in this format, with the padding of the rows to
    /// tiles of 4 where the format has one (bf16, q8, q4; q8 and q4 also pad each row to a
    /// multiple of [`SUPER_WEIGHTS`]).
    pub fn matrix_bytes(self, d_out: usize, d_in: usize) -> usize {
        // The integer formats pad the rows to whole tiles of 4 (`Group`).
        let groups = d_out.div_ceil(4) * d_in.div_ceil(SUPER_WEIGHTS);
        match self {
            WeightFormat::F32 => 4 * d_out * d_in,
            WeightFormat::Bf16 => 2 * d_out.next_multiple_of(4) * d_in,
            WeightFormat::Q8 => groups * size_of::<Group<Q8Super>>(),
            WeightFormat::Q4 => groups * size_of::<Group<Q4Super>>(),
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`WeightFormat`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown weight format `{0}`: expected f32, bf16, q8 or q4")]
pub struct UnknownWeightFormat(pub String);

impl FromStr for WeightFormat {
    type Err = UnknownWeightFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WeightFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownWeightFormat(s.to_owned()))
    }
}

/// The instruction set a product runs with.
///
/// | kernel | f32, bf16 | q8, q4 (integer dot products) |
/// | --- | --- | --- |
/// | `Avx512Vnni` | AVX-512F | `vpdpbusd` on 512 bits; q8 with 1–2 input rows on 256 (EVEX) |
/// | `AvxVnni` | AVX2 + FMA | `vpdpbusd` on 256 bits (VEX) |
/// | `Avx512`, `Avx2` | AVX-512F / AVX2 + FMA | AVX2 `vpmaddubsw` + `vpmaddwd` |
/// | `Neon` | NEON | `smull` + `sadalp` |
/// | `Portable` | plain Rust | plain Rust |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Portable,
    /// AVX2, FMA and F16C (x86-64).
    Avx2,
    /// AVX2, FMA and AVX-VNNI (x86-64).
    AvxVnni,
    /// AVX-512F (x86-64; with AVX2 and FMA, which every AVX-512 CPU has).
    Avx512,
    /// AVX-512F, AVX512-VL and AVX512-VNNI (x86-64; with AVX2 and FMA).
    Avx512Vnni,
    /// NEON (aarch64, where it is baseline).
    Neon,
}

impl Kernel {
    /// Every kernel, fastest first where several run.
    pub const ALL: [Kernel; 6] = [
        Kernel::Avx512Vnni,
        Kernel::AvxVnni,
        Kernel::Avx512,
        Kernel::Avx2,
        Kernel::Neon,
        Kernel::Portable,
    ];

    /// The fastest kernel this CPU runs, detected once.
    pub fn detect() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            Kernel::ALL
                .into_iter()
                .find(|k| k.is_available())
                .unwrap_or(Kernel::Portable)
        })
    }

    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        // F16C converts the integer formats' f16 scales (every AVX2 CPU has it).
        let avx2 = || {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        };
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2(),
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => avx2() && is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx2() && is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                avx2()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512 | Kernel::Avx512Vnni => false,
            Kernel::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2+fma",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Avx512 => "avx512f",
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::Neon => "neon",
        }
    }
}

/// The codes of 512 q8 weights of one row (16 blocks of [`Q8_BLOCK`]) as the integer kernels
/// read them: `codes[g][4 * l + k]` is weight `4 * g + k` of block `l`, stored as `w + 128`
/// (u8); a code `c` is the weight `(c − 128) · scale[l]` (the scales are in the [`Group`]). A
/// 64-byte vector of codes holds 4 consecutive weights of each block, one block per i32 lane.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q8Super {
    pub codes: [[u8; 64]; 8],
}

/// The codes of 512 q4 weights of one row (16 blocks of [`Q4_BLOCK`]): the low nibbles of
/// `nibbles[v]` are the codes of group `2 v` and its high nibbles those of group `2 v + 1`, a
/// group laid out as in [`Q8Super`] (byte `4 * l + k`: weight `4 * g + k` of block `l`). A code
/// `n` is the weight `(n − 8) · scale[l]`. One 64-byte load gives two groups with an AND and a
/// shift.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q4Super {
    pub nibbles: [[u8; 64]; 4],
}

/// Superblock `s` of the four rows of a tile (rows `4 t..4 t + 4`), stored at `t · per_row + s`,
/// so that a tile kernel walks its weights in one ascending run: the rows' 16 block scales each
/// as f16 bits (two cache lines), then the rows' codes.
///
/// f16 scales, as llama.cpp's Q8_0 and Q4_0 store them, make q8 1.0625 bytes a weight and q4
/// 0.5625 (f32 scales: 1.125 and 0.625), and a decode step reads that many fewer bytes. A
/// scale is rounded up in magnitude to an f16 before the codes are taken against it
/// ([`f16_scale`]), so a weight's error stays within half its block's step.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group<S> {
    pub scales: [[u16; SUPER_BLOCKS]; 4],
    pub rows: [S; 4],
}

/// `scale` as the f16 of at least its magnitude (same sign), the bits a [`Group`] stores, and
/// that f16's value. Scales past f16's range saturate at ±65504 (weights of magnitude above
/// 8.3 million in q8, 520 000 in q4, which no checkpoint has; their codes then clamp); tiny
/// ones keep f16's subnormal steps (6e-8), enough that a weight's error stays far below the
/// other weights' in its layer.
pub(crate) fn f16_scale(scale: f32) -> (u16, f32) {
    let clamped = scale.clamp(-65504.0, 65504.0);
    let mut h = half::f16::from_f32(clamped);
    if h.to_f32().abs() < clamped.abs() {
        // f16 is sign–magnitude: the next bit pattern is the next magnitude up.
        h = half::f16::from_bits(h.to_bits() + 1);
    }
    (h.to_bits(), h.to_f32())
}

/// The f32 value of f16 bits (a [`Group`] scale).
#[inline(always)]
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// 512 inputs of one row, quantized as Q8_0 and laid out as the weights ([`Q8Super`]):
/// `q[g][4 * l + k]` is input `4 * g + k` of block `l`, |q| ≤ 127, standing for
/// `q · scales[l]`; `sums[l]` is the sum of block `l`'s `q`.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct XSuper {
    pub q: [[i8; 64]; 8],
    pub scales: [f32; SUPER_BLOCKS],
    pub sums: [i32; SUPER_BLOCKS],
}

impl XSuper {
    const ZERO: XSuper = XSuper {
        q: [[0; 64]; 8],
        scales: [0.0; SUPER_BLOCKS],
        sums: [0; SUPER_BLOCKS],
    };

    /// The quantized input `e` (0..32) of block `l`.
    #[inline(always)]
    pub(crate) fn get(&self, l: usize, e: usize) -> i8 {
        self.q[e / 4][4 * l + e % 4]
    }
}

/// `rows` rows of `d_in` inputs as Q8_0, [`XSuper`]s of each row in turn (`d_in` padded with
/// zeros to a multiple of [`SUPER_WEIGHTS`]): per block of 32, `scale = max |x| / 127` and
/// `q = x / scale` rounded to nearest (ties to even), so `|q · scale − x| ≤ scale / 2`.
pub(crate) fn quantize_rows(x: &[f32], rows: usize, d_in: usize) -> Vec<XSuper> {
    assert_eq!(x.len(), rows * d_in, "input length");
    let per_row = d_in.div_ceil(SUPER_WEIGHTS);
    let mut out = vec![XSuper::ZERO; rows * per_row];
    if per_row == 0 {
        return out;
    }
    let quantize = |(supers, row): (&mut [XSuper], &[f32])| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { quantize_row_avx2(supers, row) };
        }
        quantize_row(supers, row)
    };
    if rows <= 4 {
        out.chunks_mut(per_row)
            .zip(x.chunks(d_in))
            .for_each(quantize);
    } else {
        out.par_chunks_mut(per_row)
            .zip(x.par_chunks(d_in))
            .for_each(quantize);
    }
    out
}

/// [`quantize_row`] with [`x86::quantize_block_avx2`]: the same operations, so the same
/// results, 8 lanes wide.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(supers: &mut [XSuper], row: &[f32]) {
    for (sup, inputs) in supers.iter_mut().zip(row.chunks(SUPER_WEIGHTS)) {
        for (l, inputs) in inputs.chunks(32).enumerate() {
            let mut block = [0f32; 32];
            block[..inputs.len()].copy_from_slice(inputs);
            // SAFETY: the CPU has AVX2 (the caller's contract).
            let (scale, inverse) = block_scale(unsafe { x86::max_abs_avx2(&block) });
            // SAFETY: as above.
            unsafe { x86::quantize_block_avx2(&block, inverse, sup, l) };
            sup.scales[l] = scale;
        }
    }
}

/// One row's inputs into its superblocks (zeros past the row's end).
fn quantize_row(supers: &mut [XSuper], row: &[f32]) {
    for (sup, inputs) in supers.iter_mut().zip(row.chunks(SUPER_WEIGHTS)) {
        for (l, inputs) in inputs.chunks(32).enumerate() {
            let mut block = [0f32; 32];
            block[..inputs.len()].copy_from_slice(inputs);
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (scale, inverse) = block_scale(max);
            let mut sum = 0;
            for (e, &v) in block.iter().enumerate() {
                let q = quantize_input(v, inverse);
                sup.q[e / 4][4 * l + e % 4] = q as i8;
                sum += q;
            }
            sup.scales[l] = scale;
            sup.sums[l] = sum;
        }
    }
}

/// A block's scale (`max |x| / 127`) and the factor that takes its inputs to steps.
#[inline(always)]
fn block_scale(max: f32) -> (f32, f32) {
    let scale = max / 127.0;
    (scale, if scale > 0.0 { 1.0 / scale } else { 0.0 })
}

/// One input in steps, rounded to nearest, ties to even: adding and subtracting 1.5 · 2²³ rounds
/// an f32 of magnitude < 2²² to an integer, as `cvtps2dq` does in the default rounding mode. The
/// clamp keeps |q| ≤ 127 (the AVX2 kernel's sign trick needs q ≠ −128).
#[inline(always)]
fn quantize_input(v: f32, inverse: f32) -> i32 {
    const ROUND: f32 = 12_582_912.0;
    (((v * inverse).clamp(-127.0, 127.0) + ROUND) - ROUND) as i32
}

/// The packed values of a [`HostMatrix`].
#[derive(Debug, Clone)]
enum Packed {
    /// Row-major `[d_out, d_in]`.
    F32(Pages<f32>),
    /// The upper halves of the f32 bit patterns, tiles of 4 rows as [`tile_slot`] and
    /// [`bf16_slot`] lay them out.
    Bf16(Pages<u16>),
    /// Each tile of 4 rows as `d_in.div_ceil(SUPER_WEIGHTS)` groups.
    Q8(Pages<Group<Q8Super>>),
    /// Each tile of 4 rows as `d_in.div_ceil(SUPER_WEIGHTS)` groups.
    Q4(Pages<Group<Q4Super>>),
}

/// One `[d_out, d_in]` weight matrix in host memory, in a [`WeightFormat`] (packed in tiles of
/// four rows except f32: [`FloatSlots`], [`Group`]).
#[derive(Debug, Clone)]
pub struct HostMatrix {
    packed: Packed,
    d_in: usize,
    d_out: usize,
    reads: Reads,
}

/// How a matrix's products meet its weights, which picks the float tiles' vector width on an
/// AVX-512 CPU: a matrix keeps one tile for every product, so a float output's bits never
/// depend on how many input rows share a product (a slide's paired step against a plain step).
/// The integer tiles' sums are exact and pick their width by row count instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// From memory, once a product, for a few input rows: a decode step's layers and prompt
    /// folds, each read once a step (more than any cache holds). On AVX-512, bf16 takes the
    /// 256-bit tile, which streams it faster there: on a Zen 5 EPYC, two threads, `matvec_bench
    /// --only streamed`, 10.38–10.43 ms a pass against 11.34 on a fast-memory day, 22.89 /
    /// 22.96 / 24.04 against 23.43 / 23.77 / 24.76 on a slow one; `bench decode --dtype bf16`
    /// 22.4 / 23.2 ms a step against 24.6 / 25.2 (alternating); on an Ice Lake Xeon, no
    /// difference. f32 keeps the 512-bit tile (`FloatSlots::NARROW_STREAMED`).
    Streamed,
    /// From the caches, or for many input rows: EnCodec's layers (their few MB stay cached from
    /// frame to frame), T5's (a prompt's rows). The 512-bit tile, twice as fast there (bf16 by
    /// 2 rows in cache 69.6 against 49.8 GB/s of weights, by 8 rows 19.7 against 12.9).
    Cached,
}

/// One format's packed rows, read weight by weight.
pub(crate) trait RowFormat: Copy + Sync {
    /// Weight `(o, i)` as f32; `d_in` is the row length.
    fn get(&self, d_in: usize, o: usize, i: usize) -> f32;

    /// Row `o`'s weights as f32 into `out` (`d_in` values), as [`RowFormat::get`] gives them.
    fn row_into(&self, d_in: usize, o: usize, out: &mut [f32]) {
        for (i, out) in out.iter_mut().enumerate() {
            *out = self.get(d_in, o, i);
        }
    }
}

#[cfg(target_arch = "aarch64")]
use neon::{Codes as ArchCodes, Widen as ArchLoads};
#[cfg(target_arch = "x86_64")]
use x86::{Codes as ArchCodes, Widen as ArchLoads};

/// The vector loads a float format needs on this architecture: none beyond [`RowFormat::get`].
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) trait ArchLoads {}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl<T> ArchLoads for T {}
/// The vector loads an integer format needs on this architecture: none beyond
/// [`Superblock::code`].
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) trait ArchCodes {}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl<T> ArchCodes for T {}

/// A float format the float kernels multiply by.
pub(crate) trait FloatRows: RowFormat + FloatSlots + ArchLoads {}
impl<T: RowFormat + FloatSlots + ArchLoads> FloatRows for T {}

/// Where a float format stores weight `(o, i)` (bf16: before its permutation within each block
/// of 32, [`bf16_slot`]). Within a whole block of 32 and within a row's last `d_in % 32`
/// weights, a row's weights are consecutive in both layouts, and weight `(o, i)` of a tile's row
/// lies `slot(o, 0) − slot(o₀, 0)` past that of the tile's first row `o₀`: the kernels address
/// a tile's four rows from the first one's slot.
pub(crate) trait FloatSlots {
    /// Whether [`Reads::Streamed`] products take the 256-bit tile on AVX-512.
    #[cfg_attr(not(target_arch = "x86_64"), expect(dead_code))]
    const NARROW_STREAMED: bool;

    fn slot(d_in: usize, o: usize, i: usize) -> usize;
}

/// f32 stays row-major: in tiles ([`tile_slot`]) it streamed no faster in any series and slower
/// in one (`matvec_bench --only streamed`, alternating builds on an AVX2 EPYC, medians in ms a
/// pass, row-major against tiles: 75.9 / 77.6 over 5 pairs, 78.5 / 87.9 over 6, 78.8 / 78.6
/// over 4), and `bench decode`'s f32 step was not faster either.
impl FloatSlots for F32Rows<'_> {
    /// The 256-bit tile streamed f32 no faster: 24.4–24.9 against 25.2–25.3 ms a pass on a
    /// fast-memory day, 46.3 / 47.4 / 51.1 against 45.8 / 46.6 / 49.0 on a slow one (Zen 5
    /// EPYC, alternating), and a many-row product (a slide's prefill) would lose a quarter.
    const NARROW_STREAMED: bool = false;

    #[inline(always)]
    fn slot(d_in: usize, o: usize, i: usize) -> usize {
        o * d_in + i
    }
}

impl FloatSlots for Bf16Rows<'_> {
    const NARROW_STREAMED: bool = true;

    #[inline(always)]
    fn slot(d_in: usize, o: usize, i: usize) -> usize {
        tile_slot(d_in, o, i)
    }
}

/// An integer format's superblock codes ([`Q8Super`], [`Q4Super`]), as the integer kernels read
/// them.
pub(crate) trait Superblock: Sync + ArchCodes {
    /// What a code stands for is `code − OFFSET` steps of its block's scale.
    const OFFSET: i32;

    /// The code of weight `e` (0..32) of block `l`.
    fn code(&self, l: usize, e: usize) -> u8;

    /// Every weight's code less [`Superblock::OFFSET`], in order (block by block), for
    /// [`RowFormat::row_into`]: the storage read in order, four codes at a time.
    fn steps(&self) -> [i8; SUPER_WEIGHTS];
}

impl Superblock for Q8Super {
    const OFFSET: i32 = 128;

    #[inline(always)]
    fn code(&self, l: usize, e: usize) -> u8 {
        self.codes[e / 4][4 * l + e % 4]
    }

    fn steps(&self) -> [i8; SUPER_WEIGHTS] {
        let mut steps = [0i8; SUPER_WEIGHTS];
        for (g, line) in self.codes.iter().enumerate() {
            for (l, codes) in line.chunks_exact(4).enumerate() {
                for (k, &c) in codes.iter().enumerate() {
                    steps[32 * l + 4 * g + k] = (c ^ 0x80) as i8;
                }
            }
        }
        steps
    }
}

impl Superblock for Q4Super {
    const OFFSET: i32 = 8;

    #[inline(always)]
    fn code(&self, l: usize, e: usize) -> u8 {
        let (g, k) = (e / 4, e % 4);
        let byte = self.nibbles[g / 2][4 * l + k];
        if g % 2 == 0 { byte & 0x0f } else { byte >> 4 }
    }

    fn steps(&self) -> [i8; SUPER_WEIGHTS] {
        let mut steps = [0i8; SUPER_WEIGHTS];
        for (pair, line) in self.nibbles.iter().enumerate() {
            for (l, bytes) in line.chunks_exact(4).enumerate() {
                for (k, &b) in bytes.iter().enumerate() {
                    let e = 32 * l + 8 * pair + k;
                    steps[e] = (b & 0x0f) as i8 - 8;
                    steps[e + 4] = (b >> 4) as i8 - 8;
                }
            }
        }
        steps
    }
}

#[derive(Clone, Copy)]
pub(crate) struct F32Rows<'a>(pub &'a [f32]);

#[derive(Clone, Copy)]
pub(crate) struct Bf16Rows<'a>(pub &'a [u16]);

/// q8 or q4 rows: each tile of four rows as `per_row` [`Group`]s, tile after tile.
///
/// The groups put a tile's four rows side by side superblock by superblock, so a tile kernel
/// walks its weights in one ascending run instead of four streams 1152 bytes apart (a q8 row of
/// 1024 weights), the pattern the hardware prefetchers follow best. Measured 2026-12-01 (2
/// threads, AVX512-VNNI; rows interleaved superblock by superblock, each with its f32 scales):
/// `bench decode` q8 25.5–26.3 → 23.2–23.3 ms a step and q4 17.5–18.7 → 15.6–16.5 in
/// alternating pairs; from memory (`matvec_bench` over 4 × musicgen-small's shapes, more than
/// the L3) q4 15.1 → 16.8 GB/s of weights, q8 within noise (15–16); without software prefetch
/// the layout alone took q8 from 12.0 to 14.7 GB/s.
pub(crate) struct SuperRows<'a, S> {
    pub groups: &'a [Group<S>],
    pub per_row: usize,
}

// Not derived: those would ask for `S: Clone`, `S: Copy`.
impl<S> Clone for SuperRows<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for SuperRows<'_, S> {}

impl<'a, S> SuperRows<'a, S> {
    /// The groups of the tile holding row `o`.
    #[inline(always)]
    pub(crate) fn tile(&self, o: usize) -> &'a [Group<S>] {
        let first = o / 4 * self.per_row;
        &self.groups[first..first + self.per_row]
    }
}

impl RowFormat for F32Rows<'_> {
    #[inline(always)]
    fn get(&self, d_in: usize, o: usize, i: usize) -> f32 {
        self.0[Self::slot(d_in, o, i)]
    }
}

impl RowFormat for Bf16Rows<'_> {
    #[inline(always)]
    fn get(&self, d_in: usize, o: usize, i: usize) -> f32 {
        bf16_to_f32(self.0[Self::slot(d_in, o, bf16_slot(d_in, i))])
    }

    /// Block by block, each block's slots read in order ([`tile_slot`], [`bf16_slot`]).
    fn row_into(&self, d_in: usize, o: usize, out: &mut [f32]) {
        let blocks = d_in / 32 * 32;
        let (tile, j) = (o / 4 * 4 * d_in, o % 4);
        for (b, out) in out[..blocks].chunks_exact_mut(32).enumerate() {
            let slots = &self.0[tile + b * 128 + j * 32..][..32];
            let (low, high) = out.split_at_mut(16);
            for ((low, high), pair) in low.iter_mut().zip(high).zip(slots.chunks_exact(2)) {
                (*low, *high) = (bf16_to_f32(pair[0]), bf16_to_f32(pair[1]));
            }
        }
        let rest = d_in - blocks;
        let slots = &self.0[tile + 4 * blocks + j * rest..][..rest];
        for (out, &slot) in out[blocks..].iter_mut().zip(slots) {
            *out = bf16_to_f32(slot);
        }
    }
}

/// Where bf16 stores weight `(o, i)`: the rows in tiles of 4 (`4 t..4 t + 4`, the last
/// padded with zero rows), and within a tile, block by block of 32 weights, the four rows'
/// blocks side by side, then the rows' last `d_in % 32` weights one row after the other. A tile
/// kernel, which takes a block of all four rows at once, then reads its weights in one ascending
/// run (256 or 512 bytes a block) where row-major rows were four streams `d_in` weights apart.
/// Within a block and in the rest, a row's weights are consecutive (bf16 then permutes each
/// block: [`bf16_slot`]).
///
/// On an AVX2 EPYC (2 threads, `matvec_bench --only streamed` over musicgen-small's decoder
/// shapes, alternating builds, ms a pass): bf16 61.2 / 59.6 / 54.2 / 49.5 / 50.5 / 55.0 →
/// 50.2 / 48.9 / 49.1 / 40.5 / 45.4 / 39.3. f32 was slower in tiles and stays row-major
/// ([`FloatSlots`]).
#[inline(always)]
pub(crate) fn tile_slot(d_in: usize, o: usize, i: usize) -> usize {
    let blocks = d_in / 32 * 32;
    let (tile, j) = (o / 4 * 4 * d_in, o % 4);
    if i < blocks {
        tile + i / 32 * 128 + j * 32 + i % 32
    } else {
        tile + 4 * blocks + j * (d_in - blocks) + (i - blocks)
    }
}

/// Row `j` (0..4) of a tile (`bits`: the tile's `4 d_in` slots) as bf16, block by block, where
/// [`tile_slot`] and [`bf16_slot`] place each weight: in a whole block of 32, weights `k` and
/// `16 + k` side by side; the row's last `d_in % 32` weights in order.
fn bf16_row_into_tile(d_in: usize, j: usize, row: &[f32], bits: &mut [u16]) {
    let blocks = d_in / 32 * 32;
    for (b, block) in row[..blocks].chunks_exact(32).enumerate() {
        let slots = &mut bits[b * 128 + j * 32..][..32];
        let (low, high) = block.split_at(16);
        for ((pair, &low), &high) in slots.chunks_exact_mut(2).zip(low).zip(high) {
            pair[0] = f32_to_bf16(low);
            pair[1] = f32_to_bf16(high);
        }
    }
    let rest = d_in - blocks;
    for (slot, &v) in bits[4 * blocks + j * rest..][..rest]
        .iter_mut()
        .zip(&row[blocks..])
    {
        *slot = f32_to_bf16(v);
    }
}

/// Where a bf16 row stores its weight `i`: each whole block of 32 interleaves its halves, weight
/// `b + k` in slot `b + 2k` and `b + 16 + k` in slot `b + 2k + 1` (`k < 16`), so that one vector
/// load widens into the weights at `i` and at `i + 16` by a shift and a mask, where contiguous
/// bf16 took a zero-extension and a shift per 16 (the kernels' two busiest ports); the row's
/// last `d_in % 32` weights are stored in order.
#[inline(always)]
pub(crate) fn bf16_slot(d_in: usize, i: usize) -> usize {
    if i < d_in / 32 * 32 {
        let (b, k) = (i / 32 * 32, i % 32);
        b + if k < 16 { 2 * k } else { 2 * (k - 16) + 1 }
    } else {
        i
    }
}

impl<S: Superblock> RowFormat for SuperRows<'_, S> {
    #[inline(always)]
    fn get(&self, _d_in: usize, o: usize, i: usize) -> f32 {
        let group = &self.tile(o)[i / SUPER_WEIGHTS];
        let (l, e) = (i % SUPER_WEIGHTS / 32, i % 32);
        let scale = f16_to_f32(group.scales[o % 4][l]);
        (group.rows[o % 4].code(l, e) as i32 - S::OFFSET) as f32 * scale
    }

    /// The storage read in order ([`Superblock::steps`]), each block's scale converted once
    /// (`get` converts one per weight and computes each code's place).
    fn row_into(&self, _d_in: usize, o: usize, out: &mut [f32]) {
        for (group, out) in self.tile(o).iter().zip(out.chunks_mut(SUPER_WEIGHTS)) {
            let steps = group.rows[o % 4].steps();
            for ((out, steps), &scale) in out
                .chunks_mut(32)
                .zip(steps.chunks_exact(32))
                .zip(&group.scales[o % 4])
            {
                let scale = f16_to_f32(scale);
                for (out, &step) in out.iter_mut().zip(steps) {
                    *out = step as f32 * scale;
                }
            }
        }
    }
}

/// Dot products of four weight rows with two input rows: `out[r][j] = w[rows[j]] · x[r]`.
pub(crate) struct Tile<'a, W> {
    pub w: W,
    pub d_in: usize,
    pub rows: [usize; 4],
    pub x: [&'a [f32]; 2],
}

/// The integer kernels' tile: four weight rows of one tile's groups and two quantized input
/// rows (`out[r][j] = row rows[j] of w · x[r]`), all of one length (the x86 kernels rely on it).
pub(crate) struct IntTile<'a, S> {
    pub w: &'a [Group<S>],
    /// Rows within the tile (0..4); a short last tile repeats its last row.
    pub rows: [usize; 4],
    pub x: [&'a [XSuper]; 2],
}

/// The sum of the 16 lanes as every integer kernel adds them: lane `l` and `l + 8`, then `l`
/// and `l + 4`, then `l` and `l + 2`, then the last two.
#[inline(always)]
pub(crate) fn reduce16(v: [f32; SUPER_BLOCKS]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|l| v[l] + v[l + 8]);
    let b: [f32; 4] = std::array::from_fn(|l| a[l] + a[l + 4]);
    let c: [f32; 2] = std::array::from_fn(|l| b[l] + b[l + 2]);
    c[0] + c[1]
}

/// Run `$body` with `$w` bound to the [`RowFormat`] of `$packed` (a `&Packed`).
macro_rules! with_rows {
    ($packed:expr, $d_in:expr, |$w:ident| $body:expr) => {
        match $packed {
            Packed::F32(v) => {
                let $w = F32Rows(v);
                $body
            }
            Packed::Bf16(v) => {
                let $w = Bf16Rows(v);
                $body
            }
            Packed::Q8(supers) => {
                let $w = SuperRows {
                    groups: supers,
                    per_row: $d_in.div_ceil(SUPER_WEIGHTS),
                };
                $body
            }
            Packed::Q4(supers) => {
                let $w = SuperRows {
                    groups: supers,
                    per_row: $d_in.div_ceil(SUPER_WEIGHTS),
                };
                $body
            }
        }
    };
}

impl HostMatrix {
    /// Pack `values` (row-major `[d_out, d_in]`, PyTorch's `nn.Linear` layout) as `format`,
    /// in the huge-page chunks the weights share ([`Pages::copy_of`]).
    pub fn pack(values: &[f32], d_in: usize, d_out: usize, format: WeightFormat) -> Self {
        Self::pack_placed(
            values,
            (d_in, d_out),
            format,
            Placement::Shared,
            Reads::Cached,
        )
    }

    /// [`Self::pack`] for products that read the weights as `reads` says.
    pub fn pack_read_as(
        values: &[f32],
        d_in: usize,
        d_out: usize,
        format: WeightFormat,
        reads: Reads,
    ) -> Self {
        Self::pack_placed(values, (d_in, d_out), format, Placement::Shared, reads)
    }

    /// [`Self::pack_read_as`] `Reads::Streamed` in an allocation of its own ([`Pages::copy_apart`]): for a
    /// short-lived matrix (a prompt's fold, read once a decode step), whose bytes the shared
    /// chunks would keep until every buffer carved beside them is dropped.
    pub(crate) fn pack_apart(
        values: &[f32],
        d_in: usize,
        d_out: usize,
        format: WeightFormat,
    ) -> Self {
        Self::pack_placed(
            values,
            (d_in, d_out),
            format,
            Placement::Apart,
            Reads::Streamed,
        )
    }

    fn pack_placed(
        values: &[f32],
        (d_in, d_out): (usize, usize),
        format: WeightFormat,
        place: Placement,
        reads: Reads,
    ) -> Self {
        assert_eq!(values.len(), d_in * d_out, "weight length");
        let packed = match format {
            WeightFormat::F32 => Packed::F32(place.place(values)),
            WeightFormat::Bf16 => {
                // The last tile's padding rows stay zero. Tile by tile, over rayon's threads.
                let mut bits = vec![0u16; d_out.next_multiple_of(4) * d_in];
                let tile = (4 * d_in).max(1);
                bits.par_chunks_mut(tile)
                    .zip(values.par_chunks(tile))
                    .for_each(|(bits, rows)| {
                        for (j, row) in rows.chunks_exact(d_in).enumerate() {
                            bf16_row_into_tile(d_in, j, row, bits);
                        }
                    });
                Packed::Bf16(place.place(&bits))
            }
            WeightFormat::Q8 => Packed::Q8(place.place(&pack_q8(values, d_in, d_out))),
            WeightFormat::Q4 => Packed::Q4(place.place(&pack_q4(values, d_in, d_out))),
        };
        Self {
            packed,
            d_in,
            d_out,
            reads,
        }
    }

    /// How its products meet the weights (set when packed).
    pub fn reads(&self) -> Reads {
        self.reads
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }

    pub fn d_out(&self) -> usize {
        self.d_out
    }

    pub fn format(&self) -> WeightFormat {
        match self.packed {
            Packed::F32(_) => WeightFormat::F32,
            Packed::Bf16(_) => WeightFormat::Bf16,
            Packed::Q8 { .. } => WeightFormat::Q8,
            Packed::Q4 { .. } => WeightFormat::Q4,
        }
    }

    /// The weights as f32, row-major `[d_out, d_in]` (what the kernels multiply by).
    pub fn unpack(&self) -> Vec<f32> {
        let (d_in, d_out) = (self.d_in, self.d_out);
        let mut values = vec![0f32; d_out * d_in];
        values
            .par_chunks_mut(d_in.max(1))
            .enumerate()
            .for_each(|(o, row)| self.unpack_rows(o..o + 1, row));
        values
    }

    /// Rows `rows` of what [`Self::unpack`] gives, into `out` (`rows.len() × d_in`).
    pub(crate) fn unpack_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let d_in = self.d_in;
        with_rows!(&self.packed, d_in, |w| {
            for (o, row) in rows.zip(out.chunks_exact_mut(d_in.max(1))) {
                w.row_into(d_in, o, row);
            }
        })
    }

    /// `y = x Wᵀ (+ bias)` for `x` of `rows` rows of `d_in`; `y` has `rows` rows of `d_out`.
    pub fn matmul(&self, x: &[f32], rows: usize, bias: Option<&[f32]>) -> Vec<f32> {
        self.matmul_with(Kernel::detect(), x, rows, bias)
    }

    /// [`Self::matmul`] with an explicit kernel.
    ///
    /// # Panics
    /// If `kernel` is not available on this CPU, or the lengths do not match.
    pub fn matmul_with(
        &self,
        kernel: Kernel,
        x: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        self.matmul_then(kernel, x, rows, bias, None)
    }

    /// [`Self::matmul_with`], then `then` on every output value (an element-wise activation,
    /// whose result must not depend on where in a slice a value is): applied by each work item
    /// to its own outputs, after their bias, on the thread that computed them, while the other
    /// threads' weights still stream (a decode step's GELU, 24 × 2 rows of 4096, ran on one
    /// thread after the product, the other idle).
    ///
    /// # Panics
    /// As [`Self::matmul_with`].
    pub fn matmul_then(
        &self,
        kernel: Kernel,
        x: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        then: Option<&Epilogue<'_>>,
    ) -> Vec<f32> {
        assert!(
            kernel.is_available(),
            "{} kernel on this CPU",
            kernel.name()
        );
        assert_eq!(x.len(), rows * self.d_in, "input length");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.d_out, "bias length");
        }
        if rows == 0 || self.d_out == 0 {
            return Vec::new();
        }
        let d_in = self.d_in;
        // Per row, over a whole tile: the integer formats pad to tiles of 4 rows.
        let row_bytes = self.format().matrix_bytes(4, d_in) / 4;
        let chunk = chunk_rows(self.d_out, row_bytes.max(1));
        // A work item's outputs (`[n, rows]` from output row `first`): the bias, then `then`.
        let finish = |first: usize, out: &mut [f32]| {
            if let Some(bias) = bias {
                for (column, &b) in out.chunks_exact_mut(rows).zip(&bias[first..]) {
                    column.iter_mut().for_each(|v| *v += b);
                }
            }
            if let Some(then) = then {
                then(out);
            }
        };
        let run = |tile: &(dyn Fn([usize; 4], usize, usize) -> [[f32; 4]; 2] + Sync)| {
            products(self.d_out, rows, chunk, tile, &finish)
        };
        let reads = self.reads;
        let transposed = match &self.packed {
            Packed::F32(v) => {
                let w = F32Rows(v);
                run(&|rows, r0, r1| float_tile(kernel, reads, w, d_in, rows, x, r0, r1))
            }
            Packed::Bf16(v) => {
                let w = Bf16Rows(v);
                run(&|rows, r0, r1| float_tile(kernel, reads, w, d_in, rows, x, r0, r1))
            }
            Packed::Q8(supers) => {
                let (w, xq) = self.int_operands(supers, x, rows);
                let few = rows <= 2;
                run(&|rows, r0, r1| int_tile(kernel, w, &xq, rows, r0, r1, few))
            }
            Packed::Q4(supers) => {
                let (w, xq) = self.int_operands(supers, x, rows);
                let few = rows <= 2;
                run(&|rows, r0, r1| int_tile(kernel, w, &xq, rows, r0, r1, few))
            }
        };
        if rows == 1 {
            return transposed;
        }
        let mut y = vec![0f32; rows * self.d_out];
        for (o, column) in transposed.chunks_exact(rows).enumerate() {
            for (r, &v) in column.iter().enumerate() {
                y[r * self.d_out + o] = v;
            }
        }
        y
    }

    /// The superblock rows and the quantized inputs of an integer product.
    fn int_operands<'a, S>(
        &self,
        groups: &'a [Group<S>],
        x: &[f32],
        rows: usize,
    ) -> (SuperRows<'a, S>, Vec<XSuper>) {
        let per_row = self.d_in.div_ceil(SUPER_WEIGHTS);
        (
            SuperRows { groups, per_row },
            quantize_rows(x, rows, self.d_in),
        )
    }
}

/// Where [`HostMatrix::pack_placed`] copies a format's storage.
#[derive(Clone, Copy)]
enum Placement {
    /// [`Pages::copy_of`]: the huge-page chunks the model's weights share.
    Shared,
    /// [`Pages::copy_apart`]: an allocation of its own.
    Apart,
}

impl Placement {
    fn place<T: Copy>(self, values: &[T]) -> Pages<T> {
        match self {
            Placement::Shared => Pages::copy_of(values),
            Placement::Apart => Pages::copy_apart(values),
        }
    }
}

/// Blocks of 32 weights into groups: per block, `scale(block)` is its exact scale, stored as an
/// f16 rounded up in magnitude ([`f16_scale`]), and `store(codes, l, steps)` writes block `l`'s
/// weights, `steps[e] = w_e / scale` (0 for a zero scale, and past a row's short last block,
/// which is weight 0); rows and tiles past the matrix keep `zero`'s codes (weight 0). A block
/// at a time, its codes written a byte at a time: the prompt's cross-attention folds
/// ([`crate::decoder`]'s `CrossFold`) are packed at every prompt change.
fn pack_blocks<S: Copy + Send + Sync>(
    values: &[f32],
    (d_in, d_out): (usize, usize),
    zero: S,
    scale: impl Fn(&[f32]) -> f32 + Sync,
    store: impl Fn(&mut S, usize, &[f32; 32]) + Sync,
) -> Vec<Group<S>> {
    let per_row = d_in.div_ceil(SUPER_WEIGHTS);
    let zero = Group {
        scales: [[0; SUPER_BLOCKS]; 4],
        rows: [zero; 4],
    };
    let mut groups = vec![zero; d_out.div_ceil(4) * per_row];
    // Tile by tile (4 rows each), over rayon's threads.
    let rows = values
        .chunks_exact(d_in.max(1))
        .take(d_out)
        .collect::<Vec<_>>();
    groups
        .par_chunks_mut(per_row.max(1))
        .zip(rows.par_chunks(4))
        .for_each(|(tile, rows)| {
            for (j, row) in rows.iter().enumerate() {
                for (b, block) in row.chunks(32).enumerate() {
                    let (bits, scale) = f16_scale(scale(block));
                    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
                    let group = &mut tile[b / SUPER_BLOCKS];
                    let l = b % SUPER_BLOCKS;
                    group.scales[j][l] = bits;
                    let mut steps = [0f32; 32];
                    for (step, &v) in steps.iter_mut().zip(block) {
                        *step = v * inverse;
                    }
                    store(&mut group.rows[j], l, &steps);
                }
            }
        });
    groups
}

/// A block's steps rounded as [`crate::nn::round_to_i32`] rounds them (half away from zero,
/// NaN to 0), then clamped to `lo..=hi` (whole numbers): the same codes, with the clamp and the
/// truncation in f32 and one plain conversion, which vectorizes where `as i32`'s saturating one
/// kept the packers at a value at a time (about 2.3 ns a weight on the Zen 5 EPYC's two threads:
/// a prompt change packs its cross-attention folds, [`crate::decoder`]'s `CrossFold`).
#[inline(always)]
fn round_steps(steps: &[f32; 32], (lo, hi): (f32, f32)) -> [i32; 32] {
    use crate::nn::BELOW_HALF;
    let mut out = [0i32; 32];
    for (out, &step) in out.iter_mut().zip(steps) {
        // Truncating after the clamp gives what clamping after the truncation gave, `lo` and
        // `hi` being whole.
        let t = (step + BELOW_HALF.copysign(step)).clamp(lo, hi);
        let t = if t.is_nan() { 0.0 } else { t };
        // SAFETY: `t` is finite and within `lo..=hi`, which i32 holds.
        *out = unsafe { t.to_int_unchecked::<i32>() };
    }
    out
}

/// llama.cpp's Q8_0: `scale = max |w| / 127` (as an f16, rounded up), codes `round(w / scale)`
/// (ties away from zero).
fn pack_q8(values: &[f32], d_in: usize, d_out: usize) -> Vec<Group<Q8Super>> {
    const _: () = assert!(Q8_BLOCK == 32);
    let zero = Q8Super {
        codes: [[128; 64]; 8], // 128 is weight 0: the padding
    };
    let max_abs = |block: &[f32]| abs_max(block) / 127.0;
    pack_blocks(values, (d_in, d_out), zero, max_abs, |sup, l, steps| {
        let mut block = [0u8; 32];
        for (code, step) in block.iter_mut().zip(round_steps(steps, (-127.0, 127.0))) {
            *code = (step as i8 as u8) ^ 0x80;
        }
        // Bytes `4 l..4 l + 4` of `codes[g]`: weights `4 g..4 g + 4` of block `l`.
        for (codes, four) in sup.codes.iter_mut().zip(block.chunks_exact(4)) {
            codes[4 * l..][..4].copy_from_slice(four);
        }
    })
}

/// Q4_0's scale of `values`: the value of largest magnitude `m` (the first, of equal
/// magnitudes) over −8, so `m` is −8 steps exactly and the other values round to the nearest of
/// the 16 steps −8..=7 (a value of the other sign and over 7.5 steps clamps to 7); 0 for zeros.
/// The 4-bit weights and the 4-bit key/value cache both take it.
pub(crate) fn q4_scale(values: &[f32]) -> f32 {
    // The largest magnitude over 16 independent lanes (vector maxima, where one fold over the
    // values is a chain of dependent compares: the 4-bit cache takes this for every head's key
    // and value at every step), then the first value of that magnitude. NaNs are passed over,
    // as `f32::max` passes them.
    let max = abs_max(values);
    let extreme = if max == 0.0 {
        0.0
    } else {
        values
            .iter()
            .copied()
            .find(|v| v.abs() == max)
            .unwrap_or(0.0)
    };
    extreme / -8.0
}

/// `max |v|` over `values` (0 for none; NaNs passed over), over 16 independent lanes.
pub(crate) fn abs_max(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v.abs());
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(0f32, |m, v| m.max(v.abs()))
}

/// Q4_0 as llama.cpp quantizes it: the block's weight of largest magnitude `m` sets the scale
/// `−m / 8` (as an f16, rounded up in magnitude), so `m` itself is code 0 (−8 steps) and every
/// other weight rounds to the nearest of the 16 steps (codes clamped to 0..=15).
fn pack_q4(values: &[f32], d_in: usize, d_out: usize) -> Vec<Group<Q4Super>> {
    const _: () = assert!(Q4_BLOCK == 32);
    let zero = Q4Super {
        nibbles: [[0x88; 64]; 4], // 8 is weight 0: the padding
    };
    pack_blocks(values, (d_in, d_out), zero, q4_scale, |sup, l, steps| {
        let mut block = [0u8; 32];
        for (code, step) in block.iter_mut().zip(round_steps(steps, (-8.0, 7.0))) {
            *code = (step + 8) as u8;
        }
        // Byte `4 l + k` of `nibbles[v]`: weight `4 · 2v + k` of block `l` (group `2 v`) in its
        // low bits, weight `4 · (2v + 1) + k` (group `2 v + 1`) in its high bits.
        for (bytes, eight) in sup.nibbles.iter_mut().zip(block.chunks_exact(8)) {
            for (k, byte) in bytes[4 * l..][..4].iter_mut().enumerate() {
                *byte = eight[k] | eight[4 + k] << 4;
            }
        }
    })
}

/// What [`HostMatrix::matmul_then`] applies to each work item's outputs (in place).
pub type Epilogue<'a> = dyn Fn(&mut [f32]) + Sync + 'a;

/// Output rows per work item: about [`CHUNK_BYTES`] of weights, a multiple of 4 rows (a tile),
/// and a piece count that is a multiple of the thread count, so that no thread is left with one
/// more piece than the other at the end of a product (a 320 KB q4 matrix in 64 KB pieces would
/// be 5 pieces on 2 threads: 3 on one, 2 on the other).
fn chunk_rows(d_out: usize, row_bytes: usize) -> usize {
    let pieces = (d_out * row_bytes)
        .div_ceil(CHUNK_BYTES)
        .next_multiple_of(rayon::current_num_threads().max(1));
    d_out.div_ceil(pieces).max(4).next_multiple_of(4)
}

/// `x Wᵀ` transposed, `[d_out, rows]`, so each work item (`chunk` weight rows) writes one
/// contiguous slice. `tile(rows, r0, r1)` is the dot products of four weight rows with input
/// rows `r0` and `r1` (`r1 = r0` for a last odd row); `finish(first, out)` then takes each work
/// item's outputs (from output row `first`).
fn products(
    d_out: usize,
    rows: usize,
    chunk: usize,
    tile: &(dyn Fn([usize; 4], usize, usize) -> [[f32; 4]; 2] + Sync),
    finish: &(dyn Fn(usize, &mut [f32]) + Sync),
) -> Vec<f32> {
    let mut transposed = vec![0f32; d_out * rows];
    transposed
        .par_chunks_mut(chunk * rows)
        .enumerate()
        .for_each(|(c, out)| {
            let first = c * chunk;
            let n = out.len() / rows;
            // Every pair of input rows takes a tile while it is in L1 (a slide's paired step has
            // two pairs, a prefill dozens).
            for t in (0..n).step_by(4) {
                for r in (0..rows).step_by(2) {
                    let r1 = if r + 1 < rows { r + 1 } else { r };
                    // A short last tile repeats its last row; the repeats are not stored.
                    let dots = tile(std::array::from_fn(|j| first + t + j.min(n - t - 1)), r, r1);
                    for j in 0..4.min(n - t) {
                        out[(t + j) * rows + r] = dots[0][j];
                        if r + 1 < rows {
                            out[(t + j) * rows + r + 1] = dots[1][j];
                        }
                    }
                }
            }
            finish(first, out);
        });
    transposed
}

/// `reads` picks the tile's width on AVX-512 ([`Reads`]).
#[allow(clippy::too_many_arguments)]
fn float_tile<W: FloatRows>(
    kernel: Kernel,
    #[cfg_attr(not(target_arch = "x86_64"), expect(unused_variables))] reads: Reads,
    w: W,
    d_in: usize,
    rows: [usize; 4],
    x: &[f32],
    r0: usize,
    r1: usize,
) -> [[f32; 4]; 2] {
    // `products` starts every tile at a multiple of 4 rows; the vector kernels read the four
    // rows from the first row's slot (`FloatSlots`).
    assert!(
        rows[0].is_multiple_of(4) && rows.iter().all(|&o| o / 4 == rows[0] / 4),
        "rows {rows:?} are not one tile"
    );
    let tile = Tile {
        w,
        d_in,
        rows,
        x: [
            &x[r0 * d_in..(r0 + 1) * d_in],
            &x[r1 * d_in..(r1 + 1) * d_in],
        ],
    };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that the CPU has the kernel's instruction set.
        Kernel::Avx512 | Kernel::Avx512Vnni if reads == Reads::Cached || !W::NARROW_STREAMED => unsafe {
            x86::tile_avx512(&tile)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (AVX-VNNI implies our check of AVX2 and FMA; AVX-512 here implies
        // them too: `Kernel::is_available`).
        Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512 | Kernel::Avx512Vnni => unsafe {
            x86::tile_avx2(&tile)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline.
        Kernel::Neon => unsafe { neon::tile_neon(&tile) },
        _ => portable::tile(&tile),
    }
}

/// `few`: the product has one or two input rows (each weight is read for one tile call), which
/// picks the AVX512-VNNI machine's tile width for q8 (`x86::int_tile_avx512`).
fn int_tile<S: Superblock>(
    kernel: Kernel,
    w: SuperRows<'_, S>,
    xq: &[XSuper],
    rows: [usize; 4],
    r0: usize,
    r1: usize,
    #[cfg_attr(not(target_arch = "x86_64"), expect(unused_variables))] few: bool,
) -> [[f32; 4]; 2] {
    let per_row = w.per_row;
    // `products` starts every tile at a multiple of 4 rows: the four lie in one group.
    debug_assert!(
        rows.iter().all(|&o| o / 4 == rows[0] / 4),
        "rows {rows:?} span tiles"
    );
    let tile = IntTile {
        w: w.tile(rows[0]),
        rows: rows.map(|o| o % 4),
        x: [
            &xq[r0 * per_row..(r0 + 1) * per_row],
            &xq[r1 * per_row..(r1 + 1) * per_row],
        ],
    };
    // Every row of the tile has `per_row` superblocks (the x86 kernels' contract).
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that the CPU has the kernel's instruction set; the rows
        // have one length (above).
        Kernel::Avx512Vnni => unsafe { x86::int_tile_avx512(&tile, few) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::AvxVnni => unsafe { x86::int_tile_avxvnni(&tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; `Avx512` is available only with AVX2 (checked with it).
        Kernel::Avx2 | Kernel::Avx512 => unsafe { x86::int_tile_avx2(&tile) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline.
        Kernel::Neon => unsafe { neon::int_tile_neon(&tile) },
        _ => portable::int_tile(&tile),
    }
}

/// Round to nearest, ties to even (as PyTorch's `.to(torch.bfloat16)`); NaN stays NaN.
pub(crate) fn f32_to_bf16(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

#[inline(always)]
pub(crate) fn bf16_to_f32(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}
