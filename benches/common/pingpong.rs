//! The coordination workload: a driver task exchanging `(tag, value)` pairs
//! with a responder task on another worker.
//!
//! Three harnesses run the same driver code ([`drive`]) over a [`Link`]:
//!
//! - [`SpargioPingPong`]: 2 shards; the driver on shard 0, the responder pinned
//!   on shard 1; messages are `MSG_RING`s (`send_raw_nowait` / `next_event`).
//! - [`TokioPingPong`]: a 2-worker multi-thread runtime; the driver task and a
//!   spawned responder exchange over two unbounded mpsc channels. Tokio's
//!   scheduler usually runs both on one worker (LIFO slot), so this measures
//!   a same-thread hand-off.
//! - [`TokioTwoThreadPingPong`]: the same channels, but the driver and the
//!   responder each run on their own current-thread runtime and thread, so
//!   every hop wakes the other thread: Tokio's cross-thread baseline.

use std::future::Future;
use std::time::{Duration, Instant};

use spargio::{Event, RemoteShard, RuntimeBuilder, ShardCtx};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::harness::{Driver, DriverEnd, driver};
use super::histogram::Histogram;

/// A request that wants an [`ACK`] with the same value.
pub const PING: u16 = 1;
/// The answer to a [`PING`].
pub const ACK: u16 = 2;
/// A one-way message; the responder adds its value to a running sum.
pub const ONE_WAY: u16 = 3;
/// "Report": the value is how many [`ONE_WAY`]s were sent; answered by [`FLUSH_ACK`].
pub const FLUSH: u16 = 4;
/// The sum of the [`ONE_WAY`] values since the last [`FLUSH`].
pub const FLUSH_ACK: u16 = 5;
/// Ends the responder.
pub const STOP: u16 = 6;

/// Round trips per `steady_ping_pong_rtt` iteration.
pub const RTT_ROUNDS: u32 = 256;
/// One-way sends per `steady_one_way_send_drain` iteration.
pub const DRAIN_SENDS: u32 = 2048;
/// Round trips per `cold_start_ping_pong` iteration.
pub const COLD_ROUNDS: u32 = 64;

/// The shard the spargio driver runs on.
pub const DRIVER_SHARD: usize = 0;
/// The shard the spargio responder is pinned to.
pub const RESPONDER_SHARD: usize = 1;

/// What the bench thread asks the driver to do.
#[derive(Clone, Copy, Debug)]
pub enum Cmd {
    /// `batches` iterations of [`RTT_ROUNDS`] sequential round trips.
    RoundTrips { batches: u64 },
    /// `batches` iterations of [`DRAIN_SENDS`] one-way sends, a flush and a report.
    SendDrain { batches: u64 },
    /// Sequential round trips for `duration`, each one's latency recorded.
    Timed { duration: Duration },
}

/// The driver's answer.
#[derive(Debug)]
pub struct Reply {
    /// Sum of the values the responder sent back (already checked by the driver).
    pub checksum: u64,
    /// Round trips or one-way sends done.
    pub ops: u64,
    /// Per-round-trip latencies ([`Cmd::Timed`] only).
    pub latency: Option<Histogram>,
}

/// The driver's view of the responder.
pub trait Link: Send + 'static {
    /// Sends without waiting.
    ///
    /// # Panics
    ///
    /// If the responder is gone.
    fn send(&mut self, tag: u16, val: u32) {
        assert!(self.try_send(tag, val), "the responder is gone");
    }
    /// Sends without waiting; false if the responder is gone.
    fn try_send(&mut self, tag: u16, val: u32) -> bool;
    /// Resolves once everything sent so far has reached the responder's side.
    fn flush(&mut self) -> impl Future<Output = ()> + Send;
    /// The responder's next message.
    fn recv(&mut self) -> impl Future<Output = (u16, u32)> + Send;
}

/// `rounds` sequential round trips: PING `i`, wait for ACK `i`. Returns the sum of the ACKs.
pub async fn round_trips<L: Link>(link: &mut L, rounds: u32) -> u64 {
    let mut sum = 0u64;
    for i in 0..rounds {
        link.send(PING, i);
        let (tag, val) = link.recv().await;
        assert_eq!((tag, val), (ACK, i), "round trip {i}");
        sum += u64::from(val);
    }
    sum
}

