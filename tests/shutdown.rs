//! Integration tests of shutdown: what happens to queued, running and parked
//! tasks and to messages in flight; shutdown from a task, from another thread
//! and by `Drop`; idempotence; refusals afterwards; and no thread or fd leaks.
//!
//! The leak checks count the whole process's threads and fds, so every test in
//! this binary takes `SERIAL` first: none runs beside another.
#![forbid(unsafe_code)]

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use common::{DropCounter, Gate, Kernel, Never, build, builder, join, recv, wait, yield_now};
use spargio::{RuntimeError, RuntimeHandle, SendError, TaskPlacement};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests of this binary (a failed test poisons nothing).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

macro_rules! serial_each_kernel {
    ($($name:ident),* $(,)?) => {
        mod serial_scenarios {
            $( pub fn $name(kernel: $crate::common::Kernel) {
                let _serial = super::serial();
                super::$name(kernel)
            } )*
        }
        mod io_uring {
            $( #[test] fn $name() { super::serial_scenarios::$name($crate::common::Kernel::IoUring) } )*
        }
        mod queue {
            $( #[test] fn $name() { super::serial_scenarios::$name($crate::common::Kernel::Queue) } )*
        }
        mod sim {
            $( #[test] fn $name() { super::serial_scenarios::$name($crate::common::Kernel::Sim) } )*
        }
    };
}

serial_each_kernel!(
    no_thread_or_fd_leaks_after_20_runtimes,
    destructors_of_queued_running_and_parked_tasks_run,
    messages_in_flight_do_not_block_shutdown,
    shutdown_from_inside_a_task,
    shutdown_from_another_thread_ends_block_on,
    shutdown_is_idempotent,
    spawns_and_sends_after_shutdown_are_closed,
);

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

fn fd_count() -> usize {
    spargio::sys::os::open_fd_count().expect("/proc/self/fd")
}

/// One runtime's life with some of everything in it at the end: finished and
/// pending tasks, a local task, a blocking job, a timer, messages in flight.
fn busy_life(kernel: Kernel, prefix: &str) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(
        kernel,
        b.thread_name_prefix(prefix).spin_before_park(Duration::ZERO),
    );
    let h = rt.handle().clone();
    assert_eq!(threads_named(prefix), 2, "two shard threads run");
    let inner = h.clone();
    let done = h
        .spawn_pinned(0, async move {
            let to = inner.remote(1).unwrap();
            for i in 0..64 {
                to.send_raw_nowait(1, i).unwrap();
            }
            to.send_raw(1, 64).await.unwrap();
            inner.spawn_blocking(|| 7).unwrap().await.unwrap()
        })
        .unwrap();
    assert_eq!(join("busy task", done), 7);
    // Left behind at shutdown: a parked task, a sleeper, a local task, unread messages.
    let _pending = h.spawn_pinned(1, Never).unwrap();
    let _sleeper = h
        .spawn_stealable(spargio::time::sleep(Duration::from_secs(3600)))
        .unwrap();
    let _local = h
        .spawn_local_on(0, || {
            let not_send = Rc::new(());
            async move {
                let _not_send = not_send;
                Never.await
            }
        })
        .unwrap();
    h.remote(0).unwrap().send_raw_nowait(2, 2).unwrap();
    drop(rt);
    // Joined (drop returned), they leave /proc/self/task a moment later.
    let shard_threads = || threads_named(&format!("{prefix}-0")) + threads_named(&format!("{prefix}-1"));
    common::until("the shard threads leave /proc after the runtime's drop", || {
        shard_threads() == 0
    });
}

fn no_thread_or_fd_leaks_after_20_runtimes(kernel: Kernel) {
    if builder(kernel, 1).is_none() {
        return;
    }
    // Warm up once: process-wide lazies (Tokio-free here, but std's own) are
    // created outside the measured window.
    busy_life(kernel, "lkw");
    // The kernel's io_uring worker threads (`iou-wrk-*`, `iou-sqp-*`) are
    // threads of this process too. The test harness's own threads are not
    // counted: one waiting for `SERIAL` may come and go at any moment.
    let (kernel_threads, fds) = (threads_named("iou-"), fd_count());
    for i in 0..20 {
        busy_life(kernel, &format!("lk{i}"));
    }
    // Every thread a runtime starts carries its prefix (shards `lk3-0`, the
    // pool `lk3-blocking`; an unnamed thread inherits its creator's name).
    // Joined threads leave /proc/self/task a moment after the join returns.
    common::until("the runtimes' threads leave /proc", || threads_named("lk") == 0);
    common::until("the rings' kernel workers are back to the baseline", || {
        threads_named("iou-") <= kernel_threads
    });
    assert_eq!(fd_count(), fds, "fds leaked by 20 runtimes");
}

#[test]
fn blocking_pool_threads_are_joined_by_drop() {
    let _serial = serial();
    for kernel in Kernel::ALL {
        let Some(b) = builder(kernel, 1) else { continue };
        let rt = build(kernel, b.thread_name_prefix("bj"));
        // One idle pool thread (its job is done) and one still running a job
        // that another thread lets go of a second later.
        wait("blocking job", rt.handle().spawn_blocking(|| ()).unwrap()).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        let _job = rt.handle().spawn_blocking(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(common::HANG);
        });
        recv("blocking job start", &started_rx);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let _ = release_tx.send(());
        });
        drop(rt);
        // A joined thread leaves /proc/self/task a moment after the join
        // returns; a thread still running its job stays until the release,
        // a second later. Only a check delayed past the release could pass
        // with the bug.
        let gone_by = Instant::now() + Duration::from_millis(300);
        while threads_named("bj-blocking") > 0 && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = threads_named("bj-blocking");
        releaser.join().unwrap();
        assert_eq!(
            left, 0,
            "{kernel:?}: blocking-pool threads outlived Runtime::drop"
        );
    }
}

