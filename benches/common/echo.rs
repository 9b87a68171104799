//! The loopback echo peer of the network benchmarks, the runtimes that drive
//! clients against it, and the `net_echo_rtt_256b` round trip.
//!
//! - [`echo_server`]: plain std threads, one per connection, blocking
//!   read/write, `TCP_NODELAY`: the same peer for every runtime under test.
//! - [`spargio_harness`] / [`tokio_harness`] / [`compio_harness`]: a runtime
//!   under test (spargio 2 shards, Tokio 2 workers, compio one runtime per
//!   thread on as many threads as asked) whose driver task sets up its
//!   connections, then serves commands from the bench thread
//!   ([`super::harness::Driver`]).
//! - [`RingMode`]: the spargio ring configurations measured side by side.
//! - The echo round trip (write [`RTT_MSG`] bytes, read exactly as many back)
//!   for spargio, Tokio, compio and a blocking std socket, in batches of
//!   [`RTT_ROUNDS`] for criterion (`benches/net_api.rs`) and timed into a
//!   [`Histogram`] for the latency harness (`benches/latency.rs`).

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spargio::{Backend, RuntimeBuilder, RuntimeError};

use super::harness::{Driver, driver};
use super::histogram::Histogram;
use super::pingpong::tokio_two_workers;

/// Round trips per `net_echo_rtt_256b` iteration.
pub const RTT_ROUNDS: usize = 512;
/// Bytes per echo message.
pub const RTT_MSG: usize = 256;

/// Starts the loopback echo server (one std thread per connection) and
/// returns its address. The threads live until the process exits; a
/// connection's thread ends when the client closes it.
///
/// # Panics
///
/// If no loopback listener can be bound.
pub fn echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let addr = listener.local_addr().expect("the echo server's address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_nodelay(true).expect("TCP_NODELAY on the echo server");
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

// === spargio =====================================================================================

/// How the spargio variants of a benchmark set up their shards: the io_uring
/// modes, and the Queue backend that runs where io_uring is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingMode {
    /// The default: `COOP_TASKRUN` only.
    Default,
    /// `io_uring_throughput_mode(false)`: `DEFER_TASKRUN` + `COOP_TASKRUN`.
    DeferTaskrun,
    /// `io_uring_throughput_mode(true)`: a kernel submission thread per shard (`SQPOLL`).
    Sqpoll,
    /// No io_uring: the Queue backend (sockets on the epoll readiness driver),
    /// what a container whose seccomp profile denies io_uring gets.
    QueueFallback,
}

impl RingMode {
    /// Every mode, the default first.
    pub const ALL: [RingMode; 4] = [
        RingMode::Default,
        RingMode::DeferTaskrun,
        RingMode::Sqpoll,
        RingMode::QueueFallback,
    ];

    /// The benchmark function name of this variant (what `scripts/bench-report.sh` pairs
    /// with the `tokio*` functions).
    pub fn function_name(self) -> &'static str {
        match self {
            RingMode::Default => "spargio",
            RingMode::DeferTaskrun => "spargio_defer_taskrun",
            RingMode::Sqpoll => "spargio_sqpoll",
            RingMode::QueueFallback => "spargio_queue",
        }
    }

    /// A 2-shard builder in this mode.
    pub fn builder(self) -> RuntimeBuilder {
        let b = RuntimeBuilder::new().shards(2);
        match self {
            RingMode::Default => b,
            RingMode::DeferTaskrun => b.io_uring_throughput_mode(false),
            RingMode::Sqpoll => b.io_uring_throughput_mode(true),
            RingMode::QueueFallback => b.backend(Backend::Queue),
        }
    }

    /// The modes to measure here: the default, and each other mode whose
    /// runtime builds (a throwaway runtime is built to find out). For one that
    /// fails (`SQPOLL` may get `EPERM`), prints one `SKIPPED: <function>:
    /// <error>` line and leaves it out, so only that variant is skipped.
    pub fn available() -> Vec<RingMode> {
        let mut modes = vec![RingMode::Default];
        for mode in RingMode::ALL.into_iter().filter(|&m| m != RingMode::Default) {
            match mode.builder().build() {
                Ok(rt) => {
                    rt.shutdown();
                    modes.push(mode);
                }
                Err(e) => println!("SKIPPED: {}: {e}", mode.function_name()),
            }
        }
        modes
    }
}

/// A runtime under test (`Rt`) whose driver task answers commands `C` with `R`.
pub struct Harness<C, R, Rt> {
    // Field order is drop order: hang up on the driver, then shut the runtime down.
    driver: Driver<C, R>,
    _runtime: Rt,
}

