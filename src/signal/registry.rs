//! The process-wide registry of watched signals: one [`Slot`] per signal,
//! with its `signalfd`, a delivery count, and the task that reads it.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use spargio_sys::op::pipe::PipeRead;
use spargio_sys::signal::{self as sys, SIGINFO_LEN};

use crate::RuntimeHandle;
use crate::io::submit_current;
use crate::sync::Notify;

/// How many records one read of a `signalfd` takes at most.
const RECORDS_PER_READ: usize = 8;

/// One watched signal.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) signo: i32,
    fd: Arc<OwnedFd>,
    /// Deliveries read so far; only grows.
    pub(crate) delivered: AtomicU64,
    /// Woken after each increase of `delivered`.
    pub(crate) notify: Notify,
    /// A task is reading the `signalfd` (set by whoever spawns it, cleared
    /// when the task ends, with its runtime or on an error).
    reading: AtomicBool,
    /// The `signalfd` failed for good.
    failed: AtomicBool,
}

impl Slot {
    pub(crate) fn failed(&self) -> bool {
        // Relaxed: a hint; `recv` reads the count (Acquire) first.
        self.failed.load(Ordering::Relaxed)
    }
}

static SLOTS: Mutex<Option<HashMap<i32, Arc<Slot>>>> = Mutex::new(None);

/// The slot of `signo`, made (and its reading task started) if needed.
pub(crate) fn listen(signo: i32) -> io::Result<Arc<Slot>> {
    sys::check(signo)?;
    let slot = {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        let slots = slots.get_or_insert_with(HashMap::new);
        match slots.get(&signo) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(Slot {
                    signo,
                    fd: Arc::new(sys::watch(signo)?),
                    delivered: AtomicU64::new(0),
                    notify: Notify::new(),
                    reading: AtomicBool::new(false),
                    failed: AtomicBool::new(false),
                });
                slots.insert(signo, slot.clone());
                slot
            }
        }
    };
    ensure_reader(&slot)?;
    Ok(slot)
}

/// Starts the reading task of `slot` on the calling task's runtime unless
/// one runs.
///
/// # Errors
///
/// Outside a spargio runtime (when no task reads yet), or when the runtime
/// refuses the task (shutting down).
pub(crate) fn ensure_reader(slot: &Arc<Slot>) -> io::Result<()> {
    // Acquire pairs with the release in `Reading::drop`.
    if slot.reading.load(Ordering::Acquire) {
        return Ok(());
    }
    let Some(handle) = RuntimeHandle::current() else {
        return Err(io::Error::other(
            "a signal listener needs a spargio runtime to read the signal on: create it in a runtime task",
        ));
    };
    // Only one caller wins the right to start the reader.
    if slot
        .reading
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Ok(());
    }
    let guard = Reading(slot.clone());
    match handle.spawn_stealable(read_loop(guard)) {
        Ok(_detached) => Ok(()),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// Clears the slot's `reading` flag when the reading task ends (or is
/// dropped unspawned or with its runtime), and wakes the listeners so one of
/// them starts another reader.
struct Reading(Arc<Slot>);

impl Drop for Reading {
    fn drop(&mut self) {
        // Release pairs with the acquire in `ensure_reader`.
        self.0.reading.store(false, Ordering::Release);
        self.0.notify.notify_waiters();
    }
}

/// Reads `signalfd` records and counts the deliveries, until the runtime
/// shuts down or the fd fails.
async fn read_loop(guard: Reading) {
    let slot = &guard.0;
    loop {
        let buf = Vec::with_capacity(SIGINFO_LEN * RECORDS_PER_READ);
        let read = PipeRead::new(slot.fd.clone(), buf);
        let Ok(fut) = submit_current(read) else {
            return; // shutting down
        };
        let (cqe, op) = fut.await;
        match cqe.result() {
            Ok(n) => {
                let records = n as usize / SIGINFO_LEN;
                let buf = op.into_buf();
                debug_assert!(
                    buf.chunks(SIGINFO_LEN)
                        .all(|r| sys::record_signo(r) == Some(slot.signo))
                );
                if records > 0 {
                    // Release pairs with the listeners' acquire of the count.
                    slot.delivered.fetch_add(records as u64, Ordering::Release);
                    slot.notify.notify_waiters();
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EAGAIN) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return, // shutdown
            Err(_) => {
                // Relaxed: the notify below publishes it.
                slot.failed.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}
