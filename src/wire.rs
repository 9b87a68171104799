//! How the runtime names its CQEs, in its own terms, over the `user_data`
//! layout of `spargio_sys::msg`.

use spargio_sys::msg::{self, MessageTag, OpId, UserData};

/// Internal kind: the sender-side CQE of a message a ticket waits for; data = ticket id.
const SEND_TICKET: u16 = 16;
/// Internal kind: the sender-side failure of a mailbox doorbell; data = target shard.
const MAIL_DOORBELL_FAILED: u16 = 17;

/// What a CQE's `user_data` says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A cross-shard message: `res` is the value.
    Message { from: u16, tag: u16 },
    /// A wake-up; from a shard of this runtime, also "take my mailbox" (see `mail`).
    Doorbell { from: u16 },
    /// The sender-side completion of a message whose delivery a ticket awaits.
    Ticket(u32),
    /// The sender-side failure of a fire-and-forget message to `target`.
    NowaitFailed { target: u16 },
    /// The sender-side failure of a mailbox doorbell to `target`.
    MailDoorbellFailed { target: u16 },
    /// An op of the shard's in-flight table.
    Op(OpId),
    /// Completions nobody waits for (cancel requests), and anything unknown.
    Ignore,
}

pub(crate) fn message(from: u16, tag: u16) -> u64 {
    UserData::message(MessageTag {
        from_shard: from,
        tag,
        flags_payload: false,
    })
    .get()
}

pub(crate) fn doorbell(from: u16) -> u64 {
    UserData::doorbell(from).get()
}

pub(crate) fn ticket(id: u32) -> u64 {
    UserData::internal(SEND_TICKET, id).get()
}

pub(crate) fn nowait_failed(target: u16) -> u64 {
    UserData::internal(msg::internal::MSG_RING_SENT, u32::from(target)).get()
}

pub(crate) fn mail_doorbell_failed(target: u16) -> u64 {
    UserData::internal(MAIL_DOORBELL_FAILED, u32::from(target)).get()
}

pub(crate) fn decode(user_data: u64) -> Tag {
    match msg::decode(user_data) {
        msg::Tag::Message(m) => Tag::Message {
            from: m.from_shard,
            tag: m.tag,
        },
        msg::Tag::Doorbell { from_shard } => Tag::Doorbell { from: from_shard },
        msg::Tag::Internal {
            kind: SEND_TICKET,
            data,
        } => Tag::Ticket(data),
        msg::Tag::Internal {
            kind: msg::internal::MSG_RING_SENT,
            data,
        } => Tag::NowaitFailed { target: data as u16 },
        msg::Tag::Internal {
            kind: MAIL_DOORBELL_FAILED,
            data,
        } => Tag::MailDoorbellFailed { target: data as u16 },
        msg::Tag::Op(id) => Tag::Op(id),
        msg::Tag::Internal { .. } | msg::Tag::Ignore | msg::Tag::Unknown(_) => Tag::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_tags_round_trip() {
        assert_eq!(decode(message(3, 9)), Tag::Message { from: 3, tag: 9 });
        assert_eq!(decode(doorbell(1)), Tag::Doorbell { from: 1 });
        assert_eq!(
            decode(mail_doorbell_failed(4)),
            Tag::MailDoorbellFailed { target: 4 }
        );
        assert_eq!(decode(ticket(77)), Tag::Ticket(77));
        assert_eq!(decode(nowait_failed(5)), Tag::NowaitFailed { target: 5 });
        assert_eq!(decode(0), Tag::Ignore);
    }

    /// Every `user_data` the runtime's message layer puts on a `MSG_RING`
    /// (what a message, a doorbell, a ticket or a failed send carries) is a
    /// non-op tag, for every sender, tag, ticket id and target: no public
    /// messaging API can produce a completion the dispatch reads as an op's.
    #[test]
    fn no_message_tag_decodes_as_an_op() {
        let not_op = |ud: u64| !matches!(decode(ud), Tag::Op(_));
        for a in 0..=u16::MAX {
            assert!(not_op(doorbell(a)));
            assert!(not_op(nowait_failed(a)));
            assert!(not_op(mail_doorbell_failed(a)));
            for b in [0, 1, 0x7fff, 0x8000, u16::MAX, a] {
                assert!(not_op(message(a, b)));
                assert!(not_op(message(b, a)));
            }
        }
        for id in (0..=u32::MAX).step_by(65_521).chain([u32::MAX]) {
            assert!(not_op(ticket(id)));
        }
    }
}
