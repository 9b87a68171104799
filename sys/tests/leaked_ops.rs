//! What the kernel may still write is leaked, never freed: a dropped op
//! table on the simulated kernel, so that Miri checks the simulator's write
//! into the leaked buffer for real.
//!
//! These tests leak on purpose, which Miri's leak check reports: CI runs this
//! file under Miri on its own with `-Zmiri-ignore-leaks`, and skips it (by the
//! `intentionally_leaks` prefix) in the main Miri run.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use spargio_sys::op::InFlight;
use spargio_sys::op::fs::Read;
use spargio_sys::ring::{Ring, RingConfig};
use spargio_sys::sim::SimKernel;

/// A table dropped while its op's SQE is still queued leaks the op: the
/// simulated kernel then writes into leaked memory, never into memory freed
/// and handed out again (Miri checks the write itself).
#[test]
fn intentionally_leaks_a_dropped_op_table_the_kernel_writes_later() {
    let kernel = SimKernel::new();
    let file = kernel.create_file(b"PWNED".to_vec());
    let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    // SAFETY: `file` is a simulated fd number that no one else owns; this
    // `OwnedFd` is never dropped (the test's `Arc` is forgotten below, the op's
    // is leaked with the table), so no real fd is ever closed through it.
    let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(file) });
    let mut table = InFlight::default();
    let read = Read::new(fd.clone(), Vec::with_capacity(64), 0);
    assert!(table.submit(&mut ring, Box::new(read), ()).is_ok());
    std::mem::forget(fd);
    // The SQE is queued; the simulated kernel runs it at the next enter.
    drop(table);
    let canary: Box<[u8]> = vec![0u8; 64].into_boxed_slice();
    ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ring.pop_cqe().unwrap().res, 5);
    assert!(!canary.windows(5).any(|w| w == b"PWNED"));
}

/// The lifecycle check with the op table dropped mid-sequence: the ops in
/// flight are leaked (never released) while the kernel still runs their
/// queued SQEs and fires their timeouts, writing into leaked memory.
#[test]
fn intentionally_leaks_lifecycle_tables_dropped_mid_sequence() {
    use spargio_sys::check::lifecycle::{self, Action, Mode};
    let actions = [
        Action::Read { len: 32, offset: 3 },
        Action::Send { len: 10 },
        Action::Submit,
        Action::Timeout {
            ms: 5,
            count: 0,
            multishot: true,
        },
        Action::Recv { len: 16 },
        Action::Read { len: 64, offset: 100 },
        Action::Reap { max: 1 },
        Action::DropTable,
    ];
    lifecycle::run_actions(spargio_sys::sim::Faults::default(), &actions, Mode::LeakTable);
    // Arbitrary inputs in the leaking mode (a few under Miri).
    let mut state = 0x5eed_u64;
    for _ in 0..if cfg!(miri) { 3 } else { 300 } {
        let input: Vec<u8> = (0..if cfg!(miri) { 60 } else { 240 })
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) as u8
            })
            .collect();
        lifecycle::run(&input, Mode::LeakTable);
    }
}
