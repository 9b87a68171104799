//! The unbound native lane (`UringNativeAny`): ops from tasks that move, the
//! least-loaded selector, fd leases, cancellation routed to the op's ring, the
//! per-shard `ops_in_flight` counts and the session helpers.
//!
//! The lane works on real fds, which the simulated kernel does not have, so
//! these run on real io_uring and on the Queue backend. Scenarios that need an
//! op to stay pending on a chosen ring (selector, leases, routed cancels) run
//! on io_uring, where a pending read costs no thread.
#![forbid(unsafe_code)]

mod common;

use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Kernel, build, builder, join, shard_id, until, wait, yield_now};
use spargio::sys::op::fs::SharedFd;
use spargio::{Runtime, RuntimeHandle, UringBoundFd};

/// One `#[test]` per backend the lane runs on (io_uring, Queue).
macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $name() { super::$name(super::Kernel::IoUring) } )*
        }
        mod queue {
            $( #[test] fn $name() { super::$name(super::Kernel::Queue) } )*
        }
    };
}

each_backend!(
    ops_from_a_stealable_task_complete,
    session_task_runs_on_the_leased_shard,
    dropped_recv_is_cancelled_on_its_shard,
);

fn runtime(kernel: Kernel, shards: usize) -> Option<Runtime> {
    builder(kernel, shards).map(|b| build(kernel, b))
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("spargio-native-any-{name}-{}", std::process::id()))
}

fn shared(fd: impl Into<OwnedFd>) -> SharedFd {
    Arc::new(fd.into())
}

fn socket_pair() -> (SharedFd, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (shared(a), b)
}

fn in_flight(handle: &RuntimeHandle) -> Vec<u64> {
    handle
        .stats_snapshot()
        .shards
        .iter()
        .map(|s| s.ops_in_flight)
        .collect()
}

/// `count` reads pinned on `shard`, each pending on its own empty pipe, until
/// its writer is written to.
struct PendingReads {
    writers: Vec<std::io::PipeWriter>,
    tasks: Vec<spargio::JoinHandle<Vec<u8>>>,
}

impl PendingReads {
    fn start(handle: &RuntimeHandle, shard: usize, count: usize) -> PendingReads {
        let before = in_flight(handle)[shard];
        let mut writers = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..count {
            let (r, w) = std::io::pipe().unwrap();
            let bound: UringBoundFd = handle.bind_owned_fd_to(OwnedFd::from(r), shard).unwrap();
            tasks.push(
                handle
                    .spawn_pinned(shard, async move { bound.read_vec_at(16, 0).await.unwrap() })
                    .unwrap(),
            );
            writers.push(w);
        }
        until("the pending reads are in flight", || {
            in_flight(handle)[shard] >= before + count as u64
        });
        PendingReads { writers, tasks }
    }

    fn finish(self) {
        for mut w in self.writers {
            w.write_all(b"done").unwrap();
        }
        for t in self.tasks {
            assert_eq!(join("pending read", t), b"done");
        }
    }
}

