//! Integration tests of cross-shard messaging: tickets, fire-and-forget sends,
//! batches and flushes, typed messages, per-(sender, target) FIFO and
//! exactly-once delivery under backpressure, senders outside the runtime, and
//! delivery under faults injected by the simulated kernel.
#![forbid(unsafe_code)]

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{Gate, Kernel, build, builder, join, recv, scaled, shard_id, wait, yield_now};
use spargio::sys::sim::Faults;
use spargio::{Event, RemoteShard, RingMsg, RuntimeBuilder, RuntimeHandle, SendError, ShardCtx};

each_kernel!(
    send_raw_ticket_resolves_and_delivers,
    nowait_batches_and_flush,
    long_bursts_arrive_whole_and_in_order,
    typed_messages_round_trip,
    fifo_exactly_once_under_backpressure,
    backpressure_is_per_sender_and_recovers,
    outside_senders_use_index_shard_count,
    try_next_event_takes_delivered_messages,
    shard_ctx_on_the_wrong_thread_panics,
);

/// Awaits the next raw message on the current shard.
async fn next_msg(ctx: &ShardCtx) -> (usize, u16, u32) {
    match ctx.next_event().await {
        Event::RingMsg { from, tag, val } => (from, tag, val),
        other => panic!("unexpected event {other:?}"),
    }
}

/// Sends `(tag, val)` without waiting (with a ticket if `ticket`), yielding
/// while the target pushes back; `refused` runs on each refusal.
async fn send_retrying(to: &RemoteShard, tag: u16, val: u32, ticket: bool, refused: &mut impl FnMut()) {
    loop {
        let r = if ticket {
            to.send_raw(tag, val).await
        } else {
            to.send_raw_nowait(tag, val)
        };
        match r {
            Ok(()) => return,
            Err(SendError::Backpressure) => {
                refused();
                yield_now().await;
            }
            Err(e) => panic!("send ({tag}, {val}) failed: {e}"),
        }
    }
}

/// Sends `val` and, if the target has room, `val + 1`, each with a ticket,
/// and awaits both tickets together. Returns how many were sent (1 or 2).
async fn send_ticket_pair(to: &RemoteShard, tag: u16, val: u32, refused: &mut impl FnMut()) -> u32 {
    // A ticket that is already resolved (the Queue backend delivers at once)
    // yields its result on that first poll: `None` then, nothing left to await.
    let first = loop {
        let mut ticket = Box::pin(to.send_raw(tag, val));
        match common::poll_once(ticket.as_mut()) {
            Some(Err(SendError::Backpressure)) => {
                refused();
                yield_now().await;
            }
            Some(Err(e)) => panic!("send ({tag}, {val}) failed: {e}"),
            Some(Ok(())) => break None,
            None => break Some(ticket),
        }
    };
    let mut second = Box::pin(to.send_raw(tag, val + 1));
    let second = match common::poll_once(second.as_mut()) {
        Some(Err(SendError::Backpressure)) => None,
        Some(Err(e)) => panic!("send ({tag}, {}) failed: {e}", val + 1),
        Some(Ok(())) => Some(None),
        None => Some(Some(second)),
    };
    if let Some(first) = first {
        assert_eq!(first.await, Ok(()));
    }
    match second {
        None => 1,
        Some(pending) => {
            if let Some(ticket) = pending {
                assert_eq!(ticket.await, Ok(()));
            }
            2
        }
    }
}

