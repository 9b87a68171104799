//! Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
//!
//! A [`BufRing`] hands the kernel a group of equally sized buffers. An op
//! submitted with `IOSQE_BUFFER_SELECT` and the group id picks a buffer only
//! when data arrives, and its CQE says which one (`IORING_CQE_F_BUFFER` and the
//! buffer id in the upper 16 bits of `flags`). After reading it, the owner
//! gives the buffer back with [`BufRing::recycle`].
//!
//! # Who owns a buffer
//!
//! Each buffer id is either *in the ring* (the kernel may pick it and write
//! into it at any time) or *claimed* (a CQE reported it; only we touch it).
//! [`BufRing::claim`] moves an id from the first state to the second on the
//! strength of a CQE, which is why it is `unsafe`: the caller vouches that the
//! kernel really handed that buffer over. Reading and recycling are safe, and
//! are refused for ids that are not claimed.
//!
//! # The shared ring
//!
//! The ring is an array of `io_uring_buf` entries (16 bytes: address, length,
//! id) in page-aligned memory we own. The 16-bit tail is not a separate field:
//! it overlays the `resv` bytes of entry 0 (offset 14), so entry 0 is only ever
//! written field by field and its last two bytes only through the atomic tail.
//! We are the only producer (the kernel never writes the entries or the tail),
//! and the kernel's head is private to it.
//!
//! # Memory ordering
//!
//! - Publishing the tail is a `Release` store: it pairs with the kernel's
//!   `smp_load_acquire` of the tail when it selects a buffer
//!   (`io_ring_buffer_select`), so the entry written before the store is
//!   complete when the kernel reads it.
//! - Reading a claimed buffer needs no ordering of its own: the kernel wrote
//!   the data before it released the CQ tail, and [`Ring::pop_cqe`] acquired
//!   that tail before the CQE naming the buffer was read.
//!
//! # Dropping
//!
//! Pushing a buffer-select receive is safe ([`Sqe::references_user_memory`]
//! is false for it), so nothing stops a `BufRing` from being dropped while
//! such an op is in flight, and the kernel writes into a buffer it selected
//! even after the group is unregistered. Dropping therefore unregisters the
//! group and frees the buffers only when every one of them is claimed (the
//! kernel holds none); otherwise it leaks them. The runtime, which knows when
//! no op uses the group any more (its slab is empty), frees everything with
//! the `unsafe` [`BufRing::release`].
//!
//! Bundles (`IORING_RECVSEND_BUNDLE`, several buffers per CQE) and
//! incrementally consumed buffers (`IOU_PBUF_RING_INC`) are not supported.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use crate::abi;
use crate::mmap::Mmap;
use crate::register;
use crate::ring::{Ring, RingFd};
use crate::sim::SimKernel;
#[cfg(doc)]
use crate::sqe::Sqe;

/// The most entries a provided-buffer ring may have.
pub const MAX_ENTRIES: u16 = 1 << 15;

