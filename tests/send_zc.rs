//! Zero-copy sends (`TcpStream::send_zc`, the write half's, `UringBoundFd`'s)
//! against the real kernel on both backends: large sends arrive intact, and a
//! send dropped while it waits for room leaves the stream usable. (That the
//! buffer outlives a future dropped between the send's result and its
//! notification is checked under Miri on the simulated kernel:
//! `sys/tests/sim_send_zc.rs`.)
#![forbid(unsafe_code)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use spargio::Backend;
use spargio::net::{TcpListener, TcpStream};

use common::runtime_on as runtime;

const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Queue];

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed).wrapping_mul(7))
        .collect()
}

fn skip_io_uring(backend: Backend) -> bool {
    if backend == Backend::IoUring
        && let Some(reason) = common::io_uring_unavailable()
    {
        eprintln!("SKIPPED (real io_uring): {reason}");
        return true;
    }
    false
}

async fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = futures_join(TcpStream::connect(addr), listener.accept()).await;
    (client.unwrap(), accepted.unwrap().0)
}

/// Runs two futures concurrently on the calling task.
async fn futures_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// 64 KiB, 256 KiB and 1 MiB zero-copy sends, several of each, through the
/// stream and its write half, read back byte for byte by another task.
#[test]
fn large_zero_copy_sends_arrive_intact() {
    for backend in BACKENDS {
        if skip_io_uring(backend) {
            continue;
        }
        let rt = runtime(backend);
        let handle = rt.handle().clone();
        rt.block_on(async move {
            let (client, server) = connected_pair().await;
            let sizes = [64 * 1024, 256 * 1024, 1 << 20, 64 * 1024, 1 << 20, 256 * 1024];
            let expected: Vec<u8> = sizes
                .iter()
                .enumerate()
                .flat_map(|(i, &n)| pattern(n, i as u8))
                .collect();
            let total = expected.len();
            let reader = handle
                .spawn_stealable(async move {
                    let (res, got) = server.read_exact(vec![0u8; total]).await;
                    res.unwrap();
                    got
                })
                .unwrap();
            for (i, &n) in sizes[..3].iter().enumerate() {
                let buf = pattern(n, i as u8);
                let (res, back) = client.write_all_zc(buf).await;
                res.unwrap();
                assert_eq!(back, pattern(n, i as u8), "the buffer comes back untouched");
            }
            let (_read_half, write_half) = client.into_split();
            for (i, &n) in sizes.iter().enumerate().skip(3) {
                let mut buf = pattern(n, i as u8);
                let mut sent = 0;
                while sent < n {
                    let (res, back) = write_half.send_zc(buf).await;
                    buf = back;
                    sent += res.unwrap();
                    buf.drain(..sent.min(buf.len()));
                    sent = n - buf.len();
                }
            }
            eprintln!("{backend:?}: tail sent");
            let got = reader.await.unwrap();
            assert!(got == expected, "{backend:?}: the bytes differ");
        })
        .unwrap();
    }
}

/// A zero-copy send that cannot finish (the peer reads nothing yet, so the
/// kernel can neither send everything nor release the buffer) is dropped;
/// the runtime keeps its buffer until the kernel is done, and the stream
/// still works: what the peer finally reads is a prefix of that send, then
/// the bytes of a later one.
#[test]
fn a_dropped_zero_copy_send_leaves_the_stream_usable() {
    for backend in BACKENDS {
        if skip_io_uring(backend) {
            continue;
        }
        let rt = runtime(backend);
        let handle = rt.handle().clone();
        rt.block_on(async move {
            let (client, server) = connected_pair().await;
            let gate = std::sync::Arc::new(spargio::sync::Notify::new());
            let reader = {
                let gate = gate.clone();
                handle
                    .spawn_stealable(async move {
                        gate.notified().await;
                        let mut got = Vec::new();
                        loop {
                            let (res, buf) = server.recv(vec![0u8; 1 << 20]).await;
                            let n = res.unwrap();
                            if n == 0 {
                                break got;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                    })
                    .unwrap()
            };
            let big = pattern(32 << 20, 1);
            // Short sends complete (a plain send on the Queue backend); the one
            // that waits for room, or for the kernel to release it, is dropped.
            let mut at = 0;
            loop {
                assert!(
                    at < big.len(),
                    "32 MiB cannot be sent to a peer that reads nothing"
                );
                let send = client.send_zc(big[at..].to_vec());
                match spargio::time::timeout(Duration::from_millis(100), send).await {
                    Ok((res, _)) => at += res.unwrap(),
                    Err(_) => break,
                }
            }
            gate.notify_one();
            let (res, _) = client.write_all_zc(b"tail".to_vec()).await;
            res.unwrap();
            client.shutdown(std::net::Shutdown::Write).await.unwrap();
            let got = reader.await.unwrap();
            let (body, tail) = got.split_at(got.len() - 4);
            assert_eq!(tail, b"tail");
            assert!(
                body == &big[..body.len()],
                "{backend:?}: the bytes before the tail differ"
            );
        })
        .unwrap();
    }
}

/// `UringBoundFd::send_zc` on a bound std socket.
#[test]
fn a_bound_fd_sends_zero_copy() {
    if skip_io_uring(Backend::IoUring) {
        return;
    }
    let rt = runtime(Backend::IoUring);
    let listener = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut got).unwrap();
        got
    });
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let bound = rt.handle().bind_tcp_stream(stream);
    let data = pattern(3 << 20, 9);
    let sent = rt
        .block_on(async move {
            let mut buf = data;
            let mut at = 0;
            while at < buf.len() {
                let (res, back) = bound.send_zc(spargio::io::IoBuf::slice(buf, at..)).await;
                buf = back.into_inner();
                at += res.unwrap();
            }
            buf
        })
        .unwrap();
    drop(rt);
    assert!(peer.join().unwrap() == sent);
}
