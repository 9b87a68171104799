//! Ops on pollable non-socket fds (pipes, a `signalfd`, a `pidfd`): each runs
//! as an io_uring SQE, or on the Queue backend as a readiness op that waits
//! for the fd in epoll and then makes one call that cannot block.
//!
//! | op | io_uring opcode | readiness form |
//! |---|---|---|
//! | [`PipeRead`] | `READ` at the current position | `poll(2)` says readable, then one `read(2)` |
//! | [`PipeWrite`] | `WRITE` at the current position | `poll(2)` says writable, then one `write(2)` of at most `PIPE_BUF` bytes |
//! | [`PollOnce`] | `POLL_ADD` (one shot) | `poll(2)` |
//!
//! The fds stay in blocking mode: io_uring turns a read of an `O_NONBLOCK`
//! file that has no data into `-EAGAIN` instead of waiting, so these ops do
//! not set it. The readiness forms still never block a thread: a pipe with
//! room for writing takes `PIPE_BUF` bytes at once, and a readable fd
//! returns what it has. (A second reader of the same fd that drains it
//! between the poll and the read could make the read wait; spargio's pipes
//! and signalfds have one reader each.)
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, RawFd};

use super::fs::{SharedFd, record_read};
use super::{Attempt, Interest, Op, cqe_res, op_any};
use crate::buf::{IoBuf, IoBufMut};
use crate::cqe::Cqe;
use crate::sqe::{self, Sqe};

/// The most bytes one [`PipeWrite`] readiness attempt writes: the kernel
/// guarantees a pipe that polls writable has room for this many.
pub const PIPE_BUF: usize = libc::PIPE_BUF;

/// True when `fd` is ready for `events` (or has an error or hang-up) now.
fn ready_now(fd: RawFd, events: libc::c_short) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid, exclusively borrowed pollfd; no waiting.
        let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ret >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return ret > 0;
        }
    }
}

/// Runs `call` once `fd` is ready for `events` (`poll(2)` without a limit),
/// again on `EINTR`.
fn blocking(fd: RawFd, events: libc::c_short, mut call: impl FnMut() -> libc::c_long) -> i32 {
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, exclusively borrowed pollfd.
        if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if errno == libc::EINTR {
                continue;
            }
            return -errno;
        }
        let res = cqe_res(call());
        if res != -libc::EINTR {
            return res;
        }
    }
}

// === READ ===

/// `read(fd, buf)` of a pipe or other pollable fd, into an owned buffer from
/// its start up to its capacity.
#[derive(Debug)]
pub struct PipeRead<B> {
    fd: SharedFd,
    buf: B,
}

impl<B: IoBufMut> PipeRead<B> {
    /// Reads into `buf`.
    pub fn new(fd: SharedFd, buf: B) -> Self {
        PipeRead { fd, buf }
    }

    /// Takes the buffer back, with the bytes the read wrote initialized.
    pub fn into_buf(self) -> B {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_total().min(super::fs::MAX_RW_LEN)
    }

    fn read_now(&mut self) -> i32 {
        let (fd, ptr, len) = (self.fd.as_raw_fd(), self.buf.stable_mut_ptr(), self.len());
        // SAFETY: `ptr` is writable for `len` bytes (`IoBufMut` contract).
        let res = cqe_res(unsafe { libc::read(fd, ptr.cast(), len) } as libc::c_long);
        // SAFETY: `res`, when a count, is what read(2) wrote at `ptr`.
        unsafe { record_read(&mut self.buf, len, res) };
        res
    }
}

// SAFETY: the SQE points at `buf`'s stable, writable memory (`IoBufMut`
// contract) for at most its capacity, and names the fd the op keeps open.
unsafe impl<B: IoBufMut> Op for PipeRead<B> {
    fn prepare(&mut self) -> Sqe {
        let ptr = self.buf.stable_mut_ptr();
        sqe::Read::new(self.fd.as_raw_fd(), ptr, self.len() as u32)
            .offset(u64::MAX)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let fd = self.fd.as_raw_fd();
        loop {
            if let Err(res) = wait_readable(fd) {
                return res;
            }
            let res = self.read_now();
            if res != -libc::EINTR {
                return res;
            }
        }
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        if !ready_now(self.fd.as_raw_fd(), libc::POLLIN) {
            return Some(Attempt::WouldBlock(Interest::Readable));
        }
        loop {
            let res = self.read_now();
            if res != -libc::EINTR {
                return Some(Attempt::Done(res));
            }
        }
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        let len = self.len();
        // SAFETY: the caller's contract: `cqe` is this read's completion, whose
        // count is what the kernel wrote at the buffer's start.
        unsafe { record_read(&mut self.buf, len, cqe.res) };
    }
    op_any!();
}

/// Waits, without a limit, until `fd` polls readable (or has an error).
fn wait_readable(fd: RawFd) -> Result<(), i32> {
    match blocking(fd, libc::POLLIN, || 0) {
        res if res < 0 => Err(res),
        _ => Ok(()),
    }
}

// === WRITE ===

/// `write(fd, buf)` of an owned buffer's initialized bytes to a pipe.
#[derive(Debug)]
pub struct PipeWrite<B> {
    fd: SharedFd,
    buf: B,
}

impl<B: IoBuf> PipeWrite<B> {
    /// Writes `buf`'s initialized bytes (the count may be short).
    pub fn new(fd: SharedFd, buf: B) -> Self {
        PipeWrite { fd, buf }
    }

