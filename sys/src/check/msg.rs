//! Invariants of the `user_data` tag layout and `MSG_RING` messages ([`crate::msg`]).
//!
//! Called by the proptest suite in `msg.rs` and by the `cqe_decode` fuzz target.

use std::time::Duration;

use crate::cqe::Cqe;
use crate::msg::{self, Event, Message, Tag, UserData};
use crate::op::{Completion, InFlight};
use crate::ring::{PushError, Ring, RingConfig};
use crate::sim::SimKernel;
use crate::sqe::Sqe;

/// Decoding any `u64` gives a tag that encodes back to the same `u64`; a valid
/// tag is never produced from zero; and a valid tag decodes from its own encoding.
///
/// # Panics
///
/// When an invariant breaks.
pub fn roundtrip_user_data(raw: u64) {
    let tag = msg::decode(raw);
    assert_eq!(
        tag.to_user_data(),
        raw,
        "{tag:?} does not encode back to {raw:#x}"
    );
    assert_eq!(UserData::from(tag).get(), raw);
    if raw == 0 {
        assert_eq!(tag, Tag::Unknown(0), "user_data 0 must never be a valid tag");
    }
    if !matches!(tag, Tag::Unknown(_)) {
        assert_eq!(msg::decode(tag.to_user_data()), tag);
    }
    if let Tag::Op(id) = tag {
        assert!(id.generation() <= msg::MAX_GENERATION);
        // The next generation of the same slot is a different tag: a stale CQE
        // never completes the op that reuses the slot.
        let next = msg::OpId::new(id.index(), msg::next_generation(id.generation()));
        assert_ne!(UserData::op(next).get(), raw);
    }
}

/// Reads a CQE from up to 16 bytes (`user_data`, `res`, `flags`, native
/// endian, missing bytes zero) and checks that classifying it is consistent
/// with decoding its `user_data`.
///
/// Longer inputs are read as several CQEs.
///
/// # Panics
///
/// When an invariant breaks.
pub fn decode_arbitrary_cqe(bytes: &[u8]) {
    if bytes.is_empty() {
        check_cqe(&Cqe::default());
    }
    for chunk in bytes.chunks(16) {
        let mut b = [0u8; 16];
        b[..chunk.len()].copy_from_slice(chunk);
        let cqe = Cqe {
            user_data: u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes")),
            res: i32::from_ne_bytes(b[8..12].try_into().expect("4 bytes")),
            flags: u32::from_ne_bytes(b[12..16].try_into().expect("4 bytes")),
        };
        check_cqe(&cqe);
    }
}

fn check_cqe(cqe: &Cqe) {
    roundtrip_user_data(cqe.user_data);
    let event = msg::decode_cqe(cqe);
    match (msg::decode(cqe.user_data), event) {
        (Tag::Op(id), Event::Op { id: got, res, flags }) => {
            assert_eq!((id, res, flags), (got, cqe.res, cqe.flags));
        }
        (
            Tag::Message(m),
            Event::Message {
                from_shard,
                tag,
                value,
                extra,
            },
        ) => {
            assert_eq!((from_shard, tag), (m.from_shard, m.tag));
            assert_eq!(value as i32, cqe.res, "the value is the bit pattern of res");
            assert_eq!(extra, m.flags_payload.then_some(cqe.flags));
            // The message this CQE carries, sent again, posts the same CQE.
            let again = Message {
                from_shard,
                tag,
                value,
                extra,
            };
            let expected_flags = if m.flags_payload { cqe.flags } else { 0 };
            assert_eq!(
                again.target_cqe(),
                Cqe {
                    flags: expected_flags,
                    ..*cqe
                }
            );
        }
        (Tag::Doorbell { from_shard }, Event::Doorbell { from_shard: got }) => assert_eq!(from_shard, got),
        (
            Tag::Internal { kind, data },
            Event::Internal {
                kind: k,
                data: d,
                res,
                flags,
            },
        ) => {
            assert_eq!((kind, data, res, flags), (k, d, cqe.res, cqe.flags));
        }
        (Tag::Ignore, Event::Ignored { res }) => assert_eq!(res, cqe.res),
        (Tag::Unknown(raw), Event::Unknown(c)) => {
            assert_eq!(raw, cqe.user_data);
            assert_eq!(c, *cqe);
        }
        (tag, event) => panic!("tag {tag:?} classified as {event:?}"),
    }
}

/// A message built into a `MSG_RING` SQE for ring `target_ring_fd`, posted as
/// the kernel posts it ([`msg::posted_by`]), decodes to the same message.
///
/// # Panics
///
/// When an invariant breaks.
pub fn message_delivery(m: &Message, target_ring_fd: i32) {
    let completion = UserData::internal(msg::internal::MSG_RING_SENT, u32::from(m.from_shard));
    let sqe = msg::message_sqe(target_ring_fd, m, completion);
    assert!(
        !sqe.references_user_memory(),
        "a data message points at no memory"
    );
    assert_eq!(sqe.as_raw().fd, target_ring_fd);
    assert_eq!(sqe.as_raw().user_data, completion.get());
    let cqe = msg::posted_by(&sqe).expect("a MSG_RING data SQE posts a CQE");
    assert_eq!(cqe, m.target_cqe());
    let want = Event::Message {
        from_shard: m.from_shard,
        tag: m.tag,
        value: m.value,
        extra: m.extra,
    };
    assert_eq!(msg::decode_cqe(&cqe), want);

    let bell = msg::doorbell_sqe(target_ring_fd, m.from_shard, completion);
    let cqe = msg::posted_by(&bell).expect("a doorbell posts a CQE");
    assert_eq!(
        msg::decode_cqe(&cqe),
        Event::Doorbell {
            from_shard: m.from_shard
        }
    );
}

