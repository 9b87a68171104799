//! Owned buffers that can be handed to the kernel.
//!
//! An I/O op takes its buffer by value and gives it back with the result, so
//! the buffer provably outlives the kernel's access: no borrow can end while
//! the kernel still writes. The traits are `unsafe` to implement because the
//! op machinery trusts their pointers; this crate implements them for the
//! standard owned types.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::ptr::{self, NonNull};

/// A buffer the kernel may read from.
///
/// # Safety
///
/// `stable_ptr()` must point to at least `bytes_init()` initialized bytes, and
/// that memory must stay valid and at the same address for as long as the
/// value lives, even if the value itself is moved (heap or `'static` memory).
pub unsafe trait IoBuf: Send + 'static {
    /// Start of the buffer.
    fn stable_ptr(&self) -> *const u8;
    /// Initialized bytes (what a write sends).
    fn bytes_init(&self) -> usize;
    /// Total capacity.
    fn bytes_total(&self) -> usize;

    /// A view of `range` of this buffer that an op can use; the whole buffer
    /// comes back with the result.
    ///
    /// # Panics
    ///
    /// Panics when the range is out of `0..bytes_total()` or decreasing.
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n + 1,
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.bytes_total(),
        };
        assert!(
            begin <= end && end <= self.bytes_total(),
            "slice {begin}..{end} out of 0..{}",
            self.bytes_total()
        );
        Slice {
            buf: self,
            begin,
            end,
        }
    }
}

/// A buffer the kernel may write into.
///
/// # Safety
///
/// As [`IoBuf`], and `stable_mut_ptr()` must point to `bytes_total()` bytes
/// that may be written; `set_init` may only be called with a count of bytes
/// that really were initialized.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the writable buffer.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Records that the first `pos` bytes are initialized (never shrinks).
    ///
    /// # Safety
    ///
    /// The first `pos` bytes must be initialized.
    unsafe fn set_init(&mut self, pos: usize);
}

// SAFETY: a Vec's heap buffer does not move when the Vec is moved; `len` bytes
// are initialized and `capacity` are allocated.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: see the `IoBuf` impl; the spare capacity is writable.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: `pos <= capacity` (ops never report more than they were
            // given) and the caller guarantees the bytes are initialized.
            unsafe { self.set_len(pos) };
        }
    }
}

// SAFETY: a boxed slice's heap memory does not move and is fully initialized.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; every byte is writable and already initialized.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: `'static` memory never moves or goes away.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `&'static [u8]`.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

/// An owned heap buffer whose start is aligned to a chosen power of two, for
/// `O_DIRECT` I/O (which needs the address, length and file offset aligned to
/// the device's logical block size, usually 512 or 4096 bytes).
///
/// Like a `Vec<u8>` it has a capacity and a count of initialized bytes
/// ([`len`](AlignedBuf::len)); a read fills it from the start and sets the
/// count, a write sends the initialized bytes.
///
/// ```
/// use spargio_sys::buf::{AlignedBuf, IoBuf};
///
/// let mut buf = AlignedBuf::zeroed(8192, 4096);
/// assert_eq!(buf.stable_ptr() as usize % 4096, 0);
/// buf[..5].copy_from_slice(b"hello");
/// assert_eq!((buf.len(), buf.capacity()), (8192, 8192));
/// buf.clear();
/// assert!(buf.is_empty());
/// ```
pub struct AlignedBuf {
    /// Start of the allocation (`layout`), or a dangling pointer aligned to
    /// `layout.align()` when `layout.size() == 0` (nothing allocated).
    ptr: NonNull<u8>,
    /// Size and alignment of the allocation; its size is the capacity.
    layout: Layout,
    /// Bytes at the start that are initialized; never above the capacity.
    len: usize,
}

impl AlignedBuf {
    /// An empty buffer of `capacity` uninitialized bytes starting at a
    /// multiple of `align`.
    ///
    /// # Panics
    ///
    /// Panics when `align` is not a power of two or `capacity` rounded up to
    /// `align` overflows `isize`; aborts when the allocation fails.
    pub fn with_capacity(capacity: usize, align: usize) -> Self {
        Self::allocate(capacity, align, false)
    }

    /// A buffer of `len` zero bytes (all initialized) starting at a multiple
    /// of `align`.
    ///
    /// # Panics
    ///
    /// As [`AlignedBuf::with_capacity`].
    pub fn zeroed(len: usize, align: usize) -> Self {
        Self::allocate(len, align, true)
    }

    fn allocate(capacity: usize, align: usize, zeroed: bool) -> Self {
        let layout = Layout::from_size_align(capacity, align)
            .unwrap_or_else(|e| panic!("AlignedBuf of {capacity} bytes aligned to {align}: {e}"));
        let ptr = if capacity == 0 {
            // No allocation: a dangling pointer that is still aligned, as
            // slices and the kernel (for a 0-length op) expect.
            NonNull::new(ptr::without_provenance_mut(align)).expect("an alignment is never 0")
        } else {
            // SAFETY: `layout` has a non-zero size (checked just above).
            let raw = unsafe {
                if zeroed {
                    alloc::alloc_zeroed(layout)
                } else {
                    alloc::alloc(layout)
                }
            };
            NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        };
        AlignedBuf {
            ptr,
            layout,
            len: if zeroed { capacity } else { 0 },
        }
    }

    /// Initialized bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no byte is initialized.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated bytes.
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// The alignment of the start.
    pub fn align(&self) -> usize {
        self.layout.align()
    }

