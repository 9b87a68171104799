//! Integration tests of the runtime core: configuration, placement, stealing,
//! the task state machine (wakes, aborts, panics), local and blocking tasks,
//! interop with Tokio, fairness and statistics.
//!
//! Most scenarios run three times, once per kernel (`io_uring::*`, `queue::*`,
//! `sim::*`; see `common::each_kernel!`).
#![forbid(unsafe_code)]

mod common;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use common::{
    DropCounter, Gate, Kernel, Never, ShardBlocker, build, builder, join, recv, scaled, shard_id, until,
    wait, yield_now,
};
use spargio::sys::sim::Faults;
use spargio::{JoinError, RuntimeBuilder, RuntimeError, RuntimeHandle, ShardCtx, TaskPlacement};

each_kernel!(
    placement_pinned_on_every_poll,
    placement_sticky_is_stable_and_spreads,
    placement_round_robin_spreads_evenly,
    placement_out_of_range_is_no_such_shard,
    stealing_runs_work_of_a_blocked_shard,
    woken_stealable_work_of_a_blocked_shard_is_stolen,
    never_polled_by_two_threads_at_once,
    no_lost_wakeups,
    abort_before_first_poll,
    abort_while_pending,
    abort_during_poll,
    abort_after_completion_keeps_output,
    abort_local_tasks,
    panic_is_isolated_and_shard_keeps_serving,
    panic_payload_is_returned,
    panic_in_destructor_is_contained,
    block_on_resumes_panic_and_runtime_survives,
    block_on_inside_a_shard_panics,
    local_task_runs_not_send_future,
    spawn_local_future_is_dropped_when_the_task_never_runs,
    spawn_blocking_runs_and_catches_panics,
    blocking_job_never_waits_behind_a_blocked_one,
    join_handle_awaited_inside_tokio,
    detached_task_keeps_running,
    current_handle_and_shard_ctx,
    stats_counters_relate,
    doorbell_wakes_a_parked_shard,
    overloaded_when_stealable_queue_is_full,
    concurrent_stealable_spawns_below_capacity_never_overload,
    self_waking_task_does_not_starve_timers_tasks_or_messages,
    sleep_does_not_return_early,
);

// ---------------------------------------------------------------------------
// Configuration and `run`
// ---------------------------------------------------------------------------

fn assert_invalid(what: &str, b: RuntimeBuilder) {
    match b.build() {
        Err(RuntimeError::InvalidConfig(msg)) => assert!(!msg.is_empty(), "{what}: empty message"),
        Err(e) => panic!("{what}: expected InvalidConfig, got {e:?}"),
        Ok(_) => panic!("{what}: expected InvalidConfig, the runtime was built"),
    }
}

#[test]
fn invalid_config_is_rejected() {
    let missing_cpu = spargio::sys::os::configured_cpus() + 7;
    for backend in [spargio::Backend::IoUring, spargio::Backend::Queue] {
        let b = || RuntimeBuilder::new().backend(backend).shards(2);
        assert_invalid("0 shards", b().shards(0));
        assert_invalid("0 ring entries", b().ring_entries(0));
        assert_invalid("too many ring entries", b().ring_entries(1 << 20));
        assert_invalid(
            "affinity to a missing CPU",
            b().thread_affinity(vec![0, missing_cpu]),
        );
        assert_invalid("affinity with too few CPUs", b().thread_affinity(vec![0]));
        assert_invalid("0 steal budget", b().steal_budget(0));
        assert_invalid("0 stealable capacity", b().stealable_queue_capacity(0));
        assert_invalid("0 message capacity", b().msg_queue_capacity(0));
        assert_invalid("0 blocking threads", b().blocking_threads(0));
    }
    // The simulated kernel validates the same way.
    let sim = || RuntimeBuilder::new().simulated_kernel(spargio::sys::sim::SimKernel::new());
    assert_invalid("sim: 0 shards", sim().shards(0));
    assert_invalid("sim: 0 ring entries", sim().shards(1).ring_entries(0));
}

#[test]
fn run_builds_a_default_runtime_and_returns_the_output() {
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (out, shards, backend) = spargio::run(|handle| async move {
        let on_zero = shard_id();
        let task = handle.spawn_stealable(async { 6 * 7 }).unwrap();
        (
            task.await.unwrap() + on_zero,
            handle.shard_count(),
            handle.backend(),
        )
    })
    .unwrap();
    assert_eq!(out, 42, "run's future runs on shard 0 and its output comes back");
    assert_eq!(shards, parallelism);
    if common::io_uring_unavailable().is_none() {
        assert_eq!(backend, spargio::Backend::IoUring);
    }
}

// ---------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------

/// Wraps a future and asserts, on every poll, that it runs on `shard` (and on
/// that shard's thread).
struct OnShard<F> {
    shard: usize,
    thread: Option<std::thread::ThreadId>,
    polls: usize,
    fut: Pin<Box<F>>,
}

fn on_shard<F: Future>(shard: usize, fut: F) -> OnShard<F> {
    OnShard {
        shard,
        thread: None,
        polls: 0,
        fut: Box::pin(fut),
    }
}

