//! Invariants of the `user_data` tag layout and `MSG_RING` messages ([`crate::msg`]).
//!
//! Called by the proptest suite in `msg.rs` and by the `cqe_decode` fuzz target.

use crate::cqe::Cqe;
use crate::msg::{self, Event, Message, Tag, UserData};

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
