//! The std-like surface, on both backends with real files and sockets:
//! `spawn`/`spawn_blocking` on the current runtime, the `io::Error`
//! conversions, `fs::read_dir`, `fs::create_dir_all`, `fs::copy`, and the
//! `TcpSocket` builder.
#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use spargio::fs;
use spargio::net::{TcpListener, TcpSocket};
use spargio::{Backend, JoinError, Runtime, RuntimeBuilder, RuntimeError};

/// A runtime per backend that can run here: the io_uring one is skipped,
/// with the reason printed, only where the kernel refuses io_uring.
fn runtimes() -> Vec<(Backend, Runtime)> {
    let mut out = Vec::new();
    for backend in [Backend::IoUring, Backend::Queue] {
        if backend == Backend::IoUring
            && let Some(reason) = common::io_uring_unavailable()
        {
            eprintln!("SKIPPED (real io_uring): {reason}");
            continue;
        }
        out.push((backend, common::runtime_on(backend)));
    }
    out
}

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("spargio-std-{}-{tag}-{n}", std::process::id()))
}

fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    for (backend, rt) in runtimes() {
        rt.block_on(test(backend))
            .unwrap()
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
}

// === spawn, spawn_blocking ===

#[test]
fn spawn_outside_a_runtime_is_a_clear_error() {
    let err = spargio::try_spawn(async { 1 }).unwrap_err();
    assert!(matches!(err, RuntimeError::NoCurrentRuntime), "{err:?}");
    assert!(err.to_string().contains("not inside a spargio runtime"), "{err}");
    let err = spargio::try_spawn_blocking(|| 1).unwrap_err();
    assert!(matches!(err, RuntimeError::NoCurrentRuntime), "{err:?}");

    let panic = std::panic::catch_unwind(|| drop(spargio::spawn(async {}))).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.starts_with("spargio::spawn: not inside a spargio runtime"),
        "{msg}"
    );
    let panic = std::panic::catch_unwind(|| drop(spargio::spawn_blocking(|| ()))).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.starts_with("spargio::spawn_blocking: not inside a spargio runtime"),
        "{msg}"
    );
}

#[test]
fn spawn_and_spawn_blocking_use_the_current_runtime() {
    on_each_backend(|backend| async move {
        let rt = spargio::RuntimeHandle::current().unwrap();
        assert_eq!(rt.backend(), backend);
        // Nested spawns, from a task that was itself spawned.
        let outer = spargio::spawn(async {
            let inner = spargio::spawn(async { 20 });
            let blocking = spargio::spawn_blocking(|| {
                // A pool thread is not a shard...
                assert!(spargio::RuntimeHandle::current().is_none());
                // ...but spawn inside a blocking closure uses its runtime.
                let task = spargio::spawn(async { spargio::RuntimeHandle::current().is_some() });
                assert!(common::wait("a task spawned from the pool", task).unwrap());
                let nested = spargio::spawn_blocking(|| 11);
                common::wait("a blocking job spawned from the pool", nested).unwrap() * 2
            });
            inner.await.unwrap() + blocking.await.unwrap()
        });
        assert_eq!(outer.await?, 42);
        // Spawned onto the stealable queue: it runs even while this task waits.
        let many: Vec<_> = (0..64u64).map(|i| spargio::spawn(async move { i * 2 })).collect();
        let mut sum = 0;
        for task in many {
            sum += task.await?;
        }
        assert_eq!(sum, (0..64u64).map(|i| i * 2).sum::<u64>());
        Ok(())
    });
}

#[test]
fn spawn_after_shutdown_began_is_closed() {
    let rt = RuntimeBuilder::new()
        .shards(1)
        .backend(Backend::Queue)
        .build()
        .unwrap();
    let (spawn_err, blocking_err) = rt
        .block_on(async {
            spargio::RuntimeHandle::current().unwrap().shutdown();
            (
                spargio::try_spawn(async {}).unwrap_err(),
                spargio::try_spawn_blocking(|| ()).unwrap_err(),
            )
        })
        .unwrap();
    assert!(matches!(spawn_err, RuntimeError::Closed), "{spawn_err:?}");
    assert!(matches!(blocking_err, RuntimeError::Closed), "{blocking_err:?}");
}

