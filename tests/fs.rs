//! The fs API and the op machinery under bad input and cancellation, on both
//! backends (io_uring and Queue).
#![forbid(unsafe_code)]

mod common;

use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spargio::fs::{self, File, OpenOptions};
use spargio::{Backend, Runtime, RuntimeBuilder};

/// The tests of this file run one at a time, so fd counts see only their own fds.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtimes() -> Vec<(Backend, Runtime)> {
    [Backend::IoUring, Backend::Queue]
        .into_iter()
        .map(|b| (b, common::runtime_on(b)))
        .collect()
}

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("spargio-fs-{}-{tag}-{n}", std::process::id()))
}

#[test]
fn write_read_round_trip_on_both_backends() {
    let _serial = serial();
    for (backend, rt) in runtimes() {
        let path = temp_path("rt");
        rt.block_on(async move {
            let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            fs::write(&path, data.clone()).await.unwrap();
            let file = File::open(&path).await.unwrap();
            assert_eq!(file.metadata().await.unwrap().len(), 100_000);
            assert_eq!(file.read_to_end_at(0).await.unwrap(), data);
            assert_eq!(file.read_vec_at(100, 99_990).await.unwrap(), data[99_990..]);
            let (res, buf) = file.read_exact_at(Vec::with_capacity(4096), 4096).await;
            res.unwrap();
            assert_eq!(buf, data[4096..8192]);
            assert_eq!(fs::read(&path).await.unwrap(), data);
            fs::remove_file(&path).await.unwrap();
        })
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
}

#[test]
fn bad_input_gives_clear_errors_and_the_runtime_keeps_serving() {
    let _serial = serial();
    for (backend, rt) in runtimes() {
        let dir = temp_path("dir");
        rt.block_on(async move {
            // Missing file, directory opened for writing, interior NUL, long path.
            assert_eq!(
                File::open("/nonexistent/spargio").await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            fs::create_dir(&dir).await.unwrap();
            let e = OpenOptions::new().write(true).open(&dir).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}");
            assert_eq!(
                File::open("a\0b").await.unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            let long = "x".repeat(5000);
            assert_eq!(
                File::open(&long).await.unwrap_err().raw_os_error(),
                Some(libc::ENAMETOOLONG)
            );
            assert_eq!(
                OpenOptions::new().open(&dir).await.unwrap_err().kind(),
                ErrorKind::InvalidInput
            );

            // Offsets: past EOF reads 0, u64::MAX is refused before it reaches the kernel.
            let path = dir.join("f");
            fs::write(&path, b"abc".to_vec()).await.unwrap();
            let f = File::open(&path).await.unwrap();
            let (n, _) = f.read_at(Vec::with_capacity(8), 1 << 40).await;
            assert_eq!(n.unwrap(), 0);
            let (e, buf) = f.read_at(vec![9u8; 4], u64::MAX).await;
            assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidInput);
            assert_eq!(buf, vec![9u8; 4], "the buffer comes back untouched");
            // Zero-length buffer.
            let (n, _) = f.read_at(Vec::new(), 0).await;
            assert_eq!(n.unwrap(), 0);
            // Short read at EOF: read_exact_at reports UnexpectedEof with what it got.
            let (e, got) = f.read_exact_at(Vec::with_capacity(10), 0).await;
            assert_eq!(e.unwrap_err().kind(), ErrorKind::UnexpectedEof);
            assert_eq!(got, b"abc");
            // Writing to a read-only fd.
            let (e, _) = f.write_at(b"zz".to_vec(), 0).await;
            assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EBADF));

            // The runtime still serves.
            assert_eq!(fs::read_to_string(&path).await.unwrap(), "abc");
            fs::remove_file(&path).await.unwrap();
            fs::remove_dir(&dir).await.unwrap();
        })
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
}