impl<C, R, Rt> Harness<C, R, Rt> {
    /// Sends `cmd` to the driver task and blocks on its answer.
    pub fn call(&self, cmd: C) -> R {
        self.driver.call(cmd)
    }
}

/// A spargio runtime whose driver task runs on shard 0.
pub type SpargioHarness<C, R> = Harness<C, R, spargio::Runtime>;
/// A 2-worker Tokio runtime with a driver task.
pub type TokioHarness<C, R> = Harness<C, R, tokio::runtime::Runtime>;

/// Builds the runtime from `builder` and starts its driver task on shard 0:
/// it awaits `setup` (connecting, say), then answers each command with
/// `serve(state, command)`.
///
/// # Errors
///
/// When the runtime cannot be built or the driver task cannot be spawned.
pub fn spargio_harness<C, R, S, F, Fut>(
    builder: RuntimeBuilder,
    setup: S,
    serve: F,
) -> Result<SpargioHarness<C, R>, RuntimeError>
where
    C: Send + 'static,
    R: Send + 'static,
    S: Future + Send + 'static,
    S::Output: Send + Sync + 'static,
    F: Fn(Arc<S::Output>, C) -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let runtime = builder.build()?;
    let (bench_end, mut task_end) = driver();
    // Detached: the driver ends when `bench_end` is dropped.
    let _driver = runtime.handle().spawn_pinned(0, async move {
        let state = Arc::new(setup.await);
        while let Some(cmd) = task_end.next().await {
            task_end.reply(serve(state.clone(), cmd).await);
        }
    })?;
    Ok(Harness {
        driver: bench_end,
        _runtime: runtime,
    })
}

