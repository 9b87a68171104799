//! The op lifecycle on the simulated kernel: [`InFlight`] with owned ops,
//! driven by arbitrary bytes, with the kernel's faults chosen by those bytes.
//!
//! [`run`] reads its input as a fault mix ([`faults_from_bytes`]) and then a
//! sequence of three-byte actions ([`Action::decode`]): start a read, a
//! receive, a write or a timeout (single or multishot), cancel an op, submit,
//! wait, reap, move the clock, take the data file away, or (in
//! [`Mode::LeakTable`] only) drop the op table with ops in flight. The ring is
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

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Cqe;
use crate::abi;
use crate::buf::{IoBuf, IoBufMut};
use crate::msg::OpId;
use crate::op::fs::{Read, Write};
use crate::op::net::Recv;
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
}

impl Action {
    /// Decodes one action from three bytes.
    pub fn decode(b: [u8; 3]) -> Action {
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
}

/// What kind of op a serial is, and what the model expects of it.
#[derive(Clone, Debug)]
enum Kind {
    Read { offset: u64, len: usize },
    Recv { len: usize },
    Send { data: Vec<u8>, offset: u64 },
    Timeout { multishot: bool, shots: u8 },
    Nop,
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
    report: Report,
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
        kernel.set_faults(faults);
        Model {
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
        self.report.started += 1;
        match table.submit(&mut self.ring, op, serial) {
            Ok(id) => {
                match kind {
                    Kind::Send { .. } => self.send_in_flight = true,
                    Kind::Recv { .. } => self.recv_in_flight = true,
                    _ => {}
                }
                self.live.insert(serial, Live { id, kind, more: 0 });
            }
            Err((op, e)) => {
                assert_eq!(e, PushError::Full, "the only refusal on this ring is a full SQ");
                self.tracker.set(serial, Life::Refused);
                self.report.refused += 1;
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
        }
        self.tracker.assert_clean();
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
                Completion::More { payload, event } => self.on_more(payload, &event),
                Completion::Finished { payload, op, cqe } => self.on_finished(payload, op, &cqe),
            }
        }
        max
    }

    fn on_more(&mut self, serial: usize, event: &OpEvent) {
        let live = self
            .live
            .get_mut(&serial)
            .unwrap_or_else(|| panic!("F_MORE completion for op {serial}, which is not in flight"));
        let cqe = event.cqe();
        let Kind::Timeout {
            multishot: true,
            shots,
        } = live.kind
        else {
            panic!(
                "F_MORE completion {cqe:?} reached op {serial} ({:?}), not a multishot op",
                live.kind
            )
        };
        assert_eq!(cqe.res, -libc::ETIME, "a multishot timeout's shot");
        live.more += 1;
        self.report.more += 1;
        if shots > 0 {
            assert!(live.more < u32::from(shots), "more shots than asked for");
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
        let res = cqe.res;
        match res {
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
