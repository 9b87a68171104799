//! TCP: [`TcpListener`], [`TcpStream`], [`Incoming`] and the split halves.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use spargio_sys::op::net::{self as ops, Accept, CancelFlag, SockAddr};

use super::bufpool::{DEFAULT_BUFFER_LEN, DEFAULT_BUFFERS, RecvStream};
use super::conn::stream_io_methods;
use super::lane::{CancelOnDrop, Lane, Socket, inet, run_op};
use crate::io::{MultishotEvent, OpFuture};
use crate::{RuntimeError, RuntimeHandle};

fn domain_of(addr: &SocketAddr) -> i32 {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

fn not_in_runtime() -> io::Error {
    io::Error::other("spargio networking must run inside a spargio runtime task")
}

/// A TCP socket listening for connections; accepts run on io_uring.
///
/// ```
/// use spargio::net::{TcpListener, TcpStream};
///
/// spargio::run(|_| async {
///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
///     let addr = listener.local_addr()?;
///     let client = spargio::RuntimeHandle::current()
///         .unwrap()
///         .spawn_stealable(async move { TcpStream::connect(addr).await })
///         .unwrap();
///     let (server_side, _peer) = listener.accept().await?;
///     let client = client.await.unwrap()?;
///     client.write_all(b"ping".to_vec()).await.0?;
///     let (res, buf) = server_side.read_exact(vec![0u8; 4]).await;
///     res?;
///     assert_eq!(buf, b"ping");
///     Ok::<_, std::io::Error>(())
/// })
/// .unwrap()
/// .unwrap();
/// ```
#[derive(Debug)]
pub struct TcpListener {
    sock: Socket,
}

impl TcpListener {
    /// Binds a listener to `addr` (port 0 picks a free port). The socket is
    /// close-on-exec. Binding does not block, so it is a plain call.
    ///
    /// # Errors
    ///
    /// The `bind`/`listen` error (`AddrInUse`, `PermissionDenied`, …).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(std::net::TcpListener::bind(addr)?)
    }

    /// A listener on a socket already listening (from [`TcpSocket::listen`](super::TcpSocket::listen)).
    pub(crate) fn from_socket(sock: Socket) -> TcpListener {
        TcpListener { sock }
    }

    /// Wraps a `std` listener (it is switched to blocking mode, which io_uring
    /// handles without blocking a shard).
    ///
    /// # Errors
    ///
    /// The error of clearing `O_NONBLOCK`.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(false)?;
        Ok(TcpListener {
            sock: Socket::new(OwnedFd::from(listener), Lane::current()),
        })
    }

    /// Gives back a `std` listener, in blocking mode.
    ///
    /// # Errors
    ///
    /// Gives `self` back while an op (an accept, an [`Incoming`] still armed)
    /// uses the fd.
    pub fn into_std(self) -> Result<std::net::TcpListener, TcpListener> {
        match self.sock.try_into_fd() {
            Ok(fd) => {
                let listener = std::net::TcpListener::from(fd);
                // The Queue backend's non-blocking accepts leave `O_NONBLOCK`
                // set; clearing a flag on an fd we own cannot fail.
                let _ = listener.set_nonblocking(false);
                Ok(listener)
            }
            Err(sock) => Err(TcpListener { sock }),
        }
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.local()?)
    }

    /// Accepts one connection (`IORING_OP_ACCEPT`, `SOCK_CLOEXEC`) on the
    /// calling shard's ring.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a connection that a dropped accept already took is
    /// closed (the peer sees its connection end). Use [`incoming`](Self::incoming),
    /// whose [`Incoming::next`] is cancel safe, where accepts race with other
    /// events.
    ///
    /// # Errors
    ///
    /// The `accept4` error, e.g. `EMFILE` when the process is out of fds (the
    /// listener stays usable: accept again once fds are free); an error
    /// outside a spargio runtime or after shutdown began.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, peer) = accept_one(&self.sock).await?;
        Ok((TcpStream::from_fd(fd, Lane::current()), inet(peer)?))
    }

    /// Accepts one connection and binds it to the next shard in turn: its ops
    /// are steered to that shard's ring from wherever they are called. Returns
    /// the shard, so the caller can spawn the connection's handler there.
    /// Not cancel safe, as [`accept`](Self::accept).
    ///
    /// ```no_run
    /// # async fn serve(listener: spargio::net::TcpListener) -> std::io::Result<()> {
    /// let handle = spargio::RuntimeHandle::current().unwrap();
    /// loop {
    ///     let (stream, _peer, shard) = listener.accept_round_robin().await?;
    ///     handle.spawn_pinned(shard, async move {
    ///         let (res, buf) = stream.recv(Vec::with_capacity(1024)).await;
    ///         if let Ok(n) = res { let _ = stream.write_all(buf[..n].to_vec()).await; }
    ///     }).unwrap();
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`TcpListener::accept`].
    pub async fn accept_round_robin(&self) -> io::Result<(TcpStream, SocketAddr, usize)> {
        let handle = RuntimeHandle::current().ok_or_else(not_in_runtime)?;
        let (fd, peer) = accept_one(&self.sock).await?;
        let shard = handle.shared.next_round_robin();
        let lane = Lane::bind(&handle, shard).map_err(io::Error::other)?;
        Ok((TcpStream::from_fd(fd, lane), inet(peer)?, shard))
    }

    /// A stream of connections from one multishot accept
    /// (`IORING_ACCEPT_MULTISHOT`): one submission for many connections.
    pub fn incoming(&self) -> Incoming {
        Incoming::new(self.sock.clone())
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.raw()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.borrow()
    }
}

