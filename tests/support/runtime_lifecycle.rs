//! The task lifecycle of a `spargio::Runtime` on the simulated kernel, driven
//! by arbitrary bytes (with the kernel's faults chosen by them): the model
//! behind `tests/runtime_lifecycle.rs`.
//!
//! An input is a fault mix (the first `FAULT_BYTES` bytes, read as
//! `spargio::sys::check::lifecycle::faults_from_bytes` reads them) and a
//! sequence of two-byte actions: spawn a task (pinned or stealable) that
//! sleeps, yields, never finishes, polls a sleep once and drops or forgets
//! it, or races a sleep against a zero timeout; abort, drop, forget or await
//! a task's handle; send a message into a shard; shut the runtime down
//! mid-sequence. And stream I/O on a simulated socket (a
//! `spargio::net::UnixStream` over `SimKernel::socket_pair`, bound to shard
//! 0): the outside writes numbered bytes into the peer or closes it, and a
//! task receives, awaiting the receive, polling it once and dropping it,
//! racing it against a zero timeout, or polling it once and forgetting it;
//! the awaiting reader may be aborted.
//!
//! Invariants:
//! - every task is done or cancelled: its future is dropped exactly once by
//!   the time the runtime has shut down (drop guards), and an awaited handle
//!   gives `Ok`, or `Cancelled` only for a task that was aborted or that the
//!   shutdown cancelled;
//! - spawns after shutdown are refused;
//! - no message is lost: without a shutdown, every message a shard accepted
//!   is received there exactly once (a collector task per shard);
//! - shutdown finishes (the test's hang deadline fails it otherwise);
//! - no stream byte is lost, duplicated or reordered across cancelled
//!   receives: without a shutdown, the bytes the receiving tasks got plus
//!   those a final drain reads (the stash of dropped receives first, then
//!   the socket) are the bytes the peer was given, in order, up to end of
//!   file; a forgotten receive (whose future never runs again) may take
//!   with it at most one receive's worth, as one gap;
//! - without forgotten futures, the simulated fds are all closed after the
//!   shutdown (`SimKernel::open_streams` back to 0).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use spargio::net::UnixStream;
use spargio::sys::check::lifecycle::{FAULT_BYTES, faults_from_bytes};
use spargio::sys::sim::SimKernel;
use spargio::{Backend, Event, JoinHandle, Runtime, RuntimeBuilder, ShardCtx};

/// Shards of the runtime under test.
pub const SHARDS: usize = 2;

/// Most actions one input runs.
pub const MAX_ACTIONS: usize = 64;

/// Tag of the message that tells a collector how many to expect.
const CHECK_TAG: u16 = 0xfff0;

/// What a spawned task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Sleeps `ms` milliseconds (0 to 2).
    Sleep(u8),
    /// Yields `n` times.
    Yield(u8),
    /// Never finishes (only an abort or the shutdown ends it).
    Never,
    /// Polls a 1 ms sleep once, then drops it.
    PollOnceDrop,
    /// Polls a 1 ms sleep once, then `mem::forget`s it (boxed).
    PollOnceForget,
    /// A 1 ms sleep inside a zero timeout.
    ZeroTimeout,
}

/// One step of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Spawn a task on `shard` (`None`: stealable).
    Spawn {
        /// Pinned shard, or stealable.
        shard: Option<usize>,
        /// What it does.
        body: Body,
    },
    /// Abort the `nth` handle still held (modulo their number).
    Abort(u8),
    /// Drop the `nth` handle (the task runs on, detached).
    Drop(u8),
    /// `mem::forget` the `nth` handle.
    Forget(u8),
    /// Await the `nth` handle from outside the runtime.
    Await(u8),
    /// Send a message into `shard` from outside the runtime.
    Send(usize),
    /// Shut the runtime down (later spawns must be refused).
    Shutdown,
    /// The outside writes `n` numbered bytes into the socket's peer (what
    /// fits in the simulated socket's buffer).
    PeerWrite(u8),
    /// The outside closes the socket's peer.
    PeerClose,
    /// A task receives up to `len` bytes (1 to 32) from the socket, its
    /// receive meeting `fate`.
    Recv {
        /// What happens to the receive future.
        fate: RecvFate,
        /// Buffer capacity.
        len: u8,
    },
    /// Abort the task whose receive is awaiting data, if there is one.
    AbortReader,
}

