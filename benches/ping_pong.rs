//! Coordination benchmarks: spargio (2 shards) against Tokio (2 workers).
//!
//! - `steady_ping_pong_rtt`: one iteration = 256 sequential round trips between
//!   a driver and a responder on the other shard.
//! - `steady_one_way_send_drain`: one iteration = 2048 one-way sends, a flush,
//!   and a report whose sum the driver checks.
//! - `cold_start_ping_pong`: one iteration = build a runtime, 64 round trips,
//!   full shutdown.
//!
//! Each group has `tokio` (2-worker multi-thread runtime) and `spargio`; the
//! steady groups also have `tokio_two_thread` (driver and responder on two
//! current-thread runtimes on two threads: Tokio's cross-thread baseline).
//! `steady_ping_pong_rtt` also has `spargio_pinned`: the same runtime with its
//! shards pinned to CPUs 0 and 1, so the two spinning shards never share a
//! CPU (the scheduler may stack them on one CPU of a busy machine).
//! See `benches/common/pingpong.rs` for the harnesses and `docs/BENCHMARKS.md`.
#![forbid(unsafe_code)]

mod common;

use std::hint::black_box;

use common::harness::bench_batches;
use common::pingpong::{
    COLD_ROUNDS, Cmd, DRAIN_SENDS, RTT_ROUNDS, SpargioPingPong, TokioPingPong, TokioTwoThreadPingPong,
    spargio_cold_start, tokio_cold_start,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Sum of `0..n`: what the ACKs of `n` round trips (or one drain) add up to.
fn sum_below(n: u32) -> u64 {
    u64::from(n) * u64::from(n.saturating_sub(1)) / 2
}

fn steady_ping_pong_rtt(c: &mut Criterion) {
    const GROUP: &str = "steady_ping_pong_rtt";
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(u64::from(RTT_ROUNDS)));
    let check = |checksum: u64, batches: u64| assert_eq!(checksum, batches * sum_below(RTT_ROUNDS));
    bench_batches(&mut group, GROUP, "tokio", TokioPingPong::new, |h, batches| {
        check(black_box(h.call(Cmd::RoundTrips { batches })).checksum, batches);
    });
    bench_batches(
        &mut group,
        GROUP,
        "tokio_two_thread",
        TokioTwoThreadPingPong::new,
        |h, batches| {
            check(black_box(h.call(Cmd::RoundTrips { batches })).checksum, batches);
        },
    );
    bench_batches(
        &mut group,
        GROUP,
        "spargio",
        SpargioPingPong::new,
        |h, batches| {
            check(black_box(h.call(Cmd::RoundTrips { batches })).checksum, batches);
        },
    );
    if std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2) {
        let pinned = || SpargioPingPong::with_builder(|b| b.thread_affinity(vec![0, 1]));
        bench_batches(&mut group, GROUP, "spargio_pinned", pinned, |h, batches| {
            check(black_box(h.call(Cmd::RoundTrips { batches })).checksum, batches);
        });
    }
    group.finish();
}

fn steady_one_way_send_drain(c: &mut Criterion) {
    const GROUP: &str = "steady_one_way_send_drain";
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(u64::from(DRAIN_SENDS)));
    let check = |checksum: u64, batches: u64| assert_eq!(checksum, batches * sum_below(DRAIN_SENDS));
    bench_batches(&mut group, GROUP, "tokio", TokioPingPong::new, |h, batches| {
        check(black_box(h.call(Cmd::SendDrain { batches })).checksum, batches);
    });
    bench_batches(
        &mut group,
        GROUP,
        "tokio_two_thread",
        TokioTwoThreadPingPong::new,
        |h, batches| {
            check(black_box(h.call(Cmd::SendDrain { batches })).checksum, batches);
        },
    );
    bench_batches(
        &mut group,
        GROUP,
        "spargio",
        SpargioPingPong::new,
        |h, batches| {
            check(black_box(h.call(Cmd::SendDrain { batches })).checksum, batches);
        },
    );
    group.finish();
}

fn cold_start_ping_pong(c: &mut Criterion) {
    const GROUP: &str = "cold_start_ping_pong";
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(u64::from(COLD_ROUNDS)));
    let expected = sum_below(COLD_ROUNDS);
    bench_batches(
        &mut group,
        GROUP,
        "tokio",
        || (),
        |(), iters| {
            for _ in 0..iters {
                assert_eq!(black_box(tokio_cold_start(COLD_ROUNDS)), expected);
            }
        },
    );
    bench_batches(
        &mut group,
        GROUP,
        "spargio",
        || (),
        |(), iters| {
            for _ in 0..iters {
                assert_eq!(black_box(spargio_cold_start(COLD_ROUNDS)), expected);
            }
        },
    );
    group.finish();
}

criterion_group!(
    benches,
    steady_ping_pong_rtt,
    steady_one_way_send_drain,
    cold_start_ping_pong
);
criterion_main!(benches);
