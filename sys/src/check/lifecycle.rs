//! The op lifecycle on the simulated kernel: [`InFlight`] with owned ops,
//! driven by arbitrary bytes, with the kernel's faults chosen by those bytes.
//!
//! [`run`] reads its input as a fault mix ([`faults_from_bytes`]) and then a
//! sequence of three-byte actions ([`Action::decode`]): start a read, a
//! receive, a write or a timeout (single or multishot), cancel an op, submit,
//! wait, reap, move the clock, take the data file away, or (in
//! [`Mode::LeakTable`] only) drop the op table with ops in flight; and on a
//! simulated socket and listener: receive (pending while the socket is
//! empty), receive multishot into provided buffers, accept once or
//! multishot, have the outside write into the socket's peer or close it,
//! connect a client, or abandon an op (cancel it and drop what it still
//! delivers unread). The ring is
//! tiny (SQ 4, CQ 8) and its indices start near `u32::MAX`, so full queues,
//! overflow and wrap-around come early. The same input always gives the same
//! run: every fault is drawn from the input.
//!
//! # Invariants
//!
//! Checked after every action and at the end:
//! - every buffer an op owned (and every timeout's timespec) is released
//!   exactly once, and only after the op's final completion or after the
//!   ring refused the op (drop-tracking buffers);
//! - no completion reaches an op other than the one that submitted it: the
//!   payload, the op's type and the serial of its buffer agree, and a read's
//!   bytes are the file's bytes at its offset;
//! - the stream's bytes come out as they went in, in order, none lost or
//!   duplicated (received == sent after a final drain);
//! - the socket's bytes (single receives and multishot completions, in
//!   completion order, across cancels, lost races and abandoned ops) are
//!   the bytes the peer wrote, in order, and end of file comes only after
//!   the last of them, once the peer closed;
//! - each provided buffer is handed out only while provided (never twice),
//!   and every one comes back;
//! - every accepted connection is a simulated socket, taken once (from the
//!   op, or from a multishot accept's event, which closes it when dropped
//!   unread), and closed: after the drain only the socket and the listener
//!   are open ([`SimKernel::open_streams`]);
//! - after the drain, nothing is left in flight, held back, overflowed or
//!   pending in the kernel, and each fd's reference count is back at its
//!   baseline.
//!
//! In [`Mode::LeakTable`] the table may be dropped with ops in flight: those
//! ops must then be leaked (never released), while the kernel goes on
//! writing into their buffers; run that mode under Miri with
//! `-Zmiri-ignore-leaks` (`sys/tests/leaked_ops.rs`) so that Miri checks
//! those writes against freed memory.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Cqe;
use crate::abi;
use crate::buf::{IoBuf, IoBufMut};
use crate::msg::OpId;
use crate::op::fs::{Read, Write};
use crate::op::net::{Accept, Recv, RecvBufGroup, RecvMulti};
use crate::op::{Completion, InFlight, Nop, Op, OpEvent};
use crate::ring::{PushError, Ring, RingConfig};
use crate::sim::{Faults, Injected, SimKernel};
use crate::sqe::Sqe;

/// What [`run`] may do with the op table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The table lives to the end and every op completes (leaks nothing:
    /// Miri's leak check applies).
    Complete,
    /// The input may drop the table with ops in flight, which leaks them on
    /// purpose (run under Miri with `-Zmiri-ignore-leaks`).
    LeakTable,
}

/// Most actions one input runs (longer inputs are cut).
pub const MAX_ACTIONS: usize = 256;

/// Bytes of fault configuration at the start of an input.
pub const FAULT_BYTES: usize = 12;

/// The fault mix from the first [`FAULT_BYTES`] bytes (missing bytes are
/// zero: no fault): every kind of fault the simulator injects, each switched
/// on and tuned by its own bits.
pub fn faults_from_bytes(bytes: &[u8]) -> Faults {
    let mut b = [0u8; FAULT_BYTES];
    let n = bytes.len().min(FAULT_BYTES);
    b[..n].copy_from_slice(&bytes[..n]);
    let bits = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let more = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    let every = |on: u32, shift: u32| (more & on != 0).then(|| 2 + (more >> shift) % 6);
    Faults {
        short_read_max: (more & 1 != 0).then(|| 1 + (more >> 8) % 16),
        eagain_every: every(2, 12),
        cancel_race_every: (more & 4 != 0).then(|| 1 + (more >> 16) % 3),
        enter_ebusy_first: (more >> 20) % 4 * u32::from(more & 8 != 0),
        ..super::ring::faults_from_bits(bits)
    }
}

/// One step of a lifecycle input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read `len` bytes of the data file at `offset` into a fresh buffer.
    Read {
        /// Buffer capacity (0 allowed).
        len: u8,
        /// File offset (the file is 160 bytes long: some reads hit its end).
        offset: u8,
    },
    /// Receive up to `len` bytes from the stream (at most one receive in
    /// flight, as a stream's reader has; otherwise a no-op).
    Recv {
        /// Buffer capacity (0 allowed).
        len: u8,
    },
    /// Send `len` new bytes into the stream (at most one send in flight,
    /// otherwise a no-op).
    Send {
        /// Bytes to send.
        len: u8,
    },
    /// A timeout of `ms` milliseconds.
    Timeout {
        /// Delay on the virtual clock.
        ms: u8,
        /// Single-shot: also completes after this many other completions (0:
        /// only the clock). Multishot: the number of shots (0: until cancelled).
        count: u8,
        /// `IORING_TIMEOUT_MULTISHOT`.
        multishot: bool,
    },
    /// A NOP op.
    Nop,
    /// Ask the kernel to cancel the `nth` live op (in submission order,
    /// modulo the number live).
    Cancel {
        /// Which live op.
        nth: u8,
    },
    /// `io_uring_enter` without waiting.
    Submit,
    /// `io_uring_enter` with `GETEVENTS` and a zero timeout (flushes overflow,
    /// releases held-back completions).
    Flush,
    /// Reap up to `max` completions and hand them to the table.
    Reap {
        /// How many at most.
        max: u8,
    },
    /// Move the virtual clock forward.
    Advance {
        /// Milliseconds (at most 63).
        ms: u8,
    },
    /// Remove the data file from the kernel (as if its peer closed it):
    /// reads submitted from now on fail with `EBADF`.
    CloseData,
    /// Drop the op table with ops in flight and end the input
    /// ([`Mode::LeakTable`] only; a no-op otherwise).
    DropTable,
    /// Receive up to `len` bytes from the simulated socket (at most one
    /// socket receive, single or multishot, in flight: a stream has one
    /// reader). Stays pending while the socket is empty.
    SockRecv {
        /// Buffer capacity (0 allowed: completes with 0 at once).
        len: u8,
    },
    /// A multishot receive on the socket with provided buffers (group
    /// [`BUF_GROUP`], [`BUFS`] buffers of [`BUF_LEN`] bytes): one completion
    /// per arrival of data, each handing out a buffer that the check reads
    /// and provides again.
    SockRecvMulti {
        /// Most bytes per completion (0: the buffer's length).
        len: u8,
    },
    /// The outside writes `len` numbered bytes into the socket's peer (what
    /// fits in its buffer).
    PeerWrite {
        /// Bytes to write.
        len: u8,
    },
    /// The outside closes the socket's peer: receives then read end of file.
    PeerClose,
    /// A client connects to the simulated listener (its end is kept open
    /// until the end of the run).
    Connect,
    /// Accept on the listener, once or multishot.
    Accept {
        /// `IORING_ACCEPT_MULTISHOT`.
        multishot: bool,
    },
    /// The waiter of the `nth` live op goes away: its cancel is asked for and
    /// the completions it still gets are dropped unread (a multishot
    /// accept's events then close the fds they carry themselves).
    Abandon {
        /// Which live op (0 to 127).
        nth: u8,
    },
    /// A multishot receive on the socket with [`RecvMulti`] on a
    /// provided-buffer ring ([`RecvBufGroup`], group [`RING_GROUP`],
    /// [`BUFS`] buffers of [`BUF_LEN`] bytes): each completion's buffer is
    /// read with [`OpEvent::read_into`] (or, for an abandoned op, dropped
    /// unread with its event, which gives it back). Skipped under Miri, which
    /// cannot map the ring's memory.
    SockRecvRing,
}

