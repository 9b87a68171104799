//! The io_uring driver: one ring per shard, its op table, the ops waiting
//! for SQ room, its registered buffers and files, and `MSG_RING` doorbells.
//!
//! Every op goes to the ring through [`InFlight`], which owns the op's
//! resources until its final CQE. Completions that are not ops (messages,
//! doorbells, tickets: see `wire`) go back to the scheduler through the
//! `on_event` callback of [`UringDriver::reap`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spargio_sys::Cqe;
use spargio_sys::buf::{FixedBuf, FixedBufTable};
use spargio_sys::cqe::RingCqe;
use spargio_sys::msg::{OpId, UserData};
use spargio_sys::op::{Completion, InFlight, Op};
use spargio_sys::register::FixedBufRegistration;
use spargio_sys::ring::{PushError, Ring, RingFd};

use super::Ctx;
use super::op::{OpShared, SteeredOp};
use crate::error::RuntimeError;
use crate::wire::{self, Tag};

/// Buffers in a shard's fixed-buffer table (1 MiB pinned per shard in all).
pub(crate) const FIXED_BUF_COUNT: usize = 16;
/// Bytes of each fixed buffer.
pub(crate) const FIXED_BUF_SIZE: usize = 64 * 1024;
/// Slots of the shard ring's registered-file table, for file sessions.
pub(crate) const FIXED_FILE_SLOTS: u32 = 256;

/// How often the shutdown loop re-checks its deadline while waiting.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

/// Builds the (unregistered) table of a shard's fixed buffers; the scheduler
/// gives it the owner a buffer leads back to.
pub(crate) type MakeFixedTable = Box<dyn Fn() -> FixedBufTable>;

/// A shard's registered (fixed) buffers.
enum FixedBufs {
    /// No checkout yet.
    Untried,
    /// Registered with the shard's ring; unregistered (or leaked) at shutdown.
    Registered(FixedBufRegistration),
    /// Simulated ring, or the kernel refused (`EBUSY`, `ENOMEM` over the
    /// memlock limit): checkouts get unregistered buffers.
    Unavailable,
}

/// One shard's io_uring driver (shard-thread only).
pub(crate) struct UringDriver {
    ring: RefCell<Ring>,
    needs_submit: Cell<bool>,
    cqe_buf: RefCell<Vec<RingCqe>>,
    /// Ops in flight on this shard's ring.
    inflight: RefCell<InFlight<Arc<OpShared>>>,
    /// Free slots of the ring's registered-file table (empty if it has none);
    /// `None` until the first session asks
    /// (registering the table costs a syscall and kernel memory at start-up
    /// that most runtimes never use).
    fixed_slots: RefCell<Option<Vec<u32>>>,
    /// Ops waiting for SQ room (the kernel refused entries for a moment).
    backlog: RefCell<VecDeque<SteeredOp>>,
    /// The ring's registered-buffer table, set up on first checkout.
    fixed_bufs: RefCell<FixedBufs>,
    make_fixed_table: MakeFixedTable,
}

impl UringDriver {
    pub(crate) fn new(ring: Ring, make_fixed_table: MakeFixedTable) -> UringDriver {
        UringDriver {
            ring: RefCell::new(ring),
            needs_submit: Cell::new(false),
            cqe_buf: RefCell::new(Vec::with_capacity(64)),
            inflight: RefCell::new(InFlight::default()),
            fixed_slots: RefCell::new(None),
            backlog: RefCell::new(VecDeque::new()),
            fixed_bufs: RefCell::new(FixedBufs::Untried),
            make_fixed_table,
        }
    }

    pub(crate) fn ring_fd(&self) -> RingFd {
        self.ring.borrow().ring_fd()
    }

    /// Runs `f` with the ring; `None` while it is borrowed.
    pub(crate) fn with_ring<R>(&self, f: impl FnOnce(&mut Ring) -> R) -> Option<R> {
        self.ring.try_borrow_mut().ok().map(|mut r| f(&mut r))
    }

    /// Submits `op` (or queues it until the SQ has room).
    pub(crate) fn submit(&self, op: Box<dyn Op>, shared: Arc<OpShared>, ctx: &Ctx<'_>) {
        let pushed = {
            let mut ring = self.ring.borrow_mut();
            self.inflight.borrow_mut().submit(&mut ring, op, shared.clone())
        };
        match pushed {
            Ok(id) => {
                // Counted once it is in the table; the final CQE uncounts it.
                ctx.counters.ops_in_flight.fetch_add(1, Ordering::Relaxed);
                self.needs_submit.set(true);
                if !shared.submitted(ctx.shard, id) {
                    self.cancel(id);
                }
            }
            Err((op, _full)) => self.backlog.borrow_mut().push_back((op, shared)),
        }
    }

