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
//! mid-sequence.
//!
//! Invariants:
//! - every task is done or cancelled: its future is dropped exactly once by
//!   the time the runtime has shut down (drop guards), and an awaited handle
//!   gives `Ok`, or `Cancelled` only for a task that was aborted or that the
//!   shutdown cancelled;
//! - spawns after shutdown are refused;
//! - no message is lost: without a shutdown, every message a shard accepted
//!   is received there exactly once (a collector task per shard);
//! - shutdown finishes (the test's hang deadline fails it otherwise).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

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
}

impl Action {
    /// Decodes one action from two bytes.
    pub fn decode(b: [u8; 2]) -> Action {
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

/// A future the caller's `wait` runs to completion from outside the runtime.
pub type Waited = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one input; panics when an invariant breaks. `wait` runs a future to
/// completion from outside the runtime (with the caller's hang deadline).
/// Without `forget`, the actions that `mem::forget` a handle or a future drop
/// it instead (under LeakSanitizer, as in the fuzz target, a forgotten value
/// is a reported leak).
pub fn run(input: &[u8], wait: &dyn Fn(&str, Waited), forget: bool) {
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
    kernel.set_faults(faults);
    let handle = rt.handle().clone();
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
        }
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
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        spawned,
        "every task's future is dropped once: done or cancelled"
    );
}
