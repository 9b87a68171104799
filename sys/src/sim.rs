//! A simulated kernel: rings over ordinary memory, with the kernel's layout
//! and protocol, driven by the same [`Ring`](crate::ring::Ring) code.
//!
//! The simulator runs the kernel's side of each ring inside `io_uring_enter`:
//! it consumes SQEs, executes the operations it knows, posts CQEs (to its own
//! ring, or to another simulated ring for `MSG_RING`) and blocks waiters on a
//! condition variable. It exists so that ring logic and the runtime above it
//! can run under Miri, proptest and cargo-fuzz, and so that faults a real
//! kernel produces rarely can be produced on demand.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

use crate::abi;
use crate::cqe::Cqe;
use crate::ring::{RingConfig, index};
use crate::syscall::EnterWait;

/// Fake fd numbers start here, far above what a test process opens.
const FIRST_SIM_FD: RawFd = 1 << 24;

// Layout of the simulated ring region (one region, like IORING_FEAT_SINGLE_MMAP).
const SQ_HEAD: u32 = 0;
const SQ_TAIL: u32 = 4;
const SQ_MASK: u32 = 8;
const SQ_ENTRIES: u32 = 12;
const SQ_FLAGS: u32 = 16;
const SQ_DROPPED: u32 = 20;
const CQ_HEAD: u32 = 64;
const CQ_TAIL: u32 = 68;
const CQ_MASK: u32 = 72;
const CQ_ENTRIES: u32 = 76;
const CQ_OVERFLOW: u32 = 80;
const CQ_FLAGS: u32 = 84;
const CQES: u32 = 128;

/// A simulated kernel: a namespace of simulated rings that can message each other.
#[derive(Clone, Default)]
pub struct SimKernel {
    inner: Arc<KernelInner>,
}

#[derive(Default)]
struct KernelInner {
    rings: Mutex<HashMap<RawFd, Weak<RingShared>>>,
    next_fd: AtomicI32,
}

impl std::fmt::Debug for SimKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimKernel").finish_non_exhaustive()
    }
}

impl SimKernel {
    /// A new, empty simulated kernel.
    pub fn new() -> SimKernel {
        SimKernel::default()
    }
}