fn ops_from_a_stealable_task_complete(kernel: Kernel) {
    let Some(rt) = runtime(kernel, 2) else { return };
    let handle = rt.handle().clone();
    let lane = handle.uring_native_unbound();
    let path = temp_path(&format!("rw-{kernel:?}"));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let file = shared(file);
    let (sock, mut peer) = socket_pair();
    let sock2 = sock.clone();
    let task = handle
        .spawn_stealable(async move {
            let mut shards = Vec::new();
            for i in 0..8u8 {
                let op = lane.write_at(&file, vec![b'a' + i; 4], u64::from(i) * 4);
                shards.push(op.shard().unwrap());
                let (res, _) = op.await;
                assert_eq!(res.unwrap(), 4);
                yield_now().await;
            }
            lane.fsync(&file).await.unwrap();
            let (res, buf) = lane.read_at(&file, Vec::with_capacity(64), 0).await;
            assert_eq!(res.unwrap(), 32);
            let (res, _) = lane.send(&sock, b"over the socket".to_vec()).await;
            assert_eq!(res.unwrap(), 15);
            (buf, shards)
        })
        .unwrap();
    let (buf, shards) = join("unbound file and socket ops", task);
    let want: Vec<u8> = (0..8u8).flat_map(|i| [b'a' + i; 4]).collect();
    assert_eq!(buf, want);
    assert!(shards.iter().all(|&s| s < 2), "{shards:?}");
    let mut got = [0u8; 15];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over the socket");

    // And the other direction, received by a task.
    peer.write_all(b"back").unwrap();
    let lane = handle.uring_native_unbound();
    let task = handle
        .spawn_stealable(async move {
            let (res, buf) = lane.recv(&sock2, Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 4);
            buf
        })
        .unwrap();
    assert_eq!(join("unbound recv", task), b"back");
    assert_eq!(in_flight(&handle), vec![0, 0], "ops left in flight");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn selector_spreads_ops_away_from_a_loaded_shard() {
    let Some(rt) = runtime(Kernel::IoUring, 2) else {
        return;
    };
    let handle = rt.handle().clone();
    let lane = handle.uring_native_unbound();
    // An idle runtime, from outside: ties rotate over the shards.
    let picks: std::collections::BTreeSet<usize> = (0..4).map(|_| lane.select_shard()).collect();
    assert_eq!(picks.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    // From a task: its ops stay on its own shard.
    let (sock, mut peer) = socket_pair();
    let probe = lane.clone();
    let s = sock.clone();
    let here = handle
        .spawn_pinned(0, async move {
            let op = probe.send(&s, b"x".to_vec());
            let shard = op.shard();
            op.await.0.unwrap();
            shard
        })
        .unwrap();
    assert_eq!(join("send on an idle runtime", here), Some(0));
    let mut byte = [0u8; 1];
    peer.read_exact(&mut byte).unwrap();

    let load = PendingReads::start(&handle, 0, 8);
    assert_eq!(lane.select_shard(), 1, "from outside: the least loaded shard");
    let (fresh, mut fresh_peer) = socket_pair();
    let probe = lane.clone();
    let there = handle
        .spawn_pinned(0, async move {
            let op = probe.send(&fresh, b"y".to_vec());
            let shard = op.shard();
            op.await.0.unwrap();
            shard
        })
        .unwrap();
    assert_eq!(
        join("send from the loaded shard", there),
        Some(1),
        "a new fd's op left the loaded shard"
    );
    fresh_peer.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"y");
    // A preference for the loaded shard does not outweigh the load.
    assert_eq!(lane.clone().with_preferred_shard(0).unwrap().select_shard(), 1);
    load.finish();
    assert_eq!(in_flight(&handle), vec![0, 0], "ops left in flight");
    assert!(lane.clone().with_preferred_shard(2).is_err());
}

#[test]
fn lease_keeps_an_fd_on_one_shard_until_it_lapses() {
    let Some(rt) = runtime(Kernel::IoUring, 2) else {
        return;
    };
    let handle = rt.handle().clone();
    // Leases that lapse as soon as the fd's last op finished.
    let lane = handle.uring_native_unbound().with_lease_idle(Duration::ZERO);
    let (sock, mut peer) = socket_pair();

    // A recv armed from shard 0 on an idle runtime leases the fd to shard 0.
    let l = lane.clone();
    let s = sock.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let pending = handle
        .spawn_pinned(0, async move {
            let op = l.recv(&s, Vec::with_capacity(8));
            tx.send(op.shard()).unwrap();
            let (res, buf) = op.await;
            res.unwrap();
            buf
        })
        .unwrap();
    assert_eq!(common::recv("recv submitted", &rx), Some(0));
    assert_eq!(lane.leased_shard(sock_raw(&sock)), Some(0));

    // Shard 0 gets loaded: the selector would now pick shard 1 ...
    let load = PendingReads::start(&handle, 0, 8);
    assert_eq!(lane.select_shard(), 1);
    // ... but ops on the leased fd stay on shard 0, from either shard.
    for from in [0, 1, 0, 1] {
        let l = lane.clone();
        let s = sock.clone();
        let sent = handle
            .spawn_pinned(from, async move {
                let op = l.send(&s, vec![b'0' + from as u8]);
                let shard = op.shard();
                op.await.0.unwrap();
                shard
            })
            .unwrap();
        assert_eq!(
            join("send under a lease", sent),
            Some(0),
            "sent from shard {from}"
        );
    }
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"0101");
    peer.write_all(b"pong").unwrap();
    assert_eq!(join("leased recv", pending), b"pong");

    // Nothing on the fd is in flight and the idle time is zero: the lease
    // lapsed, and the next op goes where the selector says.
    assert_eq!(lane.leased_shard(sock_raw(&sock)), None);
    let l = lane.clone();
    let s = sock.clone();
    let moved = handle
        .spawn_pinned(0, async move {
            let op = l.send(&s, b"m".to_vec());
            let shard = op.shard();
            op.await.0.unwrap();
            shard
        })
        .unwrap();
    assert_eq!(join("send after the lease lapsed", moved), Some(1));
    peer.read_exact(&mut got[..1]).unwrap();
    assert_eq!(&got[..1], b"m");
    load.finish();
    assert_eq!(in_flight(&handle), vec![0, 0], "ops left in flight");
}

fn sock_raw(fd: &SharedFd) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

