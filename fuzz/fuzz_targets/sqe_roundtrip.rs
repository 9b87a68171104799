//! Fuzzes the SQE encoders and the decoder (`sys::sqe`).
//!
//! Every input is read twice: as an encoder type and its field values, which
//! must encode and decode back to the same op with `user_data`, personality
//! and SQE flags intact; and as a raw 64-byte entry (missing bytes zero),
//! which must decode without panicking and, if it decodes, re-encode to the
//! same bytes.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use spargio_sys::check;
use spargio_sys::sqe::SQE_SIZE;

fuzz_target!(|data: &[u8]| {
    check::sqe::roundtrip_bytes(data);

    let mut raw = [0u8; SQE_SIZE];
    let n = data.len().min(SQE_SIZE);
    raw[..n].copy_from_slice(&data[..n]);
    check::sqe::decode_arbitrary(&raw);
});
