//! Child processes with real children (`sh`, `cat`, `true`, `false`,
//! `sleep`) on both backends: exit codes, captured output, a few MiB echoed
//! through `cat`, kill and kill-on-drop (checked in `/proc`), and no zombie
//! left by a dropped child.
#![forbid(unsafe_code)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use spargio::Backend;
use spargio::process::{Command, Stdio};

use common::runtime_on as runtime;

const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Queue];

fn skip(backend: Backend) -> bool {
    if backend == Backend::IoUring
        && let Some(reason) = common::io_uring_unavailable()
    {
        eprintln!("SKIPPED (real io_uring): {reason}");
        return true;
    }
    false
}

/// Runs `f` on each backend's runtime.
fn on_both<F, Fut>(f: F)
where
    F: Fn(Backend) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for backend in BACKENDS {
        if skip(backend) {
            continue;
        }
        runtime(backend).block_on(f(backend)).unwrap();
    }
}

/// The state letter of process `pid` in `/proc` (`Z` for a zombie), or
/// `None` once it is gone (reaped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits (without blocking the shard) until process `pid` is gone from
/// `/proc`: killed if need be, and reaped. Panics after the hang bound.
async fn until_gone(pid: u32) {
    let deadline = std::time::Instant::now() + common::HANG;
    while proc_state(pid).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "hang: process {pid} was never reaped"
        );
        spargio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[test]
fn exit_codes_come_back() {
    on_both(|backend| async move {
        let status = Command::new("true").status().await.unwrap();
        assert!(status.success(), "{backend:?}");
        let status = Command::new("false").status().await.unwrap();
        assert_eq!(status.code(), Some(1), "{backend:?}");
        let mut child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        assert!(child.id().is_some());
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(7), "{backend:?}");
        assert_eq!(child.id(), None, "a reaped child has no pid");
        assert_eq!(child.try_wait().unwrap(), Some(status), "the status is kept");
    });
}

#[test]
fn output_captures_stdout_and_stderr() {
    on_both(|backend| async move {
        let out = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; echo \"$GREETING\"; pwd; exit 2"])
            .env("GREETING", "hi")
            .current_dir("/")
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"out\nhi\n/\n", "{backend:?}");
        assert_eq!(out.stderr, b"err\n", "{backend:?}");
        assert_eq!(out.status.code(), Some(2));
    });
}

#[test]
fn a_missing_program_is_not_found() {
    on_both(|_| async {
        let e = Command::new("/nonexistent/spargio-no-such-program")
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    });
}

/// 4 MiB written to `cat`'s stdin by one task come back on its stdout, read
/// by another: both pipes fill and drain many times.
#[test]
fn megabytes_echo_through_cat() {
    for backend in BACKENDS {
        if skip(backend) {
            continue;
        }
        let rt = runtime(backend);
        let handle = rt.handle().clone();
        rt.block_on(async move {
            let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
            let mut child = Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            let stdout = child.stdout.take().unwrap();
            let expected = data.clone();
            let writer = handle
                .spawn_stealable(async move {
                    for chunk in data.chunks(300_000) {
                        let (res, _) = stdin.write_all(chunk.to_vec()).await;
                        res.unwrap();
                    }
                    // Dropping stdin here closes the pipe: cat sees EOF.
                })
                .unwrap();
            let got = stdout.read_to_end(Vec::new()).await.unwrap();
            writer.await.unwrap();
            assert!(
                got == expected,
                "{backend:?}: {} bytes back of {}",
                got.len(),
                expected.len()
            );
            assert!(child.wait().await.unwrap().success());
        })
        .unwrap();
    }
}

#[test]
fn kill_ends_a_running_child() {
    on_both(|backend| async move {
        let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "{backend:?}: sleep is still running"
        );
        child.kill().await.unwrap();
        let status = child.try_wait().unwrap().expect("reaped by kill");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        child.kill().await.unwrap(); // a reaped child: nothing to do
    });
}

/// `kill_on_drop(true)`: dropping the child kills it, and the background
/// reaper leaves no zombie (`/proc/PID` goes away).
#[test]
fn kill_on_drop_really_kills_and_reaps() {
    on_both(|backend| async move {
        let child = Command::new("sleep")
            .arg("1000")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        assert!(
            matches!(proc_state(pid), Some(s) if s != 'Z'),
            "{backend:?}: sleep runs"
        );
        drop(child);
        // The reaper runs on this runtime; wait for it without blocking the shard.
        until_gone(pid).await;
    });
}

/// A child dropped without waiting (and not killed) is reaped when it exits,
/// by a task inside a runtime and by a thread outside one.
#[test]
fn a_dropped_child_leaves_no_zombie() {
    on_both(|backend| async move {
        let child = Command::new("sh").args(["-c", "exit 0"]).spawn().unwrap();
        let pid = child.id().unwrap();
        drop(child);
        until_gone(pid).await;
        let _ = backend;
    });
    // Outside any runtime: spawned in one, dropped on this thread.
    let rt = runtime(Backend::Queue);
    let child = rt
        .block_on(async { Command::new("sh").args(["-c", "exit 0"]).spawn().unwrap() })
        .unwrap();
    drop(rt);
    let pid = child.id().unwrap();
    drop(child);
    common::until("the reaper thread reaps the child", || proc_state(pid).is_none());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}
