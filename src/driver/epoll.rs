//! The readiness driver (the Queue backend): one epoll set per shard.
//!
//! Where io_uring is refused, ops on fds with readiness (sockets, pipes and
//! FIFOs, ttys, eventfds: the ops with [`Op::try_nonblocking`] on an fd
//! [`epoll::has_readiness`] accepts) do not take a blocking-pool thread
//! each. The shard that owns the op tries it at once (one system call: an op
//! whose data is there needs nothing else); if the fd is not ready the op
//! waits here, in its fd's entry, and the fd is registered in the shard's
//! epoll set once, edge-triggered, for `EPOLLIN | EPOLLOUT | EPOLLRDHUP`, and
//! stays registered for every later wait (no `epoll_ctl` per wait). The shard
//! parks in `epoll_pwait` (its next timer as the timeout); other threads
//! wake it through an eventfd in the same set (the doorbell of "Park and
//! doorbell": rung only for a parked shard). On an event the fd's waiters
//! whose interest it concerns are tried again; one that ran is finished
//! through [`OpShared::finish`], as a CQE would be. Regular files,
//! directories and block devices (and ops without a readiness form: opens,
//! `fsync`, …) run on the blocking pool. Pipes are never switched to
//! `O_NONBLOCK`: their attempts are `preadv2`/`pwritev2` with `RWF_NOWAIT`,
//! so an end shared with another process (stdin) keeps its file status
//! flags; sockets use `MSG_DONTWAIT`.
//!
//! # Why this loses nothing
//!
//! - Edge-triggered events come for every change after the registration
//!   (each arrival of data, each freeing of room, an error, a hang-up), and
//!   `EPOLL_CTL_ADD` reports an fd that is ready already. An op waits only
//!   after its own attempt saw `EAGAIN`, so whatever arrives later raises an
//!   event that retries it; what arrived earlier, the attempt took. A
//!   retry is always safe: it is a non-blocking attempt that keeps waiting on
//!   `EAGAIN` (a spurious or late event costs one system call).
//! - Waiters of one fd are tried in the order they came, each against the
//!   event's bits (a pending read and a pending write on one socket are both
//!   served).
//!
//! # Registrations and fd reuse
//!
//! A registration outlives the ops, so an fd number may be closed and
//! reused for another file while the set still holds it. Each entry
//! (indexed by fd number) therefore records the owner it registered: the
//! op's `SharedFd` (`Arc<OwnedFd>`), as a `Weak` compared by address, and a
//! generation carried in the registration's token (`generation << 32 | fd`).
//!
//! - While an `Arc` is alive its `OwnedFd` keeps the number open on the same
//!   file (I/O safety), and while the entry's `Weak` is held no other `Arc`
//!   can have its address. An op whose `SharedFd` is the entry's owner finds
//!   the registration valid; any other owner means the number was closed
//!   and reused: the entry starts over (new generation, not registered,
//!   classified again with `fstat`). An entry with waiters is never
//!   replaced (its waiters hold the owner, so the number cannot have been
//!   reused); an op of another owner on it runs on the pool.
//! - The kernel removes a registration when the file's last reference is
//!   closed, which is what the owner's drop does. Where the file lives on
//!   elsewhere (a `dup` the user made, a child that inherited it), its
//!   registration stays in the set until that copy closes; its events carry
//!   the old generation and are dropped, and an `EPOLL_CTL_ADD` of the same
//!   file under the number (`EEXIST`) re-keys it with `EPOLL_CTL_MOD`.
//!   Explicit removal would need a hook before the close (`SharedFd` is a
//!   plain `Arc`, dropped on any thread): not needed for soundness, since a
//!   stale event at worst retries the current owner's waiters.
//! - Cancellation (the waiter's future dropped) removes the op before it is
//!   tried again, so a cancelled receive takes no data that arrives later;
//!   an op whose system call already ran delivers its result to `finish`,
//!   which drops it (closing an accepted fd) because nobody waits.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::Duration;