/// One single-shot accept; the new fd and the peer address.
pub(crate) async fn accept_one(sock: &Socket) -> io::Result<(OwnedFd, SockAddr)> {
    let (cqe, op) = run_op(&sock.lane, Accept::new(sock.fd.clone()))
        .await
        .map_err(|(e, _)| e)?;
    let addr = op.peer_addr().unwrap_or_else(SockAddr::empty);
    Ok((crate::io::created_fd(&cqe, op.into_fd())?, addr))
}

/// Connections from a multishot accept; see [`TcpListener::incoming`] and
/// [`UnixListener::incoming`](super::UnixListener::incoming).
///
/// When the multishot accept ends (an error such as `EMFILE`, or the kernel
/// stopping it), [`next`](Self::next) reports the error, if any, and the next
/// call arms a new one. Dropping it cancels the accept and closes the
/// connections it accepted that no call took.
pub struct Incoming {
    sock: Socket,
    op: Option<OpFuture<Accept>>,
    cancel: CancelOnDrop,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("fd", &self.sock.raw())
            .field("armed", &self.op.is_some())
            .finish()
    }
}

impl Incoming {
    pub(crate) fn new(sock: Socket) -> Incoming {
        Incoming {
            sock,
            op: None,
            cancel: CancelOnDrop(None),
        }
    }

    /// The next accepted connection's fd.
    pub(crate) async fn next_fd(&mut self) -> io::Result<OwnedFd> {
        poll_fn(|cx| self.poll_next_fd(cx)).await
    }

    /// The next connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: connections stay queued in the `Incoming` until a call
    /// takes them.
    ///
    /// # Errors
    ///
    /// The accept error (`EMFILE`, …; the next call re-arms the accept); an
    /// error outside a spargio runtime or after shutdown began.
    pub async fn next(&mut self) -> io::Result<TcpStream> {
        Ok(TcpStream::from_fd(self.next_fd().await?, Lane::current()))
    }

