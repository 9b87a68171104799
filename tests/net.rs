//! The networking API against the real kernel, on both backends (io_uring and
//! Queue): round trips, peers that reset or half-close, sockets shut down
//! behind the runtime, cancellation of multishot ops, shutdown with I/O
//! outstanding, and close-on-exec. Only loopback and Unix sockets are used.
#![forbid(unsafe_code)]

mod common;

use common::runtime_on as runtime;

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use spargio::io::IoBuf;
use spargio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};
use spargio::{Backend, RuntimeBuilder, RuntimeHandle};

/// A liveness bound for anything a test waits for (a hang, not a speed check).
const HANG: Duration = Duration::from_secs(60);

const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Queue];

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Aborts the process when a test hangs, naming it.
struct Watchdog(Option<mpsc::Sender<()>>);

fn watchdog(name: &'static str) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(HANG) {
            eprintln!("test `{name}` hung for {HANG:?}");
            std::process::abort();
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs `f` on both backends, each on a fresh runtime.
fn on_both<F, Fut>(name: &'static str, f: F)
where
    F: Fn(Backend, RuntimeHandle) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    for backend in BACKENDS {
        let _dog = watchdog(name);
        let rt = runtime(backend);
        let fut = f(backend, rt.handle().clone());
        if let Err(e) = rt.block_on(fut) {
            panic!("{name} on {backend:?}: {e}");
        }
    }
}

/// Yields once to the scheduler.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx: &mut Context<'_>| {
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

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("spargio-net-{}-{tag}-{n}", std::process::id()))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Connects a plain std client (in a thread) and accepts it with spargio.
async fn accepted_pair(listener: &TcpListener) -> (TcpStream, std::net::TcpStream) {
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || std::net::TcpStream::connect(addr).unwrap());
    let (server, peer) = listener.accept().await.unwrap();
    let client = client.join().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    (server, client)
}

#[test]
fn tcp_echo_round_trip() {
    on_both("tcp_echo_round_trip", |_, handle| async move {
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = handle
            .spawn_stealable(async move {
                let (stream, peer) = listener.accept().await.unwrap();
                assert_eq!(stream.peer_addr().unwrap(), peer);
                let mut buf = Vec::with_capacity(1000);
                loop {
                    let (res, b) = stream.recv(buf).await;
                    let n = res.unwrap();
                    if n == 0 {
                        return;
                    }
                    let (res, b) = stream.write_all(b.slice(..n)).await;
                    res.unwrap();
                    buf = b.into_inner();
                    buf.clear();
                }
            })
            .unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        assert!(client.nodelay().unwrap());
        assert_eq!(client.peer_addr().unwrap(), addr);
        for round in 0..20u8 {
            let data = pattern(1 + usize::from(round) * 500, round);
            let (res, _) = client.write_all(data.clone()).await;
            res.unwrap();
            let (res, back) = client.read_exact(vec![0u8; data.len()]).await;
            res.unwrap();
            assert_eq!(back, data, "round {round}");
        }
        client.shutdown(Shutdown::Write).await.unwrap();
        server.await.unwrap();
        // The server closed: the client reads end of stream.
        let (res, _) = client.recv(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap(), 0);
    });
}

#[test]
fn split_halves_work_from_different_tasks() {
    on_both("split_halves_work_from_different_tasks", |_, handle| async move {
        let listener = TcpListener::bind(localhost()).unwrap();
        let (server, mut peer) = accepted_pair(&listener).await;
        let (reader, writer) = server.into_split();
        let total = 256 * 1024;
        let sent = pattern(total, 7);
        let to_send = sent.clone();
        let write_task = handle
            .spawn_pinned(1, async move { writer.write_all(to_send).await.0 })
            .unwrap();
        // A std thread echoes everything back and closes after the writer's FIN.
        let echo = std::thread::spawn(move || {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            peer.write_all(&all).unwrap();
        });
        write_task.await.unwrap().unwrap(); // dropping the write half shut down writing
        let read_task = handle
            .spawn_pinned(0, async move {
                let (res, buf) = reader.read_exact(vec![0u8; total]).await;
                res.unwrap();
                let (res, _) = reader.recv(Vec::with_capacity(1)).await;
                assert_eq!(res.unwrap(), 0);
                buf
            })
            .unwrap();
        assert_eq!(read_task.await.unwrap(), sent);
        echo.join().unwrap();
    });
}

