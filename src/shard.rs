//! The shard: one thread, one driver (`crate::driver`: a ring, or an epoll
//! set), its run queues, and the event loop.
//!
//! # The loop
//!
//! Each turn: take tasks other threads queued for us; poll up to
//! `event_interval` tasks (a task that wakes itself goes to the back, so it
//! cannot starve the rest), submitting what each poll queued and polling a
//! task again at once when that submission completed it (bounded:
//! [`Local::run_task`]); reap completions (messages, doorbells, tickets,
//! I/O); fire due timers. A turn that found nothing to do tries to steal,
//! then polls for the spin window (at least `spin_before_park`, adaptive:
//! [`SpinWindow`]) re-checking its queues and ring (yielding the CPU on each
//! turn), then parks (protocol in [`Shared::unpark`]):
//! `parked = true`, re-check, `Driver::park` (`io_uring_enter(GETEVENTS,
//! min_complete = 1)`, or `epoll_pwait2`) with the next timer as its timeout.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use spargio_sys::buf::{FixedBuf, FixedBufTable};
use spargio_sys::cqe::RingCqe;
use spargio_sys::ring::{Ring, RingFd};
use spargio_sys::sim::SimKernel;

use crate::driver::op::OpShared;
use crate::driver::uring::{FIXED_BUF_COUNT, FIXED_BUF_SIZE};
use crate::driver::{Ctx, Driver, Setup};
use crate::error::RuntimeError;
use crate::mail::{Outbox, TicketFor};
use crate::msg::{Event, TicketShared};
use crate::runtime::{Shared, shard_ring_config};
use crate::task::{Mobility, PollOutcome, Task};
use crate::time::wheel::Timers;
use crate::wire::{self, Tag};
use spargio_sys::msg::OpId;
use spargio_sys::op::Op;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// The shard-thread-local half of a shard: only its own thread touches it.
pub(crate) struct Local {
    pub(crate) shard: usize,
    pub(crate) shared: Arc<Shared>,
    /// The shard's I/O driver (io_uring or epoll readiness).
    pub(crate) driver: Driver,
    run_queue: RefCell<VecDeque<Arc<Task>>>,
    pub(crate) events: RefCell<VecDeque<Event>>,
    pub(crate) event_waiters: RefCell<Vec<Waker>>,
    local_futures: RefCell<HashMap<u64, LocalFuture>>,
    current_task: Cell<u64>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) tickets: RefCell<HashMap<u32, (Arc<TicketShared>, TicketFor)>>,
    /// Messages to other shards before they are handed over (see `mail`).
    pub(crate) outbox: Outbox,
    next_ticket: Cell<u32>,
    rng: Cell<u64>,
    tick: Cell<u32>,
    /// The current spin-before-park window (see [`SpinWindow`]).
    spin: SpinWindow,
}

/// What a fixed buffer leads back to: the shard whose ring registered it.
pub(crate) struct FixedOwner {
    pub(crate) runtime: std::sync::Weak<Shared>,
    pub(crate) shard: usize,
}

/// Checks out a buffer of the calling shard's table (see `io::checkout_fixed_buf`).
pub(crate) fn checkout_fixed_buf(capacity: usize) -> Option<FixedBuf> {
    with_local(|l| l.driver.checkout_fixed_buf(capacity)).flatten()
}

/// Free buffers of the calling shard's table, once it has one.
pub(crate) fn fixed_bufs_available() -> Option<usize> {
    with_local(|l| l.driver.uring()?.fixed_bufs_available()).flatten()
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current shard's local state, if this is a shard thread.
pub(crate) fn with_local<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    // Borrowed, not cloned: this is on every send and receive. Only the shard
    // thread's start and end write `CURRENT`, never from inside `f`.
    CURRENT.with(|c| c.borrow().as_deref().map(f))
}

