//! Tail latency of the ping-pong round trip, with CPU cost per round trip.
//!
//! For each harness (Tokio 2 workers, Tokio forced across two threads,
//! spargio 2 shards) the driver runs sequential round trips for a while and
//! records each one's latency in a log-bucket histogram; this prints
//! p50/p95/p99/p99.9/max, wall time and process CPU time (user + sys) per
//! round trip, and writes them to
//! `target/criterion/steady_ping_pong_rtt/<harness>/latency.json` for
//! `scripts/bench-report.sh`.
//!
//! Run: `cargo bench --bench latency` (about 2.5 s). Longer: pass the seconds
//! per harness as an argument (`cargo bench --bench latency -- 5`) or set
//! `LATENCY_SECS=5`. Other arguments (not starting with `-`) select harnesses
//! by substring: `cargo bench --bench latency -- spargio 2`.
//!
//! Experiments: `SPARGIO_SPIN_US=n` sets spargio's `spin_before_park`,
//! `SPARGIO_CPUS=0,1` pins its shards, `SPARGIO_DEFER=1` turns on
//! `DEFER_TASKRUN` (`io_uring_throughput_mode(false)`); such a run is printed but not recorded
//! in `latency.json`.
#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::harness::{fmt_ns, write_side_file};
use common::histogram::{self, Histogram};
use common::pingpong::{Cmd, Reply, SpargioPingPong, TokioPingPong, TokioTwoThreadPingPong};
use spargio::sys::os::process_cpu_time;

const GROUP: &str = "steady_ping_pong_rtt";
/// Default measured time per harness, in seconds.
const DEFAULT_SECS: f64 = 0.7;
/// Unmeasured warm-up before each harness's measurement.
const WARM_UP: Duration = Duration::from_millis(100);

/// Seconds per harness: the first numeric argument, else `$LATENCY_SECS`, else the default.
/// (`cargo bench` passes `--bench` and possibly a filter; non-numbers are ignored.)
fn seconds() -> f64 {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<f64>().ok())
        .or_else(|| std::env::var("LATENCY_SECS").ok().and_then(|s| s.parse().ok()))
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(DEFAULT_SECS)
}

/// True when `name` is selected by the harness filters on the command line (none: all).
fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

struct Measured {
    hist: Histogram,
    wall_per_op_ns: f64,
    cpu_per_op_ns: f64,
}

/// Warms up, then runs one timed command and measures it.
fn measure(call: impl Fn(Cmd) -> Reply, secs: f64) -> Measured {
    call(Cmd::Timed { duration: WARM_UP });
    let duration = Duration::from_secs_f64(secs);
    let cpu0 = process_cpu_time();
    let t0 = std::time::Instant::now();
    let reply = call(Cmd::Timed { duration });
    let wall = t0.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu0);
    let ops = reply.ops.max(1) as f64;
    Measured {
        hist: reply.latency.expect("a timed command returns a histogram"),
        wall_per_op_ns: wall.as_nanos() as f64 / ops,
        cpu_per_op_ns: cpu.as_nanos() as f64 / ops,
    }
}

/// Prints one harness's line; `record` also writes its `latency.json`.
fn report(name: &str, m: &Measured, record: bool) {
    let h = &m.hist;
    let q = |p| h.quantile(p) as f64;
    println!(
        "{name:<17} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>6.2}",
        fmt_ns(q(0.50)),
        fmt_ns(q(0.95)),
        fmt_ns(q(0.99)),
        fmt_ns(q(0.999)),
        fmt_ns(h.max() as f64),
        fmt_ns(m.wall_per_op_ns),
        fmt_ns(m.cpu_per_op_ns),
        h.count(),
        m.cpu_per_op_ns / m.wall_per_op_ns,
    );
    let json = format!(
        "{{\"count\": {}, \"p50_ns\": {}, \"p95_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}, \
         \"wall_ns_per_op\": {:.1}, \"cpu_ns_per_op\": {:.1}}}\n",
        h.count(),
        h.quantile(0.50),
        h.quantile(0.95),
        h.quantile(0.99),
        h.quantile(0.999),
        h.max(),
        m.wall_per_op_ns,
        m.cpu_per_op_ns
    );
    if record {
        write_side_file(GROUP, name, "latency.json", &json);
    }
}

fn main() {
    histogram::self_check();
    let secs = seconds();
    println!(
        "ping-pong round-trip latency, {secs} s per harness (after {} ms warm-up)",
        WARM_UP.as_millis()
    );
    println!(
        "{:<17} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>6}",
        "harness", "p50", "p95", "p99", "p99.9", "max", "wall/op", "CPU/op", "ops", "cores"
    );
    if selected("tokio") {
        let h = TokioPingPong::new();
        report("tokio", &measure(|c| h.call(c), secs), true);
    }
    if selected("tokio_two_thread") {
        let h = TokioTwoThreadPingPong::new();
        report("tokio_two_thread", &measure(|c| h.call(c), secs), true);
    }
    if selected("spargio") {
        let spin = std::env::var("SPARGIO_SPIN_US").ok().and_then(|s| s.parse().ok());
        let cpus: Option<Vec<usize>> = std::env::var("SPARGIO_CPUS").ok().map(|s| {
            s.split(',')
                .map(|c| c.trim().parse().expect("SPARGIO_CPUS: CPU numbers"))
                .collect()
        });
        let defer = std::env::var_os("SPARGIO_DEFER").is_some();
        let experiment = spin.is_some() || cpus.is_some() || defer;
        let h = SpargioPingPong::with_builder(|mut b| {
            if let Some(us) = spin {
                b = b.spin_before_park(Duration::from_micros(us));
            }
            if let Some(cpus) = cpus {
                b = b.thread_affinity(cpus);
            }
            if defer {
                b = b.io_uring_throughput_mode(false);
            }
            b
        });
        let before = h.runtime().handle().stats_snapshot();
        // An experiment's numbers are printed, not recorded for the report.
        report("spargio", &measure(|c| h.call(c), secs), !experiment);
        let after = h.runtime().handle().stats_snapshot();
        let delta = |f: fn(&spargio::ShardStats) -> u64| after.total(f) - before.total(f);
        println!(
            "  spargio counters over warm-up + run: {} msgs received, {} parks, {} doorbells sent, {} skipped",
            delta(|s| s.msgs_received),
            delta(|s| s.parks),
            delta(|s| s.doorbells_sent),
            delta(|s| s.doorbells_skipped),
        );
    }
}