/// What happens to a task's receive future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvFate {
    /// Awaited until it completes (at most one such reader at a time).
    Await,
    /// Polled once, then dropped.
    PollOnceDrop,
    /// Inside a zero timeout.
    ZeroTimeout,
    /// Polled once, then `mem::forget`ten (boxed).
    PollOnceForget,
    /// A `RecvStream` (a multishot receive on a provided-buffer ring) whose
    /// first chunk is awaited, then the stream is dropped with whatever else
    /// it received (the socket's next receive gets that first).
    StreamOnce,
}

/// Most bytes one receive asks for.
pub const MAX_RECV: u8 = 32;

impl Action {
    /// Decodes one action from two bytes.
    pub fn decode(b: [u8; 2]) -> Action {
        if b[0] >= 128 {
            let fates = [
                RecvFate::Await,
                RecvFate::PollOnceDrop,
                RecvFate::ZeroTimeout,
                RecvFate::PollOnceForget,
            ];
            return match (b[0] - 128) % 8 {
                0 | 1 => Action::PeerWrite(b[1]),
                2..=4 => Action::Recv {
                    fate: fates[usize::from(b[1] >> 6)],
                    len: 1 + (b[1] & 0x3f) % MAX_RECV,
                },
                5 => Action::Recv {
                    fate: RecvFate::StreamOnce,
                    len: 1 + (b[1] & 0x3f) % MAX_RECV,
                },
                6 => Action::AbortReader,
                _ if b[1] < 32 => Action::PeerClose,
                _ => Action::PeerWrite(b[1]),
            };
        }
        let shard = usize::from(b[1] >> 4) % (SHARDS + 1);
        let shard = (shard < SHARDS).then_some(shard);
        let arg = b[1] & 0x0f;
        match b[0] % 16 {
            0 => Action::Spawn {
                shard,
                body: Body::Sleep(arg % 3),
            },
            1 => Action::Spawn {
                shard,
                body: Body::Yield(arg % 4),
            },
            2 => Action::Spawn {
                shard,
                body: Body::Never,
            },
            3 => Action::Spawn {
                shard,
                body: Body::PollOnceDrop,
            },
            4 => Action::Spawn {
                shard,
                body: Body::PollOnceForget,
            },
            5 => Action::Spawn {
                shard,
                body: Body::ZeroTimeout,
            },
            6 | 7 => Action::Abort(b[1]),
            8 => Action::Drop(b[1]),
            9 => Action::Forget(b[1]),
            10 | 11 => Action::Await(b[1]),
            12..=14 => Action::Send(usize::from(b[1]) % SHARDS),
            // One in 256 actions shuts down: most inputs run to their end.
            _ if b[1] < 16 => Action::Shutdown,
            _ => Action::Await(b[1]),
        }
    }

    /// Two bytes that [`Action::decode`] reads back as this action.
    pub fn encode(self) -> [u8; 2] {
        let place = |shard: Option<usize>| (shard.unwrap_or(SHARDS) as u8) << 4;
        match self {
            Action::Spawn { shard, body } => {
                let (op, arg) = match body {
                    Body::Sleep(ms) => (0, ms),
                    Body::Yield(n) => (1, n),
                    Body::Never => (2, 0),
                    Body::PollOnceDrop => (3, 0),
                    Body::PollOnceForget => (4, 0),
                    Body::ZeroTimeout => (5, 0),
                };
                [op, place(shard) | (arg & 0x0f)]
            }
            Action::Abort(n) => [6, n],
            Action::Drop(n) => [8, n],
            Action::Forget(n) => [9, n],
            Action::Await(n) => [10, n],
            Action::Send(shard) => [12, shard as u8],
            Action::Shutdown => [15, 0],
            Action::PeerWrite(n) => [128, n],
            Action::PeerClose => [135, 0],
            Action::Recv { fate, len } => {
                let (op, f) = match fate {
                    RecvFate::Await => (130, 0),
                    RecvFate::PollOnceDrop => (130, 1),
                    RecvFate::ZeroTimeout => (130, 2),
                    RecvFate::PollOnceForget => (130, 3),
                    RecvFate::StreamOnce => (133, 0),
                };
                [op, f << 6 | (len.clamp(1, MAX_RECV) - 1)]
            }
            Action::AbortReader => [134, 0],
        }
    }
}