// === io::Error conversions ===

#[test]
fn join_and_runtime_errors_convert_to_io_errors() {
    let cancelled = io::Error::from(JoinError::Cancelled);
    assert_eq!(cancelled.kind(), ErrorKind::Other);
    assert_eq!(cancelled.to_string(), "task was cancelled");
    let panicked = io::Error::from(JoinError::Panicked(Box::new("bad input")));
    assert_eq!(panicked.to_string(), "task panicked: bad input");

    let inner = io::Error::from(RuntimeError::Io(io::Error::from_raw_os_error(libc::ENOMEM)));
    assert_eq!(
        inner.raw_os_error(),
        Some(libc::ENOMEM),
        "Io gives back its error"
    );
    let invalid = io::Error::from(RuntimeError::InvalidConfig("shards must be at least 1".into()));
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
    assert!(invalid.to_string().contains("shards must be at least 1"));
    let closed = io::Error::from(RuntimeError::Closed);
    assert!(matches!(
        closed.get_ref().and_then(|e| e.downcast_ref::<RuntimeError>()),
        Some(RuntimeError::Closed)
    ));
    let outside = io::Error::from(RuntimeError::NoCurrentRuntime);
    assert!(outside.to_string().contains("not inside a spargio runtime"));
}

#[test]
fn question_mark_on_join_and_runtime_errors() {
    fn outside() -> io::Result<()> {
        spargio::try_spawn(async {})?;
        Ok(())
    }
    assert!(outside().unwrap_err().to_string().contains("not inside"));

    let rt = RuntimeBuilder::new().shards(1).build().unwrap();
    let err = rt
        .block_on(async {
            let inner = async {
                spargio::spawn(async { panic!("task failed on purpose") }).await?;
                Ok::<(), io::Error>(())
            };
            inner.await.unwrap_err()
        })
        .unwrap();
    assert_eq!(err.to_string(), "task panicked: task failed on purpose");
}

// === fs::read_dir ===

/// More entries than one pool batch (128), so the stream crosses batches.
const DIR_FILES: usize = 300;

fn populate(dir: &PathBuf) -> BTreeSet<String> {
    std::fs::create_dir(dir).unwrap();
    let mut names = BTreeSet::new();
    for i in 0..DIR_FILES {
        let name = format!("file-{i:03}");
        std::fs::write(dir.join(&name), vec![b'x'; i]).unwrap();
        names.insert(name);
    }
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("file-001", dir.join("link")).unwrap();
    names.insert("sub".into());
    names.insert("link".into());
    names
}

#[test]
fn read_dir_lists_every_entry_once_with_types_and_metadata() {
    on_each_backend(|_| async {
        let dir = temp_path("readdir");
        let expected = populate(&dir);
        let mut seen = BTreeSet::new();
        let mut entries = fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().into_string().unwrap();
            assert_eq!(entry.path(), dir.join(&name));
            let ty = entry.file_type();
            match name.as_str() {
                "sub" => assert!(ty.is_dir()),
                "link" => {
                    assert!(ty.is_symlink());
                    assert!(
                        entry.metadata().await?.is_symlink(),
                        "metadata does not follow links"
                    );
                }
                file => {
                    assert!(ty.is_file(), "{file}");
                    let size: u64 = file["file-".len()..].parse().unwrap();
                    assert_eq!(entry.metadata().await?.len(), size);
                    assert_eq!(entry.metadata().await?.ino(), entry.ino());
                }
            }
            assert!(seen.insert(name.clone()), "{name} listed twice");
        }
        assert_eq!(seen, expected);
        // The end is sticky.
        assert!(entries.next_entry().await?.is_none());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    });
}

