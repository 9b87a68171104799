//! Driving a long-lived runtime from the bench thread, and CPU accounting.
//!
//! A runtime under test runs a *driver* task that waits for commands. The
//! bench thread sends one command per criterion sample ("run `iters`
//! batches") and blocks on the reply, so each runtime is built once and the
//! command's own cost is spread over the whole sample. Commands travel on a
//! Tokio unbounded channel (it works inside any executor) and replies on a
//! std channel; both runtimes pay the same for them.
//!
//! CPU time: criterion measures wall time only. [`bench_batches`] also reads
//! the process CPU time (user + sys, `getrusage`) around every sample and,
//! when the benchmark ends, writes the totals to
//! `target/criterion/<group>/<function>/cpu.json` (beside criterion's own
//! `new/estimates.json`), which `scripts/bench-report.sh` reads.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use spargio::sys::os::process_cpu_time;

/// The bench thread's end: send a command, block on the reply.
pub struct Driver<C, R> {
    commands: tokio::sync::mpsc::UnboundedSender<C>,
    replies: std::sync::mpsc::Receiver<R>,
}

/// The driver task's end: await commands, send replies.
pub struct DriverEnd<C, R> {
    commands: tokio::sync::mpsc::UnboundedReceiver<C>,
    replies: std::sync::mpsc::SyncSender<R>,
}

/// A connected pair of driver ends.
pub fn driver<C, R>() -> (Driver<C, R>, DriverEnd<C, R>) {
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    // One command is outstanding at a time, so the reply never blocks the driver.
    let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
    (
        Driver {
            commands: cmd_tx,
            replies: reply_rx,
        },
        DriverEnd {
            commands: cmd_rx,
            replies: reply_tx,
        },
    )
}

impl<C, R> Driver<C, R> {
    /// Sends `cmd` and blocks until the driver answers.
    ///
    /// # Panics
    ///
    /// If the driver task has gone (it panicked or its runtime shut down).
    pub fn call(&self, cmd: C) -> R {
        self.send(cmd);
        self.recv()
    }

    /// Sends `cmd` without waiting (for several drivers working at once);
    /// [`recv`](Self::recv) takes its answer.
    ///
    /// # Panics
    ///
    /// If the driver task has gone.
    pub fn send(&self, cmd: C) {
        assert!(self.commands.send(cmd).is_ok(), "the driver task is gone");
    }

    /// Blocks until the driver answers the command [`send`](Self::send) sent.
    ///
    /// # Panics
    ///
    /// If the driver task ended without replying.
    pub fn recv(&self) -> R {
        self.replies
            .recv()
            .expect("the driver task ended without replying")
    }
}

impl<C, R> DriverEnd<C, R> {
    /// The next command; `None` once the bench side dropped its [`Driver`].
    pub async fn next(&mut self) -> Option<C> {
        self.commands.recv().await
    }

    /// Answers the current command.
    pub fn reply(&self, reply: R) {
        // The bench thread may have gone (a panic there); nothing to do then.
        let _ = self.replies.send(reply);
    }
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion` of this workspace
/// (the rule criterion itself follows).
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Writes `body` to `<criterion_home>/<group>/<function>/<file>`, reporting
/// (not failing on) an error: a side file must not break a benchmark run.
pub fn write_side_file(group: &str, function: &str, file: &str, body: &str) {
    let dir = criterion_home().join(group).join(function);
    let result = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(file), body));
    if let Err(e) = result {
        eprintln!("warning: could not write {}: {e}", dir.join(file).display());
    }
}

/// True when criterion only checks that the benchmarks run (`--test`,
/// `cargo test --benches`) or lists them: no CPU file is written then.
fn smoke_mode() -> bool {
    std::env::args().any(|a| a == "--test" || a == "--list")
}

/// Benchmarks `function` in `group`: `setup` builds the harness once, on first
/// use (so a filtered-out benchmark builds nothing), and `run(&harness, iters)`
/// runs `iters` batches. Wall time is measured around `run`; process CPU time
/// too, and its per-iteration total goes to `cpu.json` and stderr.
pub fn bench_batches<H>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    function: &str,
    setup: impl FnOnce() -> H,
    mut run: impl FnMut(&H, u64),
) {
    let mut setup = Some(setup);
    let mut harness: Option<H> = None;
    let totals = Cell::new((0u64, Duration::ZERO, Duration::ZERO));
    group.bench_function(function, |b| {
        b.iter_custom(|iters| {
            let h = harness.get_or_insert_with(|| (setup.take().expect("set up once"))());
            let cpu0 = process_cpu_time();
            let t0 = Instant::now();
            run(h, iters);
            let wall = t0.elapsed();
            let cpu = process_cpu_time().saturating_sub(cpu0);
            let (n, w, c) = totals.get();
            totals.set((n + iters, w + wall, c + cpu));
            wall
        })
    });
    drop(harness); // Shut the runtime down before the next benchmark starts.
    let (iters, wall, cpu) = totals.get();
    if iters == 0 || smoke_mode() {
        return;
    }
    let wall_ns = wall.as_nanos() as f64 / iters as f64;
    let cpu_ns = cpu.as_nanos() as f64 / iters as f64;
    eprintln!(
        "{group_name}/{function}: CPU {} per iteration, wall {} ({:.2} cores busy), over {iters} iterations",
        fmt_ns(cpu_ns),
        fmt_ns(wall_ns),
        cpu_ns / wall_ns
    );
    let json = format!(
        "{{\"iters\": {iters}, \"wall_ns_per_iter\": {wall_ns:.1}, \"cpu_ns_per_iter\": {cpu_ns:.1}, \
         \"cpu_per_wall\": {:.4}}}\n",
        cpu_ns / wall_ns
    );
    write_side_file(group_name, function, "cpu.json", &json);
}

/// Formats nanoseconds with a unit that keeps 3–4 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}
