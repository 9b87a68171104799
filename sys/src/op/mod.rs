//! The safe submission API: ops that own every resource the kernel touches.
//!
//! An [`Op`] is a value that owns its buffers, paths, address and result
//! structures. [`InFlight`] takes it boxed, asks it for its SQE (whose
//! pointers lead only into memory the box owns), pushes the SQE, and keeps the
//! box until the op's final CQE. Only then is the box handed back, so no
//! resource the kernel may still write is ever freed, whatever the future
//! waiting for it does. A waiter that goes away asks for [`InFlight::cancel_sqe`]
//! and lets the final CQE return the box; dropping the box then releases what
//! the op created (an accepted or opened fd is an `OwnedFd` inside the op).
//!
//! # Lifecycle
//!
//! `Submitted → Completed`, or `Submitted → CancelRequested → Completed`, then
//! `Freed`. A multishot op stays `Submitted` across CQEs with
//! `IORING_CQE_F_MORE` and completes with the first CQE without it.
//! `user_data` carries slab index + generation ([`crate::msg::OpId`]), so a
//! CQE of a freed slot can never complete the op that reuses it.
//!
//! # Trusting completions
//!
//! What a completion says (a byte count, a new fd, a provided buffer's id) is
//! trusted only when it comes from the kernel for this very op. So:
//! - [`InFlight::complete`] takes a [`RingCqe`], which only [`Ring::reap`]
//!   makes, which names its ring, and which cannot be copied; each table
//!   belongs to one ring and each ring to one table
//!   ([`PushError::OtherTable`]).
//! - No safe push can put an op's tag in flight: [`Ring::push`] and
//!   [`Ring::push_msg_ring`] refuse it ([`PushError::ReservedTag`]), so a
//!   completion tagged as an op comes from that op's SQE.
//! - An op records its outcome itself: the table hands it each completion
//!   ([`Op::complete`], [`Op::progress`], both `unsafe` to call), and the
//!   blocking form ([`Op::run_blocking`]) records what its system call did.
//!   The methods that give results back (`into_buf`, `into_fd`, …) take no
//!   count or fd from the caller.
//! - The one completion not from the kernel: an SQPOLL ring whose
//!   submitter's credentials changed takes an op's SQE back before the
//!   kernel could see it and posts `-EACCES` for it itself ([`Ring`]'s
//!   "SQPOLL and credentials"). It carries no count, fd or buffer, and the
//!   kernel never held the op's memory.
//! - A table that is dropped with ops in flight (a shard that unwinds, say)
//!   leaks them instead of freeing memory the kernel may still write.
#![allow(unsafe_code)]

pub mod fs;
pub mod net;
pub mod openat2;
pub mod pipe;

use std::any::Any;
use std::os::fd::OwnedFd;

use crate::cqe::{Cqe, RingCqe, RingId};
use crate::msg::{self, OpId, Tag, UserData};
use crate::ring::{PushError, Ring};
use crate::sqe::Sqe;

pub use net::ProvidedBuf;

