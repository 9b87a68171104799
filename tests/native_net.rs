//! The socket half of the native lane (`UringBoundFd` on TCP streams and UDP
//! sockets) against the real kernel, on the io_uring and Queue backends:
//! round trips, steering from foreign threads, Tokio tasks and other shards,
//! ordered batches, multishot receive (large streams, cancellation, buffer
//! shortage under load), resets and zero-length I/O. Only loopback is used.
#![forbid(unsafe_code)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Instant;

use common::{HANG, Kernel, ShardBlocker, join, poll_once, scaled, wait};
use spargio::{Runtime, RuntimeHandle, UringBoundFd};

const KERNELS: [Kernel; 2] = [Kernel::IoUring, Kernel::Queue];

/// A two-shard runtime on `kernel`, or `None` when io_uring is unavailable.
fn runtime(kernel: Kernel) -> Option<Runtime> {
    common::builder(kernel, 2).map(|b| common::build(kernel, b))
}

/// Runs `f` on a fresh runtime per backend.
fn on_each(f: impl Fn(Kernel, &Runtime)) {
    for kernel in KERNELS {
        if let Some(rt) = runtime(kernel) {
            f(kernel, &rt);
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// A connected TCP pair of std sockets: (ours, the peer's).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    (ours, peer)
}

/// A connected UDP pair of std sockets.
fn udp_pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    (a, b)
}

fn multishot_available() -> bool {
    spargio::sys::probe::Features::detect().is_ok_and(|f| f.checked.recv_multishot && f.checked.pbuf_ring)
}

/// Takes the fd back once no op holds it any more (liveness deadline).
fn released(mut bound: UringBoundFd) -> OwnedFd {
    let start = Instant::now();
    loop {
        match bound.into_owned_fd() {
            Ok(fd) => return fd,
            Err(back) => bound = back,
        }
        assert!(start.elapsed() < HANG, "an op still holds the socket");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn tcp_send_recv_and_recv_into_round_trip() {
    on_each(|kernel, rt| {
        let (ours, mut peer) = tcp_pair();
        let bound = rt.handle().bind_tcp_stream(ours);
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 5];
            peer.read_exact(&mut buf).unwrap();
            peer.write_all(&buf).unwrap();
            peer.write_all(b"second").unwrap();
            peer
        });
        let b = bound.clone();
        let out = rt
            .block_on(async move {
                let (res, buf) = b.send(b"hello".to_vec()).await;
                assert_eq!(res.unwrap(), 5);
                assert_eq!(buf, b"hello");
                let mut got = Vec::new();
                while got.len() < 5 {
                    let chunk = b.recv(5 - got.len()).await.unwrap();
                    assert!(!chunk.is_empty());
                    got.extend(chunk);
                }
                let mut rest = Vec::new();
                while rest.len() < 6 {
                    let (res, buf) = b.recv_into(Vec::with_capacity(64)).await;
                    let n = res.unwrap();
                    assert!(n > 0);
                    assert_eq!(buf.len(), n);
                    rest.extend(buf);
                }
                (got, rest)
            })
            .unwrap();
        assert_eq!(out, (b"hello".to_vec(), b"second".to_vec()), "{kernel:?}");
        drop(echo.join().unwrap());
        // End of stream once the peer is gone.
        let eof = wait("recv after close", bound.recv(16)).unwrap();
        assert!(eof.is_empty(), "{kernel:?}");
    });
}

#[test]
fn udp_send_recv_and_batches_round_trip() {
    on_each(|kernel, rt| {
        let (ours, peer) = udp_pair();
        let bound = rt.handle().bind_udp_socket(ours);
        let b = bound.clone();
        let peer_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..4 {
                let n = peer.recv(&mut buf).unwrap();
                peer.send(&buf[..n]).unwrap();
            }
        });
        let out = rt
            .block_on(async move {
                assert_eq!(b.send(b"ping".to_vec()).await.0.unwrap(), 4);
                let one = b.recv(64).await.unwrap();
                let sent = b
                    .send_batch(vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()])
                    .await;
                let counts: Vec<usize> = sent.into_iter().map(|(r, _)| r.unwrap()).collect();
                assert_eq!(counts, [1, 2, 3]);
                let got = b
                    .recv_batch_into(vec![
                        Vec::with_capacity(8),
                        Vec::with_capacity(8),
                        Vec::with_capacity(8),
                    ])
                    .await;
                let mut datagrams: Vec<Vec<u8>> = got
                    .into_iter()
                    .map(|(r, buf)| {
                        assert_eq!(r.unwrap(), buf.len());
                        buf
                    })
                    .collect();
                datagrams.sort();
                (one, datagrams)
            })
            .unwrap();
        assert_eq!(out.0, b"ping", "{kernel:?}");
        assert_eq!(
            out.1,
            [b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()],
            "{kernel:?}"
        );
        peer_thread.join().unwrap();
    });
}

