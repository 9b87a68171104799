//! Poll-based I/O for code written against Tokio's or the futures crate's I/O
//! traits (hyper, codecs, `copy`): [`Io`] wraps a stream or file and drives
//! its io_uring ops from `poll_*` methods.
//!
//! spargio's own API is `async fn` with owned buffers: the kernel writes into
//! memory the op owns until its completion, so a dropped future never frees
//! memory still in use. The poll traits lend a caller's `&mut [u8]` for one
//! call only, which the kernel must never see. `Io` bridges the two with two
//! buffers of its own:
//!
//! - **Reads.** At most one receive (or file read) is in flight, into the
//!   adapter's read buffer. `poll_read` copies from that buffer into the
//!   caller's: **one `memcpy` per byte read**. Bytes the caller did not take
//!   stay buffered for the next call (and [`Io`] is a buffered reader:
//!   `AsyncBufRead` too).
//! - **Writes.** `poll_write` copies the caller's bytes into the adapter's
//!   write buffer (**one `memcpy` per byte written**), starts the send and
//!   returns `Ready(Ok(n))` at once; the next `poll_write`, `poll_flush` or
//!   `poll_shutdown` first waits for those bytes to be sent completely
//!   (resubmitting the rest of a short send). So at most one send is in
//!   flight, and a byte count the caller was told was written is never
//!   ambiguous. `poll_write_vectored` gathers its slices into the one buffer:
//!   one send for a header and a body.
//! - **Errors of a send** that runs after `poll_write` returned are reported
//!   by the next `poll_write`, `poll_flush` or `poll_shutdown`, as a buffered
//!   writer reports them.
//! - **Shutdown** of a socket is a half-close: the pending bytes are sent,
//!   then `shutdown(SHUT_WR)` (the peer reads end of stream; this side can
//!   still read). For a file it is a flush.
//!
//! # Cancel safety
//!
//! A poll that returned `Pending` and is never repeated (a `timeout` or
//! `select!` around a read) loses nothing: the receive stays in flight in the
//! adapter and the next poll picks up its bytes. Dropping the adapter while a
//! receive is in flight hands that receive to the socket's stash, and bytes
//! read ahead but not yet consumed go back to the stash's front: the socket's
//! next receive (through the stream's own `recv`, or a new `Io`) returns
//! them first, in order. The same holds for [`Io::into_inner`]. A file has
//! no stash: its `Io` keeps its own position, which is gone with it.
//!
//! Bytes accepted by `poll_write` but not yet sent when the adapter is
//! dropped are cancelled with their send: flush (or shut down) first, as with
//! any buffered writer.
//!
//! # Features
//!
//! The inherent `poll_*` methods are always there. The `tokio-io` feature
//! implements `tokio::io::{AsyncRead, AsyncBufRead, AsyncWrite}` for `Io`;
//! the `futures-io` feature implements `futures_io::{AsyncRead,
//! AsyncBufRead, AsyncWrite}`.
//!
//! ```
//! use std::future::poll_fn;
//! use std::pin::Pin;
//! use spargio::compat::Io;
//! use spargio::net::UnixStream;
//!
//! spargio::run(|_| async {
//!     let (a, b) = UnixStream::pair()?;
//!     let (mut a, mut b) = (Io::new(a), Io::new(b));
//!     let n = poll_fn(|cx| a.poll_write(cx, b"hello")).await?;
//!     poll_fn(|cx| a.poll_shutdown(cx)).await?;
//!     let mut got = vec![0u8; 16];
//!     let m = poll_fn(|cx| b.poll_read(cx, &mut got)).await?;
//!     assert_eq!(&got[..m], &b"hello"[..n]);
//!     Ok::<_, std::io::Error>(())
//! })
//! .unwrap()
//! .unwrap();
//! ```

#[cfg(feature = "futures-io")]
mod futures_io;
mod stream;
#[cfg(feature = "tokio-io")]
mod tokio_io;

use std::io;
use std::task::{Context, Poll};

use crate::fs::File;
use crate::net::{OwnedReadHalf, OwnedWriteHalf, TcpStream, UnixStream};
use stream::{ReadSide, WriteSide};

/// The default size of each of an [`Io`]'s two buffers: 16 KiB.
pub const DEFAULT_BUF_LEN: usize = 16 * 1024;

/// What an [`Io`] drives: a socket or a file, by reference.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    Socket(&'a crate::net::lane::Socket),
    File(&'a spargio_sys::op::fs::SharedFd),
}

mod sealed {
    /// Gives the adapter what its ops run on; implemented by spargio's types only.
    pub trait Sealed {
        fn target(&self) -> TargetOf<'_>;
    }

    /// A [`Target`](super::Target) behind a field no one outside the crate can name.
    pub struct TargetOf<'a>(pub(crate) super::Target<'a>);
}

/// A type an [`Io`] can read from: [`TcpStream`], [`UnixStream`],
/// [`OwnedReadHalf`], [`File`].
pub trait Source: sealed::Sealed {}

/// A type an [`Io`] can write to: [`TcpStream`], [`UnixStream`],
/// [`OwnedWriteHalf`], [`File`].
pub trait Sink: sealed::Sealed {}

macro_rules! socket_target {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {
            fn target(&self) -> sealed::TargetOf<'_> {
                sealed::TargetOf(Target::Socket(self.socket()))
            }
        }
    )*};
}

socket_target!(TcpStream, UnixStream, OwnedReadHalf, OwnedWriteHalf);

impl sealed::Sealed for File {
    fn target(&self) -> sealed::TargetOf<'_> {
        sealed::TargetOf(Target::File(self.shared_fd()))
    }
}