/// An operation that owns everything its SQE points at.
///
/// # Safety
///
/// The SQE returned by [`Op::prepare`] may point only at memory owned by
/// `self` (directly, when `self` is boxed, or through heap or `'static`
/// allocations it owns), which must stay valid, and not be accessed, until
/// `self` is dropped or handed back; it may name only fds that `self` keeps
/// open (or `AT_FDCWD`); its `user_data` is set by the table.
/// [`Op::run_blocking`] must perform the same operation as the SQE with an
/// ordinary system call and record its outcome as [`Op::complete`] would.
/// [`Op::try_nonblocking`] must do the same without blocking, or return
/// [`Attempt::WouldBlock`] having recorded nothing; an op that returns `Some`
/// from it returns `Some` from [`Op::readiness_fd`] too.
pub unsafe trait Op: Any + Send + 'static {
    /// The SQE for this op (its `user_data` is set by the caller). Called once,
    /// on the boxed op, right before submission.
    fn prepare(&mut self) -> Sqe;

    /// Runs the op as a blocking system call (the Queue backend, and kernels
    /// without the opcode) and records its outcome in the op. Returns what
    /// the CQE's `res` would be: a count or fd, or `-errno`.
    fn run_blocking(&mut self) -> i32;

    /// For a readiness op (a socket operation that can wait for the socket
    /// instead of blocking a thread), makes one non-blocking attempt: either
    /// the op ran (its outcome recorded in the op exactly as
    /// [`Op::run_blocking`] records it), or the socket was not ready and the
    /// caller should wait for the [`Interest`] and try again. `None` for ops
    /// that are not readiness ops (files, opens, …: they run on a thread with
    /// [`Op::run_blocking`]). The default is `None`.
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        None
    }

    /// The fd a readiness op waits on ([`Op::try_nonblocking`]); `None` (the
    /// default) for other ops. The shared handle, not just the number: a
    /// driver that keeps the fd registered between ops tells by the handle
    /// whether a number it registered still names the same open file.
    fn readiness_fd(&self) -> Option<&fs::SharedFd> {
        None
    }

    /// Tells a positional op ([`fs::Read`], [`fs::Write`]) that its fd is a
    /// stream (a pipe, a socket, a tty, …; see
    /// [`crate::epoll::has_readiness`]): its non-blocking form then uses the
    /// file's position, as io_uring does for stream files, instead of the
    /// offset (which `pread` would refuse with `ESPIPE`). The default ignores it.
    fn stream_fd(&mut self) {}

    /// Records the op's final completion: how many bytes the kernel wrote
    /// into its buffer, the fd it created, the provided buffer it filled.
    /// The default records nothing.
    ///
    /// # Safety
    ///
    /// `cqe` must be the final completion (no `IORING_CQE_F_MORE`) that the
    /// kernel posted for the SQE this op's [`Op::prepare`] returned, or that
    /// its ring posted in the kernel's place for that SQE, which the kernel
    /// then never saw (an SQPOLL ring's `-EACCES` refusal, see [`Ring`]),
    /// handed over once. [`InFlight::complete`] is the caller that guarantees it.
    ///
    /// ```compile_fail
    /// # use std::{os::fd::OwnedFd, sync::Arc};
    /// # use spargio_sys::{op::{fs::Read, Op}, Cqe};
    /// // Safe code cannot tell a read it wrote 4096 bytes:
    /// let fd = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    /// let mut read = Read::new(fd, Vec::with_capacity(4096), 0);
    /// read.complete(&Cqe { user_data: 0, res: 4096, flags: 0 });
    /// ```
    unsafe fn complete(&mut self, cqe: &Cqe) {
        let _ = cqe;
    }

    /// Takes what an intermediate completion (`IORING_CQE_F_MORE`) of a
    /// multishot op carries: the fd a multishot accept created, the provided
    /// buffer a multishot receive filled. The default carries only the CQE.
    ///
    /// # Safety
    ///
    /// As for [`Op::complete`], for a completion with `IORING_CQE_F_MORE`.
    unsafe fn progress(&mut self, cqe: &Cqe) -> OpEvent {
        OpEvent::new(*cqe)
    }

    /// Upcast for [`InFlight`]'s callers, which downcast to the concrete op.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// What a readiness op waits for before its next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// The fd has data, a connection, or an error to report.
    Readable,
    /// The fd has room to send, a finished connect, or an error to report.
    Writable,
}

/// The outcome of one [`Op::try_nonblocking`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The op ran and recorded its outcome; this is what the CQE's `res`
    /// would be (a count or fd, or `-errno`).
    Done(i32),
    /// Not ready: wait until [`Op::readiness_fd`] is ready for this, then try again.
    WouldBlock(Interest),
}

/// One intermediate completion of a multishot op, with what it carries.
///
/// It owns those resources: dropping an event that nobody read closes the fd
/// it holds and gives its provided buffer back to the kernel, so a multishot
/// op whose waiter went away leaks nothing.
#[derive(Debug)]
pub struct OpEvent {
    cqe: Cqe,
    fd: Option<OwnedFd>,
    buf: Option<ProvidedBuf>,
}

