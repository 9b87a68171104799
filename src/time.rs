//! Time: `sleep`, `sleep_until`, `timeout`, `timeout_at`, `interval`.
//!
//! # Clock
//!
//! spargio uses the standard monotonic clock: every deadline is a
//! [`std::time::Instant`] (re-exported here as [`Instant`]), so deadlines
//! computed by other code, other runtimes or other threads mix freely with
//! spargio's. Timers resolve to one microsecond and are rounded *up*: a sleep
//! never completes before its deadline, and may complete a little after it
//! (by the time the shard takes to wake and run the task).
//!
//! # Where timers live
//!
//! Each shard keeps its timers in a hierarchical timing wheel (O(1) insert
//! and cancel; see `time/wheel.rs` for the structure). The earliest deadline
//! is the timeout of the shard's `io_uring_enter` wait (or of its condition
//! variable on the Queue backend), so a sleeping shard wakes when its next
//! timer is due and an idle runtime with pending timers does not tick.
//!
//! A [`Sleep`] registers on the shard that first polls it; dropped there, its
//! timer is removed at once. Dropped (or [reset](Sleep::reset)) on another
//! shard or thread, the operation is posted to the owning shard, which applies
//! it before it fires anything. Off the runtime (a plain thread, a Tokio task)
//! timers go to one process-wide wheel served by a single timer thread.
//!
//! # Extremes
//!
//! - `sleep(Duration::ZERO)` and deadlines already in the past yield once and
//!   complete on the next poll.
//! - A duration that cannot be added to now (`Duration::MAX`) waits about 30
//!   years; far deadlines cost one armed timer and no wake-ups.

mod interval;
mod sleep;
mod timeout;
pub(crate) mod wheel;

pub use interval::{Interval, MissedTickBehavior, interval, interval_at};
pub use sleep::{Sleep, sleep, sleep_until};
#[doc(hidden)]
pub use sleep::{global_timer_count, shard_timer_count};
pub use std::time::{Duration, Instant};
pub use timeout::{Timeout, TimeoutError, timeout, timeout_at};