#[test]
fn binding_inside_a_shard_picks_that_shard() {
    on_each(|kernel, rt| {
        let handle = rt.handle().clone();
        for shard in 0..2 {
            let h = handle.clone();
            let (ours, _peer) = tcp_pair();
            let got = join(
                "bind on a shard",
                handle
                    .spawn_pinned(shard, async move { h.bind_tcp_stream(ours).shard() })
                    .unwrap(),
            );
            assert_eq!(got, shard, "{kernel:?}");
        }
    });
}

/// Sends `msg` from a foreign thread while the bound shard is blocked: on
/// io_uring the op must wait for that shard (it is submitted on its ring),
/// then complete once the shard runs again.
#[test]
fn ops_from_a_foreign_thread_tokio_and_another_shard_run_on_the_bound_shard() {
    on_each(|kernel, rt| {
        let handle = rt.handle().clone();
        let (ours, mut peer) = tcp_pair();
        let bound = handle.bind_tcp_stream(ours);
        let home = bound.shard();
        let other = 1 - home;

        // A foreign thread, with the bound shard blocked.
        let blocker = ShardBlocker::new(&handle, home);
        let mut send = std::pin::pin!(bound.send(b"foreign".to_vec()));
        assert!(poll_once(send.as_mut()).is_none() || kernel == Kernel::Queue);
        if kernel == Kernel::IoUring {
            peer.set_nonblocking(true).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50)); // room for a mis-steered op (not a timing assertion)
            let mut probe = [0u8; 1];
            assert_eq!(
                peer.read(&mut probe).map_err(|e| e.kind()),
                Err(ErrorKind::WouldBlock),
                "the op ran on a ring other than its bound shard's"
            );
            peer.set_nonblocking(false).unwrap();
        }
        blocker.release();
        assert_eq!(wait("foreign send", send).0.unwrap(), 7);
        let mut buf = [0u8; 7];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"foreign");

        // A Tokio task.
        let tokio_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let b = bound.clone();
        let n = tokio_rt
            .block_on(tokio_rt.spawn(async move { b.send(b"tokio".to_vec()).await.0 }))
            .unwrap()
            .unwrap();
        assert_eq!(n, 5);
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"tokio");

        // Another shard's task, receiving.
        peer.write_all(b"from-peer").unwrap();
        let b = bound.clone();
        let got = join(
            "recv from another shard",
            handle
                .spawn_pinned(other, async move {
                    let mut got = Vec::new();
                    while got.len() < 9 {
                        got.extend(b.recv(64).await.unwrap());
                    }
                    got
                })
                .unwrap(),
        );
        assert_eq!(got, b"from-peer", "{kernel:?}");
    });
}

#[test]
fn send_all_batch_delivers_many_buffers_byte_exact_and_in_order() {
    on_each(|kernel, rt| {
        let (ours, mut peer) = tcp_pair();
        let bound = rt.handle().bind_tcp_stream(ours);
        let count = scaled(2000, 400);
        // Mixed sizes: small ones coalesce, large ones go on their own.
        let bufs: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let len = if i % 97 == 0 { 200_000 } else { 1 + (i * 37) % 3000 };
                pattern(len, i as u8)
            })
            .collect();
        let expected: Vec<u8> = bufs.concat();
        let want = expected.len();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; want];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let b = bound.clone();
        let (res, back) = rt
            .block_on(async move { b.send_all_batch(bufs, 8).await })
            .unwrap();
        assert_eq!(res.unwrap(), want, "{kernel:?}");
        assert_eq!(back.len(), count);
        assert_eq!(back[1], pattern(1 + 37, 1), "buffers come back in order");
        let got = reader.join().unwrap();
        assert!(
            got == expected,
            "{kernel:?}: the stream arrived out of order or corrupt"
        );

        // A datagram socket: one datagram per buffer, a window in flight.
        let (ours, peer) = udp_pair();
        let bound = rt.handle().bind_udp_socket(ours);
        let dgrams: Vec<Vec<u8>> = (0..32).map(|i| pattern(100 + i, i as u8)).collect();
        let (res, _) = wait("udp send_all_batch", bound.send_all_batch(dgrams.clone(), 4));
        assert_eq!(res.unwrap(), dgrams.iter().map(Vec::len).sum::<usize>());
        let mut got: Vec<Vec<u8>> = (0..32)
            .map(|_| {
                let mut buf = [0u8; 256];
                let n = peer.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect();
        got.sort();
        let mut want = dgrams;
        want.sort();
        assert_eq!(got, want, "{kernel:?}");
    });
}