use spargio_sys::epoll::{self, Epoll, EventFd};
use spargio_sys::msg::{OpId, next_generation};
use spargio_sys::op::fs::SharedFd;
use spargio_sys::op::{Attempt, Interest, Op};

use super::Ctx;
use super::op::{OpShared, SteeredOp, blocking_cqe};

/// The epoll token of the shard's doorbell (an fd token's low half is never
/// `u32::MAX`: fds are below `i32::MAX`).
const DOORBELL: u64 = u64::MAX;

/// Events fetched per `epoll_pwait`.
const EVENTS_PER_WAIT: usize = 256;

/// Ops a shard may finish inline (tried at submission and done at once) per
/// turn of its loop. On io_uring every op returns to the loop before it
/// completes; here an op whose data is already there completes inside the
/// task's poll, so a task reading a fast peer in a loop would never give the
/// shard back (its other tasks, timers and messages would starve). Past the
/// budget, ops wait for the next turn, as if their fd had signalled.
const INLINE_BUDGET: u32 = 128;

/// What an fd is registered for, once, edge-triggered.
const REGISTERED_FOR: u32 = epoll::READABLE | epoll::WRITABLE | epoll::READ_HANGUP | epoll::EDGE;

/// An op waiting for its fd to become ready.
struct Waiter {
    op: Box<dyn Op>,
    shared: Arc<OpShared>,
    fd: RawFd,
    interest: Interest,
}

struct Slot {
    generation: u32,
    waiter: Option<Waiter>,
}

