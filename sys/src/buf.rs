//! Owned buffers that can be handed to the kernel.
//!
//! An I/O op takes its buffer by value and gives it back with the result, so
//! the buffer provably outlives the kernel's access: no borrow can end while
//! the kernel still writes. The traits are `unsafe` to implement because the
//! op machinery trusts their pointers; this crate implements them for the
//! standard owned types.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::any::Any;
use std::fmt;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::ptr::{self, NonNull};
use std::sync::Arc;

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
    /// A read into the slice makes the bytes it wrote part of the buffer's
    /// initialized length only when the slice starts inside or right after the
    /// bytes already initialized (`range.start <= bytes_init()`). A slice that
    /// starts further in leaves the length as it was, since the bytes between
    /// would count as initialized without ever having been written.
    ///
    /// ```
    /// use spargio_sys::buf::{IoBuf, IoBufMut};
    ///
    /// let mut gap = Vec::<u8>::with_capacity(16).slice(8..);
    /// // SAFETY: (as a read would) 4 bytes written at the slice's start.
    /// unsafe { gap.stable_mut_ptr().write_bytes(7, 4); gap.set_init(4) };
    /// assert_eq!(gap.into_inner().len(), 0, "bytes 0..8 were never written");
    ///
    /// let mut tail = vec![1u8, 2];
    /// tail.reserve(8);
    /// let mut tail = tail.slice(2..);
    /// // SAFETY: as above.
    /// unsafe { tail.stable_mut_ptr().write_bytes(7, 4); tail.set_init(4) };
    /// assert_eq!(tail.into_inner(), [1, 2, 7, 7, 7, 7]);
    /// ```
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
/// that may be written. `set_init` must keep `IoBuf`'s promise: after it,
/// every one of the first `bytes_init()` bytes is initialized. An
/// implementation that cannot record the bytes it is told about (they do not
/// join what it already counts as initialized) records nothing.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the writable buffer.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Records that the first `pos` bytes (from `stable_mut_ptr()`) are
    /// initialized. Never shrinks the initialized length, and never grows it
    /// past `bytes_total()`.
    ///
    /// # Safety
    ///
    /// The first `pos` bytes from `stable_mut_ptr()` must be initialized, and
    /// `pos <= bytes_total()`.
    unsafe fn set_init(&mut self, pos: usize);
}

/// Copies `src` to the start of `buf` (as much as its capacity,
/// `bytes_total()`, holds) and records the copied bytes as a read would
/// (`set_init`). Returns the number of bytes copied.
///
/// ```
/// let mut buf = Vec::with_capacity(4);
/// assert_eq!(spargio_sys::buf::put_bytes(&mut buf, b"hello"), 4);
/// assert_eq!(buf, b"hell");
/// ```
pub fn put_bytes<B: IoBufMut>(buf: &mut B, src: &[u8]) -> usize {
    let n = src.len().min(buf.bytes_total());
    // SAFETY: `stable_mut_ptr()` is writable for `bytes_total() >= n` bytes
    // (`IoBufMut` contract) and cannot overlap `src`, a shared borrow of other
    // memory; after the copy the first `n` bytes are initialized.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), buf.stable_mut_ptr(), n);
        buf.set_init(n);
    }
    n
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
            // SAFETY: `pos <= bytes_total() == capacity` and the first `pos` bytes
            // are initialized, both by the caller's contract.
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

    /// As [`AlignedBuf::zeroed`], but `None` instead of a panic or an abort
    /// when the layout is invalid or the memory cannot be allocated.
    pub fn try_zeroed(len: usize, align: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len, align).ok()?;
        Self::allocate_layout(layout, true)
    }

    fn allocate(capacity: usize, align: usize, zeroed: bool) -> Self {
        let layout = Layout::from_size_align(capacity, align)
            .unwrap_or_else(|e| panic!("AlignedBuf of {capacity} bytes aligned to {align}: {e}"));
        Self::allocate_layout(layout, zeroed).unwrap_or_else(|| alloc::handle_alloc_error(layout))
    }

    /// Allocates `layout`; `None` when the allocator refuses.
    fn allocate_layout(layout: Layout, zeroed: bool) -> Option<Self> {
        let (capacity, align) = (layout.size(), layout.align());
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
            NonNull::new(raw)?
        };
        Some(AlignedBuf {
            ptr,
            layout,
            len: if zeroed { capacity } else { 0 },
        })
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

