//! Unix-domain sockets: [`UnixListener`], [`UnixStream`], [`UnixDatagram`].

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr;
use std::path::Path;

use spargio_sys::op::net::{self as ops, RecvMsg, Send, SendMsg, SockAddr, UnixAddrKind};

use super::bufpool::{DEFAULT_BUFFER_LEN, DEFAULT_BUFFERS, RecvStream};
use super::conn::stream_io_methods;
use super::lane::{Lane, Socket, run_op};
use super::stash::{self, Taken, run_recv};
use super::tcp::{Incoming, accept_one};
use crate::io::{BufResult, IoBuf, IoBufMut, cqe_result};
use crate::{RuntimeError, RuntimeHandle};

/// The `std` form of a Unix-domain address the kernel reported.
fn unix_addr(addr: &SockAddr) -> io::Result<SocketAddr> {
    match addr.unix() {
        Some(UnixAddrKind::Pathname(p)) => SocketAddr::from_pathname(Path::new(OsStr::from_bytes(p))),
        Some(UnixAddrKind::Abstract(name)) => SocketAddr::from_abstract_name(name),
        // An empty path is std's spelling of an unnamed address.
        Some(UnixAddrKind::Unnamed) | None => SocketAddr::from_pathname(""),
    }
}

fn path_addr(path: &Path) -> io::Result<SockAddr> {
    SockAddr::unix_path(path.as_os_str().as_bytes())
}

/// The kernel's form of a `std` Unix-domain address (for sends and connects).
fn sock_addr(addr: &SocketAddr) -> io::Result<SockAddr> {
    if let Some(p) = addr.as_pathname() {
        path_addr(p)
    } else if let Some(name) = addr.as_abstract_name() {
        SockAddr::unix_abstract(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot send to or connect to an unnamed unix address",
        ))
    }
}

/// A Unix-domain stream listener; accepts run on io_uring.
#[derive(Debug)]
pub struct UnixListener {
    sock: Socket,
}

impl UnixListener {
    /// Binds to the filesystem path `path` (which must not exist) and listens;
    /// close-on-exec. Binding does not block, so it is a plain call.
    ///
    /// # Errors
    ///
    /// `AddrInUse` when `path` exists; the other `bind`/`listen` errors.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        UnixListener::from_std(std::os::unix::net::UnixListener::bind(path)?)
    }

    /// Binds to any Unix-domain address (e.g. an abstract name).
    ///
    /// # Errors
    ///
    /// As [`UnixListener::bind`].
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixListener> {
        UnixListener::from_std(std::os::unix::net::UnixListener::bind_addr(addr)?)
    }

    /// Wraps a `std` listener (switched to blocking mode).
    ///
    /// # Errors
    ///
    /// The error of clearing `O_NONBLOCK`.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(false)?;
        Ok(UnixListener {
            sock: Socket::new(OwnedFd::from(listener), Lane::current()),
        })
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.sock.local()?)
    }

    /// Accepts one connection (`IORING_OP_ACCEPT`, `SOCK_CLOEXEC`).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`TcpListener::accept`](super::TcpListener::accept).
    ///
    /// # Errors
    ///
    /// The `accept4` error (`EMFILE`, …); an error outside a spargio runtime.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (fd, peer) = accept_one(&self.sock).await?;
        Ok((
            UnixStream {
                sock: Socket::new(fd, Lane::current()),
            },
            unix_addr(&peer)?,
        ))
    }

    /// Connections from one multishot accept.
    pub fn incoming(&self) -> UnixIncoming {
        UnixIncoming {
            inner: Incoming::new(self.sock.clone()),
        }
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.raw()
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.borrow()
    }
}

/// Connections from a multishot accept on a [`UnixListener`].
#[derive(Debug)]
pub struct UnixIncoming {
    inner: Incoming,
}

impl UnixIncoming {
    /// The next connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Incoming::next`](super::Incoming::next).
    ///
    /// # Errors
    ///
    /// As [`Incoming::next`].
    pub async fn next(&mut self) -> io::Result<UnixStream> {
        Ok(UnixStream {
            sock: Socket::new(self.inner.next_fd().await?, Lane::current()),
        })
    }
}

/// A Unix-domain stream connection; sends and receives run on io_uring with
/// owned buffers.
///
/// ```
/// use spargio::net::UnixStream;
///
/// spargio::run(|_| async {
///     let (a, b) = UnixStream::pair()?;
///     a.write_all(b"over unix".to_vec()).await.0?;
///     let (res, buf) = b.read_exact(vec![0u8; 9]).await;
///     res?;
///     assert_eq!(buf, b"over unix");
///     Ok::<_, std::io::Error>(())
/// })
/// .unwrap()
/// .unwrap();
/// ```
#[derive(Debug)]
pub struct UnixStream {
    sock: Socket,
}