impl<F: Future> Future for OnShard<F> {
    type Output = (F::Output, usize);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert_eq!(
            shard_id(),
            self.shard,
            "a pinned task was polled on another shard"
        );
        let me = std::thread::current().id();
        assert_eq!(
            *self.thread.get_or_insert(me),
            me,
            "a pinned task was polled on another thread"
        );
        self.polls += 1;
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready((v, self.polls)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn placement_pinned_on_every_poll(kernel: Kernel) {
    let Some(b) = builder(kernel, 3) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let rounds = scaled(2_000, 200);
    // Steal-heavy noise: stealable tasks that keep yielding move between shards.
    let noise: Vec<_> = (0..60)
        .map(|i| {
            h.spawn_stealable_on(i % 3, async move {
                for _ in 0..rounds / 4 {
                    yield_now().await;
                }
            })
            .unwrap()
        })
        .collect();
    // Pinned tasks, woken alternately by themselves and by a foreign thread.
    let mut feeders = Vec::new();
    let mut tasks = Vec::new();
    for shard in 0..3 {
        for _ in 0..4 {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
            feeders.push(tx);
            tasks.push(
                h.spawn_pinned(
                    shard,
                    on_shard(shard, async move {
                        let mut sum = 0;
                        for _ in 0..rounds {
                            sum += rx.recv().await.expect("feeder alive");
                            yield_now().await;
                        }
                        sum
                    }),
                )
                .unwrap(),
            );
        }
    }
    let feeder = std::thread::spawn(move || {
        for _ in 0..rounds {
            for tx in &feeders {
                tx.send(1).unwrap();
            }
        }
    });
    for t in tasks {
        let (sum, polls) = join("pinned task", t);
        assert_eq!(sum, rounds);
        assert!(
            polls > rounds,
            "every round polls at least once: {polls} polls for {rounds} rounds"
        );
    }
    feeder.join().unwrap();
    for t in noise {
        join("noise task", t);
    }
}

fn placement_sticky_is_stable_and_spreads(kernel: Kernel) {
    let Some(b) = builder(kernel, 4) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let spawn_on_key = |h: &RuntimeHandle, key: u64| {
        h.spawn_with_placement(TaskPlacement::Sticky(key), async move {
            let first = shard_id();
            for _ in 0..3 {
                yield_now().await;
                assert_eq!(shard_id(), first, "a sticky task moved");
            }
            first
        })
        .unwrap()
    };
    let mut by_key = HashMap::new();
    for key in 0..256u64 {
        let shard = join("sticky task", spawn_on_key(&h, key));
        by_key.insert(key, shard);
    }
    // The same key gives the same shard, from outside and from inside a shard.
    for key in 0..256u64 {
        assert_eq!(
            join("sticky task", spawn_on_key(&h, key)),
            by_key[&key],
            "key {key} moved"
        );
    }
    let inner = h.clone();
    let from_inside = h
        .spawn_pinned(3, async move {
            let mut v = Vec::new();
            for key in 0..256u64 {
                v.push(spawn_on_key(&inner, key).await.unwrap());
            }
            v
        })
        .unwrap();
    let from_inside = join("spawner", from_inside);
    for (key, shard) in from_inside.into_iter().enumerate() {
        assert_eq!(
            shard,
            by_key[&(key as u64)],
            "key {key} maps differently from inside a shard"
        );
    }
    let used: HashSet<usize> = by_key.values().copied().collect();
    assert_eq!(
        used.len(),
        4,
        "256 keys should spread over all 4 shards, used {used:?}"
    );
}

fn placement_round_robin_spreads_evenly(kernel: Kernel) {
    let Some(b) = builder(kernel, 3) else { return };
    let rt = build(kernel, b);
    let h = rt.handle();
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            h.spawn_with_placement(TaskPlacement::RoundRobin, async {
                let s = shard_id();
                yield_now().await;
                assert_eq!(shard_id(), s, "a round-robin task moved");
                s
            })
            .unwrap()
        })
        .collect();
    let mut count = [0usize; 3];
    for t in tasks {
        count[join("round-robin task", t)] += 1;
    }
    assert_eq!(count, [10, 10, 10], "round-robin placement is uneven");
    let stats = h.stats_snapshot();
    let spawned: Vec<u64> = stats.shards.iter().map(|s| s.spawned).collect();
    assert_eq!(
        spawned,
        [10, 10, 10],
        "per-shard spawn counters disagree with placement"
    );
}

fn placement_out_of_range_is_no_such_shard(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle();
    assert!(matches!(
        h.spawn_pinned(2, async {}),
        Err(RuntimeError::NoSuchShard(2))
    ));
    assert!(matches!(
        h.spawn_stealable_on(5, async {}),
        Err(RuntimeError::NoSuchShard(5))
    ));
    assert!(matches!(
        h.spawn_local_on(2, || async {}),
        Err(RuntimeError::NoSuchShard(2))
    ));
    assert!(matches!(h.remote(2), Err(RuntimeError::NoSuchShard(2))));
    // Nothing was registered by the refused spawns.
    assert_eq!(h.stats_snapshot().live_tasks, 0);
    assert_eq!(h.stats_snapshot().total(|s| s.spawned), 0);
    // And the runtime still works.
    assert_eq!(rt.block_on(async { 1 }).unwrap(), 1);
}

// ---------------------------------------------------------------------------
// Stealing
// ---------------------------------------------------------------------------

fn stealing_runs_work_of_a_blocked_shard(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let blocker = ShardBlocker::new(&h, 0);
    const N: usize = 48;
    let mut tasks: Vec<_> = (0..N / 2)
        .map(|_| {
            h.spawn_stealable_on(0, async {
                let mut seen = vec![shard_id()];
                for _ in 0..5 {
                    yield_now().await;
                    seen.push(shard_id());
                }
                seen
            })
            .unwrap()
        })
        .collect();
    // `spawn_stealable` from outside the runtime queues on shard 0 too.
    tasks.extend((0..N / 2).map(|_| h.spawn_stealable(async { vec![shard_id()] }).unwrap()));
    for t in tasks {
        let seen = join("stealable task", t);
        assert!(
            seen.iter().all(|&s| s == 1),
            "shard 0 is blocked, yet a task ran there: {seen:?}"
        );
    }
    let stats = h.stats_snapshot();
    let thief = &stats.shards[1];
    assert!(thief.steal_success >= 1, "{thief:?}");
    assert!(thief.steal_attempts >= thief.steal_success, "{thief:?}");
    assert_eq!(
        thief.stolen, N as u64,
        "every task was taken from blocked shard 0 exactly once"
    );
    assert_eq!(
        stats.shards[0].spawned,
        N as u64 + 1,
        "the blocker and N stealable tasks"
    );
    assert_eq!(stats.shards[0].stolen, 0);
    blocker.release();
}

/// Wraps a future and fails the test if two threads are ever inside its poll
/// at once.
struct Exclusive<F> {
    in_poll: Arc<AtomicBool>,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for Exclusive<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        assert!(
            !self.in_poll.swap(true, Ordering::SeqCst),
            "a task was polled by two threads at once"
        );
        let out = self.fut.as_mut().poll(cx);
        // Widen the window a little so an overlapping poll would be seen.
        std::hint::spin_loop();
        self.in_poll.store(false, Ordering::SeqCst);
        out
    }
}

/// Hands the task's waker to a foreign thread on every poll until `rounds`
/// polls happened: the foreign wake often lands while the poll still runs.
struct WakeViaForeign {
    wakers: Arc<Mutex<Vec<Waker>>>,
    first_poll: Option<mpsc::Sender<usize>>,
    polls: usize,
    rounds: usize,
}

impl Future for WakeViaForeign {
    type Output = usize;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        if let Some(tx) = self.first_poll.take() {
            tx.send(shard_id()).unwrap();
        }
        self.polls += 1;
        if self.polls >= self.rounds {
            return Poll::Ready(self.polls);
        }
        if self.polls.is_multiple_of(3) {
            cx.waker().wake_by_ref();
        } else {
            self.wakers.lock().unwrap().push(cx.waker().clone());
        }
        Poll::Pending
    }
}