#[test]
fn dropped_read_is_cancelled_on_the_ring_it_was_submitted_to() {
    let Some(rt) = runtime(Kernel::IoUring, 2) else {
        return;
    };
    let handle = rt.handle().clone();
    let lane = handle.uring_native_unbound().with_preferred_shard(1).unwrap();
    let (r, mut w) = std::io::pipe().unwrap();
    let r = shared(r);
    let (l, fd, h) = (lane.clone(), r.clone(), handle.clone());
    let dropped = handle
        .spawn_pinned(0, async move {
            let op = l.read_at(&fd, Vec::with_capacity(16), 0);
            assert_eq!(op.shard(), Some(1), "the preferred shard wins on an idle runtime");
            until("the read is in flight on shard 1", || in_flight(&h)[1] == 1);
            // Dropped on shard 0: the cancel must travel to shard 1's ring.
            drop(op);
            shard_id()
        })
        .unwrap();
    assert_eq!(join("drop a read of another shard", dropped), 0);
    until("the cancelled read left shard 1's ring", || {
        in_flight(&handle) == vec![0, 0]
    });
    // The cancelled read took nothing: a fresh read gets the bytes.
    w.write_all(b"after").unwrap();
    let fresh = lane.read_at(&r, Vec::with_capacity(16), 0);
    let (res, buf) = wait("fresh read", fresh);
    assert_eq!(res.unwrap(), 5);
    assert_eq!(buf, b"after");
    assert_eq!(in_flight(&handle), vec![0, 0], "ops left in flight");
}

fn dropped_recv_is_cancelled_on_its_shard(kernel: Kernel) {
    let Some(rt) = runtime(kernel, 2) else { return };
    let handle = rt.handle().clone();
    let lane = handle.uring_native_unbound().with_preferred_shard(1).unwrap();
    let (sock, mut peer) = socket_pair();
    let (l, fd, h) = (lane.clone(), sock.clone(), handle.clone());
    let dropped = handle
        .spawn_pinned(0, async move {
            let op = l.recv(&fd, Vec::with_capacity(16));
            assert_eq!(op.shard(), Some(1));
            until("the recv is in flight on shard 1", || in_flight(&h)[1] == 1);
            drop(op);
        })
        .unwrap();
    join("drop a recv of another shard", dropped);
    until("the cancelled recv finished", || in_flight(&handle) == vec![0, 0]);
    peer.write_all(b"kept").unwrap();
    let l = lane.clone();
    let task = handle
        .spawn_stealable(async move { l.recv(&sock, Vec::with_capacity(16)).await })
        .unwrap();
    let (res, buf) = join("fresh recv", task);
    assert_eq!(res.unwrap(), 4);
    assert_eq!(buf, b"kept");
    assert_eq!(in_flight(&handle), vec![0, 0], "ops left in flight");
}

fn session_task_runs_on_the_leased_shard(kernel: Kernel) {
    let Some(rt) = runtime(kernel, 2) else { return };
    let handle = rt.handle().clone();
    let lane = handle.uring_native_unbound().with_preferred_shard(1).unwrap();
    let path = temp_path(&format!("session-{kernel:?}"));
    std::fs::write(&path, b"").unwrap();
    let file = shared(
        std::fs::File::options()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap(),
    );
    let pinned = lane
        .spawn_on_session(&file, |session| async move {
            let ran_on = shard_id();
            let w = session.write_at(b"session".to_vec(), 0);
            let w_shard = w.shard();
            w.await.0.unwrap();
            session.fsync().await.unwrap();
            let (res, buf) = session.read_at(Vec::with_capacity(16), 0).await;
            res.unwrap();
            (session.shard(), ran_on, w_shard, buf)
        })
        .unwrap();
    let (leased, ran_on, w_shard, buf) = join("pinned session", pinned);
    assert_eq!(leased, 1, "the preferred shard on an idle runtime");
    assert_eq!(ran_on, leased);
    assert_eq!(w_shard, Some(leased));
    assert_eq!(buf, b"session");

    let stealable = lane
        .spawn_stealable_on_session(&file, |session| async move {
            let mut shards = Vec::new();
            for i in 0..4u64 {
                let op = session.write_at(b"!".to_vec(), 7 + i);
                shards.push(op.shard());
                op.await.0.unwrap();
                yield_now().await;
            }
            (session.shard(), shards)
        })
        .unwrap();
    let (leased, shards) = join("stealable session", stealable);
    assert!(
        shards.iter().all(|&s| s == Some(leased)),
        "session ops left the leased shard {leased}: {shards:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"session!!!!");
    assert_eq!(in_flight(&handle), vec![0, 0], "ops left in flight");
    std::fs::remove_file(&path).unwrap();
}
