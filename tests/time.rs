//! `spargio::time` against the real runtime, on every kernel (io_uring, Queue,
//! simulated io_uring): sleeps, deadlines, timeouts, resets, intervals and
//! timer reclamation. Lower bounds are exact (a timer never fires early);
//! upper bounds are only the hang guard of the test helpers.
#![forbid(unsafe_code)]

mod common;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{Kernel, build, builder, join, wait};
use spargio::time::{
    MissedTickBehavior, Sleep, TimeoutError, interval, interval_at, shard_timer_count, sleep, sleep_until,
    timeout, timeout_at,
};
use spargio::{Runtime, TaskPlacement};

const SHARDS: usize = 2;

fn runtime(kernel: Kernel) -> Option<Runtime> {
    builder(kernel, SHARDS).map(|b| build(kernel, b))
}

/// Polls `sleep` to completion, counting polls.
async fn polls_until_done(sleep: &mut Sleep) -> usize {
    let mut polls = 0;
    poll_fn(|cx| {
        polls += 1;
        Pin::new(&mut *sleep).poll(cx)
    })
    .await;
    polls
}

fn sleeps_never_return_early(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let durations = [0u64, 1, 2, 5, 13, 30].map(Duration::from_millis);
    let mut tasks = Vec::new();
    for placement in [
        TaskPlacement::Pinned(0),
        TaskPlacement::Pinned(1),
        TaskPlacement::Stealable,
    ] {
        for &d in &durations {
            tasks.push(
                rt.handle()
                    .spawn_with_placement(placement, async move {
                        let start = Instant::now();
                        sleep(d).await;
                        let slept = start.elapsed();
                        let until = Instant::now() + d;
                        sleep_until(until).await;
                        (d, slept, Instant::now() >= until)
                    })
                    .unwrap(),
            );
        }
    }
    for t in tasks {
        let (d, slept, on_time) = join("sleep", t);
        assert!(slept >= d, "sleep({d:?}) returned after {slept:?}");
        assert!(on_time, "sleep_until({d:?} from now) returned early");
    }
    // Every timer is gone once its sleep completed.
    for shard in 0..SHARDS {
        let n = join(
            "count",
            rt.handle()
                .spawn_pinned(shard, async { shard_timer_count().unwrap() })
                .unwrap(),
        );
        assert_eq!(n, 0, "shard {shard} still holds timers");
    }
}

fn sleep_until_is_never_early(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let t = rt
        .handle()
        .spawn_pinned(1, async {
            // Deadlines that are not whole microseconds or milliseconds.
            for i in 0..50u64 {
                let until = Instant::now() + Duration::from_nanos(37_013 * i + 1);
                sleep_until(until).await;
                let now = Instant::now();
                assert!(now >= until, "sleep_until woke {:?} early", until - now);
            }
        })
        .unwrap();
    join("sleep_until loop", t);
}

fn zero_and_past_deadlines_yield_once_and_complete(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle().clone();
    let t = rt
        .handle()
        .spawn_pinned(0, async move {
            let mut zero = sleep(Duration::ZERO);
            assert_eq!(
                polls_until_done(&mut zero).await,
                2,
                "sleep(ZERO) yields once, then completes"
            );
            let mut past = sleep_until(Instant::now() - Duration::from_secs(1));
            assert!(past.is_elapsed());
            assert_eq!(polls_until_done(&mut past).await, 2);
            // An elapsed sleep stays complete.
            assert_eq!(polls_until_done(&mut past).await, 1);
            // The yield lets another task on the same shard run: this loop ends
            // only because the other task gets to set the flag.
            let flag = Arc::new(Mutex::new(false));
            let f2 = flag.clone();
            handle
                .spawn_pinned(0, async move { *f2.lock().unwrap() = true })
                .unwrap();
            let mut spins = 0u64;
            while !*flag.lock().unwrap() {
                sleep(Duration::ZERO).await;
                spins += 1;
            }
            spins
        })
        .unwrap();
    assert!(join("zero sleeps", t) >= 1);
}