#[test]
fn recv_multishot_receives_a_multi_megabyte_stream_byte_exact() {
    on_each(|kernel, rt| {
        let (ours, mut peer) = tcp_pair();
        let bound = rt.handle().bind_tcp_stream(ours);
        let sent = pattern(scaled(16 << 20, 4 << 20), 3);
        let to_send = sent.clone();
        let writer = std::thread::spawn(move || {
            for chunk in to_send.chunks(100_003) {
                peer.write_all(chunk).unwrap();
            }
        });
        // Driven from this (foreign) thread: the ring is registered on the bound shard.
        let mut rs = bound.recv_multishot_with(8, 16 * 1024);
        let got = wait("multishot stream", async {
            let mut got = Vec::with_capacity(sent.len());
            while rs.next_into(&mut got).await.unwrap() > 0 {}
            got
        });
        writer.join().unwrap();
        assert_eq!(got.len(), sent.len(), "{kernel:?}");
        assert!(got == sent, "{kernel:?}: the stream arrived corrupt");
        assert_eq!(
            rs.is_multishot(),
            kernel == Kernel::IoUring && multishot_available()
        );
    });
}

#[test]
fn dropping_recv_multishot_mid_stream_releases_its_op_and_the_socket_still_works() {
    on_each(|kernel, rt| {
        let (ours, mut peer) = tcp_pair();
        let bound = rt.handle().bind_tcp_stream(ours);
        let first = pattern(100_000, 1);
        peer.write_all(&first).unwrap();
        let mut rs = bound.recv_multishot_with(4, 4096);
        let mut got = Vec::new();
        wait("first part", async {
            while got.len() < first.len() {
                assert!(rs.next_into(&mut got).await.unwrap() > 0);
            }
        });
        assert_eq!(got, first);
        // A receive waiting when the stream goes away.
        {
            let mut pending = std::pin::pin!(rs.next_into(&mut got));
            assert!(poll_once(pending.as_mut()).is_none());
        }
        drop(rs);
        // The op lets go of the fd (its buffers go with it): nothing is left behind.
        let fd = released(bound);
        let bound = rt.handle().bind_owned_fd(fd);
        peer.write_all(b"tail").unwrap();
        let mut tail = Vec::new();
        while tail.len() < 4 {
            tail.extend(wait("recv after cancel", bound.recv(16)).unwrap());
        }
        assert_eq!(tail, b"tail", "{kernel:?}");
    });
}

#[test]
fn fifty_streams_flooding_two_buffer_rings_arrive_exact_and_ordered() {
    on_each(|kernel, rt| {
        let handle: RuntimeHandle = rt.handle().clone();
        let streams = 50;
        let per_stream = scaled(1 << 20, 128 << 10);
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for i in 0..streams {
            let (ours, mut peer) = tcp_pair();
            let bound = handle.bind_tcp_stream(ours);
            let data = pattern(per_stream, i as u8);
            writers.push(std::thread::spawn(move || {
                for chunk in data.chunks(65_536) {
                    peer.write_all(chunk).unwrap();
                }
            }));
            readers.push(
                handle
                    .spawn_stealable(async move {
                        let mut got = Vec::with_capacity(per_stream);
                        if i % 2 == 0 {
                            let mut rs = bound.recv_multishot_with(2, 4096);
                            while rs.next_into(&mut got).await.unwrap() > 0 {}
                        } else {
                            let mut segs = bound.recv_multishot_segments(2, 4096);
                            let mut lens = Vec::new();
                            while segs.next_into(&mut got, &mut lens).await.unwrap() > 0 {}
                            assert_eq!(lens.iter().sum::<usize>(), got.len());
                            assert!(lens.iter().all(|&n| n > 0 && n <= 4096));
                        }
                        got
                    })
                    .unwrap(),
            );
        }
        for (i, reader) in readers.into_iter().enumerate() {
            let got = join("flooded stream", reader);
            assert_eq!(got.len(), per_stream, "{kernel:?} stream {i}");
            assert!(
                got == pattern(per_stream, i as u8),
                "{kernel:?} stream {i} corrupt"
            );
        }
        for w in writers {
            w.join().unwrap();
        }
    });
}

