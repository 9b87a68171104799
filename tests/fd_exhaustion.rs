//! A runtime whose process has run out of fds keeps working where it needs
//! none: a parked shard is still woken from outside (`block_on`), and
//! shutdown still wakes and joins it. Its own test binary, because it lowers
//! a process-wide limit.
#![forbid(unsafe_code)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{Kernel, RestoreLimit, builder, limit_leaving, recv, until};
use spargio::sys::os::{nofile_limit, set_nofile_limit};

#[test]
fn a_parked_runtime_wakes_and_shuts_down_without_free_fds() {
    for kernel in [Kernel::IoUring, Kernel::Queue] {
        let Some(b) = builder(kernel, 2) else { continue };
        let rt = common::build(kernel, b.spin_before_park(Duration::ZERO));
        let h = rt.handle().clone();
        until("both shards park", || {
            h.stats_snapshot().shards.iter().all(|s| s.parks > 0)
        });
        let (soft, _) = nofile_limit().unwrap();
        let restore = RestoreLimit(soft);
        set_nofile_limit(limit_leaving(4)).unwrap();
        // Take every fd that is left.
        let mut taken = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            taken.push(f);
        }
        assert!(!taken.is_empty() && taken.len() <= 8, "took {} fds", taken.len());
        // On another thread, so that a hang fails the test instead of stalling it.
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let answer = rt.block_on(async { 41 + 1 }).unwrap();
            drop(rt);
            done_tx.send(answer).unwrap();
        });
        assert_eq!(recv("block_on and shutdown without free fds", &done_rx), 42);
        drop(taken);
        drop(restore);
    }
}