fn far_deadlines_do_not_overflow_or_busy_loop(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    let forever = sleep(Duration::MAX);
    assert!(forever.deadline() > Instant::now() + Duration::from_secs(60 * 60 * 24 * 365 * 29));
    assert!(!forever.is_elapsed());
    let far = Instant::now() + Duration::from_secs(60 * 60 * 24 * 365 * 200);
    let (armed_tx, armed_rx) = std::sync::mpsc::channel();
    let mut tasks = Vec::new();
    for shard in 0..SHARDS {
        let armed = armed_tx.clone();
        tasks.push(
            handle
                .spawn_pinned(shard, async move {
                    let mut a = sleep(Duration::MAX);
                    let mut b = sleep_until(far);
                    let mut c = sleep(Duration::from_secs(u64::MAX / 4));
                    poll_fn(|cx| {
                        for s in [&mut a, &mut b, &mut c] {
                            assert!(Pin::new(s).poll(cx).is_pending());
                        }
                        Poll::Ready(())
                    })
                    .await;
                    armed.send(shard_timer_count().unwrap()).unwrap();
                    std::future::pending::<()>().await;
                })
                .unwrap(),
        );
    }
    for _ in 0..SHARDS {
        assert_eq!(common::recv("armed", &armed_rx), 3);
    }
    // Let the shards go idle, then count how often they wake: a shard that
    // busy-loops on a far deadline wakes thousands of times in this window.
    std::thread::sleep(Duration::from_millis(50));
    let before = handle.stats_snapshot().total(|s| s.wakeups);
    std::thread::sleep(Duration::from_millis(300));
    let after = handle.stats_snapshot().total(|s| s.wakeups);
    assert!(
        after - before < 50,
        "{} wake-ups in 300 ms with only far timers armed",
        after - before
    );
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        assert!(wait("aborted", t).unwrap_err().is_cancelled());
    }
    drop(forever);
}

fn timeouts_fire_and_do_not_fire(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let t = rt
        .handle()
        .spawn_stealable(async {
            let start = Instant::now();
            let r = timeout(Duration::from_millis(20), sleep(Duration::from_secs(3600))).await;
            assert_eq!(r, Err(TimeoutError));
            assert!(start.elapsed() >= Duration::from_millis(20));

            assert_eq!(timeout(Duration::from_secs(3600), async { 5 }).await, Ok(5));
            assert_eq!(
                timeout(Duration::from_secs(3600), sleep(Duration::from_millis(3))).await,
                Ok(())
            );
            assert_eq!(
                timeout(Duration::ZERO, async { 1 }).await,
                Ok(1),
                "a ready future wins a zero timeout"
            );
            assert_eq!(
                timeout(Duration::ZERO, std::future::pending::<()>()).await,
                Err(TimeoutError)
            );

            let deadline = Instant::now() + Duration::from_millis(10);
            assert_eq!(
                timeout_at(deadline, std::future::pending::<()>()).await,
                Err(TimeoutError)
            );
            assert!(Instant::now() >= deadline);
            let past = Instant::now() - Duration::from_secs(1);
            assert_eq!(
                timeout_at(past, std::future::pending::<()>()).await,
                Err(TimeoutError)
            );

            // A timeout moved later by `reset` does not fire at the old deadline.
            let mut t = timeout(Duration::from_millis(5), sleep(Duration::from_millis(30)));
            t.reset(Instant::now() + Duration::from_secs(3600));
            assert_eq!((&mut t).await, Ok(()));
            drop(t);
            // Nothing stays armed: the inner sleeps and the timeouts' timers are gone.
            shard_timer_count().unwrap()
        })
        .unwrap();
    assert_eq!(join("timeouts", t), 0);
}