/// Runs `f` with the calling shard's ring (registration calls must come from
/// the ring's own thread); `None` off a shard, on the Queue backend, or while
/// the ring is borrowed.
pub(crate) fn with_ring<R>(f: impl FnOnce(&mut Ring) -> R) -> Option<R> {
    with_local(|l| l.driver.uring()?.with_ring(f)).flatten()
}

/// Takes a free registered-file slot of the calling shard.
pub(crate) fn alloc_fixed_slot() -> Option<u32> {
    with_local(|l| l.driver.uring()?.alloc_fixed_slot()).flatten()
}

/// Returns a registered-file slot of the calling shard.
pub(crate) fn free_fixed_slot(slot: u32) {
    with_local(|l| {
        if let Some(d) = l.driver.uring() {
            d.free_fixed_slot(slot);
        }
    });
}

/// The shard index of the calling thread within `shared`'s runtime.
pub(crate) fn current_shard_of(shared: &Shared) -> Option<usize> {
    with_local(|l| std::ptr::eq(&*l.shared, shared).then_some(l.shard)).flatten()
}

/// Queues `task` on this thread's shard if this thread is its owner.
pub(crate) fn try_schedule_local(shared: &Arc<Shared>, task: Arc<Task>) -> Result<(), Arc<Task>> {
    let Some(local) = CURRENT.with(|c| c.borrow().clone()) else {
        return Err(task);
    };
    if !Arc::ptr_eq(&local.shared, shared) || local.shard != task.owner() {
        return Err(task);
    }
    match task.mobility {
        Mobility::Stealable => {
            let me = &shared.shards[local.shard];
            me.lock_stealable().push_back(task);
            me.stealable_len.fetch_add(1, Ordering::SeqCst);
        }
        Mobility::Pinned | Mobility::Local => local.run_queue.borrow_mut().push_back(task),
    }
    Ok(())
}

pub(crate) use crate::driver::guarded;

impl Local {
    pub(crate) fn me(&self) -> &crate::runtime::ShardShared {
        &self.shared.shards[self.shard]
    }

    /// Queues a `MSG_RING` on this shard's ring, to be submitted after the current poll.
    pub(crate) fn push_msg_ring(
        &self,
        target: &RingFd,
        res: u32,
        post_user_data: u64,
        own_user_data: u64,
        skip: bool,
    ) -> Result<(), RuntimeError> {
        let ring = self.driver.uring().ok_or(RuntimeError::Closed)?;
        ring.push_msg_ring(target, res, post_user_data, own_user_data, skip)
    }

    /// Submits whatever the driver has queued (see [`Driver::flush`]).
    pub(crate) fn submit_now_if_queued(&self) {
        self.driver.flush();
    }

    /// What the driver needs from this shard.
    fn ctx<'a>(&'a self, pool: &'a dyn Fn(Box<dyn Op>, Arc<OpShared>)) -> Ctx<'a> {
        Ctx {
            shard: self.shard,
            counters: &self.me().counters,
            pool,
        }
    }

