//! The Queue backend at scale: idle connections wait for readiness in the
//! shards' epoll sets, not on blocking-pool threads (issue 14). The
//! assertions are resource bounds (threads), never timings.
#![forbid(unsafe_code)]

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use spargio::net::{TcpListener, TcpStream};
use spargio::{Backend, RuntimeBuilder};

/// Threads of this process (`/proc/self/task`).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Resident set size of this process in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How many connections fit under the hard fd limit (two fds each, plus
/// room for the runtime and the test harness), at most `want`; raises the
/// soft limit to fit them.
fn connections_allowed(want: usize) -> usize {
    let (soft, hard) = spargio::sys::os::nofile_limit().unwrap();
    let spare = 64;
    let fit = usize::try_from(hard.saturating_sub(spare) / 2).unwrap_or(usize::MAX);
    let n = want.min(fit);
    let need = (2 * n + spare as usize) as u64;
    if soft < need {
        spargio::sys::os::set_nofile_limit(need.min(hard)).unwrap();
    }
    n
}

#[test]
fn ten_thousand_idle_connections_hold_no_threads_and_echo_still_runs() {
    let _serial = serial();
    let n = connections_allowed(10_000);
    if n < 10_000 {
        eprintln!("the hard RLIMIT_NOFILE allows {n} connections, not 10,000");
    }
    let rt = RuntimeBuilder::new()
        .shards(2)
        .backend(Backend::Queue)
        .fallback_to_queue(false)
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let (threads_before, rss_before) = (threads(), rss_kib());
    let started = Instant::now();
    let report = rt
        .block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            // n idle connections, each server side with a receive pending on
            // one of the two shards.
            let mut clients = Vec::with_capacity(n);
            let mut idle = Vec::with_capacity(n);
            for i in 0..n {
                clients.push(TcpStream::connect(addr).await.unwrap());
                let (server, _) = listener.accept().await.unwrap();
                idle.push(
                    handle
                        .spawn_pinned(i % 2, async move {
                            let (res, buf) = server.recv(vec![0u8; 16]).await;
                            (res.unwrap(), buf)
                        })
                        .unwrap(),
                );
            }
            let connected = started.elapsed();
            // Let every pending receive reach its shard's epoll set.
            let waiting = || -> u64 {
                handle
                    .stats_snapshot()
                    .shards
                    .iter()
                    .map(|s| s.ops_in_flight)
                    .sum()
            };
            let deadline = Instant::now() + common::HANG;
            while waiting() < n as u64 {
                assert!(Instant::now() < deadline, "{} of {n} receives waiting", waiting());
                spargio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let idle_threads = threads();
            let idle_rss = rss_kib();

            // Active echo traffic on a few more connections completes meanwhile.
            let mut echoes = Vec::new();
            for k in 0..4u8 {
                let client = TcpStream::connect(addr).await.unwrap();
                let (server, _) = listener.accept().await.unwrap();
                let echo = handle
                    .spawn_pinned(usize::from(k) % 2, async move {
                        loop {
                            let (res, buf) = server.recv(vec![0u8; 256]).await;
                            if res.unwrap() == 0 {
                                return;
                            }
                            server.write_all(buf).await.0.unwrap();
                        }
                    })
                    .unwrap();
                echoes.push(
                    handle
                        .spawn_pinned(usize::from(k + 1) % 2, async move {
                            for round in 0..200u32 {
                                let msg = vec![k.wrapping_add(round as u8); 256];
                                client.write_all(msg.clone()).await.0.unwrap();
                                let (res, got) = client.read_exact(vec![0u8; 256]).await;
                                res.unwrap();
                                assert_eq!(got, msg, "echo {k}, round {round}");
                            }
                            client.shutdown(std::net::Shutdown::Write).await.unwrap();
                            echo.await.unwrap();
                        })
                        .unwrap(),
                );
            }
            for e in echoes {
                e.await.unwrap();
            }
            let echo_threads = threads();

            // Every idle receive was really pending: one byte each ends them all.
            for (i, c) in clients.iter().enumerate() {
                c.write_all(vec![(i % 251) as u8]).await.0.unwrap();
            }
            for (i, t) in idle.into_iter().enumerate() {
                let (got, buf) = t.await.unwrap();
                assert_eq!((got, buf[0]), (1, (i % 251) as u8), "connection {i}");
            }
            (connected, idle_threads, idle_rss, echo_threads)
        })
        .unwrap();
    let (connected, idle_threads, idle_rss, echo_threads) = report;
    println!(
        "{n} idle connections (connected in {connected:?}): threads {threads_before} -> {idle_threads} idle, \
         {echo_threads} with echo traffic; RSS {rss_before} KiB -> {idle_rss} KiB \
         ({:.1} KiB per connection); total {:?}",
        idle_rss.saturating_sub(rss_before) as f64 / n as f64,
        started.elapsed()
    );
    assert!(
        idle_threads < 100,
        "{idle_threads} threads for {n} idle connections"
    );
    assert!(echo_threads < 100, "{echo_threads} threads with echo traffic");
}