#[test]
fn accept_round_robin_hands_connections_to_shards_in_turn() {
    on_both(
        "accept_round_robin_hands_connections_to_shards_in_turn",
        |_, handle| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let addr = listener.local_addr().unwrap();
            let clients = std::thread::spawn(move || {
                (0..6u8)
                    .map(|i| {
                        let mut c = std::net::TcpStream::connect(addr).unwrap();
                        c.write_all(&[i; 3]).unwrap();
                        let mut back = [0u8; 3];
                        c.read_exact(&mut back).unwrap();
                        back
                    })
                    .collect::<Vec<_>>()
            });
            let mut shards = Vec::new();
            for _ in 0..6 {
                let (stream, _, shard) = listener.accept_round_robin().await.unwrap();
                assert_eq!(stream.shard(), Some(shard));
                shards.push(shard);
                handle
                    .spawn_pinned(shard, async move {
                        let (res, buf) = stream.read_exact(vec![0u8; 3]).await;
                        res.unwrap();
                        stream.write_all(buf).await.0.unwrap();
                    })
                    .unwrap();
            }
            let echoed = clients.join().unwrap();
            assert_eq!(echoed, (0..6u8).map(|i| [i; 3]).collect::<Vec<_>>());
            for pair in shards.windows(2) {
                assert_ne!(
                    pair[0], pair[1],
                    "consecutive connections go to different shards: {shards:?}"
                );
            }
        },
    );
}

#[test]
fn a_bound_stream_works_from_a_foreign_thread_task() {
    on_both(
        "a_bound_stream_works_from_a_foreign_thread_task",
        |_, handle| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let (server, mut peer) = accepted_pair(&listener).await;
            let bound = server.bind_to_shard(&handle, 1).unwrap();
            assert!(matches!(
                TcpStream::from_std(std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap())
                    .unwrap()
                    .bind_to_shard(&handle, 9),
                Err(spargio::RuntimeError::NoSuchShard(9))
            ));
            // Submit from shard 0: the op is steered to shard 1's ring.
            bound.write_all(b"steered".to_vec()).await.0.unwrap();
            let mut buf = [0u8; 7];
            peer.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"steered");
        },
    );
}

#[test]
fn udp_round_trips_with_addresses_empty_and_truncated_datagrams() {
    on_both(
        "udp_round_trips_with_addresses_empty_and_truncated_datagrams",
        |_, _| async move {
            let a = UdpSocket::bind(localhost()).unwrap();
            let b = UdpSocket::bind(localhost()).unwrap();
            let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());

            let (res, _) = a.send_to(b"hello udp".to_vec(), b_addr).await;
            assert_eq!(res.unwrap(), 9);
            let (res, buf) = b.recv_from(Vec::with_capacity(64)).await;
            assert_eq!(res.unwrap(), (9, a_addr));
            assert_eq!(buf, b"hello udp");

            // An empty datagram is a datagram.
            let (res, _) = b.send_to(Vec::new(), a_addr).await;
            assert_eq!(res.unwrap(), 0);
            let (res, buf) = a.recv_from(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), (0, b_addr));
            assert!(buf.is_empty());

            // A datagram longer than the buffer is truncated to it.
            a.send_to(pattern(100, 1), b_addr).await.0.unwrap();
            let (res, buf) = b.recv_from(Vec::with_capacity(10)).await;
            assert_eq!(res.unwrap().0, 10);
            assert_eq!(buf, pattern(100, 1)[..10]);

            // Connected: send/recv, peer_addr.
            a.connect(b_addr).await.unwrap();
            b.connect(a_addr).await.unwrap();
            assert_eq!(a.peer_addr().unwrap(), b_addr);
            a.send(b"conn".to_vec()).await.0.unwrap();
            let (res, buf) = b.recv(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, b"conn");

            // IPv6 loopback, where the host has it.
            if let Ok(v6) = UdpSocket::bind("[::1]:0".parse().unwrap()) {
                let v6b = UdpSocket::bind("[::1]:0".parse().unwrap()).unwrap();
                v6.send_to(b"six".to_vec(), v6b.local_addr().unwrap())
                    .await
                    .0
                    .unwrap();
                let (res, _) = v6b.recv_from(Vec::with_capacity(8)).await;
                assert_eq!(res.unwrap(), (3, v6.local_addr().unwrap()));
            }
        },
    );
}