    /// Runs `f` with this shard's driver context.
    fn with_ctx<R>(&self, f: impl FnOnce(&Ctx<'_>) -> R) -> R {
        let pool = |op: Box<dyn Op>, shared: Arc<OpShared>| self.shared.run_on_pool(self.shard, op, shared);
        f(&self.ctx(&pool))
    }

    pub(crate) fn ring_fd_of(&self, shard: usize) -> Option<RingFd> {
        self.shared.shards[shard].unparker.get()?.ring_fd().cloned()
    }

    pub(crate) fn has_ring(&self) -> bool {
        self.driver.uring().is_some()
    }

    pub(crate) fn new_ticket(&self, shared: Arc<TicketShared>, what: TicketFor) -> u32 {
        let id = self.next_ticket.get().wrapping_add(1);
        self.next_ticket.set(id);
        self.tickets.borrow_mut().insert(id, (shared, what));
        id
    }

    /// True when the SQ has room for one more entry (submitting to make room).
    pub(crate) fn sq_room(&self) -> bool {
        self.driver.uring().is_some_and(|d| d.sq_room())
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: victim choice only, no quality needed beyond spreading.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pop_own_stealable(&self) -> Option<Arc<Task>> {
        let me = self.me();
        if me.stealable_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let task = me.lock_stealable().pop_front()?;
        me.stealable_len.fetch_sub(1, Ordering::SeqCst);
        Some(task)
    }

    fn next_task(&self) -> Option<Arc<Task>> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        // Fairness: every 8th pick looks at the stealable queue first, so a
        // stream of pinned wakes cannot starve queued stealable work.
        if tick.is_multiple_of(8)
            && let Some(t) = self.pop_own_stealable()
        {
            return Some(t);
        }
        let next = self.run_queue.borrow_mut().pop_front();
        next.or_else(|| self.pop_own_stealable())
    }

    fn take_inbox(&self) -> bool {
        let me = self.me();
        if me.inbox_len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut inbox = me.lock_inbox();
        me.inbox_len.fetch_sub(inbox.len(), Ordering::SeqCst);
        self.run_queue.borrow_mut().extend(inbox.drain(..));
        true
    }

    /// Polls `task`, submits what the poll queued, and polls it again at
    /// once while its own submissions complete it: the kernel posts many
    /// completions during the submitting `io_uring_enter` (a send with buffer
    /// room, a read of cached pages, a receive whose data is there). Reaping
    /// them right away and polling the task again lets one task's sequence of
    /// such ops (32 `write_all`s in a row) run back to back, as one
    /// non-blocking system call each would, instead of one op per loop turn
    /// interleaved with every other task. Ops pushed in one poll (a join of
    /// 32 reads) still go to the kernel in one enter. At most
    /// [`INLINE_REPOLLS`] extra polls, so a task whose ops always complete at
    /// once cannot hold the shard.
    fn run_task(&self, task: Arc<Task>) {
        let counters = &self.me().counters;
        self.current_task.set(task.id);
        task.run(|t, cx| {
            let mut repolls = 0;
            loop {
                // Counted before the poll: whoever sees the task's output (a
                // join handle, say) then also sees its poll counted.
                counters.polled.fetch_add(1, Ordering::Relaxed);
                let outcome = t.poll_stored(cx);
                self.submit_after_poll();
                // A task that woke itself during the poll (a yield) goes to the
                // back of the queue as before: only a wake by its own
                // completions earns the extra poll. Only CQEs already posted
                // count: pending task work (a message from another shard)
                // would take one more enter here, which made the cross-shard
                // ping-pong 10-50 % slower; the turn's reap runs it.
                let pending = matches!(outcome, PollOutcome::Pending);
                if !pending || repolls == INLINE_REPOLLS || t.is_woken() || !self.driver.has_completions() {
                    return outcome;
                }
                self.reap();
                if !t.take_wake_while_running() {
                    return outcome;
                }
                repolls += 1;
            }
        });
        self.current_task.set(0);
        // What finishing the task dropped (an op's cancel, a message).
        self.submit_after_poll();
    }

    /// Hands what a poll queued to other shards and the kernel.
    fn submit_after_poll(&self) {
        if self.outbox.is_dirty() {
            self.flush_outboxes();
        }
        self.driver.flush();
    }

    /// Reaps ready completions and dispatches them. Returns how many.
    fn reap(&self) -> usize {
        self.with_ctx(|ctx| self.driver.reap(ctx, &mut |cqe| self.dispatch(cqe)))
    }

    fn dispatch(&self, cqe: RingCqe) {
        match wire::decode(cqe.user_data) {
            Tag::Message { from, tag } => self.deliver(Event::RingMsg {
                from: usize::from(from),
                tag,
                val: cqe.res as u32,
            }),
            Tag::Doorbell { from } => self.take_mail(usize::from(from)),
            Tag::Ticket(id) => {
                let Some((t, what)) = self.tickets.borrow_mut().remove(&id) else {
                    return;
                };
                match (cqe.res < 0, what) {
                    (false, _) => t.complete(Ok(())),
                    (true, TicketFor::Message(target)) => {
                        // Not delivered: the credit comes back, the ticket fails.
                        self.outbox.refund(target);
                        t.complete(Err(crate::error::SendError::Os(-cqe.res)));
                    }
                    // The messages wait in the mailbox: ring again.
                    (true, TicketFor::Doorbell(target)) => self.owe_doorbell(target, Some(t)),
                }
            }
            Tag::NowaitFailed { target } => {
                // The message never arrived: give its credit back and count it.
                self.me()
                    .counters
                    .msg_send_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.outbox.refund(usize::from(target));
            }
            Tag::MailDoorbellFailed { target } => self.owe_doorbell(usize::from(target), None),
            // The driver finishes ops itself.
            Tag::Op(_) | Tag::Ignore => {}
        }
    }

    /// Submits `op` through this shard's driver.
    pub(crate) fn submit_op(&self, op: Box<dyn Op>, shared: Arc<OpShared>) {
        if shared.is_abandoned() {
            return; // Nobody waits and the kernel never saw it: just drop it.
        }
        self.with_ctx(|ctx| self.driver.submit(op, shared, ctx));
    }

    /// Asks the driver to cancel op `id` (its final completion still comes).
    pub(crate) fn cancel_op(&self, id: OpId) {
        self.with_ctx(|ctx| self.driver.cancel(id, ctx));
    }

    /// Takes ops and cancel requests other threads steered to this shard, and
    /// retries ops that waited for SQ room.
    fn take_remote_ops(&self) -> bool {
        let me = self.me();
        let mut progress = false;
        let waiting = self.driver.take_backlog();
        if !waiting.is_empty() {
            for (op, shared) in waiting {
                self.submit_op(op, shared);
            }
            progress = true;
        }
        if me.remote_ops_len.load(Ordering::Acquire) > 0 {
            let ops: Vec<_> = {
                let mut q = me.remote_ops.lock().unwrap_or_else(|p| p.into_inner());
                me.remote_ops_len.fetch_sub(q.len(), Ordering::SeqCst);
                q.drain(..).collect()
            };
            for (op, shared) in ops {
                self.submit_op(op, shared);
            }
            progress = true;
        }
        if me.cancel_requests_len.load(Ordering::Acquire) > 0 {
            let ids: Vec<_> = {
                let mut q = me.cancel_requests.lock().unwrap_or_else(|p| p.into_inner());
                me.cancel_requests_len.fetch_sub(q.len(), Ordering::SeqCst);
                q.drain(..).collect()
            };
            for id in ids {
                self.cancel_op(id);
            }
            progress = true;
        }
        progress
    }

    /// Shutdown step 3: cancel what is in flight and reap until the table is
    /// empty or `deadline` passes; what the kernel still holds then is leaked.
    /// Returns how many ops were leaked.
    fn cancel_in_flight(&self, deadline: Instant) -> usize {
        self.take_remote_ops();
        self.with_ctx(|ctx| {
            self.driver
                .cancel_all(deadline, ctx, &mut |cqe| self.dispatch(cqe))
        })
    }

    pub(crate) fn deliver(&self, event: Event) {
        self.me().counters.msgs_received.fetch_add(1, Ordering::Relaxed);
        self.events.borrow_mut().push_back(event);
        self.wake_event_waiters();
    }

    pub(crate) fn wake_event_waiters(&self) {
        if self.event_waiters.borrow().is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut *self.event_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn take_queued_msgs(&self) -> usize {
        let me = self.me();
        if me.queued_msgs_len.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let msgs: Vec<_> = {
            let mut q = me.queued_msgs.lock().unwrap_or_else(|p| p.into_inner());
            me.queued_msgs_len.fetch_sub(q.len(), Ordering::SeqCst);
            q.drain(..).collect()
        };
        let n = msgs.len();
        for m in msgs {
            self.deliver(Event::RingMsg {
                from: usize::from(m.from),
                tag: m.tag,
                val: m.val,
            });
        }
        n
    }

    fn fire_timers(&self) -> usize {
        // No timer armed and no remote timer op posted: skip the clock read
        // (this runs on every turn, spinning ones included).
        if self.timers.borrow().next_deadline().is_none() {
            return 0;
        }
        let due = self.timers.borrow_mut().take_due(Instant::now());
        let n = due.len();
        for w in due {
            guarded("waking a timer", || w.wake());
        }
        n
    }

    /// Takes about half of a random victim's stealable queue (at most `steal_budget`).
    fn steal(&self) -> bool {
        let shards = &self.shared.shards;
        let n = shards.len();
        if n < 2 {
            return false;
        }
        let start = (self.next_random() % n as u64) as usize;
        for k in 0..n {
            let v = (start + k) % n;
            if v == self.shard || shards[v].stealable_len.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let me = self.me();
            me.counters.steal_attempts.fetch_add(1, Ordering::Relaxed);
            let victim = &shards[v];
            let (batch, left): (Vec<Arc<Task>>, usize) = {
                let mut q = victim.lock_stealable();
                let take = q.len().div_ceil(2).min(self.shared.config.steal_budget);
                let batch: Vec<_> = q.drain(..take).collect();
                victim.stealable_len.fetch_sub(batch.len(), Ordering::SeqCst);
                // The new owner is set under the victim's lock: a wake that reads
                // the owner after this point queues the task with us.
                for t in &batch {
                    t.set_owner(self.shard);
                }
                (batch, q.len())
            };
            if batch.is_empty() {
                continue;
            }
            me.counters.steal_success.fetch_add(1, Ordering::Relaxed);
            me.counters
                .stolen
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.run_queue.borrow_mut().extend(batch);
            if left > 0 {
                self.shared.unpark_one_idle(self.shard);
            }
            return true;
        }
        false
    }

    fn has_local_work(&self) -> bool {
        !self.run_queue.borrow().is_empty()
            || self.outbox.is_dirty()
            || self.me().has_remote_work()
            || self.driver.has_ready()
            || self
                .timers
                .borrow()
                .next_deadline()
                .is_some_and(|d| d <= Instant::now())
    }

    fn others_have_stealable(&self) -> bool {
        self.shared
            .shards
            .iter()
            .any(|s| s.id != self.shard && s.stealable_len.load(Ordering::Relaxed) > 0)
    }

    fn park(&self, closing: bool) {
        let me = self.me();
        // Protocol step 1: announce, then re-check (see `Shared::unpark`).
        me.parked.store(true, Ordering::SeqCst);
        // Shutdown events are re-checked too: `unpark_all` (shutdown begun,
        // the last task finished) rings only shards it finds parked.
        let wake_now = self.has_local_work()
            || if closing {
                self.shared.live_tasks() == 0
            } else {
                self.shared.is_closing() || self.others_have_stealable()
            };
        if wake_now {
            me.parked.store(false, Ordering::SeqCst);
            return;
        }
        let mut timeout = self
            .timers
            .borrow()
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if closing {
            timeout = Some(timeout.map_or(SHUTDOWN_POLL, |t| t.min(SHUTDOWN_POLL)));
        }
        me.counters.parks.fetch_add(1, Ordering::Relaxed);
        let parked_at = Instant::now();
        // Errors (EBUSY while the CQ overflows, EINTR) end the wait early;
        // the next turn reaps and tries again.
        let waited = self.driver.park(timeout);
        me.parked.store(false, Ordering::SeqCst);
        me.counters.wakeups.fetch_add(1, Ordering::Relaxed);
        // A park that its own timeout ended (the next timer), or that an
        // error cut short, says nothing about when work comes back: spinning
        // would only have burnt CPU until a deadline known in advance.
        let slept = parked_at.elapsed();
        if !closing && waited && timeout.is_none_or(|t| slept < t) {
            if self.driver.park_ended_by_io() {
                self.spin.after_io_park(slept);
            } else {
                self.spin.after_park(slept);
            }
        }
    }

    fn event_loop(&self) {
        let shared = &self.shared;
        let interval = shared.config.event_interval;
        let mut idle_since: Option<Instant> = None;
        let mut closing_since: Option<Instant> = None;
        loop {
            let mut progress = self.take_inbox();
            progress |= self.take_remote_ops();
            if self.outbox.is_dirty() {
                // Sends from outside a task poll, and owed doorbells.
                self.flush_outboxes();
            }
            for _ in 0..interval {
                let Some(task) = self.next_task() else { break };
                self.run_task(task);
                progress = true;
            }
            progress |= self.reap() > 0;
            progress |= self.take_queued_msgs() > 0;
            progress |= self.fire_timers() > 0;

            let closing = shared.is_closing();
            if closing {
                let since = *closing_since.get_or_insert_with(Instant::now);
                if shared.live_tasks() == 0 || since.elapsed() >= shared.config.shutdown_timeout {
                    return;
                }
            }
            if progress {
                idle_since = None;
                continue;
            }
            if !closing && self.steal() {
                idle_since = None;
                continue;
            }
            let started = *idle_since.get_or_insert_with(Instant::now);
            if !closing && started.elapsed() < self.spin.window() {
                if shared.config.spin_yields || self.driver.spin_yields() {
                    // Give the CPU to any other runnable thread first: where
                    // shards may share a CPU, a pure spin starves the very
                    // shard that would send us work until the scheduler's
                    // slice ends. Measured: fanout_fanin (4 shards, 2 CPUs)
                    // 6.7 -> 2.5 ms (balanced) and 15 -> 3.6 ms (skewed) per
                    // iteration; the 2-shard ping-pong beside two `nice 19`
                    // busy loops 195 -> 8.2 ms per 256 round trips (without
                    // the yield both shards spun on one CPU for a slice each).
                    // The readiness driver always yields: its peers are other
                    // threads or processes (the socket's or pipe's other
                    // end), which a spin keeps off the CPU it shares with
                    // them (measured on `queue_echo_bench`, 2 CPUs, with and
                    // without two `nice 19` busy loops: echo RTT mean 23-39
                    // -> 16-19 µs, p99 75-128 -> 23-38 µs; each turn makes a
                    // system call anyway, `epoll_pwait2(0)`).
                    std::thread::yield_now();
                } else {
                    // Each shard pinned to a CPU of its own: no shard waits
                    // for this CPU, and a yield would only hand it to other
                    // work for a whole scheduler slice (the pinned ping-pong
                    // beside two `nice 19` loops: 42.9 ms per 256 round trips
                    // with the yield, 2.35 ms without).
                    std::hint::spin_loop();
                }
                continue;
            }
            self.park(closing);
            idle_since = None;
        }
    }

    /// Drops every task still queued here (after the loop ends).
    fn abandon_queued(&self) {
        let me = self.me();
        let mut leftovers: Vec<Arc<Task>> = self.run_queue.borrow_mut().drain(..).collect();
        leftovers.extend(me.lock_inbox().drain(..));
        leftovers.extend(me.lock_stealable().drain(..));
        me.inbox_len.store(0, Ordering::SeqCst);
        me.stealable_len.store(0, Ordering::SeqCst);
        for t in leftovers {
            t.abandon();
        }
        self.local_futures.borrow_mut().clear();
    }
}

/// How long an idle shard polls before it parks: adaptive between the
/// configured `spin_before_park` and [`SpinWindow::MAX_FACTOR`] times it.
///
/// Parking costs a sleep and a wake-up (about 14 µs on a 2-vCPU VM, against
/// about 1 µs to notice work while polling). A park that work ends sooner than
/// the window itself would have lasted was a wasted wake-up: the window
/// doubles. A park that lasts far longer than the window means the shard
/// really is idle: the window halves back towards the configured base. A
/// park ended by its own timeout (the shard's next timer) changes nothing. So a
/// shard that waits on short gaps (a fan-out's joins, a burst's next batch)
/// stops paying for wake-ups, and a quiet runtime still sleeps within one
/// base window (idle CPU stays ~0 %). Measured on `fanout_fanin` (4 shards,
/// 2 vCPUs): with a fixed 50 µs window, skewed 4.0 ms and balanced 2.9 ms
/// per iteration; with a fixed 200–300 µs window, 2.9 and 2.2 ms.
pub(crate) struct SpinWindow {
    base: Duration,
    current: Cell<Duration>,
}

impl SpinWindow {
    /// The window grows to at most this many times the configured base.
    pub(crate) const MAX_FACTOR: u32 = 8;
    /// A park this many times longer than the window shrinks it.
    const IDLE_FACTOR: u32 = 8;

    fn new(base: Duration) -> SpinWindow {
        SpinWindow {
            base,
            current: Cell::new(base),
        }
    }

    fn window(&self) -> Duration {
        self.current.get()
    }

    /// Adapts the window to a park that lasted `slept`.
    fn after_park(&self, slept: Duration) {
        let w = self.current.get();
        let next = if slept < w {
            (w * 2).min(self.base * Self::MAX_FACTOR)
        } else if slept > w * Self::IDLE_FACTOR {
            (w / 2).max(self.base)
        } else {
            w
        };
        self.current.set(next);
    }

    /// Adapts the window to a park that the kernel ended for I/O readiness
    /// (the readiness driver). It never grows the window: the wake-up is
    /// the kernel's (about as cheap as noticing the event while polling,
    /// measured), and on a machine with as few CPUs as shards, polling
    /// longer only keeps the peer that produces the I/O (a process, a
    /// thread) off the CPU. Long parks still shrink it.
    fn after_io_park(&self, slept: Duration) {
        let w = self.current.get();
        if slept > w * Self::IDLE_FACTOR {
            self.current.set((w / 2).max(self.base));
        }
    }
}

/// Most extra polls of one task in one [`Local::run_task`].
const INLINE_REPOLLS: u32 = 32;

/// How often a closing shard re-checks its shutdown deadline while parked.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

/// Shard 0's ring fd, once shard 0 has set its ring up (shards start in
/// parallel); `None` if shard 0 has no ring (it failed: the build is being
/// torn down).
fn first_shard_ring_fd(shared: &Shared) -> Result<Option<RingFd>, RuntimeError> {
    shared.wait_first_shard_started();
    match shared.shards[0].unparker.get() {
        Some(unparker) => Ok(unparker.ring_fd().cloned()),
        None if shared.is_closing() => Err(RuntimeError::Closed),
        None => Ok(None),
    }
}

/// The body of a shard thread.
pub(crate) fn run(
    shared: Arc<Shared>,
    shard: usize,
    sim: Option<SimKernel>,
    ready: Sender<Result<(), RuntimeError>>,
) {
    let started = start(&shared, shard, sim.as_ref());
    if shard == 0 {
        shared.first_shard_started();
    }
    let driver = match started {
        Ok(driver) => driver,
        Err(e) => {
            let _ = ready.send(Err(e));
            shared.shard_exited();
            return;
        }
    };
    let local = Rc::new(Local {
        shard,
        shared: shared.clone(),
        driver,
        run_queue: RefCell::new(VecDeque::new()),
        events: RefCell::new(VecDeque::new()),
        event_waiters: RefCell::new(Vec::new()),
        local_futures: RefCell::new(HashMap::new()),
        current_task: Cell::new(0),
        timers: RefCell::new(Timers::default()),
        tickets: RefCell::new(HashMap::new()),
        outbox: Outbox::new(shared.shards.len()),
        next_ticket: Cell::new(0),
        rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ (shard as u64 + 1).wrapping_mul(0x1000_0000_01b3)),
        tick: Cell::new(0),
        spin: SpinWindow::new(shared.config.spin_before_park),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(local.clone()));
    let _ = ready.send(Ok(()));
    local.event_loop();
    local.abandon_queued();
    let leaked = local.cancel_in_flight(Instant::now() + shared.config.shutdown_timeout);
    local.driver.release(leaked);
    // Complete tickets that can no longer be answered.
    for (_, (t, _)) in local.tickets.borrow_mut().drain() {
        t.complete(Err(crate::error::SendError::Closed));
    }
    CURRENT.with(|c| c.borrow_mut().take());
    drop(local); // Closes the ring (its fd stays open while RingFd clones live).
    shared.shard_exited();
}

fn start(shared: &Arc<Shared>, shard: usize, sim: Option<&SimKernel>) -> Result<Driver, RuntimeError> {
    if let Some(cpus) = &shared.config.thread_affinity {
        spargio_sys::os::pin_current_thread(cpus[shard])
            .map_err(|e| RuntimeError::InvalidConfig(format!("thread_affinity: shard {shard}: {e}")))?;
    }
    let owner = Arc::downgrade(shared);
    let driver = Driver::start(Setup {
        backend: shared.backend,
        ring: shard_ring_config(&shared.config),
        sim,
        // SQPOLL: shards after the first attach to shard 0's kernel thread.
        sqpoll_leader: &|| {
            if shard > 0 {
                first_shard_ring_fd(shared)
            } else {
                Ok(None)
            }
        },
        make_fixed_table: Box::new(move || {
            let owner = FixedOwner {
                runtime: owner.clone(),
                shard,
            };
            FixedBufTable::new(FIXED_BUF_COUNT, FIXED_BUF_SIZE, owner)
        }),
    })?;
    let _ = shared.shards[shard].unparker.set(driver.unparker());
    Ok(driver)
}

/// The stored (`Send`) future of a `!Send` task: on its first poll, on its
/// shard, it builds the real future and keeps it in the shard's local table.
pub(crate) struct LocalBootstrap {
    make: Option<Box<dyn FnOnce() -> LocalFuture + Send>>,
    id: u64,
}

impl LocalBootstrap {
    pub(crate) fn new(make: impl FnOnce() -> LocalFuture + Send + 'static) -> Self {
        LocalBootstrap {
            make: Some(Box::new(make)),
            id: 0,
        }
    }
}

impl Future for LocalBootstrap {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(local) = CURRENT.with(|c| c.borrow().clone()) else {
            return Poll::Ready(());
        };
        if let Some(make) = self.make.take() {
            self.id = local.current_task.get();
            let fut = make();
            local.local_futures.borrow_mut().insert(self.id, fut);
        }
        // Take the future out while polling it, so a nested spawn can use the table.
        let Some(mut fut) = local.local_futures.borrow_mut().remove(&self.id) else {
            return Poll::Ready(());
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                local.local_futures.borrow_mut().insert(self.id, fut);
                Poll::Pending
            }
        }
    }
}

