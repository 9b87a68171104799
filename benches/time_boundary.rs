//! Timers and the boundary: spargio against Tokio in the same run.
//!
//! - `timer_insert_cancel`: one iteration = 1024 timers armed (a sleep of
//!   about a second, polled once from the driver task) and cancelled (the sleep
//!   dropped), on a runtime that already holds 10 000 pending timers. Tokio:
//!   the same with `tokio::time::sleep` on a 2-worker runtime.
//! - `boundary_round_trip`: one iteration = 256 sequential request/response
//!   round trips started by a Tokio task. `spargio` answers from a task on a
//!   spargio shard through `spargio::boundary`; `tokio_mpsc_oneshot` answers
//!   from a task on the same Tokio runtime (bounded mpsc of `(request,
//!   oneshot::Sender)`); `tokio_mpsc_oneshot_cross_runtime` answers from a
//!   second, current-thread Tokio runtime on its own thread (the like-for-like
//!   "other runtime" case).
//! - Before the groups: idle CPU of a 2-shard runtime holding 10 000 pending
//!   timers (each in its own task), beside a 2-worker Tokio runtime holding
//!   the same, each measured alone over 2 s. Printed as a line starting
//!   `IDLE_TIMERS_CPU_PERCENT`.
#![forbid(unsafe_code)]

mod common;

use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::harness::{DriverEnd, bench_batches, driver};
use criterion::{Criterion, Throughput, criterion_group};
use spargio::sys::os::process_cpu_time;

/// Timers armed and cancelled per `timer_insert_cancel` iteration.
const TIMERS: u64 = 1024;
/// Pending timers the runtimes hold meanwhile (and in the idle measurement).
const BACKGROUND_TIMERS: usize = 10_000;
/// Round trips per `boundary_round_trip` iteration.
const ROUND_TRIPS: u64 = 256;
/// Boundary and mpsc capacity.
const CAPACITY: usize = 256;

/// What the bench thread asks a driver for: `batches` iterations.
type Cmd = u64;

/// Arms and cancels `TIMERS` timers with `make`, polling each once with the
/// driver task's own context (as a `select` over a timeout would).
async fn churn<S: Future>(make: impl Fn(u64) -> S) -> u64 {
    poll_fn(|cx| {
        let mut pending = 0;
        for i in 0..TIMERS {
            let s = pin!(make(i));
            if s.poll(cx).is_pending() {
                pending += 1;
            }
        }
        Poll::Ready(pending)
    })
    .await
}

fn jitter(i: u64) -> Duration {
    Duration::from_millis(1_000 + i % 64)
}

async fn serve_timer_commands<S: Future>(mut end: DriverEnd<Cmd, u64>, make: impl Fn(u64) -> S) {
    while let Some(batches) = end.next().await {
        let mut armed = 0;
        for _ in 0..batches {
            armed += churn(&make).await;
        }
        end.reply(armed);
    }
}

/// A spargio runtime with background timers and a driver on shard 0.
struct SpargioTimers {
    driver: common::harness::Driver<Cmd, u64>,
    _rt: spargio::Runtime,
}

impl SpargioTimers {
    fn new() -> Self {
        let rt = spargio::RuntimeBuilder::new()
            .shards(2)
            .build()
            .expect("spargio runtime");
        let (driver, end) = driver();
        rt.handle()
            .spawn_pinned(0, async move {
                let mut background: Vec<_> = (0..BACKGROUND_TIMERS)
                    .map(|i| spargio::time::sleep(Duration::from_secs(3600 + i as u64)))
                    .collect();
                poll_fn(|cx| {
                    for s in &mut background {
                        let _ = std::pin::Pin::new(s).poll(cx);
                    }
                    Poll::Ready(())
                })
                .await;
                serve_timer_commands(end, |i| spargio::time::sleep(jitter(i))).await;
                drop(background);
            })
            .expect("spawn the driver");
        SpargioTimers { driver, _rt: rt }
    }
}

/// A Tokio runtime with background timers and a driver task.
struct TokioTimers {
    driver: common::harness::Driver<Cmd, u64>,
    _rt: tokio::runtime::Runtime,
}

