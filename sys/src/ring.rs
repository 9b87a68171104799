//! The ring: submission and completion queues shared with the kernel.
//!
//! A [`Ring`] owns the io_uring fd and its mappings (or, for tests, a ring of
//! the simulated kernel in [`crate::sim`], which lays out the same memory and
//! follows the same protocol). The queue code here is the same for both.
//!
//! # Memory ordering
//!
//! The SQ and CQ are single-producer/single-consumer queues whose other end is
//! the kernel. The kernel's side (`io_uring/io_uring.c`) uses
//! `smp_load_acquire`/`smp_store_release` on the indices; each ordering below
//! says which of those it pairs with. Index arithmetic is wrapping `u32` and
//! lives in [`index`] as pure functions.
#![allow(unsafe_code)]

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{self, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::abi;
use crate::cqe::{Cqe, RingCqe, RingId};
use crate::mmap::Mmap;
use crate::msg::{self, Tag, UserData};
use crate::os::Credentials;
use crate::sim::{SimKernel, SimRing};
use crate::sqe::{Sqe, SqeFlags};
use crate::syscall::{self, EnterWait};

/// Wrapping `u32` index arithmetic of the rings, shared with the simulated kernel.
///
/// Heads and tails are free-running counters; only `index & mask` addresses a
/// slot. All functions are total: any pair of `u32` values gives an answer.
pub mod index {
    /// Number of entries between `head` and `tail` (tail may have wrapped past `u32::MAX`).
    pub const fn len(head: u32, tail: u32) -> u32 {
        tail.wrapping_sub(head)
    }

    /// Free slots in a queue of `entries` slots.
    ///
    /// Saturates at zero if the indices are inconsistent (a corrupt ring never
    /// makes a producer write past the consumer).
    pub const fn space(head: u32, tail: u32, entries: u32) -> u32 {
        entries.saturating_sub(len(head, tail))
    }

    /// The slot an index addresses.
    pub const fn slot(index: u32, mask: u32) -> u32 {
        index & mask
    }

    /// True when `entries` is a valid ring size (a power of two, at least one).
    pub const fn valid_entries(entries: u32) -> bool {
        entries.is_power_of_two()
    }
}

/// How to set a ring up. [`RingConfig::default`] asks for the best flags; setup
/// drops the ones the running kernel rejects (see [`Ring::with_config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// SQ size (rounded up to a power of two by the kernel). At least 1.
    pub sq_entries: u32,
    /// CQ size; `0` means twice the SQ (the protocol needs CQ ≥ 2 × SQ).
    pub cq_entries: u32,
    /// `IORING_SETUP_SINGLE_ISSUER`: only the creating thread submits.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN`: completions run only when the owner enters
    /// with `GETEVENTS`. Implies `single_issuer`; not with SQPOLL.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` + `TASKRUN_FLAG`: no IPI to interrupt the owner.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL`: keep submitting a batch after one SQE fails.
    pub submit_all: bool,
    /// `IORING_SETUP_NO_SQARRAY`: no SQ index array.
    pub no_sqarray: bool,
    /// `IORING_SETUP_SQPOLL` with this idle time before the poller sleeps.
    /// The kernel's submission thread acts with the credentials the ring was
    /// set up with; the ring refuses entries once they changed (see
    /// [`Ring`]'s "SQPOLL and credentials").
    pub sqpoll_idle: Option<Duration>,
    /// With SQPOLL: share the kernel submission thread of this ring (its fd,
    /// which must stay open during setup; `IORING_SETUP_ATTACH_WQ`) instead
    /// of starting one more.
    pub sqpoll_attach: Option<RawFd>,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            sq_entries: 256,
            cq_entries: 0,
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: true,
            submit_all: true,
            no_sqarray: true,
            sqpoll_idle: None,
            sqpoll_attach: None,
        }
    }
}

impl RingConfig {
    /// A default configuration with `sq_entries` SQ slots.
    pub fn with_entries(sq_entries: u32) -> Self {
        RingConfig {
            sq_entries,
            ..RingConfig::default()
        }
    }

    /// The optional setup flags asked for, newest kernel feature first: the
    /// order in which setup drops them when the kernel answers `EINVAL`.
    fn optional_flags(&self) -> Vec<u32> {
        let mut flags = Vec::new();
        if self.no_sqarray {
            flags.push(abi::IORING_SETUP_NO_SQARRAY); // 6.6
        }
        if self.defer_taskrun && self.sqpoll_idle.is_none() {
            flags.push(abi::IORING_SETUP_DEFER_TASKRUN); // 6.1
        }
        if self.single_issuer || self.defer_taskrun {
            flags.push(abi::IORING_SETUP_SINGLE_ISSUER); // 6.0
        }
        if self.coop_taskrun && self.sqpoll_idle.is_none() {
            flags.push(abi::IORING_SETUP_COOP_TASKRUN | abi::IORING_SETUP_TASKRUN_FLAG); // 5.19
        }
        if self.submit_all {
            flags.push(abi::IORING_SETUP_SUBMIT_ALL); // 5.18
        }
        flags
    }
}

/// Why `io_uring_setup` failed, with the likely cause named.
#[derive(Debug)]
pub struct SetupError {
    source: io::Error,
    flags: u32,
}

impl SetupError {
    /// The `errno` the kernel returned.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// True when io_uring as a whole is unavailable here (not a bad argument):
    /// the runtime may fall back to its portable backend.
    pub fn io_uring_unavailable(&self) -> bool {
        matches!(
            self.raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::ENOMEM)
        )
    }

    /// A sentence naming the likely cause of this errno.
    pub fn likely_cause(&self) -> &'static str {
        match self.raw_os_error() {
            Some(libc::ENOSYS) => {
                "this kernel has no io_uring (built without CONFIG_IO_URING, or older than 5.1)"
            }
            Some(libc::EPERM | libc::EACCES) => {
                "io_uring is forbidden here: a seccomp profile (containers often block it) or the sysctl kernel.io_uring_disabled"
            }
            Some(libc::ENOMEM) => {
                "the kernel could not pin ring memory: raise the memlock limit (ulimit -l) or ask for fewer entries"
            }
            Some(libc::EINVAL) => {
                "the kernel rejected the arguments: entries must be 1..=32768 and the flags supported"
            }
            Some(libc::EMFILE | libc::ENFILE) => "no file descriptor left for the ring (RLIMIT_NOFILE)",
            None if self.source.kind() == io::ErrorKind::InvalidData => {
                "the kernel described a ring layout that fails the checks setup makes before using it"
            }
            None => "the ring's memory could not be set up as required",
            _ => "unexpected error from io_uring_setup",
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.raw_os_error().is_some() {
            "io_uring_setup failed"
        } else {
            "io_uring ring setup failed"
        };
        write!(
            f,
            "{what} (flags {:#x}): {}: {}",
            self.flags,
            self.source,
            self.likely_cause()
        )
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<SetupError> for io::Error {
    fn from(e: SetupError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// Why an SQE could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The SQ stayed full even after submitting what it held (the kernel is
    /// refusing work, e.g. `EBUSY` while the CQ overflows): reap completions first.
    Full,
    /// The entry points at user memory or names an fd: only its owner (the op
    /// API, [`Ring::push_msg_ring`], or the `unsafe` [`Ring::push_unchecked`])
    /// may push it.
    NeedsOwner,
    /// The entry's completion would carry an op's tag, which only the op
    /// table may put in flight.
    ReservedTag,
    /// The ring's ops are tracked by another op table, or the table tracks
    /// another ring's: each ring has exactly one.
    OtherTable,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("submission queue full"),
            PushError::NeedsOwner => {
                f.write_str("entry references user memory or an fd; submit it through an owning op")
            }
            PushError::ReservedTag => {
                f.write_str("entry carries an op's tag, which only the op table may use")
            }
            PushError::OtherTable => f.write_str("the ring's ops are tracked by another op table"),
        }
    }
}

