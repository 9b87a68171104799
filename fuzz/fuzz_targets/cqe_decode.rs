//! Fuzzes the `user_data` tag layout and CQE classification (`sys::msg`).
//!
//! Every input is read as a sequence of CQEs; each is classified and checked
//! against its decoded tag, and every `user_data` must encode back to itself.
//! The first 13 bytes of an input also become a message (shard, tag, value, extra) that
//! must survive encoding into a `MSG_RING` SQE and the kernel's posting.
//! Finally the input is read as 17-byte records (a CQE and a byte choosing how
//! it is sent) for `check::msg::forged_completions`: each CQE is really posted
//! into a simulated ring whose op table holds ops in flight (by a NOP on that
//! ring or a `MSG_RING` from another), and none may reach an op.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use spargio_sys::check;
use spargio_sys::msg::Message;

fuzz_target!(|data: &[u8]| {
    check::msg::decode_arbitrary_cqe(data);
    if let Some(b) = data.get(..13) {
        let m = Message {
            from_shard: u16::from_ne_bytes([b[0], b[1]]),
            tag: u16::from_ne_bytes([b[2], b[3]]),
            value: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            extra: (b[12] & 1 == 1).then(|| u32::from_ne_bytes([b[8], b[9], b[10], b[11]])),
        };
        check::msg::message_delivery(&m, i32::from(b[12] >> 1));
    }
    check::msg::forged_completions(data);
});