/// An input for [`run`]: fault bytes, then actions.
pub fn encode_input(fault_bytes: [u8; FAULT_BYTES], actions: &[Action]) -> Vec<u8> {
    let mut input = fault_bytes.to_vec();
    input.extend(actions.iter().flat_map(|a| a.encode()));
    input
}

/// Counts a task future's drop.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Yields once.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Pending forever.
struct Never;

impl Future for Never {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

async fn body(body: Body, guard: Guard) {
    let _guard = guard;
    match body {
        Body::Sleep(ms) => spargio::time::sleep(Duration::from_millis(u64::from(ms))).await,
        Body::Yield(n) => {
            for _ in 0..n {
                YieldOnce(false).await;
            }
        }
        Body::Never => Never.await,
        Body::PollOnceDrop | Body::PollOnceForget => {
            let mut sleep = Box::pin(spargio::time::sleep(Duration::from_millis(1)));
            let _ = sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            if body == Body::PollOnceForget {
                std::mem::forget(sleep);
            }
        }
        Body::ZeroTimeout => {
            let _ =
                spargio::time::timeout(Duration::ZERO, spargio::time::sleep(Duration::from_millis(1))).await;
        }
    }
}

struct Task {
    handle: JoinHandle<()>,
    aborted: bool,
    /// Its body never finishes by itself.
    never: bool,
}

/// Collects the messages a shard receives until it has the number it is told.
async fn collect(received: Arc<Mutex<Vec<(usize, u32)>>>) {
    let ctx = ShardCtx::current().expect("a collector runs on a shard");
    let shard = ctx.shard_id();
    let mut expected: Option<usize> = None;
    let mut got = 0;
    loop {
        if expected == Some(got) {
            return;
        }
        let Event::RingMsg { tag, val, .. } = ctx.next_event().await else {
            continue; // Not a message: nothing to count.
        };
        if tag == CHECK_TAG {
            expected = Some(val as usize);
        } else {
            received.lock().unwrap().push((shard, val));
            got += 1;
        }
    }
}

/// What the receiving tasks got from the socket, in completion order.
#[derive(Default)]
struct StreamLog {
    bytes: Vec<u8>,
    eof: bool,
    /// Receives forgotten while in flight (each may take bytes with it).
    forgotten: usize,
    /// `RecvStream`s that ran multishot (on the simulated buffer ring).
    multishot_streams: usize,
    errors: Vec<io::Error>,
}

impl StreamLog {
    fn record(&mut self, r: io::Result<usize>, buf: &[u8]) {
        match r {
            Ok(0) => self.eof = true,
            Ok(n) => {
                assert!(!self.eof, "{n} bytes received after end of file");
                self.bytes.extend_from_slice(&buf[..n]);
            }
            Err(e) => self.errors.push(e),
        }
    }
}

/// The `i`-th byte written into the peer: numbered, so a lost, duplicated or
/// reordered stretch shows.
fn peer_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// A task's receive of up to `len` bytes, meeting `fate`.
async fn receive(
    stream: Arc<UnixStream>,
    fate: RecvFate,
    len: usize,
    log: Arc<Mutex<StreamLog>>,
    forget: bool,
) {
    match fate {
        RecvFate::Await => {
            let (r, buf) = stream.recv(Vec::with_capacity(len)).await;
            log.lock().unwrap().record(r, &buf);
        }
        RecvFate::StreamOnce => {
            let mut rs = stream.recv_stream();
            let mut out = Vec::new();
            let r = rs.next_into(&mut out).await;
            let mut log = log.lock().unwrap();
            log.multishot_streams += usize::from(rs.is_multishot());
            log.record(r, &out);
            drop(log);
            // Dropped with what else it received: the socket keeps it.
            drop(rs);
        }
        RecvFate::ZeroTimeout => {
            if let Ok((r, buf)) =
                spargio::time::timeout(Duration::ZERO, stream.recv(Vec::with_capacity(len))).await
            {
                log.lock().unwrap().record(r, &buf);
            }
        }
        RecvFate::PollOnceDrop | RecvFate::PollOnceForget => {
            let mut recv = Box::pin(stream.recv(Vec::with_capacity(len)));
            match recv.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready((r, buf)) => log.lock().unwrap().record(r, &buf),
                Poll::Pending if fate == RecvFate::PollOnceForget && forget => {
                    log.lock().unwrap().forgotten += 1;
                    std::mem::forget(recv);
                }
                Poll::Pending => drop(recv),
            }
        }
    }
}