    /// Takes the ops that waited for SQ room, to be submitted again.
    pub(crate) fn take_backlog(&self) -> Vec<SteeredOp> {
        if self.backlog.borrow().is_empty() {
            return Vec::new();
        }
        self.backlog.borrow_mut().drain(..).collect()
    }

    /// Asks the kernel to cancel op `id` (its final CQE still comes).
    pub(crate) fn cancel(&self, id: OpId) {
        let sqe = self.inflight.borrow_mut().cancel_sqe(id);
        if let Some(sqe) = sqe {
            // ASYNC_CANCEL references no memory; a refused push leaves the op to
            // complete by itself, which is still correct.
            let _ = self.ring.borrow_mut().push(&sqe);
            self.needs_submit.set(true);
        }
        // Submit at once: the kernel runs the cancel inside this enter, so an
        // op whose future was dropped cannot take data that arrives after the
        // drop returned (a read armed on an empty pipe, say).
        self.submit_now();
    }

    /// Submits queued SQEs now.
    /// A refused submit (`EBUSY`: completions to reap first) leaves the
    /// entries queued and `needs_submit` set, so the next reap retries.
    pub(crate) fn submit_now(&self) {
        if let Ok(mut ring) = self.ring.try_borrow_mut() {
            self.needs_submit.set(ring.submit().is_err());
        }
    }

    /// Submits now if anything is queued (see [`UringDriver::submit_now`]).
    pub(crate) fn submit_now_if_queued(&self) {
        if self.needs_submit.get() {
            self.submit_now();
        }
    }

    /// True when the SQ has room for one more entry (submitting to make room).
    pub(crate) fn sq_room(&self) -> bool {
        let mut ring = self.ring.borrow_mut();
        if ring.sq_space() == 0 {
            self.needs_submit.set(ring.submit().is_err());
        }
        ring.sq_space() > 0
    }

    /// Queues a `MSG_RING` to `target`, to be submitted after the current poll.
    pub(crate) fn push_msg_ring(
        &self,
        target: &RingFd,
        res: u32,
        post_user_data: u64,
        own_user_data: u64,
        skip: bool,
    ) -> Result<(), RuntimeError> {
        let mut ring = self.ring.borrow_mut();
        push_msg_ring(&mut ring, target, res, post_user_data, own_user_data, skip)
            .map_err(|e| RuntimeError::Io(std::io::Error::new(std::io::ErrorKind::WouldBlock, e)))?;
        self.needs_submit.set(true);
        Ok(())
    }

    /// Rings `target`'s doorbell from this ring; false while the ring is
    /// borrowed (the caller uses the foreign ring then).
    pub(crate) fn doorbell(&self, target: &RingFd) -> bool {
        let Ok(mut ring) = self.ring.try_borrow_mut() else {
            return false;
        };
        push_doorbell(&mut ring, target);
        // Submit now: the target is asleep and latency is the point. A refused
        // submit leaves the doorbell queued for the loop's next submit.
        if ring.submit().is_err() {
            self.needs_submit.set(true);
        }
        true
    }

    /// Reaps ready completions: ops are finished here, everything else goes
    /// to `on_event`. Returns how many.
    pub(crate) fn reap(&self, ctx: &Ctx<'_>, on_event: &mut dyn FnMut(RingCqe)) -> usize {
        let mut buf = std::mem::take(&mut *self.cqe_buf.borrow_mut());
        {
            let mut ring = self.ring.borrow_mut();
            if ring.needs_flush() || self.needs_submit.get() {
                if ring.cq_overflow_pending() {
                    ctx.counters.cq_overflows.fetch_add(1, Ordering::Relaxed);
                }
                // Refused (EBUSY until the CQ is drained below): retry next turn.
                self.needs_submit.set(ring.submit_and_flush().is_err());
            }
            buf.extend(std::iter::from_fn(|| ring.reap()));
        }
        let n = buf.len();
        for cqe in buf.drain(..) {
            // A completion wakes user code (a waker, a channel): a panic there
            // must not unwind out of the shard with other ops in flight.
            super::guarded("dispatching a completion", || self.dispatch(cqe, ctx, on_event));
        }
        *self.cqe_buf.borrow_mut() = buf;
        n
    }

