//! How much CPU an idle runtime burns: a 2-shard spargio runtime with no work,
//! beside a 2-worker Tokio runtime, each measured alone over 2 s (process CPU
//! time, user + sys). Exits with status 1 if spargio's idle CPU is above 5 %.
//!
//! ```text
//! cargo run --release --example idle_cpu            # 2 s per runtime
//! IDLE_SECS=10 cargo run --release --example idle_cpu
//! IDLE_BACKEND=queue cargo run --release --example idle_cpu   # the fallback backend
//! ```
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use spargio::sys::os::process_cpu_time;

/// Highest idle CPU (percent of one core) that passes.
const LIMIT_PERCENT: f64 = 5.0;
/// Time a runtime gets to settle (finish spinning, park) before measuring.
const SETTLE: Duration = Duration::from_millis(200);

/// Process CPU over `window` as a percentage of one core.
fn cpu_percent(window: Duration) -> f64 {
    let cpu0 = process_cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu = process_cpu_time().saturating_sub(cpu0);
    100.0 * cpu.as_secs_f64() / t0.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let window = Duration::from_secs_f64(secs);

    let spargio_pct = {
        let mut builder = spargio::RuntimeBuilder::new().shards(2);
        if std::env::var("IDLE_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("queue")) {
            builder = builder.backend(spargio::Backend::Queue);
        }
        let rt = builder.build().expect("build the spargio runtime");
        rt.block_on(async {}).expect("the runtime runs a task");
        std::thread::sleep(SETTLE);
        let before = rt.handle().stats_snapshot();
        let pct = cpu_percent(window);
        let after = rt.handle().stats_snapshot();
        let parks = after.total(|s| s.parks) - before.total(|s| s.parks);
        println!(
            "spargio (2 shards, {:?} backend): {pct:.2} % CPU idle over {secs} s ({parks} parks)",
            rt.handle().backend()
        );
        pct
    };

    let tokio_pct = {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build the Tokio runtime");
        rt.block_on(async {});
        std::thread::sleep(SETTLE);
        let pct = cpu_percent(window);
        println!("tokio   (2 workers): {pct:.2} % CPU idle over {secs} s");
        pct
    };

    // One machine-readable line for scripts/bench-report.sh.
    println!("IDLE_CPU_PERCENT tokio={tokio_pct:.3} spargio={spargio_pct:.3}");
    if spargio_pct > LIMIT_PERCENT {
        eprintln!("FAIL: spargio's idle runtime uses {spargio_pct:.2} % CPU (limit {LIMIT_PERCENT} %)");
        std::process::exit(1);
    }
}
