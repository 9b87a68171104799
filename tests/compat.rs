//! `spargio::compat::Io` on real sockets and files, through Tokio's I/O traits
//! (feature `tokio-io`), the futures crate's (feature `futures-io`) and its
//! own poll methods, on both backends; and its cancel safety: reads raced
//! against a zero timeout, and adapters dropped mid-read, lose no byte of a
//! numbered stream.
#![forbid(unsafe_code)]

mod common;

use std::future::poll_fn;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::runtime_on as runtime;
use spargio::compat::Io;
use spargio::net::{TcpStream, UnixStream};
use spargio::{Backend, Runtime};

const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Queue];

fn on_backends(name: &str, f: impl Fn(Backend, &Runtime)) {
    for backend in BACKENDS {
        if backend == Backend::IoUring
            && let Some(why) = common::io_uring_unavailable()
        {
            eprintln!("SKIPPED: {name} on io_uring: {why}");
            continue;
        }
        let rt = runtime(backend);
        eprintln!("{name} on {backend:?}");
        f(backend, &rt);
    }
}

/// Byte `i` of the numbered sequence: a hash of its index, so a lost,
/// repeated or reordered run of bytes shows.
fn seq_byte(i: usize) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8
}

fn sequence(len: usize) -> Vec<u8> {
    (0..len).map(seq_byte).collect()
}

fn check_sequence(what: &str, got: &[u8], len: usize) {
    if let Some(at) = (0..got.len().min(len)).find(|&i| got[i] != seq_byte(i)) {
        panic!("{what}: byte {at} differs: bytes were lost, repeated or reordered");
    }
    assert_eq!(got.len(), len, "{what}: length");
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A connected pair of spargio TCP streams (client, server side).
#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
async fn tcp_pair() -> (TcpStream, TcpStream) {
    use spargio::RuntimeHandle;
    use spargio::net::TcpListener;
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = RuntimeHandle::current().unwrap();
    let client = handle
        .spawn_stealable(async move { TcpStream::connect(addr).await })
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client.await.unwrap().unwrap(), server)
}

#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("spargio-compat-{}-{name}", std::process::id()))
}

/// A thread writing the sequence to `peer` in uneven chunks, then closing it.
fn spawn_writer<W: Write + Send + 'static>(mut peer: W, len: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let data = sequence(len);
        let mut at = 0;
        let mut k = 0;
        while at < len {
            let n = [3000, 65_536, 17, 200_000, 1448][k % 5].min(len - at);
            peer.write_all(&data[at..at + n]).unwrap();
            at += n;
            k += 1;
        }
    })
}

/// Bytes each cancel-safety test sends.
fn stream_len(backend: Backend) -> usize {
    match (cfg!(debug_assertions), backend) {
        (false, _) => 4 << 20,
        (true, Backend::IoUring) => 2 << 20,
        (true, Backend::Queue) => 1 << 20,
    }
}

// --- the adapter's own poll methods (no feature needed) ------------------------------------------

#[test]
fn poll_methods_move_bytes_and_half_close() {
    on_backends("poll_methods_move_bytes_and_half_close", |_, rt| {
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let (mut a, mut b) = (Io::new(a), Io::new(b));
            let data = sequence(100_000);
            let mut at = 0;
            while at < data.len() {
                // 100 kB fit in the socket's buffer: no reader needed meanwhile.
                at += poll_fn(|cx| a.poll_write(cx, &data[at..])).await.unwrap();
            }
            poll_fn(|cx| a.poll_shutdown(cx)).await.unwrap();
            let mut got = Vec::new();
            loop {
                let mut chunk = vec![0u8; 7000];
                let n = poll_fn(|cx| b.poll_read(cx, &mut chunk)).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            check_sequence("unix stream", &got, data.len());
            // The half-closed side still receives.
            let n = poll_fn(|cx| b.poll_write(cx, b"back")).await.unwrap();
            poll_fn(|cx| b.poll_flush(cx)).await.unwrap();
            let mut back = [0u8; 4];
            let m = poll_fn(|cx| a.poll_read(cx, &mut back)).await.unwrap();
            assert_eq!(&back[..m], &b"back"[..n]);
        })
        .unwrap();
    });
}