// SAFETY: as for `IoBuf`; `set_init` forwards only a count whose every byte is
// initialized (see there).
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.stable_mut_ptr().wrapping_add(self.begin)
    }

    /// Marks `begin..begin + pos` of the underlying buffer initialized, but
    /// only when that range joins the buffer's initialized prefix (`begin <=
    /// bytes_init()`): a buffer knows one initialized prefix, and growing it
    /// over a gap of bytes nobody wrote would expose uninitialized memory.
    /// Otherwise nothing is marked (the bytes were written but stay outside
    /// the buffer's length).
    unsafe fn set_init(&mut self, pos: usize) {
        if self.begin > self.buf.bytes_init() {
            return;
        }
        let pos = pos.min(self.end - self.begin);
        // SAFETY: `0..begin` is inside the initialized prefix (checked above) and
        // the caller initialized `begin..begin + pos`, so `0..begin + pos` is.
        unsafe { self.buf.set_init(self.begin + pos) };
    }
}

/// The page size fixed-buffer tables align each buffer to (and round sizes up to).
pub const FIXED_BUF_ALIGN: usize = 4096;

/// `count` equal page-aligned buffers in one zeroed allocation, meant to be
/// registered with a ring (`IORING_REGISTER_BUFFERS`) so that `READ_FIXED` /
/// `WRITE_FIXED` skip the per-op page pinning.
///
/// The table never touches the bytes itself. A buffer is used only through
/// the one [`FixedBuf`] that checked its index out of the free list, so the
/// buffers never alias; dropping that `FixedBuf` (on any thread) puts the
/// index back. Every `FixedBuf` keeps the table (and so the memory) alive.
///
/// ```
/// use std::sync::Arc;
/// use spargio_sys::buf::FixedBufTable;
///
/// let table = Arc::new(FixedBufTable::new(2, 4096, (0, 0)));
/// let mut a = table.checkout(100).unwrap();
/// a.extend_from_slice(b"hi");
/// let _b = table.checkout(4096).unwrap();
/// assert!(table.checkout(1).is_none(), "both are out");
/// drop(a);
/// assert_eq!(table.available(), 1);
/// ```
pub struct FixedBufTable {
    /// `count * buf_size` zeroed bytes (all initialized), aligned to
    /// [`FIXED_BUF_ALIGN`]; only ever accessed through raw pointers derived
    /// from `mem.ptr`, one buffer per checked-out [`FixedBuf`].
    mem: AlignedBuf,
    buf_size: usize,
    count: u16,
    /// Indices not checked out. Invariant: each index `< count` is either here
    /// (exactly once) or held by exactly one live `FixedBuf`.
    free: std::sync::Mutex<Vec<u16>>,
    /// Whatever the creator wants a buffer to lead back to (the runtime puts
    /// its shard there).
    owner: Box<dyn Any + Send + Sync>,
}

impl FixedBufTable {
    /// A table of `count` buffers of `buf_size` bytes each, rounded up to a
    /// multiple of [`FIXED_BUF_ALIGN`]; `owner` is any value the creator
    /// reads back with [`FixedBufTable::owner`] and [`FixedBuf::owner`].
    ///
    /// # Panics
    ///
    /// Panics when `count` is 0 or above `u16::MAX`, `buf_size` is 0, or the
    /// total size overflows.
    pub fn new(count: usize, buf_size: usize, owner: impl Any + Send + Sync) -> Self {
        assert!(count > 0 && buf_size > 0, "an empty fixed-buffer table");
        let count = u16::try_from(count).expect("at most u16::MAX fixed buffers");
        let buf_size = buf_size
            .checked_next_multiple_of(FIXED_BUF_ALIGN)
            .expect("fixed buffer size overflows");
        let total = buf_size
            .checked_mul(usize::from(count))
            .expect("fixed-buffer table size overflows");
        FixedBufTable {
            mem: AlignedBuf::zeroed(total, FIXED_BUF_ALIGN),
            buf_size,
            count,
            free: std::sync::Mutex::new((0..count).rev().collect()),
            owner: Box::new(owner),
        }
    }

