//! `Sleep`: a resettable deadline, and where it registers.
//!
//! On a shard a `Sleep` registers in that shard's wheel. Anywhere else (a
//! plain thread, a Tokio task) it registers in one process-wide wheel served
//! by a single timer thread, started on first use: never one thread per sleep.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::wheel::{RemoteOp, TimerKey, TimerSite, Timers};
use crate::shard;

/// How far away "never" is: the deadline of a sleep whose duration cannot be
/// added to now (about 30 years, as Tokio does).
const FAR_FUTURE: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);

/// `now + d`, clamped to about 30 years from now when it cannot be represented.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// The process-wide wheel for sleeps outside the runtime.
struct GlobalTimers {
    state: Mutex<GlobalState>,
    cv: Condvar,
}

struct GlobalState {
    timers: Timers,
    /// When the timer thread will next look at the wheel on its own.
    wake_at: Option<Instant>,
}

fn global() -> &'static GlobalTimers {
    static GLOBAL: OnceLock<&'static GlobalTimers> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let g: &'static GlobalTimers = Box::leak(Box::new(GlobalTimers {
            state: Mutex::new(GlobalState {
                timers: Timers::default(),
                wake_at: None,
            }),
            cv: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("spargio-timer".into())
            .spawn(move || timer_thread(g))
            .expect("spawn the spargio timer thread");
        g
    })
}

fn lock_global() -> MutexGuard<'static, GlobalState> {
    global().state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The timer thread: fires due timers, then waits on the condvar until the
/// next deadline or until an earlier timer is inserted.
fn timer_thread(g: &'static GlobalTimers) {
    let mut st = g.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        let due = st.timers.take_due(now);
        if !due.is_empty() {
            drop(st);
            due.into_iter().for_each(Waker::wake);
            st = g.state.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let next = st.timers.next_deadline();
        st.wake_at = next;
        st = match next {
            None => g.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                g.cv.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0
            }
        };
    }
}

/// Arms a timer in the process-wide wheel, waking the timer thread if it
/// would otherwise sleep past `deadline`.
fn global_insert(deadline: Instant, waker: Waker) -> TimerKey {
    let mut st = lock_global();
    let key = st.timers.insert(deadline, waker);
    if st.wake_at.is_none_or(|w| deadline < w) {
        st.wake_at = Some(deadline);
        global().cv.notify_one();
    }
    key
}

/// Armed timers on the calling shard's wheel (after applying cancels other
/// threads posted to it), or `None` off a shard. For tests: a dropped timer
/// must not stay armed.
#[doc(hidden)]
pub fn shard_timer_count() -> Option<usize> {
    shard::with_local(|l| {
        let mut t = l.timers.try_borrow_mut().ok()?;
        let graveyard = t.apply_pending();
        let n = t.len();
        drop(t);
        drop(graveyard);
        Some(n)
    })
    .flatten()
}

/// Armed timers in the process-wide wheel that serves sleeps outside the
/// runtime. For tests.
#[doc(hidden)]
pub fn global_timer_count() -> usize {
    lock_global().timers.len()
}

/// Where a [`Sleep`] is armed.
#[derive(Debug)]
enum Registration {
    None,
    /// In a shard's wheel, named by its site.
    Shard {
        site: Arc<TimerSite>,
        key: TimerKey,
    },
    /// In the process-wide wheel.
    Global {
        key: TimerKey,
    },
}

/// Future of [`sleep`] and [`sleep_until`]: completes at its deadline.
///
/// A `Sleep` is a deadline that can be moved ([`Sleep::reset`]) while a task
/// waits on it. It registers a timer on its first poll, on the shard that
/// polls it (or in the process-wide wheel off the runtime), and removes the
/// timer when it is dropped, whichever thread drops it. It is `Unpin`, so it
/// can be polled by `&mut` in a loop or a `select`-style combinator.
///
/// A `Sleep` never completes before its deadline. One whose deadline has
/// already passed when it is first polled yields once (wakes its task and
/// returns `Pending`) and completes on the next poll, so `sleep(ZERO)` in a
/// loop lets other tasks run.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    reg: Registration,
    /// True once the sleep registered a timer or yielded: a due sleep then
    /// completes without yielding again.
    yielded: bool,
}

/// Waits until `duration` has passed.
///
/// Works on every shard and outside the runtime (plain threads, Tokio tasks).
/// A duration too long to add to now (such as `Duration::MAX`) waits about 30
/// years; `Duration::ZERO` yields once and completes.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// spargio::run(|_| async {
///     let start = Instant::now();
///     spargio::time::sleep(Duration::from_millis(5)).await;
///     assert!(start.elapsed() >= Duration::from_millis(5));
/// })
/// .unwrap();
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep::new(deadline_after(Instant::now(), duration))
}

/// Waits until `deadline`. A deadline in the past completes at once (after
/// one yield).
///
/// ```
/// use std::time::{Duration, Instant};
///
/// spargio::run(|_| async {
///     let deadline = Instant::now() + Duration::from_millis(5);
///     spargio::time::sleep_until(deadline).await;
///     assert!(Instant::now() >= deadline);
/// })
/// .unwrap();
/// ```
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep::new(deadline)
}

