//! Byte-stream I/O shared by TCP and Unix stream sockets and their halves.

use std::io;

use spargio_sys::abi;
use spargio_sys::op::net::{Recv, Send, SendZc};

use super::lane::{Socket, run_op};
use super::stash::{self, Taken, run_recv};
use crate::io::{BufResult, IoBuf, IoBufMut, cqe_result};

/// Receives into `buf` (from its start, up to `bytes_total()`): first what
/// dropped receives left in the socket's stash, then from the kernel.
/// Cancel safe (see [`super::stash`]).
pub(crate) async fn recv<B: IoBufMut>(sock: &Socket, buf: B) -> BufResult<usize, B> {
    if buf.bytes_total() == 0 {
        return (Ok(0), buf);
    }
    recv_message(sock, buf).await
}

/// As [`recv`], also for a buffer without capacity (which on a datagram
/// socket takes one datagram and returns 0).
pub(crate) async fn recv_message<B: IoBufMut>(sock: &Socket, buf: B) -> BufResult<usize, B> {
    let mut buf = buf;
    if sock.stash.is_busy() {
        match stash::take_recv(sock, buf).await {
            Taken::Done(res, b) => return (res, b),
            Taken::Empty(b) => buf = b,
        }
    }
    match run_recv(sock, Recv::new(sock.fd.clone(), buf, 0)).await {
        Err((e, op)) => (Err(e), op.into_buf()),
        Ok((cqe, op)) => {
            let res = cqe_result(&cqe);
            (res, op.into_buf())
        }
    }
}

/// Sends `buf`'s initialized bytes (`MSG_NOSIGNAL`).
pub(crate) async fn send<B: IoBuf>(sock: &Socket, buf: B) -> BufResult<usize, B> {
    if buf.bytes_init() == 0 {
        return (Ok(0), buf);
    }
    match run_op(&sock.lane, Send::new(sock.fd.clone(), buf, 0)).await {
        Err((e, op)) => (Err(e), op.into_buf()),
        Ok((cqe, op)) => (cqe_result(&cqe), op.into_buf()),
    }
}

/// True when `IORING_OP_SEND_ZC` is worth trying on `sock`'s lane: an io_uring
/// backend on a kernel whose probe lists the opcode (6.0+). The Queue backend
/// runs a [`SendZc`] as a plain `send(2)` anyway; this spares it the detection.
fn zero_copy_available(sock: &Socket) -> bool {
    sock.lane.has_rings()
        && spargio_sys::probe::Features::detect().is_ok_and(|f| f.supports(abi::IORING_OP_SEND_ZC))
}

/// Sends `buf`'s initialized bytes with `IORING_OP_SEND_ZC` (`MSG_NOSIGNAL`)
/// and waits for the kernel's notification that it no longer reads `buf`
/// before giving it back. Falls back to a plain send where the kernel has no
/// such op, on the Queue backend, and for a socket that refuses zero-copy
/// (`EOPNOTSUPP`: a Unix socket, say).
pub(crate) async fn send_zc<B: IoBuf>(sock: &Socket, buf: B) -> BufResult<usize, B> {
    if buf.bytes_init() == 0 {
        return (Ok(0), buf);
    }
    if !zero_copy_available(sock) {
        return send(sock, buf).await;
    }
    match run_op(&sock.lane, SendZc::new(sock.fd.clone(), buf, 0)).await {
        Err((e, op)) => (Err(e), op.into_buf()),
        Ok((_, op)) => match op.sent() {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => send(sock, op.into_buf()).await,
            res => (res, op.into_buf()),
        },
    }
}

/// Sends all of `buf`'s initialized bytes with [`send_zc`], looping over short sends.
pub(crate) async fn write_all_zc<B: IoBuf>(sock: &Socket, buf: B) -> BufResult<(), B> {
    crate::io::write_all_with(buf, |rest, _| send_zc(sock, rest)).await
}