/// The waiting ops, by [`OpId`].
#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Slab {
    fn insert(&mut self, waiter: Waiter) -> OpId {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                waiter: None,
            });
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.waiter = Some(waiter);
        OpId::new(index, slot.generation)
    }

    fn get_mut(&mut self, id: OpId) -> Option<&mut Waiter> {
        let slot = self.slots.get_mut(id.index() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.waiter.as_mut()
    }

    fn remove(&mut self, id: OpId) -> Option<Waiter> {
        let slot = self.slots.get_mut(id.index() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        let waiter = slot.waiter.take()?;
        slot.generation = next_generation(slot.generation);
        self.free.push(id.index());
        Some(waiter)
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// One fd number's state in this shard's epoll set.
struct FdEntry {
    /// The `SharedFd` this entry is about (compared by address; see the
    /// module's "Registrations and fd reuse").
    owner: Weak<OwnedFd>,
    /// Carried in the registration's token; bumped when the owner changes.
    generation: u32,
    /// The fd has readiness (`epoll::has_readiness`, and its ops' attempts
    /// are supported): false sends its ops to the pool.
    readiness: bool,
    /// In the epoll set under `token()`.
    registered: bool,
    /// Its waiting ops, oldest first.
    waiters: Vec<OpId>,
}

impl FdEntry {
    fn token(&self, fd: RawFd) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(fd as u32)
    }

    fn owned_by(&self, owner: &SharedFd) -> bool {
        std::ptr::eq(self.owner.as_ptr(), Arc::as_ptr(owner))
    }
}

#[derive(Default)]
struct Tables {
    slab: Slab,
    /// Indexed by fd number.
    fds: Vec<Option<FdEntry>>,
}

impl Tables {
    /// The entry of `owner`'s fd, made (classified, unregistered) when the
    /// number has none or had another owner. `None`: the number's entry
    /// belongs to another owner that still has waiters.
    fn entry(&mut self, owner: &SharedFd) -> Option<&mut FdEntry> {
        let fd = owner.as_raw_fd();
        let index = usize::try_from(fd).ok()?;
        if self.fds.len() <= index {
            self.fds.resize_with(index + 1, || None);
        }
        let slot = &mut self.fds[index];
        let generation = match slot {
            Some(e) if e.owned_by(owner) => return slot.as_mut(),
            Some(e) if !e.waiters.is_empty() => return None,
            Some(e) => e.generation.wrapping_add(1),
            None => 0,
        };
        *slot = Some(FdEntry {
            owner: Arc::downgrade(owner),
            generation,
            readiness: epoll::has_readiness(owner.as_fd()).unwrap_or(false),
            registered: false,
            waiters: Vec::new(),
        });
        slot.as_mut()
    }

    fn fd_entry(&mut self, fd: RawFd) -> Option<&mut FdEntry> {
        self.fds.get_mut(usize::try_from(fd).ok()?)?.as_mut()
    }
}

fn bits(interest: Interest) -> u32 {
    match interest {
        Interest::Readable => epoll::READABLE | epoll::READ_HANGUP,
        Interest::Writable => epoll::WRITABLE,
    }
}

fn is_ready(interest: Interest, events: u32) -> bool {
    events & (bits(interest) | epoll::ERROR | epoll::HANGUP) != 0
}

/// What to do with an op once the tables are released.
enum Outcome {
    Finish(Box<dyn Op>, Arc<OpShared>, i32),
    /// No readiness for it after all: the pool runs it.
    Pool(Box<dyn Op>, Arc<OpShared>),
}

/// One shard's readiness driver (shard-thread only).
pub(crate) struct EpollDriver {
    epoll: Epoll,
    doorbell: Arc<EventFd>,
    tables: RefCell<Tables>,
    /// Events fetched by the last park, not yet dispatched.
    events: RefCell<Vec<(u64, u32)>>,
    /// The last park ended on fd readiness alone (no doorbell).
    woken_by_io: Cell<bool>,
    /// Inline completions left this turn (see [`INLINE_BUDGET`]).
    inline_budget: Cell<u32>,
    /// Ops submitted past the budget, tried at the next turn.
    deferred: RefCell<Vec<SteeredOp>>,
}

impl EpollDriver {
    /// A driver with its doorbell in its epoll set.
    pub(crate) fn new() -> io::Result<EpollDriver> {
        let epoll = Epoll::new()?;
        let doorbell = Arc::new(EventFd::new()?);
        epoll.add(doorbell.as_fd(), DOORBELL, epoll::READABLE)?;
        Ok(EpollDriver {
            epoll,
            doorbell,
            tables: RefCell::new(Tables::default()),
            events: RefCell::new(Vec::with_capacity(EVENTS_PER_WAIT)),
            woken_by_io: Cell::new(false),
            inline_budget: Cell::new(INLINE_BUDGET),
            deferred: RefCell::new(Vec::new()),
        })
    }

    /// The doorbell other threads ring to wake this shard.
    pub(crate) fn doorbell(&self) -> Arc<EventFd> {
        self.doorbell.clone()
    }

    /// Ops waiting for readiness.
    pub(crate) fn waiting(&self) -> usize {
        self.tables.borrow().slab.len()
    }

    /// True when a park fetched events not dispatched yet, or ops wait for
    /// the next turn's budget.
    pub(crate) fn has_pending_events(&self) -> bool {
        !self.events.borrow().is_empty() || !self.deferred.borrow().is_empty()
    }

    /// Runs `op`: tries it now if its fd has readiness; if it would block,
    /// keeps it until its fd is ready. Other ops go to `ctx.pool`.
    pub(crate) fn submit(&self, mut op: Box<dyn Op>, shared: Arc<OpShared>, ctx: &Ctx<'_>) {
        if shared.is_abandoned() {
            return; // Nobody waits and the op never ran: just drop it.
        }
        let readiness = match op.readiness_fd() {
            None => false,
            Some(owner) => {
                let mut t = self.tables.borrow_mut();
                t.entry(owner).is_some_and(|e| e.readiness)
            }
        };
        if !readiness {
            return (ctx.pool)(op, shared);
        }
        let budget = self.inline_budget.get();
        if budget == 0 {
            self.deferred.borrow_mut().push((op, shared));
            return;
        }
        self.inline_budget.set(budget - 1);
        op.stream_fd();
        let outcome = match op.try_nonblocking() {
            None => {
                // No non-blocking form for this file (`RWF_NOWAIT` refused):
                // its ops run on the pool from now on.
                if let Some(owner) = op.readiness_fd()
                    && let Some(e) = self.tables.borrow_mut().entry(owner)
                {
                    e.readiness = false;
                }
                Outcome::Pool(op, shared)
            }
            Some(Attempt::Done(res)) => Outcome::Finish(op, shared, res),
            Some(Attempt::WouldBlock(interest)) => match self.wait_for(op, shared, interest, ctx) {
                Ok(()) => return,
                Err(outcome) => outcome,
            },
        };
        complete(ctx, outcome, false);
    }

    /// Keeps `op` until its fd is ready for `interest`, registering the fd
    /// first if this entry never did.
    fn wait_for(
        &self,
        op: Box<dyn Op>,
        shared: Arc<OpShared>,
        interest: Interest,
        ctx: &Ctx<'_>,
    ) -> Result<(), Outcome> {
        let mut t = self.tables.borrow_mut();
        let Some(owner) = op.readiness_fd() else {
            return Err(Outcome::Pool(op, shared));
        };
        let fd = owner.as_raw_fd();
        let Some(entry) = t.entry(owner) else {
            return Err(Outcome::Pool(op, shared));
        };
        if !entry.registered {
            let token = entry.token(fd);
            let added = match self.epoll.add(owner.as_fd(), token, REGISTERED_FOR) {
                // The same file is still in the set under this number (a
                // copy of it outlived the entry's owner): re-key it.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.epoll.modify(owner.as_fd(), token, REGISTERED_FOR)
                }
                other => other,
            };
            if added.is_err() {
                // Not watchable (or no memory for the watch): the pool runs it.
                entry.readiness = false;
                return Err(Outcome::Pool(op, shared));
            }
            entry.registered = true;
        }
        let id = t.slab.insert(Waiter {
            op,
            shared: shared.clone(),
            fd,
            interest,
        });
        t.fd_entry(fd).expect("made above").waiters.push(id);
        drop(t);
        // Counted while it waits here (ops that ran at once never are).
        ctx.count_in();
        if !shared.submitted(ctx.shard, id) {
            self.cancel(id, ctx);
        }
        Ok(())
    }

    /// Drops waiting op `id` (its future went away): it is never tried again.
    pub(crate) fn cancel(&self, id: OpId, ctx: &Ctx<'_>) {
        let waiter = {
            let mut t = self.tables.borrow_mut();
            let Some(w) = t.slab.remove(id) else { return };
            if let Some(entry) = t.fd_entry(w.fd) {
                // The registration stays for the fd's next wait.
                entry.waiters.retain(|&i| i != id);
            }
            w
        };
        ctx.count_out();
        complete(
            ctx,
            Outcome::Finish(waiter.op, waiter.shared, -libc::ECANCELED),
            true,
        );
    }

    /// Sleeps until an fd is ready, the doorbell rings, or `timeout` passes,
    /// keeping the events for [`EpollDriver::dispatch`]. False when the wait
    /// failed (it ended early).
    pub(crate) fn park(&self, timeout: Option<Duration>) -> bool {
        let mut events = self.events.borrow_mut();
        let ok = self.epoll.wait(&mut events, EVENTS_PER_WAIT, timeout).is_ok();
        self.woken_by_io
            .set(!events.is_empty() && events.iter().all(|&(token, _)| token != DOORBELL));
        ok
    }

    /// True when the last park ended on fd readiness alone: the kernel woke
    /// the shard for I/O, not another thread for work it sent.
    pub(crate) fn woken_by_io(&self) -> bool {
        self.woken_by_io.get()
    }

    /// Dispatches the events of the last park, or (none pending, ops
    /// waiting) polls for new ones without blocking. Returns how many ops
    /// finished.
    pub(crate) fn dispatch(&self, ctx: &Ctx<'_>) -> usize {
        // A new turn: a new inline budget, and the ops that waited for it.
        self.inline_budget.set(INLINE_BUDGET);
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        let retried = deferred.len();
        for (op, shared) in deferred {
            // Finishing wakes a waiter (user code): contained, as in dispatch.
            super::guarded("retrying a deferred op", || self.submit(op, shared, ctx));
        }
        let mut events = std::mem::take(&mut *self.events.borrow_mut());
        if events.is_empty() && self.waiting() > 0 {
            let _ = self
                .epoll
                .wait(&mut events, EVENTS_PER_WAIT, Some(Duration::ZERO));
        }
        let mut outcomes = Vec::new();
        for &(token, revents) in &events {
            if token == DOORBELL {
                self.doorbell.drain();
            } else {
                self.fd_ready(token, revents, &mut outcomes);
            }
        }
        events.clear();
        *self.events.borrow_mut() = events;
        let finished = outcomes.len();
        for outcome in outcomes {
            ctx.count_out();
            complete(ctx, outcome, true);
        }
        finished + retried
    }

    /// Retries the waiters of the fd behind `token` that `revents`
    /// concerns. An event of a registration older than the fd's entry (see
    /// "Registrations and fd reuse") is dropped.
    fn fd_ready(&self, token: u64, revents: u32, outcomes: &mut Vec<Outcome>) {
        let fd = token as u32 as RawFd;
        let generation = (token >> 32) as u32;
        let mut t = self.tables.borrow_mut();
        let Tables { slab, fds } = &mut *t;
        let Some(Some(entry)) = usize::try_from(fd).ok().and_then(|i| fds.get_mut(i)) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let waiters = &mut entry.waiters;
        let mut kept = 0;
        for i in 0..waiters.len() {
            let id = waiters[i];
            let Some(w) = slab.get_mut(id) else { continue };
            let attempt = if !is_ready(w.interest, revents) {
                Some(Attempt::WouldBlock(w.interest))
            } else if w.shared.is_abandoned() {
                Some(Attempt::Done(-libc::ECANCELED))
            } else {
                w.op.try_nonblocking()
            };
            match attempt {
                Some(Attempt::WouldBlock(interest)) => {
                    w.interest = interest;
                    waiters[kept] = id;
                    kept += 1;
                }
                Some(Attempt::Done(res)) => {
                    let w = slab.remove(id).expect("live");
                    outcomes.push(Outcome::Finish(w.op, w.shared, res));
                }
                None => {
                    let w = slab.remove(id).expect("live");
                    outcomes.push(Outcome::Pool(w.op, w.shared));
                }
            }
        }
        waiters.truncate(kept);
    }

    /// Shutdown: fails every waiting op (none of them is running).
    pub(crate) fn cancel_all(&self, ctx: &Ctx<'_>) {
        let waiters: Vec<Waiter> = {
            let mut t = self.tables.borrow_mut();
            for entry in t.fds.iter_mut().flatten() {
                entry.waiters.clear();
            }
            let ids: Vec<OpId> = t
                .slab
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.waiter.is_some())
                .map(|(i, s)| OpId::new(i as u32, s.generation))
                .collect();
            ids.into_iter().filter_map(|id| t.slab.remove(id)).collect()
        };
        for w in waiters {
            ctx.count_out();
            complete(ctx, Outcome::Finish(w.op, w.shared, -libc::ECANCELED), true);
        }
        // Never tried: they fail like any op that never reached the kernel.
        for (op, shared) in std::mem::take(&mut *self.deferred.borrow_mut()) {
            complete(ctx, Outcome::Finish(op, shared, -libc::ECANCELED), true);
        }
    }
}

/// Finishes an op (waking its waiter, under `catch_unwind` when `guard`: a
/// waker is user code) or hands it to the blocking pool.
fn complete(ctx: &Ctx<'_>, outcome: Outcome, guard: bool) {
    match outcome {
        Outcome::Finish(op, shared, res) => {
            let finish = move || shared.finish(blocking_cqe(res), op);
            if guard {
                super::guarded("dispatching a completion", finish);
            } else {
                finish();
            }
        }
        Outcome::Pool(op, shared) => (ctx.pool)(op, shared),
    }
}