#[test]
fn into_inner_gives_read_ahead_bytes_back_to_the_stream() {
    on_backends("into_inner_gives_read_ahead_bytes_back_to_the_stream", |_, rt| {
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            a.write_all(b"hello world".to_vec()).await.0.unwrap();
            let mut b = Io::new(b);
            let mut first = [0u8; 5];
            // The adapter reads ahead (the whole message) and hands out 5 bytes.
            let n = poll_fn(|cx| b.poll_read(cx, &mut first)).await.unwrap();
            assert_eq!(&first[..n], b"hello");
            assert_eq!(b.buffer(), b" world");
            let b = b.into_inner();
            let recv = b.recv(Vec::with_capacity(64));
            let (res, buf) = spargio::time::timeout(Duration::from_secs(10), recv)
                .await
                .expect("the read-ahead bytes are there to receive");
            assert_eq!(res.unwrap(), 6);
            assert_eq!(buf, b" world", "read-ahead bytes come back first");
        })
        .unwrap();
    });
}

#[test]
fn a_send_error_is_reported_by_a_later_call() {
    on_backends("a_send_error_is_reported_by_a_later_call", |_, rt| {
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            drop(b);
            let mut a = Io::new(a);
            // The first write may be accepted before its send fails; a later
            // write or the flush reports the broken pipe.
            let mut err = None;
            for _ in 0..4 {
                let res = match poll_fn(|cx| a.poll_write(cx, b"data")).await {
                    Ok(_) => poll_fn(|cx| a.poll_flush(cx)).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = res {
                    err = Some(e);
                    break;
                }
            }
            let err = err.expect("writing to a closed peer fails");
            assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
        })
        .unwrap();
    });
}

/// Which read a cancel-safety test races against a zero timeout.
#[derive(Clone, Copy, Debug)]
enum ReadVia {
    /// `Io::poll_read`, through `poll_fn`.
    Poll,
    /// `tokio::io::AsyncReadExt::read`.
    #[cfg(feature = "tokio-io")]
    Tokio,
}

/// `fut` under a zero timeout when `cancel` (`None`: dropped unfinished), else to completion.
async fn race<F: std::future::Future>(cancel: bool, fut: F) -> Option<F::Output> {
    if cancel {
        spargio::time::timeout(Duration::ZERO, fut).await.ok()
    } else {
        Some(fut.await)
    }
}

/// Reads the numbered stream with `via`'s read raced against a zero timeout;
/// every few rounds the adapter is dropped (mid-read, or holding read-ahead
/// bytes) and rebuilt on the same stream.
fn read_cancelled(backend: Backend, via: ReadVia, rt: &Runtime, reader: TcpStream, len: usize) {
    rt.block_on(async move {
        let mut io = Some(Io::with_buf_len(reader, 1024));
        let mut got = Vec::with_capacity(len);
        let (mut round, mut dropped, mut rebuilt) = (0usize, 0usize, 0usize);
        let sizes = [1usize, 7, 100, 4096, 13, 80, 2000];
        while got.len() < len {
            let size = sizes[round % sizes.len()];
            let mut buf = vec![0u8; size];
            let r = io.as_mut().unwrap();
            let cancel = round < 20_000;
            let res = match via {
                ReadVia::Poll => race(cancel, poll_fn(|cx| r.poll_read(cx, &mut buf))).await,
                #[cfg(feature = "tokio-io")]
                ReadVia::Tokio => race(cancel, tokio::io::AsyncReadExt::read(r, &mut buf)).await,
            };
            round += 1;
            match res {
                Some(res) => {
                    let n = res.unwrap();
                    assert!(
                        n > 0,
                        "end of stream after {} of {len} bytes ({backend:?})",
                        got.len()
                    );
                    got.extend_from_slice(&buf[..n]);
                    if round % 11 == 0 {
                        // Drop the adapter with read-ahead bytes it may
                        // hold: they go back to the stream.
                        let stream = io.take().unwrap().into_inner();
                        io = Some(Io::with_buf_len(stream, 1024));
                        rebuilt += 1;
                    }
                }
                None => {
                    dropped += 1;
                    if dropped % 5 == 0 {
                        // Drop the adapter with its receive (and maybe
                        // read-ahead bytes) in flight: the stream keeps them.
                        let stream = io.take().unwrap().into_inner();
                        io = Some(Io::with_buf_len(stream, 1024));
                        rebuilt += 1;
                    }
                }
            }
        }
        let mut tail = [0u8; 1];
        let r = io.as_mut().unwrap();
        assert_eq!(
            poll_fn(|cx| r.poll_read(cx, &mut tail)).await.unwrap(),
            0,
            "end of stream"
        );
        eprintln!("  {len} bytes in {round} reads, {dropped} timed out, {rebuilt} adapters rebuilt");
        check_sequence("reads under zero timeouts", &got, len);
    })
    .unwrap();
}