/// A provided-buffer ring registered with one io_uring: its ring memory and
/// its buffers.
///
/// Dropping it unregisters the group; the buffers are freed only if every one
/// is claimed, and leaked otherwise (see [the module docs](self#dropping)).
/// [`BufRing::release`] frees them when the caller knows no op uses the group.
pub struct BufRing {
    /// Keeps the ring's fd open, so unregistering on drop reaches this ring even
    /// if the `Ring` was dropped first (its fd number cannot have been reused).
    ring_fd: RingFd,
    bgid: u16,
    entries: u16,
    buf_len: u32,
    /// `entries` entries of `io_uring_buf`, page aligned. Dropped by hand in
    /// `Drop` (or leaked when the kernel may still read it).
    ring_mem: ManuallyDrop<Mmap>,
    /// `entries * buf_len` bytes; buffer `bid` starts at `bid * buf_len`.
    /// Dropped by hand in `Drop` (or leaked when the kernel may still write it).
    buffers: ManuallyDrop<Mmap>,
    /// Our copy of the shared tail: we are the only writer.
    local_tail: u16,
    /// True for the ids a CQE handed to us (claimed), false for those in the ring.
    claimed: Vec<bool>,
    /// True once the kernel accepted the registration: only then does drop
    /// unregister `bgid` (which may otherwise belong to someone else).
    registered: bool,
    /// Set by `release`: the caller vouched that no op uses the group.
    quiescent: bool,
    /// The simulated kernel, for a ring on it (registration goes there).
    sim: Option<SimKernel>,
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("ring_fd", &self.ring_fd)
            .field("bgid", &self.bgid)
            .field("entries", &self.entries)
            .field("buf_len", &self.buf_len)
            .field("claimed", &self.claimed.iter().filter(|c| **c).count())
            .finish()
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl BufRing {
    /// Creates `entries` buffers of `buf_len` bytes, publishes all of them, and
    /// registers them with `ring` as group `bgid`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless `entries` is a power of two up to [`MAX_ENTRIES`]
    /// and `buf_len` is non-zero; the `mmap` errno; from the kernel `EINVAL`
    /// (no buffer rings before 5.19) or `EEXIST` (the group id is taken). A
    /// simulated ring registers the group with its simulated kernel.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use spargio_sys::{Ring, bufring::BufRing};
    ///
    /// let ring = Ring::new(8)?;
    /// let bufs = BufRing::new(&ring, 0, 16, 4096)?;
    /// assert_eq!(bufs.entries(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(ring: &Ring, bgid: u16, entries: u16, buf_len: u32) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > MAX_ENTRIES {
            return Err(invalid("buffer ring entries must be a power of two up to 32768"));
        }
        if buf_len == 0 {
            return Err(invalid("buffer length must not be zero"));
        }
        let (fd, sim) = (ring.kernel_fd(), ring.sim_ring());
        if fd.is_none() && sim.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "buffer rings need a kernel or simulated ring",
            ));
        }
        let total = usize::from(entries)
            .checked_mul(buf_len as usize)
            .ok_or_else(|| invalid("buffer ring larger than the address space"))?;
        // mmap memory is page aligned, as the kernel requires of the ring.
        let ring_mem = Mmap::anonymous(usize::from(entries) * size_of::<abi::io_uring_buf>())?;
        let buffers = Mmap::anonymous(total)?;
        let mut this = BufRing {
            ring_fd: ring.ring_fd(),
            bgid,
            entries,
            buf_len,
            ring_mem: ManuallyDrop::new(ring_mem),
            buffers: ManuallyDrop::new(buffers),
            local_tail: 0,
            claimed: vec![true; usize::from(entries)],
            registered: false,
            quiescent: false,
            sim: sim.map(|s| s.kernel().clone()),
        };
        for bid in 0..entries {
            this.write_entry(bid, bid);
        }
        let reg = abi::io_uring_buf_reg {
            ring_addr: this.ring_mem.as_ptr().as_ptr() as u64,
            ring_entries: u32::from(entries),
            bgid,
            flags: 0,
            resv: [0; 3],
        };
        match (fd, sim) {
            // SAFETY: `ring_addr` is page-aligned memory for `entries` entries that
            // `this` owns and unregisters on drop before unmapping; every buffer the
            // entries name lives in `this.buffers`, which is dropped with it.
            (Some(fd), _) => unsafe { register::register_pbuf_ring(fd, &reg) }?,
            // SAFETY: as for the kernel: the simulated one is held to the same
            // contract, and unregistered in `Drop` the same way.
            (None, Some(sim)) => unsafe { sim.register_pbuf_ring(&reg) }?,
            (None, None) => unreachable!("checked above"),
        }
        this.registered = true;
        this.local_tail = entries;
        this.claimed.fill(false);
        this.publish_tail();
        Ok(this)
    }

    /// The buffer group id, for `sqe.buf_group` with `IOSQE_BUFFER_SELECT`.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Number of buffers.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Length of each buffer.
    pub fn buf_len(&self) -> u32 {
        self.buf_len
    }

    /// True when `bid` has been claimed and not yet recycled.
    pub fn is_claimed(&self, bid: u16) -> bool {
        self.claimed.get(usize::from(bid)).copied().unwrap_or(false)
    }

    /// Records that the kernel handed buffer `bid` over, so it may be read and
    /// recycled. Returns false (and changes nothing) when `bid` is out of range
    /// or already claimed.
    ///
    /// # Safety
    ///
    /// `bid` must come from a CQE with `IORING_CQE_F_BUFFER` of an op that
    /// selected from this group on this ring (see [`crate::Cqe::buffer_id`]),
    /// and no earlier `claim` may have used that CQE: until then the kernel may
    /// be writing into the buffer.
    pub unsafe fn claim(&mut self, bid: u16) -> bool {
        match self.claimed.get_mut(usize::from(bid)) {
            Some(c) if !*c => {
                *c = true;
                true
            }
            _ => false,
        }
    }

    /// The first `len` bytes of claimed buffer `bid`: what the CQE's `res` said
    /// the kernel wrote. `None` when `bid` is not claimed or `len` exceeds the
    /// buffer length.
    pub fn buffer(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if !self.is_claimed(bid) || len > self.buf_len as usize {
            return None;
        }
        let start = self.buffer_ptr(bid);
        // SAFETY: `start..start+len` lies inside `self.buffers` (bid < entries,
        // len <= buf_len); the buffer is claimed, so the kernel no longer writes
        // it (claim's contract) and we hand out no `&mut` while `&self` lives.
        Some(unsafe { std::slice::from_raw_parts(start.as_ptr(), len) })
    }

    /// Claimed buffer `bid`, writable (e.g. to parse in place). `None` when
    /// `bid` is not claimed.
    pub fn buffer_mut(&mut self, bid: u16) -> Option<&mut [u8]> {
        if !self.is_claimed(bid) {
            return None;
        }
        let start = self.buffer_ptr(bid);
        // SAFETY: as in `buffer`, and `&mut self` makes the borrow exclusive.
        Some(unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), self.buf_len as usize) })
    }

    /// Hands claimed buffer `bid` back to the kernel: writes it into the next
    /// ring slot and publishes the tail.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `bid` is out of range or not claimed (recycling a
    /// buffer twice would let two ops write into it at once).
    pub fn recycle(&mut self, bid: u16) -> io::Result<()> {
        if !self.is_claimed(bid) {
            return Err(invalid("recycling a buffer id that is not claimed"));
        }
        // The slot at the tail is free: at most `entries - 1` ids are in the ring
        // (this one is not), and the kernel's window [head, tail) holds only ids
        // that are in the ring by our count.
        let slot = self.local_tail & (self.entries - 1);
        self.write_entry(slot, bid);
        self.claimed[usize::from(bid)] = false;
        self.local_tail = self.local_tail.wrapping_add(1);
        self.publish_tail();
        Ok(())
    }

    fn buffer_ptr(&self, bid: u16) -> NonNull<u8> {
        let offset = usize::from(bid) * self.buf_len as usize;
        // SAFETY: callers pass `bid < entries`, so the offset is inside `buffers`.
        unsafe { self.buffers.as_ptr().add(offset) }
    }

    /// Writes the address, length and id of buffer `bid` into ring slot `slot`,
    /// leaving bytes 14..16 of the entry (the tail, in entry 0) alone.
    fn write_entry(&mut self, slot: u16, bid: u16) {
        assert!(
            slot < self.entries && bid < self.entries,
            "slot or buffer id out of range"
        );
        let addr = self.buffer_ptr(bid).as_ptr() as u64;
        let entry: *mut abi::io_uring_buf = self.ring_mem.as_ptr().as_ptr().cast();
        // The kernel reads only slots in [head, tail); this one is outside it (see
        // `recycle`; at construction nothing is published). `resv` is not
        // written: in entry 0 it is the tail.
        // SAFETY: `slot < entries` keeps the entry inside page-aligned `ring_mem`
        // (8-byte aligned entries), unread by the kernel; `&mut self` excludes writers.
        unsafe {
            let entry = entry.add(usize::from(slot));
            (&raw mut (*entry).addr).write(addr);
            (&raw mut (*entry).len).write(self.buf_len);
            (&raw mut (*entry).bid).write(bid);
        }
    }

    fn tail(&self) -> &AtomicU16 {
        // SAFETY: the tail is the u16 at byte 14 of entry 0, inside `ring_mem`
        // and 2-byte aligned; it is only accessed atomically (by us and, with
        // acquire loads, by the kernel) and lives as long as `self`.
        unsafe {
            AtomicU16::from_ptr(
                self.ring_mem
                    .as_ptr()
                    .as_ptr()
                    .add(abi::BUF_RING_TAIL_OFFSET)
                    .cast(),
            )
        }
    }

    fn publish_tail(&self) {
        // Release pairs with the kernel's smp_load_acquire of the tail in
        // io_ring_buffer_select: the entries written above are visible to the
        // kernel before the tail that covers them.
        self.tail().store(self.local_tail, Ordering::Release);
    }
}