#[test]
fn read_dir_next_entry_is_cancel_safe() {
    on_each_backend(|_| async {
        let dir = temp_path("readdir-cancel");
        let expected = populate(&dir);
        let mut seen = BTreeSet::new();
        let mut entries = fs::read_dir(&dir).await?;
        loop {
            // Poll once and drop the future, every time: a batch still being
            // read must stay with the ReadDir.
            {
                let fut = pin!(entries.next_entry());
                let polled = fut.poll(&mut Context::from_waker(Waker::noop()));
                if let Poll::Ready(r) = polled {
                    match r? {
                        Some(entry) => assert!(seen.insert(entry.file_name().into_string().unwrap())),
                        None => break,
                    }
                }
            }
            match entries.next_entry().await? {
                Some(entry) => assert!(seen.insert(entry.file_name().into_string().unwrap())),
                None => break,
            }
        }
        assert_eq!(seen, expected);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    });
}

#[test]
fn read_dir_errors() {
    on_each_backend(|_| async {
        let missing = fs::read_dir(temp_path("missing")).await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let file = temp_path("not-a-dir");
        std::fs::write(&file, b"x")?;
        let not_dir = fs::read_dir(&file).await.unwrap_err();
        assert_eq!(not_dir.kind(), ErrorKind::NotADirectory);
        std::fs::remove_file(&file)?;
        Ok(())
    });
    let rt_less = std::thread::spawn(|| {
        let mut fut = pin!(fs::read_dir("/"));
        let Poll::Ready(r) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
            panic!("outside a runtime read_dir fails at once");
        };
        r.unwrap_err().to_string()
    })
    .join()
    .unwrap();
    assert!(rt_less.contains("inside a spargio runtime"), "{rt_less}");
}

// === fs::create_dir_all ===

#[test]
fn create_dir_all_creates_parents_and_is_idempotent() {
    on_each_backend(|_| async {
        let root = temp_path("mkdirs");
        let deep = root.join("a").join("b").join("c");
        fs::create_dir_all(&deep).await?;
        assert!(std::fs::metadata(&deep)?.is_dir());
        fs::create_dir_all(&deep).await?;
        fs::create_dir_all(root.join("a")).await?;
        std::fs::write(root.join("a").join("file"), b"")?;
        let err = fs::create_dir_all(root.join("a").join("file").join("d"))
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::AlreadyExists | ErrorKind::NotADirectory),
            "{err:?}"
        );
        std::fs::remove_dir_all(&root)?;
        Ok(())
    });
}

// === fs::copy ===

#[test]
fn copy_copies_bytes_and_permissions_across_chunks() {
    on_each_backend(|_| async {
        let (src, dst) = (temp_path("copy-src"), temp_path("copy-dst"));
        // Not a multiple of the chunk: the last chunk is short.
        let data: Vec<u8> = (0..(3 * fs::COPY_CHUNK + 12_345) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(&src, &data)?;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640))?;
        // A longer destination is truncated first.
        std::fs::write(&dst, vec![7u8; data.len() + 999])?;
        let copied = fs::copy(&src, &dst).await?;
        assert_eq!(copied, data.len() as u64);
        assert!(std::fs::read(&dst)? == data, "the copy differs");
        assert_eq!(std::fs::metadata(&dst)?.permissions().mode() & 0o7777, 0o640);

        let empty = temp_path("copy-empty");
        std::fs::write(&empty, b"")?;
        let empty_dst = temp_path("copy-empty-dst");
        assert_eq!(fs::copy(&empty, &empty_dst).await?, 0);
        assert_eq!(std::fs::metadata(&empty_dst)?.len(), 0);
        for p in [&src, &dst, &empty, &empty_dst] {
            std::fs::remove_file(p)?;
        }
        Ok(())
    });
}

