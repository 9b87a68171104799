//! The task lifecycle of a runtime on the simulated kernel, with the kernel's
//! faults: tasks that sleep, yield, never end, poll a future once and drop or
//! forget it, or race a zero timeout; handles aborted, dropped, forgotten or
//! awaited; messages into shards; shutdown mid-sequence. The model and its
//! invariants are in `support/runtime_lifecycle.rs`.
//!
//! This needs threads (a runtime's shards), so it runs natively, not under
//! Miri; `spargio-sys`'s `tests/lifecycle.rs` is the op-table twin Miri runs.
#![forbid(unsafe_code)]

mod common;
#[path = "support/runtime_lifecycle.rs"]
mod model;

use model::{Action, Body, RecvFate};
use proptest::prelude::*;
use spargio::sys::check::lifecycle::FAULT_BYTES;

fn wait(what: &str, fut: model::Waited) {
    common::wait(what, fut);
}

fn run(input: &[u8]) {
    model::run(input, &wait, true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 48 } else { 256 }))]

    #[test]
    fn task_lifecycle_holds_its_invariants(
        faults in proptest::collection::vec(any::<u8>(), FAULT_BYTES),
        actions in proptest::collection::vec(any::<u8>(), 0..2 * model::MAX_ACTIONS),
    ) {
        let mut input = faults;
        input.extend(actions);
        run(&input);
    }
}

const NO_FAULTS: [u8; FAULT_BYTES] = [0; FAULT_BYTES];
const EVERY_FAULT: [u8; FAULT_BYTES] = [
    0x3f, 1, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x0f, 0x12, 0x34, 0x56,
];

/// Every kind of task and handle fate, with messages, then a shutdown with
/// tasks that never end still running: all are cancelled, none leaks.
#[test]
fn every_fate_then_shutdown() {
    for faults in [NO_FAULTS, EVERY_FAULT] {
        let mut actions = Vec::new();
        for round in 0..3u8 {
            for (i, body) in [
                Body::Sleep(round % 3),
                Body::Yield(round),
                Body::Never,
                Body::PollOnceDrop,
                Body::PollOnceForget,
                Body::ZeroTimeout,
            ]
            .into_iter()
            .enumerate()
            {
                let shard = [Some(0), Some(1), None][(i + usize::from(round)) % 3];
                actions.push(Action::Spawn { shard, body });
                actions.push(Action::Send(i % model::SHARDS));
            }
            actions.extend([
                Action::Abort(round),
                Action::Drop(round + 1),
                Action::Forget(round + 2),
                Action::Await(round + 3),
            ]);
        }
        actions.push(Action::Shutdown);
        actions.push(Action::Spawn {
            shard: None,
            body: Body::Sleep(0),
        });
        actions.push(Action::Await(0));
        run(&model::encode_input(faults, &actions));
    }
}

/// Without a shutdown, every message sent into a shard arrives there once,
/// under every fault the simulated kernel injects.
#[test]
fn messages_arrive_once_under_faults() {
    let mut actions = Vec::new();
    for i in 0..24 {
        actions.push(Action::Send(i % model::SHARDS));
        if i % 5 == 0 {
            actions.push(Action::Spawn {
                shard: Some(i % model::SHARDS),
                body: Body::ZeroTimeout,
            });
        }
    }
    run(&model::encode_input(EVERY_FAULT, &actions));
}

/// The actions of [`no_stream_byte_is_lost_across_cancelled_receives`].
fn stream_actions() -> Vec<Action> {
    let mut actions = Vec::new();
    for round in 0..12u8 {
        let fate = [
            RecvFate::PollOnceDrop,
            RecvFate::Await,
            RecvFate::ZeroTimeout,
            RecvFate::StreamOnce,
        ][usize::from(round % 4)];
        actions.extend([
            Action::Recv { fate, len: 3 + round },
            Action::PeerWrite(7 + round * 5),
            Action::Recv {
                fate: RecvFate::PollOnceDrop,
                len: 5,
            },
        ]);
        if round % 3 == 1 {
            actions.push(Action::AbortReader);
        }
        if round == 10 {
            actions.push(Action::PeerClose);
        }
    }
    actions
}

/// The `runtime_lifecycle` fuzz target's seeds (`fuzz/seeds/runtime_lifecycle/`).
/// Regenerate them with `SPARGIO_WRITE_SEEDS=1 cargo test --test runtime_lifecycle seed`.
#[test]
fn seed_corpus_matches_the_scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/runtime_lifecycle");
    let write = std::env::var_os("SPARGIO_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, faults) in [
        ("streams-no-faults", NO_FAULTS),
        ("streams-every-fault", EVERY_FAULT),
    ] {
        let input = model::encode_input(faults, &stream_actions());
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &input).unwrap();
        }
        let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            seed,
            input,
            "{} is out of date (SPARGIO_WRITE_SEEDS=1 rewrites it)",
            path.display()
        );
    }
}

/// No stream byte is lost, duplicated or reordered across receives that are
/// dropped after one poll, lose a zero timeout, or whose task is aborted, and
/// across `RecvStream`s dropped after their first chunk,
/// with and without the kernel's faults (the stash hands their bytes to the
/// next receive); the fds are all closed after the shutdown.
#[test]
fn no_stream_byte_is_lost_across_cancelled_receives() {
    for faults in [NO_FAULTS, EVERY_FAULT] {
        let actions = stream_actions();
        // Without forgetting: every byte must come out, in order.
        let r = model::run(&model::encode_input(faults, &actions), &wait, false);
        eprintln!("{r:?}");
        assert!(
            r.sent > 200 && r.received_by_tasks > 0 && r.forgotten == 0,
            "{r:?}"
        );
    }
}

#[test]
fn actions_round_trip_through_their_bytes() {
    for b0 in 0..=255u8 {
        for b1 in [0u8, 1, 7, 15, 16, 0x21, 0x35, 0xff] {
            let a = Action::decode([b0, b1]);
            assert_eq!(Action::decode(a.encode()), a, "{b0} {b1}");
        }
    }
}