    /// The initialized bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `capacity >= len` bytes (or dangling and
        // aligned with `len == 0`), the first `len` are initialized, and the
        // borrow of `self` keeps the memory alive and unaliased by `&mut`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The initialized bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the `&mut self` borrow makes this the only
        // reference to the memory.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Forgets the contents (the capacity and alignment stay).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: `ptr` was returned by `alloc`/`alloc_zeroed` with this
            // same `layout` (non-zero size) and is freed only here, once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }
}

// SAFETY: `AlignedBuf` uniquely owns its heap memory, like `Box<[u8]>`; it has
// no interior mutability and no thread affinity.
unsafe impl Send for AlignedBuf {}
// SAFETY: as for `Send`: a shared `&AlignedBuf` only reads.
unsafe impl Sync for AlignedBuf {}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("align", &self.align())
            .finish_non_exhaustive()
    }
}

// SAFETY: the heap allocation does not move when the `AlignedBuf` is moved and
// lives until its drop; `len` bytes are initialized and `capacity` allocated.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: see the `IoBuf` impl; all `capacity` bytes are writable.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // Clamped so `as_slice` stays in bounds even for a caller's bad count.
        self.len = self.len.max(pos.min(self.capacity()));
    }
}

/// A range of an owned buffer; [`Slice::into_inner`] gives the buffer back.
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B> Slice<B> {
    /// The whole underlying buffer.
    pub fn into_inner(self) -> B {
        self.buf
    }
    /// Start of the range in the underlying buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }
    /// End of the range in the underlying buffer.
    pub fn end(&self) -> usize {
        self.end
    }
    /// The underlying buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }
}

// SAFETY: a sub-range of a stable buffer is stable; `begin..end` lies inside
// `0..bytes_total()` (checked in `IoBuf::slice`).
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        self.buf.stable_ptr().wrapping_add(self.begin)
    }
    fn bytes_init(&self) -> usize {
        self.buf.bytes_init().clamp(self.begin, self.end) - self.begin
    }
    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }
}

// SAFETY: as for `IoBuf`; initialization is forwarded with the offset added.
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.stable_mut_ptr().wrapping_add(self.begin)
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded: the caller initialized `begin..begin + pos`, and
        // everything before `begin` that counts as initialized already was, or
        // is a prefix the buffer reports as initialized anyway.
        unsafe { self.buf.set_init(self.begin + pos) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_init_grows_only() {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&[1, 2, 3]);
        // SAFETY: the first 3 bytes are initialized.
        unsafe { v.set_init(2) };
        assert_eq!(v.len(), 3);
        assert!(v.bytes_total() >= 16);
    }

    #[test]
    fn slice_reports_its_range() {
        let s = vec![7u8; 10].slice(2..6);
        assert_eq!((s.bytes_init(), s.bytes_total()), (4, 4));
        assert_eq!(s.stable_ptr(), s.get_ref().as_ptr().wrapping_add(2));
        assert_eq!(s.into_inner().len(), 10);
    }

    #[test]
    #[should_panic(expected = "out of")]
    fn slice_out_of_range_panics() {
        let _ = vec![0u8; 4].slice(2..9);
    }

    #[test]
    fn aligned_buf_start_is_aligned() {
        for align in [1, 8, 512, 4096] {
            let a = AlignedBuf::with_capacity(64, align);
            assert_eq!(a.stable_ptr() as usize % align, 0, "align {align}");
            assert_eq!((a.len(), a.capacity(), a.align()), (0, 64, align));
            let z = AlignedBuf::zeroed(24, align);
            assert_eq!(z.as_ptr() as usize % align, 0);
            assert_eq!(&z[..], &[0u8; 24]);
        }
    }

    #[test]
    fn aligned_buf_len_follows_set_init() {
        let mut a = AlignedBuf::with_capacity(32, 16);
        let p = a.stable_mut_ptr();
        for i in 0..10 {
            // SAFETY: `p` is writable for `capacity` (32) bytes and `a` lives.
            unsafe { p.add(i).write(i as u8) };
        }
        // SAFETY: the first 10 bytes were just written.
        unsafe { a.set_init(10) };
        assert_eq!(a.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        // SAFETY: 4 <= 10 initialized bytes; the count never shrinks.
        unsafe { a.set_init(4) };
        assert_eq!((a.len(), a.bytes_init(), a.bytes_total()), (10, 10, 32));
        a.as_mut_slice()[0] = 42;
        assert_eq!(a[0], 42);
        a.clear();
        assert!(a.is_empty());
        assert_eq!(a.capacity(), 32);
    }

    #[test]
    fn aligned_buf_zero_capacity_allocates_nothing() {
        let mut a = AlignedBuf::with_capacity(0, 4096);
        assert_eq!((a.len(), a.capacity()), (0, 0));
        assert_eq!(a.stable_mut_ptr() as usize % 4096, 0);
        assert!(a.as_slice().is_empty());
        assert!(a.as_mut_slice().is_empty());
        let z = AlignedBuf::zeroed(0, 512);
        assert!(z.is_empty());
    }

    #[test]
    fn aligned_buf_slice_sees_its_range() {
        let s = AlignedBuf::zeroed(16, 8).slice(8..);
        assert_eq!((s.bytes_init(), s.bytes_total()), (8, 8));
        assert_eq!(s.stable_ptr() as usize % 8, 0);
    }

    #[test]
    #[should_panic(expected = "aligned to 3")]
    fn aligned_buf_rejects_a_non_power_of_two() {
        let _ = AlignedBuf::with_capacity(8, 3);
    }

    #[test]
    fn aligned_buf_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AlignedBuf>();
    }
}
