//! `timeout` and `timeout_at`: run a future against a deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::sleep::{Sleep, sleep, sleep_until};

/// The deadline of a [`timeout`] or [`timeout_at`] passed before its future
/// finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TimeoutError;

impl std::fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for TimeoutError {}

impl From<TimeoutError> for std::io::Error {
    fn from(_: TimeoutError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, TimeoutError)
    }
}

/// Future of [`timeout`] and [`timeout_at`].
///
/// The inner future is boxed (one allocation per timeout), which keeps this
/// type nameable and `Unpin` without unsafe pin projection.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    fut: Pin<Box<F>>,
    sleep: Sleep,
}

/// Runs `fut` for at most `duration`.
///
/// The future is polled first on every poll, so a future that is ready in
/// time wins even when the deadline passed meanwhile. When the time runs out
/// the `Timeout` returns the error; dropping it then drops `fut`, cancelling
/// whatever `fut` started.
///
/// # Errors
///
/// [`TimeoutError`] when `duration` passes before `fut` completes.
///
/// ```
/// use std::time::Duration;
/// use spargio::time::{sleep, timeout, TimeoutError};
///
/// spargio::run(|_| async {
///     assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
///     let slow = sleep(Duration::from_secs(3600));
///     assert_eq!(timeout(Duration::from_millis(2), slow).await, Err(TimeoutError));
/// })
/// .unwrap();
/// ```
pub fn timeout<F: Future>(duration: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut: Box::pin(fut),
        sleep: sleep(duration),
    }
}

/// Runs `fut` until `deadline` at the latest. As [`timeout`], with an instant.
///
/// # Errors
///
/// [`TimeoutError`] when `deadline` passes before `fut` completes.
///
/// ```
/// use std::time::{Duration, Instant};
/// use spargio::time::timeout_at;
///
/// spargio::run(|_| async {
///     let deadline = Instant::now() + Duration::from_secs(5);
///     assert_eq!(timeout_at(deadline, async { "done" }).await, Ok("done"));
/// })
/// .unwrap();
/// ```
pub fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut: Box::pin(fut),
        sleep: sleep_until(deadline),
    }
}

impl<F> Timeout<F> {
    /// The inner future.
    pub fn get_ref(&self) -> &F {
        &self.fut
    }

    /// The inner future, pinned.
    pub fn get_pin_mut(&mut self) -> Pin<&mut F> {
        self.fut.as_mut()
    }

    /// Gives up the deadline and returns the inner future.
    pub fn into_inner(self) -> Pin<Box<F>> {
        self.fut
    }

    /// The instant the timeout fires at.
    pub fn deadline(&self) -> Instant {
        self.sleep.deadline()
    }

    /// Moves the deadline (see [`Sleep::reset`]).
    pub fn reset(&mut self, deadline: Instant) {
        self.sleep.reset(deadline);
    }
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