    /// Checks out a free buffer as a [`FixedBuf`] of capacity `capacity`
    /// (empty, `len() == 0`). `None` when every buffer is out or `capacity`
    /// exceeds [`FixedBufTable::buf_size`].
    pub fn checkout(self: &Arc<Self>, capacity: usize) -> Option<FixedBuf> {
        if capacity > self.buf_size {
            return None;
        }
        let index = self.lock_free().pop()?;
        Some(FixedBuf {
            storage: Storage::Registered {
                table: self.clone(),
                index,
            },
            capacity,
            len: 0,
        })
    }

    /// Buffers not checked out now.
    pub fn available(&self) -> usize {
        self.lock_free().len()
    }

    /// Buffers in the table.
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// Bytes of each buffer (a multiple of [`FIXED_BUF_ALIGN`]).
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// The creator's value.
    pub fn owner(&self) -> &(dyn Any + Send + Sync) {
        &*self.owner
    }

    /// One `iovec` per buffer, in index order, for `register_buffers`.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|i| libc::iovec {
                iov_base: self.slot_ptr(i).cast(),
                iov_len: self.buf_size,
            })
            .collect()
    }

    fn slot_ptr(&self, index: u16) -> *mut u8 {
        // In bounds: `index < count` and the allocation is `count * buf_size`.
        self.mem
            .ptr
            .as_ptr()
            .wrapping_add(usize::from(index) * self.buf_size)
    }

    fn lock_free(&self) -> std::sync::MutexGuard<'_, Vec<u16>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, index: u16) {
        let mut free = self.lock_free();
        debug_assert!(
            index < self.count && !free.contains(&index),
            "fixed buffer {index} freed twice"
        );
        free.push(index);
    }
}

impl fmt::Debug for FixedBufTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBufTable")
            .field("count", &self.count)
            .field("buf_size", &self.buf_size)
            .field("available", &self.available())
            .finish()
    }
}

enum Storage {
    /// Buffer `index` of `table`, checked out of its free list.
    Registered { table: Arc<FixedBufTable>, index: u16 },
    /// A zeroed heap buffer of its own (no table to take one from).
    Plain(AlignedBuf),
}

/// An owned buffer for the fixed-buffer fast path: either one buffer of a
/// [`FixedBufTable`] (used with `READ_FIXED`/`WRITE_FIXED` on the ring that
/// registered the table) or, where no table is registered, a page-aligned
/// buffer of its own that ordinary ops use.
///
/// Like a `Vec<u8>` it has a capacity and a length; a read fills it from the
/// start and sets the length, a write sends `len()` bytes. Dropping it (on any
/// thread) returns a table buffer to its table's free list.
///
/// ```
/// use spargio_sys::buf::FixedBuf;
///
/// let mut b = FixedBuf::unregistered(16);
/// assert!(!b.is_registered());
/// b.extend_from_slice(b"abc");
/// assert_eq!((&b[..], b.capacity()), (&b"abc"[..], 16));
/// ```
pub struct FixedBuf {
    storage: Storage,
    /// Usable bytes, at most the table's `buf_size` (or the plain buffer's size).
    capacity: usize,
    /// Bytes at the start that count as contents; `<= capacity`.
    len: usize,
}

impl FixedBuf {
    /// An empty page-aligned buffer of `capacity` bytes backed by no table:
    /// the fallback where no fixed buffers are registered.
    pub fn unregistered(capacity: usize) -> Self {
        FixedBuf {
            storage: Storage::Plain(AlignedBuf::zeroed(capacity, FIXED_BUF_ALIGN)),
            capacity,
            len: 0,
        }
    }

    /// As [`FixedBuf::unregistered`], but `None` when the memory cannot be
    /// allocated, where `unregistered` aborts the process.
    pub fn try_unregistered(capacity: usize) -> Option<Self> {
        Some(FixedBuf {
            storage: Storage::Plain(AlignedBuf::try_zeroed(capacity, FIXED_BUF_ALIGN)?),
            capacity,
            len: 0,
        })
    }

    /// True when this is a table buffer (usable with `READ_FIXED`/`WRITE_FIXED`).
    pub fn is_registered(&self) -> bool {
        matches!(self.storage, Storage::Registered { .. })
    }

    /// The registered-buffer index, for a table buffer.
    pub fn buf_index(&self) -> Option<u16> {
        match self.storage {
            Storage::Registered { index, .. } => Some(index),
            Storage::Plain(_) => None,
        }
    }

    /// The table's owner value ([`FixedBufTable::owner`]), for a table buffer.
    pub fn owner(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.table().map(|t| t.owner())
    }