fn never_polled_by_two_threads_at_once(kernel: Kernel) {
    let Some(b) = builder(kernel, 3) else { return };
    let rt = build(kernel, b.steal_budget(4));
    let h = rt.handle().clone();
    let wakers: Arc<Mutex<Vec<Waker>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let waker_threads: Vec<_> = (0..2)
        .map(|_| {
            let (wakers, stop) = (wakers.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let batch = std::mem::take(&mut *wakers.lock().unwrap());
                    if batch.is_empty() {
                        std::thread::yield_now();
                    }
                    batch.into_iter().for_each(Waker::wake);
                }
            })
        })
        .collect();
    let tasks = scaled(400, 150);
    let rounds = scaled(600, 150);
    // Spawned from inside shard 0 onto its stealable queue while shard 0 stays
    // busy until every task has been polled once: each first poll is a steal.
    let spawner_handle = h.clone();
    let spawner_wakers = wakers.clone();
    let spawner = h
        .spawn_pinned(0, async move {
            let (first_tx, first_rx) = mpsc::channel();
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let fut = Exclusive {
                        in_poll: Arc::default(),
                        fut: Box::pin(WakeViaForeign {
                            wakers: spawner_wakers.clone(),
                            first_poll: Some(first_tx.clone()),
                            polls: 0,
                            rounds,
                        }),
                    };
                    spawner_handle.spawn_stealable(fut).unwrap()
                })
                .collect();
            for _ in 0..tasks {
                let first_on = recv("first poll of a stealable task", &first_rx);
                assert_ne!(first_on, 0, "shard 0 is busy in this poll");
            }
            let mut polls = 0;
            for t in handles {
                polls += t.await.unwrap();
            }
            polls
        })
        .unwrap();
    let polls = join("exclusive tasks", spawner);
    stop.store(true, Ordering::SeqCst);
    for t in waker_threads {
        t.join().unwrap();
    }
    assert_eq!(polls, tasks * rounds);
    let stolen = h.stats_snapshot().total(|s| s.stolen);
    assert!(
        stolen >= tasks as u64,
        "every task was stolen before its first poll: {stolen} < {tasks}"
    );
}

fn woken_stealable_work_of_a_blocked_shard_is_stolen(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b.spin_before_park(Duration::ZERO));
    let h = rt.handle().clone();
    const K: usize = 8;
    // K stealable tasks start on shard 0 (shard 1 is blocked, so none is
    // stolen) and wait on a gate.
    let blocker1 = ShardBlocker::new(&h, 1);
    let gate = Gate::new();
    let (started_tx, started_rx) = mpsc::channel();
    let tasks: Vec<_> = (0..K)
        .map(|_| {
            let (gate, started) = (gate.clone(), started_tx.clone());
            h.spawn_stealable_on(0, async move {
                started.send(shard_id()).unwrap();
                gate.wait().await;
                shard_id()
            })
            .unwrap()
        })
        .collect();
    for _ in 0..K {
        assert_eq!(recv("stealable task start", &started_rx), 0);
    }
    // Shard 1 goes idle and sleeps; then shard 0 is blocked in a long poll.
    blocker1.release();
    until("shard 1 parks", || {
        let s = &h.stats_snapshot().shards[1];
        s.parks > s.wakeups
    });
    let blocker0 = ShardBlocker::new(&h, 0);
    // The wakes queue all K tasks on blocked shard 0's stealable queue: idle
    // shard 1 must be told, and steal them.
    gate.open();
    for t in tasks {
        let ran_on = common::wait_for("woken stealable task", Duration::from_secs(30), t).unwrap();
        assert_eq!(ran_on, 1, "shard 0 is blocked");
    }
    blocker0.release();
}

// ---------------------------------------------------------------------------
// Wake-ups
// ---------------------------------------------------------------------------

/// A counter with a waiter: a task (through its waker) or a thread (parked).
#[derive(Default)]
struct Signal {
    count: AtomicU64,
    waker: Mutex<Option<Waker>>,
    thread: Mutex<Option<Thread>>,
    /// Raises that woke a registered task waker.
    task_wakes: AtomicU64,
}

impl Signal {
    fn raise(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap().take();
        if let Some(w) = waker {
            self.task_wakes.fetch_add(1, Ordering::Relaxed);
            w.wake();
        }
        if let Some(t) = self.thread.lock().unwrap().as_ref() {
            t.unpark();
        }
    }

    fn reached(self: &Arc<Self>, target: u64) -> Reached {
        Reached {
            signal: self.clone(),
            target,
        }
    }

    fn wait_thread(&self, target: u64) {
        *self.thread.lock().unwrap() = Some(std::thread::current());
        let deadline = Instant::now() + common::HANG;
        while self.count.load(Ordering::SeqCst) < target {
            let now = Instant::now();
            assert!(
                now < deadline,
                "lost wake-up: a task never answered signal {target}"
            );
            std::thread::park_timeout(deadline - now);
        }
    }
}

struct Reached {
    signal: Arc<Signal>,
    target: u64,
}

impl Future for Reached {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.signal.waker.lock().unwrap();
        if self.signal.count.load(Ordering::SeqCst) >= self.target {
            return Poll::Ready(());
        }
        *slot = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn no_lost_wakeups(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    // No spinning before parking: every wait is a real park, so every wake
    // races with a shard going to sleep.
    let rt = build(kernel, b.spin_before_park(Duration::ZERO));
    let h = rt.handle().clone();
    // 7 pairs: 1M signals per kernel optimised; unoptimised, ~350k (the
    // simulated kernel is slower: ~140k).
    let per_pair = match kernel {
        Kernel::Sim => scaled(143_000, 20_000),
        _ => scaled(143_000, 50_000),
    } as u64;
    let mut signals: Vec<Arc<Signal>> = Vec::new();
    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    // Foreign thread <-> task, for a pinned task on each shard and a stealable one.
    for placement in [
        TaskPlacement::Pinned(0),
        TaskPlacement::Pinned(1),
        TaskPlacement::StealablePreferred(0),
    ] {
        let (to_task, to_thread) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
        signals.push(to_task.clone());
        let (t_in, t_out) = (to_task.clone(), to_thread.clone());
        tasks.push(
            h.spawn_with_placement(placement, async move {
                for i in 1..=per_pair {
                    t_in.reached(i).await;
                    t_out.raise();
                }
            })
            .unwrap(),
        );
        threads.push(std::thread::spawn(move || {
            for i in 1..=per_pair {
                to_task.raise();
                to_thread.wait_thread(i);
            }
        }));
    }
    // Task <-> task across shards (pinned 0 <-> pinned 1, and a stealable pair).
    for (pa, pb) in [
        (TaskPlacement::Pinned(0), TaskPlacement::Pinned(1)),
        (
            TaskPlacement::StealablePreferred(1),
            TaskPlacement::StealablePreferred(0),
        ),
    ] {
        let (a, b) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
        signals.extend([a.clone(), b.clone()]);
        let (a1, b1) = (a.clone(), b.clone());
        tasks.push(
            h.spawn_with_placement(pa, async move {
                for i in 1..=per_pair {
                    b1.raise();
                    a1.reached(i).await;
                }
            })
            .unwrap(),
        );
        tasks.push(
            h.spawn_with_placement(pb, async move {
                for i in 1..=per_pair {
                    b.reached(i).await;
                    a.raise();
                }
            })
            .unwrap(),
        );
    }
    for t in threads {
        t.join().unwrap();
    }
    for t in tasks {
        join("ping-pong task", t);
    }
    let raises: u64 = signals.iter().map(|s| s.count.load(Ordering::SeqCst)).sum();
    let task_wakes: u64 = signals.iter().map(|s| s.task_wakes.load(Ordering::Relaxed)).sum();
    assert_eq!(raises, 7 * per_pair);
    eprintln!("no_lost_wakeups({kernel:?}): {raises} signals, {task_wakes} of them woke a waiting task");
    assert!(task_wakes > 0);
}

// ---------------------------------------------------------------------------
// Abort
// ---------------------------------------------------------------------------

/// Records the shard its drop ran on.
struct DropWhere(Arc<Mutex<Vec<Option<usize>>>>);

impl Drop for DropWhere {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap()
            .push(ShardCtx::current().map(|c| c.shard_id()));
    }
}