#[test]
fn path_functions() {
    let _serial = serial();
    for (backend, rt) in runtimes() {
        let root = temp_path("paths");
        rt.block_on(async move {
            let nested = root.join("a/b/c");
            fs::create_dir_all(&nested).await.unwrap();
            fs::create_dir_all(&nested).await.unwrap();
            assert!(fs::metadata(&nested).await.unwrap().is_dir());
            let f = nested.join("f");
            fs::write(&f, b"data".to_vec()).await.unwrap();
            fs::rename(&f, nested.join("g")).await.unwrap();
            assert_eq!(fs::metadata(&f).await.unwrap_err().kind(), ErrorKind::NotFound);
            let g = nested.join("g");
            fs::hard_link(&g, nested.join("h")).await.unwrap();
            assert_eq!(fs::metadata(&g).await.unwrap().nlink(), 2);
            fs::symlink(&g, nested.join("s")).await.unwrap();
            assert!(fs::symlink_metadata(nested.join("s")).await.unwrap().is_symlink());
            assert!(fs::metadata(nested.join("s")).await.unwrap().is_file());
            assert_eq!(
                fs::canonicalize(nested.join("s")).await.unwrap(),
                std::fs::canonicalize(&g).unwrap()
            );
            let file = OpenOptions::new().read(true).write(true).open(&g).await.unwrap();
            file.set_len(10).await.unwrap();
            file.allocate(0, 4096).await.unwrap();
            file.sync_all().await.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(file.metadata().await.unwrap().len(), 4096);
            file.close().await.unwrap();
            assert_eq!(
                fs::remove_dir(&nested).await.unwrap_err().kind(),
                ErrorKind::DirectoryNotEmpty
            );
            std::fs::remove_dir_all(&root).unwrap();
        })
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
}

#[test]
fn write_all_and_read_exact_over_many_chunks() {
    let _serial = serial();
    for (_, rt) in runtimes() {
        let path = temp_path("big");
        rt.block_on(async move {
            let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .await
                .unwrap();
            let (r, back) = f.write_all_at(data.clone(), 100).await;
            r.unwrap();
            assert_eq!(back.len(), data.len());
            let (r, got) = f.read_exact_at(Vec::with_capacity(data.len()), 100).await;
            r.unwrap();
            assert!(got == data);
            fs::remove_file(&path).await.unwrap();
        })
        .unwrap();
    }
}

/// Opens whose futures are dropped at random points never leak an fd: an open
/// that completes after its waiter left closes the fd it produced.
#[test]
fn abandoned_opens_do_not_leak_fds() {
    let _serial = serial();
    for (_, rt) in runtimes() {
        let path = temp_path("open");
        std::fs::write(&path, b"x").unwrap();
        let before = spargio::sys::os::open_fd_count().unwrap();
        let p = path.clone();
        rt.block_on(async move {
            for i in 0..10_000u32 {
                // A zero timeout drops the open before or after the kernel did it.
                let _ = spargio::time::timeout(Duration::ZERO, File::open(&p)).await;
                if i % 1000 == 0 {
                    spargio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            // Let late completions arrive.
            spargio::time::sleep(Duration::from_millis(50)).await;
        })
        .unwrap();
        let after = spargio::sys::os::open_fd_count().unwrap();
        assert!(after <= before + 2, "fds before {before}, after {after}");
        std::fs::remove_file(&path).unwrap();
    }
}

/// A read on an empty pipe is dropped mid-flight; then data arrives. The buffer
/// the kernel was given is not freed while it could still be written, and the
/// data is not delivered to anyone else.
#[test]
fn dropped_pipe_read_is_cancelled_safely() {
    let _serial = serial();
    let rt = RuntimeBuilder::new().shards(1).build().unwrap();
    let before = spargio::sys::os::open_fd_count().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    rt.block_on(async move {
        let reader = File::from_owned_fd(reader.into());
        for _ in 0..100 {
            let r =
                spargio::time::timeout(Duration::from_micros(200), reader.read_at(vec![0u8; 64], 0)).await;
            assert!(r.is_err(), "nothing was written yet");
        }
        use std::io::Write as _;
        let mut w = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        w.write_all(b"after").unwrap();
        // Pipes ignore the offset; a fresh read gets the bytes.
        let (n, buf) = reader.read_at(Vec::with_capacity(16), 0).await;
        assert_eq!(&buf[..n.unwrap()], b"after");
    })
    .unwrap();
    // Both pipe ends were closed by their owners: nothing the cancelled ops held stays open.
    assert_eq!(spargio::sys::os::open_fd_count().unwrap(), before);
    assert_eq!(rt.handle().stats_snapshot().total(|s| s.ops_leaked), 0);
}

/// `timeout(ZERO, op)` raced many times: every op has exactly one outcome, and
/// the file's contents show each completed write exactly once.
#[test]
fn zero_timeout_races_have_one_outcome_each() {
    let _serial = serial();
    let rt = RuntimeBuilder::new().shards(2).build().unwrap();
    let path = temp_path("race");
    let p = path.clone();
    let (ok, timed_out) = rt
        .block_on(async move {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .await
                .unwrap();
            let (mut ok, mut timed_out) = (0u32, 0u32);
            let rounds = if cfg!(debug_assertions) {
                20_000u32
            } else {
                100_000
            };
            // Write i + 1 (never 0) into slot i; remember which writes completed.
            let mut completed = vec![false; rounds as usize];
            for i in 0..rounds {
                match spargio::time::timeout(
                    Duration::ZERO,
                    f.write_at((i + 1).to_le_bytes().to_vec(), u64::from(i) * 4),
                )
                .await
                {
                    Ok((r, _)) => {
                        assert_eq!(r.unwrap(), 4);
                        completed[i as usize] = true;
                        ok += 1;
                    }
                    Err(_) => timed_out += 1,
                }
            }
            // A completed write is in its slot; a timed-out one was either
            // done by the kernel before the cancel or not at all: never torn,
            // never in another slot.
            let back = f.read_to_end_at(0).await.unwrap();
            assert!(back.len() <= rounds as usize * 4);
            for (i, &done) in completed.iter().enumerate() {
                let slot = back
                    .get(i * 4..i * 4 + 4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
                assert!(
                    slot == i as u32 + 1 || (slot == 0 && !done),
                    "slot {i} holds {slot} (write completed: {done})"
                );
            }
            (ok, timed_out)
        })
        .unwrap();
    eprintln!("zero-timeout race: {ok} completed, {timed_out} timed out");
    std::fs::remove_file(&path).unwrap();
}

/// Shutting the runtime down with reads and fsyncs in flight completes, and a
/// forgotten op future, whose op the kernel still holds, is leaked with its
/// buffer (owned by the shard's op table), never freed under the kernel.
#[test]
fn shutdown_with_ops_in_flight() {
    let _serial = serial();
    let rt = RuntimeBuilder::new()
        .shards(2)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let reader = File::from_owned_fd(reader.into());
    let path = temp_path("inflight");
    std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
    let handle = rt.handle().clone();
    let (armed_tx, armed_rx) = std::sync::mpsc::channel();
    for s in 0..2 {
        let (reader, path, armed) = (reader.clone(), path.clone(), armed_tx.clone());
        handle
            .spawn_pinned(s, async move {
                // Polled once (submitted: the kernel holds its buffer), then forgotten.
                let mut forgotten = Box::pin(reader.read_at(vec![0u8; 32], 0));
                std::future::poll_fn(|cx| {
                    assert!(forgotten.as_mut().poll(cx).is_pending(), "nothing was written");
                    std::task::Poll::Ready(())
                })
                .await;
                std::mem::forget(forgotten);
                armed.send(()).unwrap();
                // Then fsyncs back to back and a read that never completes.
                let f = OpenOptions::new().write(true).open(&path).await.unwrap();
                let syncs = async {
                    loop {
                        f.write_at(vec![2u8; 4096], 0).await.0.unwrap();
                        f.sync_all().await.unwrap();
                    }
                };
                let read = reader.read_at(vec![0u8; 32], 0);
                let _ = futures_join(syncs, read).await;
            })
            .unwrap();
    }
    for _ in 0..2 {
        armed_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    // Data for the forgotten reads: the kernel writes into buffers nobody
    // waits for, which must still be alive.
    use std::io::Write as _;
    std::fs::File::from(std::os::fd::OwnedFd::from(writer))
        .write_all(&[7u8; 64])
        .unwrap();
    std::thread::sleep(Duration::from_millis(20)); // Not a timing check: lets the syncs run.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(rt); // Cancels the reads and the fsync loops, then joins the shards.
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("shutdown with ops in flight never finished");
    let stats = handle.stats_snapshot();
    assert_eq!(stats.live_tasks, 0, "{stats:?}");
    // Pipe reads and fsyncs are all cancellable or finish: the kernel gave every op back.
    assert_eq!(stats.total(|s| s.ops_leaked), 0, "{stats:?}");
    std::fs::remove_file(&path).unwrap();
}

/// Polls two futures together until the first finishes.
async fn futures_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) {
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    std::future::poll_fn(move |cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn fs_outside_a_runtime_is_an_error_not_a_panic() {
    let _serial = serial();
    let f = File::from_std(std::fs::File::open("/proc/self/stat").unwrap());
    let (res, buf) = spargio_block(f.read_at(vec![5u8; 3], 0));
    assert!(res.unwrap_err().to_string().contains("inside a spargio runtime"));
    assert_eq!(buf, vec![5u8; 3]);
}

/// Polls a future to completion on this thread (no runtime).
fn spargio_block<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(f)
}

/// A bound fd runs its ops on its shard's ring whoever calls; a file session
/// registers the file once and reads through the fixed slot.
#[test]
fn bound_fd_and_file_session() {
    let _serial = serial();
    for (backend, rt) in runtimes() {
        let path = temp_path("bound");
        let data: Vec<u8> = (0..65_536u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let handle = rt.handle().clone();
        let bound = handle
            .bind_owned_fd_to(std::fs::File::open(&path).unwrap().into(), 1)
            .unwrap();
        assert_eq!(bound.shard(), 1);
        // From a plain thread outside the runtime: steered to shard 1.
        let outside = bound.clone();
        let got = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(outside.read_vec_at(50, 100))
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(got, data[100..150]);
        let expect = data.clone();
        let registered = rt
            .block_on(async move {
                let session = bound.start_file_session().await.unwrap();
                for i in 0..200u64 {
                    let pos = (i * 331) % 60_000;
                    let got = session.read_vec_at(4096, pos).await.unwrap();
                    assert_eq!(got, expect[pos as usize..pos as usize + 4096]);
                }
                let (e, _) = session.read_at(Vec::with_capacity(4), u64::MAX).await;
                assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidInput);
                let registered = session.is_registered();
                session.shutdown().await;
                // The slot is free again: a new session gets one too.
                let again = bound.start_file_session().await.unwrap();
                assert_eq!(again.is_registered(), registered);
                registered
            })
            .unwrap();
        match backend {
            Backend::IoUring => assert!(registered, "io_uring sessions use a registered-file slot"),
            Backend::Queue => assert!(!registered, "the Queue backend has no ring to register in"),
        }
        let stats = rt.handle().stats_snapshot();
        assert_eq!(stats.shards[1].file_sessions, if registered { 2 } else { 0 });
        drop(rt);
        std::fs::remove_file(&path).unwrap();
    }
}

/// A full filesystem: `write_all_at` reports ENOSPC (`StorageFull`), the
/// partial file is readable, and the runtime keeps serving. Needs a tiny
/// tmpfs, mounted here when the test may mount (root), else skipped with the
/// reason printed.
#[test]
fn enospc_on_a_tiny_filesystem_is_a_clear_error() {
    let _serial = serial();
    let dir = temp_path("tinyfs");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "SKIPPED (ENOSPC): cannot mount a tiny tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            std::fs::remove_dir(&dir).unwrap();
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED (ENOSPC): cannot run mount: {e}");
            std::fs::remove_dir(&dir).unwrap();
            return;
        }
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unmount = Unmount(dir.clone());
    for (backend, rt) in runtimes() {
        let path = dir.join(format!("full-{backend:?}"));
        rt.block_on(async move {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .await
                .unwrap();
            let (res, buf) = f.write_all_at(vec![9u8; 1 << 20], 0).await;
            let e = res.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::StorageFull, "{backend:?}: {e}");
            assert_eq!(buf.len(), 1 << 20, "the buffer comes back");
            // What fit was written; reading it back works.
            let len = f.metadata().await.unwrap().len();
            assert!(len > 0 && len < 1 << 20, "{backend:?}: {len} bytes written");
            let back = f.read_to_end_at(0).await.unwrap();
            assert!(back.len() as u64 == len && back.iter().all(|&b| b == 9));
            f.close().await.unwrap(); // An open file keeps its blocks.
            fs::remove_file(&path).await.unwrap();
            // Space is back: a small write succeeds.
            fs::write(&path, b"ok".to_vec()).await.unwrap();
            assert_eq!(fs::read(&path).await.unwrap(), b"ok");
        })
        .unwrap();
    }
}

/// Lengths a peer could put in a length prefix: 4 GiB and 1 TiB.
const HUGE_LENS: [usize; 2] = [4 << 30, 1 << 40];

/// A length from untrusted input decides no allocation: `read_at` of 4 GiB
/// and 1 TiB on a 10-byte file returns the 10 bytes in a small buffer (the
/// process used to reserve 4 GiB, and abort on 1 TiB); so do the native
/// lane's `UringBoundFd::read_at` and `UringFileSession::read_at`.
#[test]
fn huge_read_lengths_allocate_what_the_file_holds_on_both_backends() {
    let _serial = serial();
    for (backend, rt) in runtimes() {
        let path = temp_path("huge-len");
        std::fs::write(&path, b"ten bytes!").unwrap();
        let bound = rt.handle().bind_file(std::fs::File::open(&path).unwrap());
        let file_path = path.clone();
        rt.block_on(async move {
            let file = File::open(&file_path).await.unwrap();
            let session = bound.start_file_session().await.unwrap();
            for len in HUGE_LENS {
                for pos in [0u64, 3, 10, 1 << 40] {
                    let want: &[u8] = &b"ten bytes!"[(pos.min(10) as usize)..];
                    let got = [
                        ("File", file.read_vec_at(len, pos).await.unwrap()),
                        ("UringBoundFd", bound.read_vec_at(len, pos).await.unwrap()),
                        ("UringFileSession", session.read_vec_at(len, pos).await.unwrap()),
                    ];
                    for (what, buf) in got {
                        assert_eq!(buf, want, "{backend:?} {what}::read_at({pos}, {len})");
                        assert!(
                            buf.capacity() <= fs::SMALL_READ,
                            "{backend:?} {what}::read_at({pos}, {len}) allocated {} bytes",
                            buf.capacity()
                        );
                    }
                }
            }
            session.shutdown().await;
        })
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        std::fs::remove_file(&path).unwrap();
    }
}

/// A `/proc` file reports size 0 yet has contents: a huge `len` still reads
/// them, into a bounded buffer.
#[test]
fn huge_read_length_of_a_proc_file_reads_into_a_bounded_buffer() {
    let _serial = serial();
    for (backend, rt) in runtimes() {
        rt.block_on(async move {
            // /proc files report size 0 yet have contents.
            let file = File::open("/proc/self/status").await.unwrap();
            let buf = file.read_vec_at(1 << 40, 0).await.unwrap();
            assert!(!buf.is_empty(), "{backend:?}");
            assert!(
                buf.capacity() <= fs::SMALL_READ.max(fs::MAX_UNSIZED_READ),
                "{backend:?}: {}",
                buf.capacity()
            );
        })
        .unwrap();
    }
}

/// A served directory with `sub/file`, `top`, and symlinks: `etc` to `/etc`,
/// `up` to `..`, `inside` to `sub/file`; `outside` lies next to it.
fn beneath_tree() -> (PathBuf, PathBuf) {
    let base = temp_path("beneath");
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/file"), b"beneath").unwrap();
    std::fs::write(root.join("top"), b"top").unwrap();
    std::fs::write(base.join("outside"), b"secret").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    std::os::unix::fs::symlink("sub/file", root.join("inside")).unwrap();
    (base, root)
}

/// `Dir` opens files beneath it and refuses every way out (absolute paths,
/// `..`, a symlink to `/etc`, a symlink to `..`) with `EXDEV`, on both
/// backends; `no_symlinks` refuses even a symlink that stays beneath.
#[test]
fn dir_opens_beneath_and_refuses_escapes_on_both_backends() {
    let _serial = serial();
    for (backend, rt) in runtimes() {
        let (base, root) = beneath_tree();
        let r = root.clone();
        rt.block_on(async move {
            let dir = fs::Dir::open(&r).await.unwrap();
            let read = |f: File| async move { f.read_to_end_at(0).await.unwrap() };
            assert_eq!(read(dir.open_file("sub/file").await.unwrap()).await, b"beneath");
            assert_eq!(read(dir.open_file("./sub/../top").await.unwrap()).await, b"top");
            assert_eq!(read(dir.open_file("inside").await.unwrap()).await, b"beneath");
            for escape in [
                "../outside",
                "sub/../../outside",
                "/etc/passwd",
                "etc/passwd",
                "up/outside",
                "up/root/top",
            ] {
                let e = dir.open_file(escape).await.unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{backend:?} {escape}: {e}");
                assert_eq!(e.kind(), ErrorKind::CrossesDevices, "{backend:?} {escape}");
            }
            let strict = OpenOptions::new().read(true).no_symlinks(true).clone();
            let e = dir.open_with("inside", &strict).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{backend:?}: {e}");
            assert_eq!(
                read(dir.open_with("sub/file", &strict).await.unwrap()).await,
                b"beneath"
            );
            // The same options on a plain open refuse the symlink too.
            let e = strict.open(r.join("inside")).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{backend:?}: {e}");

            // A sub-Dir confines in turn.
            let sub = dir.open_dir("sub").await.unwrap();
            assert_eq!(read(sub.open_file("file").await.unwrap()).await, b"beneath");
            let e = sub.open_file("../top").await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{backend:?}: {e}");
            assert_eq!(
                dir.open_dir("top").await.unwrap_err().raw_os_error(),
                Some(libc::ENOTDIR)
            );
            assert_eq!(
                dir.open_file("missing").await.unwrap_err().kind(),
                ErrorKind::NotFound
            );

            // Creating beneath works, with the mode applied.
            let created = dir
                .open_with(
                    "sub/new",
                    OpenOptions::new().write(true).create_new(true).mode(0o600),
                )
                .await
                .unwrap();
            created.write_all_at(b"made".to_vec(), 0).await.0.unwrap();
            let meta = created.metadata().await.unwrap();
            assert_eq!(meta.mode() & 0o777, 0o600, "{backend:?}");
            assert!(
                dir.open_with("../made", OpenOptions::new().write(true).create(true))
                    .await
                    .is_err()
            );
        })
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        assert_eq!(std::fs::read(root.join("sub/new")).unwrap(), b"made");
        assert!(!base.join("made").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}

/// Reads of cached pages complete during the `io_uring_enter` that submits
/// them. A task issuing such reads one after another runs them back to back
/// (its shard reaps and polls it again at once) instead of one read per loop
/// turn, interleaved with every other task on the shard. Two tasks on one
/// shard each read 8 times: their reads come in runs, not alternating.
#[test]
fn reads_that_complete_at_submission_run_back_to_back() {
    const READS: usize = 8;
    let _serial = serial();
    let rt = common::runtime_on(Backend::IoUring);
    let path = temp_path("runs");
    let order = rt
        .block_on(async move {
            // Written just now: its pages are in the page cache.
            fs::write(&path, vec![7u8; 4096]).await.unwrap();
            let file = std::sync::Arc::new(File::open(&path).await.unwrap());
            let order = std::sync::Arc::new(Mutex::new(Vec::new()));
            let handle = spargio::RuntimeHandle::current().unwrap();
            let tasks: Vec<_> = (0..2u8)
                .map(|id| {
                    let (file, order) = (file.clone(), order.clone());
                    handle
                        .spawn_pinned(0, async move {
                            for _ in 0..READS {
                                let (res, _) = file.read_at(Vec::with_capacity(4096), 0).await;
                                assert_eq!(res.unwrap(), 4096);
                                order.lock().unwrap().push(id);
                            }
                        })
                        .unwrap()
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            fs::remove_file(&path).await.unwrap();
            std::sync::Arc::try_unwrap(order).unwrap().into_inner().unwrap()
        })
        .unwrap();
    assert_eq!(order.len(), 2 * READS);
    // One read per turn would alternate: 15 switches between the tasks. Back
    // to back, one task's 8 reads run before or around the other's: a
    // switch or two (a read the kernel hands to a worker thread, which does
    // not complete at submission, may add one).
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches <= 4, "reads interleaved one per turn: {order:?}");
}