impl Source for TcpStream {}
impl Source for UnixStream {}
impl Source for OwnedReadHalf {}
impl Source for File {}
impl Sink for TcpStream {}
impl Sink for UnixStream {}
impl Sink for OwnedWriteHalf {}
impl Sink for File {}

/// A stream or file with poll-based reads and writes, for Tokio's and the
/// futures crate's I/O traits (features `tokio-io`, `futures-io`). See the
/// [module docs](self) for its buffers, the copy they cost, and its cancel
/// safety.
///
/// A file's `Io` starts at offset 0 and keeps its own position (reads and
/// writes advance it; spargio's files have no shared cursor).
///
/// Split a `TcpStream` with [`TcpStream::into_split`] and wrap each half
/// (`Io<OwnedReadHalf>` reads, `Io<OwnedWriteHalf>` writes), or give both
/// directions of one `Io` to the caller's own split.
#[derive(Debug)]
pub struct Io<T> {
    inner: T,
    read: ReadSide,
    write: WriteSide,
    /// A file's position: where the next read or accepted write goes.
    cursor: u64,
}

impl<T: sealed::Sealed> Io<T> {
    /// Wraps `inner` with buffers of [`DEFAULT_BUF_LEN`] bytes.
    pub fn new(inner: T) -> Io<T> {
        Io::with_buf_len(inner, DEFAULT_BUF_LEN)
    }

    /// Wraps `inner` with read and write buffers of `len` bytes (at least 1).
    pub fn with_buf_len(inner: T, len: usize) -> Io<T> {
        let len = len.clamp(1, crate::fs::MAX_RW_LEN);
        let stash = match target(&inner) {
            Target::Socket(sock) => Some(sock.stash.clone()),
            Target::File(_) => None,
        };
        Io {
            inner,
            read: ReadSide::new(len, stash),
            write: WriteSide::new(len),
            cursor: 0,
        }
    }

    /// The wrapped stream or file.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Gives back the stream or file. Read-ahead bytes and a receive still in
    /// flight go to the socket's stash (its next receive returns them);
    /// accepted bytes not yet sent are cancelled (flush first).
    pub fn into_inner(self) -> T {
        let Io {
            inner, read, write, ..
        } = self;
        drop((read, write));
        inner
    }
}

impl<T: Source> Io<T> {
    /// Bytes read ahead and not yet consumed (empty when none).
    pub fn buffer(&self) -> &[u8] {
        self.read.buffered()
    }

    /// Fills the read buffer when it is empty (one receive or file read) and
    /// returns what it holds; empty means end of stream.
    ///
    /// # Errors
    ///
    /// The receive's or read's error; an error outside a spargio runtime
    /// (for a stream not bound to a shard) or after shutdown began.
    pub fn poll_fill_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        if let Target::File(_) = target(&self.inner) {
            // Reads see every write accepted before them.
            if let Err(e) = std::task::ready!(self.poll_flush_inner(cx)) {
                return Poll::Ready(Err(e));
            }
        }
        match self.read.poll_fill(target(&self.inner), self.cursor, cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(self.read.buffered())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Marks `amt` bytes of [`buffer`](Self::buffer) consumed (clamped to
    /// what it holds).
    pub fn consume(&mut self, amt: usize) {
        let n = self.read.consume(amt);
        self.cursor += n as u64;
    }

    /// Reads into `dst`: buffered bytes first, else one receive (or file
    /// read). `Ok(0)` means end of stream (or an empty `dst`).
    ///
    /// # Errors
    ///
    /// As [`poll_fill_buf`](Self::poll_fill_buf).
    pub fn poll_read(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<io::Result<usize>> {
        if dst.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let avail = match self.poll_fill_buf(cx) {
            Poll::Ready(Ok(avail)) => avail,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = avail.len().min(dst.len());
        dst[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

impl<T: Sink> Io<T> {
    /// Accepts up to one buffer of `src` (copying it) and starts sending it;
    /// first waits until the bytes accepted before are all sent.
    ///
    /// # Errors
    ///
    /// The error of an earlier send that had not been reported, or of this
    /// call's start; an error outside a runtime or after shutdown began.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, src: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(src)])
    }

    /// As [`poll_write`](Self::poll_write), gathering `bufs` into one send.
    ///
    /// # Errors
    ///
    /// As [`poll_write`](Self::poll_write).
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = std::task::ready!(self.poll_flush_inner(cx)) {
            return Poll::Ready(Err(e));
        }
        if let Target::File(_) = target(&self.inner) {
            // A file write goes where the reader stands: drop its read-ahead.
            if let Err(e) = std::task::ready!(self.read.poll_discard(cx)) {
                return Poll::Ready(Err(e));
            }
        }
        let n = self.write.accept(bufs, self.cursor);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        if let Target::File(_) = target(&self.inner) {
            self.cursor += n as u64;
        }
        // Start the send now; its outcome is read by the next call.
        self.write.kick(target(&self.inner), cx);
        Poll::Ready(Ok(n))
    }

    /// Waits until every accepted byte is sent.
    ///
    /// # Errors
    ///
    /// The first send error since the last report.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_inner(cx)
    }

    /// Sends every accepted byte, then shuts down the sending direction of a
    /// socket (`shutdown(SHUT_WR)`: the peer reads end of stream, this side
    /// can still read). For a file, a flush.
    ///
    /// # Errors
    ///
    /// As [`poll_flush`](Self::poll_flush); the `shutdown` error.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = std::task::ready!(self.poll_flush_inner(cx)) {
            return Poll::Ready(Err(e));
        }
        self.write.poll_shutdown(target(&self.inner), cx)
    }
}

/// What `inner`'s ops run on.
fn target<T: sealed::Sealed>(inner: &T) -> Target<'_> {
    inner.target().0
}

impl<T: sealed::Sealed> Io<T> {
    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write.poll_drain(target(&self.inner), cx)
    }
}