/// Heap memory with the alignment of a page, zeroed, freed on drop.
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    fn zeroed(len: usize) -> io::Result<Region> {
        let layout = Layout::from_size_align(len.max(1), 4096)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        NonNull::new(ptr).map(|ptr| Region { ptr, layout }).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
    }

    fn word(&self, offset: u32) -> &AtomicU32 {
        debug_assert!(offset as usize + 4 <= self.layout.size() && offset % 4 == 0);
        // SAFETY: offsets are the constants above (4-aligned, inside the region
        // sized in `SimRing::setup`); the region lives as long as `self`, and
        // every access to index words, ours or the Ring's, is atomic.
        unsafe { self.ptr.add(offset as usize).cast::<AtomicU32>().as_ref() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `Region::zeroed` with this layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

// SAFETY: a Region is an owned heap allocation; concurrent access goes through
// atomics (index words) or is ordered by the ring protocol (slots).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// The kernel's private state of one simulated ring.
struct KernelSide {
    /// CQEs that did not fit in the CQ, in order (the kernel's overflow list).
    overflow: VecDeque<Cqe>,
}

struct RingShared {
    fd: RawFd,
    kernel: Weak<KernelInner>,
    ring: Region,
    sqes: Region,
    sq_entries: u32,
    cq_entries: u32,
    sq_array: Option<u32>,
    state: Mutex<KernelSide>,
    posted: Condvar,
}

impl RingShared {
    fn lock(&self) -> MutexGuard<'_, KernelSide> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Posts a CQE, or queues it on the overflow list when the CQ is full.
    /// Called with the state lock held, so posts to one ring are serialized.
    fn post_locked(&self, side: &mut KernelSide, cqe: Cqe) {
        if !side.overflow.is_empty() || !self.try_write_cqe(cqe) {
            side.overflow.push_back(cqe);
            self.ring.word(SQ_FLAGS).fetch_or(abi::IORING_SQ_CQ_OVERFLOW, Ordering::Relaxed);
        }
        self.posted.notify_all();
    }

    fn post(&self, cqe: Cqe) {
        let mut side = self.lock();
        self.post_locked(&mut side, cqe);
    }

    fn try_write_cqe(&self, cqe: Cqe) -> bool {
        // Acquire pairs with the Ring's release of the CQ head: the consumer has
        // finished reading the slots before head.
        let head = self.ring.word(CQ_HEAD).load(Ordering::Acquire);
        let tail = self.ring.word(CQ_TAIL).load(Ordering::Relaxed);
        if index::space(head, tail, self.cq_entries) == 0 {
            return false;
        }
        let slot = index::slot(tail, self.cq_entries - 1);
        // SAFETY: `slot < cq_entries`, inside the CQE array of the region; the slot
        // is free (tail - head < entries) and only the lock holder writes slots.
        unsafe {
            self.ring.ptr.add(CQES as usize).cast::<abi::io_uring_cqe>().add(slot as usize).write(cqe.to_raw())
        };
        // Release pairs with the Ring's acquire of the CQ tail: the slot write is
        // visible before the new tail.
        self.ring.word(CQ_TAIL).store(tail.wrapping_add(1), Ordering::Release);
        true
    }

    /// Moves overflowed CQEs into the CQ while room allows.
    fn flush_overflow(&self, side: &mut KernelSide) {
        while let Some(&cqe) = side.overflow.front() {
            if !self.try_write_cqe(cqe) {
                return;
            }
            side.overflow.pop_front();
        }
        self.ring.word(SQ_FLAGS).fetch_and(!abi::IORING_SQ_CQ_OVERFLOW, Ordering::Relaxed);
    }

    fn cq_ready(&self) -> u32 {
        let head = self.ring.word(CQ_HEAD).load(Ordering::Acquire);
        index::len(head, self.ring.word(CQ_TAIL).load(Ordering::Acquire))
    }

    /// Reads the SQE at SQ index `idx`, through the index array if there is one.
    fn read_sqe(&self, idx: u32) -> abi::io_uring_sqe {
        let mask = self.sq_entries - 1;
        let slot = match self.sq_array {
            Some(array) => {
                // SAFETY: the array has `sq_entries` u32s at `array`, inside the region;
                // the Ring wrote it before publishing the tail we acquired.
                let v = unsafe { self.ring.ptr.add(array as usize).cast::<u32>().add(index::slot(idx, mask) as usize).read() };
                v & mask
            }
            None => index::slot(idx, mask),
        };
        // SAFETY: `slot < sq_entries`, inside the SQE region; published by the
        // Ring's release of the SQ tail, which `submit` acquired.
        unsafe { self.sqes.ptr.cast::<abi::io_uring_sqe>().add(slot as usize).read() }
    }

    /// Consumes up to `to_submit` SQEs and executes them. Returns how many.
    fn submit(&self, to_submit: u32) -> u32 {
        // Acquire pairs with the Ring's release of the SQ tail.
        let tail = self.ring.word(SQ_TAIL).load(Ordering::Acquire);
        let head = self.ring.word(SQ_HEAD).load(Ordering::Relaxed);
        let n = index::len(head, tail).min(to_submit);
        for i in 0..n {
            let sqe = self.read_sqe(head.wrapping_add(i));
            self.execute(&sqe);
            // Release pairs with the Ring's acquire of the SQ head: the SQE was
            // read before its slot is handed back.
            self.ring.word(SQ_HEAD).store(head.wrapping_add(i + 1), Ordering::Release);
        }
        n
    }

    fn complete(&self, sqe: &abi::io_uring_sqe, res: i32, flags: u32) {
        if res >= 0 && sqe.flags & abi::IOSQE_CQE_SKIP_SUCCESS != 0 {
            return;
        }
        self.post(Cqe { user_data: sqe.user_data, res, flags });
    }

    fn execute(&self, sqe: &abi::io_uring_sqe) {
        match sqe.opcode {
            abi::IORING_OP_NOP => self.complete(sqe, 0, 0),
            abi::IORING_OP_MSG_RING => {
                let res = self.msg_ring(sqe);
                self.complete(sqe, res, 0);
            }
            _ => self.complete(sqe, -libc::EINVAL, 0),
        }
    }

    fn msg_ring(&self, sqe: &abi::io_uring_sqe) -> i32 {
        if sqe.addr_or_splice_off_in != abi::IORING_MSG_DATA {
            return -libc::EINVAL;
        }
        let known = abi::IORING_MSG_RING_CQE_SKIP | abi::IORING_MSG_RING_FLAGS_PASS;
        if sqe.op_flags & !known != 0 {
            return -libc::EINVAL;
        }
        let Some(kernel) = self.kernel.upgrade() else { return -libc::EBADF };
        let target = kernel.rings.lock().unwrap().get(&sqe.fd).and_then(Weak::upgrade);
        let Some(target) = target else { return -libc::EBADF };
        let flags = if sqe.op_flags & abi::IORING_MSG_RING_FLAGS_PASS != 0 { sqe.splice_fd_in_or_file_index } else { 0 };
        target.post(Cqe { user_data: sqe.off_or_addr2, res: sqe.len as i32, flags });
        0
    }
}

/// One simulated ring: the kernel side of a [`Ring`](crate::ring::Ring) built
/// with [`Ring::sim`](crate::ring::Ring::sim).
pub struct SimRing {
    shared: Arc<RingShared>,
}

impl std::fmt::Debug for SimRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRing").field("fd", &self.shared.fd).finish_non_exhaustive()
    }
}