/// `sends` one-way messages, a flush, then FLUSH; checks the responder's sum.
pub async fn send_drain<L: Link>(link: &mut L, sends: u32) -> u64 {
    for i in 0..sends {
        link.send(ONE_WAY, i);
    }
    link.flush().await;
    link.send(FLUSH, sends);
    let expected = u64::from(sends) * u64::from(sends.saturating_sub(1)) / 2;
    let (tag, val) = link.recv().await;
    assert_eq!((tag, u64::from(val)), (FLUSH_ACK, expected), "one-way drain sum");
    expected
}

/// Sequential round trips for `duration`, recording each one's latency (from
/// the previous ACK's arrival to this one's, so bookkeeping is included).
pub async fn timed_round_trips<L: Link>(link: &mut L, duration: Duration) -> (u64, Histogram) {
    let mut hist = Histogram::default();
    let start = Instant::now();
    let mut i = 0u32;
    let mut sum = 0u64;
    let mut t0 = start;
    loop {
        link.send(PING, i);
        let (tag, val) = link.recv().await;
        let t1 = Instant::now();
        assert_eq!((tag, val), (ACK, i), "round trip {i}");
        hist.record(u64::try_from(t1.duration_since(t0).as_nanos()).unwrap_or(u64::MAX));
        sum += u64::from(val);
        i = i.wrapping_add(1);
        t0 = t1;
        if t1.duration_since(start) >= duration {
            return (sum, hist);
        }
    }
}

/// The driver task: serves commands until the bench side hangs up.
pub async fn drive<L: Link>(mut link: L, mut end: DriverEnd<Cmd, Reply>) {
    while let Some(cmd) = end.next().await {
        let reply = match cmd {
            Cmd::RoundTrips { batches } => {
                let mut checksum = 0u64;
                for _ in 0..batches {
                    checksum = checksum.wrapping_add(round_trips(&mut link, RTT_ROUNDS).await);
                }
                Reply {
                    checksum,
                    ops: batches * u64::from(RTT_ROUNDS),
                    latency: None,
                }
            }
            Cmd::SendDrain { batches } => {
                let mut checksum = 0u64;
                for _ in 0..batches {
                    checksum = checksum.wrapping_add(send_drain(&mut link, DRAIN_SENDS).await);
                }
                Reply {
                    checksum,
                    ops: batches * u64::from(DRAIN_SENDS),
                    latency: None,
                }
            }
            Cmd::Timed { duration } => {
                let (checksum, hist) = timed_round_trips(&mut link, duration).await;
                Reply {
                    checksum,
                    ops: hist.count(),
                    latency: Some(hist),
                }
            }
        };
        end.reply(reply);
    }
    // Best effort: at shutdown the responder may be gone already.
    link.try_send(STOP, 0);
}

/// The responder's state: what to answer to each message.
#[derive(Default)]
struct Responder {
    count: u32,
    sum: u64,
}

enum Answer {
    Nothing,
    Send(u16, u32),
    Stop,
}

impl Responder {
    fn on_message(&mut self, tag: u16, val: u32) -> Answer {
        match tag {
            PING => Answer::Send(ACK, val),
            ONE_WAY => {
                self.count += 1;
                self.sum += u64::from(val);
                Answer::Nothing
            }
            FLUSH => {
                assert_eq!(self.count, val, "the responder lost one-way messages");
                let sum = u32::try_from(std::mem::take(&mut self.sum)).expect("one-way sum fits in u32");
                self.count = 0;
                Answer::Send(FLUSH_ACK, sum)
            }
            STOP => Answer::Stop,
            other => panic!("responder: unexpected tag {other}"),
        }
    }
}

// === spargio =====================================================================================

/// The driver's link on shard 0: `MSG_RING` messages to and from shard 1.
pub struct SpargioLink {
    ctx: ShardCtx,
    peer: RemoteShard,
}

impl SpargioLink {
    /// The link of the task running on the current shard, to `peer`.
    ///
    /// # Panics
    ///
    /// Outside a spargio shard.
    pub fn current(peer: usize) -> SpargioLink {
        let ctx = ShardCtx::current().expect("the driver runs on a spargio shard");
        let peer = ctx.remote(peer).expect("the responder's shard exists");
        SpargioLink { ctx, peer }
    }
}