    fn poll_next_fd(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedFd>> {
        let fut = match &mut self.op {
            Some(fut) => fut,
            None => {
                let flag = self.sock.lane.cancel_flag();
                let mut op = Accept::multishot(self.sock.fd.clone());
                if let Some(f) = &flag {
                    op = op.cancel_flag(CancelFlag::clone(f));
                }
                match self.sock.lane.submit(op) {
                    Ok(fut) => {
                        self.cancel = CancelOnDrop(flag);
                        self.op.insert(fut)
                    }
                    Err((e, _)) => return Poll::Ready(Err(e)),
                }
            }
        };
        match fut.poll_multishot(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(MultishotEvent::More(mut event)) => {
                let fd = event.take_fd();
                Poll::Ready(crate::io::created_fd(event.cqe(), fd))
            }
            Poll::Ready(MultishotEvent::Done(cqe, op)) => {
                // The multishot accept ended: report its last result; the next call re-arms.
                self.op = None;
                self.cancel.disarm();
                Poll::Ready(crate::io::created_fd(&cqe, op.into_fd()))
            }
        }
    }
}

/// A TCP connection whose sends and receives run on io_uring with owned
/// buffers.
///
/// Every method takes `&self`, so one task may send while another receives;
/// [`TcpStream::into_split`] gives owned halves for that. The fd is
/// close-on-exec and is closed when the stream (and every op still using it)
/// is gone.
#[derive(Debug)]
pub struct TcpStream {
    sock: Socket,
}

impl TcpStream {
    pub(crate) fn from_fd(fd: OwnedFd, lane: Lane) -> TcpStream {
        TcpStream {
            sock: Socket::new(fd, lane),
        }
    }

    /// A stream on a connected socket (from [`TcpSocket::connect`](super::TcpSocket::connect)).
    pub(crate) fn from_socket(sock: Socket) -> TcpStream {
        TcpStream { sock }
    }

    /// The socket, for [`compat::Io`](crate::compat::Io).
    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Connects to `addr` with `IORING_OP_SOCKET` + `IORING_OP_CONNECT`. Takes
    /// an address, not a name: resolve names with [`lookup_host`](super::lookup_host),
    /// which does not block a shard.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused`, `TimedOut`, `NetworkUnreachable`, …; `EMFILE` when
    /// out of fds; an error outside a spargio runtime or after shutdown began.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let fd = Socket::open(domain_of(&addr), libc::SOCK_STREAM).await?;
        let stream = TcpStream::from_fd(fd, Lane::current());
        stream.sock.connect(SockAddr::from_inet(addr)).await?;
        Ok(stream)
    }