    /// The table this buffer belongs to, if any.
    pub fn table(&self) -> Option<&Arc<FixedBufTable>> {
        match &self.storage {
            Storage::Registered { table, .. } => Some(table),
            Storage::Plain(_) => None,
        }
    }

    /// Bytes of contents.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no contents.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Usable bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the contents.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the contents to `len` bytes (no-op when already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends `data` to the contents.
    ///
    /// # Panics
    ///
    /// Panics when the contents would exceed the capacity.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        assert!(
            end <= self.capacity,
            "FixedBuf of capacity {} cannot hold {end} bytes",
            self.capacity
        );
        // SAFETY: `base()` holds `capacity >= end` initialized bytes owned by this
        // value alone (see `base`); `&mut self` excludes other access, and `data`,
        // a shared borrow of other memory, cannot overlap them.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.base().add(self.len), data.len()) };
        self.len = end;
    }

    /// Start of this buffer's bytes: `capacity` bytes, all initialized (the
    /// table and the plain buffer are zeroed at allocation), that no other
    /// value reads or writes: a table index is held by one `FixedBuf` at a time.
    fn base(&self) -> *mut u8 {
        match &self.storage {
            Storage::Registered { table, index } => table.slot_ptr(*index),
            Storage::Plain(buf) => buf.ptr.as_ptr(),
        }
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        if let Storage::Registered { table, index } = &self.storage {
            table.give_back(*index);
        }
    }
}

impl Deref for FixedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `base()` is valid for `capacity >= len` initialized bytes
        // accessed by this value alone; the borrow of `self` keeps them alive
        // and excludes writes through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.base(), self.len) }
    }
}

impl DerefMut for FixedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.base(), self.len) }
    }
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("buf_index", &self.buf_index())
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

// SAFETY: the bytes live in a heap allocation (the table's, kept alive by the
// `Arc`, or the plain buffer's) that does not move when the `FixedBuf` moves;
// `capacity` bytes are valid and initialized, used by this value alone.
unsafe impl IoBuf for FixedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.base()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.capacity
    }
}