impl BufRing {
    /// Unregisters the group and frees the ring and every buffer, claimed or not.
    ///
    /// # Safety
    ///
    /// No op that may select a buffer from this group is in flight: every such
    /// op submitted on the ring has posted its final CQE (no
    /// `IORING_CQE_F_MORE`) and those CQEs have been reaped.
    pub unsafe fn release(mut self) {
        self.quiescent = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        let unregistered = !self.registered
            || match &self.sim {
                Some(sim) => sim.unregister_pbuf_ring(self.ring_fd.raw(), self.bgid).is_ok(),
                None => {
                    // SAFETY: `ring_fd` keeps the ring's fd open for as long as `self` lives.
                    let fd = unsafe { BorrowedFd::borrow_raw(self.ring_fd.raw()) };
                    register::unregister_pbuf_ring(fd, self.bgid).is_ok()
                }
            };
        if !unregistered {
            // The kernel may still read the ring and select buffers: keep both.
            return;
        }
        // SAFETY: last use of the field. After unregistering, the kernel reads no
        // more ring entries (a buffer it already selected holds its own address).
        unsafe { ManuallyDrop::drop(&mut self.ring_mem) };
        // An unclaimed buffer may have been selected by an op still in flight.
        if self.quiescent || self.claimed.iter().all(|c| *c) {
            // SAFETY: last use of the field; the kernel holds no buffer of the group
            // (all claimed, or `release`'s contract).
            unsafe { ManuallyDrop::drop(&mut self.buffers) };
        }
    }
}