/// A connected spargio stream with `TCP_NODELAY`.
///
/// # Panics
///
/// If the connection fails.
pub async fn spargio_connect(addr: SocketAddr) -> spargio::net::TcpStream {
    let s = spargio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the echo server");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// The owned buffers of a spargio echo client: the message and the buffer its echo is read into.
pub struct SpargioEchoBufs {
    msg: Vec<u8>,
    back: Vec<u8>,
}

impl Default for SpargioEchoBufs {
    fn default() -> Self {
        SpargioEchoBufs {
            msg: vec![7u8; RTT_MSG],
            back: vec![0u8; RTT_MSG],
        }
    }
}

/// One echo round trip: write the message, read exactly as many bytes back.
///
/// # Panics
///
/// On an I/O error.
pub async fn spargio_round_trip(s: &spargio::net::TcpStream, bufs: SpargioEchoBufs) -> SpargioEchoBufs {
    let (res, msg) = s.write_all(bufs.msg).await;
    res.expect("write to the echo server");
    let (res, back) = s.read_exact(bufs.back).await;
    res.expect("read the echo");
    SpargioEchoBufs { msg, back }
}

/// One `net_echo_rtt_256b` iteration: [`RTT_ROUNDS`] sequential round trips.
pub async fn spargio_rtt(s: &spargio::net::TcpStream) {
    let mut bufs = SpargioEchoBufs::default();
    for _ in 0..RTT_ROUNDS {
        bufs = spargio_round_trip(s, bufs).await;
    }
}

/// Sequential round trips for `duration`, each one's latency recorded.
pub async fn spargio_timed_rtt(s: &spargio::net::TcpStream, duration: Duration) -> Histogram {
    let mut bufs = SpargioEchoBufs::default();
    let mut timer = RoundTimer::new(duration);
    while timer.running() {
        bufs = spargio_round_trip(s, bufs).await;
        timer.lap();
    }
    timer.into_histogram()
}

// === Tokio =======================================================================================

/// Builds a 2-worker multi-thread runtime and spawns its driver task: it
/// awaits `setup`, then answers each command with `serve(state, command)`,
/// which hands the state back with its answer (Tokio streams need `&mut`).
pub fn tokio_harness<C, R, S, T, F, Fut>(setup: S, serve: F) -> TokioHarness<C, R>
where
    C: Send + 'static,
    R: Send + 'static,
    S: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    F: Fn(T, C) -> Fut + Send + 'static,
    Fut: Future<Output = (T, R)> + Send + 'static,
{
    let runtime = tokio_two_workers();
    let (bench_end, mut task_end) = driver();
    runtime.spawn(async move {
        let mut state = Some(setup.await);
        while let Some(cmd) = task_end.next().await {
            let (back, reply) = serve(state.take().expect("the state is handed back"), cmd).await;
            state = Some(back);
            task_end.reply(reply);
        }
    });
    Harness {
        driver: bench_end,
        _runtime: runtime,
    }
}

/// A connected Tokio stream with `TCP_NODELAY`.
///
/// # Panics
///
/// If the connection fails.
pub async fn tokio_connect(addr: SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the echo server");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// A Tokio echo client: its stream and the buffer echoes are read into.
pub struct TokioEcho {
    stream: tokio::net::TcpStream,
    back: [u8; RTT_MSG],
}

impl TokioEcho {
    /// Connects to the echo server.
    pub async fn connect(addr: SocketAddr) -> Self {
        TokioEcho {
            stream: tokio_connect(addr).await,
            back: [0u8; RTT_MSG],
        }
    }

    /// One echo round trip: write the message, read exactly as many bytes back.
    ///
    /// # Panics
    ///
    /// On an I/O error.
    pub async fn round_trip(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let msg = [7u8; RTT_MSG];
        self.stream
            .write_all(&msg)
            .await
            .expect("write to the echo server");
        self.stream
            .read_exact(&mut self.back)
            .await
            .expect("read the echo");
    }

    /// One `net_echo_rtt_256b` iteration: [`RTT_ROUNDS`] sequential round trips.
    pub async fn rtt(&mut self) {
        for _ in 0..RTT_ROUNDS {
            self.round_trip().await;
        }
    }

    /// Sequential round trips for `duration`, each one's latency recorded.
    pub async fn timed_rtt(&mut self, duration: Duration) -> Histogram {
        let mut timer = RoundTimer::new(duration);
        while timer.running() {
            self.round_trip().await;
            timer.lap();
        }
        timer.into_histogram()
    }
}

// === compio =====================================================================================

/// compio runtimes under test, one per std thread (compio is thread-per-core:
/// a runtime and its tasks stay on the thread that built it, and an idle one
/// cannot take work from a busy one). Each thread runs a driver task like
/// [`tokio_harness`]'s; a command goes to every thread and [`call`](Self::call)
/// returns when all have answered.
pub struct CompioHarness<C, R> {
    drivers: Vec<Driver<C, R>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl<C: Clone, R> CompioHarness<C, R> {
    /// Sends `cmd` to every thread's driver task, then blocks until all have
    /// answered; the answers are in thread order.
    pub fn call(&self, cmd: C) -> Vec<R> {
        for d in &self.drivers {
            d.send(cmd.clone());
        }
        self.drivers.iter().map(Driver::recv).collect()
    }
}

impl<C, R> Drop for CompioHarness<C, R> {
    fn drop(&mut self) {
        // Hang up first: each driver task then ends, and its thread with it.
        self.drivers.clear();
        for t in self.threads.drain(..) {
            // A thread that panicked has said so on stderr already.
            let _ = t.join();
        }
    }
}

/// Starts `threads` std threads, each building its own compio runtime
/// (io_uring driver) and running a driver task on it: the task awaits
/// `setup(thread)` (connecting, say), then answers each command with
/// `serve(state, command)`, which hands the state back with its answer (as
/// [`tokio_harness`]; compio's streams need `&mut` for `read`/`write`).
///
/// # Errors
///
/// When a thread cannot be started or its compio runtime cannot be built
/// (io_uring denied, say); the threads already started are stopped.
pub fn compio_harness<C, R, S, SFut, T, F, Fut>(
    threads: usize,
    setup: S,
    serve: F,
) -> std::io::Result<CompioHarness<C, R>>
where
    C: Send + 'static,
    R: Send + 'static,
    S: Fn(usize) -> SFut + Clone + Send + 'static,
    SFut: Future<Output = T>,
    F: Fn(T, C) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = (T, R)>,
{
    let mut harness = CompioHarness {
        drivers: Vec::new(),
        threads: Vec::new(),
    };
    for thread in 0..threads {
        let (bench_end, mut task_end) = driver();
        let (built_tx, built_rx) = std::sync::mpsc::sync_channel(1);
        let (setup, serve) = (setup.clone(), serve.clone());
        let handle = std::thread::Builder::new()
            .name(format!("compio-{thread}"))
            .spawn(move || {
                let runtime = match compio::runtime::Runtime::new() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = built_tx.send(Err(e));
                        return;
                    }
                };
                let _ = built_tx.send(Ok(()));
                runtime.block_on(async move {
                    let mut state = Some(setup(thread).await);
                    while let Some(cmd) = task_end.next().await {
                        let (back, reply) = serve(state.take().expect("the state is handed back"), cmd).await;
                        state = Some(back);
                        task_end.reply(reply);
                    }
                });
            })?;
        harness.threads.push(handle);
        // The thread sends before it returns, so a closed channel cannot happen
        // unless it panicked; report that as an error too.
        match built_rx.recv() {
            Ok(Ok(())) => harness.drivers.push(bench_end),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("the compio thread panicked")),
        }
    }
    Ok(harness)
}

