//! Fuzzes the task lifecycle of a `spargio::Runtime` on the simulated kernel.
//!
//! The model is `tests/support/runtime_lifecycle.rs`, shared with the proptest
//! suite `tests/runtime_lifecycle.rs`: the first 12 bytes choose the kernel's
//! faults, the rest are two-byte actions (spawn tasks that sleep, yield, never
//! end, poll once, race a zero timeout; abort, drop or await handles; send
//! messages into shards; shut down mid-sequence; write numbered bytes into
//! a simulated socket's peer or close it, and receive from the socket in
//! tasks whose receives are awaited, dropped after one poll, raced against a
//! zero timeout or aborted). Forgetting handles and
//! futures is left to the proptest suite: LeakSanitizer reports what is
//! forgotten as a leak.

#![no_main]
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/runtime_lifecycle.rs"]
#[allow(dead_code)]
mod model;

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this (non-runtime) thread; libFuzzer's
/// `-timeout` reports a hang.
fn wait(_what: &str, fut: model::Waited) {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = fut;
    while fut.as_mut().poll(&mut cx) == Poll::Pending {
        std::thread::park();
    }
}

fuzz_target!(|data: &[u8]| {
    model::run(data, &wait, false);
});
