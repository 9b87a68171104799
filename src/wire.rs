//! How the runtime names its CQEs: a thin layer over `spargio_sys::msg`'s
//! `user_data` layout, in the runtime's own terms.

/// What a CQE's `user_data` says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A cross-shard message: `res` is the value.
    Message { from: u16, tag: u16 },
    /// A wake-up with no content.
    Doorbell,
    /// The sender-side completion of a message whose delivery a ticket awaits.
    Ticket(u32),
    /// The sender-side failure of a fire-and-forget message to `target`.
    NowaitFailed { target: u16 },
    /// Anything else (never produced by this runtime).
    Unknown,
}

const KIND_SHIFT: u32 = 56;
const MESSAGE: u64 = 2;
const DOORBELL: u64 = 3;
const TICKET: u64 = 4;
const NOWAIT_FAILED: u64 = 5;

pub(crate) fn message(from: u16, tag: u16) -> u64 {
    (MESSAGE << KIND_SHIFT) | (u64::from(from) << 16) | u64::from(tag)
}

pub(crate) fn doorbell() -> u64 {
    DOORBELL << KIND_SHIFT
}

pub(crate) fn ticket(id: u32) -> u64 {
    (TICKET << KIND_SHIFT) | u64::from(id)
}

pub(crate) fn nowait_failed(target: u16) -> u64 {
    (NOWAIT_FAILED << KIND_SHIFT) | u64::from(target)
}

pub(crate) fn decode(user_data: u64) -> Tag {
    match user_data >> KIND_SHIFT {
        MESSAGE => Tag::Message { from: (user_data >> 16) as u16, tag: user_data as u16 },
        DOORBELL => Tag::Doorbell,
        TICKET => Tag::Ticket(user_data as u32),
        NOWAIT_FAILED => Tag::NowaitFailed { target: user_data as u16 },
        _ => Tag::Unknown,
    }
}
