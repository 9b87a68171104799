//! Registered (fixed) buffers: `io::checkout_fixed_buf`, `File::read_fixed_at`
//! and `File::write_fixed_at` on both backends, their free list, and their
//! lifetime across cancellation and threads.
#![forbid(unsafe_code)]

mod common;

use common::runtime_on as runtime;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use spargio::Backend;
use spargio::fs::{File, OpenOptions};
use spargio::io::{FixedBuf, checkout_fixed_buf, fixed_bufs_available};

/// Buffers in a shard's table (`shard::FIXED_BUF_COUNT`).
const TABLE: usize = 16;

/// One test at a time: each counts the free buffers of its own runtime's tables.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("spargio-fixed-{}-{tag}-{n}", std::process::id()))
}

/// Waits (bounded, not timed) until the calling shard's table has `want` free buffers.
async fn until_available(want: usize) {
    for _ in 0..5000 {
        if fixed_bufs_available() == Some(want) {
            return;
        }
        spargio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("free buffers stayed at {:?}, not {want}", fixed_bufs_available());
}

#[test]
fn fixed_round_trip_on_both_backends() {
    let _serial = serial();
    for backend in [Backend::IoUring, Backend::Queue] {
        let rt = runtime(backend);
        let path = temp_path("rt");
        let p = path.clone();
        rt.block_on(async move {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .await
                .unwrap();
            let mut buf = checkout_fixed_buf(8192).expect("a free buffer");
            assert_eq!(buf.is_registered(), backend == Backend::IoUring, "{backend:?}");
            let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
            buf.extend_from_slice(&data);
            let (n, buf) = f.write_fixed_at(buf, 100).await;
            assert_eq!(n.unwrap(), 8192);
            drop(buf);
            let buf = checkout_fixed_buf(8192).unwrap();
            let (n, buf) = f.read_fixed_at(buf, 100).await;
            assert_eq!(n.unwrap(), 8192);
            assert_eq!(&buf[..], &data[..], "{backend:?}");
            // A short read at the end sets the length to what was read.
            let mut buf = buf;
            buf.clear();
            let (n, buf) = f.read_fixed_at(buf, 8000).await;
            assert_eq!(n.unwrap(), 292);
            assert_eq!(&buf[..], &data[7900..]);
        })
        .unwrap();
        let fixed_ops = rt.handle().stats_snapshot().total(|s| s.fixed_buf_ops);
        if backend == Backend::IoUring {
            assert_eq!(fixed_ops, 3, "the fixed path was used");
        } else {
            assert_eq!(fixed_ops, 0, "no registered buffers on the Queue backend");
        }
        std::fs::remove_file(&path).unwrap();
    }
}

/// A `READ_FIXED` on an empty pipe is dropped mid-flight: its buffer stays
/// checked out until the final CQE, then returns; nothing leaks.
#[test]
fn dropped_fixed_read_returns_its_buffer_after_the_final_cqe() {
    let _serial = serial();
    let rt = runtime(Backend::IoUring);
    let (reader, writer) = std::io::pipe().unwrap();
    rt.block_on(async move {
        let reader = File::from_owned_fd(reader.into());
        let buf = checkout_fixed_buf(64).unwrap();
        assert!(buf.is_registered());
        assert_eq!(fixed_bufs_available(), Some(TABLE - 1));
        let mut read = Box::pin(reader.read_fixed_at(buf, 0));
        std::future::poll_fn(|cx| {
            assert!(read.as_mut().poll(cx).is_pending(), "nothing was written");
            Poll::Ready(())
        })
        .await;
        drop(read);
        // The cancel is submitted, but its final CQE is not reaped yet: the op
        // still holds the buffer.
        assert_eq!(fixed_bufs_available(), Some(TABLE - 1));
        until_available(TABLE).await;
        use std::io::Write as _;
        let mut w = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        w.write_all(b"after").unwrap();
        let (n, buf) = reader.read_fixed_at(checkout_fixed_buf(64).unwrap(), 0).await;
        assert_eq!(&buf[..n.unwrap()], b"after");
    })
    .unwrap();
    assert_eq!(rt.handle().stats_snapshot().total(|s| s.ops_leaked), 0);
}

#[test]
fn fixed_buf_dropped_on_a_foreign_thread_returns_to_its_shard() {
    let _serial = serial();
    let rt = runtime(Backend::IoUring);
    rt.block_on(async {
        let bufs: Vec<FixedBuf> = (0..3).map(|_| checkout_fixed_buf(4096).unwrap()).collect();
        assert_eq!(fixed_bufs_available(), Some(TABLE - 3));
        std::thread::spawn(move || drop(bufs)).join().unwrap();
        assert_eq!(fixed_bufs_available(), Some(TABLE));
    })
    .unwrap();
}

#[test]
fn checkout_is_none_when_all_are_out_and_works_after_a_drop() {
    let _serial = serial();
    let rt = runtime(Backend::IoUring);
    rt.block_on(async {
        let mut out: Vec<FixedBuf> = (0..TABLE).map(|_| checkout_fixed_buf(4096).unwrap()).collect();
        assert!(out.iter().all(FixedBuf::is_registered));
        assert!(checkout_fixed_buf(4096).is_none(), "all are out");
        out.pop();
        let again = checkout_fixed_buf(4096).expect("one came back");
        assert!(again.is_registered());
        // Too big for a table buffer: an unregistered one instead.
        assert!(!checkout_fixed_buf(1 << 20).unwrap().is_registered());
    })
    .unwrap();
    assert!(checkout_fixed_buf(16).is_none(), "off a shard");
}

/// Polls `fut` to completion on the calling (non-runtime) thread.
fn block_on_here<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A buffer registered on shard 0 is read from a task on shard 1 and from a
/// thread outside the runtime: both reads go to shard 0's ring (on another
/// ring its index would fail with `EFAULT`; shard 1 registers none here).
#[test]
fn fixed_read_from_elsewhere_is_steered_to_the_buffers_shard() {
    let _serial = serial();
    let rt = runtime(Backend::IoUring);
    let path = temp_path("steer");
    std::fs::write(&path, b"steered to shard 0").unwrap();
    let file = File::from_std(std::fs::File::open(&path).unwrap());
    let handle = rt.handle().clone();
    let buf = handle
        .spawn_pinned(0, async { checkout_fixed_buf(64).unwrap() })
        .unwrap();
    let buf = rt.block_on(buf).unwrap().unwrap();
    assert!(buf.is_registered());
    let f = file.clone();
    let (n, buf) = rt
        .block_on(
            handle
                .spawn_pinned(1, async move { f.read_fixed_at(buf, 0).await })
                .unwrap(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n.unwrap()], b"steered to shard 0");
    let mut buf = buf;
    buf.clear();
    let (n, buf) = block_on_here(file.read_fixed_at(buf, 11));
    assert_eq!(&buf[..n.unwrap()], b"shard 0");
    let stats = rt.handle().stats_snapshot();
    assert_eq!(
        (stats.shards[0].fixed_buf_ops, stats.shards[1].fixed_buf_ops),
        (2, 0)
    );
    std::fs::remove_file(&path).unwrap();
}

/// A capacity from untrusted input never aborts the process: above one op's
/// maximum (4 GiB, 1 TiB) `checkout_fixed_buf` says `None` at once, on both
/// backends (it used to allocate, and zero, the whole capacity).
#[test]
fn checkout_of_a_huge_capacity_is_none_not_an_abort() {
    let _serial = serial();
    for backend in [Backend::IoUring, Backend::Queue] {
        let rt = runtime(backend);
        rt.block_on(async move {
            for capacity in [4usize << 30, 1 << 40, usize::MAX] {
                assert!(
                    checkout_fixed_buf(capacity).is_none(),
                    "{backend:?}: checkout_fixed_buf({capacity})"
                );
            }
            const { assert!(spargio::io::MAX_FIXED_BUF_CAPACITY >= 1 << 30) };
            // The largest small one still works.
            let buf = checkout_fixed_buf(1 << 20).expect("a 1 MiB buffer");
            assert_eq!(buf.capacity(), 1 << 20);
        })
        .unwrap();
    }
}