/// The provided-buffer ring group of [`Action::SockRecvRing`].
pub const RING_GROUP: u16 = 9;

/// The provided-buffer group of [`Action::SockRecvMulti`].
pub const BUF_GROUP: u16 = 7;
/// Buffers in that group.
pub const BUFS: u16 = 4;
/// Bytes per provided buffer.
pub const BUF_LEN: u32 = 16;

impl Action {
    /// Decodes one action from three bytes.
    pub fn decode(b: [u8; 3]) -> Action {
        if b[0] >= 128 {
            return match (b[0] - 128) % 8 {
                0 | 7 => Action::SockRecv { len: b[1] },
                1 => Action::SockRecvMulti { len: b[1] % 32 },
                2 => Action::PeerWrite { len: b[1] },
                3 => Action::PeerClose,
                4 => Action::Connect,
                5 => Action::Accept {
                    multishot: b[1] & 1 != 0,
                },
                6 if b[1] >= 128 => Action::SockRecvRing,
                _ => Action::Abandon { nth: b[1] % 128 },
            };
        }
        match b[0] % 16 {
            0 | 1 => Action::Read {
                len: b[1],
                offset: b[2],
            },
            2 => Action::Recv { len: b[1] },
            3 => Action::Send { len: b[1] },
            4 => Action::Timeout {
                ms: b[1] % 64,
                count: b[2] & 7,
                multishot: b[2] & 8 != 0,
            },
            5 => Action::Nop,
            6 | 7 => Action::Cancel { nth: b[1] },
            8 => Action::Submit,
            9 => Action::Flush,
            10 | 11 => Action::Reap { max: b[1] % 16 },
            12 => Action::Advance { ms: b[1] % 64 },
            13 => Action::CloseData,
            14 => Action::DropTable,
            _ => Action::Reap { max: 16 },
        }
    }

    /// Three bytes that [`Action::decode`] reads back as this action
    /// (fields out of their decoded range are reduced as `decode` reduces them).
    pub fn encode(self) -> [u8; 3] {
        match self {
            Action::Read { len, offset } => [0, len, offset],
            Action::Recv { len } => [2, len, 0],
            Action::Send { len } => [3, len, 0],
            Action::Timeout { ms, count, multishot } => [4, ms % 64, count & 7 | u8::from(multishot) << 3],
            Action::Nop => [5, 0, 0],
            Action::Cancel { nth } => [6, nth, 0],
            Action::Submit => [8, 0, 0],
            Action::Flush => [9, 0, 0],
            Action::Reap { max } => [10, max % 16, 0],
            Action::Advance { ms } => [12, ms % 64, 0],
            Action::CloseData => [13, 0, 0],
            Action::DropTable => [14, 0, 0],
            Action::SockRecv { len } => [128, len, 0],
            Action::SockRecvMulti { len } => [129, len % 32, 0],
            Action::PeerWrite { len } => [130, len, 0],
            Action::PeerClose => [131, 0, 0],
            Action::Connect => [132, 0, 0],
            Action::Accept { multishot } => [133, u8::from(multishot), 0],
            Action::Abandon { nth } => [134, nth % 128, 0],
            Action::SockRecvRing => [134, 128, 0],
        }
    }

    /// The actions of `bytes`, three bytes each (a short tail is dropped),
    /// at most [`MAX_ACTIONS`].
    pub fn decode_all(bytes: &[u8]) -> Vec<Action> {
        bytes
            .chunks_exact(3)
            .take(MAX_ACTIONS)
            .map(|c| Action::decode([c[0], c[1], c[2]]))
            .collect()
    }
}

/// Where a tracked resource is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// Made, not (yet) given to the table.
    Built,
    /// In flight: the kernel may use it.
    InFlight,
    /// The table refused it (its SQE never reached the ring).
    Refused,
    /// Its final completion was handed back.
    Finished,
}

/// The life and release count of every tracked resource, by op serial.
#[derive(Default)]
struct Ledger {
    life: Vec<Life>,
    released: Vec<u32>,
    violations: Vec<String>,
}

/// Shared record of the tracked resources of one run.
#[derive(Clone, Default)]
struct Tracker(Arc<Mutex<Ledger>>);

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_serial(&self) -> usize {
        let mut l = self.lock();
        l.life.push(Life::Built);
        l.released.push(0);
        l.life.len() - 1
    }

    fn set(&self, serial: usize, life: Life) {
        self.lock().life[serial] = life;
    }

    fn life(&self, serial: usize) -> Life {
        self.lock().life[serial]
    }

    /// Records a release; a release of something the kernel may still use is
    /// a violation (recorded, not panicked on: this runs inside `Drop`).
    fn release(&self, serial: usize) {
        let mut l = self.lock();
        l.released[serial] += 1;
        let life = l.life[serial];
        if !matches!(life, Life::Finished | Life::Refused | Life::Built) {
            l.violations.push(format!(
                "resource of op {serial} released while {life:?} (before its final completion)"
            ));
        }
        if l.released[serial] > 1 {
            l.violations
                .push(format!("resource of op {serial} released twice"));
        }
    }

    fn assert_clean(&self) {
        let l = self.lock();
        assert!(
            l.violations.is_empty(),
            "lifecycle violations: {:?}",
            l.violations
        );
    }
}

/// A buffer whose release is recorded: it belongs to op `serial` of a run.
struct Tracked {
    vec: Vec<u8>,
    serial: usize,
    tracker: Tracker,
}

impl Tracked {
    fn new(vec: Vec<u8>, serial: usize, tracker: &Tracker) -> Tracked {
        Tracked {
            vec,
            serial,
            tracker: tracker.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tracker.release(self.serial);
    }
}

// SAFETY: delegates to the `Vec<u8>` it owns (whose heap buffer does not move
// when the `Tracked` moves); the tracking fields are never touched by the kernel.
unsafe impl IoBuf for Tracked {
    fn stable_ptr(&self) -> *const u8 {
        self.vec.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.vec.bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.vec.bytes_total()
    }
}

// SAFETY: as for `IoBuf`: every call goes to the owned `Vec<u8>`'s implementation.
unsafe impl IoBufMut for Tracked {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.vec.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the caller's contract is the Vec's.
        unsafe { self.vec.set_init(pos) }
    }
}

/// `IORING_OP_TIMEOUT` (single or multishot) on a timespec the op owns, with
/// a tracked release. (The runtime's timers do not use kernel timeouts; this
/// op exists for the lifecycle check and carries multishot completions.)
struct TimeoutOp {
    ts: Box<abi::kernel_timespec>,
    count: u64,
    multishot: bool,
    /// Released with the op: records when the timespec is freed.
    token: Tracked,
}