/// True when a compio runtime on its io_uring driver builds here (a throwaway
/// one is built to find out); otherwise prints one `SKIPPED: compio: <why>`
/// line, and the `compio` functions are left out.
pub fn compio_available() -> bool {
    match compio::runtime::Runtime::new() {
        Ok(rt) if rt.driver_type().is_iouring() => true,
        Ok(rt) => {
            println!(
                "SKIPPED: compio: its driver is {:?}, not io_uring",
                rt.driver_type()
            );
            false
        }
        Err(e) => {
            println!("SKIPPED: compio: {e}");
            false
        }
    }
}

/// A connected compio stream with `TCP_NODELAY`.
///
/// # Panics
///
/// If the connection fails.
pub async fn compio_connect(addr: SocketAddr) -> compio::net::TcpStream {
    let s = compio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the echo server");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// A compio echo client: its stream and the owned buffers it reuses (compio's
/// `write_all`/`read_exact` take a buffer and hand it back).
pub struct CompioEcho {
    stream: compio::net::TcpStream,
    msg: Vec<u8>,
    back: Vec<u8>,
}

impl CompioEcho {
    /// Connects to the echo server.
    pub async fn connect(addr: SocketAddr) -> Self {
        CompioEcho {
            stream: compio_connect(addr).await,
            msg: vec![7u8; RTT_MSG],
            // `read_exact` fills the buffer's capacity: exactly `RTT_MSG` here.
            back: vec![0u8; RTT_MSG],
        }
    }

    /// One echo round trip: write the message, read exactly as many bytes back.
    ///
    /// # Panics
    ///
    /// On an I/O error.
    pub async fn round_trip(&mut self) {
        use compio::io::{AsyncReadExt, AsyncWriteExt};
        let compio::BufResult(res, msg) = self.stream.write_all(std::mem::take(&mut self.msg)).await;
        res.expect("write to the echo server");
        self.msg = msg;
        let compio::BufResult(res, back) = self.stream.read_exact(std::mem::take(&mut self.back)).await;
        res.expect("read the echo");
        self.back = back;
    }

    /// One `net_echo_rtt_256b` iteration: [`RTT_ROUNDS`] sequential round trips.
    pub async fn rtt(&mut self) {
        for _ in 0..RTT_ROUNDS {
            self.round_trip().await;
        }
    }

    /// Sequential round trips for `duration`, each one's latency recorded.
    pub async fn timed_rtt(&mut self, duration: Duration) -> Histogram {
        let mut timer = RoundTimer::new(duration);
        while timer.running() {
            self.round_trip().await;
            timer.lap();
        }
        timer.into_histogram()
    }
}

// === std, blocking ===============================================================================

/// The blocking floor: the same round trips on a std socket from a plain
/// thread (each `write`/`read` a blocking syscall, no runtime).
pub struct StdEcho {
    stream: std::net::TcpStream,
    back: [u8; RTT_MSG],
}

impl StdEcho {
    /// Connects to the echo server, with `TCP_NODELAY`.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).expect("connect to the echo server");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        StdEcho {
            stream,
            back: [0u8; RTT_MSG],
        }
    }

    /// One echo round trip: write the message, read exactly as many bytes back.
    ///
    /// # Panics
    ///
    /// On an I/O error.
    pub fn round_trip(&mut self) {
        let msg = [7u8; RTT_MSG];
        self.stream.write_all(&msg).expect("write to the echo server");
        self.stream.read_exact(&mut self.back).expect("read the echo");
    }

    /// Sequential round trips for `duration`, each one's latency recorded.
    pub fn timed_rtt(&mut self, duration: Duration) -> Histogram {
        let mut timer = RoundTimer::new(duration);
        while timer.running() {
            self.round_trip();
            timer.lap();
        }
        timer.into_histogram()
    }
}

// === timing ======================================================================================

/// Times back-to-back operations for a fixed duration: each lap is recorded
/// from the end of the previous one (so the loop's own bookkeeping is
/// included, as in the ping-pong harness).
pub struct RoundTimer {
    hist: Histogram,
    start: Instant,
    last: Instant,
    duration: Duration,
}

impl RoundTimer {
    /// Starts timing now.
    pub fn new(duration: Duration) -> Self {
        let now = Instant::now();
        RoundTimer {
            hist: Histogram::default(),
            start: now,
            last: now,
            duration,
        }
    }

    /// True until the last lap ended `duration` after the start.
    pub fn running(&self) -> bool {
        self.last.duration_since(self.start) < self.duration
    }

    /// Records the operation that just ended.
    pub fn lap(&mut self) {
        let now = Instant::now();
        let nanos = now.duration_since(self.last).as_nanos();
        self.hist.record(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.last = now;
    }

    /// The recorded latencies.
    pub fn into_histogram(self) -> Histogram {
        self.hist
    }
}
