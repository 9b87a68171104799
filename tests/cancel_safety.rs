//! Cancel safety of receives, on the real kernel and both backends: a
//! receive whose future is dropped (a zero or very short timeout, a
//! select-style race that polls it once) after the kernel already copied
//! data must not lose that data. Stream readers reconstruct a numbered byte
//! sequence of several MiB exactly; datagram readers see every datagram
//! exactly once.
#![forbid(unsafe_code)]

mod common;

use std::future::{Future, poll_fn};
use std::io::Write;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use common::runtime_on as runtime;
use spargio::io::BufResult;
use spargio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixStream};
use spargio::time::timeout;
use spargio::{Backend, Runtime};

const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Queue];

/// Bytes each stream test sends.
fn stream_len(backend: Backend) -> usize {
    match (cfg!(debug_assertions), backend) {
        (false, _) => 8 << 20,
        (true, Backend::IoUring) => 4 << 20,
        (true, Backend::Queue) => 2 << 20,
    }
}

/// Receives (most of them cancelled) a stream test makes at most; the rest is
/// read with plain receives.
fn max_cancel_rounds(backend: Backend) -> usize {
    match (cfg!(debug_assertions), backend) {
        (false, Backend::IoUring) => 100_000,
        (false, Backend::Queue) => 30_000,
        (true, Backend::IoUring) => 50_000,
        (true, Backend::Queue) => 10_000,
    }
}

/// Byte `i` of the numbered sequence: a hash of its index, so a lost, repeated
/// or reordered run of bytes shows.
fn seq_byte(i: usize) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8
}

fn sequence(len: usize) -> Vec<u8> {
    (0..len).map(seq_byte).collect()
}

/// Receive sizes, cycled: small ones leave parts of a stashed chunk behind.
const SIZES: [usize; 8] = [1, 7, 100, 250, 64, 4096, 13, 80];

/// Wakes itself and returns `Pending` once, so the shard reaps completions.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Polls `fut` once with the task's waker, then drops it (a lost `select!` race).
async fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// How one receive of a test runs.
#[derive(Clone, Copy, Debug)]
enum Race {
    /// `timeout(0, recv)`: polled once, then dropped unless it was ready.
    ZeroTimeout,
    /// Polled once by hand, then dropped.
    PollOnce,
    /// `timeout(20 µs, recv)`.
    ShortTimeout,
    /// `timeout(2 ms, recv)`.
    LongerTimeout,
}

const RACES: [Race; 7] = [
    Race::ZeroTimeout,
    Race::PollOnce,
    Race::ZeroTimeout,
    Race::ShortTimeout,
    Race::PollOnce,
    Race::ZeroTimeout,
    Race::LongerTimeout,
];

/// Runs `fut` as `race` says; `None` when it was dropped unfinished.
async fn race<F: Future>(race: Race, fut: F) -> Option<F::Output> {
    match race {
        Race::ZeroTimeout => timeout(Duration::ZERO, fut).await.ok(),
        Race::PollOnce => poll_once(fut).await,
        Race::ShortTimeout => timeout(Duration::from_micros(20), fut).await.ok(),
        Race::LongerTimeout => timeout(Duration::from_millis(2), fut).await.ok(),
    }
}

/// Reads `len` bytes through `recv`, racing most receives against a drop, and
/// returns them with the number of receives that were dropped.
async fn read_racing<F, Fut>(backend: Backend, len: usize, recv: F) -> (Vec<u8>, usize)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = BufResult<usize, Vec<u8>>>,
{
    let mut got = Vec::with_capacity(len);
    let mut dropped = 0;
    let mut round = 0;
    while got.len() < len {
        let size = SIZES[round % SIZES.len()];
        let fut = recv(Vec::with_capacity(size));
        let out = if round < max_cancel_rounds(backend) {
            race(RACES[round % RACES.len()], fut).await
        } else {
            Some(fut.await)
        };
        round += 1;
        match out {
            Some((res, buf)) => {
                let n = res.unwrap_or_else(|e| panic!("receive {round} failed: {e}"));
                assert!(n > 0, "end of stream after {} of {len} bytes", got.len());
                assert_eq!(buf.len(), n);
                let at = got.len();
                got.extend_from_slice(&buf);
                check_prefix(&got, at);
            }
            None => {
                dropped += 1;
                yield_now().await;
            }
        }
    }
    eprintln!("  {len} bytes in {round} receives, {dropped} dropped");
    (got, dropped)
}

