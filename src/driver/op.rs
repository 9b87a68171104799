//! The waiter's side of an op, shared by both drivers and the op futures.
//!
//! A driver holds an op with its [`OpShared`] while the op is in flight and
//! hands the final completion to [`OpShared::finish`] (intermediate ones of a
//! multishot op to [`OpShared::progress`]); the op's future (`io::OpFuture`)
//! waits on the other side.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use spargio_sys::Cqe;
use spargio_sys::msg::OpId;
use spargio_sys::op::{Op, OpEvent};

/// An op on its way to a shard's ring, with its waiter's side.
pub(crate) type SteeredOp = (Box<dyn Op>, Arc<OpShared>);

/// The waiter's side of one op.
pub(crate) struct OpShared {
    inner: Mutex<OpInner>,
    /// Whatever the submitter wants kept until both the final completion and
    /// the waiter are gone (the unbound lane's fd lease), dropped with the last
    /// reference.
    _hold: Option<OpHold>,
}

/// A value an op keeps alive until its final completion and its waiter are gone.
pub(crate) type OpHold = Box<dyn std::any::Any + Send + Sync>;

/// Takes what an op still produces after its waiter left
/// ([`OpFuture::abandon_with`]): a receive's data, kept for the next receive
/// instead of being freed with the op.
///
/// Called on the thread that reaps the op (its shard, or a blocking-pool
/// thread), with the op's waiter lock held for [`Salvage::more`]: it must not
/// block, and must not touch the op's future.
pub(crate) trait Salvage: Send {
    /// An intermediate completion of a multishot op.
    fn more(&mut self, event: OpEvent);
    /// The final completion, with the op. Called at most once; an op that is
    /// dropped unsubmitted (its waiter left before it reached a ring) never
    /// calls it, and the salvage is dropped instead.
    fn done(&mut self, cqe: Cqe, op: Box<dyn Op>);
}

#[derive(Default)]
pub(crate) struct OpInner {
    pub(crate) done: Option<(Cqe, Box<dyn Op>)>,
    pub(crate) more: VecDeque<OpEvent>,
    pub(crate) waker: Option<Waker>,
    pub(crate) abandoned: bool,
    /// Where an abandoned op's remaining completions go (none: they are dropped).
    pub(crate) salvage: Option<Box<dyn Salvage>>,
    /// Where the op is in flight, once submitted: (shard, id).
    pub(crate) submitted: Option<(usize, OpId)>,
}

impl OpShared {
    pub(crate) fn new(hold: Option<OpHold>) -> Arc<OpShared> {
        Arc::new(OpShared {
            inner: Mutex::new(OpInner::default()),
            _hold: hold,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OpInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records where the op went; false if its waiter already left (the shard
    /// then asks for cancellation at once).
    pub(crate) fn submitted(&self, shard: usize, id: OpId) -> bool {
        let mut g = self.lock();
        g.submitted = Some((shard, id));
        !g.abandoned
    }

    /// True when nobody waits any more (checked before submission).
    pub(crate) fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// The final completion: hand the op to the waiter, to its salvage, or
    /// release it (an op dropped here closes the fd it created and frees its
    /// buffers, which the kernel is done with).
    pub(crate) fn finish(&self, cqe: Cqe, op: Box<dyn Op>) {
        let waker = {
            let mut g = self.lock();
            if g.abandoned {
                let salvage = g.salvage.take();
                drop(g);
                match salvage {
                    Some(mut s) => s.done(cqe, op),
                    None => drop(op),
                }
                return;
            }
            g.done = Some((cqe, op));
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// A multishot completion with more to come. Nobody waiting: it goes to
    /// the op's salvage, or what it carries (an accepted fd, a provided
    /// buffer) is released at once.
    pub(crate) fn progress(&self, event: OpEvent) {
        let waker = {
            let mut g = self.lock();
            if g.abandoned {
                match g.salvage.as_mut() {
                    Some(s) => s.more(event),
                    None => {
                        drop(g);
                        drop(event);
                    }
                }
                return;
            }
            g.more.push_back(event);
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The completion of an op that ran as a system call (no ring): its result
/// as a CQE's `res`.
pub(crate) fn blocking_cqe(res: i32) -> Cqe {
    Cqe {
        user_data: 0,
        res,
        flags: 0,
    }
}
