//! The driver: what a shard runs its I/O on, behind one interface.
//!
//! Two drivers implement it: [`uring`] (one io_uring per shard) and
//! [`epoll`] (the Queue backend: readiness through one epoll set per shard,
//! the blocking pool for what has no readiness). The scheduler (`shard`,
//! `runtime`, `msg`, `mail`) and the I/O types use [`Driver`], [`Unparker`]
//! and the capability queries on [`Backend`]; nothing above this module
//! matches on the backend (the runtime builder choosing which driver to
//! build excepted).
//!
//! # Contract
//!
//! A shard owns one [`Driver`] and calls it only from its own thread:
//!
//! - [`Driver::submit`] takes an op and its waiter's side ([`OpShared`]) and
//!   eventually calls [`OpShared::finish`] exactly once (or hands the op to
//!   [`Ctx::pool`], which then does), unless the op is leaked at shutdown
//!   because the kernel may still write to it. An op counts in
//!   `ops_in_flight` while the driver holds it.
//! - [`Driver::cancel`] asks for op `id` to end early; its final completion
//!   still comes through `finish` (`-ECANCELED`, or its result if it ran).
//!   After `cancel` returns, a receive takes no data that arrives later.
//! - [`Driver::reap`] finishes the ops whose completions are ready and hands
//!   every other completion (messages, doorbells, tickets) to `on_event`.
//! - [`Driver::park`] sleeps until a completion, its [`Unparker`] or
//!   `timeout` (never earlier than `timeout` unless woken).
//!   [`Driver::has_ready`] says whether a park would return at once.
//! - [`Unparker::wake`] wakes a parked driver from any thread.
//! - [`Driver::cancel_all`] (shutdown) ends every op, waiting until
//!   `deadline` for the kernel; it returns how many ops had to be leaked.

pub(crate) mod epoll;
pub(crate) mod op;
pub(crate) mod uring;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spargio_sys::buf::FixedBuf;
use spargio_sys::cqe::RingCqe;
use spargio_sys::epoll::EventFd;
use spargio_sys::msg::OpId;
use spargio_sys::op::Op;
use spargio_sys::ring::{Ring, RingConfig, RingFd};
use spargio_sys::sim::SimKernel;

use crate::error::RuntimeError;
use crate::stats::ShardCounters;
use epoll::EpollDriver;
use op::OpShared;
use uring::{MakeFixedTable, UringDriver};

/// Which kernel interface the shards use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One io_uring per shard; cross-shard messages and doorbells are `MSG_RING`.
    IoUring,
    /// No io_uring: shards park in `epoll`, socket and pipe ops wait for
    /// readiness there, other ops run on the blocking pool, and messages
    /// travel in memory. The same API, for kernels or sandboxes without io_uring.
    Queue,
}

impl Backend {
    /// True when shards have rings: messages and doorbells are `MSG_RING`s,
    /// shard senders batch through mailboxes, and provided-buffer rings and
    /// fixed files exist. False: messages travel in memory queues.
    pub(crate) fn has_rings(self) -> bool {
        self == Backend::IoUring
    }

    /// True when `op` runs as a blocking call on the pool rather than on its
    /// shard's driver (no readiness for it without a ring: files, opens, …).
    pub(crate) fn runs_on_pool(self, op: &dyn Op) -> bool {
        self == Backend::Queue && op.readiness_fd().is_none()
    }

    /// True when a socket op may end up as a blocking call on the pool (its
    /// fd cannot be watched), where only a cancel flag can interrupt it.
    pub(crate) fn may_block_socket_ops(self) -> bool {
        self == Backend::Queue
    }
}

/// What a driver needs from the shard that owns it.
pub(crate) struct Ctx<'a> {
    /// The shard's index (recorded in each op's [`OpShared`]).
    pub(crate) shard: usize,
    pub(crate) counters: &'a ShardCounters,
    /// Runs an op the driver cannot (as a blocking call on the pool), and
    /// finishes it.
    pub(crate) pool: &'a dyn Fn(Box<dyn Op>, Arc<OpShared>),
}