#[test]
fn unix_stream_and_datagram_round_trips() {
    on_both("unix_stream_and_datagram_round_trips", |_, handle| async move {
        let path = temp_path("stream.sock");
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(path.as_path()));
        let server = handle
            .spawn_stealable(async move {
                let (stream, peer) = listener.accept().await.unwrap();
                assert!(peer.is_unnamed());
                let (res, buf) = stream.read_exact(vec![0u8; 5]).await;
                res.unwrap();
                stream.write_all(buf).await.0.unwrap();
            })
            .unwrap();
        let client = UnixStream::connect(&path).await.unwrap();
        assert_eq!(client.peer_addr().unwrap().as_pathname(), Some(path.as_path()));
        client.write_all(b"unix!".to_vec()).await.0.unwrap();
        let (res, buf) = client.read_exact(vec![0u8; 5]).await;
        res.unwrap();
        assert_eq!(buf, b"unix!");
        server.await.unwrap();
        std::fs::remove_file(&path).unwrap();

        // Connecting to nothing, and to an over-long path.
        let missing = temp_path("missing.sock");
        assert_eq!(
            UnixStream::connect(&missing).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let long = PathBuf::from("/tmp").join("x".repeat(200));
        assert_eq!(
            UnixStream::connect(&long).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );

        // Pairs.
        let (x, y) = UnixStream::pair().unwrap();
        x.write_all(pattern(70_000, 3)).await.0.unwrap();
        let (res, buf) = y.read_exact(vec![0u8; 70_000]).await;
        res.unwrap();
        assert_eq!(buf, pattern(70_000, 3));

        // Datagrams with addresses.
        let (pa, pb) = (temp_path("a.dgram"), temp_path("b.dgram"));
        let a = UnixDatagram::bind(&pa).unwrap();
        let b = UnixDatagram::bind(&pb).unwrap();
        assert_eq!(a.send_to(b"dgram".to_vec(), &pb).await.0.unwrap(), 5);
        let (res, buf) = b.recv_from(Vec::with_capacity(16)).await;
        let (n, from) = res.unwrap();
        assert_eq!(
            (&buf[..n], from.as_pathname()),
            (&b"dgram"[..], Some(pa.as_path()))
        );
        b.connect(&pa).await.unwrap();
        b.send(b"back".to_vec()).await.0.unwrap();
        let (res, buf) = a.recv(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"back");
        let (p, q) = UnixDatagram::pair().unwrap();
        p.send(b"p".to_vec()).await.0.unwrap();
        let (res, _) = q.recv_from(Vec::with_capacity(4)).await;
        let (n, from) = res.unwrap();
        assert_eq!(n, 1);
        assert!(from.is_unnamed());
        let _ = std::fs::remove_file(&pa);
        let _ = std::fs::remove_file(&pb);
    });
}

#[test]
fn connect_refused_is_an_error_and_the_runtime_keeps_serving() {
    on_both(
        "connect_refused_is_an_error_and_the_runtime_keeps_serving",
        |_, _| async move {
            let addr = {
                let l = std::net::TcpListener::bind(localhost()).unwrap();
                l.local_addr().unwrap()
            };
            let e = TcpStream::connect(addr).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
            // Still serving.
            let listener = TcpListener::bind(localhost()).unwrap();
            let (server, mut peer) = accepted_pair(&listener).await;
            server.write_all(b"ok".to_vec()).await.0.unwrap();
            let mut buf = [0u8; 2];
            peer.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ok");
            // Bad input: a port in use.
            let e = TcpListener::bind(listener.local_addr().unwrap()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::AddrInUse);
        },
    );
}

#[test]
fn peer_reset_fails_a_pending_recv_and_send() {
    on_both(
        "peer_reset_fails_a_pending_recv_and_send",
        |_, handle| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let (server, peer) = accepted_pair(&listener).await;
            // Unread data on the peer makes its close a reset (RST), not a FIN.
            server.write_all(b"unread".to_vec()).await.0.unwrap();
            let server = std::sync::Arc::new(server);
            let (s1, s2) = (server.clone(), server.clone());
            let recv = handle
                .spawn_pinned(1, async move { s1.recv(Vec::with_capacity(64)).await.0 })
                .unwrap();
            // The peer never reads: this fills both socket buffers and then waits.
            let send = handle
                .spawn_pinned(1, async move { s2.write_all(vec![0u8; 64 << 20]).await.0 })
                .unwrap();
            std::thread::sleep(Duration::from_millis(200)); // let both go pending (not a timing assertion)
            drop(peer);
            // The kernel reports the reset (ECONNRESET) once, to whichever op looks
            // first; the other then sees end of stream (recv) or EPIPE (send).
            let recv = recv.await.unwrap();
            let send = send.await.unwrap().unwrap_err();
            match &recv {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("recv after a reset: {other:?}"),
            }
            assert!(
                matches!(send.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                "{send}"
            );
            let resets = usize::from(recv.is_err()) + usize::from(send.kind() == ErrorKind::ConnectionReset);
            assert_eq!(
                resets, 1,
                "the reset surfaces exactly once: recv {recv:?}, send {send}"
            );
            // Later sends fail cleanly too (MSG_NOSIGNAL: EPIPE, no signal).
            let e = server.send(b"more".to_vec()).await.0.unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                "{e}"
            );
        },
    );
}