/// As [`send_retrying`], for a thread outside the runtime.
fn send_retrying_blocking(to: &RemoteShard, tag: u16, val: u32, refused: &mut impl FnMut()) {
    loop {
        match to.send_raw_nowait(tag, val) {
            Ok(()) => return,
            Err(SendError::Backpressure) => {
                refused();
                // A backoff, not a wait for a condition: the next try decides.
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => panic!("send ({tag}, {val}) failed: {e}"),
        }
    }
}

fn send_raw_ticket_resolves_and_delivers(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let receiver = h
        .spawn_pinned(1, async {
            let ctx = ShardCtx::current().unwrap();
            let a = next_msg(&ctx).await;
            let b = next_msg(&ctx).await;
            (a, b)
        })
        .unwrap();
    let inner = h.clone();
    let sender = h
        .spawn_pinned(0, async move {
            let to = inner.remote(1).unwrap();
            assert_eq!(to.shard(), 1);
            to.send_raw(11, 0xdead_beef).await
        })
        .unwrap();
    assert_eq!(join("ticket sender", sender), Ok(()));
    // From outside the runtime: the ticket resolves too.
    let outside = h.remote(1).unwrap();
    assert_eq!(wait("outside ticket", outside.send_raw(12, 5)), Ok(()));
    let (a, b) = join("receiver", receiver);
    assert_eq!(a, (0, 11, 0xdead_beef));
    assert_eq!(b, (2, 12, 5));
}

fn nowait_batches_and_flush(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    const N: u32 = 300;
    let receiver = h
        .spawn_pinned(1, async {
            let ctx = ShardCtx::current().unwrap();
            let mut got = Vec::new();
            for _ in 0..N + 1 {
                got.push(next_msg(&ctx).await);
            }
            got
        })
        .unwrap();
    let inner = h.clone();
    let sender = h
        .spawn_pinned(0, async move {
            let to = inner.remote(1).unwrap();
            let sent = to.send_many_raw_nowait((0..N).map(|i| (1, i))).unwrap();
            let flushed = to.flush().await;
            to.send_raw_nowait(2, 99).unwrap();
            (sent, flushed)
        })
        .unwrap();
    assert_eq!(join("sender", sender), (N as usize, Ok(())));
    let got = join("receiver", receiver);
    let want: Vec<_> = (0..N).map(|i| (0, 1, i)).chain([(0, 2, 99)]).collect();
    assert_eq!(got, want);
    // A flush with nothing sent resolves at once, from anywhere.
    assert_eq!(wait("outside flush", h.remote(0).unwrap().flush()), Ok(()));
}

/// Bursts of thousands of nowait sends in one poll: each arrives whole and in
/// order, and on io_uring a burst leaves in several batches before the poll
/// ends (the target starts on it while the sender is still sending).
fn long_bursts_arrive_whole_and_in_order(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    const ROUNDS: u32 = 20;
    const BURST: u32 = 3000; // within the default 4096 credit
    let receiver = h
        .spawn_pinned(1, async {
            let ctx = ShardCtx::current().unwrap();
            let back = ctx.remote(0).unwrap();
            for round in 0..ROUNDS {
                for i in 0..BURST {
                    assert_eq!(next_msg(&ctx).await, (0, 1, round * BURST + i));
                }
                back.send_raw_nowait(2, round).unwrap();
            }
        })
        .unwrap();
    let inner = h.clone();
    let sender = h
        .spawn_pinned(0, async move {
            let ctx = ShardCtx::current().unwrap();
            let to = inner.remote(1).unwrap();
            for round in 0..ROUNDS {
                let burst = (0..BURST).map(|i| (1, round * BURST + i));
                assert_eq!(to.send_many_raw_nowait(burst), Ok(BURST as usize));
                assert_eq!(to.flush().await, Ok(()));
                assert_eq!(next_msg(&ctx).await, (1, 2, round));
            }
        })
        .unwrap();
    join("sender", sender);
    join("receiver", receiver);
    let batches = h.stats_snapshot().shards[0].msg_batches;
    if kernel == Kernel::Queue {
        assert_eq!(batches, 0, "the Queue backend sends one message at a time");
    } else {
        // One batch per burst if bursts waited for the end of the poll.
        assert!(
            batches >= 2 * u64::from(ROUNDS),
            "{batches} batches for {ROUNDS} bursts"
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Ping(u32),
    Add(u32),
    Stop,
}

impl RingMsg for Cmd {
    fn encode(&self) -> (u16, u32) {
        match *self {
            Cmd::Ping(n) => (1, n),
            Cmd::Add(n) => (2, n),
            Cmd::Stop => (3, 0),
        }
    }

    fn decode(tag: u16, val: u32) -> Option<Self> {
        match tag {
            1 => Some(Cmd::Ping(val)),
            2 => Some(Cmd::Add(val)),
            3 => Some(Cmd::Stop),
            _ => None,
        }
    }
}

fn typed_messages_round_trip(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    // A server on shard 1: sums `Add`s, answers `Ping(n)` with `Ping(n + sum)`.
    let server = h
        .spawn_pinned(1, async {
            let ctx = ShardCtx::current().unwrap();
            let mut sum = 0;
            let mut unknown = 0;
            loop {
                let (from, tag, val) = next_msg(&ctx).await;
                match Cmd::decode(tag, val) {
                    Some(Cmd::Add(n)) => sum += n,
                    Some(Cmd::Ping(n)) => ctx
                        .remote(from)
                        .unwrap()
                        .send_msg(&Cmd::Ping(n + sum))
                        .await
                        .unwrap(),
                    Some(Cmd::Stop) => return (sum, unknown),
                    None => unknown += 1,
                }
            }
        })
        .unwrap();
    let inner = h.clone();
    let client = h
        .spawn_pinned(0, async move {
            let ctx = ShardCtx::current().unwrap();
            let server = inner.remote(1).unwrap();
            for n in 1..=10 {
                server.send_msg_nowait(&Cmd::Add(n)).unwrap();
            }
            server.send_raw_nowait(77, 1).unwrap(); // Not a `Cmd`.
            server.send_msg(&Cmd::Ping(1000)).await.unwrap();
            let (from, tag, val) = next_msg(&ctx).await;
            server.send_msg_nowait(&Cmd::Stop).unwrap();
            (from, Cmd::decode(tag, val))
        })
        .unwrap();
    assert_eq!(join("client", client), (1, Some(Cmd::Ping(1055))));
    assert_eq!(join("server", server), (55, 1));
}

/// Receives `senders × per_sender` messages and checks that each sender's
/// arrive exactly once and in order (`tag` = sender, `val` = sequence number).
async fn check_fifo_exactly_once(senders: usize, per_sender: u32, expect_from: Vec<usize>) -> usize {
    let ctx = ShardCtx::current().unwrap();
    let mut next = vec![0u32; senders];
    let total = senders * per_sender as usize;
    for _ in 0..total {
        let (from, tag, val) = next_msg(&ctx).await;
        let s = usize::from(tag);
        assert!(s < senders, "unknown sender tag {tag}");
        assert_eq!(from, expect_from[s], "sender {s} arrived with the wrong `from`");
        assert_eq!(
            val, next[s],
            "sender {s}: out of order, lost or duplicated message"
        );
        next[s] += 1;
    }
    assert!(ctx.try_next_event().is_none(), "more messages than were sent");
    total
}

/// Senders 0..3 are tasks on shards 1, 2 and 0 (itself, the receiver's shard);
/// sender 3 is a thread outside the runtime. All send to the receiver on shard 0.
fn fifo_run(b: RuntimeBuilder, kernel: Kernel, per_sender: u32, self_send: bool) -> RuntimeHandle {
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let senders: usize = if self_send { 4 } else { 3 };
    let outside = senders - 1;
    let mut from = vec![1, 2, 0];
    from.truncate(senders - 1);
    from.push(3);
    // The receiver waits until every sender has been pushed back at least once.
    let (pushed_back, gate) = (Arc::new(AtomicUsize::new(0)), Gate::new());
    // Calls `note` on the first of many refusals.
    let once = |note: Arc<dyn Fn() + Send + Sync>| {
        let mut first = true;
        move || {
            if std::mem::take(&mut first) {
                note();
            }
        }
    };
    let note: Arc<dyn Fn() + Send + Sync> = {
        let (pushed_back, gate) = (pushed_back.clone(), gate.clone());
        Arc::new(move || {
            if pushed_back.fetch_add(1, Ordering::SeqCst) + 1 == senders {
                gate.open();
            }
        })
    };
    let g = gate.clone();
    let receiver = h
        .spawn_pinned(0, async move {
            g.wait().await;
            check_fifo_exactly_once(senders, per_sender, from).await
        })
        .unwrap();
    let mut tasks = Vec::new();
    for (tag, shard) in [1usize, 2, 0].into_iter().take(senders - 1).enumerate() {
        let (inner, mut refused) = (h.clone(), once(note.clone()));
        tasks.push(
            h.spawn_pinned(shard, async move {
                let to = inner.remote(0).unwrap();
                let mut i = 0;
                while i < per_sender {
                    if i % 64 == 0 && i + 1 < per_sender {
                        // Two tickets outstanding at once: their sender-side
                        // completions share a submission (and may be reordered).
                        i += send_ticket_pair(&to, tag as u16, i, &mut refused).await;
                    } else {
                        send_retrying(&to, tag as u16, i, false, &mut refused).await;
                        i += 1;
                    }
                }
                to.flush().await.unwrap();
            })
            .unwrap(),
        );
    }
    let to = h.remote(0).unwrap();
    let mut refused = once(note);
    let outside_thread = std::thread::spawn(move || {
        for i in 0..per_sender {
            send_retrying_blocking(&to, outside as u16, i, &mut refused);
        }
    });
    for t in tasks {
        join("sender task", t);
    }
    outside_thread.join().unwrap();
    assert_eq!(join("receiver", receiver), senders * per_sender as usize);
    let stats = h.stats_snapshot();
    let total = (senders * per_sender as usize) as u64;
    assert_eq!(stats.total(|s| s.msgs_sent), total);
    assert_eq!(stats.total(|s| s.msgs_received), total);
    assert_eq!(stats.total(|s| s.msg_send_failures), 0);
    drop(rt);
    h
}

fn fifo_exactly_once_under_backpressure(kernel: Kernel) {
    let Some(b) = builder(kernel, 3) else { return };
    // 4 senders: 1M messages optimised; unoptimised, a fifth of that (a third
    // on the slower simulated kernel).
    let per_sender = match kernel {
        Kernel::Sim => scaled(250_000, 60_000),
        _ => scaled(250_000, 125_000),
    } as u32;
    fifo_run(b.msg_queue_capacity(64), kernel, per_sender, true);
}

fn backpressure_is_per_sender_and_recovers(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b.msg_queue_capacity(8));
    let h = rt.handle().clone();
    let (take_tx, take_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let (taken_tx, taken_rx) = mpsc::channel();
    // The receiver takes messages only when told how many.
    let receiver = h
        .spawn_pinned(1, async move {
            let mut take_rx = take_rx;
            let ctx = ShardCtx::current().unwrap();
            let mut got = Vec::new();
            while let Some(n) = take_rx.recv().await {
                for _ in 0..n {
                    got.push(next_msg(&ctx).await);
                }
                taken_tx.send(()).unwrap();
            }
            got
        })
        .unwrap();
    let inner = h.clone();
    let (go_tx, mut go_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (result_tx, result_rx) = mpsc::channel();
    // A sender on shard 0 fills its credit, is refused, and reports.
    let shard_sender = h
        .spawn_pinned(0, async move {
            let to = inner.remote(1).unwrap();
            for round in 0..2u32 {
                go_rx.recv().await.unwrap();
                let sent = to
                    .send_many_raw_nowait((0..20).map(|i| (0, round * 100 + i)))
                    .unwrap();
                let refused = to.send_raw_nowait(0, 999);
                let ticket = to.send_raw(0, 999).await;
                let many = to.send_many_raw_nowait([(0, 999)]);
                result_tx.send((sent, refused, ticket, many)).unwrap();
            }
        })
        .unwrap();
    go_tx.send(()).unwrap();
    let bp = Err(SendError::Backpressure);
    let refused_all = (8, bp, bp, Err(SendError::Backpressure));
    assert_eq!(recv("shard sender", &result_rx), refused_all);
    // The outside sender has its own credit at shard 1.
    let outside = h.remote(1).unwrap();
    for i in 0..8 {
        outside.send_raw_nowait(1, i).unwrap();
    }
    assert_eq!(outside.send_raw_nowait(1, 8), bp);
    assert_eq!(wait("refused outside ticket", outside.send_raw(1, 8)), bp);
    // Shard 0 to itself is yet another credit.
    let self_send = h.spawn_pinned(0, {
        let h = h.clone();
        async move { h.remote(0).unwrap().send_raw_nowait(5, 5) }
    });
    assert_eq!(join("self send", self_send.unwrap()), Ok(()));
    // The receiver takes all 16: both senders may send again.
    take_tx.send(16).unwrap();
    recv("receiver took 16", &taken_rx);
    for i in 8..16 {
        outside.send_raw_nowait(1, i).unwrap();
    }
    assert_eq!(outside.send_raw_nowait(1, 16), bp);
    go_tx.send(()).unwrap();
    assert_eq!(recv("shard sender", &result_rx), refused_all);
    take_tx.send(16).unwrap();
    recv("receiver took 16 more", &taken_rx);
    drop(take_tx);
    join("shard sender", shard_sender);
    let got = join("receiver", receiver);
    // Refused messages never arrive; accepted ones arrive once, in order per sender.
    let from0: Vec<u32> = got.iter().filter(|m| m.0 == 0).map(|m| m.2).collect();
    let outside_got: Vec<u32> = got.iter().filter(|m| m.0 == 2).map(|m| m.2).collect();
    assert_eq!(from0, (0..8).chain(100..108).collect::<Vec<_>>());
    assert_eq!(outside_got, (0..16).collect::<Vec<_>>());
}

fn outside_senders_use_index_shard_count(kernel: Kernel) {
    let Some(b) = builder(kernel, 3) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let receiver = h
        .spawn_pinned(2, async {
            let ctx = ShardCtx::current().unwrap();
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(next_msg(&ctx).await);
            }
            got.sort_unstable();
            got
        })
        .unwrap();
    // From the test thread, another plain thread and a Tokio worker.
    h.remote(2).unwrap().send_raw_nowait(1, 10).unwrap();
    let to = h.remote(2).unwrap();
    std::thread::spawn(move || to.send_raw_nowait(2, 20).unwrap())
        .join()
        .unwrap();
    let to = h.remote(2).unwrap();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    tokio_rt
        .block_on(async move {
            tokio::spawn(async move { to.send_raw(3, 30).await })
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(join("receiver", receiver), [(3, 1, 10), (3, 2, 20), (3, 3, 30)]);
}

fn try_next_event_takes_delivered_messages(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b.msg_queue_capacity(4));
    let h = rt.handle().clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let gate = Gate::new();
    let g = gate.clone();
    let receiver = h
        .spawn_pinned(1, async move {
            let ctx = ShardCtx::current().unwrap();
            assert_eq!(ctx.try_next_event(), None, "nothing was sent yet");
            ready_tx.send(()).unwrap();
            g.wait().await;
            let mut got = Vec::new();
            while got.len() < 4 {
                // Messages reach the queue when the shard reaps them: poll for them.
                match ctx.try_next_event() {
                    Some(Event::RingMsg { val, .. }) => got.push(val),
                    Some(other) => panic!("{other:?}"),
                    None => yield_now().await,
                }
            }
            got
        })
        .unwrap();
    recv("receiver ready", &ready_rx);
    let to = h.remote(1).unwrap();
    for i in 0..4 {
        to.send_raw_nowait(0, i).unwrap();
    }
    assert_eq!(to.send_raw_nowait(0, 4), Err(SendError::Backpressure));
    gate.open();
    assert_eq!(join("receiver", receiver), [0, 1, 2, 3]);
    // `try_next_event` released the credit of each message it took.
    for i in 4..8 {
        to.send_raw_nowait(0, i).unwrap();
    }
}

fn shard_ctx_on_the_wrong_thread_panics(kernel: Kernel) {
    let Some(b) = builder(kernel, 2) else { return };
    let rt = build(kernel, b);
    let h = rt.handle().clone();
    let ctx0 = join(
        "ctx",
        h.spawn_pinned(0, async { ShardCtx::current().unwrap() }).unwrap(),
    );
    assert_eq!(ctx0.shard_id(), 0);
    let c = ctx0.clone();
    let e = wait(
        "next_event on shard 1",
        h.spawn_pinned(1, async move { c.next_event().await }).unwrap(),
    )
    .unwrap_err();
    assert!(
        e.panic_message()
            .is_some_and(|m| m.contains("other than its shard")),
        "{e:?}"
    );
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| ctx0.try_next_event()));
    assert!(r.is_err(), "try_next_event outside the runtime must panic");
    // Shard 1 survived the panic and shard 0's events are untouched.
    assert_eq!(join("after", h.spawn_pinned(1, async { shard_id() }).unwrap()), 1);
}

// ---------------------------------------------------------------------------
// Faults injected by the simulated kernel
// ---------------------------------------------------------------------------

#[test]
fn sim_faults_fifo_exactly_once_through_overflow_eintr_delay_and_reorder() {
    let faults = Faults {
        seed: 0x5eed,
        enter_eintr_every: Some(5),
        overflow_every: Some(7),
        delay_cqes: 3,
        reorder: true,
        ..Faults::default()
    };
    let (b, kernel) = common::sim_builder_with_faults(3, faults);
    // A small ring: the CQ (16 entries) really overflows under the flood too.
    let per_sender = scaled(100_000, 20_000) as u32;
    fifo_run(
        b.ring_entries(8).msg_queue_capacity(256),
        Kernel::Sim,
        per_sender,
        false,
    );
    let injected = kernel.injected();
    eprintln!("injected: {injected:?}");
    assert!(injected.eintr > 0, "{injected:?}");
    assert!(injected.overflowed > 0, "{injected:?}");
    assert!(injected.delayed_cqes > 0, "{injected:?}");
    assert!(injected.reordered_batches > 0, "{injected:?}");
}

/// Shard 0 sends `n` messages to `target` in chunks of a hundred per poll,
/// every other one with a ticket, while the sim shuffles each submission's
/// completions; the messages must arrive in order.
fn messages_stay_in_order_under_reorder(target: usize) {
    let (b, kernel) = common::sim_builder_with_faults(
        2,
        Faults {
            seed: 7,
            reorder: true,
            ..Faults::default()
        },
    );
    let rt = build(Kernel::Sim, b);
    let h = rt.handle().clone();
    let n = 2_000u32;
    let receiver = h
        .spawn_pinned(target, async move {
            let ctx = ShardCtx::current().unwrap();
            let mut got = Vec::new();
            while got.len() < n as usize {
                got.push(next_msg(&ctx).await.2);
            }
            got
        })
        .unwrap();
    let sender = h
        .spawn_pinned(0, async move {
            let to = ShardCtx::current().unwrap().remote(target).unwrap();
            for chunk in 0..n / 100 {
                // A hundred messages in one poll: one submission batch. Half
                // carry tickets, whose sender-side completions the sim may
                // shuffle; the messages themselves must stay in order.
                let mut tickets = Vec::new();
                for i in 0..100 {
                    // Distinct tags: distinct `user_data`, so the sim can tell a reorder.
                    if i % 2 == 0 {
                        tickets.push(to.send_raw(i as u16, chunk * 100 + i));
                    } else {
                        to.send_raw_nowait(i as u16, chunk * 100 + i).unwrap();
                    }
                }
                for t in tickets {
                    t.await.unwrap();
                }
            }
        })
        .unwrap();
    join("sender", sender);
    let got = join("receiver", receiver);
    if let Some(at) = got.iter().zip(0..).position(|(&g, want)| g != want) {
        panic!(
            "messages to shard {target} arrived out of order: at {at}, {:?}",
            &got[at..(at + 8).min(got.len())]
        );
    }
    if target != 0 {
        // Messages to itself never enter the ring; to another shard they do.
        assert!(kernel.injected().reordered_batches > 0);
    }
}

#[test]
fn sim_faults_self_messages_stay_in_order_under_reorder() {
    messages_stay_in_order_under_reorder(0);
}

/// Bursts longer than a mid-poll hand-over, mixed with tickets and lone
/// messages, through EINTR, CQ overflow, delayed and reordered completions:
/// every message arrives once, in order.
#[test]
fn sim_faults_long_bursts_with_tickets_stay_in_order() {
    let faults = Faults {
        seed: 0xb0a7,
        enter_eintr_every: Some(5),
        overflow_every: Some(7),
        delay_cqes: 3,
        reorder: true,
        ..Faults::default()
    };
    let (b, kernel) = common::sim_builder_with_faults(2, faults);
    let rt = build(Kernel::Sim, b.ring_entries(8));
    let h = rt.handle().clone();
    const ROUNDS: u32 = 30;
    const BURST: u32 = 700; // two mid-poll hand-overs and a remainder
    const PER_ROUND: u32 = BURST + 2;
    let receiver = h
        .spawn_pinned(1, async move {
            let ctx = ShardCtx::current().unwrap();
            let back = ctx.remote(0).unwrap();
            for round in 0..ROUNDS {
                for want in round * PER_ROUND..(round + 1) * PER_ROUND {
                    let (from, _, val) = next_msg(&ctx).await;
                    assert_eq!((from, val), (0, want), "message {want}");
                }
                back.send_raw_nowait(9, round).unwrap();
            }
        })
        .unwrap();
    let sender = h
        .spawn_pinned(0, async move {
            let ctx = ShardCtx::current().unwrap();
            let to = ctx.remote(1).unwrap();
            for round in 0..ROUNDS {
                let base = round * PER_ROUND;
                let burst = (0..BURST).map(|i| (1, base + i));
                assert_eq!(to.send_many_raw_nowait(burst), Ok(BURST as usize));
                let ticket = to.send_raw(2, base + BURST);
                to.send_raw_nowait(3, base + BURST + 1).unwrap();
                ticket.await.unwrap();
                // The receiver has caught up: the next round starts on an
                // idle pair, after this round's batches and lone messages.
                assert_eq!(next_msg(&ctx).await, (1, 9, round));
            }
        })
        .unwrap();
    join("sender", sender);
    join("receiver", receiver);
    let injected = kernel.injected();
    assert!(injected.eintr > 0 && injected.delayed_cqes > 0, "{injected:?}");
}

#[test]
fn sim_faults_cross_shard_messages_stay_in_order_under_reorder() {
    messages_stay_in_order_under_reorder(1);
}

#[test]
fn sim_faults_outside_sender_exactly_once_under_ebusy() {
    let (b, kernel) = common::sim_builder_with_faults(
        2,
        Faults {
            seed: 3,
            enter_ebusy_every: Some(3),
            ..Faults::default()
        },
    );
    let rt = build(Kernel::Sim, b);
    let h = rt.handle().clone();
    let n = 3_000u32;
    let receiver = h.spawn_pinned(0, check_fifo_exactly_once(1, n, vec![2])).unwrap();
    let to = h.remote(0).unwrap();
    let mut refused = 0;
    for i in 0..n {
        // A refused message is not delivered (the guarantee), so sending it
        // again is how a caller gets it through.
        let deadline = std::time::Instant::now() + common::HANG;
        loop {
            match to.send_raw_nowait(0, i) {
                Ok(()) => break,
                Err(e @ (SendError::Backpressure | SendError::Os(_))) => {
                    refused += 1;
                    assert!(
                        std::time::Instant::now() < deadline,
                        "message {i} refused for good: {e:?}"
                    );
                    std::thread::sleep(Duration::from_micros(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
        if receiver.is_finished() {
            break; // It failed: its error says why.
        }
    }
    assert!(kernel.injected().ebusy > 0);
    eprintln!("outside sender: {refused} refusals");
    assert_eq!(join("receiver", receiver), n as usize);
}

#[test]
fn sim_faults_message_from_a_busy_shard_survives_ebusy() {
    let (b, kernel) = common::sim_builder_with_faults(2, Faults::default());
    let rt = build(Kernel::Sim, b.spin_before_park(Duration::ZERO));
    let h = rt.handle().clone();
    let receiver = h
        .spawn_pinned(1, async {
            let ctx = ShardCtx::current().unwrap();
            next_msg(&ctx).await
        })
        .unwrap();
    common::until("shard 1 parks", || {
        let s = &h.stats_snapshot().shards[1];
        s.parks > s.wakeups
    });
    // See runtime_core's `sim_runtime_asleep`: only lets a failing test pass.
    std::thread::sleep(Duration::from_millis(50));
    let inner = h.clone();
    let k = kernel.clone();
    // Shard 0 stays busy (a task that keeps waking itself) after sending.
    let sender = h
        .spawn_pinned(0, async move {
            k.set_faults(Faults {
                enter_ebusy_every: Some(1),
                ..Faults::default()
            });
            inner.remote(1).unwrap().send_raw_nowait(4, 2).unwrap();
            // The message's submit happens when this poll returns.
            yield_now().await;
            let injected = k.injected();
            k.set_faults(Faults::default());
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !receiver.is_finished() && std::time::Instant::now() < deadline {
                yield_now().await;
            }
            (injected, receiver)
        })
        .unwrap();
    let (injected, receiver) = join("busy sender", sender);
    assert!(
        injected.ebusy >= 1,
        "the message's submit was meant to fail: {injected:?}"
    );
    assert!(
        receiver.is_finished(),
        "the message never reached parked shard 1 while shard 0 stayed busy"
    );
    assert_eq!(join("receiver", receiver), (0, 4, 2));
}