    fn dispatch(&self, cqe: RingCqe, ctx: &Ctx<'_>, on_event: &mut dyn FnMut(RingCqe)) {
        match wire::decode(cqe.user_data) {
            Tag::Op(_) => {
                let completion = self.inflight.borrow_mut().complete(cqe);
                match completion {
                    Completion::Finished { payload, op, cqe } => {
                        ctx.counters.ops_in_flight.fetch_sub(1, Ordering::Relaxed);
                        payload.finish(cqe, op)
                    }
                    Completion::More { payload, event } => payload.progress(event),
                    Completion::Stale => {}
                }
            }
            Tag::Ignore => {}
            _ => on_event(cqe),
        }
    }

    /// True when completions wait in the CQ (or behind a flush).
    pub(crate) fn has_ready(&self) -> bool {
        let ring = self.ring.borrow();
        ring.cq_len() > 0 || ring.needs_flush()
    }

    /// True when completions sit in the CQ (not counting task work the
    /// kernel has yet to run, which only an enter posts).
    pub(crate) fn has_cqes(&self) -> bool {
        self.ring.borrow().cq_len() > 0
    }

    /// Sleeps in `io_uring_enter` until a completion or `timeout`. False when
    /// the wait failed (it ended early).
    pub(crate) fn park(&self, timeout: Option<Duration>) -> bool {
        // Errors (EBUSY while the CQ overflows, EINTR is retried inside) end
        // the wait early; the next turn reaps and tries again.
        self.ring.borrow_mut().submit_and_wait(1, timeout).is_ok()
    }

    /// Shutdown: cancels what is in flight and reaps until the table is
    /// empty or `deadline` passes; what the kernel still holds then is
    /// leaked. Ops that never reached the kernel fail. Returns how many ops
    /// were leaked.
    pub(crate) fn cancel_all(
        &self,
        deadline: Instant,
        ctx: &Ctx<'_>,
        on_event: &mut dyn FnMut(RingCqe),
    ) -> usize {
        let sqes = self.inflight.borrow_mut().cancel_all_sqes();
        {
            let mut ring = self.ring.borrow_mut();
            for sqe in &sqes {
                let _ = ring.push(sqe);
            }
        }
        while !self.inflight.borrow().is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = self
                .ring
                .borrow_mut()
                .submit_and_wait(1, Some((deadline - now).min(SHUTDOWN_POLL)));
            self.reap(ctx, on_event);
        }
        let leaked = self.inflight.borrow_mut().leak_in_flight();
        if leaked > 0 {
            ctx.counters
                .ops_leaked
                .fetch_add(leaked as u64, Ordering::Relaxed);
            ctx.counters
                .ops_in_flight
                .fetch_sub(leaked as u64, Ordering::Relaxed);
        }
        // Ops that never reached the kernel are simply dropped, failing their waiters.
        for (op, shared) in self.backlog.borrow_mut().drain(..) {
            shared.finish(super::op::blocking_cqe(-libc::ECANCELED), op);
        }
        leaked
    }

    /// Shutdown, before the ring closes: unregister the fixed buffers, unless
    /// ops were leaked (they may use them still: then the table is leaked
    /// with them).
    pub(crate) fn release(&self, leaked: usize) {
        let state = std::mem::replace(&mut *self.fixed_bufs.borrow_mut(), FixedBufs::Unavailable);
        if let FixedBufs::Registered(reg) = state
            && leaked == 0
        {
            // A failed unregister leaks the table (see `FixedBufRegistration`).
            let _ = reg.unregister(&mut self.ring.borrow_mut());
        }
    }

    /// Checks out a buffer of this ring's fixed-buffer table (registering it
    /// on first use), or an unregistered one when there is none.
    pub(crate) fn checkout_fixed_buf(&self, capacity: usize) -> Option<FixedBuf> {
        let mut state = self.fixed_bufs.borrow_mut();
        if matches!(*state, FixedBufs::Untried) {
            *state = self.register_fixed_bufs();
        }
        match &*state {
            FixedBufs::Registered(reg) if capacity <= reg.table().buf_size() => {
                reg.table().checkout(capacity)
            }
            _ => FixedBuf::try_unregistered(capacity),
        }
    }

    /// Free buffers of the table, once it is registered.
    pub(crate) fn fixed_bufs_available(&self) -> Option<usize> {
        match &*self.fixed_bufs.borrow() {
            FixedBufs::Registered(reg) => Some(reg.table().available()),
            _ => None,
        }
    }

    /// Registers this shard's table; called on the shard's own thread, from a
    /// task poll (the ring is not borrowed then).
    fn register_fixed_bufs(&self) -> FixedBufs {
        let Ok(mut ring) = self.ring.try_borrow_mut() else {
            return FixedBufs::Untried;
        };
        if ring.is_simulated() {
            return FixedBufs::Unavailable;
        }
        let table = Arc::new((self.make_fixed_table)());
        match FixedBufRegistration::register(&mut ring, table) {
            Ok(reg) => FixedBufs::Registered(reg),
            Err(_) => FixedBufs::Unavailable,
        }
    }

    /// Takes a free registered-file slot (registering the table on first use).
    pub(crate) fn alloc_fixed_slot(&self) -> Option<u32> {
        let mut slots = self.fixed_slots.borrow_mut();
        if slots.is_none() {
            *slots = self.register_fixed_slots();
        }
        slots.as_mut()?.pop()
    }

    /// Returns a registered-file slot.
    pub(crate) fn free_fixed_slot(&self, slot: u32) {
        if let Some(slots) = self.fixed_slots.borrow_mut().as_mut() {
            slots.push(slot);
        }
    }

    /// Registers this ring's sparse file table (once, on the first session).
    /// The free slots: none where registration fails or is not available;
    /// `None` (try again later) while the ring is borrowed.
    fn register_fixed_slots(&self) -> Option<Vec<u32>> {
        let mut ring = self.ring.try_borrow_mut().ok()?;
        let registered = !ring.is_simulated() && ring.register_files_sparse(FIXED_FILE_SLOTS).is_ok();
        Some(if registered {
            (0..FIXED_FILE_SLOTS).rev().collect()
        } else {
            Vec::new()
        })
    }
}

