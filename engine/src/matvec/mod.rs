//! Matrix × few-rows products on the host, for the decoder's linear layers on the CPU.
//!
//! A decode step multiplies every weight matrix by two rows (the two classifier-free-guidance
//! branches) or one: a matrix–vector product, bound by how fast the weights stream from memory.
//! A general matmul (burn-flex drives `gemm`) packs and tiles for large products and reached a
//! third of the bandwidth floor on the bench machine (issue 13). This kernel reads each weight
//! once for both rows, in the format chosen at load ([`WeightFormat`]: f32, bf16 widened in
//! registers, 8-bit with one f32 scale per 32 weights as llama.cpp's Q8_0, or 4-bit with one
//! f32 scale per 32 weights as its Q4_0), accumulates in
//! f32, and splits the output rows over rayon's threads. burn's own quantized tensors were not
//! measured against it: they would still go through a general matmul per CFG pair, which is
//! what the f32 path had to leave first.
//!
//! Many rows (a prompt's cross-attention keys, an audio prompt's prefill) take the same path:
//! the output rows are cut into chunks of about [`CHUNK_BYTES`] of weights, which stay in the
//! core's L2 while every pair of input rows passes over them, so the weights still come from
//! memory once.
//!
//! Instruction sets are chosen at run time ([`Kernel::detect`]): AVX-512F, AVX2 + FMA, NEON on
//! aarch64, or portable Rust (any target).

#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Q8 weights per scale (llama.cpp's Q8_0 block).
pub const Q8_BLOCK: usize = 32;

/// Q4 weights per scale (llama.cpp's Q4_0 block): 16 bytes, weight j of the block in the low
/// nibble of byte j and weight 16 + j in its high nibble, so one 16-byte load widens to the
/// block's first 16 weights (masked) and its last 16 (shifted).
pub const Q4_BLOCK: usize = 32;

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
    /// ≈ 1.125 bytes per weight: i8 with one f32 scale per [`Q8_BLOCK`] weights of a row.
    Q8,
    /// ≈ 0.625 bytes per weight: 4-bit codes 0..=15 standing for −8..=7 steps of one f32 scale
    /// per [`Q4_BLOCK`] weights of a row.
    Q4,
}

impl WeightFormat {
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

    /// Bytes a `[d_out, d_in]` matrix takes in this format.
    pub fn matrix_bytes(self, d_out: usize, d_in: usize) -> usize {
        match self {
            WeightFormat::F32 => 4 * d_out * d_in,
            WeightFormat::Bf16 => 2 * d_out * d_in,
            WeightFormat::Q8 => d_out * (d_in + 4 * d_in.div_ceil(Q8_BLOCK)),
            WeightFormat::Q4 => d_out * d_in.div_ceil(Q4_BLOCK) * (Q4_BLOCK / 2 + 4),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Portable,
    /// AVX2 and FMA (x86-64).
    Avx2,
    /// AVX-512F (x86-64).
    Avx512,
    /// NEON (aarch64, where it is baseline).
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU runs, detected once.
    pub fn detect() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            [Kernel::Avx512, Kernel::Avx2, Kernel::Neon]
                .into_iter()
                .find(|k| k.is_available())
                .unwrap_or(Kernel::Portable)
        })
    }

    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512 => false,
            Kernel::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2+fma",
            Kernel::Avx512 => "avx512f",
            Kernel::Neon => "neon",
        }
    }
}

/// The packed values of a [`HostMatrix`], row-major `[d_out, d_in]`.
#[derive(Debug, Clone)]
enum Packed {
    F32(Vec<f32>),
    /// The upper halves of the f32 bit patterns.
    Bf16(Vec<u16>),
    /// `values[o * d_in + i]`, scaled by `scales[o * blocks + i / Q8_BLOCK]`.
    Q8 {
        values: Vec<i8>,
        scales: Vec<f32>,
    },
    /// Row `o` is `blocks` blocks of 16 bytes ([`Q4_BLOCK`] nibbles; a short last block is
    /// padded with zero weights), weight `(o, i)` being
    /// `(nibble − 8) · scales[o * blocks + i / Q4_BLOCK]`.
    Q4 {
        nibbles: Vec<u8>,
        scales: Vec<f32>,
    },
}

/// One row-major `[d_out, d_in]` weight matrix in host memory, in a [`WeightFormat`].
#[derive(Debug, Clone)]
pub struct HostMatrix {
    packed: Packed,
    d_in: usize,
    d_out: usize,
}