/// Checks that `got` is `sent` in order, with gaps only where forgotten
/// receives took bytes: at most `forgotten` receives' worth (one receive's
/// length each, neighbours merging into one gap).
fn check_stream(got: &[u8], sent: &[u8], forgotten: usize) {
    let max = usize::from(MAX_RECV);
    let (mut i, mut j, mut taken) = (0, 0, 0);
    while i < got.len() {
        if j < sent.len() && got[i] == sent[j] {
            i += 1;
            j += 1;
            continue;
        }
        let left = (forgotten - taken) * max;
        let skip = (1..=left).find(|&k| j + k < sent.len() && sent[j + k] == got[i]);
        let Some(k) = skip else {
            panic!(
                "stream bytes lost, duplicated or reordered at byte {i} of {} received ({} sent, {forgotten} forgotten receives)",
                got.len(),
                sent.len()
            )
        };
        j += k;
        taken += k.div_ceil(max);
    }
    let tail = sent.len() - j;
    assert!(
        tail <= (forgotten - taken) * max,
        "the last {tail} bytes sent were never received ({forgotten} forgotten receives)"
    );
}

/// What one [`run`] did with the socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Bytes the peer was given.
    pub sent: usize,
    /// Bytes the receiving tasks got before the final drain.
    pub received_by_tasks: usize,
    /// Bytes the final drain read (the stash first, then the socket).
    pub drained: usize,
    /// Receives forgotten in flight.
    pub forgotten: usize,
    /// `RecvStream`s that ran multishot.
    pub multishot_streams: usize,
}

