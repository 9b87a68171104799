//! The socket half of the native lane: stream and datagram I/O on a
//! [`UringBoundFd`].
//!
//! Every op goes through the same code as [`crate::net`]'s sockets
//! (`net::conn` for one send or receive, [`RecvStream`] for multishot
//! receive), on a lane bound to the fd's shard: submitted on that shard's ring
//! from whatever thread or task calls, or run as a blocking call on the pool
//! on the Queue backend.
//!
//! How batches keep byte order is described in the
//! [parent module](crate::native#batches-on-a-stream-socket).

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::Poll;

use spargio_sys::op::net as ops;

use super::UringBoundFd;
use crate::RuntimeHandle;
use crate::io::{BufResult, IoBuf, IoBufMut};
use crate::net::bufpool::{DEFAULT_BUFFER_LEN, DEFAULT_BUFFERS, RecvStream};
use crate::net::conn;
use crate::net::lane::{Lane, Socket};

/// The most one [`UringBoundFd::recv`] receives (and allocates): 1 MiB,
/// above any default socket receive buffer's worth of one wake-up and above
/// the largest datagram.
pub const MAX_RECV_LEN: usize = 1 << 20;

/// A buffer at least this long is sent on its own by
/// [`UringBoundFd::send_all_batch`] on a stream socket, never copied.
const COALESCE_LIMIT: usize = 64 * 1024;

impl RuntimeHandle {
    /// Binds a connected TCP stream to a shard (the calling shard, or the next
    /// in turn from outside), as [`bind_owned_fd`](Self::bind_owned_fd).
    ///
    /// The socket stays close-on-exec (std opens it so); it may be in blocking
    /// or non-blocking mode.
    ///
    /// ```no_run
    /// let rt = spargio::Runtime::new().unwrap();
    /// let stream = std::net::TcpStream::connect("127.0.0.1:7000").unwrap();
    /// let bound = rt.handle().bind_tcp_stream(stream);
    /// rt.block_on(async move { bound.send(b"hello".to_vec()).await.0 }).unwrap().unwrap();
    /// ```
    pub fn bind_tcp_stream(&self, stream: std::net::TcpStream) -> UringBoundFd {
        self.bind_owned_fd(OwnedFd::from(stream))
    }

    /// Binds a UDP socket to a shard, as [`bind_tcp_stream`](Self::bind_tcp_stream).
    /// [`UringBoundFd::send`] and [`UringBoundFd::recv`] need it connected
    /// (`std::net::UdpSocket::connect`).
    pub fn bind_udp_socket(&self, socket: std::net::UdpSocket) -> UringBoundFd {
        self.bind_owned_fd(OwnedFd::from(socket))
    }
}

/// Polls every future of `futs` in turn on each wake (so the first poll starts
/// them all) and gives their outputs in the order given.
async fn join_in_order<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outs.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

impl UringBoundFd {
    /// The fd as a socket whose ops are steered to this fd's shard.
    fn socket(&self) -> Socket {
        Socket {
            fd: self.fd.clone(),
            lane: Lane::bound(self.rt.clone(), self.shard),
            stash: self.stash.clone(),
        }
    }

    /// True for a `SOCK_STREAM` socket (byte order matters across sends).
    fn is_stream(&self) -> io::Result<bool> {
        let ty = ops::int_option(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE)?;
        Ok(ty == libc::SOCK_STREAM)
    }

    /// Receives up to `len` bytes (one `RECV`). An empty vector means the peer
    /// closed its sending side (or `len` is 0: then nothing is submitted).
    ///
    /// At most [`MAX_RECV_LEN`] bytes are received at once, whatever `len`
    /// says: the buffer is allocated before any byte arrives, so a `len` from
    /// untrusted input (a length prefix) must not decide it. A larger `len`
    /// gives a short read, as a stream receive may anyway; loop to get more.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv_into`](Self::recv_into).
    ///
    /// # Errors
    ///
    /// The receive error (`ConnectionReset`, …); an error once the runtime
    /// shut down. A huge `len` is never an error.
    pub async fn recv(&self, len: usize) -> io::Result<Vec<u8>> {
        let (res, buf) = self.recv_into(Vec::with_capacity(len.min(MAX_RECV_LEN))).await;
        res.map(|_| buf)
    }