/// Set in the child process that runs with io_uring denied.
const DENIED_CHILD: &str = "SPARGIO_TEST_IO_URING_DENIED";

#[test]
fn a_process_denied_io_uring_falls_back_to_the_queue_backend_and_serves_every_io_type() {
    const NAME: &str = "a_process_denied_io_uring_falls_back_to_the_queue_backend_and_serves_every_io_type";
    if let Some(errno) = std::env::var_os(DENIED_CHILD) {
        let errno = errno.to_str().and_then(|e| e.parse().ok()).expect("an errno");
        return denied_child(errno);
    }
    // Spawning the children opens pipes in this process: not beside a test
    // that counts threads or expects a closed fd number to be reused.
    let _serial = serial();
    // The filter cannot be lifted: it goes into a child running this test
    // alone, once as Docker's default profile answers (EPERM) and once as a
    // kernel without io_uring does (ENOSYS).
    for errno in [libc::EPERM, libc::ENOSYS] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env(DENIED_CHILD, errno.to_string())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The harness prints the test's name on the same line as its output.
        let report = |tag: &str| {
            stdout
                .lines()
                .find_map(|l| l.find(tag).map(|at| l[at..].to_string()))
        };
        if let Some(line) = report("SKIPPED") {
            eprintln!("{line}");
            return;
        }
        assert!(
            out.status.success(),
            "child (errno {errno}) failed:\n{stdout}\n{stderr}"
        );
        let line = report("FALLBACK OK");
        println!(
            "{}",
            line.unwrap_or_else(|| panic!("child (errno {errno}) did not report:\n{stdout}\n{stderr}"))
        );
    }
}