    /// Takes the buffer back.
    pub fn into_buf(self) -> B {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_init().min(super::fs::MAX_RW_LEN)
    }

    fn write_now(&mut self, max: usize) -> i32 {
        let (fd, ptr, len) = (self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len().min(max));
        // SAFETY: `ptr` is readable for `len` initialized bytes (`IoBuf` contract).
        cqe_res(unsafe { libc::write(fd, ptr.cast(), len) } as libc::c_long)
    }
}

// SAFETY: the SQE points at `buf`'s stable, initialized bytes (`IoBuf`
// contract), and names the fd the op keeps open.
unsafe impl<B: IoBuf> Op for PipeWrite<B> {
    fn prepare(&mut self) -> Sqe {
        sqe::Write::new(self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len() as u32)
            .offset(u64::MAX)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let fd = self.fd.as_raw_fd();
        loop {
            match blocking(fd, libc::POLLOUT, || 0) {
                res if res < 0 => return res,
                _ => {}
            }
            let res = self.write_now(PIPE_BUF);
            if res != -libc::EINTR {
                return res;
            }
        }
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        if !ready_now(self.fd.as_raw_fd(), libc::POLLOUT) {
            return Some(Attempt::WouldBlock(Interest::Writable));
        }
        loop {
            let res = self.write_now(PIPE_BUF);
            if res != -libc::EINTR {
                return Some(Attempt::Done(res));
            }
        }
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    op_any!();
}

// === POLL ===

/// Waits once until a pollable fd is ready for `events` (`POLLIN`, …);
/// completes with the ready events.
#[derive(Debug)]
pub struct PollOnce {
    fd: SharedFd,
    events: libc::c_short,
}

impl PollOnce {
    /// Waits until `fd` is readable.
    pub fn readable(fd: SharedFd) -> Self {
        PollOnce {
            fd,
            events: libc::POLLIN,
        }
    }

    fn poll_now(&self, timeout: libc::c_int) -> i32 {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: self.events,
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid, exclusively borrowed pollfd.
            let ret = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if ret >= 0 {
                return if ret > 0 { i32::from(pfd.revents) } else { 0 };
            }
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if errno != libc::EINTR {
                return -errno;
            }
        }
    }
}

// SAFETY: the SQE references no memory and names the fd the op keeps open.
unsafe impl Op for PollOnce {
    fn prepare(&mut self) -> Sqe {
        sqe::PollAdd::new(self.fd.as_raw_fd(), self.events as u16 as u32).build()
    }
    fn run_blocking(&mut self) -> i32 {
        self.poll_now(-1)
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        match self.poll_now(0) {
            0 => Some(Attempt::WouldBlock(Interest::Readable)),
            res => Some(Attempt::Done(res)),
        }
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    op_any!();
}

// === WAITID ===

/// Size of `siginfo_t` in 8-byte words.
const SIGINFO_WORDS: usize = 16;
static_assertions::const_assert_eq!(size_of::<libc::siginfo_t>(), SIGINFO_WORDS * 8);
static_assertions::const_assert!(align_of::<libc::siginfo_t>() <= align_of::<u64>());

/// Waits until the child a pidfd names has exited, without reaping it
/// (`IORING_OP_WAITID`, kernel 6.7, with `P_PIDFD` and `WEXITED | WNOWAIT`);
/// reap it afterwards with [`crate::process::try_reap`]. Leaving the child
/// unreaped keeps a cancelled wait from losing its exit status.
///
/// Its blocking form is `waitid(2)` with the same arguments; it has no
/// readiness form (on the Queue backend, wait with [`PollOnce`] instead).
pub struct WaitExited {
    pidfd: SharedFd,
    /// Where the kernel writes the child's `siginfo_t` (boxed: its address is
    /// in the SQE; 8-byte words, as aligned as `siginfo_t`).
    info: Box<[u64; SIGINFO_WORDS]>,
}

impl std::fmt::Debug for WaitExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitExited")
            .field("pidfd", &self.pidfd)
            .finish_non_exhaustive()
    }
}

impl WaitExited {
    /// Waits for the exit of the child `pidfd` names.
    pub fn new(pidfd: SharedFd) -> Self {
        WaitExited {
            pidfd,
            info: Box::new([0; SIGINFO_WORDS]),
        }
    }

    const OPTIONS: i32 = libc::WEXITED | libc::WNOWAIT;
}

// SAFETY: the SQE points only at `info`, a boxed `siginfo_t` the op owns, and
// names the pidfd the op keeps open.
unsafe impl Op for WaitExited {
    fn prepare(&mut self) -> Sqe {
        let info = self.info.as_mut_ptr();
        Sqe::from_raw(crate::abi::io_uring_sqe {
            opcode: crate::abi::IORING_OP_WAITID,
            fd: self.pidfd.as_raw_fd(),
            len: libc::P_PIDFD,
            splice_fd_in_or_file_index: Self::OPTIONS as u32,
            off_or_addr2: info as u64,
            ..Default::default()
        })
    }
    fn run_blocking(&mut self) -> i32 {
        let info = self.info.as_mut_ptr().cast::<libc::siginfo_t>();
        loop {
            // SAFETY: `info` points at a valid, exclusively owned siginfo_t; the
            // pidfd is kept open by the op.
            let ret = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    info,
                    Self::OPTIONS,
                )
            };
            let res = cqe_res(ret as libc::c_long);
            if res != -libc::EINTR {
                return res;
            }
        }
    }
    op_any!();
}