impl TokioTimers {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (driver, end) = driver();
        rt.spawn(async move {
            let mut background: Vec<_> = (0..BACKGROUND_TIMERS)
                .map(|i| Box::pin(tokio::time::sleep(Duration::from_secs(3600 + i as u64))))
                .collect();
            poll_fn(|cx| {
                for s in &mut background {
                    let _ = s.as_mut().poll(cx);
                }
                Poll::Ready(())
            })
            .await;
            serve_timer_commands(end, |i| tokio::time::sleep(jitter(i))).await;
            drop(background);
        });
        TokioTimers { driver, _rt: rt }
    }
}

fn timer_insert_cancel(c: &mut Criterion) {
    const GROUP: &str = "timer_insert_cancel";
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(TIMERS));
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    bench_batches(&mut group, GROUP, "tokio", TokioTimers::new, |h, batches| {
        assert_eq!(black_box(h.driver.call(batches)), batches * TIMERS);
    });
    bench_batches(&mut group, GROUP, "spargio", SpargioTimers::new, |h, batches| {
        assert_eq!(black_box(h.driver.call(batches)), batches * TIMERS);
    });
    group.finish();
}

/// The Tokio side of a round-trip harness: a 2-worker runtime whose driver
/// task runs `ROUND_TRIPS` calls per batch through `call`.
struct RoundTrips {
    driver: common::harness::Driver<Cmd, u64>,
    _tokio: tokio::runtime::Runtime,
    _spargio: Option<spargio::Runtime>,
    _server_thread: Option<ServerThread>,
}

/// A second Tokio runtime on its own thread, stopped on drop.
struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn drive_round_trips<F, Fut>(mut end: DriverEnd<Cmd, u64>, call: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = u64>,
{
    while let Some(batches) = end.next().await {
        let mut sum = 0u64;
        for _ in 0..batches {
            for i in 0..ROUND_TRIPS {
                let r = call(i).await;
                debug_assert_eq!(r, i + 1);
                sum += r;
            }
        }
        end.reply(sum);
    }
}

fn tokio_two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

impl RoundTrips {
    fn spargio_boundary() -> Self {
        let spargio = spargio::RuntimeBuilder::new()
            .shards(2)
            .build()
            .expect("spargio runtime");
        let (client, server) = spargio::boundary::channel::<u64, u64>(CAPACITY);
        spargio
            .handle()
            .spawn_pinned(1, async move {
                while let Ok(req) = server.recv().await {
                    let v = *req.request();
                    let _ = req.respond(v + 1);
                }
            })
            .expect("spawn the server");
        let tokio = tokio_two_workers();
        let (driver, end) = driver();
        tokio.spawn(drive_round_trips(end, move |i| {
            let ticket = client.call(i).expect("the server is up");
            async move { ticket.await.expect("a response") }
        }));
        RoundTrips {
            driver,
            _tokio: tokio,
            _spargio: Some(spargio),
            _server_thread: None,
        }
    }

    fn tokio_channels(cross_runtime: bool) -> Self {
        type Req = (u64, tokio::sync::oneshot::Sender<u64>);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Req>(CAPACITY);
        let serve = async move {
            while let Some((v, reply)) = rx.recv().await {
                let _ = reply.send(v + 1);
            }
        };
        let tokio = tokio_two_workers();
        let server_thread = if cross_runtime {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    tokio::select! {
                        () = serve => {}
                        _ = stopped => {}
                    }
                });
            });
            Some(ServerThread {
                stop: Some(stop),
                thread: Some(thread),
            })
        } else {
            tokio.spawn(serve);
            None
        };
        let (driver, end) = driver();
        tokio.spawn(drive_round_trips(end, move |i| {
            let tx = tx.clone();
            async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send((i, reply)).await.expect("the server is up");
                answer.await.expect("a response")
            }
        }));
        RoundTrips {
            driver,
            _tokio: tokio,
            _spargio: None,
            _server_thread: server_thread,
        }
    }
}

