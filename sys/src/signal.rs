//! Signals as readable fds: `signalfd(2)`, the signal masks it needs, and a
//! forwarding handler that makes the masks hold in every thread.
//!
//! A `signalfd` only sees a signal while it is *pending*, which it stays only
//! as long as every thread blocks it; a thread that does not block it takes
//! the signal (its default action, for `SIGINT`, ends the process). So
//! [`watch`]:
//!
//! 1. installs, once per signal, a handler ([`forward`]) for the threads
//!    that do not block it yet (threads started earlier, foreign threads):
//!    the handler adds the signal to that thread's mask (as restored when the
//!    handler returns) and sends the signal to the process again. The new
//!    signal stays pending until a thread that still does not block it takes
//!    it (which then blocks it too) or a `signalfd` read consumes it, so each
//!    thread forwards at most once and no signal is lost;
//! 2. blocks the signal in the calling thread;
//! 3. opens a `signalfd` for it (blocking mode, close-on-exec: io_uring
//!    waits for a blocking fd to become readable instead of failing with
//!    `EAGAIN`).
//!
//! Consequences, process-wide and for the process's lifetime (as with every
//! runtime's signal support): the signal's disposition is no longer the
//! default (a `SIGINT` no longer ends the process once watched), and the
//! threads that saw it have it blocked. Threads that start later inherit the
//! mask of the thread that starts them. A child started with
//! `std::process::Command` starts with an empty mask (std resets it), so
//! children are not affected; one started by other means inherits the
//! blocked signals. Standard signals do not queue: several sent before a
//! read are read once.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

/// Size of one `struct signalfd_siginfo` record.
pub const SIGINFO_LEN: usize = size_of::<libc::signalfd_siginfo>();

/// Signals whose forwarding handler is installed (bit `n` for signal `n`).
static HANDLED: Mutex<u128> = Mutex::new(0);

/// Checks that `signo` can be watched.
///
/// # Errors
///
/// `InvalidInput` for a number that is not a signal, for `SIGKILL` and
/// `SIGSTOP` (which cannot be caught), and for the signals the kernel sends
/// a thread for its own fault (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`,
/// `SIGTRAP`), which cannot be handled by reading them later.
pub fn check(signo: i32) -> io::Result<()> {
    let forbidden = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
    ];
    if !(1..=libc::SIGRTMAX()).contains(&signo) || forbidden.contains(&signo) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signo} cannot be watched"),
        ));
    }
    Ok(())
}

/// The set holding `signo` alone.
fn set_of(signo: i32) -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialized just above.
    let mut set = unsafe { set.assume_init() };
    // SAFETY: `set` is a valid set; `signo` was checked by the callers.
    unsafe { libc::sigaddset(&mut set, signo) };
    set
}

/// Blocks `signo` in the calling thread.
///
/// # Errors
///
/// As [`check`]; the error of `pthread_sigmask`.
pub fn block_in_this_thread(signo: i32) -> io::Result<()> {
    check(signo)?;
    let set = set_of(signo);
    // SAFETY: `set` is a valid set; the old mask is not asked for.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// The forwarding handler (see the module docs): blocks the signal in the
/// interrupted thread's mask, as restored on return, and sends it to the
/// process again. Async-signal-safe: it calls `kill` and `getpid` only.
extern "C" fn forward(signo: libc::c_int, _info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let errno = io::Error::last_os_error().raw_os_error();
    let uc = context.cast::<libc::ucontext_t>();
    if !uc.is_null() {
        // With SA_SIGINFO the kernel passes the interrupted thread's
        // `ucontext_t`, whose `uc_sigmask` it restores when the handler
        // returns; libc's layout of it matches the kernel's on Linux.
        // SAFETY: `uc` is that live, non-null context; `signo` is a valid signal (the kernel delivered it).
        unsafe { libc::sigaddset(&raw mut (*uc).uc_sigmask, signo) };
    }
    // SAFETY: kill and getpid are async-signal-safe and take no memory.
    unsafe { libc::kill(libc::getpid(), signo) };
    if let Some(e) = errno {
        // SAFETY: errno is thread-local; restoring it keeps the interrupted code's value.
        unsafe { *libc::__errno_location() = e };
    }
}

/// Installs [`forward`] for `signo`, once per process.
fn install_forwarding(signo: i32) -> io::Result<()> {
    let mut handled = HANDLED.lock().unwrap_or_else(|p| p.into_inner());
    let bit = 1u128 << signo;
    if *handled & bit != 0 {
        return Ok(());
    }
    // SAFETY: `sigaction` is plain data for which all-zero is valid (empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = forward as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: `action` is a valid sigaction whose handler is async-signal-safe;
    // the old action is not asked for.
    if unsafe { libc::sigaction(signo, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    *handled |= bit;
    Ok(())
}

/// Starts watching `signo`: installs the forwarding handler, blocks the signal
/// in the calling thread, and returns a new `signalfd` for it (see the module
/// docs for what this changes process-wide). Read it in
/// [`SIGINFO_LEN`]-byte records.
///
/// # Errors
///
/// As [`check`]; the error of `sigaction`, `pthread_sigmask` or `signalfd`
/// (`EMFILE`, …).
pub fn watch(signo: i32) -> io::Result<OwnedFd> {
    check(signo)?;
    install_forwarding(signo)?;
    block_in_this_thread(signo)?;
    let set = set_of(signo);
    // SAFETY: `set` is a valid set; -1 asks for a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The signal number in a `signalfd` record (its first four bytes), or
/// `None` for a short record.
pub fn record_signo(record: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = record.get(..4)?.try_into().ok()?;
    i32::try_from(u32::from_ne_bytes(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore)] // SIGRTMAX() is a libc call Miri does not model
    fn uncatchable_and_fault_signals_are_refused() {
        for signo in [0, -1, libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 65, 1000] {
            assert_eq!(check(signo).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
        assert!(check(libc::SIGUSR1).is_ok());
    }

    #[test]
    fn a_record_names_its_signal() {
        let mut record = [0u8; SIGINFO_LEN];
        record[..4].copy_from_slice(&(libc::SIGUSR2 as u32).to_ne_bytes());
        assert_eq!(record_signo(&record), Some(libc::SIGUSR2));
        assert_eq!(record_signo(&record[..3]), None);
    }
}
