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
        // Owned from here: an error below unmaps it on the way out.
        let map = Mmap { ptr, len };
        map.dont_fork()?;
        Ok(map)
    }

    /// Marks the mapping `MADV_DONTFORK`, so a forked child gets no copy of
    /// memory the kernel keeps writing (and the parent's pages stay its own).
    ///
    /// # Errors
    ///
    /// The `errno` of `madvise` (e.g. `ENOMEM` when the process is at its
    /// mapping limit), with the call named.
    fn dont_fork(&self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = fail_dont_fork::take() {
            return Err(dont_fork_error(io::Error::from_raw_os_error(errno), self.len));
        }
        // SAFETY: `ptr..ptr+len` is a mapping this value owns; madvise changes
        // only how fork treats it, not its contents.
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_DONTFORK) };
        if rc != 0 {
            return Err(dont_fork_error(io::Error::last_os_error(), self.len));
        }
        Ok(())
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

fn dont_fork_error(source: io::Error, len: usize) -> io::Error {
    io::Error::new(
        source.kind(),
        format!("madvise(MADV_DONTFORK) of a new {len}-byte mapping failed: {source}"),
    )
}

/// Test hook: makes the next `dont_fork` on this thread fail with an errno.
#[cfg(test)]
pub(crate) mod fail_dont_fork {
    use std::cell::Cell;

    thread_local! {
        static NEXT: Cell<Option<i32>> = const { Cell::new(None) };
    }

    /// The next `madvise(MADV_DONTFORK)` on this thread fails with `errno`.
    pub(crate) fn arm(errno: i32) {
        NEXT.set(Some(errno));
    }

    pub(super) fn take() -> Option<i32> {
        NEXT.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(miri))] // no mmap under Miri
    fn a_failed_dont_fork_fails_the_mapping() {
        fail_dont_fork::arm(libc::ENOMEM);
        let err = Mmap::anonymous(4096).expect_err("madvise failed, so must the mapping");
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert!(err.to_string().contains("MADV_DONTFORK"), "{err}");
        let map = Mmap::anonymous(4096).expect("the hook fires once");
        assert_eq!(map.len(), 4096);
    }
}