impl OpEvent {
    /// An event that carries only its completion: no fd and no buffer, so
    /// nothing in it is trusted (what [`Op::progress`] implementations return
    /// for completions that create nothing). Only this crate's ops attach an
    /// fd or a provided buffer, from completions the op table handed them.
    pub const fn new(cqe: Cqe) -> OpEvent {
        OpEvent {
            cqe,
            fd: None,
            buf: None,
        }
    }

    pub(crate) fn with_fd(mut self, fd: Option<OwnedFd>) -> OpEvent {
        self.fd = fd;
        self
    }

    pub(crate) fn with_buf(mut self, buf: Option<ProvidedBuf>) -> OpEvent {
        self.buf = buf;
        self
    }

    /// The completion.
    pub const fn cqe(&self) -> &Cqe {
        &self.cqe
    }

    /// Takes the fd this completion created (a multishot accept's connection),
    /// which the event owns: never a number a caller supplied.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// Takes the provided buffer this completion filled (a multishot receive's data).
    pub fn take_buf(&mut self) -> Option<ProvidedBuf> {
        self.buf.take()
    }
}

/// Implements `into_any` for an op type.
macro_rules! op_any {
    () => {
        fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
            self
        }
    };
}
pub(crate) use op_any;

/// What a CQE meant for the table.
pub enum Completion<T> {
    /// A CQE of a multishot op that stays in flight.
    More {
        /// The op's payload (cloned).
        payload: T,
        /// The CQE and what it carries.
        event: OpEvent,
    },
    /// The op's final CQE: the op and its payload come back.
    Finished {
        /// The op's payload.
        payload: T,
        /// The op, with its resources.
        op: Box<dyn Op>,
        /// The final CQE.
        cqe: Cqe,
    },
    /// The CQE is not an op's, or belongs to a slot that was freed or reused.
    Stale,
}

struct Entry<T> {
    op: Box<dyn Op>,
    payload: T,
    cancel_requested: bool,
}

struct Slot<T> {
    generation: u32,
    entry: Option<Entry<T>>,
}

/// The ops in flight on one ring, each with a caller-chosen payload `T`
/// (the runtime keeps its waker state there).
///
/// A table binds to the ring of its first [`submit`](InFlight::submit), and
/// that ring to it: op tags are only unique within one table.
///
/// Dropping a table with ops still in flight leaks them (their buffers, fds
/// and the op values), since the kernel may still write into them.
///
/// ```compile_fail
/// // A completion for the table must come from `Ring::reap`, not from plain data:
/// let mut table = spargio_sys::op::InFlight::<()>::default();
/// table.complete(spargio_sys::Cqe::default());
/// ```
pub struct InFlight<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    live: usize,
    ring: Option<RingId>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            ring: None,
        }
    }
}

impl<T> InFlight<T> {
    /// Forgets every op still in flight without freeing its resources: the
    /// kernel may still write into them. Returns how many were leaked.
    pub fn leak_in_flight(&mut self) -> usize {
        let mut leaked = 0;
        for slot in &mut self.slots {
            if let Some(entry) = slot.entry.take() {
                std::mem::forget(entry.op);
                leaked += 1;
            }
        }
        self.live = 0;
        leaked
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.leak_in_flight();
    }
}

