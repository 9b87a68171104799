//! Runtime statistics: per-shard counters and queue depths.

use std::sync::atomic::AtomicU64;

/// Counters one shard updates (Relaxed: statistics, not synchronisation).
#[derive(Default, Debug)]
pub(crate) struct ShardCounters {
    pub(crate) spawned: AtomicU64,
    pub(crate) polled: AtomicU64,
    pub(crate) stolen: AtomicU64,
    pub(crate) steal_attempts: AtomicU64,
    pub(crate) steal_success: AtomicU64,
    pub(crate) stealable_backpressure: AtomicU64,
    pub(crate) msgs_sent: AtomicU64,
    pub(crate) msgs_received: AtomicU64,
    pub(crate) msg_send_failures: AtomicU64,
    pub(crate) msg_batches: AtomicU64,
    pub(crate) doorbells_sent: AtomicU64,
    pub(crate) doorbells_skipped: AtomicU64,
    pub(crate) doorbell_failures: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) wakeups: AtomicU64,
    pub(crate) cq_overflows: AtomicU64,
    pub(crate) ops_leaked: AtomicU64,
    pub(crate) file_sessions: AtomicU64,
    pub(crate) fixed_buf_ops: AtomicU64,
    /// Ops submitted on this shard's ring (or, on the Queue backend, charged
    /// to this shard) whose final completion has not come yet. Updated once
    /// at submission and once at the final completion, by the shard itself.
    pub(crate) ops_in_flight: AtomicU64,
}

/// One shard's numbers in a [`RuntimeStats`] snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Shard index.
    pub shard: usize,
    /// Tasks spawned onto this shard.
    pub spawned: u64,
    /// Task polls this shard ran.
    pub polled: u64,
    /// Tasks this shard took from other shards.
    pub stolen: u64,
    /// Steal attempts (victims found with queued work).
    pub steal_attempts: u64,
    /// Steal attempts that took at least one task.
    pub steal_success: u64,
    /// Spawns refused because this shard's stealable queue was full.
    pub stealable_backpressure: u64,
    /// Messages sent by tasks on this shard.
    pub msgs_sent: u64,
    /// Messages delivered to this shard.
    pub msgs_received: u64,
    /// Fire-and-forget messages the kernel refused (each released its credit).
    pub msg_send_failures: u64,
    /// Batches of several messages this shard handed to another shard behind
    /// one `MSG_RING` doorbell (a lone message travels as its own `MSG_RING`).
    pub msg_batches: u64,
    /// Doorbells rung to wake this shard.
    pub doorbells_sent: u64,
    /// Wake requests that needed no doorbell (the shard was awake).
    pub doorbells_skipped: u64,
    /// Doorbells the kernel refused: from outside the runtime (the shard stays
    /// marked parked, so the next wake rings again), or a shard's mailbox
    /// doorbell (retried on its next turn).
    pub doorbell_failures: u64,
    /// Times the shard went to sleep.
    pub parks: u64,
    /// Times it woke up.
    pub wakeups: u64,
    /// Times the kernel reported CQ overflow (completions were held back, not lost).
    pub cq_overflows: u64,
    /// Ops still held by the kernel at shutdown, leaked (never freed) by design.
    pub ops_leaked: u64,
    /// File sessions started with a registered-file slot on this shard.
    pub file_sessions: u64,
    /// `READ_FIXED`/`WRITE_FIXED` ops submitted for this shard's registered buffers.
    pub fixed_buf_ops: u64,
    /// Ops in flight on this shard's ring now (submitted, final completion not
    /// yet reaped). On the Queue backend: ops charged to this shard that the
    /// blocking pool has not finished. The unbound lane
    /// ([`UringNativeAny`](crate::UringNativeAny)) picks shards by this number.
    pub ops_in_flight: u64,
    /// Tasks in the pinned inbox now.
    pub inbox_depth: usize,
    /// Tasks in the stealable queue now.
    pub stealable_depth: usize,
}

/// A snapshot of a runtime's counters, from [`RuntimeHandle::stats_snapshot`](crate::RuntimeHandle::stats_snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// One entry per shard, by index.
    pub shards: Vec<ShardStats>,
    /// Tasks alive (spawned and not finished).
    pub live_tasks: usize,
}

impl RuntimeStats {
    /// Sum of a counter over all shards.
    pub fn total(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }
}