    /// Wraps a connected `std` stream (switched to blocking mode, which
    /// io_uring handles without blocking a shard).
    ///
    /// # Errors
    ///
    /// The error of clearing `O_NONBLOCK`.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(false)?;
        Ok(TcpStream::from_fd(OwnedFd::from(stream), Lane::current()))
    }

    /// Gives back a `std` stream.
    ///
    /// # Errors
    ///
    /// Gives `self` back while an op or a split half still uses the fd, and
    /// while bytes that a dropped receive took wait to be received (see
    /// [`recv`](Self::recv)'s cancel safety): receive them first.
    pub fn into_std(self) -> Result<std::net::TcpStream, TcpStream> {
        match self.sock.try_into_fd() {
            Ok(fd) => Ok(std::net::TcpStream::from(fd)),
            Err(sock) => Err(TcpStream { sock }),
        }
    }

    /// Steers this stream's ops to `shard`'s ring, from any thread or task.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NoSuchShard`] for an index out of range.
    pub fn bind_to_shard(self, handle: &RuntimeHandle, shard: usize) -> Result<TcpStream, RuntimeError> {
        let lane = Lane::bind(handle, shard)?;
        Ok(TcpStream {
            sock: self.sock.with_lane(lane),
        })
    }

    /// The shard whose ring runs this stream's ops, if it is bound to one;
    /// `None` means "the calling task's shard".
    pub fn shard(&self) -> Option<usize> {
        self.sock.lane.shard()
    }

    stream_io_methods!();

    /// A receiver that keeps one multishot receive with provided buffers
    /// armed (see [`RecvStream`]); 16 buffers of 16 KiB.
    pub fn recv_stream(&self) -> RecvStream {
        self.recv_stream_with(DEFAULT_BUFFERS, DEFAULT_BUFFER_LEN)
    }

    /// As [`TcpStream::recv_stream`], with `buffers` (a power of two up to
    /// 32768) buffers of `buf_len` bytes.
    pub fn recv_stream_with(&self, buffers: u16, buf_len: u32) -> RecvStream {
        RecvStream::new(self.sock.clone(), buffers, buf_len)
    }

    /// Shuts down reading, writing or both (`IORING_OP_SHUTDOWN`). After
    /// `Write`, the peer's receives return 0 while this side can still
    /// receive.
    ///
    /// # Errors
    ///
    /// `NotConnected` when the connection is gone.
    pub async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.sock.shutdown(how).await
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    ///
    /// The `setsockopt` error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        ops::set_int_option(
            self.sock.borrow(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            i32::from(on),
        )
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(ops::int_option(self.sock.borrow(), libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// `NotConnected` once the connection is gone.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.peer()?)
    }

    /// This end's address.
    ///
    /// # Errors
    ///
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.local()?)
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.take_error()
    }

    /// Sends `buf`'s initialized bytes without copying them into the kernel
    /// (`IORING_OP_SEND_ZC`), and gives the buffer back with the count sent,
    /// which may be short, once the kernel no longer reads it.
    ///
    /// The kernel answers a zero-copy send twice: the count sent, then a
    /// notification when the network stack is done with the buffer's pages.
    /// This future resolves after the notification, so the buffer it gives
    /// back is free to reuse. For TCP the kernel releases the buffer once the
    /// peer has acknowledged the bytes, so the future takes a round trip
    /// longer than [`send`](Self::send) (and waits while the peer reads
    /// nothing); pipeline several buffers to keep the link busy. If the
    /// future is dropped before the notification, the runtime keeps the
    /// buffer until it arrives.
    ///
    /// Zero-copy pays off for large buffers (tens of KiB and up) sent to
    /// another host; it pins pages and costs a second completion, so small
    /// sends are better off with [`send`](Self::send). To a peer on the same
    /// host (loopback) the kernel copies anyway. Where zero-copy is not
    /// available (kernels before 6.0, the Queue backend) this is a plain
    /// [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// ```
    /// use spargio::net::{TcpListener, TcpStream};
    ///
    /// spargio::run(|handle| async move {
    ///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let client = TcpStream::connect(addr).await.unwrap();
    ///     let (server, _) = listener.accept().await.unwrap();
    ///     // The peer must read: the buffer comes back once it acknowledged the bytes.
    ///     let reader = handle
    ///         .spawn_stealable(async move { server.read_exact(vec![0u8; 1 << 20]).await })
    ///         .unwrap();
    ///     let (res, buf) = client.write_all_zc(vec![7u8; 1 << 20]).await;
    ///     res.unwrap();
    ///     assert_eq!(buf.len(), 1 << 20);
    ///     let (res, got) = reader.await.unwrap();
    ///     res.unwrap();
    ///     assert!(got.iter().all(|&b| b == 7));
    /// })
    /// .unwrap();
    /// ```
    pub async fn send_zc<B: crate::io::IoBuf>(&self, buf: B) -> crate::io::BufResult<usize, B> {
        super::conn::send_zc(&self.sock, buf).await
    }

    /// Sends all of `buf`'s initialized bytes with [`send_zc`](Self::send_zc),
    /// looping over short sends.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: when dropped, part of `buf` may have been sent.
    ///
    /// # Errors
    ///
    /// The first send error; `WriteZero` if the kernel accepted nothing.
    pub async fn write_all_zc<B: crate::io::IoBuf>(&self, buf: B) -> crate::io::BufResult<(), B> {
        super::conn::write_all_zc(&self.sock, buf).await
    }

    /// Splits into a receiving and a sending half that different tasks can own.
    /// Dropping the sending half shuts down the sending direction.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                sock: self.sock.clone(),
            },
            OwnedWriteHalf {
                sock: self.sock,
                shutdown_on_drop: true,
            },
        )
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.raw()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.borrow()
    }
}