/// A std thread writes the numbered stream into a TCP connection that
/// [`read_cancelled`] reads, on both backends.
fn numbered_stream_under_zero_timeouts(name: &str, via: ReadVia) {
    on_backends(name, |backend, rt| {
        let listener = std::net::TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let len = stream_len(backend);
        let peer = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let writer = spawn_writer(peer, len);
        let reader = TcpStream::from_std(server).unwrap();
        read_cancelled(backend, via, rt, reader, len);
        writer.join().unwrap();
    });
}

#[test]
fn zero_timeout_poll_reads_and_dropped_adapters_lose_no_bytes() {
    numbered_stream_under_zero_timeouts("poll zero_timeout_reads", ReadVia::Poll);
}

// --- Tokio's traits ----------------------------------------------------------------------------

#[cfg(feature = "tokio-io")]
mod tokio_traits {
    use super::*;
    use spargio::RuntimeHandle;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    #[test]
    fn tcp_echo_through_split_halves_with_copy() {
        on_backends("tcp_echo_through_split_halves_with_copy", |_, rt| {
            rt.block_on(async {
                let (client, server) = tcp_pair().await;
                let echo = RuntimeHandle::current()
                    .unwrap()
                    .spawn_stealable(async move {
                        let (r, w) = server.into_split();
                        let (mut r, mut w) = (Io::new(r), Io::new(w));
                        let n = tokio::io::copy(&mut r, &mut w).await?;
                        w.shutdown().await?;
                        Ok::<_, std::io::Error>(n)
                    })
                    .unwrap();
                let data = sequence(1 << 20);
                let (r, w) = client.into_split();
                let (mut r, mut w) = (Io::new(r), Io::new(w));
                let send = data.clone();
                let writer = RuntimeHandle::current()
                    .unwrap()
                    .spawn_stealable(async move {
                        w.write_all(&send).await?;
                        w.shutdown().await?;
                        Ok::<_, std::io::Error>(())
                    })
                    .unwrap();
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                writer.await.unwrap().unwrap();
                assert_eq!(echo.await.unwrap().unwrap(), data.len() as u64);
                check_sequence("echo", &got, data.len());
            })
            .unwrap();
        });
    }