fn boundary_round_trip(c: &mut Criterion) {
    const GROUP: &str = "boundary_round_trip";
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(ROUND_TRIPS));
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let expected = |batches: u64| batches * (ROUND_TRIPS * (ROUND_TRIPS + 1) / 2);
    bench_batches(
        &mut group,
        GROUP,
        "tokio_mpsc_oneshot",
        || RoundTrips::tokio_channels(false),
        |h, batches| {
            assert_eq!(black_box(h.driver.call(batches)), expected(batches));
        },
    );
    bench_batches(
        &mut group,
        GROUP,
        "tokio_mpsc_oneshot_cross_runtime",
        || RoundTrips::tokio_channels(true),
        |h, batches| {
            assert_eq!(black_box(h.driver.call(batches)), expected(batches));
        },
    );
    bench_batches(
        &mut group,
        GROUP,
        "spargio",
        RoundTrips::spargio_boundary,
        |h, batches| {
            assert_eq!(black_box(h.driver.call(batches)), expected(batches));
        },
    );
    group.finish();
}

/// Process CPU over `window`, as a percentage of one core.
fn cpu_percent(window: Duration) -> f64 {
    let cpu0 = process_cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu = process_cpu_time().saturating_sub(cpu0);
    100.0 * cpu.as_secs_f64() / t0.elapsed().as_secs_f64()
}

/// Idle CPU of each runtime while it holds `BACKGROUND_TIMERS` pending timers.
fn idle_cpu_with_pending_timers() {
    const SETTLE: Duration = Duration::from_millis(300);
    const WINDOW: Duration = Duration::from_secs(2);
    let deadline = |i: usize| Duration::from_secs(600) + Duration::from_millis(i as u64 * 97 % 3_000_000);

    let spargio_pct = {
        let rt = spargio::RuntimeBuilder::new()
            .shards(2)
            .build()
            .expect("spargio runtime");
        let (armed_tx, armed_rx) = std::sync::mpsc::channel();
        for i in 0..BACKGROUND_TIMERS {
            let armed = armed_tx.clone();
            rt.handle()
                .spawn_with_placement(spargio::TaskPlacement::RoundRobin, async move {
                    let mut s = spargio::time::sleep(deadline(i));
                    poll_fn(|cx| {
                        let _ = std::pin::Pin::new(&mut s).poll(cx);
                        Poll::Ready(())
                    })
                    .await;
                    let _ = armed.send(());
                    s.await;
                })
                .expect("spawn a sleeper");
        }
        for _ in 0..BACKGROUND_TIMERS {
            armed_rx.recv().expect("a sleeper armed its timer");
        }
        std::thread::sleep(SETTLE);
        let before = rt.handle().stats_snapshot().total(|s| s.wakeups);
        let pct = cpu_percent(WINDOW);
        let wakeups = rt.handle().stats_snapshot().total(|s| s.wakeups) - before;
        eprintln!(
            "idle with {BACKGROUND_TIMERS} pending timers: spargio (2 shards, {:?}): {pct:.2} % CPU, {wakeups} wake-ups in {WINDOW:?}",
            rt.handle().backend()
        );
        pct
    };
    let tokio_pct = {
        let rt = tokio_two_workers();
        let (armed_tx, armed_rx) = std::sync::mpsc::channel();
        for i in 0..BACKGROUND_TIMERS {
            let armed = armed_tx.clone();
            rt.spawn(async move {
                let mut s = pin!(tokio::time::sleep(deadline(i)));
                poll_fn(|cx| {
                    let _ = s.as_mut().poll(cx);
                    Poll::Ready(())
                })
                .await;
                let _ = armed.send(());
                s.await;
            });
        }
        for _ in 0..BACKGROUND_TIMERS {
            armed_rx.recv().expect("a sleeper armed its timer");
        }
        std::thread::sleep(SETTLE);
        let pct = cpu_percent(WINDOW);
        eprintln!("idle with {BACKGROUND_TIMERS} pending timers: tokio (2 workers): {pct:.2} % CPU");
        pct
    };
    println!("IDLE_TIMERS_CPU_PERCENT tokio={tokio_pct:.3} spargio={spargio_pct:.3}");
}

criterion_group!(benches, timer_insert_cancel, boundary_round_trip);

fn main() {
    // `cargo test --benches` and `--list` only check that the benches run.
    let smoke = std::env::args().any(|a| a == "--test" || a == "--list");
    if !smoke {
        idle_cpu_with_pending_timers();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
