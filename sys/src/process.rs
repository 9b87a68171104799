//! Child processes by pidfd: `pidfd_open(2)`, `pidfd_send_signal(2)` and
//! `waitid(P_PIDFD)`.
//!
//! A pidfd names one process for as long as the fd is open, even after the
//! process exited and its pid was reused, so signalling or reaping through
//! it never hits another process. It polls readable once the process has
//! exited (before it is reaped).
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// How a reaped child ended, as the raw wait status that
/// `std::os::unix::process::ExitStatusExt::from_raw` takes.
pub type RawWaitStatus = i32;

/// Opens a pidfd for process `pid` (close-on-exec, as every pidfd is).
///
/// # Errors
///
/// `ESRCH` when no such process exists; `ENOSYS` before Linux 5.3;
/// `InvalidInput` for a pid that does not fit a `pid_t` or is not positive.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pid {pid} is not a process id"),
            )
        })?;
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends signal `signo` to the process `pidfd` names.
///
/// # Errors
///
/// `ESRCH` once the process has been reaped; `EINVAL` for a bad signal.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signo: i32) -> io::Result<()> {
    // SAFETY: the fd is borrowed open; no siginfo is passed (null), flags 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps the child `pidfd` names if it has exited (`waitid(P_PIDFD, WEXITED
/// | WNOHANG)`), giving its wait status; `None` while it still runs.
///
/// # Errors
///
/// `ECHILD` when the process is not a child of this one, or was reaped
/// already.
pub fn try_reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<RawWaitStatus>> {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    loop {
        // SAFETY: `info` is a valid, exclusively borrowed siginfo_t for the call;
        // the fd is borrowed open.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if ret == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    // SAFETY: zeroed, then filled by waitid (all-zero is a valid siginfo_t).
    let info = unsafe { info.assume_init() };
    // SAFETY: for a waitid result the kernel fills the SIGCHLD fields; with
    // WNOHANG and no exited child it leaves them zero.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(wait_status(info.si_code, status)))
}

/// Waits for the child `pidfd` names to exit and reaps it
/// (`waitid(P_PIDFD, WEXITED)`), blocking the calling thread.
///
/// # Errors
///
/// As [`try_reap`].
pub fn reap_blocking(pidfd: BorrowedFd<'_>) -> io::Result<RawWaitStatus> {
    loop {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: `info` is a valid, exclusively borrowed siginfo_t for the call;
        // the fd is borrowed open.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                info.as_mut_ptr(),
                libc::WEXITED,
            )
        };
        if ret != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: zeroed, then filled by waitid (all-zero is a valid siginfo_t).
        let info = unsafe { info.assume_init() };
        // SAFETY: waitid filled the SIGCHLD fields of an exited child.
        let status = unsafe { info.si_status() };
        return Ok(wait_status(info.si_code, status));
    }
}

/// The `wait(2)` status word for a `waitid` result.
fn wait_status(code: i32, status: i32) -> RawWaitStatus {
    match code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        // Stopped or continued children are not asked for (no WSTOPPED/WCONTINUED).
        _ => (status & 0xff) << 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_words_decode_as_std_does() {
        use std::os::unix::process::ExitStatusExt;
        let exited = std::process::ExitStatus::from_raw(wait_status(libc::CLD_EXITED, 3));
        assert_eq!(exited.code(), Some(3));
        let killed = std::process::ExitStatus::from_raw(wait_status(libc::CLD_KILLED, libc::SIGKILL));
        assert_eq!((killed.code(), killed.signal()), (None, Some(libc::SIGKILL)));
        let dumped = std::process::ExitStatus::from_raw(wait_status(libc::CLD_DUMPED, libc::SIGABRT));
        assert_eq!(
            (dumped.signal(), dumped.core_dumped()),
            (Some(libc::SIGABRT), true)
        );
    }

    #[test]
    fn bad_pids_are_refused() {
        assert_eq!(pidfd_open(0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            pidfd_open(u32::MAX).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
