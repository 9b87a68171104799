//! The three io_uring system calls as typed functions returning `io::Result`.
//!
//! # EINTR policy
//!
//! These wrappers never retry: `EINTR` is returned to the caller as
//! `ErrorKind::Interrupted`. The one caller that waits,
//! [`Ring::submit_and_wait`](crate::ring::Ring::submit_and_wait), retries an
//! interrupted wait with the time that remains, so a signal neither loses a
//! completion nor stretches a deadline.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use crate::abi;

/// Maps a `-1` return to the current `errno`.
fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `io_uring_setup(entries, params)`: creates a ring and returns its fd.
///
/// The kernel fills in `params` (sizes, offsets, features). The fd is
/// close-on-exec: the kernel always creates io_uring fds with `O_CLOEXEC`.
///
/// Two setup flags are refused, since they would make safe code unsound:
/// `IORING_SETUP_NO_MMAP` (the kernel would use the memory at the addresses
/// in `params` as the rings, whatever owns it) and
/// `IORING_SETUP_REGISTERED_FD_ONLY` (the result is a registered-ring index,
/// not an fd to own).
///
/// # Errors
///
/// `InvalidInput` for either refused flag; otherwise the kernel's `errno`,
/// unchanged ([`crate::ring::SetupError`] names its likely cause).
///
/// ```
/// use spargio_sys::{abi, syscall};
///
/// let mut params = abi::io_uring_params { flags: abi::IORING_SETUP_NO_MMAP, ..Default::default() };
/// let err = syscall::setup(4, &mut params).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
/// ```
pub fn setup(entries: u32, params: &mut abi::io_uring_params) -> io::Result<OwnedFd> {
    const REFUSED: u32 = abi::IORING_SETUP_NO_MMAP | abi::IORING_SETUP_REGISTERED_FD_ONLY;
    if params.flags & REFUSED != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "io_uring_setup: NO_MMAP and REGISTERED_FD_ONLY are not supported (unsound through a safe call)",
        ));
    }
    // SAFETY: `params` is a valid, exclusively borrowed `io_uring_params` for the
    // duration of the call; the kernel reads and writes only that struct.
    let ret = unsafe {
        libc::syscall(
            abi::SYS_IO_URING_SETUP,
            entries as libc::c_long,
            params as *mut abi::io_uring_params,
        )
    };
    let fd = cvt(ret)? as RawFd;
    // SAFETY: a successful io_uring_setup returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The wait argument of [`enter`].
#[derive(Clone, Copy, Debug, Default)]
pub enum EnterWait {
    /// Wait without a time limit (the classic `io_uring_enter`).
    #[default]
    Forever,
    /// Wait at most this long, through `IORING_ENTER_EXT_ARG`.
    Timeout(Duration),
}

/// `io_uring_enter(fd, to_submit, min_complete, flags)`.
///
/// With [`EnterWait::Timeout`] the call passes an `io_uring_getevents_arg`
/// with `IORING_ENTER_EXT_ARG`; the kernel must offer `IORING_FEAT_EXT_ARG`.
/// A timeout that elapses returns `ETIME` from the kernel, which this function
/// reports as `Ok(submitted)` with `timed_out = true` in the second field.
///
/// # Errors
///
/// The kernel's `errno`: `EINTR` (a signal; retry), `EBUSY`/`EAGAIN` (the CQ
/// is full or the kernel lacks memory: reap completions, then retry), `EBADF`,
/// `EINVAL`, …
///
/// # Safety
///
/// Every SQE published in the SQ ring up to its tail must stay valid, and all
/// memory those SQEs point to must stay valid (and, for reads, writable and not
/// otherwise accessed) until the kernel posts their final completion.
pub unsafe fn enter(
    fd: RawFd,
    to_submit: u32,
    min_complete: u32,
    mut flags: u32,
    wait: EnterWait,
) -> io::Result<(u32, bool)> {
    let ts;
    let arg;
    let (argp, argsz): (*const libc::c_void, usize) = match wait {
        EnterWait::Forever => (ptr::null(), 0),
        EnterWait::Timeout(d) => {
            ts = abi::kernel_timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            };
            arg = abi::io_uring_getevents_arg {
                sigmask: 0,
                sigmask_sz: 0,
                min_wait_usec: 0,
                ts: &ts as *const abi::kernel_timespec as u64,
            };
            flags |= abi::IORING_ENTER_EXT_ARG;
            (
                &arg as *const abi::io_uring_getevents_arg as *const libc::c_void,
                size_of::<abi::io_uring_getevents_arg>(),
            )
        }
    };
    // SAFETY: `argp` is null or points at `arg`, which lives until the call
    // returns and points at `ts`, which does too. The SQ contents are the
    // caller's obligation (see `# Safety`).
    let ret = unsafe {
        libc::syscall(
            abi::SYS_IO_URING_ENTER,
            fd as libc::c_long,
            to_submit as libc::c_long,
            min_complete as libc::c_long,
            flags as libc::c_long,
            argp,
            argsz,
        )
    };
    match cvt(ret) {
        Ok(n) => Ok((n as u32, false)),
        // With EXT_ARG the kernel reports an elapsed wait as ETIME; anything it
        // submitted before waiting was still consumed, which the caller sees in
        // the SQ head. Report "submitted 0" and let the caller re-read the head.
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok((0, true)),
        Err(e) => Err(e),
    }
}

/// `io_uring_register(fd, opcode, arg, nr_args)`.
///
/// # Errors
///
/// The kernel's `errno`, unchanged.
///
/// # Safety
///
/// `arg` must point at what `opcode` expects (`nr_args` elements of it), valid
/// for the call; for registrations that keep pointers (buffers, buffer rings)
/// the memory must stay valid until it is unregistered or the ring is closed.
pub unsafe fn register(fd: RawFd, opcode: u32, arg: *const libc::c_void, nr_args: u32) -> io::Result<u32> {
    // SAFETY: forwarded to the caller (see `# Safety`).
    let ret = unsafe {
        libc::syscall(
            abi::SYS_IO_URING_REGISTER,
            fd as libc::c_long,
            opcode as libc::c_long,
            arg,
            nr_args as libc::c_long,
        )
    };
    cvt(ret).map(|n| n as u32)
}
