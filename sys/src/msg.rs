//! The runtime's `user_data` tag layout, and `MSG_RING` messages between shards.
//!
//! Every SQE spargio submits carries a `user_data` built here, and every CQE it
//! reaps is classified by [`decode_cqe`]. The kernel no longer marks
//! `MSG_RING` completions in any way (they look like any other CQE), so a
//! cross-shard message is recognised by its tag alone.
//!
//! # Layout
//!
//! The top four bits say what a `user_data` is; the other 60 bits depend on
//! that kind. Bits marked `0` are reserved: a value with any of them set, or
//! with a kind not listed, decodes as [`Tag::Unknown`], never as a valid tag.
//!
//! ```text
//!  63    60 59                    33  32  31              16 15               0
//! +--------+------------------------+---+------------------+------------------+
//! |  0000  |  anything: reserved (so user_data 0 is never a valid tag)        |  Unknown
//! +--------+----------------------------+------------------+------------------+
//! |  0001  |     generation (28)        |            slab index (32)          |  Op
//! +--------+------------------------+---+------------------+------------------+
//! |  0010  |            0 (27)      | F |  from_shard (16) |     tag (16)     |  Message
//! +--------+------------------------+---+------------------+------------------+
//! |  0011  |            0 (28)          |  from_shard (16) |      0 (16)      |  Doorbell
//! +--------+--------------+-------------+------------------+------------------+
//! |  0100  |     0 (12)   |  kind (16)  |               data (32)             |  Internal
//! +--------+--------------+-------------+-------------------------------------+
//! |  0101  |                           0 (60)                                 |  Ignore
//! +--------+------------------------------------------------------------------+
//! | 0110 ..|  reserved                                                        |  Unknown
//! |  1111  |                                                                  |
//! +--------+------------------------------------------------------------------+
//! ```
//!
//! - **Op**: an in-flight operation: its slab index and the generation of the
//!   slot. A slot's generation advances (wrapping in 28 bits) each time it is
//!   reused, so a stale CQE of a freed op never matches the op that reuses its
//!   index unless 2^28 reuses of that one slot happened while the CQE was in flight.
//! - **Message**: a cross-shard message delivered by `MSG_RING`. The target's
//!   CQE carries the sender's `off` as `user_data` and its `len` as `res`: the
//!   message's `u32` value travels in `res` (the `i32` bit pattern of the `u32`).
//!   `F` says whether the CQE's `flags` word carries 32 more bits of payload,
//!   which needs `IORING_MSG_RING_FLAGS_PASS` (Linux 6.3; see
//!   [`crate::probe::SelfTest::msg_ring_flags_pass`]).
//! - **Doorbell**: a wake-up from a shard that carries nothing else.
//! - **Internal**: runtime-internal operations (an eventfd read, a cancel
//!   request, a timeout); `kind` names which ([`internal`] has the runtime's
//!   kinds) and `data` is for the runtime.
//! - **Ignore**: an SQE whose completion nobody waits for.
//!
//! The layout is pinned by the unit tests below and fuzzed through
//! [`crate::check::msg`]: decoding any `u64` or any CQE never panics, encoding
//! a decoded value gives back the same `u64`, and every value the constructors
//! can build decodes to itself.

use std::fmt;
use std::os::fd::RawFd;

use crate::abi;
use crate::cqe::Cqe;
use crate::sqe::{MsgRingData, Sqe, SqeFlags};

/// Bit position of the kind field (the top four bits).
const KIND_SHIFT: u32 = 60;
/// The 60 payload bits below the kind.
const PAYLOAD_MASK: u64 = (1 << KIND_SHIFT) - 1;

const KIND_OP: u64 = 0b0001;
const KIND_MESSAGE: u64 = 0b0010;
const KIND_DOORBELL: u64 = 0b0011;
const KIND_INTERNAL: u64 = 0b0100;
const KIND_IGNORE: u64 = 0b0101;

/// Bits in an op's generation: generations wrap modulo 2^28.
pub const GENERATION_BITS: u32 = 28;
/// The largest generation; [`next_generation`] wraps from it to zero.
pub const MAX_GENERATION: u32 = (1 << GENERATION_BITS) - 1;

/// Message: `tag` in bits 0..16, `from_shard` in bits 16..32, flag `F` at bit 32.
const SHARD_SHIFT: u32 = 16;
const MSG_FLAGS_PAYLOAD_BIT: u64 = 1 << 32;
/// Internal: `data` in bits 0..32, `kind` in bits 32..48.
const INTERNAL_KIND_SHIFT: u32 = 32;

