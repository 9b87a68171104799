//! `Interval`: ticks at a fixed period, with a policy for missed ticks.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::sleep::{Sleep, deadline_after, sleep_until};

/// What an [`Interval`] does when ticks were missed: the task took longer than
/// a period between two `tick`s, or the shard was busy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MissedTickBehavior {
    /// Catch up: the missed ticks complete back to back, each reporting its
    /// own scheduled instant, until the schedule is in the future again. The
    /// schedule stays `start + k * period`. (Default.)
    #[default]
    Burst,
    /// Start over: after a late tick, the next one is a full period after the
    /// moment that late tick completed. The schedule shifts.
    Delay,
    /// Drop the missed ticks: the next tick is the next instant of the
    /// original schedule `start + k * period` that lies in the future.
    Skip,
}

impl MissedTickBehavior {
    /// The tick after the one scheduled at `scheduled`, which completed at `now`.
    fn next_after(self, scheduled: Instant, period: Duration, now: Instant) -> Instant {
        let nominal = deadline_after(scheduled, period);
        if nominal > now {
            return nominal;
        }
        match self {
            MissedTickBehavior::Burst => nominal,
            MissedTickBehavior::Delay => deadline_after(now, period),
            MissedTickBehavior::Skip => {
                let behind = now.duration_since(scheduled).as_nanos();
                let periods = behind / period.as_nanos() + 1;
                let skip = u64::try_from(periods.saturating_mul(period.as_nanos())).unwrap_or(u64::MAX);
                deadline_after(scheduled, Duration::from_nanos(skip))
            }
        }
    }
}

/// A stream of ticks every `period`, from [`interval`] or [`interval_at`].
///
/// Each [`tick`](Interval::tick) completes at the next scheduled instant and
/// returns it. Ticks never complete early; when they are late, the
/// [`MissedTickBehavior`] decides what follows.
#[derive(Debug)]
pub struct Interval {
    /// The scheduled instant of the next tick.
    next: Instant,
    period: Duration,
    behavior: MissedTickBehavior,
    sleep: Sleep,
}

/// Ticks every `period`; the first tick completes at once.
///
/// # Panics
///
/// If `period` is zero.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// spargio::run(|_| async {
///     let start = Instant::now();
///     let mut every = spargio::time::interval(Duration::from_millis(2));
///     for _ in 0..3 {
///         every.tick().await;
///     }
///     // Ticks at 0, 2 and 4 ms.
///     assert!(start.elapsed() >= Duration::from_millis(4));
/// })
/// .unwrap();
/// ```
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks every `period`, the first tick at `start`.
///
/// # Panics
///
/// If `period` is zero.
///
/// ```
/// use std::time::{Duration, Instant};
/// use spargio::time::{interval_at, MissedTickBehavior};
///
/// spargio::run(|_| async {
///     let start = Instant::now() + Duration::from_millis(1);
///     let mut every = interval_at(start, Duration::from_millis(1));
///     every.set_missed_tick_behavior(MissedTickBehavior::Skip);
///     assert_eq!(every.tick().await, start);
/// })
/// .unwrap();
/// ```
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "spargio::time::interval: the period must be greater than zero"
    );
    Interval {
        next: start,
        period,
        behavior: MissedTickBehavior::default(),
        sleep: sleep_until(start),
    }
}

impl Interval {
    /// Waits for the next tick and returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick: `Ready(scheduled instant)` once it is due,
    /// `Pending` (with a timer armed for `cx`'s task) before.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let now = Instant::now();
        if now < self.next {
            // Not due: make sure the timer is armed for this task.
            if self.sleep.deadline() != self.next {
                self.sleep.reset(self.next);
            }
            return match Pin::new(&mut self.sleep).poll(cx) {
                Poll::Pending => Poll::Pending,
                // Became due between the two clock reads.
                Poll::Ready(()) => self.complete(Instant::now()),
            };
        }
        self.complete(now)
    }

    fn complete(&mut self, now: Instant) -> Poll<Instant> {
        let scheduled = self.next;
        self.next = self.behavior.next_after(scheduled, self.period, now);
        Poll::Ready(scheduled)
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        self.next = deadline_after(Instant::now(), self.period);
        self.sleep.reset(self.next);
    }

    /// Restarts the schedule: the next tick completes at once.
    pub fn reset_immediately(&mut self) {
        self.next = Instant::now();
        self.sleep.reset(self.next);
    }

    /// Restarts the schedule: the next tick is at `at`.
    pub fn reset_at(&mut self, at: Instant) {
        self.next = at;
        self.sleep.reset(at);
    }

    /// The scheduled instant of the next tick.
    pub fn next_tick(&self) -> Instant {
        self.next
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The policy for missed ticks.
    pub fn missed_tick_behavior(&self) -> MissedTickBehavior {
        self.behavior
    }

    /// Sets the policy for missed ticks.
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.behavior = behavior;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_tick_arithmetic() {
        let t0 = Instant::now();
        let p = Duration::from_millis(10);
        let late = t0 + Duration::from_millis(35);
        assert_eq!(MissedTickBehavior::Burst.next_after(t0, p, late), t0 + p);
        assert_eq!(MissedTickBehavior::Delay.next_after(t0, p, late), late + p);
        assert_eq!(MissedTickBehavior::Skip.next_after(t0, p, late), t0 + 4 * p);
        // Exactly on a later grid point: the next one.
        assert_eq!(MissedTickBehavior::Skip.next_after(t0, p, t0 + 3 * p), t0 + 4 * p);
        // On time: every behaviour keeps the grid.
        for b in [
            MissedTickBehavior::Burst,
            MissedTickBehavior::Delay,
            MissedTickBehavior::Skip,
        ] {
            assert_eq!(b.next_after(t0, p, t0 + Duration::from_millis(3)), t0 + p);
        }
    }
}
