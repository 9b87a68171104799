//! The two halves of an [`Io`](super::Io): one read and one write in flight
//! at most, each into or out of a buffer the op owns while it runs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use spargio_sys::buf::Slice;
use spargio_sys::op::fs::{Read, Write};
use spargio_sys::op::net::{Recv, Send, Shutdown};

use super::Target;
use crate::io::{IoBuf, OpFuture, cqe_result, submit_current};
use crate::net::lane::{CancelOnDrop, Cancellable, Socket};
use crate::net::stash::{RecvStash, poll_take_stream};

/// An op in flight with the flag that stops its blocking form (Queue backend).
struct InFlight<O> {
    fut: OpFuture<O>,
    cancel: CancelOnDrop,
}

impl<O: spargio_sys::op::Op> InFlight<O> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<(spargio_sys::Cqe, O)> {
        let out = ready!(Pin::new(&mut self.fut).poll(cx));
        self.cancel.disarm();
        Poll::Ready(out)
    }
}

/// Submits `op` on `sock`'s lane with a cancel flag where the backend needs one.
fn submit_socket<O: Cancellable>(sock: &Socket, op: O) -> Result<InFlight<O>, (io::Error, O)> {
    let flag = sock.lane.cancel_flag();
    let op = match &flag {
        Some(f) => op.with_cancel_flag(f.clone()),
        None => op,
    };
    let fut = sock.lane.submit(op)?;
    Ok(InFlight {
        fut,
        cancel: CancelOnDrop(flag),
    })
}

/// Submits a file op on the calling shard's ring (file ops need no flag).
fn submit_file<O: spargio_sys::op::Op>(op: O) -> Result<InFlight<O>, (io::Error, O)> {
    Ok(InFlight {
        fut: submit_current(op)?,
        cancel: CancelOnDrop(None),
    })
}

enum ReadOp {
    Recv(InFlight<Recv<Vec<u8>>>),
    File(InFlight<Read<Vec<u8>>>),
}

/// The read half: a buffer holding `buf[pos..]` unconsumed, or lent to the
/// op in flight.
pub(super) struct ReadSide {
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    op: Option<ReadOp>,
    /// The socket's stash: where an in-flight receive and the unconsumed
    /// bytes go when the adapter is dropped. `None` for a file.
    stash: Option<Arc<RecvStash>>,
}

impl std::fmt::Debug for ReadSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSide")
            .field("buffered", &(self.buf.len() - self.pos))
            .field("in_flight", &self.op.is_some())
            .finish()
    }
}

impl ReadSide {
    pub(super) fn new(len: usize, stash: Option<Arc<RecvStash>>) -> ReadSide {
        ReadSide {
            buf: Vec::new(),
            pos: 0,
            len,
            op: None,
            stash,
        }
    }

    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Consumes up to `amt` buffered bytes; returns how many.
    pub(super) fn consume(&mut self, amt: usize) -> usize {
        let n = amt.min(self.buf.len() - self.pos);
        self.pos += n;
        n
    }

