//! `epoll(7)` and `eventfd(2)`: the readiness interface of the Queue backend,
//! for kernels (or sandboxes: Docker's default seccomp profile, gVisor,
//! `kernel.io_uring_disabled`) where io_uring is refused.
//!
//! [`Epoll`] owns its fd. Registration takes a [`BorrowedFd`] and a `u64`
//! token the caller chooses; the kernel only stores the token and hands it
//! back, so no token value can make the crate trust anything. [`EventFd`] is
//! a counter other threads bump to wake a thread parked in [`Epoll::wait`].
//! (The unit tests run this natively; it is not run as a doctest, so that
//! the Miri pass, whose isolation has no epoll, skips it.)
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use spargio_sys::epoll::{Epoll, EventFd, READABLE};
//!
//! let epoll = Epoll::new().unwrap();
//! let bell = EventFd::new().unwrap();
//! epoll.add(bell.as_fd(), 7, READABLE).unwrap();
//! bell.notify();
//! let mut events = Vec::new();
//! epoll.wait(&mut events, 8, Some(std::time::Duration::ZERO)).unwrap();
//! assert_eq!(events, [(7, READABLE)]);
//! assert!(bell.drain());
//! ```
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once `epoll_pwait2` failed with `ENOSYS` (kernels before 5.11) or
/// `EPERM` (a seccomp profile that predates it): waits with a timeout then
/// use `epoll_pwait` and whole milliseconds.
static PWAIT2_MISSING: AtomicBool = AtomicBool::new(false);

/// True while waits with a timeout use `epoll_pwait2` (nanosecond timeouts);
/// false once the kernel refused it and waits round up to whole milliseconds.
pub fn precise_timeouts() -> bool {
    !PWAIT2_MISSING.load(Ordering::Relaxed)
}

/// Readable (`EPOLLIN`), also set with a peer's hang-up of the read side.
pub const READABLE: u32 = libc::EPOLLIN as u32;
/// Writable (`EPOLLOUT`).
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// An error is pending on the fd (`EPOLLERR`; always reported).
pub const ERROR: u32 = libc::EPOLLERR as u32;
/// Hang-up (`EPOLLHUP`; always reported).
pub const HANGUP: u32 = libc::EPOLLHUP as u32;
/// The peer shut its writing side (`EPOLLRDHUP`).
pub const READ_HANGUP: u32 = libc::EPOLLRDHUP as u32;
/// Report one event, then disarm until [`Epoll::modify`] re-arms (`EPOLLONESHOT`).
pub const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
/// Edge-triggered (`EPOLLET`): report an fd when the kernel signals a change
/// in it (data arrived, room freed, an error, a hang-up), not for as long as
/// it stays ready. The registration stays armed: no `epoll_ctl` per wait.
pub const EDGE: u32 = libc::EPOLLET as u32;