impl Ctx<'_> {
    fn count_in(&self) {
        self.counters.ops_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn count_out(&self) {
        self.counters.ops_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `f` (which may call user code: a `Waker`, a `Drop`) so that a panic
/// in it is reported and contained: the shard goes on with its loop, its op
/// table and the completions still to dispatch.
pub(crate) fn guarded(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        eprintln!("spargio: user code panicked while {what} on a shard thread; the shard goes on");
    }
}

/// How other threads wake a parked shard's driver.
pub(crate) enum Unparker {
    /// A `MSG_RING` doorbell into the shard's ring.
    Ring(RingFd),
    /// The eventfd in the shard's epoll set.
    EventFd(Arc<EventFd>),
}

impl Unparker {
    /// The shard's ring, where it has one (the target of `MSG_RING`s).
    pub(crate) fn ring_fd(&self) -> Option<&RingFd> {
        match self {
            Unparker::Ring(fd) => Some(fd),
            Unparker::EventFd(_) => None,
        }
    }

    /// Wakes the shard. `from` is the calling shard's driver, when the caller
    /// is a shard of the same runtime (its ring sends the doorbell);
    /// otherwise `foreign` (the runtime's ring for threads outside it) does.
    /// False when the kernel kept refusing the doorbell.
    pub(crate) fn wake(&self, from: Option<&Driver>, foreign: &Mutex<Option<Ring>>) -> bool {
        match self {
            Unparker::EventFd(bell) => {
                bell.notify();
                true
            }
            Unparker::Ring(target) => {
                if let Some(Driver::Uring(d)) = from
                    && d.doorbell(target)
                {
                    return true;
                }
                let mut guard = foreign.lock().unwrap_or_else(|p| p.into_inner());
                let Some(ring) = guard.as_mut() else { return true };
                uring::push_doorbell(ring, target);
                uring::submit_foreign(ring, &mut |_| {}).is_ok()
            }
        }
    }
}

/// How a shard's driver is set up.
pub(crate) struct Setup<'a> {
    pub(crate) backend: Backend,
    pub(crate) ring: RingConfig,
    pub(crate) sim: Option<&'a SimKernel>,
    /// The ring whose SQPOLL thread to share, asked only when `ring` wants
    /// SQPOLL and attaching (`sqpoll_attach` is set from it).
    pub(crate) sqpoll_leader: &'a dyn Fn() -> Result<Option<RingFd>, RuntimeError>,
    pub(crate) make_fixed_table: MakeFixedTable,
}

/// One shard's driver.
// One per shard, built once and never moved after the shard starts: the
// size difference costs nothing, a box would cost an indirection per call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Driver {
    Uring(UringDriver),
    Epoll(EpollDriver),
}

impl Driver {
    /// Sets up the driver `setup.backend` asks for.
    pub(crate) fn start(setup: Setup<'_>) -> Result<Driver, RuntimeError> {
        let mut config = setup.ring;
        match setup.backend {
            Backend::IoUring => {
                let ring = match setup.sim {
                    Some(k) => Ring::sim(k, &config)?,
                    None => {
                        // SQPOLL: one kernel submission thread for the runtime,
                        // not one per shard (each spins for its idle time).
                        let first = match config.sqpoll_idle {
                            Some(_) => (setup.sqpoll_leader)()?,
                            None => None,
                        };
                        config.sqpoll_attach = first.as_ref().map(RingFd::raw);
                        match Ring::with_config(&config) {
                            Ok(ring) => ring,
                            // Attaching refused: a submission thread of our own.
                            Err(_) if config.sqpoll_attach.is_some() => {
                                config.sqpoll_attach = None;
                                Ring::with_config(&config).map_err(|e| RuntimeError::Io(e.into()))?
                            }
                            Err(e) => return Err(RuntimeError::Io(e.into())),
                        }
                    }
                };
                Ok(Driver::Uring(UringDriver::new(ring, setup.make_fixed_table)))
            }
            Backend::Queue => Ok(Driver::Epoll(EpollDriver::new().map_err(RuntimeError::Io)?)),
        }
    }

    /// How other threads wake this driver.
    pub(crate) fn unparker(&self) -> Unparker {
        match self {
            Driver::Uring(d) => Unparker::Ring(d.ring_fd()),
            Driver::Epoll(d) => Unparker::EventFd(d.doorbell()),
        }
    }

    /// The io_uring driver, where this is one (rings, fixed buffers and
    /// files, `MSG_RING`).
    pub(crate) fn uring(&self) -> Option<&UringDriver> {
        match self {
            Driver::Uring(d) => Some(d),
            Driver::Epoll(_) => None,
        }
    }

