//! Fuzzes the op lifecycle on the simulated kernel (`sys::op`, `sys::sim`).
//!
//! Every input is read by `check::lifecycle::run`: its first 12 bytes
//! choose the kernel's faults (reordered, delayed and overflowed completions,
//! short transfers, `EAGAIN`, `EINTR`, `EBUSY`, cancels that lose their race),
//! the rest is a sequence of three-byte actions (start reads, receives,
//! sends, timeouts single or multishot and NOPs with drop-tracking buffers;
//! cancel, submit, flush, reap, advance the clock, close the data file).
//! The op table lives to the end (`Mode::Complete`): the mode that drops it
//! mid-sequence leaks on purpose, which LeakSanitizer would report, so it runs
//! in `sys/tests/leaked_ops.rs` (natively and under Miri) instead.

#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use spargio_sys::check::lifecycle::{self, Mode};

fuzz_target!(|data: &[u8]| {
    lifecycle::run(data, Mode::Complete);
});
