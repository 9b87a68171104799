//! Asynchronous signal handling: [`ctrl_c`], and any catchable signal with
//! [`unix::signal`].
//!
//! Each watched signal has one `signalfd`, read on a runtime's ring by one
//! task, which fans every delivery out to all listeners of that signal (a
//! counter and a [`Notify`](crate::sync::Notify)). Several signals sent
//! before a listener looks are seen once, as the kernel does not queue
//! standard signals.
//!
//! # What watching a signal changes, process-wide
//!
//! A `signalfd` sees a signal only while every thread blocks it, so the
//! first listener of a signal blocks it in the calling thread and installs a
//! small forwarding handler: a thread that does not block the signal yet
//! (the main thread, threads started before, foreign threads) blocks it from
//! the moment the signal first reaches it and sends the signal on to the
//! process, where the `signalfd` picks it up. Nothing is lost, and no
//! thread needs to be prepared. This lasts for the life of the process, as
//! with every async runtime's signal support:
//! - the signal's default action no longer applies, even after every
//!   listener is gone (a watched `SIGINT` never ends the process by itself
//!   again; end it yourself when [`ctrl_c`] fires);
//! - threads that saw the signal keep it blocked, and threads they start
//!   inherit that; children spawned with [`crate::process::Command`] or
//!   `std::process::Command` start with an empty mask (std resets it before
//!   `exec`), other `fork`/`exec` paths inherit the blocked set;
//! - code that waits for the same signal by other means (`sigwait`, another
//!   `signalfd`) competes with spargio for it.
//!
//! The reading task runs on the runtime where the first listener of the
//! signal was made (or the last one, if that runtime shut down since): on
//! either backend, on io_uring as a `READ` of the `signalfd`, on the Queue
//! backend as a readiness wait plus `read(2)`.
//!
//! ```no_run
//! spargio::run(|_| async {
//!     spargio::signal::ctrl_c().await.expect("SIGINT can be watched");
//!     println!("interrupted, shutting down");
//! })
//! .unwrap();
//! ```

mod registry;
pub mod unix;

use std::io;

/// Waits for the next `SIGINT` (Ctrl-C in a terminal).
///
/// The listener starts when the future is first polled: a `SIGINT` before
/// that is not seen. From then on `SIGINT` no longer ends the process (see
/// [the module docs](self#what-watching-a-signal-changes-process-wide)).
///
/// # Errors
///
/// As [`unix::signal`]: outside a spargio runtime, or when the `signalfd`
/// cannot be made.
pub async fn ctrl_c() -> io::Result<()> {
    let mut signal = unix::signal(unix::SignalKind::interrupt())?;
    signal.recv().await;
    Ok(())
}
