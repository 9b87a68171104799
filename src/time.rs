//! Timers: `sleep`, `sleep_until`, `timeout`.
//!
//! Each shard keeps its timers in one ordered map; the earliest deadline is
//! the timeout of the shard's `io_uring_enter` wait, so a sleeping shard wakes
//! exactly when its next timer is due, and an idle runtime does not tick.
//! Outside the runtime (plain threads, other runtimes) timers go to one
//! shared timer thread, never one thread per sleep.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::shard;

/// A shard's timers, ordered by deadline.
#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

impl Timers {
    /// Adds a timer; returns its key.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> (Instant, u64) {
        self.next_id += 1;
        let key = (deadline, self.next_id);
        self.map.insert(key, waker);
        key
    }

    /// Replaces a timer's waker; false if it already fired.
    pub(crate) fn update(&mut self, key: (Instant, u64), waker: &Waker) -> bool {
        match self.map.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&mut self, key: (Instant, u64)) {
        self.map.remove(&key);
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.0)
    }

    /// Removes and returns the wakers of every timer due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(entry) = self.map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }
}

/// The timer thread for sleeps outside the runtime.
struct GlobalTimers {
    timers: Mutex<Timers>,
    cv: Condvar,
}

fn global() -> &'static GlobalTimers {
    static GLOBAL: OnceLock<&'static GlobalTimers> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let g: &'static GlobalTimers =
            Box::leak(Box::new(GlobalTimers { timers: Mutex::new(Timers::default()), cv: Condvar::new() }));
        std::thread::Builder::new()
            .name("spargio-timer".into())
            .spawn(move || {
                let mut timers = g.timers.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let due = timers.take_due(Instant::now());
                    if !due.is_empty() {
                        drop(timers);
                        due.into_iter().for_each(Waker::wake);
                        timers = g.timers.lock().unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    timers = match timers.next_deadline() {
                        None => g.cv.wait(timers).unwrap_or_else(|p| p.into_inner()),
                        Some(d) => {
                            let wait = d.saturating_duration_since(Instant::now());
                            g.cv.wait_timeout(timers, wait).unwrap_or_else(|p| p.into_inner()).0
                        }
                    };
                }
            })
            .expect("spawn the spargio timer thread");
        g
    })
}

/// Where a [`Sleep`] is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registration {
    None,
    Shard { shard: usize, key: (Instant, u64) },
    Global { key: (Instant, u64) },
}

/// Future of [`sleep`] and [`sleep_until`]: completes at its deadline.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Option<Instant>,
    reg: Registration,
}

/// Waits until `duration` has passed.
///
/// ```
/// spargio::run(|_| async {
///     let start = std::time::Instant::now();
///     spargio::time::sleep(std::time::Duration::from_millis(5)).await;
///     assert!(start.elapsed() >= std::time::Duration::from_millis(5));
/// })
/// .unwrap();
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep { deadline: Instant::now().checked_add(duration), reg: Registration::None }
}

/// Waits until `deadline`. A deadline in the past completes at once.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline: Some(deadline), reg: Registration::None }
}

impl Sleep {
    /// The deadline, or `None` for one too far away to represent (never fires).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn deregister(&mut self) {
        match std::mem::replace(&mut self.reg, Registration::None) {
            Registration::None => {}
            Registration::Shard { shard, key } => {
                // A Sleep dropped on another shard leaves a stale entry there; it
                // fires once, waking nothing that still waits on it.
                shard::with_local(|l| {
                    if l.shard == shard {
                        l.timers.borrow_mut().remove(key);
                    }
                });
            }
            Registration::Global { key } => {
                global().timers.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending; // Unrepresentably far away: never.
        };
        if Instant::now() >= deadline {
            self.deregister();
            return Poll::Ready(());
        }
        let reg = self.reg;
        let still = match reg {
            Registration::Shard { shard, key } => {
                shard::with_local(|l| l.shard == shard && l.timers.borrow_mut().update(key, cx.waker())) == Some(true)
            }
            Registration::Global { key } => global().timers.lock().unwrap_or_else(|p| p.into_inner()).update(key, cx.waker()),
            Registration::None => false,
        };
        if still {
            return Poll::Pending;
        }
        self.deregister();
        let reg = shard::with_local(|l| Registration::Shard {
            shard: l.shard,
            key: l.timers.borrow_mut().insert(deadline, cx.waker().clone()),
        });
        self.reg = match reg {
            Some(r) => r,
            None => {
                let g = global();
                let key = g.timers.lock().unwrap_or_else(|p| p.into_inner()).insert(deadline, cx.waker().clone());
                g.cv.notify_one();
                Registration::Global { key }
            }
        };
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// The deadline of a [`timeout`] passed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutError;

impl std::fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for TimeoutError {}

/// Future of [`timeout`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    fut: Pin<Box<F>>,
    sleep: Sleep,
}

/// Runs `fut` for at most `duration`; the future is dropped (cancelling what
/// it started) when the time runs out.
///
/// # Errors
///
/// [`TimeoutError`] when `duration` passes first.
pub fn timeout<F: Future>(duration: Duration, fut: F) -> Timeout<F> {
    Timeout { fut: Box::pin(fut), sleep: sleep(duration) }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, TimeoutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(TimeoutError)),
            Poll::Pending => Poll::Pending,
        }
    }
}