#[test]
fn half_close_gives_zero_reads_while_the_other_direction_flows() {
    on_both(
        "half_close_gives_zero_reads_while_the_other_direction_flows",
        |_, _| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let (server, mut peer) = accepted_pair(&listener).await;
            peer.write_all(b"request").unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
            let (res, buf) = server.read_exact(vec![0u8; 7]).await;
            res.unwrap();
            assert_eq!(buf, b"request");
            for _ in 0..3 {
                let (res, _) = server.recv(Vec::with_capacity(16)).await;
                assert_eq!(res.unwrap(), 0, "end of stream, every time");
            }
            // This side can still send, as often as it likes.
            for chunk in [&b"resp"[..], b"onse"] {
                server.write_all(chunk.to_vec()).await.0.unwrap();
            }
            server.shutdown(Shutdown::Write).await.unwrap();
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            assert_eq!(all, b"response");
            // Sending after shutting down our side is an error, not a signal.
            let e = server.send(b"x".to_vec()).await.0.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
        },
    );
}

#[test]
fn a_socket_shut_down_behind_the_runtime_ends_a_pending_recv() {
    on_both(
        "a_socket_shut_down_behind_the_runtime_ends_a_pending_recv",
        |_, handle| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let (server, mut peer) = accepted_pair(&listener).await;
            let server = std::sync::Arc::new(server);

            // Closing a dup leaves the socket open: the recv keeps waiting and
            // gets the data that arrives later.
            let dup = server.as_fd().try_clone_to_owned().unwrap();
            let s = server.clone();
            let recv = handle
                .spawn_pinned(1, async move { s.recv(Vec::with_capacity(16)).await })
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(dup);
            peer.write_all(b"still here").unwrap();
            let (res, buf) = recv.await.unwrap();
            assert_eq!(&buf[..res.unwrap()], b"still here");

            // shutdown(2) through another handle ends the pending recv with 0.
            let other = std::net::TcpStream::from(server.as_fd().try_clone_to_owned().unwrap());
            let s = server.clone();
            let recv = handle
                .spawn_pinned(1, async move { s.recv(Vec::with_capacity(16)).await.0 })
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            other.shutdown(Shutdown::Both).unwrap();
            assert_eq!(recv.await.unwrap().unwrap(), 0);
        },
    );
}

#[test]
fn zero_length_send_and_recv_return_zero_at_once() {
    on_both(
        "zero_length_send_and_recv_return_zero_at_once",
        |_, _| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let (server, mut peer) = accepted_pair(&listener).await;
            assert_eq!(server.send(Vec::new()).await.0.unwrap(), 0);
            assert_eq!(server.send(vec![1u8, 2].slice(1..1)).await.0.unwrap(), 0);
            // No data is pending, yet a zero-capacity receive completes with 0.
            let (res, buf) = server.recv(Vec::new()).await;
            assert_eq!(res.unwrap(), 0);
            assert!(buf.is_empty());
            assert!(server.read_exact(Vec::new()).await.0.is_ok());
            assert!(server.write_all(Vec::new()).await.0.is_ok());
            // The stream is unaffected.
            server.write_all(b"after".to_vec()).await.0.unwrap();
            let mut five = [0u8; 5];
            peer.read_exact(&mut five).unwrap();
            assert_eq!(&five, b"after");
        },
    );
}

/// Waits until no op holds the listener's fd any more (each op keeps a
/// reference to it until its final completion), then returns the std form.
async fn listener_released(listener: TcpListener) -> std::net::TcpListener {
    let mut l = Some(listener);
    let start = Instant::now();
    loop {
        match l.take().unwrap().into_std() {
            Ok(std) => return std,
            Err(back) => l = Some(back),
        }
        assert!(
            start.elapsed() < HANG,
            "an op still holds the listener: a zombie op"
        );
        yield_now().await;
    }
}

