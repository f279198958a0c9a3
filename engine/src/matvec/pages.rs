//! Read-only buffers in 2 MiB pages, for the weights a decode step streams.
//!
//! A step reads every weight once, a few hundred MB in ascending runs. With 4 KiB pages that is
//! one TLB miss and one page walk per 4 KiB, and on the bench machine (Linux, transparent huge
//! pages in `madvise` mode, the default of most distributions) the memory delivered 20–21 GB/s
//! to a 1 GiB fold in 4 KiB pages against 36 GB/s in 2 MiB pages (2026-12-01, `bench decode`'s
//! probe with the kernel's THP switched to `always` and back). So the host matrices live in
//! chunks of [`CHUNK`] bytes aligned to 2 MiB and marked `MADV_HUGEPAGE` before their first
//! touch, carved one matrix after another in load order (no 2 MiB rounding per matrix). Where
//! the kernel gives no huge pages (other systems, THP `never`) they are ordinary memory.
//!
//! A chunk is freed when the last [`Pages`] carved from it is dropped; the next allocation then
//! starts a new chunk. Models loaded one after the other may share a chunk at their seam.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

/// Huge-page size and chunk alignment.
const HUGE: usize = 2 << 20;
/// Bytes per chunk (a larger buffer gets a chunk of its own, rounded up to [`HUGE`]).
const CHUNK: usize = 64 << 20;
/// Every buffer starts on a cache line (the integer formats' groups are 64-byte aligned).
const ALIGN: usize = 64;

/// One aligned allocation, shared by the buffers carved from it.
struct Chunk {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a chunk is raw memory; each byte is written once, by the `Pages::copy_of` that carved
// it (under `CURRENT`'s lock, before any reader exists), and only read afterwards.
unsafe impl Send for Chunk {}
// SAFETY: as above.
unsafe impl Sync for Chunk {}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `Chunk::new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

impl Chunk {
    /// `size` bytes (at least one line) on a cache line, in ordinary pages.
    fn apart(size: usize) -> Arc<Chunk> {
        let layout = Layout::from_size_align(size.max(ALIGN).next_multiple_of(ALIGN), ALIGN)
            .expect("a buffer size below isize::MAX");
        // SAFETY: the layout's size is non-zero.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Arc::new(Chunk { ptr, layout })
    }

    fn new(size: usize) -> Arc<Chunk> {
        let layout = Layout::from_size_align(size.next_multiple_of(HUGE), HUGE)
            .expect("a chunk size below isize::MAX");
        // SAFETY: the layout's size is non-zero.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        #[cfg(target_os = "linux")]
        // SAFETY: the range is this allocation's. A hint: an error (no THP support) only means
        // ordinary pages.
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
        Arc::new(Chunk { ptr, layout })
    }
}

/// The chunk being filled and its bytes in use.
static CURRENT: Mutex<(Weak<Chunk>, usize)> = Mutex::new((Weak::new(), 0));

/// An immutable `[T]` in huge-page chunks (see the module documentation).
pub struct Pages<T> {
    chunk: Arc<Chunk>,
    ptr: NonNull<T>,
    len: usize,
    _values: PhantomData<T>,
}

// SAFETY: `Pages` is an immutable `[T]` kept alive by its chunk.
unsafe impl<T: Sync> Sync for Pages<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Pages<T> {}

impl<T: Copy> Pages<T> {
    /// A copy of `values` (a type with at most [`ALIGN`]-byte alignment).
    pub fn copy_of(values: &[T]) -> Self {
        const { assert!(align_of::<T>() <= ALIGN) };
        let bytes = size_of_val(values);
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let (chunk, offset) = match current.0.upgrade() {
            Some(chunk) if current.1 + bytes <= chunk.layout.size() => (chunk, current.1),
            _ => (Chunk::new(bytes.max(CHUNK)), 0),
        };
        *current = (
            Arc::downgrade(&chunk),
            (offset + bytes).next_multiple_of(ALIGN),
        );
        // SAFETY: `offset + bytes` is within the chunk, whose bytes from `offset` on no other
        // buffer holds (carving advances under the lock); the offset is a multiple of ALIGN.
        unsafe { Self::copy_into(chunk, offset, values) }
    }

    /// A copy of `values` in an allocation of its own, in ordinary pages, freed with it: for a
    /// short-lived buffer, which [`Pages::copy_of`] would carve beside the weights (a bump
    /// allocator: its bytes stay until every buffer of its chunk is dropped).
    pub fn copy_apart(values: &[T]) -> Self {
        const { assert!(align_of::<T>() <= ALIGN) };
        let chunk = Chunk::apart(size_of_val(values));
        // SAFETY: the chunk holds at least `size_of_val(values)` bytes and no other buffer.
        unsafe { Self::copy_into(chunk, 0, values) }
    }

    /// `values` copied into `chunk` at `offset`.
    ///
    /// # Safety
    /// `offset` is a multiple of [`ALIGN`] and the chunk's bytes from `offset` on, for
    /// `size_of_val(values)`, are this buffer's alone.
    unsafe fn copy_into(chunk: Arc<Chunk>, offset: usize, values: &[T]) -> Self {
        // SAFETY: the caller's.
        let ptr = unsafe {
            let dst = chunk.ptr.as_ptr().add(offset).cast::<T>();
            std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len());
            NonNull::new_unchecked(dst)
        };
        Self {
            chunk,
            ptr,
            len: values.len(),
            _values: PhantomData,
        }
    }
}

impl<T> Deref for Pages<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `len` values were written at `ptr` in `copy_into`; the chunk outlives `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

/// Shares the values (they never change).
impl<T> Clone for Pages<T> {
    fn clone(&self) -> Self {
        Self {
            chunk: Arc::clone(&self.chunk),
            ptr: self.ptr,
            len: self.len,
            _values: PhantomData,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pages({} values)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers carved one after another, one larger than a chunk, one empty, read back as
    /// written, aligned, and alive after the others (and their chunk's first owner) are dropped.
    #[test]
    fn buffers_read_back_what_was_copied() {
        let a: Vec<u32> = (0..1000).collect();
        let big: Vec<u64> = (0..(CHUNK / 8 + 3) as u64).map(|v| v * 3).collect();
        let pa = Pages::copy_of(&a);
        let pb = Pages::copy_of(&big);
        let empty = Pages::<u8>::copy_of(&[]);
        let pc = Pages::copy_of(&[7u8; 5]);
        let pd = Pages::copy_of(&a[..17]);
        for p in [
            pa.as_ptr() as usize,
            pb.as_ptr() as usize,
            pd.as_ptr() as usize,
        ] {
            assert_eq!(p % ALIGN, 0);
        }
        assert_eq!(&*pa, a.as_slice());
        assert_eq!(&*pb, big.as_slice());
        assert!(empty.is_empty());
        let copy = pd.clone();
        drop((pa, pb, pd));
        assert_eq!(&*pc, &[7u8; 5]);
        assert_eq!(&*copy, &a[..17]);
        // Apart: read back, aligned, empty allowed, alive after its source is dropped.
        let source: Vec<u32> = a[..33].to_vec();
        let apart = Pages::copy_apart(&source);
        drop(source);
        let none = Pages::<u64>::copy_apart(&[]);
        assert_eq!(&*apart, &a[..33]);
        assert_eq!(apart.as_ptr() as usize % ALIGN, 0);
        assert!(none.is_empty());
    }
}