impl std::error::Error for PushError {}

/// A shareable reference to a ring's fd: the target of `MSG_RING` from other rings.
///
/// It keeps the fd open (not the mappings) for as long as any clone lives, so
/// a message can never reach an fd number that was closed and reused.
#[derive(Clone)]
pub struct RingFd {
    raw: RawFd,
    _keep: Arc<dyn Any + Send + Sync>,
}

impl RingFd {
    /// The fd number, valid while this value lives.
    pub fn raw(&self) -> RawFd {
        self.raw
    }
}

impl fmt::Debug for RingFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RingFd").field(&self.raw).finish()
    }
}

/// Who answers `io_uring_enter` for this ring.
enum Kernel {
    /// The running kernel. Field order is drop order: mappings before the fd.
    Linux { _maps: Vec<Mmap>, fd: Arc<OwnedFd> },
    /// The simulated kernel of [`crate::sim`]; it owns the ring memory.
    Sim(SimRing),
}

/// A pointer to an index word shared with the kernel.
#[derive(Clone, Copy)]
struct Shared(NonNull<AtomicU32>);

impl Shared {
    /// # Safety
    ///
    /// `base + offset` must be a 4-byte aligned word inside a region that
    /// outlives every use of the returned value (the `Ring` holds the region).
    unsafe fn at(base: NonNull<u8>, offset: u32) -> Shared {
        // SAFETY: in bounds of the region by the caller's contract.
        Shared(unsafe { base.add(offset as usize) }.cast())
    }

    fn get(&self) -> &AtomicU32 {
        // SAFETY: established by `Shared::at`: aligned, in a live region that the
        // Ring owns; the kernel accesses it only atomically too.
        unsafe { self.0.as_ref() }
    }
}

struct Sq {
    head: Shared,
    tail: Shared,
    flags: Shared,
    dropped: Shared,
    sqes: NonNull<abi::io_uring_sqe>,
    mask: u32,
    entries: u32,
    /// Our copy of the tail: we are the only producer.
    local_tail: u32,
}

struct Cq {
    head: Shared,
    tail: Shared,
    overflow: Shared,
    cqes: NonNull<abi::io_uring_cqe>,
    mask: u32,
    entries: u32,
    /// Our copy of the head: we are the only consumer.
    local_head: u32,
}

/// An io_uring instance: its fd, its SQ and CQ, on the kernel or on the simulator.
///
/// A `Ring` is `Send` but not `Sync`: one thread at a time produces SQEs and
/// consumes CQEs. With `SINGLE_ISSUER` (the default) that thread must be the
/// one that created it.
///
/// # SQPOLL and credentials
///
/// Without SQPOLL the kernel runs each entry with the credentials of the
/// thread that submits it. With SQPOLL its submission thread runs them with
/// the credentials the ring was set up with, whatever the submitter's are by
/// then: after a `setuid` that drops root, the ring would still open root's
/// files. So an SQPOLL ring (on the kernel) records the setting-up thread's
/// credentials ([`Credentials`]: effective uid and gid, supplementary
/// groups) before `io_uring_setup`, and each time it is about to publish new
/// entries (every submit or wait that has some) it compares them with the
/// submitting thread's (three cheap system calls per batch, none when the
/// batch is empty, none ever on other rings). If they differ, it publishes
/// only the entries that use no credentials ([`Sqe::uses_credentials`]:
/// messages and cancellations) and completes each of the others itself with
/// `-EACCES` (`PermissionDenied`), which [`Ring::pop_cqe`] hands out like a
/// kernel completion: the kernel never saw those entries, so what they point
/// at is free again. Entries published before the change run as the kernel
/// runs them.
pub struct Ring {
    sq: Sq,
    cq: Cq,
    params: abi::io_uring_params,
    fd: RingFd,
    kernel: Kernel,
    /// Unique in the process: what a [`RingCqe`] names as its origin.
    id: RingId,
    /// Set once an [`InFlight`](crate::op::InFlight) table tracks this ring's ops.
    table_claimed: bool,
    /// An SQPOLL ring's setup credentials, and the completions it posted in
    /// the kernel's place; `None` on every other ring.
    sqpoll_creds: Option<Box<SqpollCreds>>,
}

/// What an SQPOLL ring keeps to refuse entries once the submitter's
/// credentials changed (see [`Ring`]'s "SQPOLL and credentials").
#[derive(Debug)]
struct SqpollCreds {
    /// The credentials of the thread that set the ring up, read before setup.
    at_setup: Credentials,
    /// `-EACCES` completions of the entries the ring refused, not yet popped.
    refused: VecDeque<Cqe>,
}

/// The next [`RingId`]; ids are never reused.
static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

// SAFETY: every pointer in `Sq`/`Cq` points into memory owned by `kernel`,
// which moves with the Ring; the kernel side is thread-agnostic. `Ring` has no
// `&self` method that mutates through those pointers except atomics, so it is
// not `Sync`, only `Send`.
unsafe impl Send for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.fd.raw)
            .field("sq_entries", &self.sq.entries)
            .field("cq_entries", &self.cq.entries)
            .field("setup_flags", &format_args!("{:#x}", self.params.flags))
            .field("simulated", &matches!(self.kernel, Kernel::Sim(_)))
            .finish()
    }
}

/// The lengths of the three regions a ring maps, from the kernel's `params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionSizes {
    /// Bytes of the SQ ring region (indices, flags, and the index array if any).
    pub sq_ring: usize,
    /// Bytes of the CQ ring region (indices and the CQE array).
    pub cq_ring: usize,
    /// Bytes of the SQE array.
    pub sqes: usize,
    /// True when SQ and CQ share one mapping (`IORING_FEAT_SINGLE_MMAP`).
    pub single_mmap: bool,
}

/// An `InvalidData` error for a `params` field that fails a layout check.
fn bad_layout(field: &str, why: std::fmt::Arguments<'_>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("io_uring_params.{field}: {why}; refusing to use the ring"),
    )
}

/// Which mapping a span of a layout lives in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    SqRing,
    CqRing,
}

/// One field or array of the ring layout: `len` bytes at `offset` of `region`.
struct Span {
    field: &'static str,
    region: Region,
    offset: u32,
    len: usize,
    align: u32,
}

