//! The readiness driver (the Queue backend): one epoll set per shard.
//!
//! Where io_uring is refused, socket ops (the ops with
//! [`Op::try_nonblocking`]) do not take a blocking-pool thread each. The
//! shard that owns the op tries it at once; if the socket is not ready, the
//! op waits here, keyed by its fd, and the fd is armed in the shard's epoll
//! set (level-triggered, `EPOLLONESHOT`, token = fd number) for the union of
//! what its waiters need. The shard parks in `epoll_pwait` (its next timer
//! as the timeout) instead of on a condition variable; other threads wake it
//! through an eventfd in the same set (the doorbell of "Park and doorbell":
//! rung only for a parked shard). On an event the fd's waiters are tried
//! again; one that ran is finished through [`OpShared::finish`], as a CQE
//! would be, and the fd is re-armed while waiters remain. Ops without
//! readiness support (files, opens, …) still run on the blocking pool.
//!
//! # Why this loses nothing
//!
//! - Arming is level-triggered: `epoll_ctl` checks readiness itself, so data
//!   that arrived between an attempt's `EAGAIN` and the arming is reported.
//! - A waiter holds its op, which holds its fd (`SharedFd`): while an fd has
//!   waiters its number cannot be reused. Once it has none its entry here is
//!   removed; the kernel's (disarmed) registration leaves the set when the
//!   file is closed, and `Epoll::arm` re-adds a file it no longer holds.
//! - An event for an fd without waiters (a stale registration of a file
//!   closed while a duplicate of it lives on) is ignored; one for an fd with
//!   waiters at worst retries them, and a retry is always safe: it is a
//!   non-blocking attempt that re-arms on `EAGAIN`.
//! - Cancellation (the waiter's future dropped) removes the op before it is
//!   tried again, so a cancelled receive takes no data that arrives later;
//!   an op whose system call already ran delivers its result to `finish`,
//!   which drops it (closing an accepted fd) because nobody waits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use spargio_sys::epoll::{self, Epoll, EventFd};
use spargio_sys::msg::{OpId, next_generation};
use spargio_sys::op::{Attempt, Interest, Op};

use super::Ctx;
use super::op::{OpShared, blocking_cqe};

/// The epoll token of the shard's doorbell (fds are never negative).
const DOORBELL: u64 = u64::MAX;

/// Events fetched per `epoll_pwait`.
const EVENTS_PER_WAIT: usize = 256;

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

/// The waiters of one fd and what its registration is armed for.
#[derive(Default)]
struct FdWaiters {
    ids: Vec<OpId>,
    /// `READABLE | WRITABLE` bits armed now (0 once the one-shot event fired).
    armed: u32,
}

#[derive(Default)]
struct Tables {
    slots: Vec<Slot>,
    free: Vec<u32>,
    fds: HashMap<RawFd, FdWaiters>,
}

impl Tables {
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

    /// The union of the interests of `ids`.
    fn wanted(&mut self, ids: &[OpId]) -> u32 {
        let mut want = 0;
        for &id in ids {
            if let Some(w) = self.get_mut(id) {
                want |= bits(w.interest);
            }
        }
        want
    }