/// Completions with arbitrary contents, delivered for real, never reach an
/// op: `bytes` is read as 17-byte records (a CQE as in
/// [`decode_arbitrary_cqe`], then a byte choosing how it is sent). Each CQE
/// is posted into a simulated ring whose op table holds ops in flight
/// (pending timeouts at slots 0 and 1, so op tags of index 0 and 1 with
/// either generation are live or stale), either by a NOP carrying its
/// `user_data` on that ring, or as a `MSG_RING` message from a second ring
/// (with or without its flags, its send's own completion tagged with
/// another arbitrary `user_data`).
///
/// Checks: a push whose completion would carry an op's tag is refused
/// (`ReservedTag`) and every other is accepted; what the target reaps is
/// exactly what was sent (classified consistently, as
/// [`decode_arbitrary_cqe`] checks); the op table calls every such
/// completion stale and its ops stay in flight, untouched, until they are
/// cancelled and complete with `-ECANCELED`.
///
/// # Panics
///
/// When an invariant breaks.
pub fn forged_completions(bytes: &[u8]) {
    let kernel = SimKernel::new();
    let mut target = Ring::sim(&kernel, &RingConfig::with_entries(4)).expect("simulated ring");
    let mut sender = Ring::sim(&kernel, &RingConfig::with_entries(4)).expect("simulated ring");
    let mut table: InFlight<u32> = InFlight::default();
    let mut ids = Vec::new();
    for payload in 0..2 {
        let op = super::lifecycle::pending_timeout(50);
        ids.push(
            table
                .submit(&mut target, op, payload)
                .map_err(|(_, e)| e)
                .expect("room for two ops"),
        );
    }
    target.submit().expect("the simulated kernel takes the timeouts");
    for record in bytes.chunks(17).take(64) {
        let mut b = [0u8; 17];
        b[..record.len()].copy_from_slice(record);
        let cqe = Cqe {
            user_data: u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes")),
            res: i32::from_ne_bytes(b[8..12].try_into().expect("4 bytes")),
            flags: u32::from_ne_bytes(b[12..16].try_into().expect("4 bytes")),
        };
        check_cqe(&cqe);
        let how = b[16];
        // The send's own completion: another arbitrary user_data (a rotation of this one).
        let completion = UserData::from(msg::decode(cqe.user_data.rotate_left(u32::from(how))));
        let carries_op = matches!(msg::decode(cqe.user_data), Tag::Op(_));
        let completion_is_op = matches!(completion.decode(), Tag::Op(_));
        let (pushed, expected) = if how & 1 == 0 {
            let pushed = target.push(&Sqe::nop().user_data(cqe.user_data));
            (
                pushed,
                Cqe {
                    res: 0,
                    flags: 0,
                    ..cqe
                },
            )
        } else {
            let pass_flags = how & 2 != 0;
            let pushed = sender.push_msg_ring(&target.ring_fd(), cqe, pass_flags, completion, false);
            let flags = if pass_flags { cqe.flags } else { 0 };
            (pushed, Cqe { flags, ..cqe })
        };
        if carries_op || (how & 1 == 1 && completion_is_op) {
            assert_eq!(
                pushed,
                Err(PushError::ReservedTag),
                "a completion with an op's tag was let through"
            );
            continue;
        }
        assert_eq!(pushed, Ok(()), "an SQ with room takes a harmless entry");
        if how & 1 == 1 {
            sender
                .submit_and_wait(1, Some(Duration::ZERO))
                .expect("the simulated kernel");
            let sent = sender.pop_cqe().expect("the message's own completion");
            assert_eq!(
                (sent.user_data, sent.res),
                (completion.get(), 0),
                "the message was delivered"
            );
        }
        target
            .submit_and_wait(1, Some(Duration::ZERO))
            .expect("the simulated kernel");
        let reaped = target.reap().expect("the posted completion");
        assert_eq!(*reaped, expected, "the target reaps what was sent");
        check_cqe(&reaped);
        assert!(
            matches!(table.complete(reaped), Completion::Stale),
            "a forged completion reached an op"
        );
        assert_eq!(table.len(), 2, "the ops stay in flight");
        assert!(target.reap().is_none());
    }
    // The real ops: cancelled, each completes once with its own payload.
    for id in ids {
        let cancel = table.cancel_sqe(id).expect("in flight");
        target.push(&cancel).expect("room");
    }
    target
        .submit_and_wait(4, Some(Duration::ZERO))
        .expect("the simulated kernel");
    let mut finished = Vec::new();
    while let Some(cqe) = target.reap() {
        match table.complete(cqe) {
            Completion::Finished { payload, cqe, .. } => {
                assert_eq!(cqe.res, -libc::ECANCELED);
                finished.push(payload);
            }
            Completion::More { .. } => panic!("no multishot op"),
            Completion::Stale => {}
        }
    }
    finished.sort_unstable();
    assert_eq!(finished, [0, 1], "each op completes once, as itself");
    assert!(table.is_empty());
}
