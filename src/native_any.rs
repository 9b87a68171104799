//! The unbound native lane, [`UringNativeAny`]: each op picks its shard at
//! submission time (selector and fd leases), and its cancellation is routed to
//! that shard's ring.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use spargio_sys::op::Op;
use spargio_sys::op::fs::{Fsync, Read, SharedFd, Write};
use spargio_sys::op::net::{CancelFlag, Recv, Send};

use crate::fd_lease::Lease;
use crate::io::{BufResult, IoBuf, IoBufMut, check_offset, cqe_result, read_done, submit_holding};
use crate::runtime::{RuntimeHandle, Shared};
use crate::{JoinHandle, RuntimeError, TaskPlacement, shard};

/// The unbound lane: native ops from any task, each on the shard picked for
/// it when it is submitted.
///
/// It is for code that may run anywhere, such as a stealable task that moves
/// between shards between polls. Every op it starts goes through three steps
/// when the method is called (not when the op is first polled):
///
/// 1. **Lease.** If the op's fd holds a lease, the op goes to the leased shard.
///    A lease holds while an op on that fd is in flight (or a
///    [`NativeAnySession`] on it lives) and for [`UringNativeAny::lease_idle`]
///    after the last one finished; then it lapses and the fd may move. Leases
///    belong to the runtime: every lane of one runtime sees the same ones.
/// 2. **Selector.** Otherwise the lane picks the shard with the fewest ops in
///    flight ([`ShardStats::ops_in_flight`](crate::ShardStats::ops_in_flight)
///    plus ops other threads queued for it). The current shard (or the
///    preferred one, [`UringNativeAny::with_preferred_shard`]) wins ties and
///    near-ties: it is left only for a shard with more than 2 + ⅛ of that
///    shard's load fewer ops. Outside the runtime, with no preference, ties
///    are broken in turn. The chosen shard becomes the fd's lease.
/// 3. **Submission** on that shard's ring: directly when it is the calling
///    shard, otherwise steered through the shard's queue.
///
/// The lease keeps one fd's ops on one ring, in the order they were started;
/// as on any ring, the kernel may still run independent ops concurrently, so
/// await one before starting the next where their order matters.
///
/// Dropping an op ([`UnboundOp`]) before it completes cancels it on the ring
/// it was submitted to, from whatever thread drops it. The fd's lease lasts
/// until that ring reaped the op's final completion, so a later op on the same
/// fd cannot race a cancelled one on another ring.
///
/// On the Queue backend the ops run on the blocking pool; the chosen shard is
/// then only bookkeeping (the op is counted in its `ops_in_flight`), and a
/// dropped `recv`/`send` tells its pool thread to give up.
///
/// ```
/// use std::sync::Arc;
/// use std::os::fd::OwnedFd;
///
/// let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
/// let lane = rt.handle().uring_native_unbound();
/// let path = std::env::temp_dir().join(format!("spargio-any-doc-{}", std::process::id()));
/// let file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
/// let fd: spargio::sys::op::fs::SharedFd = Arc::new(OwnedFd::from(file));
/// let task = rt.handle().spawn_stealable(async move {
///     let (res, _) = lane.write_at(&fd, b"unbound".to_vec(), 0).await;
///     res?;
///     lane.fsync(&fd).await?;
///     let (res, buf) = lane.read_at(&fd, Vec::with_capacity(16), 0).await;
///     res?;
///     Ok::<_, std::io::Error>(buf)
/// }).unwrap();
/// assert_eq!(rt.block_on(task).unwrap().unwrap().unwrap(), b"unbound");
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Clone)]
pub struct UringNativeAny {
    rt: Arc<Shared>,
    preferred: Option<usize>,
    lease_idle: Duration,
}

impl std::fmt::Debug for UringNativeAny {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringNativeAny")
            .field("preferred", &self.preferred)
            .field("lease_idle", &self.lease_idle)
            .finish()
    }
}

impl RuntimeHandle {
    /// The unbound native lane of this runtime: see [`UringNativeAny`].
    pub fn uring_native_unbound(&self) -> UringNativeAny {
        UringNativeAny {
            rt: self.shared.clone(),
            preferred: None,
            lease_idle: UringNativeAny::DEFAULT_LEASE_IDLE,
        }
    }
}

fn recv_done<B: IoBufMut>(res: io::Result<usize>, op: Recv<B>) -> BufResult<usize, B> {
    (res, op.into_buf())
}

impl UringNativeAny {
    /// How long an fd's lease outlives its last op unless the lane says otherwise.
    pub const DEFAULT_LEASE_IDLE: Duration = Duration::from_millis(50);