/// The generation that follows `generation`, wrapping within [`GENERATION_BITS`].
pub const fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) & MAX_GENERATION
}

/// The runtime's internal completion kinds (the `kind` of [`Tag::Internal`]).
///
/// The layout reserves 16 bits; these are the kinds spargio uses. Zero is not
/// one of them, so a zeroed field is never mistaken for a real kind.
pub mod internal {
    /// A read or poll of the shard's wake-up eventfd (foreign-thread wake-ups).
    pub const EVENTFD: u16 = 1;
    /// An `ASYNC_CANCEL` request; `data` is the slab index of the op it targets.
    pub const CANCEL: u16 = 2;
    /// The shard's timer-wheel timeout; `data` is the timer's epoch.
    pub const TIMEOUT: u16 = 3;
    /// The sending side of a `MSG_RING` (posted only on failure when sent with
    /// `IOSQE_CQE_SKIP_SUCCESS`); `data` is the target shard.
    pub const MSG_RING_SENT: u16 = 4;
}

/// Identity of an in-flight op: slab index and slot generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId {
    index: u32,
    generation: u32,
}

impl OpId {
    /// An op id; `generation` is taken modulo 2^[`GENERATION_BITS`], as it is
    /// stored in the tag.
    pub const fn new(index: u32, generation: u32) -> OpId {
        OpId {
            index,
            generation: generation & MAX_GENERATION,
        }
    }

    /// The slab index.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The slot generation, at most [`MAX_GENERATION`].
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

/// The `user_data` half of a cross-shard message: who sent it and its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageTag {
    /// The sending shard.
    pub from_shard: u16,
    /// What the message means; chosen by the runtime's message layer.
    pub tag: u16,
    /// True when the CQE's `flags` word carries a second 32-bit payload
    /// (sent with `IORING_MSG_RING_FLAGS_PASS`).
    pub flags_payload: bool,
}

/// A `user_data` value decoded: what a CQE carrying it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// An in-flight op of the shard's slab.
    Op(OpId),
    /// A message from another shard.
    Message(MessageTag),
    /// A wake-up from another shard.
    Doorbell {
        /// The shard that rang.
        from_shard: u16,
    },
    /// A runtime-internal operation.
    Internal {
        /// Which internal operation (see [`internal`]).
        kind: u16,
        /// Its data, for the runtime.
        data: u32,
    },
    /// A completion nobody waits for.
    Ignore,
    /// Not a valid tag: zero, a reserved kind, or reserved bits set. Holds the
    /// raw value.
    Unknown(u64),
}

impl Tag {
    /// The `user_data` that encodes this tag. For [`Tag::Unknown`] it is the
    /// raw value it holds, so `decode(x).to_user_data() == x` for every `x`.
    pub const fn to_user_data(self) -> u64 {
        match self {
            Tag::Op(id) => UserData::op(id).get(),
            Tag::Message(m) => UserData::message(m).get(),
            Tag::Doorbell { from_shard } => UserData::doorbell(from_shard).get(),
            Tag::Internal { kind, data } => UserData::internal(kind, data).get(),
            Tag::Ignore => UserData::IGNORE.get(),
            Tag::Unknown(raw) => raw,
        }
    }
}

/// A `user_data` value in spargio's tag layout (see the [module docs](self)).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserData(u64);

impl UserData {
    /// The tag of SQEs whose completion nobody waits for.
    pub const IGNORE: UserData = UserData(KIND_IGNORE << KIND_SHIFT);

    /// The tag of an in-flight op.
    pub const fn op(id: OpId) -> UserData {
        UserData(
            KIND_OP << KIND_SHIFT | (id.generation as u64 & MAX_GENERATION as u64) << 32 | id.index as u64,
        )
    }

    /// The tag a message's target CQE carries.
    pub const fn message(m: MessageTag) -> UserData {
        let flag = if m.flags_payload { MSG_FLAGS_PAYLOAD_BIT } else { 0 };
        UserData(KIND_MESSAGE << KIND_SHIFT | flag | (m.from_shard as u64) << SHARD_SHIFT | m.tag as u64)
    }

    /// The tag a doorbell's target CQE carries.
    pub const fn doorbell(from_shard: u16) -> UserData {
        UserData(KIND_DOORBELL << KIND_SHIFT | (from_shard as u64) << SHARD_SHIFT)
    }