    /// Arms `fd` for `want` (one-shot), through the fd of one of its waiters.
    fn arm(&mut self, epoll: &Epoll, fd: RawFd, id: OpId, want: u32) -> io::Result<()> {
        let waiter = self.get_mut(id).expect("a live waiter");
        let borrowed = waiter.op.readiness_fd().expect("a readiness op");
        debug_assert_eq!(borrowed.as_raw_fd(), fd);
        epoll.arm(borrowed, fd as u64, want | epoll::ONESHOT)
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
    /// Not a readiness op after all, or its fd cannot be watched: the pool runs it.
    Pool(Box<dyn Op>, Arc<OpShared>),
}

/// One shard's readiness driver (shard-thread only).
pub(crate) struct EpollDriver {
    epoll: Epoll,
    doorbell: Arc<EventFd>,
    tables: RefCell<Tables>,
    /// Events fetched by the last park, not yet dispatched.
    events: RefCell<Vec<(u64, u32)>>,
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
        })
    }

    /// The doorbell other threads ring to wake this shard.
    pub(crate) fn doorbell(&self) -> Arc<EventFd> {
        self.doorbell.clone()
    }

    /// Ops waiting for readiness.
    pub(crate) fn waiting(&self) -> usize {
        self.tables.borrow().slots.len() - self.tables.borrow().free.len()
    }

    /// True when a park fetched events not dispatched yet.
    pub(crate) fn has_pending_events(&self) -> bool {
        !self.events.borrow().is_empty()
    }

    /// Runs `op` (a readiness op): tries it now; if it would block, keeps it
    /// until its fd is ready. Ops without readiness support go to `ctx.pool`.
    pub(crate) fn submit(&self, mut op: Box<dyn Op>, shared: Arc<OpShared>, ctx: &Ctx<'_>) {
        if shared.is_abandoned() {
            return; // Nobody waits and the op never ran: just drop it.
        }
        let outcome = match op.try_nonblocking() {
            None => Outcome::Pool(op, shared),
            Some(Attempt::Done(res)) => Outcome::Finish(op, shared, res),
            Some(Attempt::WouldBlock(interest)) => match self.wait_for(op, shared, interest, ctx) {
                Ok(()) => return,
                Err(outcome) => outcome,
            },
        };
        complete(ctx, outcome, false);
    }

    /// Parks `op` until its fd is ready for `interest`.
    fn wait_for(
        &self,
        op: Box<dyn Op>,
        shared: Arc<OpShared>,
        interest: Interest,
        ctx: &Ctx<'_>,
    ) -> Result<(), Outcome> {
        let Some(fd) = op.readiness_fd().map(|fd| fd.as_raw_fd()) else {
            return Err(Outcome::Pool(op, shared));
        };
        let id = {
            let mut t = self.tables.borrow_mut();
            let id = t.insert(Waiter {
                op,
                shared: shared.clone(),
                fd,
                interest,
            });
            let entry = t.fds.entry(fd).or_default();
            entry.ids.push(id);
            let (armed, want) = (entry.armed, entry.armed | bits(interest));
            if want != armed {
                if let Err(_e) = t.arm(&self.epoll, fd, id, want) {
                    // Not watchable (or no memory for the watch): the pool runs it.
                    let entry = t.fds.get_mut(&fd).expect("just inserted");
                    entry.ids.retain(|&i| i != id);
                    if entry.ids.is_empty() {
                        t.fds.remove(&fd);
                    }
                    let w = t.remove(id).expect("just inserted");
                    return Err(Outcome::Pool(w.op, w.shared));
                }
                t.fds.get_mut(&fd).expect("just inserted").armed = want;
            }
            id
        };
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
            let Some(w) = t.remove(id) else { return };
            if let Some(entry) = t.fds.get_mut(&w.fd) {
                entry.ids.retain(|&i| i != id);
                if entry.ids.is_empty() {
                    // The registration may stay armed: a later event finds
                    // no entry and is ignored.
                    t.fds.remove(&w.fd);
                }
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
        self.epoll.wait(&mut events, EVENTS_PER_WAIT, timeout).is_ok()
    }

    /// Dispatches the events of the last park, or (none pending, ops
    /// waiting) polls for new ones without blocking. Returns how many ops
    /// finished.
    pub(crate) fn dispatch(&self, ctx: &Ctx<'_>) -> usize {
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
                self.fd_ready(token as RawFd, revents, &mut outcomes);
            }
        }
        events.clear();
        *self.events.borrow_mut() = events;
        let finished = outcomes.len();
        for outcome in outcomes {
            ctx.count_out();
            complete(ctx, outcome, true);
        }
        finished
    }

    /// Retries the waiters of `fd` that `revents` concerns and re-arms the
    /// fd for those still waiting.
    fn fd_ready(&self, fd: RawFd, revents: u32, outcomes: &mut Vec<Outcome>) {
        let mut t = self.tables.borrow_mut();
        let Some(entry) = t.fds.get_mut(&fd) else { return };
        entry.armed = 0; // One-shot: the event disarmed the registration.
        let ids = std::mem::take(&mut entry.ids);
        let mut keep = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(w) = t.get_mut(id) else { continue };
            if !is_ready(w.interest, revents) {
                keep.push(id);
                continue;
            }
            let attempt = if w.shared.is_abandoned() {
                Some(Attempt::Done(-libc::ECANCELED))
            } else {
                w.op.try_nonblocking()
            };
            match attempt {
                Some(Attempt::WouldBlock(interest)) => {
                    w.interest = interest;
                    keep.push(id);
                }
                Some(Attempt::Done(res)) => {
                    let w = t.remove(id).expect("live");
                    outcomes.push(Outcome::Finish(w.op, w.shared, res));
                }
                None => {
                    let w = t.remove(id).expect("live");
                    outcomes.push(Outcome::Pool(w.op, w.shared));
                }
            }
        }
        if keep.is_empty() {
            t.fds.remove(&fd);
            return;
        }
        let want = t.wanted(&keep);
        if t.arm(&self.epoll, fd, keep[0], want).is_ok() {
            let entry = t.fds.get_mut(&fd).expect("present");
            entry.ids = keep;
            entry.armed = want;
        } else {
            // Cannot watch it any more: the pool runs what still waits.
            t.fds.remove(&fd);
            for id in keep {
                if let Some(w) = t.remove(id) {
                    outcomes.push(Outcome::Pool(w.op, w.shared));
                }
            }
        }
    }

    /// Shutdown: fails every waiting op (none of them is running).
    pub(crate) fn cancel_all(&self, ctx: &Ctx<'_>) {
        let waiters: Vec<Waiter> = {
            let mut t = self.tables.borrow_mut();
            t.fds.clear();
            let ids: Vec<OpId> = t
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.waiter.is_some())
                .map(|(i, s)| OpId::new(i as u32, s.generation))
                .collect();
            ids.into_iter().filter_map(|id| t.remove(id)).collect()
        };
        for w in waiters {
            ctx.count_out();
            complete(ctx, Outcome::Finish(w.op, w.shared, -libc::ECANCELED), true);
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