impl Sleep {
    fn new(deadline: Instant) -> Sleep {
        Sleep {
            deadline,
            reg: Registration::None,
            yielded: false,
        }
    }

    /// The instant this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// True once the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline to `deadline`, earlier or later.
    ///
    /// An armed timer is moved in place and keeps the waker of the task that
    /// last polled it, so the task is woken at the new deadline even if it
    /// does not poll the sleep again first. This holds when the sleep is reset
    /// from another shard or thread than the one it is armed on (the owning
    /// shard is told, and woken if the new deadline is earlier).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use spargio::time::sleep;
    ///
    /// spargio::run(|_| async {
    ///     let start = Instant::now();
    ///     let mut idle = sleep(Duration::from_secs(3600));
    ///     idle.reset(start + Duration::from_millis(2));
    ///     idle.await;
    ///     assert!(start.elapsed() >= Duration::from_millis(2));
    /// })
    /// .unwrap();
    /// ```
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        let moved = match &self.reg {
            Registration::None => false,
            Registration::Shard { site, key } => {
                let (site, key) = (site.clone(), *key);
                let local = shard::with_local(|l| {
                    let mut t = l.timers.try_borrow_mut().ok()?;
                    Arc::ptr_eq(t.site(), &site).then(|| t.reschedule(key, deadline))
                })
                .flatten();
                match local {
                    Some(moved) => moved,
                    None => {
                        // Armed on another shard: it applies the move (and is
                        // woken for it). If the timer fired meanwhile, its task
                        // was woken and the next poll registers afresh.
                        site.post(RemoteOp::Reschedule(key, deadline));
                        true
                    }
                }
            }
            Registration::Global { key } => {
                let mut st = lock_global();
                let moved = st.timers.reschedule(*key, deadline);
                if moved && st.wake_at.is_none_or(|w| deadline < w) {
                    st.wake_at = Some(deadline);
                    global().cv.notify_one();
                }
                moved
            }
        };
        if !moved {
            self.reg = Registration::None;
        }
        self.yielded = moved;
    }

    /// Refreshes the waker of the armed timer. False when there is none (it
    /// fired, or it is armed somewhere this poll should not use).
    fn refresh(&mut self, waker: &Waker) -> bool {
        match &self.reg {
            Registration::None => false,
            Registration::Shard { site, key } => {
                let (site, key) = (site.clone(), *key);
                let local = shard::with_local(|l| {
                    let mut t = l.timers.try_borrow_mut().ok()?;
                    Arc::ptr_eq(t.site(), &site).then(|| t.update(key, waker))
                })
                .flatten();
                match local {
                    Some((armed, old)) => {
                        drop(old);
                        if !armed {
                            self.reg = Registration::None;
                        }
                        armed
                    }
                    None => {
                        // The task moved to another shard or thread: re-arm here.
                        self.deregister();
                        false
                    }
                }
            }
            Registration::Global { key } => {
                if shard::with_local(|_| ()).is_some() {
                    // Now on a shard: move to its wheel.
                    self.deregister();
                    return false;
                }
                let (armed, old) = lock_global().timers.update(*key, waker);
                drop(old);
                if !armed {
                    self.reg = Registration::None;
                }
                armed
            }
        }
    }

    fn register(&mut self, waker: &Waker) {
        let deadline = self.deadline;
        let on_shard = shard::with_local(|l| {
            let mut t = l.timers.try_borrow_mut().ok()?;
            t.site().set_owner(&l.shared, l.shard);
            let key = t.insert(deadline, waker.clone());
            Some(Registration::Shard {
                site: t.site().clone(),
                key,
            })
        })
        .flatten();
        self.reg = match on_shard {
            Some(reg) => reg,
            None => Registration::Global {
                key: global_insert(deadline, waker.clone()),
            },
        };
    }

    /// Disarms the timer, wherever it is armed.
    fn deregister(&mut self) {
        match std::mem::replace(&mut self.reg, Registration::None) {
            Registration::None => {}
            Registration::Shard { site, key } => {
                let local = shard::with_local(|l| {
                    let mut t = l.timers.try_borrow_mut().ok()?;
                    Arc::ptr_eq(t.site(), &site).then(|| t.remove(key))
                })
                .flatten();
                match local {
                    // The waker is dropped here, after the wheel's borrow ended.
                    Some(waker) => drop(waker),
                    // Armed on another shard (or the wheel is busy): the owner
                    // removes it at its next turn, before firing anything.
                    None => site.post(RemoteOp::Cancel(key)),
                }
            }
            Registration::Global { key } => {
                let waker = lock_global().timers.remove(key);
                drop(waker);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            if !this.yielded {
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.deregister();
            return Poll::Ready(());
        }
        this.yielded = true;
        if !this.refresh(cx.waker()) {
            this.register(cx.waker());
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.deregister();
    }
}