impl RegionSizes {
    /// Computes the region sizes the kernel described in `params`, after
    /// checking that the layout is one the ring code can trust (a pure
    /// function: nothing is mapped or read).
    ///
    /// Checked: `sq_entries` and `cq_entries` are non-zero powers of two;
    /// every offset the ring uses (`sq_off.{head, tail, ring_mask,
    /// ring_entries, flags, dropped, array}`, `cq_off.{head, tail, ring_mask,
    /// ring_entries, overflow, cqes}`) is aligned for its field (4 bytes for
    /// an index word and the SQ index array, 8 for the CQE array) and lies,
    /// with its field, inside its region; the CQE array and the SQ index
    /// array overlap no index word and, in a shared mapping, not each other.
    /// (`sq_off.array` is ignored with `IORING_SETUP_NO_SQARRAY`.) Each
    /// region's size is where its furthest field ends, so a mapping of that
    /// size holds every field, or fails (the kernel refuses a length past its
    /// region). The `ring_mask` and `ring_entries` *values* live in the
    /// mapping and are checked once it exists (see [`Ring::with_config`]).
    ///
    /// # Errors
    ///
    /// `InvalidData`, naming the first field that fails a check.
    pub fn from_params(p: &abi::io_uring_params) -> io::Result<RegionSizes> {
        for (field, entries) in [("sq_entries", p.sq_entries), ("cq_entries", p.cq_entries)] {
            if !index::valid_entries(entries) {
                return Err(bad_layout(
                    field,
                    format_args!("{entries} entries is not a non-zero power of two"),
                ));
            }
        }
        let cqe_size: usize = if p.flags & abi::IORING_SETUP_CQE32 != 0 {
            32
        } else {
            16
        };
        let sqe_size: usize = if p.flags & abi::IORING_SETUP_SQE128 != 0 {
            128
        } else {
            64
        };
        let single_mmap = p.features & abi::IORING_FEAT_SINGLE_MMAP != 0;
        let has_array = p.flags & abi::IORING_SETUP_NO_SQARRAY == 0;
        let (so, co) = (&p.sq_off, &p.cq_off);
        let cq_region = if single_mmap {
            Region::SqRing
        } else {
            Region::CqRing
        };
        let word = |field, region, offset| Span {
            field,
            region,
            offset,
            len: 4,
            align: 4,
        };
        let too_big = |field| bad_layout(field, format_args!("the array does not fit in the address space"));
        let mut spans = vec![
            word("sq_off.head", Region::SqRing, so.head),
            word("sq_off.tail", Region::SqRing, so.tail),
            word("sq_off.ring_mask", Region::SqRing, so.ring_mask),
            word("sq_off.ring_entries", Region::SqRing, so.ring_entries),
            word("sq_off.flags", Region::SqRing, so.flags),
            word("sq_off.dropped", Region::SqRing, so.dropped),
            word("cq_off.head", cq_region, co.head),
            word("cq_off.tail", cq_region, co.tail),
            word("cq_off.ring_mask", cq_region, co.ring_mask),
            word("cq_off.ring_entries", cq_region, co.ring_entries),
            word("cq_off.overflow", cq_region, co.overflow),
        ];
        let index_words = spans.len();
        spans.push(Span {
            field: "cq_off.cqes",
            region: cq_region,
            offset: co.cqes,
            len: (p.cq_entries as usize)
                .checked_mul(cqe_size)
                .ok_or_else(|| too_big("cq_off.cqes"))?,
            align: 8,
        });
        if has_array {
            spans.push(Span {
                field: "sq_off.array",
                region: Region::SqRing,
                offset: so.array,
                len: (p.sq_entries as usize)
                    .checked_mul(4)
                    .ok_or_else(|| too_big("sq_off.array"))?,
                align: 4,
            });
        }
        // Each region is as long as the furthest field in it reaches, as the
        // kernel sizes it; with one mapping, SQ and CQ share the larger size.
        let (mut sq_ring, mut cq_ring) = (0usize, 0usize);
        for span in &spans {
            if !span.offset.is_multiple_of(span.align) {
                return Err(bad_layout(
                    span.field,
                    format_args!("offset {:#x} is not {}-byte aligned", span.offset, span.align),
                ));
            }
            let end = (span.offset as usize)
                .checked_add(span.len)
                .ok_or_else(|| too_big(span.field))?;
            let size = match span.region {
                Region::SqRing => &mut sq_ring,
                Region::CqRing => &mut cq_ring,
            };
            *size = (*size).max(end);
        }
        // The arrays are written and read as plain memory: no index word may
        // sit inside one, and the two may not overlap.
        for (i, array) in spans.iter().enumerate().skip(index_words) {
            for other in spans.iter().take(i) {
                let (a0, a1) = (array.offset as usize, array.offset as usize + array.len);
                let (b0, b1) = (other.offset as usize, other.offset as usize + other.len);
                if array.region == other.region && a0 < b1 && b0 < a1 {
                    return Err(bad_layout(
                        array.field,
                        format_args!(
                            "the array at {a0:#x}..{a1:#x} overlaps {} at {b0:#x}..{b1:#x}",
                            other.field
                        ),
                    ));
                }
            }
        }
        if single_mmap {
            cq_ring = sq_ring;
        }
        Ok(RegionSizes {
            sq_ring,
            cq_ring,
            sqes: (p.sq_entries as usize)
                .checked_mul(sqe_size)
                .ok_or_else(|| too_big("sq_entries"))?,
            single_mmap,
        })
    }
}

impl Ring {
    /// Sets up a ring with `sq_entries` SQ slots and the best flags this kernel takes.
    ///
    /// # Errors
    ///
    /// A [`SetupError`] naming the likely cause (no io_uring, seccomp, memlock, bad entries).
    pub fn new(sq_entries: u32) -> Result<Ring, SetupError> {
        Ring::with_config(&RingConfig::with_entries(sq_entries))
    }

    /// Sets up a ring as `config` asks, dropping the newest optional flag and
    /// retrying each time the kernel answers `EINVAL`.
    ///
    /// # Errors
    ///
    /// A [`SetupError`] naming the likely cause; `EINVAL` only when even the
    /// plainest setup was rejected (bad entry counts). `InvalidData` (no
    /// errno) when the layout the kernel described fails the checks of
    /// [`RegionSizes::from_params`], or the `ring_mask`/`ring_entries` words in
    /// the mapping disagree with it; the error names the field. A failed
    /// `madvise(MADV_DONTFORK)` of a mapping fails setup with its errno. On
    /// any error the mappings made so far are unmapped and the fd is closed.
    pub fn with_config(config: &RingConfig) -> Result<Ring, SetupError> {
        // Read before setup: the kernel takes the credentials during it, so a
        // change in between makes the ring refuse too soon, never too late.
        let at_setup = match config.sqpoll_idle {
            Some(_) => Some(Credentials::current().map_err(|source| SetupError {
                source,
                flags: abi::IORING_SETUP_SQPOLL,
            })?),
            None => None,
        };
        let mut optional = config.optional_flags();
        loop {
            let cq_entries = if config.cq_entries == 0 {
                config.sq_entries.saturating_mul(2)
            } else {
                config.cq_entries
            };
            let mut params = abi::io_uring_params {
                flags: optional.iter().fold(abi::IORING_SETUP_CQSIZE, |acc, f| acc | f),
                cq_entries,
                ..Default::default()
            };
            if let Some(idle) = config.sqpoll_idle {
                params.flags |= abi::IORING_SETUP_SQPOLL;
                params.sq_thread_idle = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX);
                if let Some(fd) = config.sqpoll_attach.and_then(|fd| u32::try_from(fd).ok()) {
                    params.flags |= abi::IORING_SETUP_ATTACH_WQ;
                    params.wq_fd = fd;
                }
            }
            let flags = params.flags;
            match syscall::setup(config.sq_entries, &mut params) {
                Ok(fd) => {
                    let mut ring =
                        Ring::map_kernel(fd, params).map_err(|source| SetupError { source, flags })?;
                    ring.sqpoll_creds = at_setup.map(|at_setup| {
                        Box::new(SqpollCreds {
                            at_setup,
                            refused: VecDeque::new(),
                        })
                    });
                    return Ok(ring);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !optional.is_empty() => {
                    optional.remove(0);
                }
                Err(source) => return Err(SetupError { source, flags }),
            }
        }
    }

