//! `spargio::sync` against the real runtime, on every kernel: cancellation
//! of task trees across shards, channels under cross-shard and foreign-thread
//! load (exactly once, in order per producer), Notify and Semaphore.
#![forbid(unsafe_code)]

mod common;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use common::{DropCounter, Kernel, build, builder, join, recv, wait};
use spargio::sync::{CancellationToken, Notify, Semaphore, TaskGroup, TryAcquireError, mpsc, oneshot};
use spargio::{Runtime, RuntimeHandle, TaskPlacement};

const SHARDS: usize = 2;

fn runtime(kernel: Kernel) -> Option<Runtime> {
    builder(kernel, SHARDS).map(|b| build(kernel, b))
}

/// Every placement a task can have in a 2-shard runtime.
fn placements() -> [TaskPlacement; 5] {
    [
        TaskPlacement::Pinned(0),
        TaskPlacement::Pinned(1),
        TaskPlacement::RoundRobin,
        TaskPlacement::Stealable,
        TaskPlacement::StealablePreferred(1),
    ]
}

/// Panics with `msg`; any return type (for task bodies that must panic).
fn boom<T>(msg: &str) -> T {
    panic!("{msg}")
}

fn cancellation_reaches_a_task_tree_on_every_shard(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle().clone();
    let root = CancellationToken::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let outer: Arc<TaskGroup<usize>> = Arc::new(TaskGroup::with_parent(&handle, &root));
    let mut expected_tasks = 0;
    for (i, placement) in placements().into_iter().enumerate() {
        // Each outer task spawns an inner group (a child of the outer group's
        // token) of tasks that wait forever, on every placement, then waits on
        // them itself.
        let (h, dropped, started, parent) = (handle.clone(), dropped.clone(), started.clone(), outer.token());
        outer
            .spawn(placement, async move {
                let inner: TaskGroup = TaskGroup::with_parent(&h, &parent);
                for p in placements() {
                    let (dropped, started) = (dropped.clone(), started.clone());
                    inner
                        .spawn(p, async move {
                            let _counter = DropCounter(dropped);
                            started.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<()>().await;
                        })
                        .unwrap();
                }
                let _counter = DropCounter(dropped.clone());
                started.fetch_add(1, Ordering::SeqCst);
                let exits = inner.join_all().await;
                // Only reached if the inner group's tasks end without the outer
                // task being cancelled first (they never end by themselves).
                exits.len() + i
            })
            .unwrap();
        expected_tasks += 1 + placements().len();
    }
    // A cooperative watcher: sees the cancellation and returns a value.
    let token = outer.token();
    outer
        .spawn(TaskPlacement::Pinned(1), async move {
            token.cancelled().await;
            usize::MAX
        })
        .unwrap();
    common::until("every task started", || {
        started.load(Ordering::SeqCst) == expected_tasks
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 0);

    root.cancel(); // from a plain thread, two levels above the tasks
    let exits = wait("join the outer group", outer.join_all());
    assert_eq!(exits.len(), placements().len() + 1);
    for exit in &exits[..placements().len()] {
        assert!(
            exit.is_cancelled(),
            "task {} was not cancelled: {:?}",
            exit.id,
            exit.result.as_ref().ok()
        );
    }
    // The watcher is reported cancelled too: the group checks its token
    // before polling, so cancellation wins over a simultaneous completion.
    assert!(
        exits.last().unwrap().is_cancelled()
            || exits.last().unwrap().result.as_ref().ok() == Some(&usize::MAX)
    );
    common::until("every future dropped", || {
        dropped.load(Ordering::SeqCst) == expected_tasks
    });
    assert!(outer.is_cancelled());
    assert!(outer.is_empty());
}

fn task_group_reports_finished_and_cancelled_tasks(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle().clone();
    let t = rt
        .handle()
        .spawn_pinned(0, async move {
            let group: TaskGroup<u32> = TaskGroup::new(&handle);
            let mut ids = Vec::new();
            for (i, p) in placements().into_iter().enumerate() {
                ids.push(group.spawn(p, async move { i as u32 }).unwrap());
            }
            let done = group.join_all().await;
            assert_eq!(done.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
            assert!(
                done.iter()
                    .enumerate()
                    .all(|(i, e)| e.result.as_ref().ok() == Some(&(i as u32)))
            );

            let slow = group
                .spawn(TaskPlacement::Pinned(1), std::future::pending())
                .unwrap();
            let fast = group.spawn(TaskPlacement::Stealable, async { 7 }).unwrap();
            spargio::time::sleep(Duration::from_millis(20)).await;
            group.cancel();
            // Spawned after the cancel: reported cancelled, never run.
            let late = group
                .spawn(TaskPlacement::Pinned(0), async {
                    boom("a task spawned after cancel ran")
                })
                .unwrap();
            let exits = group.join_all().await;
            assert_eq!(
                exits.iter().map(|e| e.id).collect::<Vec<_>>(),
                vec![slow, fast, late]
            );
            assert!(exits[0].is_cancelled());
            assert_eq!(exits[1].result.as_ref().ok(), Some(&7));
            assert!(exits[2].is_cancelled());
            // A panicking task is reported as such.
            let group: TaskGroup<()> = TaskGroup::new(&handle);
            group
                .spawn(TaskPlacement::Stealable, async { boom("boom") })
                .unwrap();
            let exits = group.join_all().await;
            assert!(exits[0].result.as_ref().unwrap_err().is_panic());
        })
        .unwrap();
    join("task group", t);

    // Dropping a group cancels its tasks.
    let dropped = Arc::new(AtomicUsize::new(0));
    let group: TaskGroup = TaskGroup::new(rt.handle());
    for p in placements() {
        // Moved into the future, so it counts the drop even if the task
        // never ran.
        let c = DropCounter(dropped.clone());
        group
            .spawn(p, async move {
                let _c = c;
                std::future::pending::<()>().await
            })
            .unwrap();
    }
    drop(group);
    common::until("dropped group's tasks dropped", || {
        dropped.load(Ordering::SeqCst) == placements().len()
    });
}

fn cancellation_token_wakes_waiters_everywhere(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    let root = CancellationToken::new();
    let child = root.child_token();
    let grandchild = child.child_token();
    let sibling = root.child_token();
    let mut waiters = Vec::new();
    for p in placements() {
        for t in [&root, &child, &grandchild] {
            let t = t.clone();
            waiters.push(
                handle
                    .spawn_with_placement(p, async move { t.cancelled().await })
                    .unwrap(),
            );
        }
    }
    // A foreign thread waits too.
    let g = grandchild.clone();
    let foreign = std::thread::spawn(move || wait("foreign waiter", g.cancelled_owned()));
    // Cancelling a child reaches its descendants only.
    let only_child = child.child_token();
    sibling.cancel();
    assert!(!root.is_cancelled() && !child.is_cancelled() && !only_child.is_cancelled());
    // Scope-bound cancellation.
    {
        let _guard = root.clone().drop_guard();
    }
    assert!(
        root.is_cancelled() && child.is_cancelled() && grandchild.is_cancelled() && only_child.is_cancelled()
    );
    for w in waiters {
        join("token waiter", w);
    }
    foreign.join().unwrap();
    assert!(root.child_token().is_cancelled());
    let kept = CancellationToken::new();
    let guard = kept.clone().drop_guard();
    let _ = guard.disarm();
    assert!(!kept.is_cancelled());
    // run_until_cancelled drops the inner future on cancellation.
    let dropped = Arc::new(AtomicUsize::new(0));
    let c = DropCounter(dropped.clone());
    let token = CancellationToken::new();
    let t2 = token.clone();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let task = handle
        .spawn_pinned(1, async move {
            t2.run_until_cancelled(async move {
                let _c = c;
                started_tx.send(()).unwrap();
                std::future::pending::<()>().await
            })
            .await
        })
        .unwrap();
    recv("inner future running", &started_rx);
    token.cancel();
    assert_eq!(join("run_until_cancelled", task), None);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

fn oneshot_across_shards_and_threads(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    // Shard -> plain thread (blocking).
    let (tx, rx) = oneshot::channel();
    handle
        .spawn_pinned(1, async move { tx.send(String::from("to thread")).unwrap() })
        .unwrap();
    assert_eq!(rx.blocking_recv().unwrap(), "to thread");
    // Plain thread -> shard, after the shard started waiting.
    let (tx, rx) = oneshot::channel::<u64>();
    let t = handle.spawn_pinned(0, rx).unwrap();
    common::until("receiver parked", || handle.stats_snapshot().shards[0].parks > 0);
    std::thread::spawn(move || tx.send(99).unwrap()).join().unwrap();
    assert_eq!(join("oneshot to shard", t), Ok(99));
    // Sender dropped: the receiver learns.
    let (tx, rx) = oneshot::channel::<u64>();
    let t = handle.spawn_pinned(1, rx).unwrap();
    handle.spawn_pinned(0, async move { drop(tx) }).unwrap();
    assert_eq!(join("dropped sender", t), Err(oneshot::RecvError));
    // Receiver dropped: send fails and gives the value back; `closed` completes.
    let (mut tx, rx) = oneshot::channel::<u64>();
    let closed = handle
        .spawn_pinned(1, async move {
            tx.closed().await;
            tx.send(5)
        })
        .unwrap();
    drop(rx);
    assert_eq!(join("closed", closed), Err(5));
    // try_recv and the blocking timeout.
    let (tx, mut rx) = oneshot::channel::<u8>();
    assert_eq!(rx.try_recv(), Err(oneshot::TryRecvError::Empty));
    assert_eq!(
        rx.blocking_recv_timeout(Duration::from_millis(5)),
        Err(oneshot::RecvTimeoutError::Timeout)
    );
    tx.send(1).unwrap();
    assert_eq!(rx.blocking_recv_timeout(Duration::from_secs(60)), Ok(1));
    assert_eq!(rx.try_recv(), Err(oneshot::TryRecvError::Closed));
}

/// Producers everywhere send `(producer, seq)`; the receiver checks each
/// arrives exactly once and in order per producer.
fn check_exactly_once(got: Vec<(usize, u32)>, producers: usize, per: u32) {
    let mut next = vec![0u32; producers];
    for (p, seq) in got {
        assert_eq!(
            seq, next[p],
            "producer {p}: got {seq}, expected {} (lost, duplicated or reordered)",
            next[p]
        );
        next[p] += 1;
    }
    assert!(next.iter().all(|&n| n == per), "missing values: {next:?}");
}

fn spawn_producers(
    handle: &RuntimeHandle,
    per: u32,
    send: impl Fn(usize, u32) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
    send_blocking: impl Fn(usize, u32) + Send + Sync + 'static,
) -> (usize, Vec<std::thread::JoinHandle<()>>) {
    let send = Arc::new(send);
    let mut p = 0;
    for placement in placements() {
        let send = send.clone();
        let me = p;
        handle
            .spawn_with_placement(placement, async move {
                for seq in 0..per {
                    send(me, seq).await;
                }
            })
            .unwrap();
        p += 1;
    }
    let send_blocking = Arc::new(send_blocking);
    let mut threads = Vec::new();
    for _ in 0..2 {
        let send_blocking = send_blocking.clone();
        let me = p;
        threads.push(std::thread::spawn(move || {
            for seq in 0..per {
                send_blocking(me, seq);
            }
        }));
        p += 1;
    }
    (p, threads)
}

fn mpsc_delivers_exactly_once_under_cross_shard_and_foreign_load(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    let per = common::scaled(5_000, 1_000) as u32;
    // Bounded (small, so senders wait), received on a shard.
    let (tx, mut rx) = mpsc::channel::<(usize, u32)>(8);
    let tx2 = tx.clone();
    let (producers, threads) = spawn_producers(
        handle,
        per,
        move |p, s| {
            let tx = tx.clone();
            Box::pin(async move { tx.send((p, s)).await.unwrap() })
        },
        move |p, s| tx2.blocking_send((p, s)).unwrap(),
    );
    let got = join(
        "bounded receiver",
        handle
            .spawn_pinned(0, async move {
                let mut got = Vec::new();
                while let Some(v) = rx.recv().await {
                    got.push(v);
                }
                got
            })
            .unwrap(),
    );
    threads.into_iter().for_each(|t| t.join().unwrap());
    check_exactly_once(got, producers, per);

    // Unbounded, received on a plain thread (blocking).
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u32)>();
    let tx2 = tx.clone();
    let (producers, threads) = spawn_producers(
        handle,
        per,
        move |p, s| {
            tx.send((p, s)).unwrap();
            // Yield now and then so the producers interleave.
            Box::pin(async move {
                if s % 64 == 0 {
                    spargio::time::sleep(Duration::ZERO).await;
                }
            })
        },
        move |p, s| tx2.send((p, s)).unwrap(),
    );
    let mut got = Vec::new();
    while let Some(v) = rx.blocking_recv() {
        got.push(v);
    }
    threads.into_iter().for_each(|t| t.join().unwrap());
    check_exactly_once(got, producers, per);

    // Bounded, received on a Tokio runtime.
    let (tx, mut rx) = mpsc::channel::<(usize, u32)>(4);
    let tx2 = tx.clone();
    let (producers, threads) = spawn_producers(
        handle,
        per,
        move |p, s| {
            let tx = tx.clone();
            Box::pin(async move { tx.send((p, s)).await.unwrap() })
        },
        move |p, s| tx2.blocking_send((p, s)).unwrap(),
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let got = tokio.block_on(async move {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        got
    });
    threads.into_iter().for_each(|t| t.join().unwrap());
    check_exactly_once(got, producers, per);
}

fn mpsc_backpressure_close_and_cancel_safety(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let t = rt
        .handle()
        .spawn_pinned(0, async {
            let (tx, mut rx) = mpsc::channel::<u32>(1);
            tx.try_send(1).unwrap();
            assert!(matches!(tx.try_send(2), Err(mpsc::TrySendError::Full(2))));
            assert_eq!(tx.capacity(), 0);
            // A waiting send whose future is dropped sends nothing and does not
            // keep the slot it was given.
            let mut waiting = tx.send(2);
            poll_fn(|cx| {
                assert!(Pin::new(&mut waiting).poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            assert_eq!(rx.recv().await, Some(1)); // frees the slot for `waiting`
            drop(waiting);
            tx.try_send(3).expect("the slot passed back");
            assert_eq!(rx.recv().await, Some(3));
            assert_eq!(rx.try_recv(), Err(mpsc::TryRecvError::Empty));
            // Close: queued values still arrive, sends fail.
            tx.try_send(4).unwrap();
            rx.close();
            assert!(tx.is_closed());
            assert!(matches!(tx.send(5).await, Err(mpsc::SendError(5))));
            assert_eq!(rx.recv().await, Some(4));
            assert_eq!(rx.recv().await, None);
            // Receiver dropped: a waiting sender gets its value back.
            let (tx, rx) = mpsc::channel::<u32>(1);
            tx.try_send(1).unwrap();
            let dropper = async move {
                spargio::time::sleep(Duration::from_millis(5)).await;
                drop(rx);
            };
            let (sent, ()) = join2(tx.send(9), dropper).await;
            assert!(matches!(sent, Err(mpsc::SendError(9))));
            // Values queued when the receiver drops are dropped with it.
            let dropped = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = mpsc::unbounded_channel();
            for _ in 0..3 {
                tx.send(DropCounter(dropped.clone())).unwrap();
            }
            drop(rx);
            assert_eq!(dropped.load(Ordering::SeqCst), 3);
            assert!(tx.send(DropCounter(dropped.clone())).is_err());
        })
        .unwrap();
    join("backpressure", t);
    // Blocking send with a timeout gives the value back.
    let (tx, mut rx) = mpsc::channel::<u32>(1);
    tx.blocking_send(1).unwrap();
    assert!(matches!(
        tx.blocking_send_timeout(2, Duration::from_millis(5)),
        Err(mpsc::SendTimeoutError::Timeout(2))
    ));
    assert_eq!(rx.blocking_recv_timeout(Duration::from_secs(60)), Ok(1));
    assert_eq!(
        rx.blocking_recv_timeout(Duration::from_millis(5)),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    drop(tx);
    assert_eq!(
        rx.blocking_recv_timeout(Duration::from_secs(60)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
}

/// Polls two futures together until both finish.
async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    let (mut ra, mut rb) = (None, None);
    poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

fn notify_one_and_notify_waiters(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    let notify = Arc::new(Notify::new());
    // A permit stored before anyone waits is taken at once.
    notify.notify_one();
    notify.notify_one(); // still only one permit
    wait("stored permit", notify.notified());
    // notify_waiters wakes every waiter on every shard, stores nothing.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut waiters = Vec::new();
    for p in placements() {
        let (n, ready) = (notify.clone(), ready_tx.clone());
        waiters.push(
            handle
                .spawn_with_placement(p, async move {
                    let mut f = n.notified();
                    poll_fn(|cx| {
                        let _ = Pin::new(&mut f).poll(cx);
                        Poll::Ready(())
                    })
                    .await;
                    ready.send(()).unwrap();
                    f.await;
                })
                .unwrap(),
        );
    }
    for _ in 0..waiters.len() {
        recv("waiter registered", &ready_rx);
    }
    notify.notify_waiters();
    for w in waiters {
        join("notify_waiters", w);
    }
    let mut probe = Box::pin(notify.notified());
    let waker = std::task::Waker::noop();
    assert!(
        probe
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending(),
        "no permit stored"
    );
    drop(probe);
    // notify_one wakes exactly one; a woken future dropped unused passes it on.
    let woken = Arc::new(AtomicUsize::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut waiters = Vec::new();
    for p in [TaskPlacement::Pinned(0), TaskPlacement::Pinned(1)] {
        let (n, w, ready) = (notify.clone(), woken.clone(), ready_tx.clone());
        waiters.push(
            handle
                .spawn_with_placement(p, async move {
                    let mut f = n.notified();
                    poll_fn(|cx| {
                        let _ = Pin::new(&mut f).poll(cx);
                        Poll::Ready(())
                    })
                    .await;
                    ready.send(()).unwrap();
                    f.await;
                    w.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap(),
        );
    }
    recv("a", &ready_rx);
    recv("b", &ready_rx);
    // A third waiter (last in line), dropped right after it is notified.
    let n = notify.clone();
    let mut first = Box::pin(async move { n.notified().await });
    assert!(
        first
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending()
    );
    notify.notify_one();
    common::until("one woken", || woken.load(Ordering::SeqCst) == 1);
    notify.notify_one();
    common::until("two woken", || woken.load(Ordering::SeqCst) == 2);
    for w in waiters {
        join("notify_one", w);
    }
    notify.notify_one(); // goes to `first`
    drop(first); // ...which passes it on as a stored permit
    wait("passed-on permit", notify.notified());
}

fn semaphore_limits_concurrency_across_shards(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    let sem = Arc::new(Semaphore::new(3));
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (sem, inside, peak) = (sem.clone(), inside.clone(), peak.clone());
        let placement = placements()[i % placements().len()];
        tasks.push(
            handle
                .spawn_with_placement(placement, async move {
                    let _permit = sem.acquire().await.unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    spargio::time::sleep(Duration::from_millis(1)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
                .unwrap(),
        );
    }
    // Foreign threads hold permits too (owned permits, blocking on Tokio).
    let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    tokio.block_on(async {
        for _ in 0..10 {
            let p = sem.clone().acquire_owned().await.unwrap();
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            inside.fetch_sub(1, Ordering::SeqCst);
            drop(p);
        }
    });
    for t in tasks {
        join("semaphore user", t);
    }
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(sem.available_permits(), 3);
    // Fairness: a large request at the front is not overtaken.
    let all = sem.try_acquire_many(3).unwrap();
    let (s1, s2) = (sem.clone(), sem.clone());
    let big = handle
        .spawn_pinned(
            0,
            async move { s1.acquire_many(2).await.map(|p| p.num_permits()) },
        )
        .unwrap();
    common::until("big request queued", || {
        handle.stats_snapshot().shards[0].parks > 0
    });
    std::thread::sleep(Duration::from_millis(5));
    drop(all);
    assert_eq!(join("big", big), Ok(2));
    assert_eq!(s2.available_permits(), 3);
    // try_acquire, forget, close.
    let p = sem.try_acquire().unwrap();
    p.forget();
    assert_eq!(sem.available_permits(), 2);
    sem.add_permits(1);
    let held = sem.try_acquire_many(3).unwrap();
    assert_eq!(sem.try_acquire().unwrap_err(), TryAcquireError::NoPermits);
    let s3 = sem.clone();
    let blocked = handle
        .spawn_pinned(1, async move { s3.acquire().await.is_err() })
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    sem.close();
    assert!(join("closed acquire", blocked));
    assert_eq!(sem.try_acquire().unwrap_err(), TryAcquireError::Closed);
    drop(held);
}

each_kernel!(
    cancellation_reaches_a_task_tree_on_every_shard,
    task_group_reports_finished_and_cancelled_tasks,
    cancellation_token_wakes_waiters_everywhere,
    oneshot_across_shards_and_threads,
    mpsc_delivers_exactly_once_under_cross_shard_and_foreign_load,
    mpsc_backpressure_close_and_cancel_safety,
    notify_one_and_notify_waiters,
    semaphore_limits_concurrency_across_shards,
);