// SAFETY: see the `IoBuf` impl; all `capacity` bytes are writable.
unsafe impl IoBufMut for FixedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.base()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // Clamped so `deref` stays in bounds even for a caller's bad count.
        self.len = self.len.max(pos.min(self.capacity));
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

    /// Writes `n` bytes at the start of `slice` as a read would, then reports them.
    fn fill_slice<B: IoBufMut>(slice: &mut Slice<B>, n: usize) {
        let p = slice.stable_mut_ptr();
        for i in 0..n {
            // SAFETY: `i < n <= bytes_total()`, writable by `IoBufMut`'s contract.
            unsafe { p.add(i).write(0xA0 + i as u8) };
        }
        // SAFETY: the first `n` bytes of the slice were just written.
        unsafe { slice.set_init(n) };
    }

    #[test]
    fn slice_past_the_initialized_prefix_marks_nothing() {
        // Bytes 0..8 of the Vec were never written: a read into `8..` must not
        // make them part of `len` (reading them would be UB, which Miri reports).
        let mut s = Vec::<u8>::with_capacity(32).slice(8..);
        fill_slice(&mut s, 4);
        let v = s.into_inner();
        assert_eq!(v.len(), 0, "a gap before the slice stays uninitialized");

        let mut a = AlignedBuf::with_capacity(32, 8).slice(8..16);
        fill_slice(&mut a, 8);
        assert_eq!(a.into_inner().len(), 0);

        let table = Arc::new(FixedBufTable::new(1, 64, ()));
        let mut f = table.checkout(64).unwrap().slice(8..);
        fill_slice(&mut f, 4);
        assert!(f.into_inner().is_empty());
    }

    #[test]
    fn slice_contiguous_with_the_initialized_prefix_extends_it() {
        for begin in [0, 2, 3] {
            let mut v = Vec::with_capacity(32);
            v.extend_from_slice(&[1, 2, 3]);
            let mut s = v.slice(begin..);
            let n = 3 - begin + 2;
            fill_slice(&mut s, n);
            let got = s.into_inner();
            assert_eq!(got.len(), begin + n, "slice at {begin}");
            assert_eq!(&got[..begin], &[1, 2, 3][..begin]);
            assert_eq!(got[begin], 0xA0);
        }
        // Inside the initialized prefix, a short write never shrinks it.
        let mut s = vec![9u8; 10].slice(2..6);
        fill_slice(&mut s, 1);
        assert_eq!(s.into_inner(), [9, 9, 0xA0, 9, 9, 9, 9, 9, 9, 9]);

        let mut a = AlignedBuf::zeroed(8, 8);
        a.clear();
        let mut s = a.slice(0..4);
        fill_slice(&mut s, 4);
        assert_eq!(s.into_inner().as_slice(), &[0xA0, 0xA1, 0xA2, 0xA3]);
    }

    #[test]
    fn nested_slices_follow_the_same_rule() {
        let mut s = Vec::<u8>::with_capacity(16).slice(0..12).slice(4..);
        fill_slice(&mut s, 2);
        assert_eq!(s.into_inner().into_inner().len(), 0);
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&[5; 4]);
        let mut s = v.slice(0..12).slice(4..);
        fill_slice(&mut s, 2);
        assert_eq!(s.into_inner().into_inner(), [5, 5, 5, 5, 0xA0, 0xA1]);
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
    #[test]
    fn fixed_table_hands_out_each_index_once() {
        let table = Arc::new(FixedBufTable::new(3, 100, (7usize, 1usize)));
        assert_eq!((table.count(), table.buf_size()), (3, 4096));
        assert_eq!(table.owner().downcast_ref::<(usize, usize)>(), Some(&(7, 1)));
        let bufs: Vec<_> = (0..3).map(|_| table.checkout(4096).unwrap()).collect();
        let mut idx: Vec<_> = bufs.iter().map(|b| b.buf_index().unwrap()).collect();
        idx.sort_unstable();
        assert_eq!(idx, [0, 1, 2]);
        assert!(table.checkout(1).is_none());
        assert_eq!(table.available(), 0);
        drop(bufs);
        assert_eq!(table.available(), 3);
    }

    #[test]
    fn fixed_table_refuses_oversized_checkout() {
        let table = Arc::new(FixedBufTable::new(1, 4096, (0, 0)));
        assert!(table.checkout(4097).is_none());
        assert_eq!(table.available(), 1);
    }

    #[test]
    fn fixed_bufs_do_not_alias_and_keep_the_table_alive() {
        let table = Arc::new(FixedBufTable::new(2, 64, (0, 0)));
        let mut a = table.checkout(64).unwrap();
        let mut b = table.checkout(64).unwrap();
        let iov = table.iovecs();
        assert_eq!(iov.len(), 2);
        assert_eq!(iov[0].iov_base as usize % FIXED_BUF_ALIGN, 0);
        a.extend_from_slice(&[1; 64]);
        b.extend_from_slice(&[2; 10]);
        drop(table);
        assert_eq!(&a[..], &[1; 64]);
        assert_eq!(&b[..], &[2; 10]);
        b[0] = 9;
        b.truncate(1);
        assert_eq!(&b[..], &[9]);
        assert!(a.stable_ptr() != b.stable_ptr());
    }

    #[test]
    fn fixed_buf_returns_from_another_thread() {
        let table = Arc::new(FixedBufTable::new(1, 64, (0, 0)));
        let mut a = table.checkout(8).unwrap();
        let p = a.stable_mut_ptr();
        // SAFETY: `p` is writable for the buffer's 8-byte capacity.
        unsafe { p.write(5) };
        // SAFETY: the first byte was just written.
        unsafe { a.set_init(1) };
        assert_eq!(&a[..], &[5]);
        std::thread::spawn(move || drop(a)).join().unwrap();
        assert_eq!(table.available(), 1);
        let again = table.checkout(8).unwrap();
        assert_eq!(again.buf_index(), Some(0));
        assert!(again.is_empty());
    }

    #[test]
    fn unregistered_fixed_buf_is_plain_memory() {
        let mut b = FixedBuf::unregistered(32);
        assert_eq!(
            (b.is_registered(), b.buf_index(), b.owner().is_none()),
            (false, None, true)
        );
        assert_eq!(b.stable_ptr() as usize % FIXED_BUF_ALIGN, 0);
        b.extend_from_slice(b"xyz");
        assert_eq!((&b[..], b.bytes_init(), b.bytes_total()), (&b"xyz"[..], 3, 32));
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    #[should_panic(expected = "cannot hold")]
    fn fixed_buf_extend_past_capacity_panics() {
        FixedBuf::unregistered(2).extend_from_slice(b"abc");
    }
}
