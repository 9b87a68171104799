//! Signals with real `kill(2)`s to this process, on both backends: every
//! listener of a signal is woken, a delivery while nobody waits is kept,
//! `ctrl_c` fires on `SIGINT`, and uncatchable signals are refused.
//!
//! Each test uses its own signals, so the tests of this binary can run in
//! parallel: watching a signal changes the whole process (see
//! `spargio::signal`), which is why these tests live in their own binary.
#![forbid(unsafe_code)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spargio::Backend;
use spargio::signal::unix::{SignalKind, signal};

use common::runtime_on as runtime;

fn skip(backend: Backend) -> bool {
    if backend == Backend::IoUring
        && let Some(reason) = common::io_uring_unavailable()
    {
        eprintln!("SKIPPED (real io_uring): {reason}");
        return true;
    }
    false
}

/// Sends `signo` to this process from another thread (as an outside sender
/// would: the kernel picks the thread that takes it).
fn kill_from_thread(signo: &'static str) {
    std::thread::spawn(move || {
        let status = std::process::Command::new("kill")
            .args([signo, &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    })
    .join()
    .unwrap();
}

/// Sends `signo` to this process again and again until `done` is set: for a
/// listener that starts at a moment the test cannot see (`ctrl_c`'s first
/// poll). Standard signals coalesce, so extra ones are harmless.
fn keep_sending(signo: &'static str, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            let _ = std::process::Command::new("kill")
                .args([signo, &std::process::id().to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn every_listener_is_woken_on(backend: Backend, kind: SignalKind, name: &'static str) {
    if skip(backend) {
        return;
    }
    let rt = runtime(backend);
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let listeners: Vec<_> = (0..3).map(|_| signal(kind).unwrap()).collect();
        let tasks: Vec<_> = listeners
            .into_iter()
            .map(|mut s| {
                handle
                    .spawn_stealable(async move {
                        s.recv().await.expect("the signal is readable");
                        s.kind()
                    })
                    .unwrap()
            })
            .collect();
        kill_from_thread(name);
        for t in tasks {
            assert_eq!(t.await.unwrap(), kind);
        }
    })
    .unwrap();
}

#[test]
fn every_listener_of_a_signal_is_woken_io_uring() {
    every_listener_is_woken_on(Backend::IoUring, SignalKind::user_defined1(), "-USR1");
}

#[test]
fn every_listener_of_a_signal_is_woken_queue() {
    every_listener_is_woken_on(Backend::Queue, SignalKind::user_defined2(), "-USR2");
}

/// A signal that arrives while nobody waits in `recv` is reported by the
/// next `recv`; one made before the listener existed is not.
#[test]
fn a_delivery_while_nobody_waits_is_kept() {
    for (backend, kind, name) in [
        (Backend::IoUring, SignalKind::window_change(), "-WINCH"),
        (Backend::Queue, SignalKind::from_raw(libc::SIGURG), "-URG"),
    ] {
        if skip(backend) {
            continue;
        }
        let rt = runtime(backend);
        rt.block_on(async move {
            let mut first = signal(kind).unwrap();
            kill_from_thread(name);
            first.recv().await.unwrap();
            // Made after that delivery was counted: it waits for the next one.
            let mut second = signal(kind).unwrap();
            let early = spargio::time::timeout(Duration::from_millis(100), second.recv()).await;
            assert!(
                early.is_err(),
                "{backend:?}: a listener saw a signal sent before it existed"
            );
            kill_from_thread(name);
            second.recv().await.unwrap();
            first.recv().await.unwrap();
        })
        .unwrap();
    }
}

#[test]
fn ctrl_c_fires_on_sigint() {
    if skip(Backend::IoUring) {
        return;
    }
    let rt = runtime(Backend::IoUring);
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        // Install the listener first, so that no SIGINT can reach the
        // default action (ending this test process).
        let listener = rt
            .block_on(async { signal(SignalKind::interrupt()) })
            .unwrap()
            .unwrap();
        let sender = keep_sending("-INT", done.clone());
        rt.block_on(async move {
            spargio::signal::ctrl_c().await.unwrap();
            drop(listener);
        })
        .unwrap();
        sender
    };
    done.store(true, Ordering::SeqCst);
    sender.join().unwrap();
}

#[test]
fn signals_that_cannot_be_watched_are_refused() {
    let rt = runtime(Backend::Queue);
    rt.block_on(async {
        for signo in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 0, 999] {
            let e = signal(SignalKind::from_raw(signo)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "signal {signo}");
        }
    })
    .unwrap();
    // Outside a runtime there is nothing to read the signal on.
    let e = signal(SignalKind::from_raw(libc::SIGPROF)).unwrap_err();
    assert!(e.to_string().contains("runtime"), "{e}");
}
