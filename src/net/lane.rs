//! Where a socket's ops are submitted, and running one op to completion.
//!
//! A socket is either *unbound* (its ops go to the ring of the shard whose
//! task calls it) or *bound* to one shard (its ops are steered to that shard's
//! ring from any thread, e.g. a connection handed to a shard by
//! [`TcpListener::accept_round_robin`](super::TcpListener::accept_round_robin)).
//!
//! On the Queue backend an op waits for readiness on its shard (see
//! `driver::epoll`), or runs as a blocking call on the blocking pool, and cannot be
//! cancelled by `ASYNC_CANCEL`; [`run_op`] gives such ops a [`CancelFlag`]
//! that it sets when the waiting future is dropped, so neither a pool thread
//! nor a readiness retry receives data nobody waits for.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use spargio_sys::Cqe;
use spargio_sys::op::Op;
use spargio_sys::op::fs::SharedFd;
use spargio_sys::op::net::{self as ops, CancelFlag};

use super::stash::RecvStash;
use crate::io::{OpFuture, submit, submit_current};
use crate::runtime::{RuntimeHandle, Shared};
use crate::{RuntimeError, shard};

/// Where a socket's ops go: the calling shard, or one chosen shard.
#[derive(Clone, Default)]
pub(crate) struct Lane {
    bound: Option<(Arc<Shared>, usize)>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.bound {
            Some((_, shard)) => write!(f, "Lane(shard {shard})"),
            None => write!(f, "Lane(calling shard)"),
        }
    }
}

impl Lane {
    /// Ops go to the calling task's shard.
    pub(crate) fn current() -> Lane {
        Lane { bound: None }
    }

    /// Ops go to `shard` of `rt`.
    pub(crate) fn bound(rt: Arc<Shared>, shard: usize) -> Lane {
        Lane {
            bound: Some((rt, shard)),
        }
    }

    /// Binds to `shard` of `handle`'s runtime.
    pub(crate) fn bind(handle: &RuntimeHandle, shard: usize) -> Result<Lane, RuntimeError> {
        if shard >= handle.shard_count() {
            return Err(RuntimeError::NoSuchShard(shard));
        }
        Ok(Lane::bound(handle.shared.clone(), shard))
    }

    /// The shard ops are steered to, if bound.
    pub(crate) fn shard(&self) -> Option<usize> {
        self.bound.as_ref().map(|(_, s)| *s)
    }

    /// The runtime and shard the next op would go to: the bound ones, or the
    /// calling shard's.
    pub(crate) fn target(&self) -> Option<(Arc<Shared>, usize)> {
        match &self.bound {
            Some((rt, s)) => Some((rt.clone(), *s)),
            None => shard::with_local(|l| (l.shared.clone(), l.shard)),
        }
    }

    fn may_block(&self) -> bool {
        match &self.bound {
            Some((rt, _)) => rt.backend.may_block_socket_ops(),
            None => shard::with_local(|l| l.shared.backend.may_block_socket_ops()).unwrap_or(false),
        }
    }

    /// True when this lane's ops go to an io_uring ring (so opcodes the
    /// kernel's probe lists can be used).
    pub(crate) fn has_rings(&self) -> bool {
        match &self.bound {
            Some((rt, _)) => rt.backend.has_rings(),
            None => shard::with_local(|l| l.shared.backend.has_rings()).unwrap_or(false),
        }
    }

    /// Submits `op` on this lane's ring.
    pub(crate) fn submit<O: Op>(&self, op: O) -> Result<OpFuture<O>, (io::Error, O)> {
        match &self.bound {
            Some((rt, shard)) => submit(rt, Some(*shard), op),
            None => submit_current(op),
        }
    }

    /// A cancel flag for an op about to be submitted, on the Queue backend only.
    pub(crate) fn cancel_flag(&self) -> Option<CancelFlag> {
        self.may_block().then(CancelFlag::default)
    }
}

/// Ops whose blocking form can be told to give up.
pub(crate) trait Cancellable: Op + Sized {
    fn with_cancel_flag(self, flag: CancelFlag) -> Self;
}

macro_rules! cancellable {
    ($($ty:ty),* $(,)?) => {$(
        impl Cancellable for $ty {
            fn with_cancel_flag(self, flag: CancelFlag) -> Self {
                self.cancel_flag(flag)
            }
        }
    )*};
}

cancellable!(ops::Accept, ops::RecvMulti);

impl<B: crate::io::IoBuf> Cancellable for ops::Send<B> {
    fn with_cancel_flag(self, flag: CancelFlag) -> Self {
        self.cancel_flag(flag)
    }
}

impl<B: crate::io::IoBuf> Cancellable for ops::SendZc<B> {
    fn with_cancel_flag(self, flag: CancelFlag) -> Self {
        self.cancel_flag(flag)
    }
}

impl<B: crate::io::IoBufMut> Cancellable for ops::Recv<B> {
    fn with_cancel_flag(self, flag: CancelFlag) -> Self {
        self.cancel_flag(flag)
    }
}