#[test]
fn copy_refuses_bad_input_without_harm() {
    on_each_backend(|_| async {
        let src = temp_path("copy-self");
        std::fs::write(&src, b"keep me")?;
        let err = fs::copy(&src, &src).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert_eq!(std::fs::read(&src)?, b"keep me", "copying onto itself lost data");
        // The same file through a hard link is the same file.
        let link = temp_path("copy-hardlink");
        std::fs::hard_link(&src, &link)?;
        assert_eq!(
            fs::copy(&src, &link).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(std::fs::read(&src)?, b"keep me");

        let dir = temp_path("copy-dir");
        std::fs::create_dir(&dir)?;
        let err = fs::copy(&dir, temp_path("copy-dir-dst")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let err = fs::copy(temp_path("copy-missing"), temp_path("copy-missing-dst"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        std::fs::remove_file(&src)?;
        std::fs::remove_file(&link)?;
        std::fs::remove_dir(&dir)?;
        Ok(())
    });
}

// === TcpSocket ===

async fn echo_once(listener: TcpListener, addr: SocketAddr) -> io::Result<()> {
    let client = spargio::spawn(async move {
        let stream = TcpSocket::new_v4()?.connect(addr).await?;
        stream.write_all(b"ping".to_vec()).await.0?;
        let (res, buf) = stream.read_exact(vec![0u8; 4]).await;
        res?;
        Ok::<_, io::Error>((buf, stream.local_addr()?))
    });
    let (server_side, peer) = listener.accept().await?;
    let (res, buf) = server_side.read_exact(vec![0u8; 4]).await;
    res?;
    server_side.write_all(buf).await.0?;
    let (echoed, client_addr) = client.await??;
    assert_eq!(echoed, b"ping");
    assert_eq!(peer, client_addr);
    Ok(())
}

#[test]
fn tcp_socket_listens_and_connects() {
    on_each_backend(|_| async {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        assert!(socket.reuseaddr()?);
        socket.bind("127.0.0.1:0".parse().unwrap())?;
        let listener = socket.listen(16)?;
        let addr = listener.local_addr()?;
        assert_ne!(addr.port(), 0);
        echo_once(listener, addr).await
    });
}

#[test]
fn tcp_socket_reuseport_lets_two_listeners_share_a_port() {
    on_each_backend(|_| async {
        let first = TcpSocket::new_v4()?;
        first.set_reuseport(true)?;
        assert!(first.reuseport()?);
        first.bind("127.0.0.1:0".parse().unwrap())?;
        let addr = first.local_addr()?;
        let first = first.listen(8)?;

        let second = TcpSocket::new_v4()?;
        second.set_reuseport(true)?;
        second.bind(addr)?;
        let second = second.listen(8)?;
        assert_eq!(second.local_addr()?, addr);

        // Without SO_REUSEPORT the port is taken.
        let third = TcpSocket::new_v4()?;
        assert!(!third.reuseport()?);
        assert_eq!(third.bind(addr).unwrap_err().kind(), ErrorKind::AddrInUse);

        drop(second);
        echo_once(first, addr).await
    });
}

#[test]
fn tcp_socket_buffer_sizes_and_options() {
    on_each_backend(|_| async {
        let socket = TcpSocket::new_v4()?;
        socket.set_send_buffer_size(64 * 1024)?;
        socket.set_recv_buffer_size(96 * 1024)?;
        // The kernel doubles what it is given (and caps it by *mem_max, which
        // is far above these sizes by default, at least 208 KiB).
        assert!(
            socket.send_buffer_size()? >= 64 * 1024,
            "{}",
            socket.send_buffer_size()?
        );
        assert!(
            socket.recv_buffer_size()? >= 96 * 1024,
            "{}",
            socket.recv_buffer_size()?
        );
        socket.set_nodelay(true)?;
        let too_big = socket.set_send_buffer_size(u32::MAX).unwrap_err();
        assert_eq!(too_big.kind(), ErrorKind::InvalidInput);
        Ok(())
    });
}

#[test]
fn tcp_socket_binds_before_connecting_and_reports_errors() {
    on_each_backend(|_| async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let addr = listener.local_addr()?;
        let client = TcpSocket::new_v4()?;
        client.bind("127.0.0.1:0".parse().unwrap())?;
        let local = client.local_addr()?;
        let accept = spargio::spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
        let stream = client.connect(addr).await?;
        assert_eq!(stream.local_addr()?, local);
        assert_eq!(accept.await??, local);

        // The wrong IP version is refused before any system call.
        let v4 = TcpSocket::new_v4()?;
        let err = v4.bind("[::1]:0".parse().unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("IPv6 address"), "{err}");
        let err = v4.connect("[::1]:1".parse().unwrap()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        // A closed port: ConnectionRefused.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
            l.local_addr()?
        };
        let err = TcpSocket::new_v4()?.connect(closed).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

        if let Ok(v6) = TcpSocket::new_v6() {
            let err = v6.connect(addr).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
        Ok(())
    });
}