#[test]
fn multishot_accept_yields_many_connections_and_cancels_cleanly() {
    on_both(
        "multishot_accept_yields_many_connections_and_cancels_cleanly",
        |_, _| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let addr = listener.local_addr().unwrap();
            let clients = std::thread::spawn(move || {
                (0..5u8)
                    .map(|i| {
                        let mut c = std::net::TcpStream::connect(addr).unwrap();
                        c.write_all(&[i]).unwrap();
                        c
                    })
                    .collect::<Vec<_>>()
            });
            let mut incoming = listener.incoming();
            let mut seen = Vec::new();
            for _ in 0..5 {
                let stream = incoming.next().await.unwrap();
                let (res, buf) = stream.read_exact(vec![0u8; 1]).await;
                res.unwrap();
                seen.push(buf[0]);
            }
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2, 3, 4]);
            let _clients = clients.join().unwrap();
            // Cancel mid-stream (the accept is armed, nobody is connecting).
            drop(incoming);
            let std_listener = listener_released(listener).await;
            // The listener still works: a plain accept takes the next connection.
            let client = std::thread::spawn(move || std::net::TcpStream::connect(addr).unwrap());
            let (_s, peer) = std_listener.accept().unwrap();
            assert_eq!(peer, client.join().unwrap().local_addr().unwrap());
        },
    );
}

#[test]
fn multishot_recv_streams_data_and_cancels_cleanly() {
    on_both(
        "multishot_recv_streams_data_and_cancels_cleanly",
        |backend, handle| async move {
            let listener = TcpListener::bind(localhost()).unwrap();
            let (server, mut peer) = accepted_pair(&listener).await;
            let sent = pattern(300_000, 9);
            let to_send = sent.clone();
            let writer = std::thread::spawn(move || {
                for chunk in to_send.chunks(7000) {
                    peer.write_all(chunk).unwrap();
                }
                peer
            });
            let mut rs = server.recv_stream_with(4, 4096);
            let mut got = Vec::new();
            while got.len() < sent.len() {
                let n = rs.next_into(&mut got).await.unwrap();
                assert!(n > 0);
            }
            assert_eq!(got, sent);
            let multishot_available = spargio::sys::probe::Features::detect()
                .is_ok_and(|f| f.checked.recv_multishot && f.checked.pbuf_ring);
            assert_eq!(
                rs.is_multishot(),
                backend == Backend::IoUring && multishot_available
            );
            let mut peer = writer.join().unwrap();

            // Cancel mid-stream: the op lets go of the fd, nothing is received by a zombie.
            drop(rs);
            let server = {
                let mut s = Some(server);
                let start = Instant::now();
                loop {
                    match s.take().unwrap().into_std() {
                        Ok(std) => break TcpStream::from_std(std).unwrap(),
                        Err(back) => s = Some(back),
                    }
                    assert!(
                        start.elapsed() < HANG,
                        "the multishot recv still holds the socket"
                    );
                    yield_now().await;
                }
            };
            peer.write_all(b"tail").unwrap();
            let (res, buf) = server.read_exact(vec![0u8; 4]).await;
            res.unwrap();
            assert_eq!(buf, b"tail");

            // End of stream through the multishot path.
            drop(peer);
            let mut rs = server.recv_stream();
            let mut rest = Vec::new();
            assert_eq!(rs.next_into(&mut rest).await.unwrap(), 0);
            assert_eq!(rs.next_into(&mut rest).await.unwrap(), 0);
            let _ = handle;
        },
    );
}