    /// Makes bytes available unless the buffer holds some: `Ready(Ok(()))`
    /// with an empty buffer is end of stream. A file is read at `at`.
    pub(super) fn poll_fill(
        &mut self,
        target: Target<'_>,
        at: u64,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.buf.len() {
                return Poll::Ready(Ok(()));
            }
            if self.op.is_some() {
                return self.poll_op(cx);
            }
            // Empty and idle: reuse the buffer for the next op.
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() < self.len {
                self.buf.reserve_exact(self.len);
            }
            match target {
                Target::Socket(sock) => {
                    if sock.stash.is_busy() {
                        // What dropped receives left comes before anything new.
                        match ready!(poll_take_stream(sock, cx, &mut self.buf)) {
                            Some(Ok(_)) => return Poll::Ready(Ok(())),
                            Some(Err(e)) => return Poll::Ready(Err(e)),
                            None => {}
                        }
                    }
                    let op = Recv::new(sock.fd.clone(), std::mem::take(&mut self.buf), 0);
                    match submit_socket(sock, op) {
                        Ok(f) => self.op = Some(ReadOp::Recv(f)),
                        Err((e, op)) => {
                            self.buf = op.into_buf();
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                Target::File(fd) => {
                    if let Err(e) = crate::io::check_offset(at) {
                        return Poll::Ready(Err(e));
                    }
                    let op = Read::new(fd.clone(), std::mem::take(&mut self.buf), at);
                    match submit_file(op) {
                        Ok(f) => self.op = Some(ReadOp::File(f)),
                        Err((e, op)) => {
                            self.buf = op.into_buf();
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Polls the op in flight; on completion its buffer holds what it read.
    fn poll_op(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = match self.op.as_mut() {
            None => return Poll::Ready(Ok(())),
            Some(ReadOp::Recv(f)) => {
                let (cqe, op) = ready!(f.poll(cx));
                self.buf = op.into_buf();
                cqe_result(&cqe)
            }
            Some(ReadOp::File(f)) => {
                let (cqe, op) = ready!(f.poll(cx));
                self.buf = op.into_buf();
                cqe_result(&cqe)
            }
        };
        self.op = None;
        self.pos = 0;
        match res {
            Ok(n) => {
                self.buf.truncate(n);
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                self.buf.clear();
                Poll::Ready(Err(e))
            }
        }
    }

    /// Waits for a read in flight, then drops every buffered byte (a file
    /// about to be written where the reader stands).
    pub(super) fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = ready!(self.poll_op(cx));
        self.buf.clear();
        self.pos = 0;
        // A failed read-ahead is not the write's concern.
        let _ = res;
        Poll::Ready(Ok(()))
    }
}

impl Drop for ReadSide {
    fn drop(&mut self) {
        let Some(stash) = &self.stash else {
            return; // A file: dropping the op cancels a positional read; nothing is lost.
        };
        // Unconsumed bytes precede whatever the receive in flight gets.
        if self.pos < self.buf.len() {
            stash.give_back(self.buf[self.pos..].to_vec());
        }
        if let Some(ReadOp::Recv(mut f)) = self.op.take()
            && !f.fut.is_finished()
        {
            let salvage = stash.orphan::<Recv<Vec<u8>>>();
            f.fut.abandon_with(salvage);
            // `f.cancel`, dropped here, stops a blocking-pool receive.
        }
    }
}

enum WriteOp {
    Send(InFlight<Send<Slice<Vec<u8>>>>),
    File(InFlight<Write<Slice<Vec<u8>>>>),
}

/// The write half: accepted bytes `buf[sent..]` not yet sent, and the send in
/// flight (which owns the buffer meanwhile).
pub(super) struct WriteSide {
    buf: Vec<u8>,
    sent: usize,
    len: usize,
    /// A file's offset of `buf[0]`.
    at: u64,
    op: Option<WriteOp>,
    /// A send error not yet reported.
    error: Option<io::Error>,
    shutdown: Option<InFlight<Shutdown>>,
    shut: bool,
}

impl std::fmt::Debug for WriteSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSide")
            .field("unsent", &(self.buf.len() - self.sent))
            .field("in_flight", &self.op.is_some())
            .field("shut", &self.shut)
            .finish()
    }
}

impl WriteSide {
    pub(super) fn new(len: usize) -> WriteSide {
        WriteSide {
            buf: Vec::new(),
            sent: 0,
            len,
            at: 0,
            op: None,
            error: None,
            shutdown: None,
            shut: false,
        }
    }

    /// Copies up to one buffer of `bufs` in (the buffer must be drained);
    /// returns the count. A file's bytes go to offset `at`.
    pub(super) fn accept(&mut self, bufs: &[io::IoSlice<'_>], at: u64) -> usize {
        debug_assert!(self.op.is_none() && self.sent == self.buf.len());
        self.buf.clear();
        self.sent = 0;
        self.at = at;
        for b in bufs {
            let room = self.len - self.buf.len();
            if room == 0 {
                break;
            }
            if self.buf.capacity() < self.len {
                self.buf.reserve_exact(self.len - self.buf.len());
            }
            let n = b.len().min(room);
            self.buf.extend_from_slice(&b[..n]);
        }
        self.buf.len()
    }

    /// Starts sending what was accepted, keeping any error for the next call.
    pub(super) fn kick(&mut self, target: Target<'_>, cx: &mut Context<'_>) {
        if let Poll::Ready(Err(e)) = self.poll_send(target, cx) {
            self.error = Some(e);
        }
    }

    /// Waits until every accepted byte is sent; reports a kept error first.
    pub(super) fn poll_drain(&mut self, target: Target<'_>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        self.poll_send(target, cx)
    }

    fn poll_send(&mut self, target: Target<'_>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(op) = self.op.as_mut() {
                let res = match op {
                    WriteOp::Send(f) => {
                        let (cqe, op) = ready!(f.poll(cx));
                        self.buf = op.into_buf().into_inner();
                        cqe_result(&cqe)
                    }
                    WriteOp::File(f) => {
                        let (cqe, op) = ready!(f.poll(cx));
                        self.buf = op.into_buf().into_inner();
                        cqe_result(&cqe)
                    }
                };
                self.op = None;
                match res {
                    Ok(0) => {
                        self.discard();
                        let e = io::Error::new(io::ErrorKind::WriteZero, "the kernel accepted no bytes");
                        return Poll::Ready(Err(e));
                    }
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.discard();
                        return Poll::Ready(Err(e));
                    }
                }
            }
            if self.sent >= self.buf.len() {
                self.discard();
                return Poll::Ready(Ok(()));
            }
            let rest = std::mem::take(&mut self.buf).slice(self.sent..);
            let submitted = match target {
                Target::Socket(sock) => match submit_socket(sock, Send::new(sock.fd.clone(), rest, 0)) {
                    Ok(f) => Ok(WriteOp::Send(f)),
                    Err((e, op)) => Err((e, op.into_buf())),
                },
                Target::File(fd) => {
                    let at = self.at + self.sent as u64;
                    match crate::io::check_offset(at) {
                        Err(e) => Err((e, rest)),
                        Ok(()) => match submit_file(Write::new(fd.clone(), rest, at)) {
                            Ok(f) => Ok(WriteOp::File(f)),
                            Err((e, op)) => Err((e, op.into_buf())),
                        },
                    }
                }
            };
            match submitted {
                Ok(op) => self.op = Some(op),
                Err((e, rest)) => {
                    self.buf = rest.into_inner();
                    self.discard();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Forgets the accepted bytes (all sent, or the send failed), keeping the allocation.
    fn discard(&mut self) {
        self.buf.clear();
        self.sent = 0;
    }

    /// Half-closes a socket (once); a file has nothing to shut down. The
    /// write buffer must be drained.
    pub(super) fn poll_shutdown(&mut self, target: Target<'_>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Target::Socket(sock) = target else {
            return Poll::Ready(Ok(()));
        };
        if self.shut {
            return Poll::Ready(Ok(()));
        }
        if self.shutdown.is_none() {
            let op = Shutdown::new(sock.fd.clone(), libc::SHUT_WR);
            match sock.lane.submit(op) {
                Ok(fut) => {
                    self.shutdown = Some(InFlight {
                        fut,
                        cancel: CancelOnDrop(None),
                    })
                }
                Err((e, _)) => return Poll::Ready(Err(e)),
            }
        }
        let Some(f) = self.shutdown.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let (cqe, _) = ready!(f.poll(cx));
        self.shutdown = None;
        match cqe.result() {
            Ok(_) => {
                self.shut = true;
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