impl Drop for LocalBootstrap {
    fn drop(&mut self) {
        if self.make.is_none() {
            let id = self.id;
            // Dropped on the owning shard: run the local future's destructor here.
            let fut = with_local(|l| l.local_futures.borrow_mut().remove(&id)).flatten();
            drop(fut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SpinWindow;
    use std::time::Duration;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn spin_window_grows_on_short_parks_and_shrinks_when_idle() {
        let w = SpinWindow::new(50 * US);
        // Work came back sooner than the window: it doubles, up to 8x.
        for expected in [100, 200, 400, 400] {
            w.after_park(10 * US);
            assert_eq!(w.window(), expected * US);
        }
        // A park within 8 windows changes nothing.
        w.after_park(3 * Duration::from_millis(1));
        assert_eq!(w.window(), 400 * US);
        // Long parks halve it, down to the base and no further.
        for expected in [200, 100, 50, 50] {
            w.after_park(Duration::from_secs(1));
            assert_eq!(w.window(), expected * US);
        }
    }

    #[test]
    fn zero_spin_stays_zero() {
        let w = SpinWindow::new(Duration::ZERO);
        w.after_park(Duration::ZERO);
        w.after_park(Duration::from_secs(1));
        assert_eq!(w.window(), Duration::ZERO);
    }
}