#[test]
fn shutdown_with_accepts_and_recvs_outstanding_is_prompt() {
    for backend in BACKENDS {
        let _dog = watchdog("shutdown_with_accepts_and_recvs_outstanding_is_prompt");
        let rt = RuntimeBuilder::new()
            .shards(2)
            .backend(backend)
            .fallback_to_queue(false)
            .shutdown_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut peers = Vec::new();
        for _ in 0..2 {
            peers.push(std::net::TcpStream::connect(addr).unwrap());
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        rt.block_on({
            let handle = handle.clone();
            async move {
                let listener = std::sync::Arc::new(listener);
                let mut streams = Vec::new();
                for _ in 0..2 {
                    streams.push(listener.accept().await.unwrap().0);
                }
                for (i, stream) in streams.into_iter().enumerate() {
                    let tx = ready_tx.clone();
                    handle
                        .spawn_pinned(i % 2, async move {
                            tx.send(()).unwrap();
                            if i == 0 {
                                let _ = stream.recv(Vec::with_capacity(16)).await;
                            } else {
                                let mut rs = stream.recv_stream();
                                let _ = rs.next_into(&mut Vec::new()).await;
                            }
                        })
                        .unwrap();
                }
                for i in 0..2 {
                    let (l, tx) = (listener.clone(), ready_tx.clone());
                    handle
                        .spawn_pinned(i, async move {
                            tx.send(()).unwrap();
                            if i == 0 {
                                let _ = l.accept().await;
                            } else {
                                let _ = l.incoming().next().await;
                            }
                        })
                        .unwrap();
                }
            }
        })
        .unwrap();
        for _ in 0..4 {
            ready_rx.recv_timeout(HANG).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100)); // let the ops reach the kernel / pool
        let start = Instant::now();
        drop(rt);
        let took = start.elapsed();
        // Liveness, not speed: a stuck op would hold shutdown for its 30 s deadline.
        assert!(
            took < Duration::from_secs(20),
            "{backend:?}: shutdown took {took:?}"
        );
        let stats = handle.stats_snapshot();
        assert_eq!(
            stats.total(|s| s.ops_leaked),
            0,
            "{backend:?}: ops left in the kernel"
        );
        // Every op let go of its socket: the peers see the server side close.
        for mut peer in peers {
            peer.set_read_timeout(Some(HANG)).unwrap();
            let mut buf = [0u8; 1];
            assert_eq!(
                peer.read(&mut buf).unwrap(),
                0,
                "{backend:?}: server socket still open"
            );
        }
    }
}

/// Socket inode numbers, as `/proc/<pid>/fd` links show them (`socket:[N]`).
fn socket_inode(fd: &impl AsRawFd) -> String {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    let s = target.to_string_lossy().into_owned();
    assert!(s.starts_with("socket:["), "{s}");
    s
}

#[test]
fn no_socket_fd_survives_exec() {
    on_both("no_socket_fd_survives_exec", |_, _| async move {
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connected = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let second = TcpStream::connect(addr).await.unwrap();
        let mut incoming = listener.incoming();
        let multi_accepted = incoming.next().await.unwrap();
        let udp = UdpSocket::bind(localhost()).unwrap();
        let upath = temp_path("exec.sock");
        let ulistener = UnixListener::bind(&upath).unwrap();
        let uconnected = UnixStream::connect(&upath).await.unwrap();
        let (uaccepted, _) = ulistener.accept().await.unwrap();
        let (pa, pb) = UnixStream::pair().unwrap();
        let (da, db) = UnixDatagram::pair().unwrap();
        let ours = vec![
            socket_inode(&listener),
            socket_inode(&connected),
            socket_inode(&accepted),
            socket_inode(&second),
            socket_inode(&multi_accepted),
            socket_inode(&udp),
            socket_inode(&ulistener),
            socket_inode(&uconnected),
            socket_inode(&uaccepted),
            socket_inode(&pa),
            socket_inode(&pb),
            socket_inode(&da),
            socket_inode(&db),
        ];
        // Control: a socket handed over as stdin does show up.
        let (control, _control_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let control_inode = socket_inode(&control);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("ls -l /proc/self/fd")
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(control)))
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains(&control_inode),
            "control socket missing from:\n{listing}"
        );
        for inode in &ours {
            assert!(
                !listing.contains(inode.as_str()),
                "{inode} survived exec:\n{listing}"
            );
        }
        let _ = std::fs::remove_file(&upath);
    });
}

#[test]
fn lookup_host_resolves_on_the_blocking_pool() {
    on_both("lookup_host_resolves_on_the_blocking_pool", |_, _| async move {
        let addrs = spargio::net::lookup_host("127.0.0.1:4242").await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:4242".parse::<SocketAddr>().unwrap()]);
        let e = spargio::net::lookup_host("no port here").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    });
}

#[test]
fn networking_outside_a_runtime_is_a_clear_error() {
    let fut = TcpStream::connect("127.0.0.1:9".parse().unwrap());
    let e = block_on_plain(fut).unwrap_err();
    assert!(e.to_string().contains("spargio"), "{e}");
}

/// Polls a future on this thread (it must not need a runtime to complete).
fn block_on_plain<F: Future>(fut: F) -> F::Output {
    let mut fut = Box::pin(fut);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(v) = Pin::as_mut(&mut fut).poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