fn destructors_of_queued_running_and_parked_tasks_run(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let drops = Arc::new(AtomicUsize::new(0));
    let polled = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    // Running: a task in a long synchronous section on shard 0 when shutdown starts.
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let guard = DropCounter(drops.clone());
    handles.push(
        h.spawn_pinned(0, async move {
            let _guard = guard;
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(common::HANG);
            Never.await;
        })
        .unwrap(),
    );
    recv("running task start", &started_rx);
    // Queued behind it: never polled before shutdown.
    for _ in 0..10 {
        let (guard, polled) = (DropCounter(drops.clone()), polled.clone());
        handles.push(
            h.spawn_pinned(0, async move {
                let _guard = guard;
                polled.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap(),
        );
    }
    // Parked on shard 1: pending forever, waiting on a gate, sleeping, local.
    let gate = Gate::new();
    let (parked_tx, parked_rx) = mpsc::channel();
    for i in 0..12 {
        let (guard, parked, gate) = (DropCounter(drops.clone()), parked_tx.clone(), gate.clone());
        let fut = async move {
            let _guard = guard;
            parked.send(()).unwrap();
            match i % 3 {
                0 => Never.await,
                1 => gate.wait().await,
                _ => spargio::time::sleep(Duration::from_secs(3600)).await,
            }
        };
        let placement = if i % 2 == 0 {
            TaskPlacement::Pinned(1)
        } else {
            TaskPlacement::StealablePreferred(1)
        };
        handles.push(h.spawn_with_placement(placement, fut).unwrap());
    }
    for _ in 0..3 {
        let (guard, parked) = (DropCounter(drops.clone()), parked_tx.clone());
        handles.push(
            h.spawn_local_on(1, move || {
                let guard = Rc::new(guard);
                async move {
                    let _guard = guard;
                    parked.send(()).unwrap();
                    Never.await;
                }
            })
            .unwrap(),
        );
    }
    for _ in 0..15 {
        recv("parked task start", &parked_rx);
    }
    let total = handles.len();
    h.shutdown();
    assert!(h.is_shutting_down());
    release_tx.send(()).unwrap();
    drop(rt);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        total,
        "every task's future was dropped by shutdown"
    );
    assert_eq!(
        polled.load(Ordering::SeqCst),
        0,
        "queued tasks were cancelled before their first poll"
    );
    for t in handles {
        match wait("cancelled task", t) {
            Err(e) => assert!(e.is_cancelled(), "{e:?}"),
            Ok(()) => panic!("a cancelled task reported output"),
        }
    }
    assert_eq!(h.stats_snapshot().live_tasks, 0);
    // A gate opened after shutdown wakes nothing (the tasks are gone).
    gate.open();
}

fn messages_in_flight_do_not_block_shutdown(kernel: Kernel) {
    let Some(b) = builder(kernel, 3) else { return };
    let rt = build(kernel, b.msg_queue_capacity(1 << 20));
    let h = rt.handle().clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    // Shard senders flood shard 2, which never reads.
    let (flooding_tx, flooding_rx) = mpsc::channel();
    let mut tasks = Vec::new();
    for shard in 0..2 {
        let (inner, sent, flooding) = (h.clone(), sent.clone(), flooding_tx.clone());
        tasks.push(
            h.spawn_pinned(shard, async move {
                let to = inner.remote(2).unwrap();
                let mut first = true;
                loop {
                    match to.send_raw_nowait(0, 0) {
                        Ok(()) => _ = sent.fetch_add(1, Ordering::Relaxed),
                        Err(SendError::Closed) => return,
                        Err(e) => panic!("{e}"),
                    }
                    if std::mem::take(&mut first) {
                        flooding.send(()).unwrap();
                    }
                    yield_now().await;
                }
            })
            .unwrap(),
        );
    }
    // And a thread outside the runtime floods it until it is told no.
    let (to, sent2, running2) = (h.remote(2).unwrap(), sent.clone(), running.clone());
    let outside = std::thread::spawn(move || {
        let mut n = 0u64;
        while running2.load(Ordering::SeqCst) {
            match to.send_raw_nowait(1, 1) {
                Ok(()) => n += 1,
                Err(e) => return (n, Some(e)),
            }
            sent2.fetch_add(1, Ordering::Relaxed);
        }
        (n, None)
    });
    for _ in 0..2 {
        recv("flooding", &flooding_rx);
    }
    h.shutdown();
    drop(rt);
    running.store(false, Ordering::SeqCst);
    let (n, err) = outside.join().unwrap();
    assert!(
        matches!(err, None | Some(SendError::Closed)),
        "outside sender got {err:?} after {n} sends"
    );
    for t in tasks {
        match wait("flooding task", t) {
            Ok(()) => {}
            Err(e) => assert!(e.is_cancelled(), "{e:?}"),
        }
    }
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert_eq!(h.remote(2).unwrap().send_raw_nowait(0, 0), Err(SendError::Closed));
}

fn shutdown_from_inside_a_task(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let other = h.spawn_pinned(1, Never).unwrap();
    // Shutdown started by the task itself: it finishes its poll, so its output stands.
    let out = rt
        .block_on(async move {
            assert!(!h.is_shutting_down());
            h.shutdown();
            assert!(h.is_shutting_down());
            let refused = h.spawn_pinned(1, async {});
            (matches!(refused, Err(RuntimeError::Closed)), 5)
        })
        .unwrap();
    assert_eq!(out, (true, 5));
    assert!(wait("other task", other).unwrap_err().is_cancelled());
    drop(rt);

    // Started by a task that then waits: it is cancelled at that point.
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let reached = Arc::new(AtomicBool::new(false));
    let r = reached.clone();
    let t = h
        .spawn_pinned(1, async move {
            RuntimeHandle::current().unwrap().shutdown();
            yield_now().await;
            r.store(true, Ordering::SeqCst);
        })
        .unwrap();
    assert!(wait("self-shutdown task", t).unwrap_err().is_cancelled());
    assert!(!reached.load(Ordering::SeqCst));
    assert!(matches!(rt.block_on(async {}), Err(RuntimeError::Closed)));
    drop(rt);
}

fn shutdown_from_another_thread_ends_block_on(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let gate = Gate::new();
    let (in_block_on_tx, in_block_on_rx) = mpsc::channel();
    let stopper = std::thread::spawn(move || {
        recv("block_on running", &in_block_on_rx);
        h.shutdown();
    });
    let g = gate.clone();
    let r = rt.block_on(async move {
        in_block_on_tx.send(()).unwrap();
        g.wait().await;
    });
    assert!(matches!(r, Err(RuntimeError::Closed)), "{r:?}");
    stopper.join().unwrap();
    drop(rt);
}

fn shutdown_is_idempotent(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let t = h.spawn_pinned(0, Never).unwrap();
    h.shutdown();
    h.shutdown();
    let h2 = h.clone();
    std::thread::spawn(move || h2.shutdown()).join().unwrap();
    rt.shutdown(); // Joins.
    h.shutdown();
    assert!(h.is_shutting_down());
    assert!(wait("task", t).unwrap_err().is_cancelled());
    // Drop of a runtime after its handle shut it down is the same shutdown.
    let Some(b) = builder(kernel, 1) else { return };
    let rt = build(kernel, b);
    rt.handle().shutdown();
    drop(rt);
}

fn spawns_and_sends_after_shutdown_are_closed(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let check = |when: &str| {
        let closed =
            |r: Result<spargio::JoinHandle<()>, RuntimeError>| matches!(r, Err(RuntimeError::Closed));
        assert!(closed(h.spawn_pinned(0, async {})), "{when}: spawn_pinned");
        assert!(closed(h.spawn_stealable(async {})), "{when}: spawn_stealable");
        assert!(
            closed(h.spawn_stealable_on(1, async {})),
            "{when}: spawn_stealable_on"
        );
        assert!(
            closed(h.spawn_with_placement(TaskPlacement::RoundRobin, async {})),
            "{when}: round robin"
        );
        assert!(
            closed(h.spawn_with_placement(TaskPlacement::Sticky(3), async {})),
            "{when}: sticky"
        );
        assert!(closed(h.spawn_local_on(1, || async {})), "{when}: spawn_local_on");
        assert!(
            matches!(h.spawn_blocking(|| ()), Err(RuntimeError::Closed)),
            "{when}: spawn_blocking"
        );
        let to = h.remote(1).unwrap();
        assert_eq!(
            to.send_raw_nowait(0, 0),
            Err(SendError::Closed),
            "{when}: send_raw_nowait"
        );
        assert_eq!(
            to.send_many_raw_nowait([(0, 0)]),
            Err(SendError::Closed),
            "{when}: send_many"
        );
        assert_eq!(
            wait("ticket", to.send_raw(0, 0)),
            Err(SendError::Closed),
            "{when}: send_raw"
        );
        assert_eq!(wait("flush", to.flush()), Err(SendError::Closed), "{when}: flush");
        assert_eq!(
            h.stats_snapshot().live_tasks,
            0,
            "{when}: a refused spawn left a task behind"
        );
    };
    h.shutdown();
    check("after shutdown()");
    assert!(matches!(rt.block_on(async {}), Err(RuntimeError::Closed)));
    drop(rt);
    check("after drop");
}