// SAFETY: the SQE points only at `ts`, a heap allocation the op owns and
// never touches after `prepare`; it names no fd.
unsafe impl Op for TimeoutOp {
    fn prepare(&mut self) -> Sqe {
        let ts: *const abi::kernel_timespec = &*self.ts;
        Sqe::from_raw(abi::io_uring_sqe {
            opcode: abi::IORING_OP_TIMEOUT,
            addr_or_splice_off_in: ts as u64,
            len: 1,
            off_or_addr2: self.count,
            op_flags: if self.multishot {
                abi::IORING_TIMEOUT_MULTISHOT
            } else {
                0
            },
            ..Default::default()
        })
    }
    fn run_blocking(&mut self) -> i32 {
        -libc::EOPNOTSUPP
    }
    unsafe fn progress(&mut self, cqe: &Cqe) -> OpEvent {
        OpEvent::new(*cqe)
    }
    crate::op::op_any!();
}

/// A pending single-shot timeout of `ms` milliseconds on the virtual clock
/// (for other checks that need an op the kernel holds).
pub(crate) fn pending_timeout(ms: u8) -> Box<dyn Op> {
    let tracker = Tracker::default();
    let serial = tracker.new_serial();
    Box::new(TimeoutOp {
        ts: Box::new(abi::kernel_timespec {
            tv_sec: 0,
            tv_nsec: i64::from(ms) * 1_000_000,
        }),
        count: 0,
        multishot: false,
        token: Tracked::new(Vec::new(), serial, &tracker),
    })
}

/// A NOP with a tracked release.
struct TrackedNop {
    _token: Tracked,
}

// SAFETY: as `Nop`'s: the SQE references no memory.
unsafe impl Op for TrackedNop {
    fn prepare(&mut self) -> Sqe {
        Nop.prepare()
    }
    fn run_blocking(&mut self) -> i32 {
        0
    }
    crate::op::op_any!();
}

/// The memory of the provided buffers of [`Action::SockRecvMulti`]: a heap
/// block reached only through raw pointers (the kernel writes into it while
/// the check reads other buffers of it), freed when the last op or model that
/// holds it goes. Every op that lets the kernel select from the group holds
/// an `Arc` of it until its final completion, so no selection can write into
/// freed memory; a leaked op leaks it.
struct Pool {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the block is plain bytes owned by the pool; who touches which part
// when is ordered by the buffer protocol (a buffer is the kernel's from its
// PROVIDE_BUFFERS until the CQE that hands it out, then the check's).
unsafe impl Send for Pool {}
// SAFETY: as for `Send`: the pool has no interior state besides those bytes.
unsafe impl Sync for Pool {}

impl Pool {
    fn new() -> Arc<Pool> {
        let len = usize::from(BUFS) * BUF_LEN as usize;
        let block: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        let ptr = NonNull::new(Box::into_raw(block).cast::<u8>()).expect("a box is never null");
        Arc::new(Pool { ptr, len })
    }

    /// The user address of buffer `bid`, with its provenance exposed for the
    /// simulated kernel, which reaches memory outside its loans that way.
    fn addr(&self, bid: u16) -> u64 {
        // SAFETY: `bid < BUFS`, so the offset stays inside the block.
        let p = unsafe { self.ptr.as_ptr().add(usize::from(bid) * BUF_LEN as usize) };
        p.expose_provenance() as u64
    }

    /// The first `n` bytes of buffer `bid`, which the kernel handed out.
    fn read(&self, bid: u16, n: usize) -> Vec<u8> {
        assert!(bid < BUFS && n <= BUF_LEN as usize, "buffer {bid} of {n} bytes");
        let mut out = vec![0u8; n];
        // SAFETY: inside the block (checked above); the kernel handed this
        // buffer out and will not write it again before it is provided again.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(usize::from(bid) * BUF_LEN as usize),
                out.as_mut_ptr(),
                n,
            );
        }
        out
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
        // SAFETY: made by `Box::into_raw` of a boxed slice of `len` bytes in
        // `Pool::new`, freed once, here.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// `PROVIDE_BUFFERS` of one buffer of the pool, with a tracked release.
struct ProvideOp {
    pool: Arc<Pool>,
    bid: u16,
    token: Tracked,
}

// SAFETY: the SQE points at one buffer of the pool, which the op keeps alive
// through its `Arc` (and every multishot receive that may select it, too).
unsafe impl Op for ProvideOp {
    fn prepare(&mut self) -> Sqe {
        Sqe::from_raw(abi::io_uring_sqe {
            opcode: abi::IORING_OP_PROVIDE_BUFFERS,
            fd: 1,
            addr_or_splice_off_in: self.pool.addr(self.bid),
            len: BUF_LEN,
            off_or_addr2: u64::from(self.bid),
            buf_index_or_group: BUF_GROUP,
            ..Default::default()
        })
    }
    fn run_blocking(&mut self) -> i32 {
        -libc::EOPNOTSUPP
    }
    crate::op::op_any!();
}

/// A multishot receive (`IORING_RECV_MULTISHOT`) selecting from the pool's
/// group: its completions name the buffer they filled, which the check reads
/// and provides again.
struct RecvMultiOp {
    fd: Arc<OwnedFd>,
    len: u32,
    _pool: Arc<Pool>,
    token: Tracked,
}

// SAFETY: the SQE points at no memory of its own; the kernel selects buffers
// of the pool, which the op keeps alive through its `Arc` until its final
// completion. It names `fd`, which it keeps open.
unsafe impl Op for RecvMultiOp {
    fn prepare(&mut self) -> Sqe {
        Sqe::from_raw(abi::io_uring_sqe {
            opcode: abi::IORING_OP_RECV,
            flags: abi::IOSQE_BUFFER_SELECT,
            ioprio: abi::IORING_RECV_MULTISHOT,
            fd: self.fd.as_raw_fd(),
            len: self.len,
            buf_index_or_group: BUF_GROUP,
            ..Default::default()
        })
    }
    fn run_blocking(&mut self) -> i32 {
        -libc::EOPNOTSUPP
    }
    crate::op::op_any!();
}

/// A product op (an [`Accept`], a [`RecvMulti`]) with a tracked release:
/// the op owns no buffer to track, so a token stands for it.
struct TrackedOp<O> {
    inner: O,
    token: Tracked,
}

// SAFETY: every call goes to the inner op, whose SQE points only into memory
// it owns or at none (a `RecvMulti`'s group outlives it); the token is never
// reached by the kernel.
unsafe impl<O: Op> Op for TrackedOp<O> {
    fn prepare(&mut self) -> Sqe {
        self.inner.prepare()
    }
    fn run_blocking(&mut self) -> i32 {
        -libc::EOPNOTSUPP
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        // SAFETY: the caller's contract is the inner op's.
        unsafe { self.inner.complete(cqe) }
    }
    unsafe fn progress(&mut self, cqe: &Cqe) -> OpEvent {
        // SAFETY: the caller's contract is the inner op's.
        unsafe { self.inner.progress(cqe) }
    }
    crate::op::op_any!();
}

/// Where a provided buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufState {
    /// The check's: to be provided.
    Ours,
    /// Provided (its PROVIDE_BUFFERS is in flight or done): the kernel's.
    Provided,
}