/// Checks the bytes of `got` from `from` on against the sequence, so a loss
/// fails at once instead of waiting for bytes that never come.
fn check_prefix(got: &[u8], from: usize) {
    if let Some(at) = (from..got.len()).find(|&i| got[i] != seq_byte(i)) {
        panic!("byte {at} differs: bytes were lost, repeated or reordered");
    }
}

/// Checks a received stream against the sequence, naming the first difference.
fn check_sequence(what: &str, got: &[u8], len: usize) {
    assert_eq!(got.len(), len, "{what}: length");
    if let Some(at) = (0..len).find(|&i| got[i] != seq_byte(i)) {
        panic!("{what}: byte {at} differs: bytes were lost, repeated or reordered");
    }
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

fn on_backends(name: &str, f: impl Fn(Backend, &Runtime)) {
    for backend in BACKENDS {
        let rt = runtime(backend);
        eprintln!("{name} on {backend:?}");
        f(backend, &rt);
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A spargio TCP stream and the std client connected to it.
fn tcp_pair(rt: &Runtime) -> (TcpStream, std::net::TcpStream) {
    rt.block_on(async {
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || std::net::TcpStream::connect(addr).unwrap());
        let (server, _) = listener.accept().await.unwrap();
        (server, client.join().unwrap())
    })
    .unwrap()
}

#[test]
fn tcp_stream_recv_dropped_mid_flight_loses_no_bytes() {
    on_backends("tcp stream", |backend, rt| {
        let len = stream_len(backend);
        let (server, peer) = tcp_pair(rt);
        let writer = spawn_writer(peer, len);
        let (got, dropped) = rt
            .block_on(async move { read_racing(backend, len, |b| server.recv(b)).await })
            .unwrap();
        writer.join().unwrap();
        // On the Queue backend a receive whose data is already there finishes
        // before its first poll returns, so none may be dropped at all.
        assert!(dropped > 0 || backend == Backend::Queue, "no receive was dropped");
        check_sequence("tcp", &got, len);
    });
}

#[test]
fn tcp_read_half_recv_dropped_mid_flight_loses_no_bytes() {
    on_backends("tcp read half", |backend, rt| {
        let len = stream_len(backend) / 2;
        let (server, peer) = tcp_pair(rt);
        let writer = spawn_writer(peer, len);
        let (got, _) = rt
            .block_on(async move {
                let (read, _write) = server.into_split();
                read_racing(backend, len, |b| read.recv(b)).await
            })
            .unwrap();
        writer.join().unwrap();
        check_sequence("tcp read half", &got, len);
    });
}

#[test]
fn bound_fd_recv_into_dropped_mid_flight_loses_no_bytes() {
    on_backends("bound fd", |backend, rt| {
        let len = stream_len(backend) / 2;
        let listener = std::net::TcpListener::bind(localhost()).unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let bound = rt.handle().bind_tcp_stream(listener.accept().unwrap().0);
        let writer = spawn_writer(peer, len);
        let (got, _) = rt
            .block_on(async move { read_racing(backend, len, |b| bound.recv_into(b)).await })
            .unwrap();
        writer.join().unwrap();
        check_sequence("bound fd", &got, len);
    });
}

#[test]
fn unix_stream_recv_dropped_mid_flight_loses_no_bytes() {
    on_backends("unix stream", |backend, rt| {
        let len = stream_len(backend);
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = spawn_writer(peer, len);
        let (got, dropped) = rt
            .block_on(async move {
                let ours = UnixStream::from_std(ours).unwrap();
                read_racing(backend, len, |b| ours.recv(b)).await
            })
            .unwrap();
        writer.join().unwrap();
        // On the Queue backend a receive whose data is already there finishes
        // before its first poll returns, so none may be dropped at all.
        assert!(dropped > 0 || backend == Backend::Queue, "no receive was dropped");
        check_sequence("unix", &got, len);
    });
}

/// A receive dropped while an earlier dropped receive is still in flight must
/// not overtake it, and a stream read after a dropped multishot receiver
/// starts where that receiver stopped.
#[test]
fn recv_stream_dropped_mid_flight_hands_its_tail_to_the_next_receive() {
    on_backends("recv stream", |backend, rt| {
        let len = stream_len(backend) / 2;
        let (server, peer) = tcp_pair(rt);
        let writer = spawn_writer(peer, len);
        let got = rt
            .block_on(async move {
                let mut got = Vec::with_capacity(len);
                let mut round = 0usize;
                while got.len() < len {
                    round += 1;
                    if round.is_multiple_of(3) {
                        // A plain receive, itself raced against a drop.
                        let at = got.len();
                        if let Some((res, buf)) =
                            race(RACES[round % RACES.len()], server.recv(Vec::with_capacity(5000))).await
                        {
                            assert!(res.unwrap() > 0, "end of stream after {at} of {len} bytes");
                            got.extend_from_slice(&buf);
                        }
                        check_prefix(&got, at);
                        yield_now().await;
                        continue;
                    }
                    // A multishot receiver that takes a few chunks, one more
                    // chunk raced against a drop, and is then dropped with
                    // whatever it has not handed out.
                    let at = got.len();
                    let mut rs = server.recv_stream_with(4, 4096);
                    for _ in 0..(round % 4) {
                        if got.len() >= len {
                            break;
                        }
                        let n = rs.next_into(&mut got).await.unwrap();
                        assert!(n > 0, "end of stream after {} of {len} bytes", got.len());
                    }
                    let _ = race(Race::PollOnce, rs.next_into(&mut got)).await;
                    drop(rs);
                    check_prefix(&got, at);
                    yield_now().await;
                }
                got
            })
            .unwrap();
        writer.join().unwrap();
        check_sequence("recv stream", &got, len);
    });
}

/// Datagrams each test sends.
fn datagram_count(backend: Backend) -> usize {
    match (cfg!(debug_assertions), backend) {
        (false, _) => 20_000,
        (true, Backend::IoUring) => 10_000,
        (true, Backend::Queue) => 3_000,
    }
}

/// Datagram `seq`: its number, then a payload of a length that varies with it.
fn datagram(seq: usize) -> Vec<u8> {
    let mut d = (seq as u32).to_le_bytes().to_vec();
    d.extend((0..seq % 300).map(|i| seq_byte(seq + i)));
    d
}

/// Checks datagram `d` and returns its number.
fn datagram_seq(d: &[u8]) -> usize {
    let seq = u32::from_le_bytes(d[..4].try_into().unwrap()) as usize;
    assert_eq!(d, datagram(seq), "datagram {seq} arrived corrupt");
    seq
}

/// How long a datagram reader waits for the next datagram before it declares
/// the rest lost (a liveness bound, not a speed check).
const SILENCE: Duration = Duration::from_secs(10);

/// A receiving method of a datagram test.
type RecvResult = (std::io::Result<(usize, Option<String>)>, Vec<u8>);

/// Receives `count` datagrams through `recv` (which alternates methods),
/// racing most receives, and checks that each arrived exactly once.
/// `received` counts them for the sender's flow control.
async fn datagrams_racing<F, Fut>(backend: Backend, count: usize, received: &AtomicUsize, recv: F)
where
    F: Fn(usize, Vec<u8>) -> Fut,
    Fut: Future<Output = RecvResult>,
{
    let mut seen = vec![false; count];
    let mut round = 0;
    let mut n_seen = 0;
    let mut last_progress = Instant::now();
    while n_seen < count {
        // Every datagram is sent within moments of the one before it was
        // received: a long silence means some were lost.
        assert!(
            last_progress.elapsed() < SILENCE,
            "{} of {count} datagrams never arrived",
            count - n_seen
        );
        let fut = recv(round, Vec::with_capacity(2048));
        let out = if round < max_cancel_rounds(backend) {
            race(RACES[round % RACES.len()], fut).await
        } else {
            let out = timeout(SILENCE, fut).await;
            assert!(
                out.is_ok(),
                "{} of {count} datagrams never arrived",
                count - n_seen
            );
            out.ok()
        };
        round += 1;
        match out {
            Some((res, buf)) => {
                let (n, from) = res.unwrap_or_else(|e| panic!("receive {round} failed: {e}"));
                assert_eq!(buf.len(), n);
                if let Some(from) = from {
                    assert_eq!(from, "peer", "datagram from the wrong address");
                }
                let seq = datagram_seq(&buf);
                assert!(!seen[seq], "datagram {seq} arrived twice");
                seen[seq] = true;
                n_seen += 1;
                last_progress = Instant::now();
                received.fetch_add(1, Ordering::Release);
            }
            None => yield_now().await,
        }
    }
}

/// Sends datagrams `0..count` through `send`, never more than `window` ahead
/// of the receiver, so a loopback UDP buffer never overflows.
fn spawn_datagram_sender(
    count: usize,
    received: Arc<AtomicUsize>,
    send: impl Fn(&[u8]) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    const WINDOW: usize = 32;
    std::thread::spawn(move || {
        for seq in 0..count {
            while seq >= received.load(Ordering::Acquire) + WINDOW {
                std::thread::sleep(Duration::from_micros(20));
            }
            send(&datagram(seq));
        }
    })
}

#[test]
fn udp_recv_and_recv_from_dropped_mid_flight_lose_no_datagram() {
    on_backends("udp", |backend, rt| {
        let count = datagram_count(backend);
        let sender = std::net::UdpSocket::bind(localhost()).unwrap();
        let ours = std::net::UdpSocket::bind(localhost()).unwrap();
        let (sender_addr, our_addr) = (sender.local_addr().unwrap(), ours.local_addr().unwrap());
        sender.connect(our_addr).unwrap();
        ours.connect(sender_addr).unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let writer = spawn_datagram_sender(count, received.clone(), move |d| {
            sender.send(d).unwrap();
        });
        rt.block_on(async move {
            let ours = UdpSocket::from_std(ours).unwrap();
            datagrams_racing(backend, count, &received, |round, buf| {
                let ours = &ours;
                async move {
                    if round.is_multiple_of(2) {
                        let (res, buf) = ours.recv_from(buf).await;
                        let res = res.map(|(n, from)| {
                            assert_eq!(from, sender_addr, "datagram from the wrong address");
                            (n, Some("peer".to_string()))
                        });
                        (res, buf)
                    } else {
                        let (res, buf) = ours.recv(buf).await;
                        (res.map(|n| (n, None)), buf)
                    }
                }
            })
            .await
        })
        .unwrap();
        writer.join().unwrap();
    });
}

#[test]
fn unix_datagram_recv_and_recv_from_dropped_mid_flight_lose_no_datagram() {
    on_backends("unix datagram", |backend, rt| {
        let count = datagram_count(backend);
        let (ours, sender) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let writer = spawn_datagram_sender(count, received.clone(), move |d| {
            sender.send(d).unwrap();
        });
        rt.block_on(async move {
            let ours = UnixDatagram::from_std(ours).unwrap();
            datagrams_racing(backend, count, &received, |round, buf| {
                let ours = &ours;
                async move {
                    if round.is_multiple_of(2) {
                        let (res, buf) = ours.recv_from(buf).await;
                        (res.map(|(n, _)| (n, Some("peer".to_string()))), buf)
                    } else {
                        let (res, buf) = ours.recv(buf).await;
                        (res.map(|n| (n, None)), buf)
                    }
                }
            })
            .await
        })
        .unwrap();
        writer.join().unwrap();
    });
}