fn expect_cancelled<T: std::fmt::Debug>(what: &str, r: Result<T, JoinError>) {
    match r {
        Err(e) => {
            assert!(
                e.is_cancelled() && !e.is_panic(),
                "{what}: expected Cancelled, got {e:?}"
            );
            assert!(e.panic_message().is_none());
            assert!(e.try_into_panic().is_err());
        }
        Ok(v) => panic!("{what}: expected Cancelled, got Ok({v:?})"),
    }
}

fn abort_before_first_poll(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    // Both shards blocked: nothing can run (or steal) the tasks before the abort.
    let blockers = [ShardBlocker::new(&h, 0), ShardBlocker::new(&h, 1)];
    let polled = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(Mutex::new(Vec::new()));
    let make = |_: usize| {
        let (polled, guard) = (polled.clone(), DropWhere(drops.clone()));
        async move {
            let _guard = guard;
            polled.fetch_add(1, Ordering::SeqCst);
        }
    };
    let pinned = h.spawn_pinned(1, make(0)).unwrap();
    let stealable = h.spawn_stealable_on(0, make(1)).unwrap();
    let local = {
        let (polled, guard) = (polled.clone(), DropWhere(drops.clone()));
        h.spawn_local_on(1, move || async move {
            let _guard = guard;
            polled.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap()
    };
    for t in [&pinned, &stealable, &local] {
        assert!(!t.is_finished());
        t.abort();
        t.abort(); // Idempotent.
    }
    for b in blockers {
        b.release();
    }
    expect_cancelled("pinned", wait("aborted pinned", pinned));
    expect_cancelled("stealable", wait("aborted stealable", stealable));
    expect_cancelled("local", wait("aborted local", local));
    assert_eq!(polled.load(Ordering::SeqCst), 0, "an aborted task was polled");
    until("aborted futures dropped", || drops.lock().unwrap().len() == 3);
    let drops = drops.lock().unwrap();
    assert!(
        drops.iter().all(Option::is_some),
        "aborted futures must be dropped on a shard: {drops:?}"
    );
}

fn abort_while_pending(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let drops = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started_rx) = mpsc::channel();
    let mut tasks = Vec::new();
    for placement in [
        TaskPlacement::Pinned(1),
        TaskPlacement::StealablePreferred(0),
        TaskPlacement::Pinned(0),
    ] {
        let (guard, started) = (DropWhere(drops.clone()), started_tx.clone());
        tasks.push(
            h.spawn_with_placement(placement, async move {
                let _guard = guard;
                started.send(shard_id()).unwrap();
                Never.await;
            })
            .unwrap(),
        );
    }
    let ran_on: Vec<usize> = (0..3).map(|_| recv("task start", &started_rx)).collect();
    // Abort from the test thread, and from a task on another shard.
    let last = tasks.pop().unwrap();
    for t in &tasks {
        t.abort();
    }
    let aborter = h.spawn_pinned(1, async move { last.abort() }).unwrap();
    join("aborter", aborter);
    // `last` moved into the aborter; its task was pinned on shard 0.
    for t in tasks {
        expect_cancelled("pending task", wait("aborted pending task", t));
    }
    until("aborted futures dropped", || drops.lock().unwrap().len() == 3);
    let drops = drops.lock().unwrap();
    assert!(
        drops.iter().all(Option::is_some),
        "aborted futures are dropped on a shard: {drops:?}"
    );
    // Pinned tasks are dropped on their own shard (a stealable one may have moved).
    let pinned_drops = |shard| drops.iter().filter(|d| **d == Some(shard)).count();
    assert!(
        pinned_drops(0) >= 1 && pinned_drops(1) >= 1,
        "{drops:?} (tasks ran on {ran_on:?})"
    );
}

fn abort_during_poll(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    for finish_in_same_poll in [false, true] {
        let (in_poll_tx, in_poll_rx) = mpsc::channel();
        let (aborted_tx, aborted_rx) = mpsc::channel::<()>();
        let polled_after = Arc::new(AtomicBool::new(false));
        let after = polled_after.clone();
        let task = h
            .spawn_pinned(1, async move {
                in_poll_tx.send(()).unwrap();
                recv("abort signal", &aborted_rx);
                if finish_in_same_poll {
                    return 7;
                }
                yield_now().await;
                after.store(true, Ordering::SeqCst);
                8
            })
            .unwrap();
        recv("task in poll", &in_poll_rx);
        task.abort();
        aborted_tx.send(()).unwrap();
        let r = wait("task aborted during its poll", task);
        if finish_in_same_poll {
            // It finished before reaching a scheduling point: the output stands.
            assert_eq!(r.unwrap(), 7);
        } else {
            expect_cancelled("aborted mid-poll", r);
            assert!(
                !polled_after.load(Ordering::SeqCst),
                "polled again after the abort"
            );
        }
    }
}

fn abort_after_completion_keeps_output(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let task = rt.handle().spawn_pinned(1, async { 5 }).unwrap();
    until("task finished", || task.is_finished());
    task.abort();
    assert_eq!(wait("finished task", task).unwrap(), 5);
}

fn abort_local_tasks(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let drops = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started_rx) = mpsc::channel();
    let guard = DropWhere(drops.clone());
    let task = h
        .spawn_local_on(1, move || {
            let rc = Rc::new(guard);
            async move {
                let _rc = rc;
                started_tx.send(()).unwrap();
                Never.await;
            }
        })
        .unwrap();
    recv("local task start", &started_rx);
    task.abort();
    expect_cancelled("local task", wait("aborted local task", task));
    until("local future dropped", || !drops.lock().unwrap().is_empty());
    assert_eq!(
        *drops.lock().unwrap(),
        [Some(1)],
        "a local future is dropped on its own shard"
    );
}