    /// The tag of a runtime-internal operation.
    pub const fn internal(kind: u16, data: u32) -> UserData {
        UserData(KIND_INTERNAL << KIND_SHIFT | (kind as u64) << INTERNAL_KIND_SHIFT | data as u64)
    }

    /// The raw value, as it goes into `sqe.user_data`.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Wraps a raw value (e.g. a CQE's `user_data`), valid or not.
    pub const fn from_raw(raw: u64) -> UserData {
        UserData(raw)
    }

    /// What this value encodes.
    pub const fn decode(self) -> Tag {
        decode(self.0)
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserData({:#018x} = {:?})", self.0, self.decode())
    }
}

impl From<Tag> for UserData {
    fn from(tag: Tag) -> UserData {
        UserData(tag.to_user_data())
    }
}

/// Decodes a `user_data` value. Total: every `u64` decodes to something, and
/// anything outside the layout is [`Tag::Unknown`].
pub const fn decode(user_data: u64) -> Tag {
    let payload = user_data & PAYLOAD_MASK;
    let unknown = Tag::Unknown(user_data);
    match user_data >> KIND_SHIFT {
        KIND_OP => Tag::Op(OpId {
            index: payload as u32,
            generation: (payload >> 32) as u32,
        }),
        KIND_MESSAGE => {
            if payload & !(MSG_FLAGS_PAYLOAD_BIT | 0xffff_ffff) != 0 {
                return unknown;
            }
            Tag::Message(MessageTag {
                from_shard: (payload >> SHARD_SHIFT) as u16,
                tag: payload as u16,
                flags_payload: payload & MSG_FLAGS_PAYLOAD_BIT != 0,
            })
        }
        KIND_DOORBELL => {
            if payload & !(0xffff << SHARD_SHIFT) != 0 {
                return unknown;
            }
            Tag::Doorbell {
                from_shard: (payload >> SHARD_SHIFT) as u16,
            }
        }
        KIND_INTERNAL => {
            if payload >> (INTERNAL_KIND_SHIFT + 16) != 0 {
                return unknown;
            }
            Tag::Internal {
                kind: (payload >> INTERNAL_KIND_SHIFT) as u16,
                data: payload as u32,
            }
        }
        KIND_IGNORE if payload == 0 => Tag::Ignore,
        _ => unknown,
    }
}

/// A completion classified by its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// An op of the slab completed (or, with `IORING_CQE_F_MORE`, produced one
    /// of several results).
    Op {
        /// Which op.
        id: OpId,
        /// The kernel's result: a count, an fd, or `-errno`.
        res: i32,
        /// `IORING_CQE_F_*` flags.
        flags: u32,
    },
    /// A message from another shard.
    Message {
        /// The sending shard.
        from_shard: u16,
        /// The message's tag.
        tag: u16,
        /// The 32-bit value (the CQE's `res`, read as `u32`).
        value: u32,
        /// The second 32-bit value, when the message was sent with one
        /// (the CQE's `flags`).
        extra: Option<u32>,
    },
    /// A wake-up from another shard.
    Doorbell {
        /// The shard that rang.
        from_shard: u16,
    },
    /// A runtime-internal operation completed.
    Internal {
        /// Which internal operation (see [`internal`]).
        kind: u16,
        /// Its data.
        data: u32,
        /// The kernel's result.
        res: i32,
        /// `IORING_CQE_F_*` flags.
        flags: u32,
    },
    /// A completion nobody waits for; `res` kept for diagnostics.
    Ignored {
        /// The kernel's result.
        res: i32,
    },
    /// A CQE whose `user_data` is not in spargio's layout.
    Unknown(Cqe),
}

/// Classifies a completion by its `user_data`. Total: never panics.
pub const fn decode_cqe(cqe: &Cqe) -> Event {
    match decode(cqe.user_data) {
        Tag::Op(id) => Event::Op {
            id,
            res: cqe.res,
            flags: cqe.flags,
        },
        Tag::Message(m) => Event::Message {
            from_shard: m.from_shard,
            tag: m.tag,
            value: cqe.res as u32,
            extra: if m.flags_payload { Some(cqe.flags) } else { None },
        },
        Tag::Doorbell { from_shard } => Event::Doorbell { from_shard },
        Tag::Internal { kind, data } => Event::Internal {
            kind,
            data,
            res: cqe.res,
            flags: cqe.flags,
        },
        Tag::Ignore => Event::Ignored { res: cqe.res },
        Tag::Unknown(_) => Event::Unknown(*cqe),
    }
}

/// A message to post into another shard's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    /// The sending shard.
    pub from_shard: u16,
    /// What the message means.
    pub tag: u16,
    /// The 32-bit value (arrives as the CQE's `res`).
    pub value: u32,
    /// A second 32-bit value, carried in the CQE's `flags`. Needs
    /// `IORING_MSG_RING_FLAGS_PASS` (Linux 6.3): check
    /// [`SelfTest::msg_ring_flags_pass`](crate::probe::SelfTest::msg_ring_flags_pass)
    /// before sending one; older kernels fail the send with `EINVAL`.
    pub extra: Option<u32>,
}

