//! Listeners for any catchable Unix signal.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::registry::{self, Slot};

/// A signal number a listener can be made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalKind(i32);

impl SignalKind {
    /// Any signal by number (`libc::SIGUSR1`, a real-time signal, …). Whether
    /// it can be watched is checked by [`signal`].
    pub const fn from_raw(signo: i32) -> SignalKind {
        SignalKind(signo)
    }

    /// The signal number.
    pub const fn as_raw_value(&self) -> i32 {
        self.0
    }

    /// `SIGINT`: interrupt from the terminal (Ctrl-C).
    pub const fn interrupt() -> SignalKind {
        SignalKind(libc::SIGINT)
    }

    /// `SIGTERM`: a polite request to terminate.
    pub const fn terminate() -> SignalKind {
        SignalKind(libc::SIGTERM)
    }

    /// `SIGHUP`: the terminal hung up; by convention, reload configuration.
    pub const fn hangup() -> SignalKind {
        SignalKind(libc::SIGHUP)
    }

    /// `SIGQUIT`: quit from the terminal (Ctrl-\).
    pub const fn quit() -> SignalKind {
        SignalKind(libc::SIGQUIT)
    }

    /// `SIGUSR1`.
    pub const fn user_defined1() -> SignalKind {
        SignalKind(libc::SIGUSR1)
    }

    /// `SIGUSR2`.
    pub const fn user_defined2() -> SignalKind {
        SignalKind(libc::SIGUSR2)
    }

    /// `SIGCHLD`: a child process stopped or ended.
    pub const fn child() -> SignalKind {
        SignalKind(libc::SIGCHLD)
    }

    /// `SIGWINCH`: the terminal window changed size.
    pub const fn window_change() -> SignalKind {
        SignalKind(libc::SIGWINCH)
    }

    /// `SIGPIPE`: a write to a pipe or socket with no reader.
    pub const fn pipe() -> SignalKind {
        SignalKind(libc::SIGPIPE)
    }

    /// `SIGALRM`: a timer set with `alarm(2)` expired.
    pub const fn alarm() -> SignalKind {
        SignalKind(libc::SIGALRM)
    }
}

impl From<i32> for SignalKind {
    fn from(signo: i32) -> SignalKind {
        SignalKind(signo)
    }
}

/// A listener for one signal, from [`signal`]. Every listener of a signal
/// sees every delivery made after it was created.
#[derive(Debug)]
pub struct Signal {
    slot: Arc<Slot>,
    /// Deliveries of the slot this listener has reported.
    seen: u64,
}

/// Starts listening for `kind` (see [the module docs](super) for what that
/// changes process-wide). Deliveries from now on are reported by
/// [`Signal::recv`].
///
/// # Errors
///
/// `InvalidInput` for a signal that cannot be watched (`SIGKILL`, `SIGSTOP`,
/// the fault signals `SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`, a
/// number that is no signal); an error outside a spargio runtime task when
/// the signal has no reading task yet; the error of `signalfd` (`EMFILE`, …).
///
/// ```
/// use spargio::signal::unix::{SignalKind, signal};
///
/// spargio::run(|_| async {
///     let mut hangups = signal(SignalKind::hangup()).unwrap();
///     // SIGHUP from outside (here: ourselves) is now reported, not fatal.
///     std::process::Command::new("kill")
///         .args(["-HUP", &std::process::id().to_string()])
///         .status()
///         .unwrap();
///     hangups.recv().await;
/// })
/// .unwrap();
/// ```
pub fn signal(kind: SignalKind) -> io::Result<Signal> {
    let slot = registry::listen(kind.0)?;
    // Acquire pairs with the reader's release: deliveries before now are not ours.
    let seen = slot.delivered.load(Ordering::Acquire);
    Ok(Signal { slot, seen })
}

impl Signal {
    /// Waits for the next delivery of the signal; several deliveries since
    /// the last call are reported once. Returns `None` only if the signal
    /// can no longer be read (its `signalfd` failed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a delivery a dropped `recv` did not report is reported by
    /// the next one.
    pub async fn recv(&mut self) -> Option<()> {
        loop {
            // Made before the check, so a delivery between the two wakes it.
            let notified = self.slot.notify.notified();
            // Acquire pairs with the reader's release of the count.
            let now = self.slot.delivered.load(Ordering::Acquire);
            if now != self.seen {
                self.seen = now;
                return Some(());
            }
            if self.slot.failed() {
                return None;
            }
            if let Err(e) = registry::ensure_reader(&self.slot) {
                // No runtime to read on here; the next call may be on one.
                let _ = e;
            }
            notified.await;
        }
    }

    /// The signal this listener reports.
    pub fn kind(&self) -> SignalKind {
        SignalKind(self.slot.signo)
    }
}