impl UnixStream {
    /// Connects to the socket at `path` (`IORING_OP_SOCKET` + `IORING_OP_CONNECT`).
    ///
    /// # Errors
    ///
    /// `NotFound` / `ConnectionRefused` when nothing listens there;
    /// `InvalidInput` for a path longer than 107 bytes; an error outside a runtime.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let addr = path_addr(path.as_ref())?;
        UnixStream::connect_sock_addr(addr).await
    }

    /// Connects to any Unix-domain address (e.g. an abstract name).
    ///
    /// # Errors
    ///
    /// As [`UnixStream::connect`]; `InvalidInput` for an unnamed address.
    pub async fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect_sock_addr(sock_addr(addr)?).await
    }

    async fn connect_sock_addr(addr: SockAddr) -> io::Result<UnixStream> {
        let fd = Socket::open(libc::AF_UNIX, libc::SOCK_STREAM).await?;
        let stream = UnixStream {
            sock: Socket::new(fd, Lane::current()),
        };
        stream.sock.connect(addr).await?;
        Ok(stream)
    }

    /// Two connected streams (`socketpair`, close-on-exec).
    ///
    /// # Errors
    ///
    /// The `socketpair` error (`EMFILE`, …).
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = ops::socket_pair(libc::AF_UNIX, libc::SOCK_STREAM)?;
        Ok((
            UnixStream {
                sock: Socket::new(a, Lane::current()),
            },
            UnixStream {
                sock: Socket::new(b, Lane::current()),
            },
        ))
    }

    /// Wraps a `std` stream (switched to blocking mode).
    ///
    /// # Errors
    ///
    /// The error of clearing `O_NONBLOCK`.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        stream.set_nonblocking(false)?;
        Ok(UnixStream {
            sock: Socket::new(OwnedFd::from(stream), Lane::current()),
        })
    }

    /// Steers this stream's ops to `shard`'s ring, from any thread or task.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::NoSuchShard`] for an index out of range.
    pub fn bind_to_shard(self, handle: &RuntimeHandle, shard: usize) -> Result<UnixStream, RuntimeError> {
        let lane = Lane::bind(handle, shard)?;
        Ok(UnixStream {
            sock: self.sock.with_lane(lane),
        })
    }

    stream_io_methods!();

    /// The socket, for [`compat::Io`](crate::compat::Io).
    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }

    /// A receiver that keeps one multishot receive with provided buffers armed.
    pub fn recv_stream(&self) -> RecvStream {
        RecvStream::new(self.sock.clone(), DEFAULT_BUFFERS, DEFAULT_BUFFER_LEN)
    }

    /// Shuts down reading, writing or both (`IORING_OP_SHUTDOWN`).
    ///
    /// # Errors
    ///
    /// The `shutdown` error.
    pub async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.sock.shutdown(how).await
    }

    /// This end's address.
    ///
    /// # Errors
    ///
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.sock.local()?)
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// The `getpeername` error.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.sock.peer()?)
    }

    /// Splits into halves that different tasks can own (both share the fd;
    /// dropping one does not shut anything down).
    pub fn into_split(self) -> (UnixStream, UnixStream) {
        (
            UnixStream {
                sock: self.sock.clone(),
            },
            UnixStream { sock: self.sock },
        )
    }

    /// Gives back a `std` stream.
    ///
    /// # Errors
    ///
    /// Gives `self` back while an op or another half still uses the fd, and
    /// while bytes that a dropped receive took wait to be received.
    pub fn into_std(self) -> Result<std::os::unix::net::UnixStream, UnixStream> {
        match self.sock.try_into_fd() {
            Ok(fd) => Ok(fd.into()),
            Err(sock) => Err(UnixStream { sock }),
        }
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.raw()
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.borrow()
    }
}

/// A Unix-domain datagram socket.
#[derive(Debug)]
pub struct UnixDatagram {
    sock: Socket,
}