/// A future the caller's `wait` runs to completion from outside the runtime.
pub type Waited = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one input; panics when an invariant breaks. `wait` runs a future to
/// completion from outside the runtime (with the caller's hang deadline).
/// Without `forget`, the actions that `mem::forget` a handle or a future drop
/// it instead (under LeakSanitizer, as in the fuzz target, a forgotten value
/// is a reported leak).
pub fn run(input: &[u8], wait: &dyn Fn(&str, Waited), forget: bool) -> StreamSummary {
    let faults = faults_from_bytes(input);
    let actions: Vec<Action> = input
        .get(FAULT_BYTES..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .take(MAX_ACTIONS)
        .map(|c| Action::decode([c[0], c[1]]))
        .map(|a| match a {
            Action::Forget(n) if !forget => Action::Drop(n),
            Action::Spawn {
                shard,
                body: Body::PollOnceForget,
            } if !forget => Action::Spawn {
                shard,
                body: Body::PollOnceDrop,
            },
            a => a,
        })
        .collect();
    let kernel = SimKernel::new();
    let rt: Runtime = RuntimeBuilder::new()
        .shards(SHARDS)
        .thread_name_prefix("t-lifecycle")
        .backend(Backend::IoUring)
        .fallback_to_queue(false)
        .simulated_kernel(kernel.clone())
        .build()
        .expect("a runtime on the simulated kernel");
    let handle = rt.handle().clone();
    let (sock, peer) = kernel.socket_pair().expect("a simulated socket pair");
    let stream = UnixStream::from_std(std::os::unix::net::UnixStream::from(sock))
        .expect("a stream over the simulated socket")
        .bind_to_shard(&handle, 0)
        .expect("shard 0");
    let stream = Arc::new(stream);
    let mut peer = Some(peer);
    let mut peer_sent: Vec<u8> = Vec::new();
    let log = Arc::new(Mutex::new(StreamLog::default()));
    let mut reader: Option<JoinHandle<()>> = None;
    let wait_task = |what: &str, h: JoinHandle<()>| {
        wait(
            what,
            Box::pin(async move {
                let _ = h.await;
            }),
        );
    };
    kernel.set_faults(faults.clone());
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut spawned = 0usize;
    let mut tasks: Vec<Task> = Vec::new();
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut collectors = Vec::new();
    for shard in 0..SHARDS {
        let received = received.clone();
        collectors.push(
            handle
                .spawn_pinned(shard, collect(received))
                .expect("a collector"),
        );
    }
    let mut sent: Vec<(usize, u32)> = Vec::new();
    let mut shut_down = false;
    let pick = |tasks: &Vec<Task>, n: u8| (!tasks.is_empty()).then(|| usize::from(n) % tasks.len());
    for action in actions {
        match action {
            Action::Spawn { shard, body: what } => {
                let guard = Guard(dropped.clone());
                let fut = body(what, guard);
                let r = match shard {
                    Some(s) => handle.spawn_pinned(s, fut),
                    None => handle.spawn_stealable(fut),
                };
                match r {
                    Ok(h) => {
                        assert!(!shut_down, "a spawn after shutdown was accepted");
                        spawned += 1;
                        tasks.push(Task {
                            handle: h,
                            aborted: false,
                            never: what == Body::Never,
                        });
                    }
                    // The refused future (and its guard) is dropped, not run.
                    Err(e) => {
                        assert!(shut_down, "spawn refused before shutdown: {e}");
                        spawned += 1;
                    }
                }
            }
            Action::Abort(n) => {
                if let Some(i) = pick(&tasks, n) {
                    tasks[i].handle.abort();
                    tasks[i].aborted = true;
                }
            }
            Action::Drop(n) => {
                if let Some(i) = pick(&tasks, n) {
                    drop(tasks.swap_remove(i));
                }
            }
            Action::Forget(n) => {
                if let Some(i) = pick(&tasks, n) {
                    std::mem::forget(tasks.swap_remove(i).handle);
                }
            }
            Action::Await(n) => {
                let Some(i) = pick(&tasks, n) else { continue };
                let mut task = tasks.swap_remove(i);
                // A task that never finishes is aborted first, or the wait would hang.
                if task.never && !task.aborted && !shut_down {
                    task.handle.abort();
                    task.aborted = true;
                }
                let aborted = task.aborted;
                let h = task.handle;
                let sd = shut_down;
                wait(
                    "await a task",
                    Box::pin(async move {
                        match h.await {
                            Ok(()) => {}
                            Err(e) => assert!(
                                e.is_cancelled() && (aborted || sd),
                                "a task that was neither aborted nor shut down failed: {e}"
                            ),
                        }
                    }),
                );
            }
            Action::Send(shard) => {
                let val = sent.len() as u32;
                let remote = handle.remote(shard).expect("a shard of this runtime");
                match remote.send_raw_nowait(1, val) {
                    Ok(()) => {
                        assert!(!shut_down, "a send after shutdown was accepted");
                        sent.push((shard, val));
                    }
                    Err(e) => assert!(
                        shut_down || matches!(e, spargio::SendError::Backpressure),
                        "send refused before shutdown: {e:?}"
                    ),
                }
            }
            Action::Shutdown => {
                handle.shutdown();
                shut_down = true;
            }
            Action::PeerWrite(n) => {
                let Some(p) = &peer else { continue };
                let start = peer_sent.len();
                let data: Vec<u8> = (start..start + usize::from(n)).map(peer_byte).collect();
                match kernel.stream_write(p, &data) {
                    Ok(k) => peer_sent.extend_from_slice(&data[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("writing into the peer: {e}"),
                }
            }
            Action::PeerClose => {
                if let Some(p) = peer.take() {
                    kernel.close(p);
                }
            }
            Action::AbortReader => {
                if let Some(r) = reader.take() {
                    r.abort();
                    wait_task("an aborted reader ends", r);
                }
            }
            Action::Recv { fate, len } => {
                // One receiving task at a time: a stream has one reader. A
                // reader waiting while bytes it must get exist (in the socket
                // or the stash of dropped receives) is waited for.
                if reader.as_ref().is_some_and(|r| !r.is_finished()) {
                    let log = log.lock().unwrap();
                    let unseen = peer_sent.len() > log.bytes.len() + log.forgotten * usize::from(MAX_RECV);
                    drop(log);
                    if !unseen || shut_down {
                        continue;
                    }
                }
                if let Some(r) = reader.take() {
                    wait_task("a finished reader", r);
                }
                let fut = receive(stream.clone(), fate, usize::from(len), log.clone(), forget);
                match handle.spawn_stealable(fut) {
                    Ok(h) if matches!(fate, RecvFate::Await | RecvFate::StreamOnce) => reader = Some(h),
                    Ok(h) => wait_task("a receiving task", h),
                    Err(e) => assert!(shut_down, "spawn refused before shutdown: {e}"),
                }
            }
        }
    }
    let mut summary = StreamSummary {
        received_by_tasks: log.lock().unwrap().bytes.len(),
        ..StreamSummary::default()
    };
    if !shut_down {
        // The peer closes; what the tasks got, plus what a final drain reads
        // (the stash of dropped receives first), is what the peer was given.
        if let Some(p) = peer.take() {
            kernel.close(p);
        }
        if let Some(r) = reader.take() {
            wait_task("the reader ends at the latest at end of file", r);
        }
        let mut rounds = 0;
        while !log.lock().unwrap().eof {
            let fut = receive(stream.clone(), RecvFate::Await, 64, log.clone(), forget);
            let h = handle.spawn_stealable(fut).expect("a draining receive");
            wait_task("a draining receive", h);
            rounds += 1;
            assert!(rounds < 1024, "the socket never reaches end of file");
        }
        let log = log.lock().unwrap();
        // An injected `-EAGAIN` (which Linux does not return for a blocking
        // socket) reaches the caller as `WouldBlock`, taking no bytes.
        let eagain = faults.eagain_every.is_some();
        let unexpected: Vec<&io::Error> = log
            .errors
            .iter()
            .filter(|e| !(eagain && e.kind() == io::ErrorKind::WouldBlock))
            .collect();
        assert!(unexpected.is_empty(), "receives failed: {unexpected:?}");
        check_stream(&log.bytes, &peer_sent, log.forgotten);
        summary.drained = log.bytes.len() - summary.received_by_tasks;
    }
    summary.sent = peer_sent.len();
    summary.forgotten = log.lock().unwrap().forgotten;
    summary.multishot_streams = log.lock().unwrap().multishot_streams;
    if let Some(r) = reader.take() {
        r.abort();
    }
    if !shut_down {
        // Every message a shard accepted arrives there exactly once.
        for shard in 0..SHARDS {
            let n = sent.iter().filter(|(s, _)| *s == shard).count() as u32;
            let remote = handle.remote(shard).expect("a shard");
            wait(
                "tell a collector how many messages to expect",
                Box::pin(async move {
                    remote.send_raw(CHECK_TAG, n).await.expect("the check message");
                }),
            );
        }
        for c in collectors.drain(..) {
            wait(
                "a collector receives every message sent to its shard",
                Box::pin(async move {
                    c.await.expect("the collector finishes");
                }),
            );
        }
        let mut got = received.lock().unwrap().clone();
        got.sort_unstable_by_key(|&(_, v)| v);
        assert_eq!(got, sent, "messages lost, duplicated or misdelivered");
        // The tasks still held finish (those that never end are aborted).
        for task in tasks.drain(..) {
            if !task.handle.is_finished() {
                task.handle.abort();
            }
            let h = task.handle;
            wait(
                "a remaining task ends",
                Box::pin(async move {
                    let _ = h.await;
                }),
            );
        }
    }
    drop(tasks);
    drop(collectors);
    rt.shutdown();
    drop(stream);
    drop(peer);
    if log.lock().unwrap().forgotten == 0 {
        assert_eq!(
            kernel.open_streams(),
            0,
            "a simulated fd is still open after the shutdown"
        );
    }
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        spawned,
        "every task's future is dropped once: done or cancelled"
    );
    summary
}