/// True when `fd` is a file whose I/O can wait for readiness in epoll and
/// has no meaningful offset: a pipe or FIFO, a socket, a character device (a
/// tty, …) or an anonymous inode (an eventfd, a timerfd, …; `fstat` reports
/// no file type for those). False for regular files, directories and block
/// devices: their I/O never waits for readiness (epoll refuses them).
///
/// # Errors
///
/// The `fstat` errno.
pub fn has_readiness(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable for one `stat`; `fd` is open for the call.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: `fstat` succeeded, so it filled `st`.
    let mode = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    Ok(matches!(mode, libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | 0))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An epoll instance (`epoll_create1(EPOLL_CLOEXEC)`).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty epoll set.
    ///
    /// # Errors
    ///
    /// The `epoll_create1` errno (`EMFILE`, `ENOMEM`, `ENOSYS` in a sandbox).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: a plain system call with an integer flag.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is a valid epoll_event for the call (the kernel copies
        // it); both fds are open for its duration (owned, borrowed).
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut event) }).map(drop)
    }

    /// Adds `fd` to the set with `events` (`READABLE | WRITABLE | ONESHOT`, …);
    /// its events come back from [`Epoll::wait`] with `token`.
    ///
    /// Level-triggered registrations (no `EPOLLET`) are checked for readiness
    /// right away: an fd already ready is reported by the next wait.
    ///
    /// # Errors
    ///
    /// `EEXIST` when `fd` is already in the set; `EPERM` for a file that epoll
    /// cannot watch (a regular file); the other `epoll_ctl` errnos.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Changes `fd`'s events and token (and re-arms a `ONESHOT` registration).
    ///
    /// # Errors
    ///
    /// `ENOENT` when `fd` is not in the set (as this file: a closed fd leaves
    /// the set by itself); the other `epoll_ctl` errnos.
    pub fn modify(&self, fd: BorrowedFd<'_>, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Arms `fd` for `events`: [`Epoll::modify`], or [`Epoll::add`] when the
    /// set does not hold it.
    ///
    /// # Errors
    ///
    /// As [`Epoll::add`].
    pub fn arm(&self, fd: BorrowedFd<'_>, token: u64, events: u32) -> io::Result<()> {
        match self.modify(fd, token, events) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.add(fd, token, events),
            other => other,
        }
    }

    /// Removes `fd` from the set.
    ///
    /// # Errors
    ///
    /// `ENOENT` when `fd` is not in the set; the other `epoll_ctl` errnos.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout` (`None`: without limit) for events, and appends
    /// up to `max` of them to `out` as `(token, events)`. Returns how many it
    /// appended (0 on timeout or when a signal interrupted the wait).
    ///
    /// A timeout is kept to the nanosecond with `epoll_pwait2` (Linux 5.11+);
    /// where the kernel refuses that call (`ENOSYS`, or `EPERM` from a seccomp
    /// filter; remembered for the process, see [`precise_timeouts`]) it is
    /// rounded *up* to whole milliseconds for `epoll_pwait`: a wait never
    /// ends before its timeout unless an event or a signal ends it.
    ///
    /// # Errors
    ///
    /// The `epoll_pwait2`/`epoll_pwait` errno other than `EINTR`.
    pub fn wait(
        &self,
        out: &mut Vec<(u64, u32)>,
        max: usize,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let max = max.clamp(1, 1024);
        let mut buf = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let cap = max.min(buf.len());
        let mut ret = -1;
        let mut precise = false;
        if let Some(t) = timeout
            && precise_timeouts()
        {
            let ts = libc::timespec {
                tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: t.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `buf` is writable for `cap` events and `ts` is a valid
            // timespec that outlives the call; a null sigmask keeps the
            // thread's signal mask (its size argument is then not read).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr(),
                    cap as libc::c_int,
                    &raw const ts,
                    std::ptr::null::<libc::sigset_t>(),
                    8usize,
                )
            };
            let refused = r < 0
                && matches!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::ENOSYS | libc::EPERM)
                );
            if refused {
                PWAIT2_MISSING.store(true, Ordering::Relaxed);
            } else {
                ret = r as libc::c_int;
                precise = true;
            }
        }
        if !precise {
            let ms = match timeout {
                None => -1,
                Some(t) => {
                    let ms = t.as_nanos().div_ceil(1_000_000);
                    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
                }
            };
            // SAFETY: `buf` is writable for `cap` events; a null sigmask keeps the
            // thread's signal mask.
            ret = unsafe {
                libc::epoll_pwait(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr(),
                    cap as libc::c_int,
                    ms,
                    std::ptr::null(),
                )
            };
        }
        let n = match check(ret) {
            Ok(n) => n as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            Err(e) => return Err(e),
        };
        out.extend(buf[..n].iter().map(|e| {
            let (token, events) = (e.u64, e.events);
            (token, events)
        }));
        Ok(n)
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A non-blocking `eventfd` counter: a doorbell another thread rings to end a
/// [`Epoll::wait`] that watches it for [`READABLE`].
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new counter at 0 (`EFD_CLOEXEC | EFD_NONBLOCK`).
    ///
    /// # Errors
    ///
    /// The `eventfd` errno (`EMFILE`, …).
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: a plain system call with integer arguments.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Adds 1 to the counter, making the fd readable. Never blocks: at the
    /// (unreachable in practice) counter limit the fd is already readable.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an fd this value owns.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Resets the counter to 0; true if it was not 0 (someone rang).
    pub fn drain(&self) -> bool {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an fd this value owns
        // (non-blocking: `EAGAIN` when the counter is 0).
        let ret = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut value).cast(), 8) };
        ret == 8 && value > 0
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    #[cfg_attr(miri, ignore)]
    fn oneshot_reports_once_until_rearmed() {
        let epoll = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        epoll.arm(a.as_fd(), 42, READABLE | ONESHOT).unwrap();
        let mut events = Vec::new();
        assert_eq!(epoll.wait(&mut events, 8, Some(Duration::ZERO)).unwrap(), 0);
        b.write_all(b"x").unwrap();
        assert_eq!(
            epoll.wait(&mut events, 8, Some(Duration::from_secs(5))).unwrap(),
            1
        );
        assert_eq!(events[0].0, 42);
        assert_ne!(events[0].1 & READABLE, 0);
        // Disarmed: still readable, but not reported again.
        events.clear();
        assert_eq!(epoll.wait(&mut events, 8, Some(Duration::ZERO)).unwrap(), 0);
        // Re-armed (modify, since the set still holds it): reported at once.
        epoll.arm(a.as_fd(), 43, READABLE | ONESHOT).unwrap();
        assert_eq!(epoll.wait(&mut events, 8, Some(Duration::ZERO)).unwrap(), 1);
        assert_eq!(events[0].0, 43);
        epoll.delete(a.as_fd()).unwrap();
        assert!(epoll.delete(a.as_fd()).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn an_edge_triggered_registration_reports_each_arrival_without_rearming() {
        let epoll = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        epoll
            .add(a.as_fd(), 5, READABLE | WRITABLE | READ_HANGUP | EDGE)
            .unwrap();
        let mut events = Vec::new();
        // Writable at once (ADD reports a ready file), then quiet.
        assert_eq!(epoll.wait(&mut events, 8, Some(Duration::ZERO)).unwrap(), 1);
        assert_eq!(events[0], (5, WRITABLE));
        for round in 0..3 {
            events.clear();
            assert_eq!(epoll.wait(&mut events, 8, Some(Duration::ZERO)).unwrap(), 0);
            // Unread data from earlier rounds stays: only the new arrival
            // is reported, once, with no re-arming in between.
            b.write_all(b"x").unwrap();
            assert_eq!(
                epoll.wait(&mut events, 8, Some(Duration::from_secs(5))).unwrap(),
                1,
                "round {round}"
            );
            assert_ne!(events[0].1 & READABLE, 0);
        }
        // The peer's close: hang-up bits.
        drop(b);
        events.clear();
        assert_eq!(
            epoll.wait(&mut events, 8, Some(Duration::from_secs(5))).unwrap(),
            1
        );
        assert_ne!(events[0].1 & (READ_HANGUP | HANGUP), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn has_readiness_tells_streams_from_files() {
        let (r, w) = std::io::pipe().unwrap();
        assert!(has_readiness(r.as_fd()).unwrap());
        assert!(has_readiness(w.as_fd()).unwrap());
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(has_readiness(a.as_fd()).unwrap());
        let bell = EventFd::new().unwrap();
        assert!(has_readiness(bell.as_fd()).unwrap(), "an anonymous inode");
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(has_readiness(null.as_fd()).unwrap(), "a character device");
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert!(!has_readiness(exe.as_fd()).unwrap(), "a regular file");
        let dir = std::fs::File::open("/").unwrap();
        assert!(!has_readiness(dir.as_fd()).unwrap(), "a directory");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn pipe_reads_and_writes_have_nonblocking_forms_that_keep_the_flags() {
        use crate::op::fs::{Read, Write};
        use crate::op::{Attempt, Interest, Op};
        use std::sync::Arc;
        let (r, w) = std::io::pipe().unwrap();
        let flags = |fd: BorrowedFd<'_>| {
            // SAFETY: a plain fcntl on an open fd.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) }
        };
        let (r_flags, w_flags) = (flags(r.as_fd()), flags(w.as_fd()));
        let r = Arc::new(OwnedFd::from(r));
        let w = Arc::new(OwnedFd::from(w));
        let mut read = Read::new(r.clone(), Vec::with_capacity(8), 3);
        read.stream_fd();
        assert_eq!(
            read.try_nonblocking(),
            Some(Attempt::WouldBlock(Interest::Readable))
        );
        // Without `stream_fd`, the offset reaches the kernel: `ESPIPE`.
        let mut at_offset = Write::new(w.clone(), b"no".to_vec(), 9);
        assert_eq!(at_offset.try_nonblocking(), Some(Attempt::Done(-libc::ESPIPE)));
        let mut write = Write::new(w.clone(), b"hey".to_vec(), 9);
        write.stream_fd();
        assert_eq!(write.try_nonblocking(), Some(Attempt::Done(3)));
        assert_eq!(read.try_nonblocking(), Some(Attempt::Done(3)));
        assert_eq!(read.into_buf(), b"hey");
        // Fill the pipe: the write then waits for room.
        let mut filled = 0;
        loop {
            let mut fill = Write::new(w.clone(), vec![0u8; 65536], 0);
            fill.stream_fd();
            match fill.try_nonblocking() {
                Some(Attempt::Done(n)) => filled += n,
                Some(Attempt::WouldBlock(Interest::Writable)) => break,
                other => panic!("{other:?}"),
            }
            assert!(filled < 64 << 20, "the pipe never filled");
        }
        assert_eq!((flags(r.as_fd()), flags(w.as_fd())), (r_flags, w_flags));
        assert_eq!(r_flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn sub_millisecond_timeouts_end_the_wait_and_events_still_come() {
        let epoll = Epoll::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        epoll.add(a.as_fd(), 9, READABLE).unwrap();
        let mut events = Vec::new();
        // Nothing ready: each wait ends by its timeout (epoll_pwait2, or
        // rounded up to 1 ms where the kernel lacks it).
        for us in [1, 250, 999] {
            let waited = epoll
                .wait(&mut events, 8, Some(Duration::from_micros(us)))
                .unwrap();
            assert_eq!(waited, 0, "timeout {us} us");
        }
        b.write_all(b"x").unwrap();
        assert_eq!(
            epoll
                .wait(&mut events, 8, Some(Duration::from_nanos(1_500_000)))
                .unwrap(),
            1
        );
        assert_eq!(events, [(9, READABLE)]);
        // A timeout too long for a timespec's seconds or for `c_int` ms is
        // clamped, not an error: the ready event ends it.
        events.clear();
        assert_eq!(epoll.wait(&mut events, 8, Some(Duration::MAX)).unwrap(), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn eventfd_wakes_a_waiter_on_another_thread() {
        let epoll = Epoll::new().unwrap();
        let bell = std::sync::Arc::new(EventFd::new().unwrap());
        epoll.add(bell.as_fd(), u64::MAX, READABLE).unwrap();
        assert!(!bell.drain());
        let ringer = bell.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ringer.notify();
        });
        let mut events = Vec::new();
        assert_eq!(epoll.wait(&mut events, 8, None).unwrap(), 1);
        assert_eq!(events, [(u64::MAX, READABLE)]);
        assert!(bell.drain());
        assert!(!bell.drain());
        t.join().unwrap();
    }
}
