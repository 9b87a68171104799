//! Tail latency of the round-trip workloads, with CPU cost per round trip.
//!
//! Two workloads, each under several harnesses. A harness runs sequential
//! round trips for a while and records each one's latency (from the end of the
//! previous round trip) in a log-bucket histogram; this prints
//! p50/p95/p99/p99.9/max, wall time and process CPU time (user + sys) per
//! round trip, and writes them to
//! `target/criterion/<workload>/<harness>/latency.json` for
//! `scripts/bench-report.sh` (the names are the criterion benchmarks' names).
//!
//! - `steady_ping_pong_rtt`: the coordination round trip of
//!   `benches/ping_pong.rs` (`common::pingpong`) under `tokio` (2 workers),
//!   `tokio_two_thread` (Tokio forced across two threads) and `spargio`
//!   (2 shards, `MSG_RING`s).
//! - `net_echo_rtt_256b`: the echo round trip of `benches/net_api.rs`
//!   (`common::echo`): write 256 B to a loopback echo server of blocking std
//!   threads, read exactly 256 B back. Under `tokio` (2 workers), `compio`
//!   (compio 0.19 on its io_uring driver: one runtime on one thread of its
//!   own, `write_all`/`read_exact` with owned buffers), `spargio` (2 shards,
//!   `spargio::net::TcpStream`) in each ring mode (`spargio`,
//!   `spargio_defer_taskrun`, `spargio_sqpoll`, `spargio_queue`; a harness
//!   whose runtime cannot be built is skipped with a `SKIPPED: <harness>:
//!   <error>` line), and `std_blocking`: the same loop on a std socket from
//!   the bench thread, the floor without a runtime. Its process CPU includes
//!   the echo server's thread.
//!
//! Run: `cargo bench --bench latency` (about 7 s). Longer: pass the seconds
//! per harness as an argument (`cargo bench --bench latency -- 5`) or set
//! `LATENCY_SECS=5`. Other arguments (not starting with `-`) select harnesses
//! by substring of `<workload>/<harness>`: `cargo bench --bench latency --
//! spargio 2`, `-- echo`, `-- net_echo_rtt_256b/tokio`.
//!
//! Ping-pong experiments: `SPARGIO_SPIN_US=n` sets spargio's `spin_before_park`,
//! `SPARGIO_CPUS=0,1` pins its shards, `SPARGIO_DEFER=1` turns on
//! `DEFER_TASKRUN` (`io_uring_throughput_mode(false)`); such a run is printed but not recorded
//! in `latency.json`.
#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::echo::{
    CompioEcho, RingMode, StdEcho, TokioEcho, compio_available, compio_harness, echo_server, spargio_connect,
    spargio_harness, spargio_timed_rtt, tokio_harness,
};
use common::harness::{fmt_ns, write_side_file};
use common::histogram::{self, Histogram};
use common::pingpong::{Cmd, Reply, SpargioPingPong, TokioPingPong, TokioTwoThreadPingPong};
use spargio::sys::os::process_cpu_time;

const PING_PONG: &str = "steady_ping_pong_rtt";
const ECHO: &str = "net_echo_rtt_256b";
/// Default measured time per harness, in seconds.
const DEFAULT_SECS: f64 = 0.7;
/// Unmeasured warm-up before each harness's measurement.
const WARM_UP: Duration = Duration::from_millis(100);
/// Width of the harness column.
const NAME_WIDTH: usize = 22;

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

/// True when harness `name` of `workload` is selected by the filters on the
/// command line (none: all): a filter selects it when `<workload>/<name>`
/// contains the filter.
fn selected(workload: &str, name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    let full = format!("{workload}/{name}");
    filters.is_empty() || filters.iter().any(|f| full.contains(f.as_str()))
}

struct Measured {
    hist: Histogram,
    wall_per_op_ns: f64,
    cpu_per_op_ns: f64,
}

/// Warms up, then runs one timed command and measures it. `timed(d)` runs
/// round trips for `d` and returns their latencies.
fn measure(mut timed: impl FnMut(Duration) -> Histogram, secs: f64) -> Measured {
    timed(WARM_UP);
    let duration = Duration::from_secs_f64(secs);
    let cpu0 = process_cpu_time();
    let t0 = std::time::Instant::now();
    let hist = timed(duration);
    let wall = t0.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu0);
    let ops = hist.count().max(1) as f64;
    Measured {
        hist,
        wall_per_op_ns: wall.as_nanos() as f64 / ops,
        cpu_per_op_ns: cpu.as_nanos() as f64 / ops,
    }
}

