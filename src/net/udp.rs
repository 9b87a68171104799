//! UDP: [`UdpSocket`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use spargio_sys::op::net::{self as ops, RecvMsg, Send, SendMsg, SockAddr};

use super::lane::{Lane, Socket, inet, run_op};
use super::stash::{self, Taken, run_recv};
use crate::io::{BufResult, IoBuf, IoBufMut, cqe_result};

/// A UDP socket whose datagrams travel through io_uring (`SENDMSG`/`RECVMSG`
/// for addressed datagrams, `SEND`/`RECV` once connected).
///
/// ```
/// use spargio::net::UdpSocket;
///
/// spargio::run(|_| async {
///     let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
///     let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
///     a.send_to(b"hi".to_vec(), b.local_addr()?).await.0?;
///     let (res, buf) = b.recv_from(Vec::with_capacity(16)).await;
///     let (n, from) = res?;
///     assert_eq!((&buf[..n], from), (&b"hi"[..], a.local_addr()?));
///     Ok::<_, std::io::Error>(())
/// })
/// .unwrap()
/// .unwrap();
/// ```
#[derive(Debug)]
pub struct UdpSocket {
    sock: Socket,
}

impl UdpSocket {
    /// Binds a UDP socket to `addr` (port 0 picks a free port); close-on-exec.
    ///
    /// # Errors
    ///
    /// The `bind` error (`AddrInUse`, …).
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Wraps a `std` socket (switched to blocking mode, which io_uring handles
    /// without blocking a shard).
    ///
    /// # Errors
    ///
    /// The error of clearing `O_NONBLOCK`.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(false)?;
        Ok(UdpSocket {
            sock: Socket::new(OwnedFd::from(socket), Lane::current()),
        })
    }

    /// Sets the default peer (`IORING_OP_CONNECT`): [`send`](Self::send) goes
    /// there and only its datagrams are received.
    ///
    /// # Errors
    ///
    /// The `connect` error; an error outside a spargio runtime.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.sock.connect(SockAddr::from_inet(addr)).await
    }

    /// Sends one datagram of `buf`'s initialized bytes to `addr`
    /// (`IORING_OP_SENDMSG`, `MSG_NOSIGNAL`). An empty buffer sends an empty
    /// datagram.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a send dropped before it completed may still have
    /// sent the datagram (whole; a datagram is never sent in part).
    ///
    /// # Errors
    ///
    /// `EMSGSIZE` for a datagram too large; `ConnectionRefused` after an ICMP
    /// port-unreachable for an earlier datagram; an error outside a runtime.
    pub async fn send_to<B: IoBuf>(&self, buf: B, addr: SocketAddr) -> BufResult<usize, B> {
        let op = SendMsg::new(self.sock.fd.clone(), buf, Some(SockAddr::from_inet(addr)), 0);
        match run_op(&self.sock.lane, op).await {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok((cqe, op)) => (cqe_result(&cqe), op.into_buf()),
        }
    }

    /// Receives one datagram into `buf` (from its start, up to its capacity)
    /// and reports its length and sender (`IORING_OP_RECVMSG`). A datagram
    /// longer than the buffer is truncated to it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a datagram that a dropped `recv_from` or [`recv`](Self::recv)
    /// took from the socket is returned by the next `recv_from` or `recv`,
    /// in order, before any datagram still in the socket. `recv` does not
    /// learn a datagram's sender, so one it took is reported by `recv_from`
    /// as coming from the connected peer ([`peer_addr`](Self::peer_addr));
    /// on an unconnected socket, as coming from the unspecified address with
    /// port 0 (`0.0.0.0:0` or `[::]:0`).
    ///
    /// # Errors
    ///
    /// The receive error; an error outside a runtime.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        let mut buf = buf;
        if self.sock.stash.is_busy() {
            match stash::take_recv_from(&self.sock, buf).await {
                Taken::Done(res, b) => return (res.and_then(|(n, from)| Ok((n, self.sender(from)?))), b),
                Taken::Empty(b) => buf = b,
            }
        }
        let op = RecvMsg::new(self.sock.fd.clone(), buf, 0);
        match run_recv(&self.sock, op).await {
            Err((e, op)) => (Err(e), op.into_parts().buf),
            Ok((cqe, op)) => match cqe_result(&cqe) {
                Err(e) => (Err(e), op.into_parts().buf),
                Ok(n) => {
                    let out = op.into_parts();
                    (inet(out.addr).map(|a| (n, a)), out.buf)
                }
            },
        }
    }

    /// The sender of a stashed datagram: its recorded address, else the
    /// connected peer, else the unspecified address of the socket's family.
    fn sender(&self, from: Option<SockAddr>) -> io::Result<SocketAddr> {
        if let Some(addr) = from {
            return inet(addr);
        }
        if let Ok(peer) = self.peer_addr() {
            return Ok(peer);
        }
        let unspecified = match self.local_addr()? {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        Ok(unspecified)
    }

    /// Sends one datagram to the connected peer (`IORING_OP_SEND`).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send_to`](Self::send_to).
    ///
    /// # Errors
    ///
    /// `NotConnected` before [`connect`](Self::connect); as [`send_to`](Self::send_to).
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        match run_op(&self.sock.lane, Send::new(self.sock.fd.clone(), buf, 0)).await {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok((cqe, op)) => (cqe_result(&cqe), op.into_buf()),
        }
    }

    /// Receives one datagram from the connected peer (`IORING_OP_RECV`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv_from`](Self::recv_from).
    ///
    /// # Errors
    ///
    /// As [`recv_from`](Self::recv_from).
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        super::conn::recv_message(&self.sock, buf).await
    }

    /// The address the socket is bound to.
    ///
    /// # Errors
    ///
    /// The `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.local()?)
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// `NotConnected` before [`connect`](Self::connect).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.peer()?)
    }

    /// Allows sending to broadcast addresses (`SO_BROADCAST`).
    ///
    /// # Errors
    ///
    /// The `setsockopt` error.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        ops::set_int_option(
            self.sock.borrow(),
            libc::SOL_SOCKET,
            libc::SO_BROADCAST,
            i32::from(on),
        )
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    ///
    /// # Errors
    ///
    /// The `getsockopt` error.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.take_error()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.raw()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.borrow()
    }
}