/// The next raw message delivered to this shard.
pub async fn next_msg(ctx: &ShardCtx) -> (u16, u32, usize) {
    let Event::RingMsg { from, tag, val } = ctx.next_event().await else {
        unreachable!("ping-pong uses raw messages only")
    };
    (tag, val, from)
}

impl Link for SpargioLink {
    fn try_send(&mut self, tag: u16, val: u32) -> bool {
        match self.peer.send_raw_nowait(tag, val) {
            Ok(()) => true,
            Err(spargio::SendError::Closed) => false,
            Err(e) => panic!("send to the responder: {e}"),
        }
    }

    async fn flush(&mut self) {
        self.peer.flush().await.expect("flush to the responder");
    }

    async fn recv(&mut self) -> (u16, u32) {
        let (tag, val, _) = next_msg(&self.ctx).await;
        (tag, val)
    }
}

/// The responder task on shard 1: answers on the ring it was asked from.
pub async fn spargio_responder() {
    let ctx = ShardCtx::current().expect("the responder runs on a spargio shard");
    let mut state = Responder::default();
    let mut back: Option<(usize, RemoteShard)> = None;
    loop {
        let (tag, val, from) = next_msg(&ctx).await;
        match state.on_message(tag, val) {
            Answer::Nothing => {}
            Answer::Stop => return,
            Answer::Send(tag, val) => {
                let peer = match &back {
                    Some((shard, peer)) if *shard == from => peer,
                    _ => {
                        &back
                            .insert((from, ctx.remote(from).expect("the sender's shard exists")))
                            .1
                    }
                };
                peer.send_raw_nowait(tag, val).expect("answer the driver");
            }
        }
    }
}

/// A 2-shard spargio runtime with the driver on shard 0 and the responder on shard 1.
pub struct SpargioPingPong {
    // Field order is drop order: hang up on the driver, then shut the runtime down.
    driver: Driver<Cmd, Reply>,
    runtime: spargio::Runtime,
}

impl SpargioPingPong {
    /// Builds the runtime with `configure` applied to a 2-shard builder.
    pub fn with_builder(configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder) -> Self {
        let runtime = configure(RuntimeBuilder::new().shards(2))
            .build()
            .expect("build the spargio runtime");
        let handle = runtime.handle().clone();
        let (bench_end, task_end) = driver();
        handle
            .spawn_pinned(RESPONDER_SHARD, spargio_responder())
            .expect("spawn the responder");
        // Detached: the driver ends when `bench_end` is dropped.
        let _driver = handle
            .spawn_pinned(DRIVER_SHARD, async move {
                drive(SpargioLink::current(RESPONDER_SHARD), task_end).await
            })
            .expect("spawn the driver");
        SpargioPingPong {
            driver: bench_end,
            runtime,
        }
    }

    /// The default configuration.
    pub fn new() -> Self {
        Self::with_builder(|b| b)
    }

    /// Runs one command.
    pub fn call(&self, cmd: Cmd) -> Reply {
        self.driver.call(cmd)
    }

    /// The runtime (for its statistics).
    pub fn runtime(&self) -> &spargio::Runtime {
        &self.runtime
    }
}

/// Builds a fresh 2-shard runtime, does `rounds` round trips, shuts it down
/// (threads joined). Returns the ACK sum.
pub fn spargio_cold_start(rounds: u32) -> u64 {
    let runtime = RuntimeBuilder::new()
        .shards(2)
        .build()
        .expect("build the spargio runtime");
    let handle = runtime.handle().clone();
    let sum = runtime
        .block_on(async move {
            let responder = handle
                .spawn_pinned(RESPONDER_SHARD, spargio_responder())
                .expect("spawn the responder");
            let mut link = SpargioLink::current(RESPONDER_SHARD);
            let sum = round_trips(&mut link, rounds).await;
            link.send(STOP, 0);
            responder.await.expect("the responder ends");
            sum
        })
        .expect("run the driver");
    runtime.shutdown();
    sum
}

// === Tokio =======================================================================================

/// The driver's link over two unbounded mpsc channels.
pub struct TokioLink {
    to_responder: UnboundedSender<(u16, u32)>,
    from_responder: UnboundedReceiver<(u16, u32)>,
}

impl Link for TokioLink {
    fn try_send(&mut self, tag: u16, val: u32) -> bool {
        self.to_responder.send((tag, val)).is_ok()
    }

