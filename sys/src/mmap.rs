//! RAII memory mappings: the ring regions shared with the kernel and the
//! anonymous memory of provided-buffer rings.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};

/// One `mmap`ed region, unmapped on drop.
///
/// Mappings are marked `MADV_DONTFORK`: a child created by `fork` must not
/// share memory the kernel writes completions into.
#[derive(Debug)]
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Mmap` is a plain owner of a memory range; it hands out raw pointers
// only, and whoever dereferences them carries the synchronisation obligations.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` exposes no interior mutability of its own.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of an io_uring fd at `offset` (`IORING_OFF_*`), shared and populated.
    ///
    /// # Errors
    ///
    /// The `errno` of `mmap` (e.g. `ENOMEM`).
    pub fn ring_region(fd: BorrowedFd<'_>, offset: i64, len: usize) -> io::Result<Mmap> {
        Self::map(Some(fd), offset, len)
    }

    /// Maps `len` bytes of zeroed, private anonymous memory.
    ///
    /// # Errors
    ///
    /// The `errno` of `mmap`.
    pub fn anonymous(len: usize) -> io::Result<Mmap> {
        Self::map(None, 0, len)
    }

    fn map(fd: Option<BorrowedFd<'_>>, offset: i64, len: usize) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero-length mapping"));
        }
        let (flags, raw_fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd()),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping at an address the kernel chooses; it aliases no
        // Rust object. `raw_fd` is a live fd borrowed for the call, or -1.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw_fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<u8>()).expect("mmap returned a null mapping");
        let map = Mmap { ptr, len };
        // SAFETY: `addr..addr+len` is the mapping just created. MADV_DONTFORK is
        // advisory; a failure only means a forked child would keep a copy.
        unsafe { libc::madvise(addr, len, libc::MADV_DONTFORK) };
        Ok(map)
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is a mapping this value created and still owns;
        // nothing can reach it after drop (pointers derived from it are bounded by
        // the owner's lifetime, see `Ring`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
