//! [`TcpSocket`]: a TCP socket configured before it listens or connects.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use spargio_sys::op::Op as _;
use spargio_sys::op::net::{self as ops, SockAddr};

use super::lane::{Lane, Socket, inet};
use super::tcp::{TcpListener, TcpStream};

/// A TCP socket not yet listening or connected, for the options that must
/// be set before (`SO_REUSEADDR`, `SO_REUSEPORT`, buffer sizes, a listen
/// backlog, a local address for an outgoing connection).
///
/// Creating the socket (`socket(2)`, close-on-exec), setting options,
/// `bind` and `listen` are plain system calls that never block; `connect`
/// is `IORING_OP_CONNECT` on the calling shard's ring (on the Queue backend,
/// a blocking `connect` on the blocking pool).
///
/// ```
/// use spargio::net::{TcpSocket, TcpStream};
///
/// # spargio::RuntimeBuilder::new().shards(1).build().unwrap().block_on(async {
/// let socket = TcpSocket::new_v4()?;
/// socket.set_reuseaddr(true)?;
/// socket.set_recv_buffer_size(256 * 1024)?;
/// socket.bind("127.0.0.1:0".parse().unwrap())?;
/// let listener = socket.listen(1024)?;
///
/// let addr = listener.local_addr()?;
/// let client = spargio::spawn(async move { TcpSocket::new_v4()?.connect(addr).await });
/// let (_server_side, peer) = listener.accept().await?;
/// assert_eq!(peer, client.await??.local_addr()?);
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap().unwrap();
/// ```
#[derive(Debug)]
pub struct TcpSocket {
    fd: OwnedFd,
    v6: bool,
}

impl TcpSocket {
    /// A new IPv4 TCP socket (`AF_INET`, `SOCK_STREAM`, close-on-exec).
    ///
    /// # Errors
    ///
    /// The `socket` error (`EMFILE` when out of fds, …).
    pub fn new_v4() -> io::Result<TcpSocket> {
        TcpSocket::open(false)
    }

    /// A new IPv6 TCP socket (`AF_INET6`, `SOCK_STREAM`, close-on-exec).
    ///
    /// # Errors
    ///
    /// The `socket` error (`EAFNOSUPPORT` where IPv6 is disabled, `EMFILE`, …).
    pub fn new_v6() -> io::Result<TcpSocket> {
        TcpSocket::open(true)
    }

    fn open(v6: bool) -> io::Result<TcpSocket> {
        let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        let mut op = ops::Socket::new(domain, libc::SOCK_STREAM, 0);
        let res = op.run_blocking();
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        let fd = op
            .into_fd()
            .ok_or_else(|| io::Error::other("socket(2) succeeded without an fd"))?;
        Ok(TcpSocket { fd, v6 })
    }