    #[test]
    fn vectored_writes_and_buffered_lines_on_a_unix_stream() {
        on_backends("vectored_writes_and_buffered_lines_on_a_unix_stream", |_, rt| {
            rt.block_on(async {
                let (a, b) = UnixStream::pair().unwrap();
                let (mut a, b) = (Io::new(a), Io::new(b));
                assert!(tokio::io::AsyncWrite::is_write_vectored(&a));
                let bufs = [
                    std::io::IoSlice::new(b"first "),
                    std::io::IoSlice::new(b"line\nsecond"),
                    std::io::IoSlice::new(b" line\n"),
                ];
                let n = a.write_vectored(&bufs).await.unwrap();
                assert_eq!(n, 23, "the slices are gathered into one send");
                a.shutdown().await.unwrap();
                let mut lines = BufReader::new(b).lines();
                assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("first line"));
                assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("second line"));
                assert_eq!(lines.next_line().await.unwrap(), None);
            })
            .unwrap();
        });
    }

    #[test]
    fn file_reads_and_writes_share_one_position() {
        on_backends("file_reads_and_writes_share_one_position", |_, rt| {
            rt.block_on(async {
                let path = temp_path("tokio-file");
                let file = spargio::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .await
                    .unwrap();
                let mut io = Io::with_buf_len(file, 4096);
                let data = sequence(100_000);
                io.write_all(&data).await.unwrap();
                io.flush().await.unwrap();
                // The position is at the end: nothing more to read.
                let mut rest = Vec::new();
                assert_eq!(io.read_to_end(&mut rest).await.unwrap(), 0);
                let file = io.into_inner();
                let mut io = Io::new(file);
                let mut head = [0u8; 4];
                io.read_exact(&mut head).await.unwrap();
                assert_eq!(head, data[..4]);
                // A write goes where the reader stands, not past its read-ahead.
                io.write_all(b"XY").await.unwrap();
                let mut tail = Vec::new();
                io.read_to_end(&mut tail).await.unwrap();
                assert_eq!(tail, data[6..]);
                let file = io.into_inner();
                let all = file.read_to_end_at(0).await.unwrap();
                let mut want = data.clone();
                want[4..6].copy_from_slice(b"XY");
                assert_eq!(all, want);
                spargio::fs::remove_file(&path).await.unwrap();
            })
            .unwrap();
        });
    }

    #[test]
    fn zero_timeout_reads_and_dropped_adapters_lose_no_bytes() {
        numbered_stream_under_zero_timeouts("tokio zero_timeout_reads", ReadVia::Tokio);
    }
}

// --- the futures crate's traits ----------------------------------------------------------------

#[cfg(feature = "futures-io")]
mod futures_traits {
    use std::pin::Pin;

    use super::*;
    use futures_io::{AsyncBufRead, AsyncRead, AsyncWrite};
    use spargio::RuntimeHandle;

    async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *w).poll_write(cx, data)).await?;
            data = &data[n..];
        }
        poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await
    }

    async fn close<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
        poll_fn(|cx| Pin::new(&mut *w).poll_close(cx)).await
    }

    async fn read_to_end<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 3000];
        loop {
            let n = poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, &mut chunk)).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }

    #[test]
    fn tcp_round_trip_and_close() {
        on_backends("futures tcp_round_trip_and_close", |_, rt| {
            rt.block_on(async {
                let (client, server) = tcp_pair().await;
                let data = sequence(300_000);
                let send = data.clone();
                let writer = RuntimeHandle::current()
                    .unwrap()
                    .spawn_stealable(async move {
                        let mut w = Io::new(client);
                        write_all(&mut w, &send).await?;
                        close(&mut w).await?;
                        // After the half-close the client still reads the reply.
                        read_to_end(&mut w).await
                    })
                    .unwrap();
                let mut s = Io::new(server);
                let got = read_to_end(&mut s).await.unwrap();
                check_sequence("futures tcp", &got, data.len());
                write_all(&mut s, b"done").await.unwrap();
                close(&mut s).await.unwrap();
                assert_eq!(writer.await.unwrap().unwrap(), b"done");
            })
            .unwrap();
        });
    }

    #[test]
    fn buffered_reads_of_a_file() {
        on_backends("futures buffered_reads_of_a_file", |_, rt| {
            rt.block_on(async {
                let path = temp_path("futures-file");
                let data = sequence(50_000);
                let mut w = Io::new(spargio::fs::File::create(&path).await.unwrap());
                write_all(&mut w, &data).await.unwrap();
                close(&mut w).await.unwrap();
                let mut r = Io::with_buf_len(spargio::fs::File::open(&path).await.unwrap(), 1000);
                let head = poll_fn(|cx| Pin::new(&mut r).poll_fill_buf(cx).map_ok(<[u8]>::to_vec))
                    .await
                    .unwrap();
                assert_eq!(head, data[..1000], "one buffer's worth");
                Pin::new(&mut r).consume(10);
                let rest = read_to_end(&mut r).await.unwrap();
                assert_eq!(rest, data[10..]);
                spargio::fs::remove_file(&path).await.unwrap();
            })
            .unwrap();
        });
    }
}