/// The child: io_uring_setup fails with `errno`; the default builder falls
/// back, and every public I/O type works on the Queue backend: TCP, UDP,
/// Unix streams and datagrams, files and directories, timers, channels
/// across shards, and a shutdown with a receive still pending.
fn denied_child(errno: i32) {
    if let Err(e) = spargio::sys::os::deny_io_uring_for_test(errno) {
        println!("SKIPPED: cannot install a seccomp filter here: {e}");
        return;
    }
    let refused = spargio::sys::ring::Ring::new(2).expect_err("io_uring_setup is denied");
    assert_eq!(refused.raw_os_error(), Some(errno));
    assert!(refused.io_uring_unavailable(), "{refused}");
    let rt = RuntimeBuilder::new().shards(2).build().unwrap();
    assert_eq!(rt.handle().backend(), Backend::Queue);
    let reason = rt.fallback_reason().expect("a fallback reason").to_string();
    let handle = rt.handle().clone();
    let dir = std::env::temp_dir().join(format!("spargio-denied-{}-{errno}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.clone();
    rt.block_on(async move {
        // TCP.
        let listener = TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = handle
            .spawn_pinned(1, async move {
                let (conn, _) = listener.accept().await.unwrap();
                loop {
                    let (res, buf) = conn.recv(vec![0u8; 256]).await;
                    if res.unwrap() == 0 {
                        return;
                    }
                    conn.write_all(buf).await.0.unwrap();
                }
            })
            .unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        for round in 0..50u8 {
            client.write_all(vec![round; 256]).await.0.unwrap();
            let (res, got) = client.read_exact(vec![0u8; 256]).await;
            res.unwrap();
            assert_eq!(got, vec![round; 256]);
        }
        client.shutdown(std::net::Shutdown::Write).await.unwrap();
        server.await.unwrap();

        // UDP.
        let a = spargio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = spargio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        a.send_to(b"udp".to_vec(), b.local_addr().unwrap())
            .await
            .0
            .unwrap();
        let (res, got) = b.recv_from(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap().1, a.local_addr().unwrap());
        assert_eq!(got, b"udp");

        // Unix streams and datagrams.
        let (x, y) = spargio::net::UnixStream::pair().unwrap();
        x.write_all(b"unix".to_vec()).await.0.unwrap();
        let (res, got) = y.read_exact(vec![0u8; 4]).await;
        res.unwrap();
        assert_eq!(got, b"unix");
        let (p, q) = spargio::net::UnixDatagram::pair().unwrap();
        p.send(b"dgram".to_vec()).await.0.unwrap();
        let (res, got) = q.recv(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(got, b"dgram");

        // Files and a directory opened beneath.
        let path = base.join("f");
        spargio::fs::write(&path, b"file contents".to_vec())
            .await
            .unwrap();
        assert_eq!(spargio::fs::read(&path).await.unwrap(), b"file contents");
        let d = spargio::fs::Dir::open(&base).await.unwrap();
        let f = d.open_file("f").await.unwrap();
        assert_eq!(f.read_to_end_at(5).await.unwrap(), b"contents");

        // Timers, and a channel across shards.
        spargio::time::sleep(std::time::Duration::from_millis(2)).await;
        let never = spargio::time::timeout(std::time::Duration::from_millis(2), std::future::pending::<()>());
        assert!(never.await.is_err());
        let (tx, mut rx) = spargio::sync::mpsc::channel(4);
        handle
            .spawn_pinned(1, async move { tx.send(42u32).await.unwrap() })
            .unwrap();
        assert_eq!(rx.recv().await, Some(42));

        // A receive left pending when the runtime shuts down (below).
        let (idle, _keep) = spargio::net::UnixStream::pair().unwrap();
        handle
            .spawn_pinned(1, async move {
                let _ = idle.recv(vec![0u8; 8]).await;
                let _ = &_keep;
            })
            .unwrap();
    })
    .unwrap();
    drop(rt);
    std::fs::remove_dir_all(&dir).unwrap();
    println!("FALLBACK OK (errno {errno}): threads {}; {reason}", threads());
}

/// Tests that count threads or expect an fd number to be reused run one at
/// a time (the process's fd table and thread list are shared).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A one-shard Queue runtime.
fn queue_rt() -> spargio::Runtime {
    RuntimeBuilder::new()
        .shards(1)
        .backend(Backend::Queue)
        .fallback_to_queue(false)
        .build()
        .unwrap()
}

/// Ops the shards hold now (waiting in epoll or running on the pool).
fn in_flight(handle: &spargio::RuntimeHandle) -> u64 {
    handle
        .stats_snapshot()
        .shards
        .iter()
        .map(|s| s.ops_in_flight)
        .sum()
}

/// Awaits `task`, failing (not hanging) if a lost wake-up leaves it waiting.
async fn finish<T: Send + 'static>(task: spargio::JoinHandle<T>) -> T {
    match spargio::time::timeout(common::HANG, task).await {
        Ok(res) => res.unwrap(),
        Err(_) => panic!("hang: a waiting op was never woken"),
    }
}

/// Waits (yielding to the runtime) until `n` ops are in flight.
async fn until_in_flight(handle: &spargio::RuntimeHandle, n: u64) {
    let deadline = Instant::now() + common::HANG;
    while in_flight(handle) != n {
        assert!(
            Instant::now() < deadline,
            "{} ops in flight, not {n}",
            in_flight(handle)
        );
        spargio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The file status flags of `fd` (`/proc/self/fdinfo`, octal).
fn status_flags(fd: std::os::fd::RawFd) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
    u32::from_str_radix(flags.trim(), 8).unwrap()
}

/// An fd number that waited in epoll is closed and reused by another socket
/// while a duplicate of the first file keeps its (stale) registration in the
/// set: the stale registration's events wake nobody, and the new socket's
/// receive still gets its own data (its registration was made afresh).
#[test]
fn a_reused_fd_number_serves_the_new_file_not_the_stale_registration() {
    let _serial = serial();
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let rt = queue_rt();
    rt.block_on(async {
        let (a, mut a_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let a_dup = a.try_clone().unwrap();
        let a = spargio::net::UnixStream::from_std(a).unwrap();
        let number = a.as_raw_fd();
        // Registered by a receive that had to wait.
        let reader = spargio::spawn(async move {
            let (res, buf) = a.recv(vec![0u8; 8]).await;
            (res.unwrap(), buf, a)
        });
        spargio::time::sleep(std::time::Duration::from_millis(20)).await;
        a_peer.write_all(b"one").unwrap();
        let (n, buf, a) = finish(reader).await;
        assert_eq!(&buf[..n], b"one");
        drop(a); // Closes `number`; `a_dup` keeps the file (and its registration) alive.

        let (b, mut b_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let b = spargio::net::UnixStream::from_std(b).unwrap();
        assert_eq!(b.as_raw_fd(), number, "the lowest free number is reused");
        let reader = spargio::spawn(async move {
            let (res, buf) = b.recv(vec![0u8; 8]).await;
            (res.unwrap(), buf)
        });
        spargio::time::sleep(std::time::Duration::from_millis(20)).await;
        // Data for the old file: its stale registration fires; nobody takes it.
        a_peer.write_all(b"stale").unwrap();
        spargio::time::sleep(std::time::Duration::from_millis(20)).await;
        b_peer.write_all(b"two").unwrap();
        let (n, buf) = finish(reader).await;
        assert_eq!(&buf[..n], b"two");
        // The stale data is still in the old file, untouched.
        let mut rest = [0u8; 8];
        let n = std::io::Read::read(&mut &a_dup, &mut rest).unwrap();
        assert_eq!(&rest[..n], b"stale");
    })
    .unwrap();
}

/// A receive and a send pending at once on one socket (its send buffer full,
/// nothing to read yet) are both served by the one registration.
#[test]
fn a_pending_read_and_a_pending_write_on_one_socket_are_both_served() {
    let _serial = serial();
    use std::io::{Read as _, Write as _};
    let rt = queue_rt();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let x = std::sync::Arc::new(spargio::net::UnixStream::from_std(x).unwrap());
        const BIG: usize = 8 << 20; // Far more than a socket buffer holds.
        let (xr, xw) = (x.clone(), x.clone());
        let reader = spargio::spawn(async move {
            let (res, buf) = xr.recv(vec![0u8; 16]).await;
            (res.unwrap(), buf)
        });
        let writer = spargio::spawn(async move { xw.write_all(vec![9u8; BIG]).await.0.unwrap() });
        until_in_flight(&handle, 2).await;
        // The peer answers, then drains the big write.
        let peer = std::thread::spawn(move || {
            let mut y = y;
            y.write_all(b"ping").unwrap();
            let mut got = 0;
            let mut buf = vec![0u8; 1 << 16];
            while got < BIG {
                let n = y.read(&mut buf).unwrap();
                assert!(n > 0);
                assert!(buf[..n].iter().all(|&b| b == 9));
                got += n;
            }
            got
        });
        let (n, buf) = finish(reader).await;
        assert_eq!(&buf[..n], b"ping");
        finish(writer).await;
        assert_eq!(peer.join().unwrap(), BIG);
    })
    .unwrap();
}

/// A receive dropped while it waits in epoll takes nothing; the fd stays
/// registered and the next receive gets all of the data.
#[test]
fn a_cancelled_wait_takes_nothing_and_the_next_receive_gets_the_data() {
    let _serial = serial();
    use std::io::Write as _;
    let rt = queue_rt();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let (x, mut y) = std::os::unix::net::UnixStream::pair().unwrap();
        let x = spargio::net::UnixStream::from_std(x).unwrap();
        for _ in 0..20 {
            let r = spargio::time::timeout(std::time::Duration::from_millis(1), x.recv(vec![0u8; 8])).await;
            assert!(r.is_err(), "nothing was sent yet");
        }
        until_in_flight(&handle, 0).await;
        y.write_all(b"kept").unwrap();
        let (res, buf) = x.recv(vec![0u8; 8]).await;
        assert_eq!(&buf[..res.unwrap()], b"kept");
    })
    .unwrap();
}

/// A waiting receive sees the peer's half-close (end of stream, `EPOLLRDHUP`)
/// and a waiting send sees the reader's close of a full pipe (`EPOLLERR`:
/// `BrokenPipe`).
#[test]
fn waits_end_on_hang_up_and_on_errors() {
    let _serial = serial();
    let rt = queue_rt();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let x = spargio::net::UnixStream::from_std(x).unwrap();
        let reader = spargio::spawn(async move { x.recv(vec![0u8; 8]).await.0.unwrap() });
        until_in_flight(&handle, 1).await;
        y.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(finish(reader).await, 0, "end of stream");

        let (r, w) = std::io::pipe().unwrap();
        let file = spargio::fs::File::from_owned_fd(w.into());
        let mut filled = 0usize;
        // Writes at once while the pipe has room (64 KiB by default).
        loop {
            let write = file.write_at(vec![1u8; 4096], 0);
            match spargio::time::timeout(std::time::Duration::from_millis(20), write).await {
                Ok((res, _)) => filled += res.unwrap(),
                Err(_) => break, // Waiting: the pipe is full.
            }
            assert!(filled < 16 << 20, "the pipe never filled");
        }
        let file2 = file.clone();
        let writer = spargio::spawn(async move { file2.write_at(vec![2u8; 4096], 0).await.0 });
        until_in_flight(&handle, 1).await;
        drop(r);
        let err = finish(writer).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    })
    .unwrap();
}