/// Queues a `MSG_RING` data message in `ring`: posts `(post_user_data, res)`
/// into `target`; this ring reaps `own_user_data` (only on failure with `skip`).
pub(crate) fn push_msg_ring(
    ring: &mut Ring,
    target: &RingFd,
    res: u32,
    post_user_data: u64,
    own_user_data: u64,
    skip: bool,
) -> Result<(), PushError> {
    let post = Cqe {
        user_data: post_user_data,
        res: res as i32,
        flags: 0,
    };
    ring.push_msg_ring(target, post, false, UserData::from_raw(own_user_data), skip)
}

/// Queues a doorbell for `target` in `ring` (sender side silent on success).
pub(crate) fn push_doorbell(ring: &mut Ring, target: &RingFd) {
    // `Full` only when the kernel refuses work, in which case the target is
    // woken by its own timeout instead.
    let _ = push_msg_ring(
        ring,
        target,
        0,
        wire::doorbell(u16::MAX),
        UserData::IGNORE.get(),
        true,
    );
}

/// How many times a foreign-ring submit is tried while the kernel refuses it
/// for a moment (`EBUSY`/`EAGAIN`: completions to reap first; `EINTR`).
const FOREIGN_SUBMIT_ATTEMPTS: u32 = 64;

/// Submits everything queued in a foreign ring, handing each completion
/// reaped on the way to `on_cqe` (reaping is what clears an `EBUSY`).
///
/// All or nothing: when the kernel keeps refusing, the entries it did not take
/// are taken back, so they are never submitted later, and the errno returned.
pub(crate) fn submit_foreign(ring: &mut Ring, on_cqe: &mut dyn FnMut(Cqe)) -> Result<(), i32> {
    let mut errno = libc::EAGAIN;
    for attempt in 0..FOREIGN_SUBMIT_ATTEMPTS {
        match ring.submit_and_flush() {
            Ok(_) if ring.sq_len() == 0 => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                errno = e.raw_os_error().unwrap_or(libc::EIO);
                if !matches!(errno, libc::EBUSY | libc::EAGAIN | libc::EINTR) {
                    break;
                }
            }
        }
        while let Some(c) = ring.pop_cqe() {
            on_cqe(c);
        }
        if attempt > 0 {
            std::thread::yield_now();
        }
    }
    ring.retract_unsubmitted();
    Err(errno)
}

/// Sends one message through a foreign `ring` and waits for its sender-side
/// completion. `Err` means the message was not delivered.
pub(crate) fn send_msg_ring_blocking(
    ring: &mut Ring,
    target: &RingFd,
    user_data: u64,
    val: u32,
) -> Result<(), i32> {
    const OWN: u64 = 1;
    let outcome = Cell::new(None);
    let mut watch = |c: Cqe| {
        if c.user_data == OWN {
            outcome.set(Some(c.res));
        }
    };
    push_msg_ring(ring, target, val, user_data, OWN, false).map_err(|_| libc::EBUSY)?;
    submit_foreign(ring, &mut watch)?;
    // Submitted: the outcome is the sender-side CQE, which MSG_RING posts as it runs.
    loop {
        while let Some(c) = ring.pop_cqe() {
            watch(c);
        }
        if let Some(res) = outcome.get() {
            return if res < 0 { Err(-res) } else { Ok(()) };
        }
        match ring.submit_and_wait(1, Some(Duration::from_secs(1))) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {}
            Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
}