    /// Starts `op` (see the module's contract).
    pub(crate) fn submit(&self, op: Box<dyn Op>, shared: Arc<OpShared>, ctx: &Ctx<'_>) {
        match self {
            Driver::Uring(d) => d.submit(op, shared, ctx),
            Driver::Epoll(d) => d.submit(op, shared, ctx),
        }
    }

    /// Ops the driver could not take at once (no SQ room), to submit again.
    pub(crate) fn take_backlog(&self) -> Vec<op::SteeredOp> {
        match self {
            Driver::Uring(d) => d.take_backlog(),
            Driver::Epoll(_) => Vec::new(),
        }
    }

    /// Asks for op `id` to end (its final completion still comes).
    pub(crate) fn cancel(&self, id: OpId, ctx: &Ctx<'_>) {
        match self {
            Driver::Uring(d) => d.cancel(id),
            Driver::Epoll(d) => d.cancel(id, ctx),
        }
    }

    /// Submits whatever an op, cancel or doorbell queued (io_uring: the SQEs
    /// pushed during a task poll).
    pub(crate) fn flush(&self) {
        if let Driver::Uring(d) = self {
            d.submit_now_if_queued();
        }
    }

    /// Finishes the ops whose completions are ready; hands other completions
    /// to `on_event`. Returns how many completions it handled.
    pub(crate) fn reap(&self, ctx: &Ctx<'_>, on_event: &mut dyn FnMut(RingCqe)) -> usize {
        match self {
            Driver::Uring(d) => d.reap(ctx, on_event),
            Driver::Epoll(d) => d.dispatch(ctx),
        }
    }

    /// True when the last [`Driver::park`] ended because an fd became ready
    /// (the readiness driver), not because another thread rang or a
    /// completion came (io_uring: never said).
    pub(crate) fn park_ended_by_io(&self) -> bool {
        match self {
            Driver::Uring(_) => false,
            Driver::Epoll(d) => d.woken_by_io(),
        }
    }

    /// True when a shard polling for work should yield the CPU on each turn
    /// (the readiness driver; see the shard loop).
    pub(crate) fn spin_yields(&self) -> bool {
        matches!(self, Driver::Epoll(_))
    }

    /// True when completions are ready to reap.
    pub(crate) fn has_ready(&self) -> bool {
        match self {
            Driver::Uring(d) => d.has_ready(),
            Driver::Epoll(d) => d.has_pending_events(),
        }
    }

    /// True when completions are ready to dispatch without another system
    /// call: CQEs in the ring (task work the kernel has yet to run does not
    /// count), or readiness events already fetched.
    pub(crate) fn has_completions(&self) -> bool {
        match self {
            Driver::Uring(d) => d.has_cqes(),
            Driver::Epoll(d) => d.has_pending_events(),
        }
    }

    /// Sleeps until a completion, a wake-up or `timeout`. False when the
    /// wait failed (it ended early).
    pub(crate) fn park(&self, timeout: Option<Duration>) -> bool {
        match self {
            Driver::Uring(d) => d.park(timeout),
            Driver::Epoll(d) => d.park(timeout),
        }
    }

    /// Shutdown: ends every op (see the module's contract). Returns how many
    /// were leaked.
    pub(crate) fn cancel_all(
        &self,
        deadline: Instant,
        ctx: &Ctx<'_>,
        on_event: &mut dyn FnMut(RingCqe),
    ) -> usize {
        match self {
            Driver::Uring(d) => d.cancel_all(deadline, ctx, on_event),
            Driver::Epoll(d) => {
                d.cancel_all(ctx);
                0
            }
        }
    }

    /// Shutdown, after [`Driver::cancel_all`]: releases registrations
    /// (unless ops were leaked).
    pub(crate) fn release(&self, leaked: usize) {
        if let Driver::Uring(d) = self {
            d.release(leaked);
        }
    }

    /// A buffer of the shard's fixed-buffer table (an unregistered one where
    /// there is none).
    pub(crate) fn checkout_fixed_buf(&self, capacity: usize) -> Option<FixedBuf> {
        match self {
            Driver::Uring(d) => d.checkout_fixed_buf(capacity),
            Driver::Epoll(_) => FixedBuf::try_unregistered(capacity),
        }
    }
}