/// 200 reads on empty pipes wait in the shard's epoll set, not on 200 pool
/// threads; then data flows to each, and the pipes' file status flags were
/// never changed (no `O_NONBLOCK` on a pipe end another process may share).
#[test]
fn idle_pipe_reads_hold_no_pool_threads_and_data_flows() {
    let _serial = serial();
    use std::io::Write as _;
    use std::os::fd::{AsRawFd, OwnedFd};
    const N: usize = 200;
    let rt = queue_rt();
    let handle = rt.handle().clone();
    let before = threads();
    rt.block_on(async move {
        let mut writers = Vec::new();
        let mut reads = Vec::new();
        let mut flags = Vec::new();
        for i in 0..N {
            let (r, w) = std::io::pipe().unwrap();
            flags.push((r.as_raw_fd(), status_flags(r.as_raw_fd())));
            writers.push(w);
            let file = spargio::fs::File::from_owned_fd(OwnedFd::from(r));
            reads.push(spargio::spawn(async move {
                let (res, buf) = file.read_at(Vec::with_capacity(16), 0).await;
                let n = res.unwrap();
                assert_eq!(buf[..n], [(i % 251) as u8; 3], "pipe {i}");
                (file, n)
            }));
        }
        until_in_flight(&handle, N as u64).await;
        let idle = threads();
        assert!(
            idle < before + 16,
            "{idle} threads with {N} idle pipe reads (from {before})"
        );
        for (fd, f) in &flags {
            assert_eq!(status_flags(*fd), *f, "fd {fd}'s flags changed");
            assert_eq!(f & libc::O_NONBLOCK as u32, 0);
        }
        for (i, w) in writers.iter_mut().enumerate() {
            w.write_all(&[(i % 251) as u8; 3]).unwrap();
        }
        for r in reads {
            assert_eq!(finish(r).await.1, 3);
        }
        // Pipes ignore the offset (as on io_uring): a write and a read at any
        // offset go through the pipe in order.
        let (r, w) = std::io::pipe().unwrap();
        let (r, w) = (
            spargio::fs::File::from_owned_fd(r.into()),
            spargio::fs::File::from_owned_fd(w.into()),
        );
        assert_eq!(w.write_at(b"abc".to_vec(), 77).await.0.unwrap(), 3);
        let (res, buf) = r.read_at(Vec::with_capacity(8), 5).await;
        assert_eq!(&buf[..res.unwrap()], b"abc");
    })
    .unwrap();
}