/// One format's packed rows, as the kernels read them.
pub(crate) trait RowFormat: Copy + Sync + ArchLoads {
    /// Weight `(o, i)` as f32; `d_in` is the row length.
    fn get(&self, d_in: usize, o: usize, i: usize) -> f32;
}

#[cfg(target_arch = "aarch64")]
use neon::Widen as ArchLoads;
#[cfg(target_arch = "x86_64")]
use x86::Widen as ArchLoads;

/// The vector loads a format needs on this architecture: none beyond [`RowFormat::get`].
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) trait ArchLoads {}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl<T> ArchLoads for T {}

#[derive(Clone, Copy)]
pub(crate) struct F32Rows<'a>(pub &'a [f32]);

#[derive(Clone, Copy)]
pub(crate) struct Bf16Rows<'a>(pub &'a [u16]);

#[derive(Clone, Copy)]
pub(crate) struct Q8Rows<'a> {
    pub values: &'a [i8],
    pub scales: &'a [f32],
    /// Scales per row.
    pub blocks: usize,
}

#[derive(Clone, Copy)]
pub(crate) struct Q4Rows<'a> {
    pub nibbles: &'a [u8],
    pub scales: &'a [f32],
    /// Blocks (scales, and 16-byte groups) per row.
    pub blocks: usize,
}

impl Q4Rows<'_> {
    /// Index of the byte holding weight `(o, i)`, and whether it is the high nibble.
    #[inline(always)]
    pub(crate) fn byte(&self, o: usize, i: usize) -> (usize, bool) {
        let in_block = i % Q4_BLOCK;
        (
            (o * self.blocks + i / Q4_BLOCK) * (Q4_BLOCK / 2) + in_block % (Q4_BLOCK / 2),
            in_block >= Q4_BLOCK / 2,
        )
    }
}

impl RowFormat for F32Rows<'_> {
    #[inline(always)]
    fn get(&self, d_in: usize, o: usize, i: usize) -> f32 {
        self.0[o * d_in + i]
    }
}

impl RowFormat for Bf16Rows<'_> {
    #[inline(always)]
    fn get(&self, d_in: usize, o: usize, i: usize) -> f32 {
        bf16_to_f32(self.0[o * d_in + i])
    }
}

impl RowFormat for Q8Rows<'_> {
    #[inline(always)]
    fn get(&self, d_in: usize, o: usize, i: usize) -> f32 {
        self.values[o * d_in + i] as f32 * self.scales[o * self.blocks + i / Q8_BLOCK]
    }
}

impl RowFormat for Q4Rows<'_> {
    #[inline(always)]
    fn get(&self, _d_in: usize, o: usize, i: usize) -> f32 {
        let (byte, high) = self.byte(o, i);
        let b = self.nibbles[byte];
        let nibble = if high { b >> 4 } else { b & 0x0f };
        (nibble as i32 - 8) as f32 * self.scales[o * self.blocks + i / Q4_BLOCK]
    }
}

/// Dot products of four weight rows with two input rows: `out[r][j] = w[rows[j]] · x[r]`.
pub(crate) struct Tile<'a, W> {
    pub w: W,
    pub d_in: usize,
    pub rows: [usize; 4],
    pub x: [&'a [f32]; 2],
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
            Packed::Q8 { values, scales } => {
                let $w = Q8Rows {
                    values,
                    scales,
                    blocks: $d_in.div_ceil(Q8_BLOCK),
                };
                $body
            }
            Packed::Q4 { nibbles, scales } => {
                let $w = Q4Rows {
                    nibbles,
                    scales,
                    blocks: $d_in.div_ceil(Q4_BLOCK),
                };
                $body
            }
        }
    };
}