#[test]
fn peer_reset_is_an_error_not_a_hang() {
    on_each(|kernel, rt| {
        let handle = rt.handle().clone();
        let (ours, peer) = tcp_pair();
        let bound = handle.bind_tcp_stream(ours);
        // Unread data on the peer makes its close a reset (RST), not a FIN.
        wait("send unread", bound.send(b"unread".to_vec())).0.unwrap();
        let b = bound.clone();
        let recv = handle
            .spawn_pinned(bound.shard(), async move { b.recv(64).await })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50)); // let the recv go pending (not a timing assertion)
        drop(peer);
        let e = join("recv across a reset", recv).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{kernel:?}: {e}");
        let e = wait("send after a reset", bound.send(b"more".to_vec()))
            .0
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
            "{kernel:?}: {e}"
        );
        let mut rs = bound.recv_multishot();
        match wait("multishot after a reset", rs.next_into(&mut Vec::new())) {
            Ok(0) | Err(_) => {}
            other => panic!("{kernel:?}: multishot after a reset: {other:?}"),
        }
    });
}

#[test]
fn zero_length_send_and_recv_return_at_once() {
    on_each(|kernel, rt| {
        let handle = rt.handle().clone();
        let (ours, _peer) = tcp_pair();
        let bound = handle.bind_tcp_stream(ours);
        // With the bound shard blocked, anything submitted could not finish.
        let blocker = ShardBlocker::new(&handle, bound.shard());
        let mut recv = std::pin::pin!(bound.recv(0));
        assert!(
            poll_once(recv.as_mut()).unwrap().unwrap().is_empty(),
            "{kernel:?}"
        );
        let mut send = std::pin::pin!(bound.send(Vec::new()));
        assert_eq!(poll_once(send.as_mut()).unwrap().0.unwrap(), 0);
        let mut recv_into = std::pin::pin!(bound.recv_into(Vec::new()));
        assert_eq!(poll_once(recv_into.as_mut()).unwrap().0.unwrap(), 0);
        let mut batch = std::pin::pin!(bound.send_batch(vec![Vec::new(), Vec::new()]));
        let sent = poll_once(batch.as_mut()).unwrap();
        assert!(sent.into_iter().all(|(r, _)| r.unwrap() == 0));
        blocker.release();
    });
}

/// A `recv` length from untrusted input (a length prefix of 4 GiB or 1 TiB)
/// allocates at most `MAX_RECV_LEN` and gives a short read, on TCP and UDP,
/// on both backends (it used to reserve the whole length, and abort on 1 TiB).
#[test]
fn recv_of_a_huge_length_allocates_at_most_max_recv_len() {
    on_each(|kernel, rt| {
        let (ours, mut peer) = tcp_pair();
        let bound = rt.handle().bind_tcp_stream(ours);
        let (u_ours, u_peer) = udp_pair();
        let u_bound = rt.handle().bind_udp_socket(u_ours);
        for len in [4usize << 30, 1 << 40, usize::MAX] {
            peer.write_all(b"prefix said huge").unwrap();
            u_peer.send(b"datagram").unwrap();
            let (b, u) = (bound.clone(), u_bound.clone());
            let (got, dgram) = rt
                .block_on(async move {
                    let mut got = Vec::new();
                    while got.len() < 16 {
                        let chunk = b.recv(len).await.unwrap();
                        assert!(!chunk.is_empty());
                        assert!(
                            chunk.capacity() <= spargio::native::MAX_RECV_LEN,
                            "{}",
                            chunk.capacity()
                        );
                        got.extend(chunk);
                    }
                    let dgram = u.recv(len).await.unwrap();
                    assert!(
                        dgram.capacity() <= spargio::native::MAX_RECV_LEN,
                        "{}",
                        dgram.capacity()
                    );
                    (got, dgram)
                })
                .unwrap();
            assert_eq!(got, b"prefix said huge", "{kernel:?} len {len}");
            assert_eq!(dgram, b"datagram", "{kernel:?} len {len}");
        }
    });
}
