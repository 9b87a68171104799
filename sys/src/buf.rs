//! Owned buffers that can be handed to the kernel.
//!
//! An I/O op takes its buffer by value and gives it back with the result, so
//! the buffer provably outlives the kernel's access: no borrow can end while
//! the kernel still writes. The traits are `unsafe` to implement because the
//! op machinery trusts their pointers; this crate implements them for the
//! standard owned types.
#![allow(unsafe_code)]

use std::ops::{Bound, RangeBounds};

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
}