/// The receiving half of a [`TcpStream`] (from [`TcpStream::into_split`]).
#[derive(Debug)]
pub struct OwnedReadHalf {
    sock: Socket,
}

impl OwnedReadHalf {
    /// The socket, for [`compat::Io`](crate::compat::Io).
    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Receives into `buf`, from its start up to its capacity; `Ok(0)` means
    /// the peer closed its sending side.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`TcpStream::recv`]: bytes a dropped receive took are
    /// returned first by the next receive on either half or the stream.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::recv`].
    pub async fn recv<B: crate::io::IoBufMut>(&self, buf: B) -> crate::io::BufResult<usize, B> {
        super::conn::recv(&self.sock, buf).await
    }

    /// Fills `buf` completely.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`TcpStream::read_exact`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::read_exact`].
    pub async fn read_exact<B: crate::io::IoBufMut>(&self, buf: B) -> crate::io::BufResult<(), B> {
        super::conn::read_exact(&self.sock, buf).await
    }

    /// A multishot receiver; see [`TcpStream::recv_stream`].
    pub fn recv_stream(&self) -> RecvStream {
        RecvStream::new(self.sock.clone(), DEFAULT_BUFFERS, DEFAULT_BUFFER_LEN)
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.peer()?)
    }

    /// Puts the halves back together.
    ///
    /// # Errors
    ///
    /// Gives both halves back when they come from different streams.
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<TcpStream, (OwnedReadHalf, OwnedWriteHalf)> {
        if Arc::ptr_eq(&self.sock.fd, &other.sock.fd) {
            let mut other = other;
            other.shutdown_on_drop = false;
            Ok(TcpStream { sock: self.sock })
        } else {
            Err((self, other))
        }
    }
}

/// The sending half of a [`TcpStream`] (from [`TcpStream::into_split`]).
/// Dropping it shuts down the sending direction (the peer then reads 0).
#[derive(Debug)]
pub struct OwnedWriteHalf {
    sock: Socket,
    shutdown_on_drop: bool,
}

impl OwnedWriteHalf {
    /// The socket, for [`compat::Io`](crate::compat::Io).
    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Sends `buf`'s initialized bytes; the count may be short.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`TcpStream::send`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::send`].
    pub async fn send<B: crate::io::IoBuf>(&self, buf: B) -> crate::io::BufResult<usize, B> {
        super::conn::send(&self.sock, buf).await
    }

    /// Sends all of `buf`'s initialized bytes.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`TcpStream::write_all`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::write_all`].
    pub async fn write_all<B: crate::io::IoBuf>(&self, buf: B) -> crate::io::BufResult<(), B> {
        super::conn::write_all(&self.sock, buf).await
    }

    /// Sends `buf`'s initialized bytes without copying them into the kernel;
    /// see [`TcpStream::send_zc`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`TcpStream::send`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::send`].
    pub async fn send_zc<B: crate::io::IoBuf>(&self, buf: B) -> crate::io::BufResult<usize, B> {
        super::conn::send_zc(&self.sock, buf).await
    }

    /// Sends all of `buf`'s initialized bytes with [`send_zc`](Self::send_zc).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`TcpStream::write_all`].
    ///
    /// # Errors
    ///
    /// As [`TcpStream::write_all_zc`].
    pub async fn write_all_zc<B: crate::io::IoBuf>(&self, buf: B) -> crate::io::BufResult<(), B> {
        super::conn::write_all_zc(&self.sock, buf).await
    }

    /// Shuts down the sending direction now.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::shutdown`].
    pub async fn shutdown(&self) -> io::Result<()> {
        self.sock.shutdown(std::net::Shutdown::Write).await
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.peer()?)
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // shutdown(2) never blocks; the connection may already be gone.
            let _ = ops::shutdown_now(self.sock.borrow(), libc::SHUT_WR);
        }
    }
}