/// A simulated fd number held as the `Arc<OwnedFd>` ops take. It is never
/// closed through the `OwnedFd` (the number means nothing to the host): on
/// drop the number is taken back out, or, if ops still hold it (a leaked
/// table), the `Arc` is leaked with them.
struct SimFd(Option<Arc<OwnedFd>>);

impl SimFd {
    fn new(raw: RawFd) -> SimFd {
        // SAFETY: `raw` is a simulated fd of this run's kernel, which no host
        // code owns; this `OwnedFd` is never dropped (see `Drop` below), so it
        // never closes the host fd that happens to have that number.
        SimFd(Some(Arc::new(unsafe { OwnedFd::from_raw_fd(raw) })))
    }

    fn shared(&self) -> Arc<OwnedFd> {
        self.0.clone().expect("held until drop")
    }

    fn holders(&self) -> usize {
        self.0.as_ref().map_or(0, Arc::strong_count)
    }
}

impl Drop for SimFd {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            match Arc::try_unwrap(fd) {
                Ok(fd) => {
                    let _ = fd.into_raw_fd();
                }
                Err(still_held) => std::mem::forget(still_held),
            }
        }
    }
}

/// What one [`run`] did: lets a test show that its input reached what it
/// claims to exercise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Ops handed to the table (refused ones included).
    pub started: usize,
    /// Ops the table refused (full SQ): given back at once.
    pub refused: usize,
    /// Final completions, by result: successes and failures.
    pub succeeded: usize,
    /// Final completions with a negative result.
    pub failed: usize,
    /// Final completions with `-ECANCELED`.
    pub cancelled: usize,
    /// Intermediate (`F_MORE`) completions.
    pub more: usize,
    /// Completions that were no op's (cancels' own).
    pub stale: usize,
    /// Stream bytes that went through (sent, then received).
    pub stream_bytes: usize,
    /// Ops in flight when the table was dropped (leaked).
    pub leaked: usize,
    /// Faults the kernel injected before the final drain.
    pub injected: Injected,
    /// Bytes the socket's peer wrote and its reader received.
    pub sock_bytes: usize,
    /// Provided buffers handed out by multishot receives (each read and
    /// provided again).
    pub buffers_handed_out: usize,
    /// Intermediate completions of multishot receives.
    pub recv_shots: usize,
    /// Connections accepted and adopted by the check.
    pub accepted: usize,
    /// Multishot accept completions dropped unread (their fds closed by
    /// the dropped event).
    pub events_dropped: usize,
    /// Socket receives that ended at end of file.
    pub eof: usize,
}

/// What kind of op a serial is, and what the model expects of it.
#[derive(Clone, Debug)]
enum Kind {
    Read { offset: u64, len: usize },
    Recv { len: usize },
    Send { data: Vec<u8>, offset: u64 },
    Timeout { multishot: bool, shots: u8 },
    Nop,
    SockRecv { len: usize },
    SockRecvMulti,
    Accept { multishot: bool },
    Provide { bid: u16 },
    SockRecvRing,
}

struct Live {
    id: OpId,
    kind: Kind,
    /// Completions with `F_MORE` seen (multishot).
    more: u32,
}

/// Bytes of the data file.
const DATA_LEN: usize = 160;

fn data_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(37).wrapping_add(11)
}

struct Model {
    kernel: SimKernel,
    ring: Ring,
    /// `None` once dropped (`Action::DropTable`).
    table: Option<InFlight<usize>>,
    tracker: Tracker,
    data_fd: SimFd,
    stream_fd: SimFd,
    data_raw: RawFd,
    stream_raw: RawFd,
    data_closed: bool,
    live: BTreeMap<usize, Live>,
    /// Cancel SQEs that found the SQ full, pushed at the next chance.
    pending_cancels: Vec<Sqe>,
    sent: Vec<u8>,
    received: Vec<u8>,
    /// Bytes queued by the send in flight, or by the last one.
    next_send_offset: u64,
    send_in_flight: bool,
    recv_in_flight: bool,
    /// Our end of the simulated socket, its peer (the outside's, `None` once
    /// closed), the listener, and the clients connected to it.
    sock: Arc<OwnedFd>,
    peer: Option<OwnedFd>,
    listener: Arc<OwnedFd>,
    clients: Vec<OwnedFd>,
    pool: Arc<Pool>,
    bufs: Vec<BufState>,
    /// The provided-buffer ring of [`Action::SockRecvRing`], made on first use.
    group: Option<Arc<RecvBufGroup>>,
    /// Bytes the outside wrote into the peer, and those the socket's reader got.
    peer_sent: Vec<u8>,
    sock_received: Vec<u8>,
    /// A socket receive (single or multishot) is in flight.
    sock_reader: bool,
    sock_eof: bool,
    /// A multishot receive was started: from then on the pool's buffers are
    /// provided again as they come back.
    pool_used: bool,
    /// Ops whose waiter went away ([`Action::Abandon`]).
    abandoned: BTreeSet<usize>,
    report: Report,
}

/// The `i`-th byte written into the socket's peer: numbered, so a lost,
/// duplicated or reordered stretch shows.
fn peer_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Errors an enter may return under injected faults; anything else is a bug.
fn expect_retryable(r: io::Result<u32>) {
    if let Err(e) = r {
        assert!(
            matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR | libc::EAGAIN)),
            "unexpected enter error: {e}"
        );
    }
}

