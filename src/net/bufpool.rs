//! Multishot receive into provided buffers: [`RecvStream`].
//!
//! A stream registers its own provided-buffer group (a
//! [`RecvBufGroup`](spargio_sys::op::net::RecvBufGroup)) with the ring of the
//! shard it starts on, and keeps one multishot `RECV` armed there: the kernel
//! picks a buffer only when data arrives and posts one completion per chunk,
//! with no submission per receive. Each chunk is copied out and its buffer
//! handed straight back. The group belongs to the stream and its ops alone, so
//! dropping the stream mid-flight frees every buffer once the cancelled op's
//! final completion arrives. The data of completions nobody read is copied
//! to the socket's stash first (`super::stash`), for its next receive.
//!
//! A stream whose socket is bound to another shard registers its group there
//! (through a task pinned on that shard) and keeps its op on that ring, so it
//! works from any thread. Where multishot receive is unavailable (the Queue
//! backend, a simulated ring, kernels before 6.0) the same API issues one
//! plain `RECV` per call.

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
fn register_group(rt: &Arc<Shared>, shard: usize, buffers: u16, buf_len: u32) -> Option<HomeGroup> {
    if !multishot_supported() || shard::current_shard_of(rt) != Some(shard) {
        return None;
    }
    for _ in 0..8 {
        let bgid = NEXT_BGID.fetch_add(1, Ordering::Relaxed) as u16;
        match shard::with_ring(|ring| RecvBufGroup::new(ring, bgid, buffers, buf_len))? {
            Ok(group) => {
                return Some(HomeGroup {
                    group: Some(group),
                    rt: rt.clone(),
                    shard,
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// A stream's hold on its group, dropped on the group's shard: the last
/// holder unregisters the group, which only the ring's own thread may do
/// (elsewhere the kernel refuses and the group leaks). The other holders, the
/// stream's ops, are freed on that shard after their final completion.
struct HomeGroup {
    group: Option<Arc<RecvBufGroup>>,
    rt: Arc<Shared>,
    shard: usize,
}

impl HomeGroup {
    fn get(&self) -> &Arc<RecvBufGroup> {
        self.group.as_ref().expect("a group is held until dropped")
    }
}

impl Drop for HomeGroup {
    fn drop(&mut self) {
        let Some(group) = self.group.take() else { return };
        if shard::current_shard_of(&self.rt) != Some(self.shard) {
            // At shutdown the ring goes away with its groups.
            let handle = crate::RuntimeHandle {
                shared: self.rt.clone(),
            };
            let _ = handle.spawn_pinned(self.shard, async move { drop(group) });
        }
    }
}

enum Mode {
    /// Not started yet: the first call picks the mode.
    Unstarted,
    /// A multishot `RECV` on the group's shard's ring, selecting from the
    /// group. `op` is declared first so a dropped stream cancels it first.
    Multishot {
        op: Option<OpFuture<RecvMulti>>,
        group: HomeGroup,
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
/// # Dropping it
///
/// Nothing is lost: the chunks the stream received but did not hand out,
/// and any the cancelled receive still takes before its cancellation
/// completes, stay with the socket, and its next receive (`recv`,
/// `read_exact`, a new `RecvStream`, on any handle of the socket) returns
/// them first, in order, after waiting for that cancellation to complete.
/// Likewise a new `RecvStream` first returns what dropped receives left.
///
/// A stream on a socket bound to a shard (e.g. from
/// [`RuntimeHandle::bind_tcp_stream`](crate::RuntimeHandle::bind_tcp_stream))
/// registers its group on that shard and works from any thread. Where
/// multishot receive is unavailable (the Queue backend, kernels before 6.0)
/// the same API issues one plain `RECV` per call
/// ([`RecvStream::is_multishot`] says which).
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
    /// An error met after a batch already held segments, for the next call.
    deferred: Option<io::Error>,
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

impl Drop for RecvStream {
    fn drop(&mut self) {
        // Chunks the armed receive took and nobody read yet go to the socket's
        // stash, for its next receive (see `super::stash`).
        if let Mode::Multishot { op: Some(fut), .. } = &mut self.mode
            && !fut.is_finished()
        {
            let salvage = self.sock.stash.orphan::<RecvMulti>();
            fut.abandon_with(salvage);
        }
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
            deferred: None,
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
    /// # Cancel safety
    ///
    /// Cancel safe: chunks stay queued in the stream (or, in plain mode, in
    /// the socket, as for [`TcpStream::recv`](super::TcpStream::recv)) until a
    /// call takes them; a dropped call takes none.
    ///
    /// # Errors
    ///
    /// The receive error (`ConnectionReset`, …); an error outside a spargio
    /// runtime or after shutdown began. A provided-buffer shortage (`ENOBUFS`)
    /// is not an error: the receive is re-armed.
    pub async fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut lens = Vec::new();
        self.next_batch_into(out, &mut lens, 1).await?;
        Ok(lens.first().copied().unwrap_or(0))
    }

    /// Waits for at least one chunk, then appends it and every further chunk
    /// already received (up to `max` in all) to `out`, pushing each chunk's
    /// length to `lens`. Returns the number of chunks appended; `0` means end
    /// of stream (and every later call returns `0` too).
    ///
    /// An error met after some chunks were taken is returned by the next call.
    ///
    /// # Errors
    ///
    /// As [`next_into`](Self::next_into).
    pub(crate) async fn next_batch_into(
        &mut self,
        out: &mut Vec<u8>,
        lens: &mut Vec<usize>,
        max: usize,
    ) -> io::Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if self.eof || max == 0 {
            return Ok(0);
        }
        if matches!(self.mode, Mode::Unstarted) {
            self.mode = self.start().await;
        }
        let idle = match &self.mode {
            Mode::Multishot { op, .. } => op.is_none(),
            _ => true,
        };
        if idle
            && self.sock.stash.is_busy()
            && let Some(res) = super::stash::take_chunks(&self.sock, out, lens, max).await
        {
            // What dropped receives (or a dropped stream) left comes first.
            if let Ok(0) = res {
                self.eof = true;
            }
            return res;
        }
        if let Mode::Plain { scratch } = &mut self.mode {
            let mut buf = std::mem::take(scratch);
            buf.clear();
            buf.reserve(self.buf_len as usize);
            let (res, buf) = super::conn::recv(&self.sock, buf).await;
            let n = res?;
            out.extend_from_slice(&buf[..n]);
            if let Mode::Plain { scratch } = &mut self.mode {
                *scratch = buf;
            }
            if n == 0 {
                self.eof = true;
                return Ok(0);
            }
            lens.push(n);
            return Ok(1);
        }
        let mut taken = 0;
        poll_fn(|cx| {
            while taken < max {
                match self.poll_multishot(cx, out) {
                    Poll::Pending if taken == 0 => return Poll::Pending,
                    Poll::Pending => break,
                    Poll::Ready(Ok(0)) => {
                        self.eof = true;
                        break;
                    }
                    Poll::Ready(Ok(n)) => {
                        lens.push(n);
                        taken += 1;
                    }
                    Poll::Ready(Err(e)) if taken == 0 => return Poll::Ready(Err(e)),
                    Poll::Ready(Err(e)) => {
                        self.deferred = Some(e);
                        break;
                    }
                }
            }
            Poll::Ready(Ok(taken))
        })
        .await
    }

    async fn start(&self) -> Mode {
        if let Some((rt, shard)) = self.sock.lane.target()
            && rt.backend.has_rings()
            && multishot_supported()
        {
            let group = if shard::current_shard_of(&rt) == Some(shard) {
                register_group(&rt, shard, self.buffers, self.buf_len)
            } else {
                // Registration must happen on the ring's own thread.
                let (task_rt, buffers, buf_len) = (rt.clone(), self.buffers, self.buf_len);
                let handle = crate::RuntimeHandle { shared: rt };
                match handle.spawn_pinned(
                    shard,
                    async move { register_group(&task_rt, shard, buffers, buf_len) },
                ) {
                    Ok(join) => join.await.ok().flatten(),
                    Err(_) => None,
                }
            };
            if let Some(group) = group {
                return Mode::Multishot { op: None, group };
            }
        }
        Mode::Plain { scratch: Vec::new() }
    }

    fn poll_multishot(&mut self, cx: &mut Context<'_>, out: &mut Vec<u8>) -> Poll<io::Result<usize>> {
        let Mode::Multishot { op, group } = &mut self.mode else {
            unreachable!("poll_multishot in multishot mode only")
        };
        let HomeGroup { rt, shard, .. } = &*group;
        let group = group.get();
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
                Poll::Ready(MultishotEvent::More(mut event)) => match event.read_into(out) {
                    Ok(0) => continue,
                    r => return Poll::Ready(r),
                },
                Poll::Ready(MultishotEvent::Done(_, mut recv)) => {
                    *op = None;
                    match recv.take_final(out) {
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                        r => return Poll::Ready(r),
                    }
                }
            }
        }
    }
}
