//! What the spin-before-park window costs in CPU under a sparse load: a
//! thread outside the runtime sends one message to a task on shard 1 of a
//! 2-shard runtime every `gap`, for several gaps; the same with Tokio (an
//! unbounded channel into a task on a 2-worker runtime), and with spargio's
//! spinning turned off (`spin_before_park(0)`: park at once, as Tokio
//! roughly does). Prints process CPU (user + sys, percent of one core,
//! the sending thread included) and the receiver's mean wake-up delay.
//!
//! The window adapts (see `SpinWindow` in `src/shard.rs`): it grows while
//! parks keep ending sooner than the window would have lasted, so gaps a
//! little longer than the base window end up spun through (more CPU, no
//! wake-up cost), and long gaps are slept through.
//!
//! ```text
//! cargo run --release --example sparse_load_cpu          # ~1 s per row
//! SPARSE_SECS=3 cargo run --release --example sparse_load_cpu
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spargio::sys::os::process_cpu_time;
use spargio::{Event, RuntimeBuilder, ShardCtx};

/// Gaps between messages, in microseconds.
const GAPS_US: [u64; 5] = [25, 100, 300, 1000, 5000];

/// One measured row: CPU % of one core and mean send-to-receive delay.
struct Row {
    cpu_percent: f64,
    mean_delay: Duration,
}

/// Sends `(0, i)` every `gap` for `secs` through `send`, stamping each send
/// in `stamps` (as nanoseconds since `epoch`); returns CPU % over the run.
fn drive(secs: f64, gap: Duration, epoch: Instant, stamp: &AtomicU64, mut send: impl FnMut(u32)) -> f64 {
    let cpu0 = process_cpu_time();
    let t0 = Instant::now();
    let mut i = 0u32;
    let mut next = t0;
    while t0.elapsed().as_secs_f64() < secs {
        next += gap;
        while Instant::now() < next {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        stamp.store(nanos_since(epoch), Ordering::Release);
        send(i);
        i = i.wrapping_add(1);
    }
    let cpu = process_cpu_time().saturating_sub(cpu0);
    100.0 * cpu.as_secs_f64() / t0.elapsed().as_secs_f64()
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Receiver-side delay accounting: total nanoseconds and count.
#[derive(Default)]
struct Delays {
    total: AtomicU64,
    count: AtomicU64,
}

impl Delays {
    fn record(&self, sent_at: u64, epoch: Instant) {
        let now = nanos_since(epoch);
        self.total
            .fetch_add(now.saturating_sub(sent_at), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn mean(&self) -> Duration {
        let n = self.count.load(Ordering::Relaxed).max(1);
        Duration::from_nanos(self.total.load(Ordering::Relaxed) / n)
    }
}

fn spargio_row(secs: f64, gap: Duration, spin: Option<Duration>) -> Row {
    let mut builder = RuntimeBuilder::new().shards(2);
    if let Some(spin) = spin {
        builder = builder.spin_before_park(spin);
    }
    let rt = builder.build().expect("build the spargio runtime");
    let epoch = Instant::now();
    let stamp = Arc::new(AtomicU64::new(0));
    let delays = Arc::new(Delays::default());
    let (s, d) = (stamp.clone(), delays.clone());
    let receiver = rt
        .handle()
        .spawn_pinned(1, async move {
            let ctx = ShardCtx::current().expect("on a shard");
            loop {
                let Event::RingMsg { tag, .. } = ctx.next_event().await else {
                    continue;
                };
                if tag == 1 {
                    return;
                }
                d.record(s.load(Ordering::Acquire), epoch);
            }
        })
        .expect("spawn the receiver");
    let to = rt.handle().remote(1).expect("shard 1");
    std::thread::sleep(Duration::from_millis(50));
    let cpu_percent = drive(secs, gap, epoch, &stamp, |i| {
        to.send_raw_nowait(0, i).expect("send to shard 1");
    });
    to.send_raw_nowait(1, 0).expect("stop the receiver");
    rt.block_on(receiver)
        .expect("block on")
        .expect("the receiver ends");
    Row {
        cpu_percent,
        mean_delay: delays.mean(),
    }
}

fn tokio_row(secs: f64, gap: Duration) -> Row {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the Tokio runtime");
    let epoch = Instant::now();
    let stamp = Arc::new(AtomicU64::new(0));
    let delays = Arc::new(Delays::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u32>>();
    let (s, d) = (stamp.clone(), delays.clone());
    let receiver = rt.spawn(async move {
        while let Some(Some(_)) = rx.recv().await {
            d.record(s.load(Ordering::Acquire), epoch);
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let cpu_percent = drive(secs, gap, epoch, &stamp, |i| {
        tx.send(Some(i)).expect("send to the task");
    });
    tx.send(None).expect("stop the receiver");
    rt.block_on(receiver).expect("the receiver ends");
    Row {
        cpu_percent,
        mean_delay: delays.mean(),
    }
}

fn main() {
    let secs: f64 = std::env::var("SPARSE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    println!(
        "one message every <gap> from a thread outside the runtime; CPU % of one core (sender included), mean delay"
    );
    println!(
        "{:>8}  {:>22}  {:>22}  {:>22}",
        "gap", "spargio (adaptive)", "spargio (no spin)", "tokio"
    );
    for gap_us in GAPS_US {
        let gap = Duration::from_micros(gap_us);
        let rows = [
            spargio_row(secs, gap, None),
            spargio_row(secs, gap, Some(Duration::ZERO)),
            tokio_row(secs, gap),
        ];
        let cells: Vec<String> = rows
            .iter()
            .map(|r| format!("{:6.1} % {:>9.1?}", r.cpu_percent, r.mean_delay))
            .collect();
        println!(
            "{:>6}µs  {:>22}  {:>22}  {:>22}",
            gap_us, cells[0], cells[1], cells[2]
        );
    }
}