    async fn flush(&mut self) {
        // A channel send is delivered when it returns.
    }

    async fn recv(&mut self) -> (u16, u32) {
        self.from_responder.recv().await.expect("the responder answers")
    }
}

/// The responder task: answers on its channel until STOP or hang-up.
pub async fn tokio_responder(end: TokioResponderEnd) {
    let TokioResponderEnd {
        mut requests,
        answers,
    } = end;
    let mut state = Responder::default();
    while let Some((tag, val)) = requests.recv().await {
        match state.on_message(tag, val) {
            Answer::Nothing => {}
            Answer::Stop => return,
            Answer::Send(tag, val) => {
                if answers.send((tag, val)).is_err() {
                    return;
                }
            }
        }
    }
}

/// The responder's ends of the two channels.
pub struct TokioResponderEnd {
    requests: UnboundedReceiver<(u16, u32)>,
    answers: UnboundedSender<(u16, u32)>,
}

/// A linked driver/responder channel pair.
pub fn tokio_channels() -> (TokioLink, TokioResponderEnd) {
    let (req_tx, req_rx) = unbounded_channel();
    let (ack_tx, ack_rx) = unbounded_channel();
    (
        TokioLink {
            to_responder: req_tx,
            from_responder: ack_rx,
        },
        TokioResponderEnd {
            requests: req_rx,
            answers: ack_tx,
        },
    )
}

/// A 2-worker Tokio runtime running the driver task and a spawned responder.
pub struct TokioPingPong {
    driver: Driver<Cmd, Reply>,
    _runtime: tokio::runtime::Runtime,
}

/// A 2-worker multi-thread Tokio runtime (I/O and timers enabled, like spargio's rings).
pub fn tokio_two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the Tokio runtime")
}

impl TokioPingPong {
    /// Builds the runtime and starts both tasks.
    pub fn new() -> Self {
        let runtime = tokio_two_workers();
        let (bench_end, task_end) = driver();
        runtime.spawn(async move {
            let (link, responder_end) = tokio_channels();
            tokio::spawn(tokio_responder(responder_end));
            drive(link, task_end).await;
        });
        TokioPingPong {
            driver: bench_end,
            _runtime: runtime,
        }
    }

    /// Runs one command.
    pub fn call(&self, cmd: Cmd) -> Reply {
        self.driver.call(cmd)
    }
}

/// Builds a fresh 2-worker Tokio runtime, does `rounds` round trips, shuts it
/// down (worker threads joined). Returns the ACK sum.
pub fn tokio_cold_start(rounds: u32) -> u64 {
    let runtime = tokio_two_workers();
    let sum = runtime.block_on(async move {
        let (mut link, responder_end) = tokio_channels();
        let responder = tokio::spawn(tokio_responder(responder_end));
        let sum = round_trips(&mut link, rounds).await;
        link.send(STOP, 0);
        responder.await.expect("the responder ends");
        sum
    });
    // Dropping a Tokio runtime waits for its worker threads to exit.
    drop(runtime);
    sum
}

/// Tokio forced across two threads: driver and responder each on a
/// current-thread runtime on its own thread.
pub struct TokioTwoThreadPingPong {
    driver: Option<Driver<Cmd, Reply>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime")
}

impl TokioTwoThreadPingPong {
    /// Starts both threads.
    pub fn new() -> Self {
        let (bench_end, task_end) = driver();
        let (link, responder_end) = tokio_channels();
        let responder = std::thread::Builder::new()
            .name("tokio-responder".into())
            .spawn(move || current_thread_runtime().block_on(tokio_responder(responder_end)))
            .expect("spawn the responder thread");
        let driver_thread = std::thread::Builder::new()
            .name("tokio-driver".into())
            .spawn(move || current_thread_runtime().block_on(drive(link, task_end)))
            .expect("spawn the driver thread");
        TokioTwoThreadPingPong {
            driver: Some(bench_end),
            threads: vec![driver_thread, responder],
        }
    }

    /// Runs one command.
    pub fn call(&self, cmd: Cmd) -> Reply {
        self.driver.as_ref().expect("running").call(cmd)
    }
}

impl Drop for TokioTwoThreadPingPong {
    fn drop(&mut self) {
        // Hang up: the driver returns and sends STOP, the responder returns.
        self.driver.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