    /// Sets `SO_REUSEADDR`: bind a listening address again while
    /// connections of an earlier listener linger in `TIME_WAIT`.
    ///
    /// # Errors
    ///
    /// The `setsockopt` error.
    pub fn set_reuseaddr(&self, on: bool) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_REUSEADDR, i32::from(on))
    }

    /// Whether `SO_REUSEADDR` is set.
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn reuseaddr(&self) -> io::Result<bool> {
        Ok(self.get(libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0)
    }

    /// Sets `SO_REUSEPORT`: several sockets of this user (one per shard, say)
    /// may bind the same address and port; the kernel spreads incoming
    /// connections over the listening ones.
    ///
    /// # Errors
    ///
    /// The `setsockopt` error.
    pub fn set_reuseport(&self, on: bool) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_REUSEPORT, i32::from(on))
    }

    /// Whether `SO_REUSEPORT` is set.
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn reuseport(&self) -> io::Result<bool> {
        Ok(self.get(libc::SOL_SOCKET, libc::SO_REUSEPORT)? != 0)
    }

    /// Sets `SO_SNDBUF`. The kernel doubles the value (for its bookkeeping)
    /// and bounds it by `net.core.wmem_max`, so
    /// [`send_buffer_size`](Self::send_buffer_size) reads back a different number.
    ///
    /// # Errors
    ///
    /// `InvalidInput` above `i32::MAX`; the `setsockopt` error.
    pub fn set_send_buffer_size(&self, size: u32) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_SNDBUF, buffer_size(size)?)
    }

    /// `SO_SNDBUF` as the kernel holds it.
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn send_buffer_size(&self) -> io::Result<u32> {
        Ok(self.get(libc::SOL_SOCKET, libc::SO_SNDBUF)?.max(0) as u32)
    }

    /// Sets `SO_RCVBUF` (doubled and bounded by `net.core.rmem_max`, as for
    /// [`set_send_buffer_size`](Self::set_send_buffer_size)).
    ///
    /// # Errors
    ///
    /// `InvalidInput` above `i32::MAX`; the `setsockopt` error.
    pub fn set_recv_buffer_size(&self, size: u32) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_RCVBUF, buffer_size(size)?)
    }

    /// `SO_RCVBUF` as the kernel holds it.
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn recv_buffer_size(&self) -> io::Result<u32> {
        Ok(self.get(libc::SOL_SOCKET, libc::SO_RCVBUF)?.max(0) as u32)
    }

    /// Sets `TCP_NODELAY` (no Nagle delay) on the socket, and so on the
    /// stream [`connect`](Self::connect) gives.
    ///
    /// # Errors
    ///
    /// The `setsockopt` error.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, i32::from(on))
    }

    /// Binds the socket to `addr` (port 0 picks a free port).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an address of the other IP version than the
    /// socket's; the `bind` error (`AddrInUse`, `PermissionDenied`, an
    /// already bound socket's `InvalidInput`).
    pub fn bind(&self, addr: SocketAddr) -> io::Result<()> {
        self.check_family(&addr, "bind")?;
        ops::bind(self.fd.as_fd(), &SockAddr::from_inet(addr))
    }

    /// The address the socket is bound to (`0.0.0.0:0` before `bind`).
    ///
    /// # Errors
    ///
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(ops::local_addr(self.fd.as_fd())?)
    }

    /// Starts listening, with room for `backlog` connections waiting to be
    /// accepted (the kernel caps it at `net.core.somaxconn`; above
    /// `i32::MAX` counts as `i32::MAX`). An unbound socket gets a free port.
    ///
    /// # Errors
    ///
    /// The `listen` error.
    pub fn listen(self, backlog: u32) -> io::Result<TcpListener> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        ops::listen(self.fd.as_fd(), backlog)?;
        Ok(TcpListener::from_socket(Socket::new(self.fd, Lane::current())))
    }

    /// Connects to `addr` (`IORING_OP_CONNECT`) and gives the stream. Takes
    /// an address, not a name: resolve names with
    /// [`lookup_host`](super::lookup_host).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an address of the other IP version than the
    /// socket's; `ConnectionRefused`, `TimedOut`, `NetworkUnreachable`, …;
    /// an error outside a spargio runtime or after shutdown began. The
    /// socket is closed on error.
    pub async fn connect(self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.check_family(&addr, "connect")?;
        let sock = Socket::new(self.fd, Lane::current());
        sock.connect(SockAddr::from_inet(addr)).await?;
        Ok(TcpStream::from_socket(sock))
    }

    fn check_family(&self, addr: &SocketAddr, what: &str) -> io::Result<()> {
        if addr.is_ipv6() == self.v6 {
            return Ok(());
        }
        let (socket, address) = if self.v6 {
            ("IPv6", "IPv4")
        } else {
            ("IPv4", "IPv6")
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TcpSocket::{what}: an {address} address ({addr}) on an {socket} socket"),
        ))
    }

    fn set(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        ops::set_int_option(self.fd.as_fd(), level, name, value)
    }

    fn get(&self, level: i32, name: i32) -> io::Result<i32> {
        ops::int_option(self.fd.as_fd(), level, name)
    }
}

fn buffer_size(size: u32) -> io::Result<i32> {
    i32::try_from(size).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a socket buffer size of {size} bytes is above i32::MAX"),
        )
    })
}

impl AsFd for TcpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TcpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<TcpSocket> for OwnedFd {
    fn from(socket: TcpSocket) -> OwnedFd {
        socket.fd
    }
}