// ---------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------

fn panic_is_isolated_and_shard_keeps_serving(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let gate = Gate::new();
    // A task waiting on shard 1 across the panics.
    let g = gate.clone();
    let waiter = h
        .spawn_pinned(1, async move {
            g.wait().await;
            shard_id()
        })
        .unwrap();
    let pinned = h.spawn_pinned(1, async { panic!("pinned boom") }).unwrap();
    let stealable = h
        .spawn_stealable_on(1, async { panic!("stealable boom") })
        .unwrap();
    let local = h.spawn_local_on(1, || async { panic!("local boom") }).unwrap();
    for (t, msg) in [(pinned, "pinned boom"), (stealable, "stealable boom")] {
        let e = wait("panicking task", t).unwrap_err();
        assert!(e.is_panic() && !e.is_cancelled(), "{e:?}");
        assert_eq!(e.panic_message(), Some(msg));
        assert!(e.to_string().contains(msg), "{e}");
    }
    let e = wait("panicking local task", local).unwrap_err();
    assert_eq!(e.panic_message(), Some("local boom"));
    // The shard still serves: new tasks run there, the waiter is still alive.
    let more: Vec<_> = (0..20)
        .map(|i| h.spawn_pinned(1, async move { (i, shard_id()) }).unwrap())
        .collect();
    for (i, t) in more.into_iter().enumerate() {
        assert_eq!(join("task after the panic", t), (i, 1));
    }
    assert!(!waiter.is_finished());
    gate.open();
    assert_eq!(join("waiter", waiter), 1);
}

fn panic_payload_is_returned(kernel: Kernel) {
    let Some(b) = builder(kernel, 1) else { return };
    let rt = build(kernel, b);
    let h = rt.handle();
    let t = h.spawn_pinned(0, async { std::panic::panic_any(42u32) }).unwrap();
    let e = wait("panic_any task", t).unwrap_err();
    assert!(e.is_panic());
    assert_eq!(e.panic_message(), None, "a non-string payload has no message");
    let payload = e.try_into_panic().expect("a panic");
    assert_eq!(payload.downcast_ref::<u32>(), Some(&42));
    let t = h.spawn_pinned(0, async { panic!("formatted {}", 7) }).unwrap();
    assert_eq!(
        wait("format panic", t).unwrap_err().panic_message(),
        Some("formatted 7")
    );
}

struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

fn panic_in_destructor_is_contained(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    // A future whose state panics when dropped on completion: the task reports
    // the panic.
    let t = h
        .spawn_pinned(1, async {
            let _bomb = PanicOnDrop("drop at completion");
            yield_now().await;
            1
        })
        .unwrap();
    assert_eq!(
        wait("panicking drop", t).unwrap_err().panic_message(),
        Some("drop at completion")
    );
    // Dropped by an abort: the destructor's panic is swallowed, the task is cancelled.
    let (started_tx, started_rx) = mpsc::channel();
    let t = h
        .spawn_pinned(1, async move {
            let _bomb = PanicOnDrop("drop at abort");
            started_tx.send(()).unwrap();
            Never.await;
        })
        .unwrap();
    recv("bomb task start", &started_rx);
    t.abort();
    expect_cancelled("aborted bomb", wait("aborted bomb", t));
    // Shard 1 still serves.
    assert_eq!(
        join("after bombs", h.spawn_pinned(1, async { shard_id() }).unwrap()),
        1
    );
}

fn block_on_resumes_panic_and_runtime_survives(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| rt.block_on(async { panic!("in block_on") })));
    let payload = r.expect_err("block_on resumes the task's panic");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"in block_on"));
    assert_eq!(
        rt.block_on(async { shard_id() }).unwrap(),
        0,
        "block_on runs on shard 0"
    );
}

fn block_on_inside_a_shard_panics(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = Arc::new(build(kernel, b));
    let inner = rt.clone();
    let t = rt
        .handle()
        .spawn_pinned(1, async move { inner.block_on(async { 1 }).unwrap() })
        .unwrap();
    let e = wait("nested block_on", t).unwrap_err();
    let msg = e.panic_message().expect("a string panic");
    assert!(msg.contains("block_on"), "{msg}");
    // The Arc the task held was dropped with the task; the runtime still works.
    assert_eq!(rt.block_on(async { 2 }).unwrap(), 2);
}

// ---------------------------------------------------------------------------
// Local and blocking tasks
// ---------------------------------------------------------------------------

fn local_task_runs_not_send_future(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let t = h
        .spawn_local_on(1, move || {
            // Built on shard 1: `Rc` and `Cell` never leave its thread.
            let counter = Rc::new(Cell::new(0u32));
            let thread = std::thread::current().id();
            async move {
                let c2 = counter.clone();
                for _ in 0..50 {
                    // Woken by a foreign thread, then by itself.
                    c2.set(c2.get() + rx.recv().await.unwrap());
                    yield_now().await;
                    assert_eq!(
                        std::thread::current().id(),
                        thread,
                        "a local task changed threads"
                    );
                    assert_eq!(shard_id(), 1);
                }
                counter.get()
            }
        })
        .unwrap();
    let feeder = std::thread::spawn(move || {
        for _ in 0..50 {
            tx.send(2).unwrap();
        }
    });
    assert_eq!(join("local task", t), 100);
    feeder.join().unwrap();

    // `ShardCtx::spawn_local` from inside a task: the `!Send` future is built
    // on the spawning shard and runs there.
    let t = h
        .spawn_local_on(0, || async {
            let ctx = ShardCtx::current().unwrap();
            let shared = Rc::new(Cell::new(1));
            let s2 = shared.clone();
            let inner = ctx
                .spawn_local(async move {
                    yield_now().await;
                    s2.set(s2.get() * 10);
                    shard_id()
                })
                .unwrap();
            let ran_on = inner.await.unwrap();
            (ran_on, shared.get())
        })
        .unwrap();
    assert_eq!(join("spawn_local", t), (0, 10));
}