    /// Receives into `buf`, from its start up to its capacity
    /// (`bytes_total()`), and gives it back with the byte count. `Ok(0)`
    /// means end of stream, or a buffer without capacity (nothing submitted).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. If the future is dropped after the kernel already copied
    /// data into `buf`, the fd (and every clone of this value) keeps that
    /// data and the next receive on it returns it first, in order: on a
    /// stream socket as bytes, on a datagram socket as the datagram it was.
    /// That receive first waits for the dropped one's cancellation to
    /// complete, so it never overtakes it. See
    /// [`TcpStream::recv`](crate::net::TcpStream::recv).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub async fn recv_into<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        conn::recv(&self.socket(), buf).await
    }

    /// Sends `buf`'s initialized bytes (one `SEND` with `MSG_NOSIGNAL`: a
    /// reset peer gives `BrokenPipe`, never `SIGPIPE`) and gives the buffer
    /// back with the count sent, which may be short on a stream. An empty
    /// buffer sends nothing and returns `Ok(0)` at once.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a send dropped before it completed may already have
    /// sent some or all of `buf`.
    ///
    /// # Errors
    ///
    /// The send error (`BrokenPipe`, `ConnectionReset`, …); an error once the
    /// runtime shut down.
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        conn::send(&self.socket(), buf).await
    }

    /// Sends `buf`'s initialized bytes without copying them into the kernel
    /// (`IORING_OP_SEND_ZC` on a TCP or UDP socket), giving the buffer back
    /// once the kernel's notification says it no longer reads it; a plain
    /// [`send`](Self::send) where zero-copy is unavailable. See
    /// [`TcpStream::send_zc`](crate::net::TcpStream::send_zc).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Self::send); a dropped send's buffer is
    /// kept until the notification.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_zc<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        conn::send_zc(&self.socket(), buf).await
    }

    /// Sends all of `buf`'s initialized bytes, continuing after short sends.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// The first send error; `WriteZero` if the kernel accepted nothing.
    pub async fn send_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        conn::write_all(&self.socket(), buf).await
    }

    /// Receives into each buffer in turn, one `RECV` per buffer, so the bytes
    /// land in the buffers in stream order (on a datagram socket: the next
    /// datagram per buffer). Each receive waits for data. Gives every buffer
    /// back with its result, in the order given; after end of stream (a `0`)
    /// or an error, the remaining buffers come back unused with `Ok(0)`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: buffers already filled are dropped with the future
    /// (the receive still in flight is kept, as for [`recv_into`](Self::recv_into)).
    ///
    /// # Errors
    ///
    /// Each entry carries its own receive's error, as [`recv`](Self::recv).
    pub async fn recv_batch_into<B: IoBufMut>(&self, bufs: Vec<B>) -> Vec<BufResult<usize, B>> {
        let sock = self.socket();
        let mut out = Vec::with_capacity(bufs.len());
        let mut stopped = false;
        for buf in bufs {
            if stopped {
                out.push((Ok(0), buf));
                continue;
            }
            let (res, buf) = conn::recv(&sock, buf).await;
            stopped = !matches!(res, Ok(n) if n > 0);
            out.push((res, buf));
        }
        out
    }

    /// A receiver that keeps one multishot `RECV` armed on this fd's shard,
    /// selecting from a provided-buffer ring of its own (16 buffers of 16 KiB);
    /// see [`RecvStream`]. Works from any thread: the ring is registered on
    /// the bound shard. `ENOBUFS` (every buffer full) and a multishot the
    /// kernel ended without `F_MORE` are absorbed by re-arming; dropping the
    /// stream cancels the op, and its buffers are freed with the op's final
    /// completion. Chunks received but not yet taken are not lost: the fd
    /// keeps them for its next receive (see [`RecvStream`]). On the Queue
    /// backend each call is one plain receive.
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let rt = spargio::Runtime::new().unwrap();
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// let bound = rt.handle().bind_tcp_stream(listener.accept().unwrap().0);
    /// peer.write_all(b"multishot").unwrap();
    /// drop(peer);
    /// let all = rt
    ///     .block_on(async move {
    ///         let mut rs = bound.recv_multishot();
    ///         let mut all = Vec::new();
    ///         while rs.next_into(&mut all).await? > 0 {}
    ///         Ok::<_, std::io::Error>(all)
    ///     })
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(all, b"multishot");
    /// ```
    pub fn recv_multishot(&self) -> RecvStream {
        self.recv_multishot_with(DEFAULT_BUFFERS, DEFAULT_BUFFER_LEN)
    }

    /// As [`recv_multishot`](Self::recv_multishot), with `buffers` (a power of
    /// two up to 32768) provided buffers of `buf_len` bytes.
    pub fn recv_multishot_with(&self, buffers: u16, buf_len: u32) -> RecvStream {
        RecvStream::new(self.socket(), buffers, buf_len)
    }

    /// As [`recv_multishot_with`](Self::recv_multishot_with), yielding a
    /// batch of segments per await: every chunk already received when the
    /// caller wakes, appended to the caller's buffer with each chunk's length
    /// (on a datagram socket a segment is one datagram).
    ///
    /// ```
    /// let rt = spargio::Runtime::new().unwrap();
    /// let (a, b) = (std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    /// a.connect(b.local_addr().unwrap()).unwrap();
    /// b.connect(a.local_addr().unwrap()).unwrap();
    /// a.send(b"one").unwrap();
    /// a.send(b"three").unwrap();
    /// let bound = rt.handle().bind_udp_socket(b);
    /// let (data, lens) = rt
    ///     .block_on(async move {
    ///         let mut segs = bound.recv_multishot_segments(4, 2048);
    ///         let (mut data, mut lens) = (Vec::new(), Vec::new());
    ///         while lens.len() < 2 {
    ///             segs.next_into(&mut data, &mut lens).await?;
    ///         }
    ///         Ok::<_, std::io::Error>((data, lens))
    ///     })
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!((data.as_slice(), lens.as_slice()), (&b"onethree"[..], &[3, 5][..]));
    /// ```
    pub fn recv_multishot_segments(&self, buffers: u16, buf_len: u32) -> RecvSegments {
        RecvSegments {
            stream: self.recv_multishot_with(buffers, buf_len),
            max: usize::from(buffers.max(1)),
        }
    }

    /// Submits one send per buffer, all in flight at once, and gives each
    /// buffer back with its result, in the order given. Each result is that
    /// of one `SEND` (a count that may be short on a stream).
    ///
    /// Meant for datagram sockets: on a stream socket the bytes of sends in
    /// flight together may interleave (see [the native lane](crate::native#batches-on-a-stream-socket)); use
    /// [`send_all_batch`](Self::send_all_batch) there.
    ///
    /// # Errors
    ///
    /// Each entry carries its own send's error, as [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped, any of the sends may have happened.
    pub async fn send_batch<B: IoBuf>(&self, bufs: Vec<B>) -> Vec<BufResult<usize, B>> {
        let sock = self.socket();
        join_in_order(bufs.into_iter().map(|b| conn::send(&sock, b)).collect()).await
    }

    /// Sends every buffer whole, in order, and gives them all back (in the
    /// order given) with the total byte count.
    ///
    /// On a stream socket byte order is kept: runs of up to `window` buffers
    /// shorter than 64 KiB are copied into one contiguous send, longer ones go
    /// on their own, and each send is continued until whole before the next
    /// one starts, since concurrent sends on one stream may interleave partial
    /// writes. On a datagram socket up to `window` sends (one datagram per
    /// buffer) are in flight at once. A `window` of 0 counts as 1.
    ///
    /// # Errors
    ///
    /// The first error (buffers after it may not have been sent); `WriteZero`
    /// when the kernel accepted nothing or sent a datagram short.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send_batch`](Self::send_batch).
    pub async fn send_all_batch<B>(&self, bufs: Vec<B>, window: usize) -> BufResult<usize, Vec<B>>
    where
        B: IoBuf + AsRef<[u8]>,
    {
        let window = window.max(1);
        let mut done = Vec::with_capacity(bufs.len());
        let res = match self.is_stream() {
            Ok(true) => self.send_stream_runs(bufs, window, &mut done).await,
            Ok(false) => self.send_datagram_windows(bufs, window, &mut done).await,
            Err(e) => {
                done = bufs;
                Err(e)
            }
        };
        (res, done)
    }

    async fn send_stream_runs<B>(&self, bufs: Vec<B>, window: usize, done: &mut Vec<B>) -> io::Result<usize>
    where
        B: IoBuf + AsRef<[u8]>,
    {
        let sock = self.socket();
        let mut total = 0;
        let mut staging = Vec::new();
        let mut rest = bufs.into_iter().peekable();
        let mut failed = None;
        while failed.is_none() {
            let Some(first) = rest.next() else { break };
            if first.as_ref().len() >= COALESCE_LIMIT {
                let len = first.as_ref().len();
                let (res, back) = conn::write_all(&sock, first).await;
                done.push(back);
                match res {
                    Ok(()) => total += len,
                    Err(e) => failed = Some(e),
                }
                continue;
            }
            staging.clear();
            staging.extend_from_slice(first.as_ref());
            done.push(first);
            let mut run = 1;
            while run < window
                && let Some(next) = rest.next_if(|b| b.as_ref().len() < COALESCE_LIMIT)
            {
                staging.extend_from_slice(next.as_ref());
                done.push(next);
                run += 1;
            }
            let (res, back) = conn::write_all(&sock, staging).await;
            staging = back;
            match res {
                Ok(()) => total += staging.len(),
                Err(e) => failed = Some(e),
            }
        }
        done.extend(rest);
        failed.map_or(Ok(total), Err)
    }

    async fn send_datagram_windows<B: IoBuf>(
        &self,
        bufs: Vec<B>,
        window: usize,
        done: &mut Vec<B>,
    ) -> io::Result<usize> {
        let sock = self.socket();
        let mut total = 0;
        let mut failed = None;
        let mut rest = bufs.into_iter();
        while failed.is_none() {
            let chunk: Vec<B> = rest.by_ref().take(window).collect();
            if chunk.is_empty() {
                break;
            }
            let sends = chunk.into_iter().map(|b| {
                let want = b.bytes_init();
                let sock = &sock;
                async move {
                    let (res, b) = conn::send(sock, b).await;
                    let res = match res {
                        Ok(n) if n == want => Ok(n),
                        Ok(_) => Err(io::Error::new(io::ErrorKind::WriteZero, "datagram sent short")),
                        Err(e) => Err(e),
                    };
                    (res, b)
                }
            });
            for (res, b) in join_in_order(sends.collect()).await {
                done.push(b);
                match res {
                    Ok(n) => total += n,
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
        }
        done.extend(rest);
        failed.map_or(Ok(total), Err)
    }
}

/// A multishot receiver yielding batches of segments, made by
/// [`UringBoundFd::recv_multishot_segments`].
///
/// Each [`next_into`](RecvSegments::next_into) waits for at least one chunk
/// and then takes every chunk already received (at most one per provided
/// buffer), so a busy socket costs one wake-up per batch, not per chunk.
#[derive(Debug)]
pub struct RecvSegments {
    stream: RecvStream,
    max: usize,
}

impl RecvSegments {
    /// Waits for data, appends every chunk already received to `out` and
    /// pushes each chunk's length to `lens`. Returns the number of segments
    /// appended; `0` means end of stream (and every later call returns `0`).
    ///
    /// # Errors
    ///
    /// The receive error (`ConnectionReset`, …); an error once the runtime
    /// shut down. An error met after a batch already held segments is
    /// returned by the next call. `ENOBUFS` is absorbed by re-arming.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`RecvStream::next_into`].
    pub async fn next_into(&mut self, out: &mut Vec<u8>, lens: &mut Vec<usize>) -> io::Result<usize> {
        self.stream.next_batch_into(out, lens, self.max).await
    }

    /// True when a multishot receive with provided buffers runs (known after
    /// the first [`next_into`](Self::next_into)).
    pub fn is_multishot(&self) -> bool {
        self.stream.is_multishot()
    }
}
