//! Multishot receive into provided buffers: [`RecvStream`].
//!
//! A stream registers its own provided-buffer group (a
//! [`RecvBufGroup`](spargio_sys::op::net::RecvBufGroup)) with the ring of the
//! shard it starts on, and keeps one multishot `RECV` armed there: the kernel
//! picks a buffer only when data arrives and posts one completion per chunk,
//! with no submission per receive. Each chunk is copied out and its buffer
//! handed straight back. The group belongs to the stream and its ops alone, so
//! dropping the stream mid-flight frees every buffer once the cancelled op's
//! final completion arrives, whatever completions nobody read.
//!
//! Where multishot receive is unavailable (the Queue backend, a simulated
//! ring, kernels before 6.0, a stream bound to another shard) the same API
//! issues one plain `RECV` per call.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use spargio_sys::op::net::{RecvBufGroup, RecvMulti};

use super::lane::Socket;
use crate::io::{MultishotEvent, OpFuture, submit};
use crate::runtime::Shared;
use crate::shard;

/// Default number of provided buffers per stream.
pub const DEFAULT_BUFFERS: u16 = 16;
/// Default size of each provided buffer.
pub const DEFAULT_BUFFER_LEN: u32 = 16 * 1024;

/// Buffer group ids handed out in turn (ring-local ids; a taken one is skipped).
static NEXT_BGID: AtomicU32 = AtomicU32::new(0x8000);

fn multishot_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        spargio_sys::probe::Features::detect().is_ok_and(|f| f.checked.recv_multishot && f.checked.pbuf_ring)
    })
}

/// Registers a new group on the calling shard's ring (must be `rt`'s `shard`).
fn register_group(rt: &Arc<Shared>, shard: usize, buffers: u16, buf_len: u32) -> Option<Arc<RecvBufGroup>> {
    if !multishot_supported() || shard::current_shard_of(rt) != Some(shard) {
        return None;
    }
    for _ in 0..8 {
        let bgid = NEXT_BGID.fetch_add(1, Ordering::Relaxed) as u16;
        match shard::with_ring(|ring| RecvBufGroup::new(ring, bgid, buffers, buf_len))? {
            Ok(group) => return Some(group),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(_) => return None,
        }
    }
    None
}

enum Mode {
    /// Not started yet: the first call picks the mode.
    Unstarted,
    /// A multishot `RECV` on `shard`'s ring, selecting from `group`.
    Multishot {
        rt: Arc<Shared>,
        shard: usize,
        group: Arc<RecvBufGroup>,
        op: Option<OpFuture<RecvMulti>>,
    },
    /// One plain `RECV` per call into `scratch`.
    Plain { scratch: Vec<u8> },
}

/// A receiving side that keeps one multishot receive armed, made by
/// [`TcpStream::recv_stream`](super::TcpStream::recv_stream) and
/// [`UnixStream::recv_stream`](super::UnixStream::recv_stream).
///
/// The stream registers its own provided-buffer group with the ring of the
/// shard it starts on and keeps one multishot `RECV` armed there: the kernel
/// picks a buffer only when data arrives and posts one completion per chunk,
/// with no submission per receive. Each chunk is copied out and its buffer
/// handed straight back. Dropping the stream cancels the receive; its buffers
/// are freed once the cancelled op's final completion arrives.
///
/// Where multishot receive is unavailable (the Queue backend, a simulated
/// ring, kernels before 6.0, a stream bound to another shard) the same API
/// issues one plain `RECV` per call ([`RecvStream::is_multishot`] says which).
///
/// ```
/// use spargio::net::UnixStream;
///
/// spargio::run(|_| async {
///     let (a, b) = UnixStream::pair()?;
///     a.write_all(b"chunked".to_vec()).await.0?;
///     drop(a);
///     let mut rs = b.recv_stream();
///     let mut all = Vec::new();
///     while rs.next_into(&mut all).await? > 0 {}
///     assert_eq!(all, b"chunked");
///     Ok::<_, std::io::Error>(())
/// })
/// .unwrap()
/// .unwrap();
/// ```
pub struct RecvStream {
    sock: Socket,
    mode: Mode,
    buffers: u16,
    buf_len: u32,
    eof: bool,
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Unstarted => "unstarted",
            Mode::Multishot { .. } => "multishot",
            Mode::Plain { .. } => "plain",
        };
        f.debug_struct("RecvStream")
            .field("fd", &self.sock.raw())
            .field("mode", &mode)
            .finish()
    }
}

impl RecvStream {
    pub(crate) fn new(sock: Socket, buffers: u16, buf_len: u32) -> RecvStream {
        RecvStream {
            sock,
            mode: Mode::Unstarted,
            buffers,
            buf_len,
            eof: false,
        }
    }

    /// True when the stream runs on a multishot receive with provided buffers
    /// (known after the first [`next_into`](Self::next_into)).
    pub fn is_multishot(&self) -> bool {
        matches!(self.mode, Mode::Multishot { .. })
    }

    /// Waits for the next chunk of data and appends it to `out`. Returns the
    /// number of bytes appended; `0` means the peer closed its sending side
    /// (and every later call returns `0` too).
    ///
    /// # Errors
    ///
    /// The receive error (`ConnectionReset`, …); an error outside a spargio
    /// runtime or after shutdown began. A provided-buffer shortage (`ENOBUFS`)
    /// is not an error: the receive is re-armed.
    pub async fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if matches!(self.mode, Mode::Unstarted) {
            self.mode = self.start();
        }
        let n = if let Mode::Plain { scratch } = &mut self.mode {
            let mut buf = std::mem::take(scratch);
            buf.clear();
            buf.reserve(self.buf_len as usize);
            let (res, buf) = super::conn::recv(&self.sock, buf).await;
            let n = res?;
            out.extend_from_slice(&buf[..n]);
            if let Mode::Plain { scratch } = &mut self.mode {
                *scratch = buf;
            }
            n
        } else {
            poll_fn(|cx| self.poll_multishot(cx, out)).await?
        };
        if n == 0 {
            self.eof = true;
        }
        Ok(n)
    }

    fn start(&self) -> Mode {
        if let Some((rt, shard)) = self.sock.lane.target()
            && let Some(group) = register_group(&rt, shard, self.buffers, self.buf_len)
        {
            return Mode::Multishot {
                rt,
                shard,
                group,
                op: None,
            };
        }
        Mode::Plain { scratch: Vec::new() }
    }

    fn poll_multishot(&mut self, cx: &mut Context<'_>, out: &mut Vec<u8>) -> Poll<io::Result<usize>> {
        let Mode::Multishot { rt, shard, group, op } = &mut self.mode else {
            unreachable!("poll_multishot in multishot mode only")
        };
        loop {
            let fut = match op {
                Some(fut) => fut,
                None => {
                    let recv = RecvMulti::new(self.sock.fd.clone(), group.clone());
                    match submit(rt, Some(*shard), recv) {
                        Ok(fut) => op.insert(fut),
                        Err((e, _)) => return Poll::Ready(Err(e)),
                    }
                }
            };
            match fut.poll_multishot(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(MultishotEvent::More(cqe)) => match group.take(&cqe, out) {
                    Ok(0) => continue,
                    r => return Poll::Ready(r),
                },
                Poll::Ready(MultishotEvent::Done(cqe, mut recv)) => {
                    *op = None;
                    match recv.take_final(&cqe, out) {
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                        r => return Poll::Ready(r),
                    }
                }
            }
        }
    }
}