/// A task that receives from a peer whose data is always there completes
/// every receive at once on the readiness driver; past the driver's inline
/// budget its receives wait for the next turn, so the shard still runs its
/// other tasks and timers (without the budget the reader never gave the one
/// shard back and this test hung).
#[test]
fn a_reader_of_a_fast_peer_does_not_starve_its_shard() {
    let _serial = serial();
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let rt = queue_rt();
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let chunk = vec![7u8; 64 * 1024];
            while !stop.load(Ordering::SeqCst) {
                if theirs.write_all(&chunk).is_err() {
                    return;
                }
            }
        })
    };
    let ours = spargio::net::UnixStream::from_std(ours).unwrap();
    let received = rt
        .block_on({
            let stop = stop.clone();
            async move {
                // Fill the socket before the reader starts: every receive
                // then finds data at once.
                spargio::time::sleep(std::time::Duration::from_millis(20)).await;
                let reader = {
                    let stop = stop.clone();
                    spargio::spawn(async move {
                        let mut buf = vec![0u8; 16];
                        let mut receives = 0u64;
                        // A bound, so a starved shard fails the test instead
                        // of hanging it: the stopper needs one turn.
                        while !stop.load(Ordering::SeqCst) && receives < 10_000_000 {
                            let (res, b) = ours.recv(buf).await;
                            assert!(res.unwrap() > 0);
                            buf = b;
                            receives += 1;
                        }
                        (receives, stop.load(Ordering::SeqCst))
                    })
                };
                // Runs on the same (only) shard as the reader.
                let stopper = spargio::spawn(async move {
                    spargio::time::sleep(std::time::Duration::from_millis(20)).await;
                    stop.store(true, Ordering::SeqCst);
                });
                finish(stopper).await;
                finish(reader).await
            }
        })
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let (receives, stopped) = received;
    assert!(
        stopped,
        "the reader made {receives} receives and its shard never ran the stopper"
    );
}