fn spawn_local_future_is_dropped_when_the_task_never_runs(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let t = rt
        .handle()
        .spawn_pinned(0, async move {
            let ctx = ShardCtx::current().unwrap();
            // Aborted before its first poll (this poll is still running).
            let guard = DropCounter(d.clone());
            let inner = ctx
                .spawn_local(async move {
                    let _guard = guard;
                    Never.await;
                })
                .unwrap();
            inner.abort();
            let cancelled = inner.await.unwrap_err().is_cancelled();
            let after_abort = d.load(Ordering::SeqCst);
            // Refused because the runtime is shutting down.
            ctx.handle().shutdown();
            let guard = DropCounter(d.clone());
            let refused = ctx.spawn_local(async move { drop(guard) });
            let closed = matches!(refused, Err(RuntimeError::Closed));
            (cancelled, after_abort, closed, d.load(Ordering::SeqCst))
        })
        .unwrap();
    let (cancelled, after_abort, closed, after_refusal) = join("spawner", t);
    assert!(cancelled && closed);
    assert_eq!(after_abort, 1, "the aborted local task's future was not dropped");
    assert_eq!(after_refusal, 2, "the refused local future was not dropped");
}

fn spawn_blocking_runs_and_catches_panics(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b.thread_name_prefix("blk"));
    let h = rt.handle().clone();
    let r = wait(
        "blocking job",
        h.spawn_blocking(|| {
            (
                std::thread::current().name().map(str::to_owned),
                ShardCtx::current().is_none(),
            )
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        r,
        (Some("blk-blocking".to_owned()), true),
        "runs on a pool thread, outside the shards"
    );
    let e = wait(
        "panicking blocking job",
        h.spawn_blocking(|| -> u8 { panic!("blocking boom") }).unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.panic_message(), Some("blocking boom"));
    // Awaited from a task; many at once (more than one pool thread).
    let inner = h.clone();
    let t = h
        .spawn_pinned(1, async move {
            let jobs: Vec<_> = (0..16u64)
                .map(|i| {
                    inner
                        .spawn_blocking(move || {
                            std::thread::sleep(Duration::from_millis(2));
                            i * i
                        })
                        .unwrap()
                })
                .collect();
            let mut sum = 0;
            for j in jobs {
                sum += j.await.unwrap();
            }
            sum
        })
        .unwrap();
    assert_eq!(
        join("task awaiting blocking jobs", t),
        (0..16).map(|i| i * i).sum::<u64>()
    );
    // The pool survives a panic: another job runs.
    assert_eq!(
        wait("job after panic", h.spawn_blocking(|| 3).unwrap()).unwrap(),
        3
    );
}

/// A job queued while every pool thread is taken gets a thread of its own,
/// even when it is pushed right after a job that woke the only idle thread.
fn blocking_job_never_waits_behind_a_blocked_one(kernel: Kernel) {
    let Some(b) = builder(kernel, 1) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    for round in 0..scaled(200, 50) {
        // One idle pool thread, then two jobs pushed back to back: the first
        // blocks until the second has run.
        wait("warm-up job", h.spawn_blocking(|| ()).unwrap()).unwrap();
        // Not a timing assertion: gives the pool thread time to go idle.
        std::thread::sleep(Duration::from_millis(1));
        let (tx, rx) = mpsc::channel::<()>();
        let blocked = h
            .spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)).is_ok())
            .unwrap();
        let releaser = h.spawn_blocking(move || tx.send(()).unwrap()).unwrap();
        common::wait_for("releasing job", Duration::from_secs(20), releaser).unwrap();
        assert!(
            wait("blocked job", blocked).unwrap(),
            "round {round}: the second job waited behind the first"
        );
    }
}

fn join_handle_awaited_inside_tokio(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    // One Tokio worker: if awaiting the spargio handle blocked it, the Tokio
    // task that unblocks the spargio task could never run.
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let out = tokio_rt.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let spargio_task = h.spawn_pinned(1, async move { rx.await.unwrap() + 1 }).unwrap();
        let awaiting = tokio::spawn(async move { spargio_task.await.unwrap() });
        let unblocking = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(41).unwrap();
        });
        let out = tokio::time::timeout(common::HANG, awaiting)
            .await
            .expect("hang: Tokio was blocked")
            .unwrap();
        unblocking.await.unwrap();
        out
    });
    assert_eq!(out, 42);
    // A current-thread Tokio runtime: everything shares one thread.
    let h = rt.handle().clone();
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let out = current.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let spargio_task = h.spawn_stealable(async move { rx.await.unwrap() * 2 }).unwrap();
        let unblocking = tokio::spawn(async move { tx.send(21).unwrap() });
        let out = tokio::time::timeout(common::HANG, spargio_task)
            .await
            .expect("hang: Tokio was blocked");
        unblocking.await.unwrap();
        out.unwrap()
    });
    assert_eq!(out, 42);
}

fn detached_task_keeps_running(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let (tx, rx) = mpsc::channel();
    let gate = Gate::new();
    let g = gate.clone();
    drop(
        rt.handle()
            .spawn_pinned(1, async move {
                g.wait().await;
                tx.send(shard_id()).unwrap();
            })
            .unwrap(),
    );
    gate.open();
    assert_eq!(recv("detached task", &rx), 1);
}

fn current_handle_and_shard_ctx(kernel: Kernel) {
    let Some(b) = builder(kernel, 3) else { return };
    let rt = build(kernel, b);
    assert!(RuntimeHandle::current().is_none());
    assert!(ShardCtx::current().is_none());
    let t = rt
        .handle()
        .spawn_pinned(2, async {
            let h = RuntimeHandle::current().expect("inside a shard");
            let ctx = ShardCtx::current().expect("inside a shard");
            // The current handle spawns into the same runtime.
            let other = h.spawn_pinned(1, async { shard_id() }).unwrap().await.unwrap();
            (
                ctx.shard_id(),
                ctx.shard_count(),
                h.shard_count(),
                other,
                ctx.handle().shard_count(),
            )
        })
        .unwrap();
    assert_eq!(join("context task", t), (2, 3, 3, 1, 3));
}

// ---------------------------------------------------------------------------
// Statistics, doorbells, backpressure
// ---------------------------------------------------------------------------