impl Model {
    fn new(faults: Faults) -> Model {
        let kernel = SimKernel::new();
        kernel.set_initial_index(u32::MAX - 2);
        let data: Vec<u8> = (0..DATA_LEN).map(data_byte).collect();
        let data_raw = kernel.create_file(data);
        let stream_raw = kernel.create_file(Vec::new());
        let ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).expect("simulated ring");
        let (sock, peer) = kernel.socket_pair().expect("a simulated socket pair");
        let listener = kernel.listener().expect("a simulated listener");
        kernel.set_faults(faults);
        Model {
            sock: Arc::new(sock),
            peer: Some(peer),
            listener: Arc::new(listener),
            clients: Vec::new(),
            pool: Pool::new(),
            bufs: vec![BufState::Ours; usize::from(BUFS)],
            group: None,
            peer_sent: Vec::new(),
            sock_received: Vec::new(),
            sock_reader: false,
            sock_eof: false,
            pool_used: false,
            abandoned: BTreeSet::new(),
            data_fd: SimFd::new(data_raw),
            stream_fd: SimFd::new(stream_raw),
            kernel,
            ring,
            table: Some(InFlight::default()),
            tracker: Tracker::default(),
            data_raw,
            stream_raw,
            data_closed: false,
            live: BTreeMap::new(),
            pending_cancels: Vec::new(),
            sent: Vec::new(),
            received: Vec::new(),
            next_send_offset: 0,
            send_in_flight: false,
            recv_in_flight: false,
            report: Report::default(),
        }
    }

    fn submit_op(&mut self, serial: usize, op: Box<dyn Op>, kind: Kind) {
        let table = self.table.as_mut().expect("checked by the caller");
        // Marked before the push: the kernel may run the SQE at any enter after it.
        self.tracker.set(serial, Life::InFlight);
        let counted = !matches!(kind, Kind::Provide { .. });
        self.report.started += usize::from(counted);
        match table.submit(&mut self.ring, op, serial) {
            Ok(id) => {
                match kind {
                    Kind::Send { .. } => self.send_in_flight = true,
                    Kind::Recv { .. } => self.recv_in_flight = true,
                    Kind::SockRecv { .. } | Kind::SockRecvMulti | Kind::SockRecvRing => {
                        self.sock_reader = true;
                    }
                    Kind::Provide { bid } => self.bufs[usize::from(bid)] = BufState::Provided,
                    _ => {}
                }
                self.live.insert(serial, Live { id, kind, more: 0 });
            }
            Err((op, e)) => {
                assert_eq!(e, PushError::Full, "the only refusal on this ring is a full SQ");
                self.tracker.set(serial, Life::Refused);
                self.report.refused += usize::from(counted);
                // Nothing reached the ring (a refused send queued no bytes).
                drop(op);
            }
        }
    }

    fn buffer(&self, serial: usize, vec: Vec<u8>) -> Tracked {
        Tracked::new(vec, serial, &self.tracker)
    }

    fn act(&mut self, action: Action, mode: Mode) {
        if self.table.is_none() {
            return;
        }
        self.provide_ours();
        match action {
            Action::Read { len, offset } => {
                let serial = self.tracker.new_serial();
                let buf = self.buffer(serial, Vec::with_capacity(usize::from(len)));
                let op = Read::new(self.data_fd.shared(), buf, u64::from(offset));
                let kind = Kind::Read {
                    offset: u64::from(offset),
                    len: usize::from(len),
                };
                self.submit_op(serial, Box::new(op), kind);
            }
            Action::Recv { len } => {
                if self.recv_in_flight {
                    return;
                }
                let serial = self.tracker.new_serial();
                let buf = self.buffer(serial, Vec::with_capacity(usize::from(len)));
                let op = Recv::new(self.stream_fd.shared(), buf, 0);
                self.submit_op(
                    serial,
                    Box::new(op),
                    Kind::Recv {
                        len: usize::from(len),
                    },
                );
            }
            Action::Send { len } => {
                if self.send_in_flight {
                    return;
                }
                let serial = self.tracker.new_serial();
                let start = self.next_send_offset as usize;
                let data: Vec<u8> = (start..start + usize::from(len))
                    .map(|i| (i as u8) ^ (serial as u8).wrapping_mul(13))
                    .collect();
                let offset = self.next_send_offset;
                let op = Write::new(self.stream_fd.shared(), self.buffer(serial, data.clone()), offset);
                self.submit_op(serial, Box::new(op), Kind::Send { data, offset });
            }
            Action::Timeout { ms, count, multishot } => {
                let serial = self.tracker.new_serial();
                // A multishot timeout needs a non-zero interval (or one
                // advance would fire it without end).
                let ms = if multishot { ms.max(1) } else { ms };
                let op = TimeoutOp {
                    ts: Box::new(abi::kernel_timespec {
                        tv_sec: 0,
                        tv_nsec: i64::from(ms) * 1_000_000,
                    }),
                    count: u64::from(count),
                    multishot,
                    token: self.buffer(serial, Vec::new()),
                };
                let kind = Kind::Timeout {
                    multishot,
                    shots: count,
                };
                self.submit_op(serial, Box::new(op), kind);
            }
            Action::Nop => {
                let serial = self.tracker.new_serial();
                let op = TrackedNop {
                    _token: self.buffer(serial, Vec::new()),
                };
                self.submit_op(serial, Box::new(op), Kind::Nop);
            }
            Action::Cancel { nth } => {
                if self.live.is_empty() {
                    return;
                }
                let k = usize::from(nth) % self.live.len();
                let id = self.live.values().nth(k).expect("k < len").id;
                let table = self.table.as_mut().expect("checked above");
                if let Some(sqe) = table.cancel_sqe(id) {
                    self.pending_cancels.push(sqe);
                }
                self.push_cancels();
            }
            Action::Submit => {
                self.push_cancels();
                expect_retryable(self.ring.submit());
            }
            Action::Flush => {
                self.push_cancels();
                expect_retryable(self.ring.submit_and_wait(0, Some(Duration::ZERO)));
            }
            Action::Reap { max } => {
                self.reap(usize::from(max));
            }
            Action::Advance { ms } => self.kernel.advance(Duration::from_millis(u64::from(ms))),
            Action::CloseData => {
                if !self.data_closed {
                    assert!(self.kernel.remove_file(self.data_raw));
                    self.data_closed = true;
                }
            }
            Action::DropTable => {
                if mode == Mode::LeakTable {
                    self.drop_table();
                }
            }
            Action::SockRecv { len } => {
                if self.sock_reader || self.sock_eof {
                    return;
                }
                let serial = self.tracker.new_serial();
                let buf = self.buffer(serial, Vec::with_capacity(usize::from(len)));
                let op = Recv::new(self.sock.clone(), buf, 0);
                let kind = Kind::SockRecv {
                    len: usize::from(len),
                };
                self.submit_op(serial, Box::new(op), kind);
            }
            Action::SockRecvMulti { len } => {
                if self.sock_reader || self.sock_eof {
                    return;
                }
                self.pool_used = true;
                self.provide_ours();
                let serial = self.tracker.new_serial();
                let op = RecvMultiOp {
                    fd: self.sock.clone(),
                    len: u32::from(len),
                    _pool: self.pool.clone(),
                    token: self.buffer(serial, Vec::new()),
                };
                self.submit_op(serial, Box::new(op), Kind::SockRecvMulti);
            }
            Action::SockRecvRing => {
                // Buffer rings live in `mmap`ed memory, which Miri cannot make
                // (no `madvise`): the action is skipped there.
                if self.sock_reader || self.sock_eof || cfg!(miri) {
                    return;
                }
                if self.group.is_none() {
                    let group = RecvBufGroup::new(&self.ring, RING_GROUP, BUFS, BUF_LEN)
                        .expect("a provided-buffer ring on the simulated ring");
                    self.group = Some(group);
                }
                let group = self.group.clone().expect("made above");
                let serial = self.tracker.new_serial();
                let op = TrackedOp {
                    inner: RecvMulti::new(self.sock.clone(), group),
                    token: self.buffer(serial, Vec::new()),
                };
                self.submit_op(serial, Box::new(op), Kind::SockRecvRing);
            }
            Action::PeerWrite { len } => {
                let Some(peer) = &self.peer else { return };
                let start = self.peer_sent.len();
                let data: Vec<u8> = (start..start + usize::from(len)).map(peer_byte).collect();
                match self.kernel.stream_write(peer, &data) {
                    Ok(n) => self.peer_sent.extend_from_slice(&data[..n]),
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                    Err(e) => panic!("writing into the peer: {e}"),
                }
            }
            Action::PeerClose => {
                if let Some(peer) = self.peer.take() {
                    self.kernel.close(peer);
                }
            }
            Action::Connect => {
                if self.clients.len() < 16 {
                    let client = self.kernel.connect(&*self.listener).expect("connecting a client");
                    self.clients.push(client);
                }
            }
            Action::Accept { multishot } => {
                let serial = self.tracker.new_serial();
                let inner = if multishot {
                    Accept::multishot(self.listener.clone())
                } else {
                    Accept::new(self.listener.clone())
                };
                let op = TrackedOp {
                    inner,
                    token: self.buffer(serial, Vec::new()),
                };
                self.submit_op(serial, Box::new(op), Kind::Accept { multishot });
            }
            Action::Abandon { nth } => {
                let candidates: Vec<usize> = self
                    .live
                    .iter()
                    .filter(|(_, l)| !matches!(l.kind, Kind::Provide { .. }))
                    .map(|(&s, _)| s)
                    .collect();
                if candidates.is_empty() {
                    return;
                }
                let serial = candidates[usize::from(nth) % candidates.len()];
                self.abandoned.insert(serial);
                let id = self.live[&serial].id;
                let table = self.table.as_mut().expect("checked above");
                if let Some(sqe) = table.cancel_sqe(id) {
                    self.pending_cancels.push(sqe);
                }
                self.push_cancels();
            }
        }
        self.tracker.assert_clean();
    }

    /// Provides again every buffer of the pool that is the check's.
    fn provide_ours(&mut self) {
        if !self.pool_used {
            return;
        }
        for bid in 0..BUFS {
            if self.bufs[usize::from(bid)] != BufState::Ours || self.table.is_none() {
                continue;
            }
            let serial = self.tracker.new_serial();
            let op = ProvideOp {
                pool: self.pool.clone(),
                bid,
                token: self.buffer(serial, Vec::new()),
            };
            self.submit_op(serial, Box::new(op), Kind::Provide { bid });
        }
    }

    /// Takes the data of a receive completion that names a provided buffer:
    /// the buffer must be the kernel's (handed out once), becomes the
    /// check's, and is provided again later.
    fn take_provided(&mut self, cqe: &Cqe) {
        let Some(bid) = cqe.buffer_id() else {
            assert!(cqe.res <= 0, "a receive of {} bytes without a buffer", cqe.res);
            return;
        };
        assert!(cqe.res >= 0, "a failed receive handed out buffer {bid}");
        assert!(bid < BUFS, "buffer id {bid} was never provided");
        let state = &mut self.bufs[usize::from(bid)];
        assert_eq!(*state, BufState::Provided, "buffer {bid} handed out twice");
        *state = BufState::Ours;
        self.report.buffers_handed_out += 1;
        let data = self.pool.read(bid, cqe.res as usize);
        self.sock_data(&data);
    }

    /// Bytes the socket's reader got, in completion order.
    fn sock_data(&mut self, data: &[u8]) {
        self.sock_received.extend_from_slice(data);
        assert!(
            self.peer_sent.starts_with(&self.sock_received),
            "the socket's bytes came out lost, duplicated or out of order"
        );
    }

    /// `n` bytes delivered to a completion nobody reads (an abandoned op's):
    /// gone, but accounted for, in order.
    fn sock_dropped(&mut self, n: usize) {
        let at = self.sock_received.len();
        assert!(
            at + n <= self.peer_sent.len(),
            "a dropped completion of {n} bytes at {at}: more than the peer wrote ({})",
            self.peer_sent.len()
        );
        let skipped = self.peer_sent[at..at + n].to_vec();
        self.sock_received.extend_from_slice(&skipped);
    }

    /// End of file on the socket: only once the peer closed and every byte it
    /// wrote was received.
    fn sock_end(&mut self) {
        assert!(self.peer.is_none(), "end of file while the peer is open");
        assert_eq!(
            self.sock_received, self.peer_sent,
            "end of file before every byte the peer wrote"
        );
        self.sock_eof = true;
        self.report.eof += 1;
    }

    /// An accepted connection: a simulated socket the check now owns,
    /// closed at once.
    fn adopt(&mut self, fd: OwnedFd) {
        assert!(
            self.kernel.is_stream(fd.as_fd()),
            "accepted fd {} is no simulated socket",
            fd.as_raw_fd()
        );
        self.report.accepted += 1;
        drop(fd);
    }

    fn push_cancels(&mut self) {
        while let Some(sqe) = self.pending_cancels.first() {
            if self.ring.push(sqe).is_err() {
                return;
            }
            self.pending_cancels.remove(0);
        }
    }

    /// Drops the table with its ops in flight: they must be leaked, never
    /// released, since the kernel may still write into them.
    fn drop_table(&mut self) {
        let in_flight: Vec<usize> = self.live.keys().copied().collect();
        self.report.leaked = in_flight.len();
        drop(self.table.take());
        self.tracker.assert_clean();
        let ledger = self.tracker.lock();
        for serial in in_flight {
            assert_eq!(
                ledger.released[serial], 0,
                "op {serial} in flight was released with its table"
            );
        }
    }

    /// Reaps up to `max` completions; returns how many.
    fn reap(&mut self, max: usize) -> usize {
        for n in 0..max {
            let Some(cqe) = self.ring.reap() else { return n };
            let table = self.table.as_mut().expect("reaping with a table");
            match table.complete(cqe) {
                // A cancel's own completion (tagged Ignore).
                Completion::Stale => self.report.stale += 1,
                Completion::More { payload, event } => self.on_more(payload, event),
                Completion::Finished { payload, op, cqe } => self.on_finished(payload, op, &cqe),
            }
        }
        max
    }

    fn on_more(&mut self, serial: usize, mut event: OpEvent) {
        let live = self
            .live
            .get_mut(&serial)
            .unwrap_or_else(|| panic!("F_MORE completion for op {serial}, which is not in flight"));
        let cqe = *event.cqe();
        live.more += 1;
        self.report.more += 1;
        match live.kind {
            Kind::Timeout {
                multishot: true,
                shots,
            } => {
                assert_eq!(cqe.res, -libc::ETIME, "a multishot timeout's shot");
                if shots > 0 {
                    assert!(live.more < u32::from(shots), "more shots than asked for");
                }
            }
            Kind::SockRecvMulti => {
                assert!(cqe.res > 0, "a multishot receive's shot of {} bytes", cqe.res);
                assert!(
                    cqe.buffer_id().is_some(),
                    "a multishot receive's shot names its buffer"
                );
                self.report.recv_shots += 1;
                self.take_provided(&cqe);
            }
            Kind::SockRecvRing => {
                assert!(cqe.res > 0, "a multishot receive's shot of {} bytes", cqe.res);
                self.report.recv_shots += 1;
                self.report.buffers_handed_out += 1;
                if self.abandoned.contains(&serial) {
                    // Dropped unread: its buffer goes back to the ring with it.
                    self.report.events_dropped += 1;
                    drop(event);
                    self.sock_dropped(cqe.res as usize);
                } else {
                    let mut data = Vec::new();
                    let n = event.read_into(&mut data).expect("a shot with data");
                    assert_eq!(n, cqe.res as usize, "a shot's bytes");
                    self.sock_data(&data);
                }
            }
            Kind::Accept { multishot: true } => {
                assert!(cqe.res >= 0, "a multishot accept's connection: {}", cqe.res);
                if self.abandoned.contains(&serial) {
                    // Nobody reads it: the event closes its fd as it drops.
                    self.report.events_dropped += 1;
                    drop(event);
                } else {
                    let fd = event
                        .take_fd()
                        .expect("a multishot accept's event carries its fd");
                    self.adopt(fd);
                }
            }
            _ => panic!(
                "F_MORE completion {cqe:?} reached op {serial} ({:?}), not a multishot op",
                live.kind
            ),
        }
    }

    fn on_finished(&mut self, serial: usize, op: Box<dyn Op>, cqe: &Cqe) {
        let live = self
            .live
            .remove(&serial)
            .unwrap_or_else(|| panic!("final completion {cqe:?} for op {serial}, which is not in flight"));
        assert_eq!(
            self.tracker.life(serial),
            Life::InFlight,
            "op {serial} completed twice"
        );
        assert!(!cqe.has_more(), "a final completion without F_MORE");
        self.tracker.set(serial, Life::Finished);
        let abandoned = self.abandoned.remove(&serial);
        let res = cqe.res;
        match res {
            _ if matches!(live.kind, Kind::Provide { .. }) => {}
            0.. => self.report.succeeded += 1,
            r if r == -libc::ECANCELED => {
                self.report.failed += 1;
                self.report.cancelled += 1;
            }
            _ => self.report.failed += 1,
        }
        let any = op.into_any();
        match live.kind {
            Kind::Read { offset, len } => {
                let read = any
                    .downcast::<Read<Tracked>>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                let buf = read.into_buf();
                assert_eq!(
                    buf.serial, serial,
                    "op {serial} came back with another op's buffer"
                );
                if res >= 0 {
                    let n = res as usize;
                    assert!(n <= len, "read of {len} returned {n}");
                    let start = (offset as usize).min(DATA_LEN);
                    let expected: Vec<u8> = (start..DATA_LEN).map(data_byte).take(n).collect();
                    assert_eq!(
                        buf.vec, expected,
                        "read {serial} at {offset} got another op's bytes"
                    );
                } else {
                    let ok = [-libc::EAGAIN, -libc::ECANCELED].contains(&res)
                        || (res == -libc::EBADF && self.data_closed);
                    assert!(ok, "read {serial} failed with {res}");
                    assert!(buf.vec.is_empty(), "a failed read marks nothing initialized");
                }
            }
            Kind::Recv { len } => {
                self.recv_in_flight = false;
                let recv = any
                    .downcast::<Recv<Tracked>>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                let got = recv.received().to_vec();
                let buf = recv.into_buf();
                assert_eq!(
                    buf.serial, serial,
                    "op {serial} came back with another op's buffer"
                );
                if res >= 0 {
                    assert!(res as usize <= len, "receive of {len} returned {res}");
                    assert_eq!(got.len(), res as usize);
                    self.received.extend_from_slice(&got);
                    let stream = self
                        .kernel
                        .file_contents(self.stream_raw)
                        .expect("the stream file");
                    assert!(
                        stream.starts_with(&self.received),
                        "the stream's bytes came out of order, lost or duplicated"
                    );
                } else {
                    assert!(
                        [-libc::EAGAIN, -libc::ECANCELED].contains(&res),
                        "receive {serial} failed with {res}"
                    );
                    assert!(got.is_empty());
                }
            }
            Kind::Send { data, offset } => {
                self.send_in_flight = false;
                let write = any
                    .downcast::<Write<Tracked>>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                let buf = write.into_buf();
                assert_eq!(
                    buf.serial, serial,
                    "op {serial} came back with another op's buffer"
                );
                assert_eq!(buf.vec, data, "a write's buffer comes back unchanged");
                assert_eq!(offset, self.sent.len() as u64, "sends are appended in order");
                if res >= 0 {
                    let n = res as usize;
                    assert!(n <= data.len(), "send of {} returned {n}", data.len());
                    self.sent.extend_from_slice(&data[..n]);
                    self.next_send_offset = self.sent.len() as u64;
                } else {
                    assert!(
                        [-libc::EAGAIN, -libc::ECANCELED].contains(&res),
                        "send {serial} failed with {res}"
                    );
                }
            }
            Kind::Timeout { multishot, shots } => {
                let t = any
                    .downcast::<TimeoutOp>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                assert_eq!(
                    t.token.serial, serial,
                    "op {serial} came back with another op's token"
                );
                let ok = match res {
                    r if r == -libc::ETIME || r == -libc::ECANCELED => true,
                    0 => !multishot && shots > 0,
                    _ => false,
                };
                assert!(ok, "timeout {serial} ended with {res}");
                if multishot && shots > 0 && res == -libc::ETIME {
                    // The last shot, unless a cancel that lost its race ended it early.
                    assert!(live.more < u32::from(shots));
                }
            }
            Kind::Nop => {
                let nop = any
                    .downcast::<TrackedNop>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                assert_eq!(nop._token.serial, serial);
                assert_eq!(res, 0, "a NOP completes with 0");
            }
            Kind::SockRecv { len } => {
                self.sock_reader = false;
                let recv = any
                    .downcast::<Recv<Tracked>>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                let got = recv.received().to_vec();
                let buf = recv.into_buf();
                assert_eq!(
                    buf.serial, serial,
                    "op {serial} came back with another op's buffer"
                );
                match res {
                    0 if len > 0 => self.sock_end(),
                    0.. => {
                        assert!(res as usize <= len, "receive of {len} returned {res}");
                        assert_eq!(got.len(), res as usize);
                        self.sock_data(&got);
                    }
                    _ => {
                        assert!(
                            [-libc::EAGAIN, -libc::ECANCELED].contains(&res),
                            "socket receive {serial} failed with {res}"
                        );
                        assert!(got.is_empty());
                    }
                }
            }
            Kind::SockRecvMulti => {
                self.sock_reader = false;
                let op = any
                    .downcast::<RecvMultiOp>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                assert_eq!(
                    op.token.serial, serial,
                    "op {serial} came back with another op's token"
                );
                match res {
                    0 if cqe.buffer_id().is_none() => self.sock_end(),
                    0.. => self.take_provided(cqe),
                    _ => {
                        assert!(cqe.buffer_id().is_none(), "a failed receive names a buffer");
                        assert!(
                            [-libc::EAGAIN, -libc::ECANCELED, -libc::ENOBUFS].contains(&res),
                            "multishot receive {serial} failed with {res}"
                        );
                    }
                }
            }
            Kind::SockRecvRing => {
                self.sock_reader = false;
                let mut op = any
                    .downcast::<TrackedOp<RecvMulti>>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                assert_eq!(
                    op.token.serial, serial,
                    "op {serial} came back with another op's token"
                );
                match res {
                    0 if cqe.buffer_id().is_none() => self.sock_end(),
                    0.. if abandoned => {
                        // Its buffer goes back with the op.
                        drop(op);
                        self.sock_dropped(res as usize);
                    }
                    0.. => {
                        let mut data = Vec::new();
                        let n = op.inner.take_final(&mut data).expect("a final shot with data");
                        assert_eq!(n, res as usize);
                        self.sock_data(&data);
                    }
                    _ => assert!(
                        [-libc::EAGAIN, -libc::ECANCELED, -libc::ENOBUFS].contains(&res),
                        "multishot receive {serial} failed with {res}"
                    ),
                }
            }
            Kind::Accept { .. } => {
                let op = any
                    .downcast::<TrackedOp<Accept>>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                assert_eq!(
                    op.token.serial, serial,
                    "op {serial} came back with another op's token"
                );
                if res >= 0 {
                    let fd = op
                        .inner
                        .into_fd()
                        .expect("a successful accept holds its connection");
                    if abandoned {
                        // Nobody takes it: it closes with the op's remains.
                        self.report.events_dropped += 1;
                        drop(fd);
                    } else {
                        self.adopt(fd);
                    }
                } else {
                    assert_eq!(res, -libc::ECANCELED, "accept {serial} failed with {res}");
                    assert!(op.inner.into_fd().is_none());
                }
            }
            Kind::Provide { bid } => {
                let op = any
                    .downcast::<ProvideOp>()
                    .unwrap_or_else(|_| panic!("op {serial} came back as another type"));
                assert_eq!((op.token.serial, op.bid), (serial, bid));
                assert_eq!(res, 0, "providing buffer {bid}");
            }
        }
        // The op (and its buffer) was released just now, after its final completion.
        assert_eq!(
            self.tracker.lock().released[serial],
            1,
            "op {serial} released once"
        );
    }

    /// Ends every op (faults off): cancel what is in flight, run the clock,
    /// reap until the table is empty; then read the stream to its end.
    fn drain(&mut self) {
        self.report.injected = self.kernel.injected();
        self.kernel.set_faults(Faults::default());
        if self.table.is_none() {
            return;
        }
        // Each round cancels what is in flight, waits (a wait that would block
        // releases held-back completions and flushes the overflow list), reaps,
        // and runs the clock. Done when nothing is in flight, held back,
        // overflowed or unreaped; a failure when nothing completes for 8 rounds.
        // The peer closes: receives waiting on the socket end at end of file.
        if let Some(peer) = self.peer.take() {
            self.kernel.close(peer);
        }
        let mut idle = 0;
        loop {
            let sim = self.ring.sim_ring().expect("a simulated ring");
            let settled = sim.delayed() == 0 && sim.overflowed() == 0 && self.ring.cq_len() == 0;
            if settled && self.live.is_empty() && self.pending_cancels.is_empty() {
                break;
            }
            let table = self.table.as_mut().expect("checked above");
            self.pending_cancels.extend(table.cancel_all_sqes());
            self.push_cancels();
            expect_retryable(self.ring.submit_and_wait(1, Some(Duration::ZERO)));
            let mut reaped = self.reap(usize::MAX);
            if !self.live.is_empty() {
                self.kernel.advance(Duration::from_millis(64));
                reaped += self.reap(usize::MAX);
            }
            idle = if reaped == 0 { idle + 1 } else { 0 };
            assert!(
                idle < 8,
                "nothing completes: ops {:?} in flight, {} cancels unpushed",
                self.live.keys(),
                self.pending_cancels.len()
            );
        }
        // The stream: what was sent is in the file, and comes out whole.
        let stream = self
            .kernel
            .file_contents(self.stream_raw)
            .expect("the stream file");
        assert_eq!(stream, self.sent, "the stream holds exactly the bytes sent");
        while self.received.len() < self.sent.len() {
            let before = self.received.len();
            self.act(Action::Recv { len: 64 }, Mode::Complete);
            expect_retryable(self.ring.submit_and_wait(1, Some(Duration::ZERO)));
            self.reap(usize::MAX);
            assert!(
                self.received.len() > before,
                "a receive with data waiting returned nothing"
            );
        }
        assert_eq!(self.received, self.sent, "bytes received == bytes sent, in order");
        self.report.stream_bytes = self.sent.len();
        // The socket: read what is left, to end of file (not counted in the
        // report's op counts, which tell what the input itself did).
        let counts = (self.report.started, self.report.succeeded, self.report.eof);
        let mut rounds = 0;
        while !self.sock_eof {
            self.act(Action::SockRecv { len: 64 }, Mode::Complete);
            expect_retryable(self.ring.submit_and_wait(1, Some(Duration::ZERO)));
            self.reap(usize::MAX);
            rounds += 1;
            assert!(rounds < 64, "the socket never reaches end of file");
        }
        (self.report.started, self.report.succeeded, self.report.eof) = counts;
        assert_eq!(
            self.sock_received, self.peer_sent,
            "bytes received == bytes the peer wrote, in order"
        );
        self.report.sock_bytes = self.peer_sent.len();
        assert!(
            self.bufs
                .iter()
                .all(|&b| b == BufState::Ours || b == BufState::Provided),
            "every provided buffer came back"
        );
        if let Some(group) = &self.group {
            assert_eq!(group.taken(), 0, "every buffer of the ring came back to it");
            assert_eq!(
                Arc::strong_count(group),
                1,
                "no op holds the ring's group any more"
            );
        }
        // Every accepted connection was closed once: only the socket and the
        // listener are left open once the clients go.
        self.clients.clear();
        assert_eq!(
            Arc::strong_count(&self.sock),
            1,
            "the socket's references are back at baseline"
        );
        assert_eq!(
            Arc::strong_count(&self.listener),
            1,
            "the listener's references are back at baseline"
        );
        assert_eq!(
            self.kernel.open_streams(),
            2,
            "a simulated fd was leaked (or closed twice)"
        );
    }

    fn check_end(&self, mode: Mode) {
        self.tracker.assert_clean();
        let sim = self.ring.sim_ring().expect("a simulated ring");
        if let Some(table) = &self.table {
            assert!(table.is_empty() && self.live.is_empty(), "ops left in flight");
            assert_eq!(sim.pending_ops(), 0, "the kernel still holds ops");
            assert_eq!(sim.delayed(), 0, "completions still held back");
            assert_eq!(sim.overflowed(), 0, "completions still on the overflow list");
            assert_eq!(self.ring.cq_len(), 0, "completions left unreaped");
            assert_eq!(
                self.data_fd.holders(),
                1,
                "the data fd's references are back at baseline"
            );
            assert_eq!(
                self.stream_fd.holders(),
                1,
                "the stream fd's references are back at baseline"
            );
            let ledger = self.tracker.lock();
            for (serial, n) in ledger.released.iter().enumerate() {
                assert_eq!(
                    *n, 1,
                    "op {serial} ({:?}) released {n} times",
                    ledger.life[serial]
                );
            }
        } else {
            assert_eq!(mode, Mode::LeakTable);
            let ledger = self.tracker.lock();
            for (serial, n) in ledger.released.iter().enumerate() {
                let leaked = self.live.contains_key(&serial);
                assert_eq!(
                    *n,
                    u32::from(!leaked),
                    "op {serial} released {n} times (leaked: {leaked})"
                );
            }
        }
    }
}