impl UnixDatagram {
    /// Binds to the filesystem path `path`; close-on-exec.
    ///
    /// # Errors
    ///
    /// `AddrInUse` when `path` exists; the other `bind` errors.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::bind(path)?)
    }

    /// An unbound socket (it can send, and receive once connected).
    ///
    /// # Errors
    ///
    /// The `socket` error.
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::unbound()?)
    }

    /// Two connected datagram sockets (`socketpair`, close-on-exec).
    ///
    /// # Errors
    ///
    /// The `socketpair` error.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = ops::socket_pair(libc::AF_UNIX, libc::SOCK_DGRAM)?;
        Ok((
            UnixDatagram {
                sock: Socket::new(a, Lane::current()),
            },
            UnixDatagram {
                sock: Socket::new(b, Lane::current()),
            },
        ))
    }

    /// Wraps a `std` socket (switched to blocking mode).
    ///
    /// # Errors
    ///
    /// The error of clearing `O_NONBLOCK`.
    pub fn from_std(socket: std::os::unix::net::UnixDatagram) -> io::Result<UnixDatagram> {
        socket.set_nonblocking(false)?;
        Ok(UnixDatagram {
            sock: Socket::new(OwnedFd::from(socket), Lane::current()),
        })
    }

    /// Sets the default peer (`IORING_OP_CONNECT`).
    ///
    /// # Errors
    ///
    /// The `connect` error; an error outside a runtime.
    pub async fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.sock.connect(path_addr(path.as_ref())?).await
    }

    /// Sends one datagram to the socket at `path` (`IORING_OP_SENDMSG`).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a send dropped before it completed may still have
    /// sent the datagram (whole; a datagram is never sent in part).
    ///
    /// # Errors
    ///
    /// `NotFound`/`ConnectionRefused` when nothing is bound there; `InvalidInput`
    /// for a path longer than 107 bytes.
    pub async fn send_to<B: IoBuf>(&self, buf: B, path: impl AsRef<Path>) -> BufResult<usize, B> {
        match path_addr(path.as_ref()) {
            Ok(addr) => self.send_to_sock_addr(buf, addr).await,
            Err(e) => (Err(e), buf),
        }
    }

    /// Sends one datagram to any Unix-domain address.
    ///
    /// # Errors
    ///
    /// As [`UnixDatagram::send_to`]; `InvalidInput` for an unnamed address.
    pub async fn send_to_addr<B: IoBuf>(&self, buf: B, addr: &SocketAddr) -> BufResult<usize, B> {
        match sock_addr(addr) {
            Ok(addr) => self.send_to_sock_addr(buf, addr).await,
            Err(e) => (Err(e), buf),
        }
    }

    async fn send_to_sock_addr<B: IoBuf>(&self, buf: B, addr: SockAddr) -> BufResult<usize, B> {
        let op = SendMsg::new(self.sock.fd.clone(), buf, Some(addr), 0);
        match run_op(&self.sock.lane, op).await {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok((cqe, op)) => (cqe_result(&cqe), op.into_buf()),
        }
    }

    /// Receives one datagram and its sender's address (`IORING_OP_RECVMSG`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a datagram that a dropped `recv_from` or [`recv`](Self::recv)
    /// took from the socket is returned by the next `recv_from` or `recv`,
    /// in order, before any datagram still in the socket. `recv` does not
    /// learn a datagram's sender, so one it took is reported by `recv_from`
    /// as coming from the connected peer; on an unconnected socket, as
    /// unnamed.
    ///
    /// # Errors
    ///
    /// The receive error; an error outside a runtime.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        let mut buf = buf;
        if self.sock.stash.is_busy() {
            match stash::take_recv_from(&self.sock, buf).await {
                Taken::Done(res, b) => {
                    let res = res.and_then(|(n, from)| {
                        let from = match from {
                            Some(addr) => unix_addr(&addr)?,
                            None => self.peer_addr().or_else(|_| SocketAddr::from_pathname(""))?,
                        };
                        Ok((n, from))
                    });
                    return (res, b);
                }
                Taken::Empty(b) => buf = b,
            }
        }
        match run_recv(&self.sock, RecvMsg::new(self.sock.fd.clone(), buf, 0)).await {
            Err((e, op)) => (Err(e), op.into_parts().buf),
            Ok((cqe, op)) => match cqe_result(&cqe) {
                Err(e) => (Err(e), op.into_parts().buf),
                Ok(n) => {
                    let out = op.into_parts();
                    (unix_addr(&out.addr).map(|a| (n, a)), out.buf)
                }
            },
        }
    }

    /// Sends one datagram to the connected peer (`IORING_OP_SEND`).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send_to`](Self::send_to).
    ///
    /// # Errors
    ///
    /// `NotConnected` before [`connect`](Self::connect).
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        match run_op(&self.sock.lane, Send::new(self.sock.fd.clone(), buf, 0)).await {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok((cqe, op)) => (cqe_result(&cqe), op.into_buf()),
        }
    }

    /// Receives one datagram (`IORING_OP_RECV`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv_from`](Self::recv_from).
    ///
    /// # Errors
    ///
    /// The receive error.
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        super::conn::recv_message(&self.sock, buf).await
    }

    /// The address the socket is bound to.
    ///
    /// # Errors
    ///
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.sock.local()?)
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// `NotConnected` before [`connect`](Self::connect).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.sock.peer()?)
    }
}

impl AsRawFd for UnixDatagram {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.raw()
    }
}

impl AsFd for UnixDatagram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.borrow()
    }
}