/// Prints a workload's title and the column headings.
fn print_header(title: &str, secs: f64) {
    println!(
        "\n{title}, {secs} s per harness (after {} ms warm-up)",
        WARM_UP.as_millis()
    );
    println!(
        "{:<NAME_WIDTH$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>6}",
        "harness", "p50", "p95", "p99", "p99.9", "max", "wall/op", "CPU/op", "ops", "cores"
    );
}

/// Measures harness `name` of `workload` ([`measure`]) and reports it.
fn run(workload: &str, name: &str, timed: impl FnMut(Duration) -> Histogram, secs: f64, record: bool) {
    report(workload, name, &measure(timed, secs), record);
}

/// Prints one harness's line; `record` also writes its `latency.json`.
fn report(workload: &str, name: &str, m: &Measured, record: bool) {
    let h = &m.hist;
    let q = |p| h.quantile(p) as f64;
    println!(
        "{name:<NAME_WIDTH$} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>6.2}",
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
        write_side_file(workload, name, "latency.json", &json);
    }
}

/// A ping-pong harness's `call` as a timed run: round trips for a duration.
fn timed_ping_pong(call: impl Fn(Cmd) -> Reply) -> impl FnMut(Duration) -> Histogram {
    move |duration| {
        call(Cmd::Timed { duration })
            .latency
            .expect("a timed command returns a histogram")
    }
}

/// The ping-pong round trip under each harness.
fn ping_pong(secs: f64) {
    let names = ["tokio", "tokio_two_thread", "spargio"];
    if !names.iter().any(|n| selected(PING_PONG, n)) {
        return;
    }
    print_header(&format!("ping-pong round-trip latency ({PING_PONG})"), secs);
    if selected(PING_PONG, "tokio") {
        let h = TokioPingPong::new();
        run(PING_PONG, "tokio", timed_ping_pong(|c| h.call(c)), secs, true);
    }
    if selected(PING_PONG, "tokio_two_thread") {
        let h = TokioTwoThreadPingPong::new();
        run(
            PING_PONG,
            "tokio_two_thread",
            timed_ping_pong(|c| h.call(c)),
            secs,
            true,
        );
    }
    if selected(PING_PONG, "spargio") {
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
        run(
            PING_PONG,
            "spargio",
            timed_ping_pong(|c| h.call(c)),
            secs,
            !experiment,
        );
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

/// The 256 B echo round trip under each harness, against one echo server.
fn echo(secs: f64) {
    let spargio_names = RingMode::ALL.map(RingMode::function_name);
    let any = ["tokio", "compio", "std_blocking"]
        .iter()
        .chain(&spargio_names)
        .any(|n| selected(ECHO, n));
    if !any {
        return;
    }
    print_header(
        &format!("loopback TCP echo round-trip latency, 256 B ({ECHO})"),
        secs,
    );
    let addr = echo_server();
    if selected(ECHO, "tokio") {
        let h = tokio_harness(TokioEcho::connect(addr), |mut client, duration| async move {
            let hist = client.timed_rtt(duration).await;
            (client, hist)
        });
        run(ECHO, "tokio", |d| h.call(d), secs, true);
    }
    if selected(ECHO, "compio") && compio_available() {
        let h = compio_harness(
            1,
            move |_| CompioEcho::connect(addr),
            |mut client, duration| async move {
                let hist = client.timed_rtt(duration).await;
                (client, hist)
            },
        )
        .expect("build the compio harness");
        run(
            ECHO,
            "compio",
            |d| h.call(d).pop().expect("one thread, one answer"),
            secs,
            true,
        );
    }
    for mode in RingMode::ALL {
        let name = mode.function_name();
        if !selected(ECHO, name) {
            continue;
        }
        let built = spargio_harness(mode.builder(), spargio_connect(addr), |s, duration| async move {
            spargio_timed_rtt(&s, duration).await
        });
        match built {
            Ok(h) => run(ECHO, name, |d| h.call(d), secs, true),
            Err(e) if mode == RingMode::Default => panic!("build the spargio runtime: {e}"),
            // Only this variant is skipped (SQPOLL may need privileges).
            Err(e) => println!("SKIPPED: {name}: {e}"),
        }
    }
    if selected(ECHO, "std_blocking") {
        let mut client = StdEcho::connect(addr);
        run(ECHO, "std_blocking", |d| client.timed_rtt(d), secs, true);
    }
}

fn main() {
    histogram::self_check();
    let secs = seconds();
    ping_pong(secs);
    echo(secs);
}