impl<T> std::fmt::Debug for InFlight<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("live", &self.live)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl<T: Clone> InFlight<T> {
    /// Ops in flight.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Pushes `op` on `ring` and keeps it until its final CQE.
    ///
    /// # Errors
    ///
    /// Gives the op back with [`PushError::Full`] when the SQ stays full, and
    /// with [`PushError::OtherTable`] when `ring` is not this table's ring.
    pub fn submit(
        &mut self,
        ring: &mut Ring,
        mut op: Box<dyn Op>,
        payload: T,
    ) -> Result<OpId, (Box<dyn Op>, PushError)> {
        match self.ring {
            Some(id) if id == ring.id() => {}
            Some(_) => return Err((op, PushError::OtherTable)),
            None if ring.claim_table() => self.ring = Some(ring.id()),
            None => return Err((op, PushError::OtherTable)),
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = OpId::new(index, slot.generation);
        let sqe = op.prepare().user_data(UserData::op(id).get());
        // SAFETY: the SQE points only into memory `op` owns (the `Op` contract);
        // the box stays in this slot, unmoved, until `complete` sees its final CQE
        // (shutdown leaks what is still in flight: `leak_in_flight`).
        match unsafe { ring.push_unchecked(&sqe) } {
            Ok(()) => {
                slot.entry = Some(Entry {
                    op,
                    payload,
                    cancel_requested: false,
                });
                self.live += 1;
                Ok(id)
            }
            Err(e) => {
                self.free.push(index);
                Err((op, e))
            }
        }
    }

    /// Classifies a completion reaped from this table's ring and, on an op's
    /// final CQE, hands the op back (after recording the outcome in it).
    /// A completion of another ring is [`Completion::Stale`].
    pub fn complete(&mut self, cqe: RingCqe) -> Completion<T> {
        if self.ring != Some(cqe.ring()) {
            return Completion::Stale;
        }
        let cqe = cqe.into_cqe();
        let Tag::Op(id) = msg::decode(cqe.user_data) else {
            return Completion::Stale;
        };
        let Some(slot) = self.slots.get_mut(id.index() as usize) else {
            return Completion::Stale;
        };
        if slot.generation != id.generation() || slot.entry.is_none() {
            return Completion::Stale;
        }
        if cqe.has_more() {
            let entry = slot.entry.as_mut().expect("checked above");
            // `cqe` was reaped from this table's ring (checked above) and carries
            // the tag of this slot's op, which only this table pushes (`Ring::push`
            // refuses op tags); a ring's own `-EACCES` refusal is final, never F_MORE.
            // SAFETY: so the kernel posted `cqe` for this op; moved out of its
            // token, it is handed over once.
            let event = unsafe { entry.op.progress(&cqe) };
            return Completion::More {
                payload: entry.payload.clone(),
                event,
            };
        }
        let mut entry = slot.entry.take().expect("checked above");
        slot.generation = msg::next_generation(slot.generation);
        self.free.push(id.index());
        self.live -= 1;
        // SAFETY: as above, and this is the op's final completion (no F_MORE), from
        // the kernel or, for an SQE the kernel never saw, the ring's `-EACCES`.
        unsafe { entry.op.complete(&cqe) };
        Completion::Finished {
            payload: entry.payload,
            op: entry.op,
            cqe,
        }
    }

    /// The `ASYNC_CANCEL` SQE for `id`, if it is still in flight and was not
    /// asked to cancel before. Its own CQE is tagged `Ignore`.
    pub fn cancel_sqe(&mut self, id: OpId) -> Option<Sqe> {
        let slot = self.slots.get_mut(id.index() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        let entry = slot.entry.as_mut()?;
        if entry.cancel_requested {
            return None;
        }
        entry.cancel_requested = true;
        Some(async_cancel_sqe(UserData::op(id).get()))
    }

    /// Cancel SQEs for every op in flight (shutdown, step 3).
    pub fn cancel_all_sqes(&mut self) -> Vec<Sqe> {
        let ids: Vec<OpId> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, s)| OpId::new(i as u32, s.generation))
            .collect();
        ids.into_iter().filter_map(|id| self.cancel_sqe(id)).collect()
    }
}

/// `ASYNC_CANCEL` by `user_data`; its own completion is tagged `Ignore`.
pub fn async_cancel_sqe(target_user_data: u64) -> Sqe {
    Sqe::from_raw(crate::abi::io_uring_sqe {
        opcode: crate::abi::IORING_OP_ASYNC_CANCEL,
        fd: -1,
        addr_or_splice_off_in: target_user_data,
        user_data: UserData::IGNORE.get(),
        ..Default::default()
    })
}

/// A NOP op (tests and wake-ups).
#[derive(Debug, Default)]
pub struct Nop;

// SAFETY: a NOP references no memory.
unsafe impl Op for Nop {
    fn prepare(&mut self) -> Sqe {
        Sqe::nop()
    }
    fn run_blocking(&mut self) -> i32 {
        0
    }
    op_any!();
}

/// Maps a libc return value (`-1` + errno) to a CQE-style result.
pub(crate) fn cqe_res(ret: libc::c_long) -> i32 {
    if ret < 0 {
        -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        i32::try_from(ret).unwrap_or(i32::MAX)
    }
}