    /// The same lane, biased to `shard`: it takes the current shard's place in
    /// the selector rule (it wins ties and near-ties).
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NoSuchShard`] for an index out of range.
    pub fn with_preferred_shard(mut self, shard: usize) -> Result<UringNativeAny, RuntimeError> {
        if shard >= self.rt.shards.len() {
            return Err(RuntimeError::NoSuchShard(shard));
        }
        self.preferred = Some(shard);
        Ok(self)
    }

    /// The same lane, with leases it creates or renews lasting `idle` after
    /// their fd's last op finished (`Duration::ZERO`: only while an op is in
    /// flight).
    pub fn with_lease_idle(mut self, idle: Duration) -> UringNativeAny {
        self.lease_idle = idle;
        self
    }

    /// How long this lane's leases outlive their fd's last op.
    pub fn lease_idle(&self) -> Duration {
        self.lease_idle
    }

    /// The shard the selector would pick now for an fd without a lease.
    pub fn select_shard(&self) -> usize {
        select(&self.rt, self.preferred)
    }

    /// The shard `fd`'s ops are leased to, if its lease holds.
    pub fn leased_shard(&self, fd: RawFd) -> Option<usize> {
        self.rt.fd_leases.holder(fd, Instant::now())
    }

    /// Reads at `pos` into `buf` (up to its capacity): positioned I/O, for
    /// files (the Queue backend runs it as `pread`).
    ///
    /// # Errors
    ///
    /// The read error; `InvalidInput` for `pos` beyond `i64::MAX`; an error
    /// once the runtime shut down. The buffer always comes back.
    pub fn read_at<B: IoBufMut>(&self, fd: &SharedFd, buf: B, pos: u64) -> UnboundOp<BufResult<usize, B>> {
        let op = Read::new(fd.clone(), buf, pos);
        if let Err(e) = check_offset(pos) {
            return UnboundOp::ready(read_done(Err(e), op));
        }
        self.start(fd, op, None, read_done)
    }

    /// Writes `buf`'s initialized bytes at `pos`.
    ///
    /// # Errors
    ///
    /// As [`UringNativeAny::read_at`].
    pub fn write_at<B: IoBuf>(&self, fd: &SharedFd, buf: B, pos: u64) -> UnboundOp<BufResult<usize, B>> {
        let op = Write::new(fd.clone(), buf, pos);
        if let Err(e) = check_offset(pos) {
            return UnboundOp::ready((Err(e), op.into_buf()));
        }
        self.start(fd, op, None, |res, op| (res, op.into_buf()))
    }

    /// Flushes a file to its device (`fsync`).
    ///
    /// # Errors
    ///
    /// The `fsync` error, or an error once the runtime shut down.
    pub fn fsync(&self, fd: &SharedFd) -> UnboundOp<io::Result<()>> {
        self.start(fd, Fsync::new(fd.clone(), false), None, |res, _| res.map(drop))
    }

    /// Receives from a socket into `buf` (from its start, up to its capacity).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the lane keeps no state per socket, so data that a
    /// dropped `UnboundOp` already received is dropped with its op. Use a
    /// [`UringBoundFd`](crate::UringBoundFd) or a [`crate::net`] socket,
    /// whose receives are cancel safe, where a receive may be dropped.
    ///
    /// # Errors
    ///
    /// The `recv` error, or an error once the runtime shut down. The buffer
    /// always comes back.
    pub fn recv<B: IoBufMut>(&self, fd: &SharedFd, buf: B) -> UnboundOp<BufResult<usize, B>> {
        let flag = self.cancel_flag();
        let mut op = Recv::new(fd.clone(), buf, 0);
        if let Some(f) = &flag {
            op = op.cancel_flag(f.clone());
        }
        self.start(fd, op, flag, recv_done)
    }

    /// Sends `buf`'s initialized bytes on a socket (`MSG_NOSIGNAL`: a reset
    /// peer gives `EPIPE`, never `SIGPIPE`).
    ///
    /// # Errors
    ///
    /// As [`UringNativeAny::recv`].
    pub fn send<B: IoBuf>(&self, fd: &SharedFd, buf: B) -> UnboundOp<BufResult<usize, B>> {
        let flag = self.cancel_flag();
        let mut op = Send::new(fd.clone(), buf, 0);
        if let Some(f) = &flag {
            op = op.cancel_flag(f.clone());
        }
        self.start(fd, op, flag, |res, op| (res, op.into_buf()))
    }

    /// Spawns the task `f(session)` pinned on `fd`'s leased shard (leasing it
    /// to the selector's pick if it has no lease). The session holds the lease
    /// while it lives, so its ops run on the task's own ring without steering.
    ///
    /// # Errors
    ///
    /// As [`RuntimeHandle::spawn_with_placement`].
    pub fn spawn_on_session<F, Fut>(
        &self,
        fd: &SharedFd,
        f: F,
    ) -> Result<JoinHandle<Fut::Output>, RuntimeError>
    where
        F: FnOnce(NativeAnySession) -> Fut + std::marker::Send + 'static,
        Fut: Future + std::marker::Send + 'static,
        Fut::Output: std::marker::Send + 'static,
    {
        self.spawn_session(fd, f, TaskPlacement::Pinned)
    }

    /// As [`UringNativeAny::spawn_on_session`], but the task is stealable,
    /// queued on the leased shard. If another shard takes it, its ops still go
    /// to the leased ring (steered there) while the session lives.
    ///
    /// # Errors
    ///
    /// As [`RuntimeHandle::spawn_with_placement`].
    pub fn spawn_stealable_on_session<F, Fut>(
        &self,
        fd: &SharedFd,
        f: F,
    ) -> Result<JoinHandle<Fut::Output>, RuntimeError>
    where
        F: FnOnce(NativeAnySession) -> Fut + std::marker::Send + 'static,
        Fut: Future + std::marker::Send + 'static,
        Fut::Output: std::marker::Send + 'static,
    {
        self.spawn_session(fd, f, TaskPlacement::StealablePreferred)
    }

    fn spawn_session<F, Fut>(
        &self,
        fd: &SharedFd,
        f: F,
        placement: fn(usize) -> TaskPlacement,
    ) -> Result<JoinHandle<Fut::Output>, RuntimeError>
    where
        F: FnOnce(NativeAnySession) -> Fut + std::marker::Send + 'static,
        Fut: Future + std::marker::Send + 'static,
        Fut::Output: std::marker::Send + 'static,
    {
        let lease = self.lease(fd);
        let shard = lease.shard;
        let session = NativeAnySession {
            lane: self.clone(),
            fd: fd.clone(),
            _lease: lease,
        };
        let handle = RuntimeHandle {
            shared: self.rt.clone(),
        };
        handle.spawn_with_placement(placement(shard), async move { f(session).await })
    }

    /// A cancel flag for the blocking form of a socket op, on the Queue backend only.
    fn cancel_flag(&self) -> Option<CancelFlag> {
        self.rt.backend.may_block_socket_ops().then(CancelFlag::default)
    }

    /// Takes (or renews) `fd`'s lease.
    fn lease(&self, fd: &SharedFd) -> Lease {
        let rt = &self.rt;
        rt.fd_leases
            .acquire(fd, self.lease_idle, || select(rt, self.preferred))
    }

    /// Submits `op` on `fd`'s leased shard; `done` turns its result and the op
    /// back into the caller's output.
    fn start<O: Op, T: 'static>(
        &self,
        fd: &SharedFd,
        op: O,
        cancel: Option<CancelFlag>,
        done: fn(io::Result<usize>, O) -> T,
    ) -> UnboundOp<T> {
        let lease = self.lease(fd);
        let shard = lease.shard;
        let fut: Pin<Box<dyn Future<Output = T> + std::marker::Send>> =
            match submit_holding(&self.rt, Some(shard), op, Some(Box::new(lease))) {
                Err((e, op)) => return UnboundOp::ready(done(Err(e), op)),
                Ok(fut) => Box::pin(async move {
                    let (cqe, op) = fut.await;
                    done(cqe_result(&cqe), op)
                }),
            };
        UnboundOp {
            shard: Some(shard),
            state: OpState::Running(fut),
            cancel,
        }
    }
}

/// The selector over `rt`'s current loads (see [`pick`]).
fn select(rt: &Shared, preferred: Option<usize>) -> usize {
    let load = |s: usize| {
        let sh = &rt.shards[s];
        sh.counters.ops_in_flight.load(Ordering::Relaxed) + sh.remote_ops_len.load(Ordering::Relaxed) as u64
    };
    let home = preferred.or_else(|| shard::current_shard_of(rt));
    let start = home.unwrap_or_else(|| rt.next_round_robin());
    pick(rt.shards.len(), load, home, start)
}

/// The selector rule: the least loaded of `n` shards (the first found scanning
/// from `start`), unless `home` is within a near-tie of it,
/// `load(home) <= best + 2 + best / 8`. `start` is `home` when there is one.
fn pick(n: usize, load: impl Fn(usize) -> u64, home: Option<usize>, start: usize) -> usize {
    let start_load = load(start);
    let (mut best, mut best_load) = (start, start_load);
    for i in 1..n {
        let s = (start + i) % n;
        let l = load(s);
        if l < best_load {
            (best, best_load) = (s, l);
        }
    }
    match home {
        Some(h) if start_load <= best_load + 2 + best_load / 8 => h,
        _ => best,
    }
}

/// An op of the unbound lane, submitted when it was created; resolves to
/// its result. Dropping it before it completes cancels the op on its shard.
#[must_use = "the op is already submitted; dropping this cancels it"]
pub struct UnboundOp<T> {
    shard: Option<usize>,
    state: OpState<T>,
    /// Set on drop before completion, so a blocking socket op on the Queue
    /// backend gives up.
    cancel: Option<CancelFlag>,
}

enum OpState<T> {
    Running(Pin<Box<dyn Future<Output = T> + std::marker::Send>>),
    Ready(Option<T>),
}

impl<T> UnboundOp<T> {
    fn ready(out: T) -> UnboundOp<T> {
        UnboundOp {
            shard: None,
            state: OpState::Ready(Some(out)),
            cancel: None,
        }
    }

    /// The shard whose ring the op was submitted to (on the Queue backend: the
    /// shard it is counted on); `None` when it failed before submission (bad
    /// offset, runtime shut down).
    pub fn shard(&self) -> Option<usize> {
        self.shard
    }
}

impl<T> std::fmt::Debug for UnboundOp<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnboundOp").field("shard", &self.shard).finish()
    }
}

// The output is only moved out, never pinned; the inner future is boxed.
impl<T> Unpin for UnboundOp<T> {}

impl<T> Future for UnboundOp<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let out = match &mut this.state {
            OpState::Running(fut) => std::task::ready!(fut.as_mut().poll(cx)),
            OpState::Ready(out) => out.take().expect("UnboundOp polled after completion"),
        };
        this.cancel = None;
        Poll::Ready(out)
    }
}

impl<T> Drop for UnboundOp<T> {
    fn drop(&mut self) {
        if let Some(flag) = self.cancel.take() {
            // Relaxed: the flag carries no data; the pool thread polls it.
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// An fd leased to one shard for as long as the session lives, handed to the
/// task of [`UringNativeAny::spawn_on_session`].
pub struct NativeAnySession {
    lane: UringNativeAny,
    fd: SharedFd,
    _lease: Lease,
}

impl std::fmt::Debug for NativeAnySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeAnySession")
            .field("fd", &self.fd.as_raw_fd())
            .field("shard", &self._lease.shard)
            .finish()
    }
}

impl NativeAnySession {
    /// The shard the session's fd is leased to (where its ops run).
    pub fn shard(&self) -> usize {
        self._lease.shard
    }

    /// The session's fd.
    pub fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// As [`UringNativeAny::read_at`] on the session's fd.
    pub fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> UnboundOp<BufResult<usize, B>> {
        self.lane.read_at(&self.fd, buf, pos)
    }

    /// As [`UringNativeAny::write_at`] on the session's fd.
    pub fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> UnboundOp<BufResult<usize, B>> {
        self.lane.write_at(&self.fd, buf, pos)
    }

    /// As [`UringNativeAny::fsync`] on the session's fd.
    pub fn fsync(&self) -> UnboundOp<io::Result<()>> {
        self.lane.fsync(&self.fd)
    }

    /// As [`UringNativeAny::recv`] on the session's fd (not cancel safe either).
    pub fn recv<B: IoBufMut>(&self, buf: B) -> UnboundOp<BufResult<usize, B>> {
        self.lane.recv(&self.fd, buf)
    }

    /// As [`UringNativeAny::send`] on the session's fd.
    pub fn send<B: IoBuf>(&self, buf: B) -> UnboundOp<BufResult<usize, B>> {
        self.lane.send(&self.fd, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::pick;

    fn loads(l: &'static [u64]) -> impl Fn(usize) -> u64 {
        move |s| l[s]
    }

    #[test]
    fn home_keeps_ties_and_near_ties() {
        assert_eq!(pick(2, loads(&[0, 0]), Some(1), 1), 1);
        assert_eq!(pick(2, loads(&[2, 0]), Some(0), 0), 0);
        assert_eq!(pick(2, loads(&[3, 0]), Some(0), 0), 1);
        // 2 + 80/8 = 12 ops of slack at a load of 80.
        assert_eq!(pick(3, loads(&[92, 80, 85]), Some(0), 0), 0);
        assert_eq!(pick(3, loads(&[93, 80, 85]), Some(0), 0), 1);
    }

    #[test]
    fn without_home_the_least_loaded_wins_first_from_start() {
        assert_eq!(pick(3, loads(&[5, 1, 1]), None, 0), 1);
        assert_eq!(pick(3, loads(&[5, 1, 1]), None, 2), 2);
        assert_eq!(pick(3, loads(&[0, 0, 0]), None, 1), 1);
        assert_eq!(pick(1, loads(&[7]), None, 0), 0);
    }
}