/// Runs one lifecycle input (fault bytes, then actions) and checks every
/// invariant; panics with a message when one breaks. See the module docs.
pub fn run(input: &[u8], mode: Mode) -> Report {
    let faults = faults_from_bytes(input);
    let actions = Action::decode_all(input.get(FAULT_BYTES..).unwrap_or(&[]));
    run_actions(faults, &actions, mode)
}

/// An input for [`run`]: `fault_bytes` (see [`faults_from_bytes`]), then `actions`.
pub fn encode_input(fault_bytes: [u8; FAULT_BYTES], actions: &[Action]) -> Vec<u8> {
    let mut input = fault_bytes.to_vec();
    input.extend(actions.iter().flat_map(|a| a.encode()));
    input
}

/// [`run`] with the faults and actions given directly (regression tests).
pub fn run_actions(faults: Faults, actions: &[Action], mode: Mode) -> Report {
    let mut model = Model::new(faults);
    for &action in actions {
        model.act(action, mode);
        if model.table.is_none() {
            break;
        }
    }
    if model.table.is_some() {
        model.drain();
    } else {
        // The table is gone: let the kernel run what was queued, writing into
        // the leaked buffers (Miri checks that memory is still allocated).
        model.report.injected = model.kernel.injected();
        model.kernel.set_faults(Faults::default());
        expect_retryable(model.ring.submit_and_wait(0, Some(Duration::ZERO)));
        model.kernel.advance(Duration::from_secs(1));
    }
    model.check_end(mode);
    model.report
}