    fn map_kernel(fd: OwnedFd, params: abi::io_uring_params) -> io::Result<Ring> {
        // Checked before anything is mapped; on any error below, the mappings
        // made so far and the fd drop (unmapped, closed) on the way out.
        let sizes = RegionSizes::from_params(&params)?;
        let sq_map = Mmap::ring_region(fd.as_fd(), abi::IORING_OFF_SQ_RING, sizes.sq_ring)?;
        let cq_map = if sizes.single_mmap {
            None
        } else {
            Some(Mmap::ring_region(
                fd.as_fd(),
                abi::IORING_OFF_CQ_RING,
                sizes.cq_ring,
            )?)
        };
        let sqe_map = Mmap::ring_region(fd.as_fd(), abi::IORING_OFF_SQES, sizes.sqes)?;
        let sq_base = sq_map.as_ptr();
        let cq_base = cq_map.as_ref().map_or(sq_base, Mmap::as_ptr);
        let sqes = sqe_map.as_ptr().cast();
        let fd = Arc::new(fd);
        let ring_fd = RingFd {
            raw: fd.as_raw_fd(),
            _keep: fd.clone(),
        };
        let mut maps = vec![sq_map, sqe_map];
        maps.extend(cq_map);
        // SAFETY: `from_params` accepted `params`, and the bases come from mappings
        // of the sizes it computed from them; the mappings move into the Ring with
        // the pointers.
        unsafe {
            Ring::from_parts(
                params,
                sq_base,
                cq_base,
                sqes,
                ring_fd,
                Kernel::Linux { _maps: maps, fd },
            )
        }
    }

    /// Sets up a ring on the simulated kernel `kernel`, with the same layout and
    /// protocol as a kernel ring.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad entry count, or a fault the simulator was told to inject.
    pub fn sim(kernel: &SimKernel, config: &RingConfig) -> io::Result<Ring> {
        Ring::sim_adjusted(kernel, config, |_| {})
    }

    /// [`Ring::sim`], with `adjust` applied to the parameters the simulator
    /// filled in before the ring trusts them (tests feed it bad layouts).
    fn sim_adjusted(
        kernel: &SimKernel,
        config: &RingConfig,
        adjust: impl FnOnce(&mut abi::io_uring_params),
    ) -> io::Result<Ring> {
        let mut params = abi::io_uring_params::default();
        let sim = SimRing::setup(kernel, config, &mut params)?;
        adjust(&mut params);
        // On an error the SimRing drops, unregistering the ring and freeing its memory.
        let sizes = RegionSizes::from_params(&params)?;
        if !sizes.single_mmap || sizes.sq_ring > sim.ring_len() || sizes.sqes > sim.sqes_len() {
            return Err(bad_layout(
                "features",
                format_args!(
                    "the layout needs {sizes:?}, more than the simulated regions of {} and {} bytes",
                    sim.ring_len(),
                    sim.sqes_len()
                ),
            ));
        }
        let (sq_base, cq_base, sqes) = sim.regions();
        let ring_fd = RingFd {
            raw: sim.fd(),
            _keep: sim.keep_alive(),
        };
        // SAFETY: `from_params` accepted `params`, and the SimRing (moved into the
        // Ring, which keeps it alive) allocated one region for both rings and one
        // for the SQEs, each at least as large as the sizes computed from them.
        unsafe { Ring::from_parts(params, sq_base, cq_base, sqes, ring_fd, Kernel::Sim(sim)) }
    }

    /// Builds the ring over its regions, after checking the `ring_mask` and
    /// `ring_entries` words the kernel wrote there against `params`.
    ///
    /// # Errors
    ///
    /// `InvalidData` when a mapped `ring_entries` differs from `params` or a
    /// `ring_mask` is not `entries - 1`; `kernel` (and with it the regions) is
    /// dropped.
    ///
    /// # Safety
    ///
    /// [`RegionSizes::from_params`] must have accepted `params`, and `sq_base`,
    /// `cq_base` and `sqes` must point at regions of at least the sizes it
    /// computed (`cq_base == sq_base` for a single mapping), owned by `kernel`.
    unsafe fn from_parts(
        params: abi::io_uring_params,
        sq_base: NonNull<u8>,
        cq_base: NonNull<u8>,
        sqes: NonNull<abi::io_uring_sqe>,
        fd: RingFd,
        kernel: Kernel,
    ) -> io::Result<Ring> {
        let so = params.sq_off;
        let co = params.cq_off;
        // SAFETY: (every `Shared::at` below) `from_params` checked that each offset
        // is 4-byte aligned and that the word lies inside its region, which the
        // caller guarantees is mapped and owned by `kernel`.
        let word = |base, offset| unsafe { Shared::at(base, offset) };
        // Every slot index is masked with these, so they must describe the arrays
        // whose sizes `from_params` computed: check them before any slot is used.
        let checked = [
            (
                "sq_off.ring_entries",
                so.ring_entries,
                sq_base,
                params.sq_entries,
                false,
            ),
            ("sq_off.ring_mask", so.ring_mask, sq_base, params.sq_entries, true),
            (
                "cq_off.ring_entries",
                co.ring_entries,
                cq_base,
                params.cq_entries,
                false,
            ),
            ("cq_off.ring_mask", co.ring_mask, cq_base, params.cq_entries, true),
        ];
        for (field, offset, base, entries, is_mask) in checked {
            let found = word(base, offset).get().load(Ordering::Relaxed);
            let want = if is_mask { entries - 1 } else { entries };
            if found != want {
                return Err(bad_layout(
                    field,
                    format_args!("the mapped ring holds {found}, but {want} follows from {entries} entries"),
                ));
            }
        }
        let sq = Sq {
            head: word(sq_base, so.head),
            tail: word(sq_base, so.tail),
            flags: word(sq_base, so.flags),
            dropped: word(sq_base, so.dropped),
            sqes,
            mask: params.sq_entries - 1,
            entries: params.sq_entries,
            local_tail: 0,
        };
        let cq = Cq {
            head: word(cq_base, co.head),
            tail: word(cq_base, co.tail),
            overflow: word(cq_base, co.overflow),
            // SAFETY: `from_params` checked that the CQE array (8-byte aligned) lies
            // inside the CQ region.
            cqes: unsafe { cq_base.add(co.cqes as usize) }.cast(),
            mask: params.cq_entries - 1,
            entries: params.cq_entries,
            local_head: 0,
        };
        let mut ring = Ring {
            sq,
            cq,
            params,
            fd,
            kernel,
            id: RingId(NEXT_RING_ID.fetch_add(1, Ordering::Relaxed)),
            table_claimed: false,
            sqpoll_creds: None,
        };
        ring.sq.local_tail = ring.sq.tail.get().load(Ordering::Relaxed);
        ring.cq.local_head = ring.cq.head.get().load(Ordering::Relaxed);
        if params.flags & abi::IORING_SETUP_NO_SQARRAY == 0 {
            // Fill the SQ index array with the identity once: slot i is always SQE i,
            // so pushing never touches the array again.
            // SAFETY: `from_params` checked that the array's `sq_entries` u32 slots
            // lie 4-aligned inside the SQ region, clear of every index word; nothing
            // has been submitted yet, so the kernel is not reading it.
            let array: NonNull<u32> = unsafe { sq_base.add(so.array as usize) }.cast();
            for i in 0..ring.sq.entries {
                // SAFETY: `i < sq_entries`, inside the array described above.
                unsafe { array.add(i as usize).write(i) };
            }
        }
        Ok(ring)
    }