impl HostMatrix {
    /// Pack `values` (row-major `[d_out, d_in]`, PyTorch's `nn.Linear` layout) as `format`.
    pub fn pack(values: &[f32], d_in: usize, d_out: usize, format: WeightFormat) -> Self {
        assert_eq!(values.len(), d_in * d_out, "weight length");
        let packed = match format {
            WeightFormat::F32 => Packed::F32(values.to_vec()),
            WeightFormat::Bf16 => Packed::Bf16(values.iter().map(|&v| f32_to_bf16(v)).collect()),
            WeightFormat::Q8 => {
                let blocks = d_in.div_ceil(Q8_BLOCK);
                let mut q = Vec::with_capacity(values.len());
                let mut scales = Vec::with_capacity(d_out * blocks);
                for row in values.chunks_exact(d_in.max(1)) {
                    for block in row.chunks(Q8_BLOCK) {
                        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let scale = max / 127.0;
                        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                        q.extend(block.iter().map(|v| (v * inverse).round() as i8));
                        scales.push(scale);
                    }
                }
                Packed::Q8 { values: q, scales }
            }
            WeightFormat::Q4 => pack_q4(values, d_in, d_out),
        };
        Self {
            packed,
            d_in,
            d_out,
        }
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
        with_rows!(&self.packed, d_in, |w| (0..d_out)
            .flat_map(|o| (0..d_in).map(move |i| w.get(d_in, o, i)))
            .collect())
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
        let row_bytes = self.format().matrix_bytes(1, self.d_in).max(1);
        let chunk = (CHUNK_BYTES / row_bytes).max(4).next_multiple_of(4);
        let transposed = with_rows!(&self.packed, self.d_in, |w| products(
            kernel, w, self.d_in, self.d_out, x, rows, chunk
        ));
        let mut y = vec![0f32; rows * self.d_out];
        for (o, column) in transposed.chunks_exact(rows).enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            for (r, v) in column.iter().enumerate() {
                y[r * self.d_out + o] = v + b;
            }
        }
        y
    }
}

/// Q4_0 as llama.cpp quantizes it: the block's weight of largest magnitude `m` sets the scale
/// `−m / 8`, so `m` itself is exactly code 0 (−8 steps) and every other weight rounds to the
/// nearest of the 16 steps (codes clamped to 0..=15).
fn pack_q4(values: &[f32], d_in: usize, d_out: usize) -> Packed {
    let blocks = d_in.div_ceil(Q4_BLOCK);
    let mut nibbles = vec![0u8; d_out * blocks * Q4_BLOCK / 2];
    let mut scales = Vec::with_capacity(d_out * blocks);
    for (o, row) in values.chunks_exact(d_in.max(1)).enumerate().take(d_out) {
        for (b, block) in row.chunks(Q4_BLOCK).enumerate() {
            let extreme = block
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let scale = extreme / -8.0;
            let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            let mut codes = [8u8; Q4_BLOCK]; // 8 is weight 0: the padding of a short block
            for (code, &v) in codes.iter_mut().zip(block) {
                *code = ((v * inverse).round() + 8.0).clamp(0.0, 15.0) as u8;
            }
            let start = (o * blocks + b) * (Q4_BLOCK / 2);
            for j in 0..Q4_BLOCK / 2 {
                nibbles[start + j] = codes[j] | (codes[j + Q4_BLOCK / 2] << 4);
            }
            scales.push(scale);
        }
    }
    Packed::Q4 { nibbles, scales }
}

/// `x Wᵀ` transposed, `[d_out, rows]`, so each work item (`chunk` weight rows) writes one
/// contiguous slice.
fn products<W: RowFormat>(
    kernel: Kernel,
    w: W,
    d_in: usize,
    d_out: usize,
    x: &[f32],
    rows: usize,
    chunk: usize,
) -> Vec<f32> {
    let mut transposed = vec![0f32; d_out * rows];
    transposed
        .par_chunks_mut(chunk * rows)
        .enumerate()
        .for_each(|(c, out)| {
            let first = c * chunk;
            let n = out.len() / rows;
            for r in (0..rows).step_by(2) {
                let x0 = &x[r * d_in..(r + 1) * d_in];
                let x1 = if r + 1 < rows {
                    &x[(r + 1) * d_in..(r + 2) * d_in]
                } else {
                    x0
                };
                for t in (0..n).step_by(4) {
                    // A short last tile repeats its last row; the repeats are not stored.
                    let tile = Tile {
                        w,
                        d_in,
                        rows: std::array::from_fn(|j| first + t + j.min(n - t - 1)),
                        x: [x0, x1],
                    };
                    let dots = run_tile(kernel, &tile);
                    for j in 0..4.min(n - t) {
                        out[(t + j) * rows + r] = dots[0][j];
                        if r + 1 < rows {
                            out[(t + j) * rows + r + 1] = dots[1][j];
                        }
                    }
                }
            }
        });
    transposed
}

fn run_tile<W: RowFormat>(kernel: Kernel, tile: &Tile<'_, W>) -> [[f32; 4]; 2] {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that the CPU has the kernel's instruction set.
        Kernel::Avx512 => unsafe { x86::tile_avx512(tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx2 => unsafe { x86::tile_avx2(tile) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline.
        Kernel::Neon => unsafe { neon::tile_neon(tile) },
        _ => portable::tile(tile),
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
