//! Fan-out/fan-in benchmarks: spargio (4 shards) against Tokio (4 workers).
//!
//! One iteration = 64 sequential requests; each spawns 16 stealable tasks and
//! awaits them all, summing their results into a checksum. Task `branch` of
//! request `req` runs `n` steps of
//! `x = x * 6364136223846793005 + (1442695040888963407 ^ i); x ^= x >> 29`
//! seeded with `(req << 32) ^ branch ^ 0x9E3779B97F4A7C15`.
//!
//! - `fanout_fanin_balanced`: every task runs `n = 2000`.
//! - `fanout_fanin_skewed`: branch `req % 16` runs `n = 20000`, the others `n = 500`.
//!
//! Before measuring, one iteration on each runtime is checked against a serial
//! computation of the checksum; every measured iteration is checked too.
#![forbid(unsafe_code)]

mod common;

use std::hint::black_box;

use common::harness::{Driver, DriverEnd, bench_batches, driver};
use criterion::{Criterion, criterion_group, criterion_main};

const WORKERS: usize = 4;
const REQUESTS: u64 = 64;
const BRANCHES: u64 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Balanced,
    Skewed,
}

impl Shape {
    fn group(self) -> &'static str {
        match self {
            Shape::Balanced => "fanout_fanin_balanced",
            Shape::Skewed => "fanout_fanin_skewed",
        }
    }

    /// Steps task `branch` of request `req` runs.
    fn steps(self, req: u64, branch: u64) -> u64 {
        match self {
            Shape::Balanced => 2000,
            Shape::Skewed if branch == req % BRANCHES => 20_000,
            Shape::Skewed => 500,
        }
    }
}

/// One task's work: an LCG step mixed with an xorshift, `n` times.
fn work(req: u64, branch: u64, n: u64) -> u64 {
    let mut x = (req << 32) ^ branch ^ 0x9E37_79B9_7F4A_7C15;
    for i in 0..black_box(n) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407 ^ i);
        x ^= x >> 29;
    }
    x
}

/// The checksum of one iteration, computed serially.
fn serial_checksum(shape: Shape) -> u64 {
    let mut sum = 0u64;
    for req in 0..REQUESTS {
        for branch in 0..BRANCHES {
            sum = sum.wrapping_add(work(req, branch, shape.steps(req, branch)));
        }
    }
    sum
}

/// "Run this many iterations"; the reply is the last iteration's checksum.
type FanoutDriver = Driver<u64, u64>;

/// Serves commands: each iteration's checksum must equal `expected`.
async fn drive(
    mut end: DriverEnd<u64, u64>,
    shape: Shape,
    expected: u64,
    spawn: impl Fn(u64, u64, u64) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> + Send,
) {
    while let Some(iters) = end.next().await {
        let mut checksum = 0;
        for _ in 0..iters {
            checksum = 0u64;
            for req in 0..REQUESTS {
                let tasks: Vec<_> = (0..BRANCHES)
                    .map(|branch| spawn(req, branch, shape.steps(req, branch)))
                    .collect();
                for t in tasks {
                    checksum = checksum.wrapping_add(t.await);
                }
            }
            assert_eq!(checksum, expected, "{} checksum", shape.group());
        }
        end.reply(checksum);
    }
}

struct SpargioFanout {
    driver: FanoutDriver,
    _runtime: spargio::Runtime,
}

impl SpargioFanout {
    fn new(shape: Shape, expected: u64) -> Self {
        let mut builder = spargio::RuntimeBuilder::new().shards(WORKERS);
        // Experiments: `SPARGIO_SPIN_US=n` sets `spin_before_park`.
        if let Some(us) = std::env::var("SPARGIO_SPIN_US").ok().and_then(|s| s.parse().ok()) {
            builder = builder.spin_before_park(std::time::Duration::from_micros(us));
        }
        let runtime = builder.build().expect("build the spargio runtime");
        let handle = runtime.handle().clone();
        let (bench_end, task_end) = driver();
        let spawner = handle.clone();
        let spawn = move |req, branch, n| {
            let task = spawner
                .spawn_stealable(async move { work(req, branch, n) })
                .expect("spawn a task");
            Box::pin(async move { task.await.expect("the task finishes") })
                as std::pin::Pin<Box<dyn Future<Output = u64> + Send>>
        };
        let _driver = handle
            .spawn_pinned(0, drive(task_end, shape, expected, spawn))
            .expect("spawn the driver");
        SpargioFanout {
            driver: bench_end,
            _runtime: runtime,
        }
    }
}

struct TokioFanout {
    driver: FanoutDriver,
    _runtime: tokio::runtime::Runtime,
}

impl TokioFanout {
    fn new(shape: Shape, expected: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .build()
            .expect("build the Tokio runtime");
        let (bench_end, task_end) = driver();
        let spawn = |req, branch, n| {
            let task = tokio::spawn(async move { work(req, branch, n) });
            Box::pin(async move { task.await.expect("the task finishes") })
                as std::pin::Pin<Box<dyn Future<Output = u64> + Send>>
        };
        runtime.spawn(drive(task_end, shape, expected, spawn));
        TokioFanout {
            driver: bench_end,
            _runtime: runtime,
        }
    }
}

fn bench_shape(c: &mut Criterion, shape: Shape) {
    let expected = serial_checksum(shape);
    // The two runtimes must compute the same thing as the serial reference.
    let tokio_sum = TokioFanout::new(shape, expected).driver.call(1);
    let spargio_sum = SpargioFanout::new(shape, expected).driver.call(1);
    assert_eq!(
        (tokio_sum, spargio_sum),
        (expected, expected),
        "{} checksums differ",
        shape.group()
    );

    let group_name = shape.group();
    let mut group = c.benchmark_group(group_name);
    bench_batches(
        &mut group,
        group_name,
        "tokio",
        || TokioFanout::new(shape, expected),
        |h, iters| {
            black_box(h.driver.call(iters));
        },
    );
    bench_batches(
        &mut group,
        group_name,
        "spargio",
        || SpargioFanout::new(shape, expected),
        |h, iters| {
            black_box(h.driver.call(iters));
        },
    );
    group.finish();
}

fn fanout_fanin_balanced(c: &mut Criterion) {
    bench_shape(c, Shape::Balanced);
}

fn fanout_fanin_skewed(c: &mut Criterion) {
    bench_shape(c, Shape::Skewed);
}

criterion_group!(benches, fanout_fanin_balanced, fanout_fanin_skewed);
criterion_main!(benches);