impl SimRing {
    /// Allocates ring memory laid out like the kernel's and fills `params`.
    pub(crate) fn setup(kernel: &SimKernel, config: &RingConfig, params: &mut abi::io_uring_params) -> io::Result<SimRing> {
        if config.sq_entries == 0 || config.sq_entries > 32768 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let sq_entries = config.sq_entries.next_power_of_two();
        let cq_entries = if config.cq_entries == 0 { sq_entries * 2 } else { config.cq_entries.next_power_of_two() };
        if cq_entries < sq_entries {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let no_sqarray = config.no_sqarray;
        let array_off = CQES + cq_entries * 16;
        let ring_len = array_off as usize + if no_sqarray { 0 } else { sq_entries as usize * 4 };
        let ring = Region::zeroed(ring_len)?;
        let sqes = Region::zeroed(sq_entries as usize * 64)?;
        ring.word(SQ_MASK).store(sq_entries - 1, Ordering::Relaxed);
        ring.word(SQ_ENTRIES).store(sq_entries, Ordering::Relaxed);
        ring.word(CQ_MASK).store(cq_entries - 1, Ordering::Relaxed);
        ring.word(CQ_ENTRIES).store(cq_entries, Ordering::Relaxed);

        *params = abi::io_uring_params::default();
        params.sq_entries = sq_entries;
        params.cq_entries = cq_entries;
        params.flags = abi::IORING_SETUP_CQSIZE | if no_sqarray { abi::IORING_SETUP_NO_SQARRAY } else { 0 };
        params.features = abi::IORING_FEAT_SINGLE_MMAP | abi::IORING_FEAT_NODROP | abi::IORING_FEAT_EXT_ARG | abi::IORING_FEAT_CQE_SKIP;
        params.sq_off = abi::io_sqring_offsets {
            head: SQ_HEAD,
            tail: SQ_TAIL,
            ring_mask: SQ_MASK,
            ring_entries: SQ_ENTRIES,
            flags: SQ_FLAGS,
            dropped: SQ_DROPPED,
            array: if no_sqarray { 0 } else { array_off },
            ..Default::default()
        };
        params.cq_off = abi::io_cqring_offsets {
            head: CQ_HEAD,
            tail: CQ_TAIL,
            ring_mask: CQ_MASK,
            ring_entries: CQ_ENTRIES,
            overflow: CQ_OVERFLOW,
            cqes: CQES,
            flags: CQ_FLAGS,
            ..Default::default()
        };

        let fd = FIRST_SIM_FD + kernel.inner.next_fd.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(RingShared {
            fd,
            kernel: Arc::downgrade(&kernel.inner),
            ring,
            sqes,
            sq_entries,
            cq_entries,
            sq_array: if no_sqarray { None } else { Some(array_off) },
            state: Mutex::new(KernelSide { overflow: VecDeque::new() }),
            posted: Condvar::new(),
        });
        kernel.inner.rings.lock().unwrap().insert(fd, Arc::downgrade(&shared));
        Ok(SimRing { shared })
    }

    /// Base pointers of the SQ ring, CQ ring and SQE regions.
    pub(crate) fn regions(&self) -> (NonNull<u8>, NonNull<u8>, NonNull<abi::io_uring_sqe>) {
        (self.shared.ring.ptr, self.shared.ring.ptr, self.shared.sqes.ptr.cast())
    }

    /// The ring's fake fd number (unique within its [`SimKernel`]).
    pub fn fd(&self) -> RawFd {
        self.shared.fd
    }

    /// A value that keeps this ring addressable by `MSG_RING` while it lives.
    pub(crate) fn keep_alive(&self) -> Arc<dyn Any + Send + Sync> {
        Arc::new(self.shared.clone())
    }

    /// CQEs held on the simulated kernel's overflow list.
    pub fn overflowed(&self) -> usize {
        self.shared.lock().overflow.len()
    }

    /// The kernel side of `io_uring_enter`.
    pub(crate) fn enter(&self, to_submit: u32, min_complete: u32, flags: u32, wait: EnterWait) -> io::Result<(u32, bool)> {
        let submitted = self.shared.submit(to_submit);
        if flags & abi::IORING_ENTER_GETEVENTS == 0 {
            return Ok((submitted, false));
        }
        let deadline = match wait {
            EnterWait::Forever => None,
            EnterWait::Timeout(d) => Some(Instant::now().checked_add(d)),
        };
        let mut side = self.shared.lock();
        loop {
            self.shared.flush_overflow(&mut side);
            if self.shared.cq_ready() >= min_complete {
                return Ok((submitted, false));
            }
            match deadline {
                None | Some(None) => side = self.shared.posted.wait(side).unwrap_or_else(|p| p.into_inner()),
                Some(Some(at)) => {
                    let now = Instant::now();
                    if now >= at {
                        return Ok((submitted, true));
                    }
                    side = self.shared.posted.wait_timeout(side, at - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
    }
}

impl Drop for SimRing {
    fn drop(&mut self) {
        if let Some(kernel) = self.shared.kernel.upgrade() {
            kernel.rings.lock().unwrap().remove(&self.shared.fd);
        }
    }
}
