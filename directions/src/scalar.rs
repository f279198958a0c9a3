//! The floating-point types an RFM can be fitted in (`f32` for speed, `f64` for parity tests).

use faer::traits::RealField;

/// A real scalar the RFM runs in: `f32` or `f64`.
pub trait Real:
    RealField + Copy + Send + Sync + Default + std::fmt::Debug + std::fmt::Display + 'static
{
    /// The safetensors dtype this scalar is saved as.
    const DTYPE: safetensors::Dtype;
    /// Size in bytes.
    const BYTES: usize;
    fn from_f64(value: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The slice itself where `Self` is `f32`, for code written for f32 lanes.
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]>;
    /// Little-endian bytes of a slice (safetensors payload).
    fn slice_to_le_bytes(values: &[Self]) -> Vec<u8>;
}

impl Real for f32 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F32;
    const BYTES: usize = 4;
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]> {
        Some(values)
    }
    fn slice_to_le_bytes(values: &[Self]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

impl Real for f64 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F64;
    const BYTES: usize = 8;
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn slice_to_le_bytes(values: &[Self]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}