    /// The ring's fd number.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.raw
    }

    /// A shareable reference to this ring's fd, the target for `MSG_RING`.
    pub fn ring_fd(&self) -> RingFd {
        self.fd.clone()
    }

    /// The fd of a kernel ring, for `io_uring_register` and the like.
    pub fn kernel_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.kernel {
            Kernel::Linux { fd, .. } => Some(fd.as_fd()),
            Kernel::Sim(_) => None,
        }
    }

    /// True when this ring runs on the simulated kernel.
    pub fn is_simulated(&self) -> bool {
        matches!(self.kernel, Kernel::Sim(_))
    }

    /// The simulated kernel's ring, for tests that inspect or steer it.
    pub fn sim_ring(&self) -> Option<&SimRing> {
        match &self.kernel {
            Kernel::Sim(s) => Some(s),
            Kernel::Linux { .. } => None,
        }
    }

    /// The parameters the kernel filled in at setup.
    pub fn params(&self) -> &abi::io_uring_params {
        &self.params
    }

    /// The setup flags the kernel accepted (`IORING_SETUP_*`).
    pub fn setup_flags(&self) -> u32 {
        self.params.flags
    }

    /// The kernel's feature bits (`IORING_FEAT_*`).
    pub fn features(&self) -> u32 {
        self.params.features
    }

    /// SQ capacity.
    pub fn sq_entries(&self) -> u32 {
        self.sq.entries
    }

    /// CQ capacity.
    pub fn cq_entries(&self) -> u32 {
        self.cq.entries
    }

    /// SQEs queued and not yet consumed by the kernel.
    pub fn sq_len(&self) -> u32 {
        // Acquire pairs with the kernel's release of the SQ head after it has
        // copied the SQEs (`io_commit_sqring`), so slots before head are free.
        index::len(self.sq.head.get().load(Ordering::Acquire), self.sq.local_tail)
    }

    /// Free SQ slots.
    pub fn sq_space(&self) -> u32 {
        self.sq.entries - self.sq_len().min(self.sq.entries)
    }

    /// SQEs the kernel dropped as invalid (`sq_off.dropped`).
    pub fn sq_dropped(&self) -> u32 {
        self.sq.dropped.get().load(Ordering::Relaxed)
    }

    /// Queues an entry that the kernel can run without trusting the caller:
    /// one that points at no memory, names no fd, and carries a `user_data`
    /// outside the op tags (see [`Sqe::is_safe_to_push`]). That is `NOP`,
    /// `ASYNC_CANCEL`, `POLL_REMOVE` and a plain `TIMEOUT_REMOVE`. A full SQ
    /// is submitted first, never an error unless the kernel refuses to take
    /// entries.
    ///
    /// Everything else goes through its owner: ops through
    /// [`InFlight::submit`](crate::op::InFlight::submit), which keeps their
    /// memory and fds until the final CQE; `MSG_RING` through
    /// [`Ring::push_msg_ring`], which only targets rings this crate made and
    /// never posts an op's tag; anything else through the `unsafe`
    /// [`Ring::push_unchecked`].
    ///
    /// # Errors
    ///
    /// [`PushError::NeedsOwner`] for any other entry; [`PushError::ReservedTag`]
    /// for a `user_data` that names an op of the ring's table;
    /// [`PushError::Full`] when the SQ stays full after a submit.
    ///
    /// # Example
    ///
    /// ```
    /// use spargio_sys::ring::{PushError, Ring, RingConfig};
    /// use spargio_sys::sim::SimKernel;
    /// use spargio_sys::{abi, msg, Sqe};
    ///
    /// let kernel = SimKernel::new();
    /// let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    /// ring.push(&Sqe::nop().user_data(7)).unwrap();
    /// // A close of a raw fd number could close a file someone else owns:
    /// let close = Sqe::from_raw(abi::io_uring_sqe { opcode: abi::IORING_OP_CLOSE, fd: 3, ..Default::default() });
    /// assert_eq!(ring.push(&close), Err(PushError::NeedsOwner));
    /// // A NOP whose completion would name an op in flight:
    /// let forged = msg::UserData::op(msg::OpId::new(0, 0)).get();
    /// assert_eq!(ring.push(&Sqe::nop().user_data(forged)), Err(PushError::ReservedTag));
    /// ```
    pub fn push(&mut self, sqe: &Sqe) -> Result<(), PushError> {
        if !sqe.is_safe_to_push() {
            return Err(PushError::NeedsOwner);
        }
        if sqe.carries_op_tag() {
            return Err(PushError::ReservedTag);
        }
        // SAFETY: the entry references no user memory and no fd, so there is
        // nothing whose lifetime or ownership the kernel could get wrong, and its
        // completion cannot be taken for an op's.
        unsafe { self.push_unchecked(sqe) }
    }

    /// Queues a `MSG_RING` data message into `target`, a ring this crate made:
    /// the target reaps a CQE carrying `post`'s `user_data` and `res` (and,
    /// with `pass_flags`, its `flags`; Linux 6.3). This ring reaps the send's
    /// own completion, tagged `completion`, unless `skip_success` asks to hear
    /// only about failures.
    ///
    /// # Errors
    ///
    /// [`PushError::ReservedTag`] when `post` or `completion` carries an op's
    /// tag (a message can never complete an op of the target's table);
    /// [`PushError::Full`] when the SQ stays full after a submit.
    pub fn push_msg_ring(
        &mut self,
        target: &RingFd,
        post: Cqe,
        pass_flags: bool,
        completion: UserData,
        skip_success: bool,
    ) -> Result<(), PushError> {
        if matches!(msg::decode(post.user_data), Tag::Op(_)) || matches!(completion.decode(), Tag::Op(_)) {
            return Err(PushError::ReservedTag);
        }
        let mut sqe = msg::post_sqe(target.raw(), post, pass_flags, completion);
        if skip_success {
            sqe = sqe.flags(SqeFlags::SKIP_SUCCESS);
        }
        // SAFETY: a MSG_RING data message points at no memory; its target is a
        // ring fd that `target` keeps open, and what it posts is not an op's tag.
        unsafe { self.push_unchecked(&sqe) }
    }

    /// Claims this ring for one op table; false if one already has it.
    pub(crate) fn claim_table(&mut self) -> bool {
        !std::mem::replace(&mut self.table_claimed, true)
    }

    /// This ring's identity.
    pub(crate) fn id(&self) -> RingId {
        self.id
    }

    /// Queues any entry. A full SQ is submitted first.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] when the SQ stays full after a submit.
    ///
    /// ```compile_fail
    /// # use spargio_sys::{ring::{Ring, RingConfig}, sim::SimKernel, Sqe};
    /// let mut ring = Ring::sim(&SimKernel::new(), &RingConfig::with_entries(4)).unwrap();
    /// ring.push_unchecked(&Sqe::nop()); // needs `unsafe`
    /// ```
    ///
    /// # Safety
    ///
    /// - Every buffer, iovec, path, address or timespec the entry points at
    ///   must stay valid (and not be accessed in ways that conflict with the
    ///   kernel's access) until the entry's final CQE has been reaped. Memory
    ///   handed over by `PROVIDE_BUFFERS` must stay valid until the kernel has
    ///   consumed or given back every buffer of the group, which outlasts that
    ///   SQE's CQE.
    /// - Every fd the entry names (its target, a `MSG_RING` target ring, a
    ///   file it closes or installs) must be one the caller owns or borrows
    ///   for as long as the kernel uses it (I/O safety).
    /// - If an [`InFlight`](crate::op::InFlight) table tracks this ring, the
    ///   entry's completion, and for a `MSG_RING` the CQE it posts in its
    ///   target, must not carry an op's tag of that table
    ///   ([`Sqe::carries_op_tag`]): the table would take it for the op's own.
    pub unsafe fn push_unchecked(&mut self, sqe: &Sqe) -> Result<(), PushError> {
        if self.sq_space() == 0 {
            // Submission errors surface on the next wait; here only room matters.
            let _ = self.submit();
            if self.sq_space() == 0 {
                return Err(PushError::Full);
            }
        }
        let slot = index::slot(self.sq.local_tail, self.sq.mask);
        // SAFETY: `slot < sq_entries`, inside the SQE array; the slot is free
        // because `sq_space() > 0` was read with Acquire on the kernel's head.
        unsafe { self.sq.sqes.add(slot as usize).write(*sqe.as_raw()) };
        self.sq.local_tail = self.sq.local_tail.wrapping_add(1);
        Ok(())
    }

    /// Takes back the SQEs the kernel has not consumed (after a submit that
    /// failed, e.g. with `EBUSY`), so they are never submitted. Returns how
    /// many were taken back; always 0 on an SQPOLL ring, whose kernel thread
    /// may consume entries at any time.
    ///
    /// Only entries pushed with [`Ring::push`] should be taken back this way
    /// without further thought: the caller decides what a retracted entry's
    /// resources and waiters become.
    pub fn retract_unsubmitted(&mut self) -> u32 {
        if self.sqpoll() {
            return 0;
        }
        // Without SQPOLL the kernel reads the SQ only inside `io_uring_enter`,
        // which `&mut self` excludes, so the head read here stays the head.
        let head = self.sq.head.get().load(Ordering::Acquire);
        let retracted = index::len(head, self.sq.local_tail);
        self.sq.local_tail = head;
        self.publish_tail();
        retracted
    }

    /// Publishes queued SQEs to the kernel's view of the SQ tail (on an
    /// SQPOLL ring, after [`Ring::refuse_if_credentials_changed`]).
    fn publish_tail(&mut self) {
        if self.sqpoll_creds.is_some() {
            self.refuse_if_credentials_changed();
        }
        // Release pairs with the kernel's acquire of the SQ tail
        // (`io_sqring_entries`): the SQE writes above become visible before it.
        self.sq.tail.get().store(self.sq.local_tail, Ordering::Release);
    }

    fn sqpoll(&self) -> bool {
        self.params.flags & abi::IORING_SETUP_SQPOLL != 0
    }

    /// On an SQPOLL ring with entries to publish, whose submitter's
    /// credentials differ from those at setup: takes back every unpublished
    /// entry that uses credentials, or is linked, and queues an `-EACCES`
    /// completion for it; the others move up, in order, to be published.
    fn refuse_if_credentials_changed(&mut self) {
        let Some(creds) = self.sqpoll_creds.as_mut() else {
            return;
        };
        // Relaxed: the tail word is written only by this thread (`publish_tail`).
        let published = self.sq.tail.get().load(Ordering::Relaxed);
        if published == self.sq.local_tail || creds.at_setup.matches_current() {
            return;
        }
        let mut kept = published;
        let mut after_link = false;
        let mut i = published;
        while i != self.sq.local_tail {
            let from = index::slot(i, self.sq.mask) as usize;
            // SAFETY: `from < sq_entries`, inside the SQE array. The entry lies
            // between the published tail and `local_tail`: `push_unchecked`
            // wrote it and the kernel cannot read it before the tail moves past it.
            let raw = unsafe { self.sq.sqes.add(from).read() };
            let sqe = Sqe::from_raw(raw);
            let linked = raw.flags & (abi::IOSQE_IO_LINK | abi::IOSQE_IO_HARDLINK) != 0;
            if sqe.uses_credentials() || after_link {
                creds.refused.push_back(Cqe {
                    user_data: raw.user_data,
                    res: -libc::EACCES,
                    flags: 0,
                });
            } else {
                if kept != i {
                    let to = index::slot(kept, self.sq.mask) as usize;
                    // SAFETY: `to < sq_entries`; slot `kept` lies in the same
                    // unpublished range (`kept` never passes `i`), so only we use it.
                    unsafe { self.sq.sqes.add(to).write(raw) };
                }
                kept = kept.wrapping_add(1);
            }
            after_link = linked;
            i = i.wrapping_add(1);
        }
        self.sq.local_tail = kept;
    }

    /// Completions this ring posted in the kernel's place and not yet popped
    /// (SQPOLL entries refused after a change of credentials).
    fn refused_len(&self) -> u32 {
        self.sqpoll_creds
            .as_ref()
            .map_or(0, |c| u32::try_from(c.refused.len()).unwrap_or(u32::MAX))
    }

    /// Flags to add to an enter so the kernel wakes the SQPOLL thread if it sleeps.
    fn sqpoll_wakeup_flag(&self) -> u32 {
        if !self.sqpoll() {
            return 0;
        }
        // The SeqCst fence orders our tail store before the flag load, pairing
        // with the kernel's barrier between setting NEED_WAKEUP and re-checking
        // the tail before it sleeps: one of us sees the other's write.
        atomic::fence(Ordering::SeqCst);
        if self.sq.flags.get().load(Ordering::Relaxed) & abi::IORING_SQ_NEED_WAKEUP != 0 {
            abi::IORING_ENTER_SQ_WAKEUP
        } else {
            0
        }
    }

    /// Flags the kernel sets in the SQ ring (`IORING_SQ_*`).
    pub fn sq_flags(&self) -> u32 {
        // Relaxed: an advisory snapshot; acting on it goes through `io_uring_enter`.
        self.sq.flags.get().load(Ordering::Relaxed)
    }

    /// True when completions wait in the kernel and an enter with `GETEVENTS`
    /// would post them: overflowed CQEs, or deferred task work (`TASKRUN`).
    pub fn needs_flush(&self) -> bool {
        self.sq_flags() & (abi::IORING_SQ_CQ_OVERFLOW | abi::IORING_SQ_TASKRUN) != 0
    }

    /// Submits queued SQEs without waiting. Returns how many the kernel took.
    ///
    /// # Errors
    ///
    /// The enter `errno` (`EBUSY`/`EAGAIN`: reap completions, then retry).
    pub fn submit(&mut self) -> io::Result<u32> {
        self.publish_tail();
        let pending = self.sq_len();
        if self.sqpoll() {
            let wake = self.sqpoll_wakeup_flag();
            if wake != 0 {
                self.enter(0, 0, wake, EnterWait::Forever)?;
            }
            return Ok(pending);
        }
        if pending == 0 {
            return Ok(0);
        }
        self.enter(pending, 0, 0, EnterWait::Forever).map(|(n, _)| n)
    }

    /// Submits queued SQEs and posts completions the kernel holds back
    /// (deferred task work, overflowed CQEs) without waiting.
    ///
    /// # Errors
    ///
    /// The enter `errno` other than `EINTR`, which is retried.
    pub fn submit_and_flush(&mut self) -> io::Result<u32> {
        self.submit_and_wait(0, None)
    }

    /// Submits queued SQEs and waits until at least `min_complete` CQEs are
    /// ready or `timeout` elapses. Returns how many SQEs the kernel took.
    ///
    /// A signal (`EINTR`) is retried with the time that remains. A timeout is
    /// not an error: the caller sees it as fewer CQEs than asked.
    ///
    /// # Errors
    ///
    /// The enter `errno`: `EBUSY`/`EAGAIN` (reap, then retry), `EBADF`, …;
    /// `Unsupported` for a timeout on a kernel without `IORING_FEAT_EXT_ARG`.
    pub fn submit_and_wait(&mut self, min_complete: u32, timeout: Option<Duration>) -> io::Result<u32> {
        if timeout.is_some() && self.features() & abi::IORING_FEAT_EXT_ARG == 0 && !self.is_simulated() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "timed waits need IORING_FEAT_EXT_ARG (Linux 5.11)",
            ));
        }
        self.publish_tail();
        // Completions the ring posted itself are ready now: do not sleep on the kernel.
        let min_complete = if self.refused_len() > 0 { 0 } else { min_complete };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let to_submit = if self.sqpoll() { 0 } else { self.sq_len() };
            let flags = abi::IORING_ENTER_GETEVENTS | self.sqpoll_wakeup_flag();
            let wait = match (timeout, deadline) {
                (None, _) => EnterWait::Forever,
                (Some(_), Some(d)) => EnterWait::Timeout(d.saturating_duration_since(Instant::now())),
                // A timeout too large to add to now: wait without one.
                (Some(_), None) => EnterWait::Forever,
            };
            match self.enter(to_submit, min_complete, flags, wait) {
                Ok((n, _timed_out)) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn enter(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        wait: EnterWait,
    ) -> io::Result<(u32, bool)> {
        match &self.kernel {
            // SAFETY: every published SQE was queued through `push` (no user memory)
            // or `push_unchecked`, whose caller keeps the memory valid until the
            // final CQE.
            Kernel::Linux { .. } => unsafe {
                syscall::enter(self.fd.raw, to_submit, min_complete, flags, wait)
            },
            Kernel::Sim(sim) => sim.enter(to_submit, min_complete, flags, wait),
        }
    }

    /// CQEs ready to be popped (with those the ring posted itself).
    pub fn cq_len(&self) -> u32 {
        self.kernel_cq_len().saturating_add(self.refused_len())
    }

    /// CQEs the kernel posted that are ready to be popped.
    fn kernel_cq_len(&self) -> u32 {
        // Acquire pairs with the kernel's release of the CQ tail after writing the
        // CQEs (`io_commit_cqring`).
        index::len(self.cq.local_head, self.cq.tail.get().load(Ordering::Acquire))
    }

    /// CQEs the kernel had to drop (only on kernels without `IORING_FEAT_NODROP`).
    pub fn cq_overflow_count(&self) -> u32 {
        self.cq.overflow.get().load(Ordering::Relaxed)
    }

    /// True when the kernel holds overflowed CQEs that a `GETEVENTS` enter flushes.
    pub fn cq_overflow_pending(&self) -> bool {
        self.sq_flags() & abi::IORING_SQ_CQ_OVERFLOW != 0
    }

    /// Takes the next completion, if one is ready: first those the ring
    /// posted itself for entries it refused (see "SQPOLL and credentials"),
    /// then the kernel's.
    pub fn pop_cqe(&mut self) -> Option<Cqe> {
        if let Some(c) = self.sqpoll_creds.as_mut().and_then(|c| c.refused.pop_front()) {
            return Some(c);
        }
        // Acquire: see `cq_len`; the CQE at `local_head` is fully written.
        let tail = self.cq.tail.get().load(Ordering::Acquire);
        if self.cq.local_head == tail {
            return None;
        }
        let slot = index::slot(self.cq.local_head, self.cq.mask);
        // SAFETY: `slot < cq_entries` inside the CQE array, and the entry is
        // published (head != tail, read after the Acquire above); the kernel does
        // not rewrite it until we move the head past it.
        let raw = unsafe { self.cq.cqes.add(slot as usize).read() };
        self.cq.local_head = self.cq.local_head.wrapping_add(1);
        // Release pairs with the kernel's acquire of the CQ head when it checks
        // for room: our read of the slot happens before the slot is reused.
        self.cq.head.get().store(self.cq.local_head, Ordering::Release);
        Some(Cqe::from_raw(raw))
    }

    /// Takes the next completion, if one is ready, as the token the op table
    /// accepts ([`InFlight::complete`](crate::op::InFlight::complete)).
    pub fn reap(&mut self) -> Option<RingCqe> {
        self.pop_cqe().map(|c| RingCqe::new(c, self.id))
    }

    /// Pops every ready completion into `out`; returns how many.
    pub fn drain_cqes(&mut self, out: &mut Vec<Cqe>) -> usize {
        let before = out.len();
        while let Some(c) = self.pop_cqe() {
            out.push(c);
        }
        out.len() - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout a 6.x kernel reports for 8 SQ and 16 CQ entries.
    fn kernel_layout() -> abi::io_uring_params {
        abi::io_uring_params {
            sq_entries: 8,
            cq_entries: 16,
            flags: abi::IORING_SETUP_CQSIZE,
            features: abi::IORING_FEAT_SINGLE_MMAP,
            sq_off: abi::io_sqring_offsets {
                head: 0,
                tail: 4,
                ring_mask: 16,
                ring_entries: 24,
                flags: 36,
                dropped: 32,
                array: 64 + 16 * 16,
                ..Default::default()
            },
            cq_off: abi::io_cqring_offsets {
                head: 8,
                tail: 12,
                ring_mask: 20,
                ring_entries: 28,
                overflow: 44,
                cqes: 64,
                flags: 40,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[track_caller]
    fn assert_rejects(err: io::Error, field: &str) {
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(
            err.to_string().contains(&format!("io_uring_params.{field}:")),
            "the error should name {field}: {err}"
        );
    }

    #[test]
    fn a_kernel_layout_gives_its_region_sizes() {
        let sizes = RegionSizes::from_params(&kernel_layout()).unwrap();
        let ring = 64 + 16 * 16 + 8 * 4;
        assert_eq!(
            sizes,
            RegionSizes {
                sq_ring: ring,
                cq_ring: ring,
                sqes: 8 * 64,
                single_mmap: true,
            }
        );
        let mut split = kernel_layout();
        split.features = 0;
        split.flags |= abi::IORING_SETUP_NO_SQARRAY | abi::IORING_SETUP_CQE32;
        split.sq_off.array = 0; // ignored without an array
        let sizes = RegionSizes::from_params(&split).unwrap();
        assert_eq!(
            (sizes.sq_ring, sizes.cq_ring, sizes.single_mmap),
            (40, 64 + 16 * 32, false)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        type Edit = fn(&mut abi::io_uring_params);
        let cases: [(&str, Edit); 12] = [
            ("sq_entries", |p| p.sq_entries = 0),
            ("sq_entries", |p| p.sq_entries = 6),
            ("cq_entries", |p| p.cq_entries = 0),
            ("cq_entries", |p| p.cq_entries = 24),
            ("sq_off.tail", |p| p.sq_off.tail = 5),
            ("sq_off.dropped", |p| p.sq_off.dropped = 2),
            ("cq_off.overflow", |p| p.cq_off.overflow = 46),
            ("cq_off.cqes", |p| p.cq_off.cqes = 68),
            ("cq_off.cqes", |p| p.cq_off.cqes = 32), // over the index words
            ("sq_off.array", |p| p.sq_off.array = 322),
            ("sq_off.array", |p| p.sq_off.array = 64 + 15 * 16), // over the last CQE
            ("sq_off.array", |p| p.sq_off.array = 4),            // over the index words
        ];
        for (field, edit) in cases {
            let mut p = kernel_layout();
            edit(&mut p);
            assert_rejects(RegionSizes::from_params(&p).unwrap_err(), field);
        }
        // Without SINGLE_MMAP the CQ fields live in their own region: the SQ
        // index array may then share offsets with them.
        let mut p = kernel_layout();
        p.features = 0;
        p.sq_off = abi::io_sqring_offsets {
            head: 64,
            tail: 68,
            ring_mask: 72,
            ring_entries: 76,
            flags: 80,
            dropped: 84,
            array: 8, // where the CQ head and tail are, in the other region
            ..Default::default()
        };
        let sizes = RegionSizes::from_params(&p).unwrap();
        assert_eq!((sizes.sq_ring, sizes.cq_ring), (88, 64 + 16 * 16));
        p.features = abi::IORING_FEAT_SINGLE_MMAP;
        assert_rejects(RegionSizes::from_params(&p).unwrap_err(), "cq_off.cqes");
    }

    #[test]
    fn sim_setup_checks_the_layout_and_frees_a_rejected_ring() {
        let kernel = SimKernel::new();
        let config = RingConfig {
            no_sqarray: false,
            ..RingConfig::with_entries(8)
        };
        type Edit = fn(&mut abi::io_uring_params);
        let cases: [(&str, Edit); 5] = [
            ("sq_entries", |p| p.sq_entries = 3),
            ("sq_off.head", |p| p.sq_off.head = 1),
            // Fewer entries than the ring memory says: caught on the mapped words.
            ("sq_off.ring_entries", |p| p.sq_entries /= 2),
            ("cq_off.ring_entries", |p| p.cq_entries /= 2),
            // The mask read from where the entry count is.
            ("sq_off.ring_mask", |p| p.sq_off.ring_mask = p.sq_off.ring_entries),
        ];
        for (field, edit) in cases {
            let err = Ring::sim_adjusted(&kernel, &config, edit).unwrap_err();
            assert_rejects(err, field);
            assert_eq!(kernel.ring_count(), 0, "a rejected ring is not kept ({field})");
        }
        let too_far = Ring::sim_adjusted(&kernel, &config, |p| p.sq_off.flags = 1 << 20);
        assert_eq!(too_far.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(kernel.ring_count(), 0);
        let ring = Ring::sim_adjusted(&kernel, &config, |_| {}).unwrap();
        assert_eq!(
            (ring.sq_entries(), ring.cq_entries(), kernel.ring_count()),
            (8, 16, 1)
        );
    }

    /// A kernel ring's fd and parameters, or `None` where io_uring is unavailable.
    #[cfg(not(miri))]
    fn kernel_setup() -> Option<(OwnedFd, abi::io_uring_params)> {
        let mut params = abi::io_uring_params::default();
        match syscall::setup(8, &mut params) {
            Ok(fd) => Some((fd, params)),
            Err(e) => {
                eprintln!("skipping: io_uring_setup failed: {e}");
                None
            }
        }
    }

    #[test]
    #[cfg(not(miri))]
    fn kernel_setup_rejects_params_that_disagree_with_the_mapping() {
        let Some((fd, mut params)) = kernel_setup() else {
            return;
        };
        params.sq_entries /= 2;
        let err = Ring::map_kernel(fd, params).unwrap_err();
        assert_rejects(err, "sq_off.ring_entries");
        let Some((fd, mut params)) = kernel_setup() else {
            return;
        };
        params.sq_off.tail += 2;
        assert_rejects(Ring::map_kernel(fd, params).unwrap_err(), "sq_off.tail");
    }

    /// Pops `n` completions from `ring`, waiting up to a liveness bound.
    fn pop_n(ring: &mut Ring, n: usize) -> Vec<Cqe> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(Instant::now() < deadline, "only {out:?} of {n} completions came");
            ring.submit_and_wait(1, Some(Duration::from_millis(100))).unwrap();
            out.extend(std::iter::from_fn(|| ring.pop_cqe()));
        }
        out.sort_by_key(|c| c.user_data);
        out
    }

    #[test]
    #[cfg(not(miri))]
    fn sqpoll_ring_refuses_entries_after_credentials_change() {
        let config = RingConfig {
            sqpoll_idle: Some(Duration::from_millis(10)),
            ..RingConfig::with_entries(8)
        };
        let mut ring = match Ring::with_config(&config) {
            Ok(ring) => ring,
            Err(e) => {
                eprintln!("skipping: no SQPOLL ring here: {e}");
                return;
            }
        };
        // FSYNC of fd -1 points at no memory; the kernel fails it with EBADF.
        let fsync = |user_data| {
            Sqe::from_raw(abi::io_uring_sqe {
                opcode: abi::IORING_OP_FSYNC,
                fd: -1,
                user_data,
                ..Default::default()
            })
        };
        let push = |ring: &mut Ring, sqe: &Sqe| {
            // SAFETY: FSYNC and NOP entries reference no memory.
            unsafe { ring.push_unchecked(sqe) }.unwrap();
        };
        // Unchanged credentials: the kernel runs it.
        push(&mut ring, &fsync(1));
        let got = pop_n(&mut ring, 1);
        assert_eq!(got[0].res, -libc::EBADF);

        let creds = ring.sqpoll_creds.as_mut().unwrap();
        let at_setup = creds.at_setup.clone();
        creds.at_setup = at_setup.with_euid(creds.at_setup.euid().wrapping_add(1));
        push(&mut ring, &Sqe::nop().user_data(2));
        push(&mut ring, &fsync(3));
        push(&mut ring, &Sqe::nop().user_data(4).flags(SqeFlags::LINK));
        push(&mut ring, &Sqe::nop().user_data(5));
        push(&mut ring, &Sqe::nop().user_data(6));
        let got = pop_n(&mut ring, 5);
        let res: Vec<(u64, i32)> = got.iter().map(|c| (c.user_data, c.res)).collect();
        // The NOPs run; the FSYNC and the linked pair are refused without the
        // kernel seeing them.
        assert_eq!(
            res,
            [
                (2, 0),
                (3, -libc::EACCES),
                (4, -libc::EACCES),
                (5, -libc::EACCES),
                (6, 0)
            ]
        );
        assert_eq!(ring.cq_len(), 0);
    }

    #[test]
    #[cfg(not(miri))]
    fn kernel_setup_fails_when_dont_fork_fails() {
        if kernel_setup().is_none() {
            return;
        }
        crate::mmap::fail_dont_fork::arm(libc::ENOMEM);
        let err = Ring::new(8).unwrap_err();
        assert!(err.to_string().contains("MADV_DONTFORK"), "{err}");
        assert!(
            !err.io_uring_unavailable(),
            "a real failure, not a missing io_uring"
        );
        Ring::new(8).expect("the hook fires once");
    }
}