fn stats_counters_relate(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    assert_eq!(h.stats_snapshot().total(|s| s.spawned), 0);
    const N: u64 = 25;
    let tasks: Vec<_> = (0..2 * N)
        .map(|i| {
            h.spawn_pinned((i % 2) as usize, async {
                yield_now().await;
            })
            .unwrap()
        })
        .collect();
    for t in tasks {
        join("stats task", t);
    }
    until("live tasks reach 0", || h.stats_snapshot().live_tasks == 0);
    let s = h.stats_snapshot();
    assert_eq!(s.shards.len(), 2);
    for (i, shard) in s.shards.iter().enumerate() {
        assert_eq!(shard.shard, i);
        assert_eq!(shard.spawned, N, "{shard:?}");
        assert!(
            shard.polled >= 2 * N,
            "each task yields once, so polls twice: {shard:?}"
        );
        assert!(shard.wakeups <= shard.parks, "{shard:?}");
        assert!(
            shard.steal_success <= shard.steal_attempts && shard.steal_success <= shard.stolen,
            "{shard:?}"
        );
        assert_eq!(shard.inbox_depth, 0);
        assert_eq!(shard.stealable_depth, 0);
    }

    // Messages: shard 0 sends K to shard 1, which takes them all.
    const K: u32 = 500;
    let receiver = h
        .spawn_pinned(1, async {
            let ctx = ShardCtx::current().unwrap();
            for i in 0..K {
                let spargio::Event::RingMsg { from, val, .. } = ctx.next_event().await else {
                    panic!("not a message")
                };
                assert_eq!((from, val), (0, i));
            }
        })
        .unwrap();
    let inner = h.clone();
    let sender = h
        .spawn_pinned(0, async move {
            let to = inner.remote(1).unwrap();
            for i in 0..K {
                while let Err(e) = to.send_raw_nowait(1, i) {
                    assert_eq!(e, spargio::SendError::Backpressure);
                    yield_now().await;
                }
            }
        })
        .unwrap();
    join("sender", sender);
    join("receiver", receiver);
    let s = h.stats_snapshot();
    assert_eq!(s.total(|s| s.msgs_sent), u64::from(K));
    assert_eq!(
        s.shards[0].msgs_sent,
        u64::from(K),
        "counted on the sending shard"
    );
    assert_eq!(s.total(|s| s.msgs_received), u64::from(K));
    assert_eq!(
        s.shards[1].msgs_received,
        u64::from(K),
        "counted on the receiving shard"
    );
    assert_eq!(s.total(|s| s.msg_send_failures), 0);
    assert_eq!(s.total(|s| s.spawned), 2 * N + 2);
    assert!(s.total(|s| s.polled) >= 4 * N + 2);
}

fn doorbell_wakes_a_parked_shard(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b.spin_before_park(Duration::ZERO));
    let h = rt.handle().clone();
    let parked = |h: &RuntimeHandle| {
        let s = &h.stats_snapshot().shards[1];
        s.parks > s.wakeups
    };
    for round in 0..5 {
        // Shard 1 has nothing to do: it goes to sleep by itself.
        until("shard 1 parks", || parked(&h));
        let before = h.stats_snapshot().shards[1].clone();
        let t = h.spawn_pinned(1, async { shard_id() }).unwrap();
        assert_eq!(join("task on a parked shard", t), 1, "round {round}");
        let after = h.stats_snapshot().shards[1].clone();
        assert!(
            after.doorbells_sent > before.doorbells_sent,
            "round {round}: no doorbell woke shard 1"
        );
        assert!(after.wakeups > before.wakeups, "round {round}");
    }
}

fn overloaded_when_stealable_queue_is_full(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b.stealable_queue_capacity(4));
    let h = rt.handle().clone();
    let blockers = [ShardBlocker::new(&h, 0), ShardBlocker::new(&h, 1)];
    let ran = Arc::new(AtomicUsize::new(0));
    let job = || {
        let ran = ran.clone();
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
        }
    };
    let mut tasks: Vec<_> = (0..4).map(|_| h.spawn_stealable_on(0, job()).unwrap()).collect();
    assert!(matches!(
        h.spawn_stealable_on(0, job()),
        Err(RuntimeError::Overloaded)
    ));
    assert!(
        matches!(h.spawn_stealable(job()), Err(RuntimeError::Overloaded)),
        "outside spawns go to shard 0"
    );
    // Shard 1's queue is separate, and pinned spawns are not bounded by it.
    tasks.extend((0..4).map(|_| h.spawn_stealable_on(1, job()).unwrap()));
    assert!(matches!(
        h.spawn_stealable_on(1, job()),
        Err(RuntimeError::Overloaded)
    ));
    tasks.extend((0..10).map(|_| h.spawn_pinned(0, job()).unwrap()));
    let s = h.stats_snapshot();
    assert_eq!(
        (
            s.shards[0].stealable_backpressure,
            s.shards[1].stealable_backpressure
        ),
        (2, 1)
    );
    assert_eq!((s.shards[0].stealable_depth, s.shards[1].stealable_depth), (4, 4));
    for b in blockers {
        b.release();
    }
    for t in tasks {
        join("queued task", t);
    }
    assert_eq!(ran.load(Ordering::SeqCst), 18, "refused spawns never run");
    // Room again once the queue drained.
    join("spawn after drain", h.spawn_stealable_on(0, job()).unwrap());
}

fn concurrent_stealable_spawns_below_capacity_never_overload(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let per_thread = scaled(50_000, 10_000);
    let threads = 3;
    // The queue can hold every task ever spawned: `Overloaded` would be wrong.
    let rt = build(
        kernel,
        b.stealable_queue_capacity(threads * per_thread + 1)
            .steal_budget(8),
    );
    let h = rt.handle().clone();
    let ran = Arc::new(AtomicUsize::new(0));
    let spawners: Vec<_> = (0..threads)
        .map(|i| {
            let (h, ran) = (h.clone(), ran.clone());
            std::thread::spawn(move || {
                let mut overloaded = 0;
                let mut last = None;
                for _ in 0..per_thread {
                    let ran = ran.clone();
                    match h.spawn_stealable_on(i % 2, async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                    }) {
                        Ok(t) => last = Some(t),
                        Err(RuntimeError::Overloaded) => overloaded += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                if let Some(t) = last {
                    join("last task", t);
                }
                overloaded
            })
        })
        .collect();
    let overloaded: usize = spawners.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        overloaded, 0,
        "spurious Overloaded with a queue that never filled"
    );
    until("every task ran", || {
        ran.load(Ordering::SeqCst) == threads * per_thread
    });
}

// ---------------------------------------------------------------------------
// Fairness and timers
// ---------------------------------------------------------------------------