/// Fills all `bytes_total()` bytes of `buf`, looping over short receives.
pub(crate) async fn read_exact<B: IoBufMut>(sock: &Socket, buf: B) -> BufResult<(), B> {
    let total = buf.bytes_total();
    let mut done = 0usize;
    let mut buf = buf;
    while done < total {
        let (res, slice) = recv(sock, buf.slice(done..total)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed before the buffer was full",
                );
                return (Err(e), buf);
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// Sends all of `buf`'s initialized bytes, looping over short sends.
pub(crate) async fn write_all<B: IoBuf>(sock: &Socket, buf: B) -> BufResult<(), B> {
    crate::io::write_all_with(buf, |rest, _| send(sock, rest)).await
}

/// Generates the byte-stream methods of a type with a `sock: Socket` field.
macro_rules! stream_io_methods {
    () => {
        /// Receives into `buf`, from its start up to its capacity
        /// (`bytes_total()`), and gives the buffer back with the byte count.
        /// `Ok(0)` means the peer closed its sending side (or `buf` has no
        /// capacity: then nothing is submitted).
        ///
        /// # Cancel safety
        ///
        /// Cancel safe. If the future is dropped (a `timeout`, a `select!`
        /// branch that lost, an aborted task) after the kernel already copied
        /// bytes into `buf`, the stream keeps those bytes and its next receive
        /// (`recv`, `read_exact`, a [`RecvStream`](crate::net::RecvStream), on
        /// this handle or another handle of the same socket) returns them
        /// first, in order. That receive first waits for the dropped one's
        /// cancellation to complete, so it never overtakes it. The buffer
        /// itself is dropped with the future.
        ///
        /// # Errors
        ///
        /// The receive error (`ConnectionReset`, …); an error outside a
        /// spargio runtime (for a socket not bound to a shard) or after
        /// shutdown began.
        pub async fn recv<B: $crate::io::IoBufMut>(&self, buf: B) -> $crate::io::BufResult<usize, B> {
            $crate::net::conn::recv(&self.sock, buf).await
        }

        /// Sends `buf`'s initialized bytes (with `MSG_NOSIGNAL`: a reset peer
        /// gives `BrokenPipe`, never `SIGPIPE`) and gives the buffer back with
        /// the count sent, which may be short. An empty buffer sends nothing
        /// and returns `Ok(0)`.
        ///
        /// # Cancel safety
        ///
        /// Not cancel safe: a send dropped before it completed may already
        /// have sent some or all of `buf`, and how much is not known.
        ///
        /// # Errors
        ///
        /// The send error (`BrokenPipe`, `ConnectionReset`, …); as
        /// [`recv`](Self::recv) outside a runtime.
        pub async fn send<B: $crate::io::IoBuf>(&self, buf: B) -> $crate::io::BufResult<usize, B> {
            $crate::net::conn::send(&self.sock, buf).await
        }

        /// Fills `buf` completely (all `bytes_total()` bytes from its start),
        /// looping over short receives.
        ///
        /// # Cancel safety
        ///
        /// Not cancel safe: the bytes already placed in `buf` are dropped
        /// with the future. (The bytes of its receive still in flight are
        /// kept, as for [`recv`](Self::recv).) Loop over `recv` where a
        /// read may be cancelled.
        ///
        /// # Errors
        ///
        /// `UnexpectedEof` when the peer closes first (the buffer holds what
        /// arrived); otherwise as [`recv`](Self::recv).
        pub async fn read_exact<B: $crate::io::IoBufMut>(&self, buf: B) -> $crate::io::BufResult<(), B> {
            $crate::net::conn::read_exact(&self.sock, buf).await
        }

        /// Sends all of `buf`'s initialized bytes, looping over short sends.
        ///
        /// # Cancel safety
        ///
        /// Not cancel safe: when dropped, part of `buf` may have been sent.
        ///
        /// # Errors
        ///
        /// The first send error; `WriteZero` if the kernel accepted nothing.
        pub async fn write_all<B: $crate::io::IoBuf>(&self, buf: B) -> $crate::io::BufResult<(), B> {
            $crate::net::conn::write_all(&self.sock, buf).await
        }
    };
}
pub(crate) use stream_io_methods;