impl<B: crate::io::IoBuf> Cancellable for ops::SendMsg<B> {
    fn with_cancel_flag(self, flag: CancelFlag) -> Self {
        self.cancel_flag(flag)
    }
}

impl<B: crate::io::IoBufMut> Cancellable for ops::RecvMsg<B> {
    fn with_cancel_flag(self, flag: CancelFlag) -> Self {
        self.cancel_flag(flag)
    }
}

/// Sets a cancel flag when dropped while armed.
pub(crate) struct CancelOnDrop(pub(crate) Option<CancelFlag>);

impl CancelOnDrop {
    /// The op completed: dropping no longer cancels anything.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            // Relaxed: the flag carries no data; the pool thread polls it.
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Submits `op` on `lane` and waits for its final completion.
///
/// # Errors
///
/// The op comes back with the error when it could not be submitted (outside
/// a runtime, or after shutdown began).
pub(crate) async fn run_op<O: Cancellable>(lane: &Lane, op: O) -> Result<(Cqe, O), (io::Error, O)> {
    let flag = lane.cancel_flag();
    let op = match &flag {
        Some(f) => op.with_cancel_flag(f.clone()),
        None => op,
    };
    let fut = lane.submit(op)?;
    let mut guard = CancelOnDrop(flag);
    let out = fut.await;
    guard.disarm();
    Ok(out)
}

/// Submits an op that needs no cancel flag (it does not block for long) and
/// waits for it.
///
/// # Errors
///
/// As [`run_op`].
pub(crate) async fn run_plain<O: Op>(lane: &Lane, op: O) -> Result<(Cqe, O), (io::Error, O)> {
    Ok(lane.submit(op)?.await)
}

/// A socket fd with the lane its ops use and the stash of its dropped
/// receives (shared by every handle on the socket).
#[derive(Clone, Debug)]
pub(crate) struct Socket {
    pub(crate) fd: SharedFd,
    pub(crate) lane: Lane,
    pub(crate) stash: Arc<RecvStash>,
}

impl Socket {
    pub(crate) fn new(fd: OwnedFd, lane: Lane) -> Socket {
        Socket {
            fd: Arc::new(fd),
            lane,
            stash: RecvStash::new(),
        }
    }

    /// The same socket, its ops going to `lane`.
    pub(crate) fn with_lane(self, lane: Lane) -> Socket {
        Socket { lane, ..self }
    }

    /// The fd alone, unless an op, another handle, or data that dropped
    /// receives left in the stash still needs the socket.
    pub(crate) fn try_into_fd(self) -> Result<OwnedFd, Socket> {
        if self.stash.is_busy() {
            return Err(self);
        }
        let Socket { fd, lane, stash } = self;
        Arc::try_unwrap(fd).map_err(|fd| Socket { fd, lane, stash })
    }

    pub(crate) fn borrow(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens a socket with `IORING_OP_SOCKET` (`SOCK_CLOEXEC`), falling back to
    /// `socket(2)` on kernels without the opcode (it never blocks).
    pub(crate) async fn open(domain: i32, ty: i32) -> io::Result<OwnedFd> {
        let lane = Lane::current();
        let op = ops::Socket::new(domain, ty, 0);
        let (cqe, op) = run_plain(&lane, op).await.map_err(|(e, _)| e)?;
        match cqe.res {
            res if res == -libc::EINVAL || res == -libc::EOPNOTSUPP => {
                let mut op = op;
                let res = op.run_blocking();
                if res < 0 {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                op.into_fd()
                    .ok_or_else(|| io::Error::other("socket(2) returned no fd"))
            }
            _ => crate::io::created_fd(&cqe, op.into_fd()),
        }
    }

    /// Connects with `IORING_OP_CONNECT`.
    pub(crate) async fn connect(&self, addr: ops::SockAddr) -> io::Result<()> {
        let (cqe, _) = run_plain(&self.lane, ops::Connect::new(self.fd.clone(), addr))
            .await
            .map_err(|(e, _)| e)?;
        cqe.result().map(drop)
    }

    /// Shuts down one or both directions with `IORING_OP_SHUTDOWN`.
    pub(crate) async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        let (cqe, _) = run_plain(&self.lane, ops::Shutdown::new(self.fd.clone(), how))
            .await
            .map_err(|(e, _)| e)?;
        cqe.result().map(drop)
    }

    /// The address the socket is bound to.
    pub(crate) fn local(&self) -> io::Result<ops::SockAddr> {
        ops::local_addr(self.borrow())
    }

    /// The connected peer's address.
    pub(crate) fn peer(&self) -> io::Result<ops::SockAddr> {
        ops::peer_addr(self.borrow())
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        let e = ops::int_option(self.borrow(), libc::SOL_SOCKET, libc::SO_ERROR)?;
        Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
    }
}

/// The IP form of an address the kernel reported for an IP socket.
pub(crate) fn inet(addr: ops::SockAddr) -> io::Result<std::net::SocketAddr> {
    addr.to_inet()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an IP address: {addr:?}")))
}