impl Message {
    /// The tag the target CQE will carry.
    pub const fn user_data(&self) -> UserData {
        UserData::message(MessageTag {
            from_shard: self.from_shard,
            tag: self.tag,
            flags_payload: self.extra.is_some(),
        })
    }

    /// The CQE the target ring reaps for this message: its tag, the value's
    /// bit pattern as `res`, and `extra` (or zero) as `flags`.
    pub const fn target_cqe(&self) -> Cqe {
        Cqe {
            user_data: self.user_data().get(),
            res: self.value as i32,
            flags: match self.extra {
                Some(f) => f,
                None => 0,
            },
        }
    }
}

/// Builds a `MSG_RING` data SQE (`IORING_MSG_DATA`): the kernel posts a CQE
/// with `user_data = post.user_data`, `res = post.res` and, when `pass_flags`,
/// `flags = post.flags` into the ring `target_ring_fd` ([`posted_by`] is the
/// model of that). Without `pass_flags` the target CQE's flags are zero.
///
/// The SQE's own completion, in the sending ring, carries `completion`.
/// [`message_sqe`] and [`doorbell_sqe`] build the runtime's two kinds of
/// message with this.
pub fn post_sqe(target_ring_fd: RawFd, post: Cqe, pass_flags: bool, completion: UserData) -> Sqe {
    MsgRingData::new(target_ring_fd, post.res, post.user_data)
        .cqe_flags(if pass_flags { Some(post.flags) } else { None })
        .build()
        .user_data(completion.get())
}

/// Builds the `MSG_RING` SQE that delivers `msg` into the ring `target_ring_fd`.
///
/// The sending ring gets the SQE's own completion tagged `completion`: `res`
/// 0 on success, or `-errno` (`EOVERFLOW`: the target's CQ is full;
/// `EBADFD`: not an io_uring fd, or a disabled ring; `EINVAL`: `extra` on a
/// kernel without `FLAGS_PASS`). Add
/// [`SqeFlags::SKIP_SUCCESS`] to hear only about failures.
///
/// The fd must be a ring of this runtime that is still open: a ring fd of a
/// shut-down runtime must never be messaged, since its number may be reused
/// (see [`RingFd`](crate::ring::RingFd), which keeps the fd alive).
///
/// # Example
///
/// ```
/// use spargio_sys::msg::{self, Event, Message, UserData};
///
/// let m = Message { from_shard: 3, tag: 7, value: 0xdead_beef, extra: None };
/// let sqe = msg::message_sqe(5, &m, UserData::IGNORE);
/// assert_eq!(sqe.as_raw().fd, 5);
/// // What the target ring will reap, and how it decodes:
/// let event = msg::decode_cqe(&m.target_cqe());
/// assert_eq!(event, Event::Message { from_shard: 3, tag: 7, value: 0xdead_beef, extra: None });
/// ```
pub fn message_sqe(target_ring_fd: RawFd, msg: &Message, completion: UserData) -> Sqe {
    post_sqe(target_ring_fd, msg.target_cqe(), msg.extra.is_some(), completion)
}

/// Builds the `MSG_RING` SQE that rings the doorbell of the ring
/// `target_ring_fd` on behalf of `from_shard`.
///
/// The SQE has `IOSQE_CQE_SKIP_SUCCESS` (protocol 1 of the design: a doorbell
/// costs the sender no completion), so the sending ring sees a CQE tagged
/// `on_failure` only when the send fails. Every kernel with `MSG_RING`
/// (Linux 5.18) has `IORING_FEAT_CQE_SKIP` (5.17).
///
/// # Example
///
/// ```
/// use spargio_sys::msg::{self, Tag, UserData, internal};
///
/// let sqe = msg::doorbell_sqe(5, 2, UserData::internal(internal::MSG_RING_SENT, 1));
/// assert_eq!(msg::decode(sqe.as_raw().off_or_addr2), Tag::Doorbell { from_shard: 2 });
/// ```
pub fn doorbell_sqe(target_ring_fd: RawFd, from_shard: u16, on_failure: UserData) -> Sqe {
    let post = Cqe {
        user_data: UserData::doorbell(from_shard).get(),
        res: 0,
        flags: 0,
    };
    post_sqe(target_ring_fd, post, false, on_failure).flags(SqeFlags::SKIP_SUCCESS)
}