fn self_waking_task_does_not_starve_timers_tasks_or_messages(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let flags: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
    // A task on shard 0 that keeps waking itself until all three flags are set
    // by other work on the same shard.
    let f = flags.clone();
    let spinner = h
        .spawn_pinned(0, async move {
            let mut spins = 0u64;
            while !f.iter().all(|f| f.load(Ordering::SeqCst)) {
                yield_now().await;
                spins += 1;
            }
            spins
        })
        .unwrap();
    let f = flags.clone();
    let sleeper = h
        .spawn_pinned(0, async move {
            spargio::time::sleep(Duration::from_millis(5)).await;
            f[0].store(true, Ordering::SeqCst);
        })
        .unwrap();
    let f = flags.clone();
    let other = h
        .spawn_pinned(0, async move {
            for _ in 0..10 {
                yield_now().await;
            }
            f[1].store(true, Ordering::SeqCst);
        })
        .unwrap();
    let f = flags.clone();
    let receiver = h
        .spawn_pinned(0, async move {
            let ctx = ShardCtx::current().unwrap();
            let ev = ctx.next_event().await;
            f[2].store(true, Ordering::SeqCst);
            ev
        })
        .unwrap();
    h.remote(0).unwrap().send_raw_nowait(3, 4).unwrap();
    join("sleeper", sleeper);
    join("other", other);
    let ev = join("receiver", receiver);
    assert_eq!(
        ev,
        spargio::Event::RingMsg {
            from: 2,
            tag: 3,
            val: 4
        }
    );
    assert!(join("spinner", spinner) > 0);
}

fn sleep_does_not_return_early(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let d = Duration::from_millis(20);
    let t = rt
        .handle()
        .spawn_pinned(1, async move {
            let start = Instant::now();
            spargio::time::sleep(d).await;
            let slept = start.elapsed();
            let start = Instant::now();
            let r = spargio::time::timeout(d, Never).await;
            (slept, start.elapsed(), r.is_err())
        })
        .unwrap();
    let (slept, timed_out_after, timed_out) = join("sleeper", t);
    assert!(slept >= d, "sleep returned after {slept:?} < {d:?}");
    assert!(
        timed_out && timed_out_after >= d,
        "timeout fired after {timed_out_after:?}"
    );
}

// ---------------------------------------------------------------------------
// Wake-ups under faults injected by the simulated kernel
// ---------------------------------------------------------------------------

/// A simulated-kernel runtime whose shards park at once; returns after both
/// are asleep in the (simulated) kernel.
fn sim_runtime_asleep() -> (spargio::Runtime, spargio::sys::sim::SimKernel) {
    let (b, kernel) = common::sim_builder_with_faults(2, Faults::default());
    let rt = build(Kernel::Sim, b.spin_before_park(Duration::ZERO));
    let h = rt.handle().clone();
    until("both shards park", || {
        h.stats_snapshot().shards.iter().all(|s| s.parks > s.wakeups)
    });
    // `parks` counts just before the wait: give the threads time to get into it
    // (too short a pause can only make a failing test pass, never the reverse).
    std::thread::sleep(Duration::from_millis(50));
    (rt, kernel)
}

#[test]
fn sim_faults_wakes_survive_eintr_and_overflow() {
    let (b, kernel) = common::sim_builder_with_faults(
        2,
        Faults {
            seed: 11,
            enter_eintr_every: Some(2),
            overflow_every: Some(2),
            ..Faults::default()
        },
    );
    let rt = build(Kernel::Sim, b.spin_before_park(Duration::ZERO));
    let h = rt.handle().clone();
    // Ping-pong across shards and with this thread: every wake must land.
    let (a, bsig) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
    let n = scaled(20_000, 3_000) as u64;
    let (a1, b1) = (a.clone(), bsig.clone());
    let pinger = h
        .spawn_pinned(0, async move {
            for i in 1..=n {
                b1.raise();
                a1.reached(i).await;
            }
        })
        .unwrap();
    let ponger = h
        .spawn_pinned(1, async move {
            for i in 1..=n {
                bsig.reached(i).await;
                a.raise();
            }
        })
        .unwrap();
    join("pinger", pinger);
    join("ponger", ponger);
    let injected = kernel.injected();
    assert!(injected.eintr > 0 && injected.overflowed > 0, "{injected:?}");
}

#[test]
fn sim_faults_doorbell_from_outside_survives_ebusy() {
    let (rt, kernel) = sim_runtime_asleep();
    // A refusal that passes (the next three enters): the doorbell is retried.
    kernel.set_faults(Faults {
        enter_ebusy_first: 3,
        ..Faults::default()
    });
    let t = rt.handle().spawn_pinned(1, async { shard_id() }).unwrap();
    let injected = kernel.injected();
    kernel.set_faults(Faults::default());
    assert_eq!(
        injected.ebusy, 3,
        "the doorbell's submit was meant to fail: {injected:?}"
    );
    let ran_on = common::wait_for(
        "task on a parked shard after an EBUSY doorbell",
        Duration::from_secs(30),
        t,
    );
    assert_eq!(ran_on.unwrap(), 1);
}

#[test]
fn sim_faults_doorbell_refused_for_good_is_rung_again_by_the_next_wake() {
    let (rt, kernel) = sim_runtime_asleep();
    let h = rt.handle().clone();
    // Every enter refused: the doorbell is taken back, not left in the SQ.
    kernel.set_faults(Faults {
        enter_ebusy_every: Some(1),
        ..Faults::default()
    });
    let first = h.spawn_pinned(1, async { shard_id() }).unwrap();
    kernel.set_faults(Faults::default());
    assert_eq!(h.stats_snapshot().shards[1].doorbell_failures, 1);
    // The shard still counts as parked, so the next wake rings again.
    let second = h.spawn_pinned(1, async { shard_id() }).unwrap();
    assert_eq!(
        common::wait_for("second task", Duration::from_secs(30), second).unwrap(),
        1
    );
    assert_eq!(
        common::wait_for("first task", Duration::from_secs(30), first).unwrap(),
        1
    );
}

#[test]
fn sim_faults_doorbell_from_a_busy_shard_survives_ebusy() {
    let (rt, kernel) = sim_runtime_asleep();
    let h = rt.handle().clone();
    let go = Arc::new(AtomicBool::new(false));
    let (g, inner) = (go.clone(), h.clone());
    // Shard 0 stays busy (a task that keeps waking itself) while it wakes shard 1.
    let spinner = h
        .spawn_pinned(0, async move {
            while !g.load(Ordering::SeqCst) {
                yield_now().await;
            }
            let done = Arc::new(AtomicBool::new(false));
            let d = done.clone();
            kernel.set_faults(Faults {
                enter_ebusy_every: Some(1),
                ..Faults::default()
            });
            inner
                .spawn_pinned(1, async move { d.store(true, Ordering::SeqCst) })
                .unwrap();
            let injected = kernel.injected();
            kernel.set_faults(Faults::default());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                yield_now().await;
            }
            (injected, done.load(Ordering::SeqCst))
        })
        .unwrap();
    go.store(true, Ordering::SeqCst);
    let (injected, ran) = join("busy shard", spinner);
    assert!(
        injected.ebusy >= 1,
        "the doorbell's submit was meant to fail: {injected:?}"
    );
    assert!(
        ran,
        "the task spawned onto parked shard 1 never ran while shard 0 stayed busy"
    );
}