fn reset_moves_the_deadline_even_from_another_thread(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    // Earlier and later on the shard that owns the timer.
    let t = handle
        .spawn_pinned(0, async {
            let start = Instant::now();
            let mut s = sleep(Duration::from_secs(3600));
            poll_fn(|cx| {
                assert!(Pin::new(&mut s).poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            s.reset(start + Duration::from_millis(5));
            (&mut s).await;
            assert!(start.elapsed() >= Duration::from_millis(5));
            let start = Instant::now();
            let mut s = sleep(Duration::from_millis(1));
            s.reset(start + Duration::from_millis(20));
            (&mut s).await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            shard_timer_count().unwrap()
        })
        .unwrap();
    assert_eq!(join("local reset", t), 0);

    // A task on shard 0 waits on a one-hour sleep; the test thread (outside
    // the runtime) resets it to 10 ms. The task must be woken at the new
    // deadline without polling the sleep again first.
    for resetter_on_shard in [false, true] {
        let shared = Arc::new(Mutex::new(sleep(Duration::from_secs(3600))));
        let (polled_tx, polled_rx) = std::sync::mpsc::channel();
        let waiter = {
            let shared = shared.clone();
            handle
                .spawn_pinned(0, async move {
                    let mut first = true;
                    poll_fn(|cx| {
                        let r = Pin::new(&mut *shared.lock().unwrap()).poll(cx);
                        if first {
                            first = false;
                            polled_tx.send(()).unwrap();
                        }
                        r
                    })
                    .await;
                    Instant::now()
                })
                .unwrap()
        };
        common::recv("first poll", &polled_rx);
        let new_deadline = Instant::now() + Duration::from_millis(10);
        if resetter_on_shard {
            let s = shared.clone();
            join(
                "remote reset",
                handle
                    .spawn_pinned(1, async move { s.lock().unwrap().reset(new_deadline) })
                    .unwrap(),
            );
        } else {
            shared.lock().unwrap().reset(new_deadline);
        }
        let woke = join("reset sleep", waiter);
        assert!(woke >= new_deadline);
    }
}

#[allow(clippy::async_yields_async)] // The tasks hand armed sleeps back on purpose.
fn sleep_moves_between_shards_and_threads(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    // Armed on shard 0, then awaited on shard 1: shard 0's timer is removed.
    let s = join(
        "arm on 0",
        handle
            .spawn_pinned(0, async {
                let mut s = sleep(Duration::from_millis(20));
                poll_fn(|cx| {
                    assert!(Pin::new(&mut s).poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                assert_eq!(shard_timer_count(), Some(1));
                s
            })
            .unwrap(),
    );
    let deadline = s.deadline();
    let woke = join(
        "await on 1",
        handle
            .spawn_pinned(1, async move {
                s.await;
                Instant::now()
            })
            .unwrap(),
    );
    assert!(woke >= deadline);
    assert_eq!(
        join(
            "count 0",
            handle
                .spawn_pinned(0, async { shard_timer_count().unwrap() })
                .unwrap()
        ),
        0
    );
    assert_eq!(
        join(
            "count 1",
            handle
                .spawn_pinned(1, async { shard_timer_count().unwrap() })
                .unwrap()
        ),
        0
    );

    // Armed on a shard, finished on a plain thread.
    let s = join(
        "arm again",
        handle
            .spawn_pinned(1, async {
                let mut s = sleep(Duration::from_millis(10));
                poll_fn(|cx| {
                    let _ = Pin::new(&mut s).poll(cx);
                    Poll::Ready(())
                })
                .await;
                s
            })
            .unwrap(),
    );
    let deadline = s.deadline();
    wait("sleep on a plain thread", s);
    assert!(Instant::now() >= deadline);
    assert_eq!(
        join(
            "count 1 again",
            handle
                .spawn_pinned(1, async { shard_timer_count().unwrap() })
                .unwrap()
        ),
        0
    );
}

fn hundred_thousand_timers_half_dropped_are_all_reclaimed(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    let n = 100_000;
    let (sleeps, armed) = join(
        "arm 100k",
        handle
            .spawn_pinned(0, async move {
                // Far enough that none fires while the test moves them around.
                let at = Instant::now() + Duration::from_secs(600);
                let mut sleeps: Vec<Sleep> = (0..n).map(|_| sleep_until(at)).collect();
                poll_fn(|cx| {
                    for s in &mut sleeps {
                        assert!(Pin::new(s).poll(cx).is_pending());
                    }
                    Poll::Ready(())
                })
                .await;
                let armed = shard_timer_count().unwrap();
                (sleeps, armed)
            })
            .unwrap(),
    );
    assert_eq!(armed, n);
    let mut sleeps = sleeps;
    let kept: Vec<Sleep> = sleeps.drain(..n / 2).collect();
    // A quarter dropped on shard 0 itself, a quarter on shard 1 (posted back
    // to shard 0 as remote cancels).
    let on_other = sleeps.split_off(n / 4);
    let count0 = join(
        "drop on owner",
        handle
            .spawn_pinned(0, async move {
                drop(sleeps);
                shard_timer_count().unwrap()
            })
            .unwrap(),
    );
    assert_eq!(count0, n - n / 4);
    join(
        "drop on other shard",
        handle.spawn_pinned(1, async move { drop(on_other) }).unwrap(),
    );
    let count0 = join(
        "count after remote drops",
        handle
            .spawn_pinned(0, async { shard_timer_count().unwrap() })
            .unwrap(),
    );
    assert_eq!(count0, n / 2, "remote drops must be reclaimed by the owner");
    // The kept half, moved to one new instant in the near future, all fire
    // together on shard 0.
    let left = join(
        "await the rest",
        handle
            .spawn_pinned(0, async move {
                let at = Instant::now() + Duration::from_millis(20);
                let mut kept = kept;
                for s in &mut kept {
                    s.reset(at);
                }
                assert_eq!(
                    shard_timer_count().unwrap(),
                    n / 2,
                    "reset moves timers, it does not add any"
                );
                for s in kept {
                    s.await;
                }
                assert!(Instant::now() >= at);
                shard_timer_count().unwrap()
            })
            .unwrap(),
    );
    assert_eq!(left, 0);
}

fn intervals_follow_each_missed_tick_behaviour(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let period = Duration::from_millis(20);
    let t = rt
        .handle()
        .spawn_stealable(async move {
            // Burst: the schedule stays start + k * period; missed ticks come
            // back to back.
            let mut iv = interval(period);
            assert_eq!(iv.missed_tick_behavior(), MissedTickBehavior::Burst);
            assert_eq!(iv.period(), period);
            let t0 = iv.tick().await;
            sleep(period * 3 + period / 2).await; // miss ~3 ticks
            for k in 1..=5u32 {
                let at = iv.tick().await;
                assert_eq!(at, t0 + period * k, "burst tick {k}");
                assert!(Instant::now() >= at, "tick {k} early");
            }

            // Delay: after a late tick the next is a full period after it.
            let mut iv = interval(period);
            iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let first = iv.tick().await;
            sleep(period * 3).await;
            let late = iv.tick().await;
            assert_eq!(late, first + period);
            let completed = Instant::now();
            let next = iv.tick().await;
            assert!(
                next >= completed + period - Duration::from_millis(1),
                "delay: {next:?} vs {completed:?}"
            );
            assert!(Instant::now() >= next);

            // Skip: the missed ticks are dropped; the grid is kept.
            let mut iv = interval(period);
            iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let first = iv.tick().await;
            let second = iv.tick().await;
            assert_eq!(second, first + period);
            sleep(period * 3 + period / 2).await;
            let late = iv.tick().await;
            assert_eq!(late, first + period * 2, "the first missed tick still completes");
            let next = iv.tick().await;
            let steps = (next - first).as_nanos() / period.as_nanos();
            assert_eq!(
                (next - first).as_nanos() % period.as_nanos(),
                0,
                "skip keeps the grid"
            );
            assert!(steps >= 4, "skip dropped the missed ticks (got step {steps})");
            assert!(Instant::now() >= next);

            // interval_at: the first tick at `start`, never before.
            let start = Instant::now() + Duration::from_millis(15);
            let mut iv = interval_at(start, period);
            assert_eq!(iv.tick().await, start);
            assert!(Instant::now() >= start);
            iv.reset();
            let before = Instant::now();
            let at = iv.tick().await;
            assert!(at >= before && Instant::now() >= at);
        })
        .unwrap();
    join("intervals", t);
}

fn timers_work_outside_the_runtime(kernel: Kernel) {
    // The runtime exists, but these sleeps run on a plain thread and on a
    // Tokio runtime, served by the process-wide timer thread.
    let Some(_rt) = runtime(kernel) else { return };
    let start = Instant::now();
    wait("plain-thread sleep", sleep(Duration::from_millis(5)));
    assert!(start.elapsed() >= Duration::from_millis(5));
    assert_eq!(
        wait(
            "plain-thread timeout",
            timeout(Duration::from_millis(5), std::future::pending::<()>())
        ),
        Err(TimeoutError)
    );
    let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    tokio.block_on(async {
        let start = Instant::now();
        sleep(Duration::from_millis(5)).await;
        assert!(start.elapsed() >= Duration::from_millis(5));
        let mut iv = interval(Duration::from_millis(2));
        for _ in 0..3 {
            iv.tick().await;
        }
        assert!(start.elapsed() >= Duration::from_millis(9));
    });
    // Dropped foreign sleeps leave the process-wide wheel.
    let before = spargio::time::global_timer_count();
    let mut many: Vec<Sleep> = (0..10_000).map(|_| sleep(Duration::from_secs(3600))).collect();
    wait(
        "arm foreign",
        poll_fn(|cx| {
            for s in &mut many {
                let _ = Pin::new(s).poll(cx);
            }
            Poll::Ready(())
        }),
    );
    assert!(spargio::time::global_timer_count() >= before + 10_000);
    drop(many);
    assert!(spargio::time::global_timer_count() < before + 1_000);
}

each_kernel!(
    sleeps_never_return_early,
    sleep_until_is_never_early,
    zero_and_past_deadlines_yield_once_and_complete,
    far_deadlines_do_not_overflow_or_busy_loop,
    timeouts_fire_and_do_not_fire,
    reset_moves_the_deadline_even_from_another_thread,
    sleep_moves_between_shards_and_threads,
    hundred_thousand_timers_half_dropped_are_all_reclaimed,
    intervals_follow_each_missed_tick_behaviour,
    timers_work_outside_the_runtime,
);