/// What a `MSG_RING` data SQE posts into its target: the CQE the target ring
/// will reap, as the kernel computes it (`off` → `user_data`, `len` → `res`,
/// `file_index` → `flags` with `FLAGS_PASS`). `None` for any other SQE.
///
/// A model of the kernel for tests and fuzzing; the real kernel's behaviour is
/// checked against it in `tests/probe_register.rs`.
pub const fn posted_by(sqe: &Sqe) -> Option<Cqe> {
    let raw = sqe.as_raw();
    if raw.opcode != abi::IORING_OP_MSG_RING || raw.addr_or_splice_off_in != abi::IORING_MSG_DATA {
        return None;
    }
    let pass = raw.op_flags & abi::IORING_MSG_RING_FLAGS_PASS != 0;
    Some(Cqe {
        user_data: raw.off_or_addr2,
        res: raw.len as i32,
        flags: if pass { raw.splice_fd_in_or_file_index } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn zero_and_reserved_kinds_are_unknown() {
        assert_eq!(decode(0), Tag::Unknown(0));
        assert_eq!(decode(1), Tag::Unknown(1));
        assert_eq!(decode(u64::MAX), Tag::Unknown(u64::MAX));
        for kind in 6..16u64 {
            assert_eq!(decode(kind << 60), Tag::Unknown(kind << 60));
        }
    }

    #[test]
    fn layout_is_pinned() {
        assert_eq!(
            UserData::op(OpId::new(0x1234_5678, 0xabc_def0)).get(),
            0x1abc_def0_1234_5678
        );
        let m = MessageTag {
            from_shard: 0xbeef,
            tag: 0x0102,
            flags_payload: true,
        };
        assert_eq!(UserData::message(m).get(), 0x2000_0001_beef_0102);
        assert_eq!(UserData::doorbell(0x00ff).get(), 0x3000_0000_00ff_0000);
        assert_eq!(
            UserData::internal(0x0203, 0xcafe_f00d).get(),
            0x4000_0203_cafe_f00d
        );
        assert_eq!(UserData::IGNORE.get(), 0x5000_0000_0000_0000);
    }

    #[test]
    fn reserved_bits_make_a_value_unknown() {
        let msg = UserData::message(MessageTag {
            from_shard: 1,
            tag: 2,
            flags_payload: false,
        })
        .get();
        assert_eq!(decode(msg | 1 << 33), Tag::Unknown(msg | 1 << 33));
        let bell = UserData::doorbell(9).get();
        assert_eq!(decode(bell | 1), Tag::Unknown(bell | 1));
        assert_eq!(decode(bell | 1 << 32), Tag::Unknown(bell | 1 << 32));
        let int = UserData::internal(1, 2).get();
        assert_eq!(decode(int | 1 << 48), Tag::Unknown(int | 1 << 48));
        assert_eq!(
            decode(UserData::IGNORE.get() | 1),
            Tag::Unknown(UserData::IGNORE.get() | 1)
        );
    }

    #[test]
    fn generations_wrap_within_their_bits() {
        assert_eq!(next_generation(MAX_GENERATION), 0);
        assert_eq!(next_generation(u32::MAX), 0);
        assert_eq!(next_generation(5), 6);
        let stale = OpId::new(7, MAX_GENERATION);
        let fresh = OpId::new(7, next_generation(MAX_GENERATION));
        assert_ne!(UserData::op(stale), UserData::op(fresh));
        assert_eq!(OpId::new(7, 1 << GENERATION_BITS), OpId::new(7, 0));
    }

    #[test]
    fn message_value_travels_as_the_i32_bit_pattern() {
        for value in [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            let m = Message {
                from_shard: u16::MAX,
                tag: 0,
                value,
                extra: None,
            };
            let sqe = message_sqe(3, &m, UserData::IGNORE);
            assert_eq!(sqe.as_raw().len, value);
            let cqe = posted_by(&sqe).unwrap();
            let want = Event::Message {
                from_shard: u16::MAX,
                tag: 0,
                value,
                extra: None,
            };
            assert_eq!(decode_cqe(&cqe), want);
        }
    }

    #[test]
    fn message_extra_uses_flags_pass() {
        let m = Message {
            from_shard: 1,
            tag: 2,
            value: 3,
            extra: Some(0x8000_0001),
        };
        let raw = *message_sqe(9, &m, UserData::IGNORE).as_raw();
        assert_eq!(raw.op_flags, abi::IORING_MSG_RING_FLAGS_PASS);
        assert_eq!(raw.splice_fd_in_or_file_index, 0x8000_0001);
        assert_eq!(raw.opcode, abi::IORING_OP_MSG_RING);
        assert_eq!(raw.addr_or_splice_off_in, abi::IORING_MSG_DATA);
        let plain = Message { extra: None, ..m };
        let raw = *message_sqe(9, &plain, UserData::IGNORE).as_raw();
        assert_eq!((raw.op_flags, raw.splice_fd_in_or_file_index), (0, 0));
    }

    #[test]
    fn doorbell_skips_its_success_completion() {
        let sqe = doorbell_sqe(4, 11, UserData::internal(internal::MSG_RING_SENT, 11));
        let raw = sqe.as_raw();
        assert_eq!(raw.flags, abi::IOSQE_CQE_SKIP_SUCCESS);
        assert_eq!(raw.fd, 4);
        assert_eq!(
            decode(raw.user_data),
            Tag::Internal {
                kind: internal::MSG_RING_SENT,
                data: 11
            }
        );
        assert_eq!(
            decode_cqe(&posted_by(&sqe).unwrap()),
            Event::Doorbell { from_shard: 11 }
        );
        assert!(!sqe.references_user_memory());
    }

    #[test]
    fn other_sqes_post_nothing() {
        assert_eq!(posted_by(&Sqe::nop()), None);
    }

    fn any_tag() -> impl Strategy<Value = Tag> {
        prop_oneof![
            (any::<u32>(), any::<u32>()).prop_map(|(i, g)| Tag::Op(OpId::new(i, g))),
            (any::<u16>(), any::<u16>(), any::<bool>()).prop_map(|(from_shard, tag, flags_payload)| {
                Tag::Message(MessageTag {
                    from_shard,
                    tag,
                    flags_payload,
                })
            }),
            any::<u16>().prop_map(|from_shard| Tag::Doorbell { from_shard }),
            (any::<u16>(), any::<u32>()).prop_map(|(kind, data)| Tag::Internal { kind, data }),
            Just(Tag::Ignore),
        ]
    }

    proptest! {
        #[test]
        fn every_u64_decodes_and_reencodes(raw in any::<u64>()) {
            crate::check::msg::roundtrip_user_data(raw);
        }

        #[test]
        fn every_u64_with_a_known_kind_reencodes(kind in 1u64..6, payload in any::<u64>()) {
            crate::check::msg::roundtrip_user_data(kind << 60 | payload >> 4);
        }

        #[test]
        fn every_tag_round_trips(tag in any_tag()) {
            prop_assert_ne!(tag.to_user_data(), 0);
            prop_assert_eq!(decode(tag.to_user_data()), tag);
        }

        #[test]
        fn every_message_survives_the_kernel(
            from_shard in any::<u16>(), tag in any::<u16>(), value in any::<u32>(),
            extra in any::<Option<u32>>(), fd in any::<i32>(),
        ) {
            crate::check::msg::message_delivery(&Message { from_shard, tag, value, extra }, fd);
        }

        #[test]
        fn arbitrary_cqes_classify(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            crate::check::msg::decode_arbitrary_cqe(&bytes);
        }

        #[test]
        fn forged_completions_never_reach_an_op(
            records in proptest::collection::vec(
                (
                    prop_oneof![
                        any_tag().prop_map(|t| t.to_user_data()),
                        // The live ops' own tags, and those of their slots' next generation.
                        (0u32..2, 0u32..2).prop_map(|(i, g)| UserData::op(OpId::new(i, g)).get()),
                        any::<u64>(),
                    ],
                    any::<i32>(),
                    any::<u32>(),
                    any::<u8>(),
                ),
                0..if cfg!(miri) { 6 } else { 24 },
            )
        ) {
            let bytes: Vec<u8> = records
                .iter()
                .flat_map(|&(user_data, res, flags, how)| {
                    let mut b = user_data.to_ne_bytes().to_vec();
                    b.extend(res.to_ne_bytes());
                    b.extend(flags.to_ne_bytes());
                    b.push(how);
                    b
                })
                .collect();
            crate::check::msg::forged_completions(&bytes);
        }
    }
}
