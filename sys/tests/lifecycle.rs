//! The op lifecycle on the simulated kernel: `op::InFlight` with owned ops,
//! cancels, multishot timeouts, receives and accepts (pending, multishot,
//! abandoned) on a simulated socket, full queues and injected kernel faults,
//! checked by `spargio_sys::check::lifecycle` (the same function the
//! `op_lifecycle` fuzz target calls).
//!
//! Under Miri the simulated kernel's reads and writes of op buffers are
//! checked for real; case counts and input lengths shrink there. The run
//! that drops an op table with ops in flight leaks on purpose and lives in
//! `leaked_ops.rs`.

use proptest::prelude::*;

use spargio_sys::check::lifecycle::{self, Action, FAULT_BYTES, Mode};
use spargio_sys::sim::Faults;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 });
    if cfg!(miri) {
        // Miri's isolation forbids the file access that failure persistence needs.
        config.failure_persistence = None;
    }
    config
}

/// Fault bytes, then up to 60 actions (20 under Miri).
fn input() -> impl Strategy<Value = Vec<u8>> {
    let actions = if cfg!(miri) { 20 } else { 60 };
    (
        proptest::collection::vec(any::<u8>(), FAULT_BYTES),
        proptest::collection::vec(any::<u8>(), 0..actions * 3),
    )
        .prop_map(|(mut faults, actions)| {
            faults.extend(actions);
            faults
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn op_lifecycle_holds_its_invariants(input in input()) {
        lifecycle::run(&input, Mode::Complete);
    }

    #[test]
    fn op_lifecycle_without_faults(actions in proptest::collection::vec(any::<u8>(), 0..if cfg!(miri) { 60 } else { 180 })) {
        let mut input = vec![0u8; FAULT_BYTES];
        input.extend(actions);
        lifecycle::run(&input, Mode::Complete);
    }
}

/// Fault bytes that switch on every fault the simulator injects
/// (`lifecycle::faults_from_bytes`), with `seed` as the generator's seed.
fn every_fault(seed: u8) -> [u8; FAULT_BYTES] {
    [
        0x3f, seed, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x0f, 0x12, 0x34, 0x56,
    ]
}

/// Only lost cancel races (every cancel that finds its target).
const CANCEL_RACES: [u8; FAULT_BYTES] = [0, 0, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0];
/// Only refused enters (the first three).
const REFUSED_ENTERS: [u8; FAULT_BYTES] = [0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0x30, 0];
const NO_FAULTS: [u8; FAULT_BYTES] = [0; FAULT_BYTES];

/// The scenarios of the soundness and lifecycle issues, as inputs of the
/// `op_lifecycle` fuzz target: its seed corpus is exactly these
/// (`fuzz/seeds/op_lifecycle/`, checked below).
fn scenarios() -> Vec<(&'static str, Vec<u8>)> {
    // A cancel that arrives as its multishot timeout fires: the timeout ends
    // with a last shot, the cancel finds nothing, and the timespec is
    // released once, after that final completion.
    let cancel_race = [
        Action::Timeout {
            ms: 1,
            count: 0,
            multishot: true,
        },
        Action::Submit,
        Action::Advance { ms: 3 },
        Action::Reap { max: 2 },
        Action::Cancel { nth: 0 },
        Action::Submit,
        Action::Reap { max: 15 },
    ];
    // More ops than the SQ holds while the kernel refuses enters: refused ops
    // give their buffers back at once, accepted ones after their completion.
    let mut full_queue: Vec<Action> = (0..10u8)
        .map(|i| Action::Read {
            len: 16 + i,
            offset: i * 9,
        })
        .collect();
    full_queue.push(Action::Reap { max: 15 });
    // Reads, receives, sends and timeouts, cancels and a closed file, under
    // every fault at once.
    let mut mixed = Vec::new();
    for round in 0..8u8 {
        mixed.extend([
            Action::Send { len: 20 + round },
            Action::Recv { len: 7 },
            Action::Read {
                len: 40,
                offset: round * 17,
            },
            Action::Timeout {
                ms: round % 3,
                count: round % 2,
                multishot: round % 3 == 1,
            },
            Action::Nop,
            Action::Cancel { nth: round },
            Action::Submit,
            Action::Advance { ms: 1 },
            Action::Flush,
            Action::Reap { max: 3 },
        ]);
        if round == 5 {
            mixed.push(Action::CloseData);
        }
    }
    // A table dropped with a read queued and a timeout pending (a no-op in
    // `Mode::Complete`; leaks in `Mode::LeakTable`).
    let dropped = [
        Action::Read { len: 8, offset: 0 },
        Action::Timeout {
            ms: 5,
            count: 0,
            multishot: false,
        },
        Action::Submit,
        Action::Read { len: 8, offset: 8 },
        Action::DropTable,
        Action::Submit,
    ];
    // A receive pending on an empty socket, cancelled as data arrives: the
    // receive wins the race and completes with the data; the cancel finds
    // nothing.
    let recv_race = [
        Action::SockRecv { len: 16 },
        Action::Submit,
        Action::PeerWrite { len: 10 },
        Action::Cancel { nth: 0 },
        Action::Submit,
        Action::Reap { max: 15 },
        Action::SockRecv { len: 16 },
        Action::PeerWrite { len: 5 },
        Action::Flush,
        Action::Reap { max: 15 },
    ];
    // A multishot receive whose waiter goes away with three completions
    // unread in the CQ and more data arriving: its buffers come back, and
    // its bytes are not lost (they reach the reader in order).
    let recv_dropped = [
        Action::SockRecvMulti { len: 0 },
        Action::Submit,
        Action::PeerWrite { len: 40 },
        Action::Flush,
        Action::Abandon { nth: 0 },
        Action::PeerWrite { len: 20 },
        Action::Submit,
        Action::Reap { max: 15 },
        Action::SockRecvMulti { len: 5 },
        Action::Flush,
        Action::Reap { max: 15 },
    ];
    // The same with `RecvMulti` on a provided-buffer ring: the completions
    // dropped unread give their buffers back to the ring as they drop.
    let ring_dropped = [
        Action::SockRecvRing,
        Action::Submit,
        Action::PeerWrite { len: 40 },
        Action::Flush,
        Action::Abandon { nth: 0 },
        Action::PeerWrite { len: 20 },
        Action::Submit,
        Action::Reap { max: 15 },
        Action::SockRecvRing,
        Action::Flush,
        Action::Reap { max: 15 },
    ];
    // A multishot accept whose waiter goes away with connections accepted but
    // unread and another still queued: the dropped events close their fds.
    let accept_dropped = [
        Action::Accept { multishot: true },
        Action::Submit,
        Action::Connect,
        Action::Connect,
        Action::Connect,
        Action::Flush,
        Action::Abandon { nth: 0 },
        Action::Connect,
        Action::Submit,
        Action::Reap { max: 15 },
        Action::Accept { multishot: false },
        Action::Flush,
        Action::Reap { max: 15 },
    ];
    // Everything on the socket and the listener at once, under every fault.
    let mut streams = Vec::new();
    for round in 0..8u8 {
        streams.extend([
            Action::PeerWrite { len: 30 + round },
            if round % 2 == 0 {
                Action::SockRecv { len: 9 + round }
            } else {
                Action::SockRecvMulti { len: round * 3 }
            },
            Action::Connect,
            Action::Accept {
                multishot: round % 3 != 0,
            },
            Action::Submit,
            Action::Flush,
            Action::Reap { max: 4 },
            Action::PeerWrite { len: 20 },
            Action::Flush,
            Action::Reap { max: 6 },
        ]);
        match round {
            2 | 5 => streams.push(Action::Cancel { nth: round }),
            3 | 4 => streams.push(Action::Abandon { nth: round / 2 }),
            6 => streams.push(Action::PeerClose),
            _ => {}
        }
        streams.extend([Action::Flush, Action::Reap { max: 15 }]);
    }
    vec![
        (
            "cancel-race-multishot",
            lifecycle::encode_input(CANCEL_RACES, &cancel_race),
        ),
        (
            "full-queue-refused-enters",
            lifecycle::encode_input(REFUSED_ENTERS, &full_queue),
        ),
        (
            "mixed-every-fault",
            lifecycle::encode_input(every_fault(1), &mixed),
        ),
        ("mixed-no-faults", lifecycle::encode_input(NO_FAULTS, &mixed)),
        ("dropped-table", lifecycle::encode_input(NO_FAULTS, &dropped)),
        (
            "socket-recv-cancel-race",
            lifecycle::encode_input(CANCEL_RACES, &recv_race),
        ),
        (
            "multishot-recv-dropped-unread",
            lifecycle::encode_input(NO_FAULTS, &recv_dropped),
        ),
        (
            "multishot-accept-dropped-queued",
            lifecycle::encode_input(NO_FAULTS, &accept_dropped),
        ),
        (
            "streams-every-fault",
            lifecycle::encode_input(every_fault(3), &streams),
        ),
        ("streams-no-faults", lifecycle::encode_input(NO_FAULTS, &streams)),
        (
            "multishot-recv-ring-dropped-unread",
            lifecycle::encode_input(NO_FAULTS, &ring_dropped),
        ),
    ]
}

/// Each scenario holds the invariants and reaches what it is there for.
#[test]
fn the_issue_scenarios_hold() {
    for (name, input) in scenarios() {
        let r = lifecycle::run(&input, Mode::Complete);
        eprintln!("scenario {name}: {r:?}");
        let reached = match name {
            "cancel-race-multishot" => r.more >= 1 && r.injected.cancel_races == 1 && r.stale == 1,
            "full-queue-refused-enters" => {
                r.refused >= 1 && r.injected.ebusy == 3 && r.succeeded == 10 - r.refused
            }
            "mixed-every-fault" => {
                let i = r.injected;
                r.stream_bytes > 0
                    && r.more > 0
                    && r.refused > 0
                    && [
                        i.eintr,
                        i.ebusy,
                        i.overflowed,
                        i.reordered_batches,
                        i.delayed_cqes,
                    ]
                    .into_iter()
                    .chain([i.short_reads, i.eagain, i.cancel_races])
                    .all(|n| n > 0)
            }
            "mixed-no-faults" => {
                r.stream_bytes > 0 && r.more > 0 && r.cancelled > 0 && r.failed > r.cancelled
            }
            "dropped-table" => r.succeeded == 2 && r.cancelled == 1 && r.leaked == 0,
            // The first receive got the 10 bytes its cancel raced with.
            "socket-recv-cancel-race" => {
                r.injected.cancel_races == 1 && r.stale == 1 && r.sock_bytes == 15 && r.succeeded == 2
            }
            "multishot-recv-dropped-unread" => {
                r.recv_shots >= 3 && r.buffers_handed_out >= 4 && r.cancelled >= 1 && r.sock_bytes == 60
            }
            // Buffer rings are skipped under Miri (no `madvise` for their mmap).
            "multishot-recv-ring-dropped-unread" => {
                cfg!(miri) || (r.events_dropped >= 3 && r.recv_shots >= 4 && r.sock_bytes == 60)
            }
            "multishot-accept-dropped-queued" => r.events_dropped == 3 && r.accepted == 1 && r.cancelled == 1,
            "streams-every-fault" | "streams-no-faults" => {
                let i = r.injected;
                r.sock_bytes > 0
                    && r.recv_shots > 0
                    && r.accepted > 0
                    && r.cancelled > 0
                    && (name == "streams-no-faults"
                        || [i.short_reads, i.overflowed, i.delayed_cqes, i.eagain]
                            .iter()
                            .all(|&n| n > 0))
            }
            _ => unreachable!("unknown scenario {name}"),
        };
        assert!(reached, "scenario {name} did not reach what it exercises: {r:?}");
    }
}

/// With the table dropped, the ops in flight are leaked, not released (the
/// run itself checks that none was released); `leaked_ops.rs` runs this
/// mode under Miri.
#[test]
#[cfg_attr(miri, ignore)]
fn intentionally_leaks_the_ops_in_flight_of_the_dropped_table_scenario() {
    let (name, input) = scenarios().swap_remove(4);
    assert_eq!(name, "dropped-table");
    let r = lifecycle::run(&input, Mode::LeakTable);
    assert_eq!((r.succeeded, r.leaked), (0, 3), "{r:?}");
}

#[test]
fn every_fault_at_once_for_many_seeds() {
    let (_, mixed) = scenarios().swap_remove(2);
    for seed in 0..if cfg!(miri) { 2 } else { 64 } {
        let mut input = mixed.clone();
        input[..FAULT_BYTES].copy_from_slice(&every_fault(seed));
        lifecycle::run(&input, Mode::Complete);
    }
}

/// The fault bytes mean what the scenarios say they mean.
#[test]
fn fault_bytes_switch_on_the_faults_they_name() {
    let all = lifecycle::faults_from_bytes(&every_fault(7));
    assert!(all.enter_eintr_every.is_some() && all.enter_ebusy_every.is_some());
    assert!(all.ebusy_while_overflowed && all.reorder && all.delay_cqes > 0);
    assert!(all.overflow_every.is_some() && all.short_read_max.is_some());
    assert!(all.eagain_every.is_some() && all.cancel_race_every.is_some());
    assert!(all.enter_ebusy_first > 0);
    assert_eq!(
        lifecycle::faults_from_bytes(&CANCEL_RACES).cancel_race_every,
        Some(1)
    );
    assert_eq!(lifecycle::faults_from_bytes(&REFUSED_ENTERS).enter_ebusy_first, 3);
    assert_eq!(lifecycle::faults_from_bytes(&NO_FAULTS), Faults::default());
}

/// Every action encodes to bytes that decode back to it.
#[test]
fn actions_round_trip_through_their_bytes() {
    for (_, input) in scenarios() {
        let actions = Action::decode_all(&input[FAULT_BYTES..]);
        assert_eq!(
            lifecycle::encode_input(input[..FAULT_BYTES].try_into().unwrap(), &actions),
            input
        );
    }
}

/// The fuzz target's seed corpus is the scenarios above. Regenerate it with
/// `SPARGIO_WRITE_SEEDS=1 cargo test -p spargio-sys --test lifecycle seed`.
#[test]
#[cfg_attr(miri, ignore)]
fn seed_corpus_matches_the_scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/op_lifecycle");
    let write = std::env::var_os("SPARGIO_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, input) in scenarios() {
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

/// Found by the fuzz target (in its first seconds), a bug of the check, not
/// of the op table: 71 ops in flight at the end get 71 cancels, whose own
/// completions overflow the 8-entry CQ. The check's final drain gave up after
/// 8 waits (64 completions) with some still on the overflow list; it now
/// keeps going while completions keep coming.
#[test]
fn a_long_overflow_list_drains() {
    let input: &[u8] = &[
        0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 5, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 8,
        0, 8, 8, 0, 8, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 1,
        8, 8, 0, 0, 12, 3, 0, 10, 2, 0, 6, 0, 0, 5, 0, 8, 0, 0, 10, 15, 0, 8, 0, 0, 0, 95, 8, 8, 14, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 4, 0, 0, 0, 0, 0, 6, 8, 0, 8, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 1, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 8, 8, 0, 8, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        8, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 1, 8, 8, 0, 0, 12, 3, 0, 10, 2, 0, 6, 0, 0, 5, 0, 8,
        0, 0, 10, 15, 0, 8, 0, 0, 0, 0, 8, 8, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 4, 0, 0, 0, 0,
        8, 0, 8, 1, 0, 0, 0, 0, 0, 0, 0, 14,
    ];
    let report = lifecycle::run(input, Mode::Complete);
    assert!(report.stale > 64, "{report:?}");
}

/// Found by this suite under Miri: the SQE encoders (`sqe::Recv`, `Send`,
/// `Accept`, … through `sqe::addr`) took a buffer's address without exposing
/// its provenance, so the simulated kernel, which reaches memory outside its
/// loans through exposed provenance, wrote a receive's bytes through a
/// pointer without provenance: undefined behaviour that Miri reports
/// (`Read`, whose SQE is built with an `as` cast, was fine). Natively nothing
/// showed. Now every encoder exposes the addresses it puts in an SQE.
#[test]
fn a_receive_into_an_owned_buffer_is_reached_by_the_simulator() {
    let actions = [
        Action::Send { len: 5 },
        Action::Submit,
        Action::Recv { len: 4 },
        Action::Submit,
        Action::Reap { max: 15 },
    ];
    let report = lifecycle::run(&lifecycle::encode_input(NO_FAULTS, &actions), Mode::Complete);
    // The send, the receive of 4 bytes, and the final drain's receive of the last byte.
    assert_eq!((report.succeeded, report.stream_bytes), (3, 5), "{report:?}");
}
