//! Fuzzes the SQ/CQ protocol against the simulated kernel (`sys::ring`, `sys::sim`).
//!
//! Every input is read twice: as a command stream for `check::ring::model_ops`
//! (push NOP/TIMEOUT/cancel, submit, flush, pop, advance the clock, drain on
//! a ring whose indices start near `u32::MAX`, compared with a plain model);
//! and, when it has at least 18 bytes, as a seed, a fault mix and a count for
//! `check::ring::no_lost_completions`, plus a head/tail/size triple for
//! `check::ring::index_math`.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use spargio_sys::check;

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    check::ring::model_ops(data);
    if data.len() >= 18 {
        let seed = u64_at(data, 0);
        let bits = u64_at(data, 8);
        let n = 1 + u32::from(u16::from_le_bytes([data[16], data[17]]) % 512);
        check::ring::no_lost_completions(seed, n, &check::ring::faults_from_bits(bits));
        let head = seed as u32;
        let tail = (seed >> 32) as u32;
        check::ring::index_math(head, tail, 1 << (bits % 17));
    }
});
