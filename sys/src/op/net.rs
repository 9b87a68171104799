//! Socket ops: each owns its fd reference, buffers, socket address and message
//! header, and can run as an io_uring SQE or as the equivalent system call.
//!
//! | op | io_uring opcode | blocking call |
//! |---|---|---|
//! | [`Socket`] | `SOCKET` | `socket(2)` (always `SOCK_CLOEXEC`) |
//! | [`Connect`] | `CONNECT` | `connect(2)` |
//! | [`Accept`] | `ACCEPT` (single or multishot) | `accept4(2)` (always `SOCK_CLOEXEC`) |
//! | [`Send`] / [`Recv`] | `SEND` / `RECV` | `send(2)` (always `MSG_NOSIGNAL`) / `recv(2)` |
//! | [`SendZc`] | `SEND_ZC` (result, then notification) | `send(2)` (always `MSG_NOSIGNAL`) |
//! | [`SendMsg`] / [`RecvMsg`] | `SENDMSG` / `RECVMSG` | `sendmsg(2)` / `recvmsg(2)` |
//! | [`Shutdown`] | `SHUTDOWN` | `shutdown(2)` |
//! | [`RecvMulti`] | `RECV` multishot, buffer select | `recv(2)` once, into a group buffer |
//!
//! # The blocking forms
//!
//! `run_blocking` (the Queue backend) waits for readiness with `poll(2)` and
//! then calls the socket function with `MSG_DONTWAIT`, so it works on blocking
//! and non-blocking sockets alike. An op given a [`CancelFlag`] re-checks the
//! flag every [`CANCEL_POLL`] while it waits and gives up with `ECANCELED` once
//! it is set: a waiter that goes away does not leave a pool thread blocked, and
//! a cancelled receive does not swallow data that arrives later.
//!
//! # Trusting completions
//!
//! A result that becomes an fd or a provided buffer is taken from the
//! completions the op table hands the op ([`Op::complete`], [`Op::progress`];
//! see [the op module](super#trusting-completions)): [`Accept::into_fd`],
//! [`OpEvent::take_fd`](super::OpEvent::take_fd) and
//! [`OpEvent::read_into`](super::OpEvent::read_into) take no number from the
//! caller.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{SharedFd, adopt_fd, record_read};
use super::{Attempt, Interest, Op, OpEvent, cqe_res};
use crate::abi;
use crate::buf::{IoBuf, IoBufMut};
use crate::bufring::BufRing;
use crate::cqe::Cqe;
use crate::ring::Ring;
use crate::sqe::{self, Sqe};

/// `into_any` for the ops of this module. (`super::op_any!` names `Send`
/// unqualified, which here would resolve to the [`Send`] op.)
macro_rules! into_any {
    () => {
        fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + std::marker::Send> {
            self
        }
    };
}

/// The most bytes one send or receive asks for (the SQE's `len` is 32-bit).
pub const MAX_IO_LEN: usize = super::fs::MAX_RW_LEN;

/// How often a blocking-form op with a [`CancelFlag`] re-checks it while it waits.
pub const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Set by the waiter of an op that went away; the blocking form of the op
/// (not the io_uring one, which `ASYNC_CANCEL` stops) then gives up.
pub type CancelFlag = Arc<AtomicBool>;

// === socket addresses ===

/// A socket address in owned `sockaddr_storage` form: what `connect`,
/// `sendmsg` read and what `accept`, `recvmsg`, `getsockname` write.
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// The forms of a Unix-domain address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnixAddrKind<'a> {
    /// A filesystem path (bytes without the terminating NUL).
    Pathname(&'a [u8]),
    /// A Linux abstract name (bytes after the leading NUL).
    Abstract(&'a [u8]),
    /// No name (an unbound socket or one end of a socket pair).
    Unnamed,
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.to_inet(), self.unix()) {
            (Some(a), _) => write!(f, "SockAddr({a})"),
            (None, Some(u)) => write!(f, "SockAddr(unix {u:?})"),
            _ => write!(f, "SockAddr(family {}, len {})", self.family(), self.len),
        }
    }
}

const STORAGE_LEN: libc::socklen_t = size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// Offset of `sun_path` in `sockaddr_un` (after the 2-byte family).
const SUN_PATH_OFFSET: usize = size_of::<libc::sa_family_t>();

/// Length of `sun_path`.
const SUN_PATH_LEN: usize = 108;

const _: () = assert!(size_of::<libc::sockaddr_un>() == SUN_PATH_OFFSET + SUN_PATH_LEN);
const _: () = assert!(size_of::<libc::sockaddr_in6>() <= size_of::<libc::sockaddr_storage>());
const _: () = assert!(size_of::<libc::sockaddr_un>() <= size_of::<libc::sockaddr_storage>());

impl SockAddr {
    /// An all-zero address with room for any family: an out-parameter.
    pub fn empty() -> SockAddr {
        // SAFETY: `sockaddr_storage` is plain integer data; all-zero is valid.
        let storage = unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        SockAddr {
            storage,
            len: STORAGE_LEN,
        }
    }

    /// The `sockaddr_in` / `sockaddr_in6` form of an IP socket address.
    pub fn from_inet(addr: SocketAddr) -> SockAddr {
        let mut out = SockAddr::empty();
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                out.write(&sin);
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                out.write(&sin6);
            }
        }
        out
    }

    /// A Unix-domain pathname address (`path` without a NUL).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `path` is empty, contains a NUL byte or does not fit
    /// in `sun_path` (107 bytes and the terminating NUL).
    pub fn unix_path(path: &[u8]) -> io::Result<SockAddr> {
        if path.is_empty() || path.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unix socket path is empty or contains NUL",
            ));
        }
        if path.len() >= SUN_PATH_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unix socket path longer than 107 bytes",
            ));
        }
        Ok(SockAddr::unix_raw(
            &[path, &[0]],
            SUN_PATH_OFFSET + path.len() + 1,
        ))
    }

    /// A Linux abstract Unix-domain address (`name` without the leading NUL).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `name` does not fit in `sun_path` (107 bytes).
    pub fn unix_abstract(name: &[u8]) -> io::Result<SockAddr> {
        if name.len() >= SUN_PATH_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "abstract unix name longer than 107 bytes",
            ));
        }
        Ok(SockAddr::unix_raw(
            &[&[0], name],
            SUN_PATH_OFFSET + 1 + name.len(),
        ))
    }

    fn unix_raw(parts: &[&[u8]], len: usize) -> SockAddr {
        let mut un = libc::sockaddr_un {
            sun_family: libc::AF_UNIX as libc::sa_family_t,
            sun_path: [0; SUN_PATH_LEN],
        };
        let mut at = 0;
        for part in parts {
            for &b in *part {
                un.sun_path[at] = b as libc::c_char;
                at += 1;
            }
        }
        let mut out = SockAddr::empty();
        out.write(&un);
        out.len = len as libc::socklen_t;
        out
    }

    /// Stores `value` at the start of the storage and sets the length to its size.
    fn write<T: Copy>(&mut self, value: &T) {
        const { assert!(size_of::<T>() <= size_of::<libc::sockaddr_storage>()) };
        // SAFETY: `T` (a sockaddr_* type) fits in the storage (asserted above),
        // and `sockaddr_storage` is aligned for every sockaddr type.
        unsafe { std::ptr::write((&raw mut self.storage).cast::<T>(), *value) };
        self.len = size_of::<T>() as libc::socklen_t;
    }

    /// Reads the storage as `T` when the address is long enough to hold one.
    fn read<T: Copy>(&self) -> Option<T> {
        const { assert!(size_of::<T>() <= size_of::<libc::sockaddr_storage>()) };
        if (self.len as usize) < size_of::<T>() {
            return None;
        }
        // SAFETY: `T` fits in the storage and is plain data valid for any bytes;
        // the storage is aligned for every sockaddr type.
        Some(unsafe { std::ptr::read((&raw const self.storage).cast::<T>()) })
    }

    /// The address family (`AF_INET`, `AF_INET6`, `AF_UNIX`, …; 0 when unset).
    pub fn family(&self) -> i32 {
        i32::from(self.storage.ss_family)
    }

    /// The address length in bytes.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// True when the length is 0 (nothing was written).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The IP socket address, for `AF_INET` / `AF_INET6`.
    pub fn to_inet(&self) -> Option<SocketAddr> {
        match self.family() {
            libc::AF_INET => {
                let sin: libc::sockaddr_in = self.read()?;
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                let sin6: libc::sockaddr_in6 = self.read()?;
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// The Unix-domain form, for `AF_UNIX`.
    pub fn unix(&self) -> Option<UnixAddrKind<'_>> {
        if self.family() != libc::AF_UNIX {
            return None;
        }
        let path_len = (self.len as usize)
            .saturating_sub(SUN_PATH_OFFSET)
            .min(SUN_PATH_LEN);
        let bytes = self.storage_bytes();
        let path = &bytes[SUN_PATH_OFFSET..SUN_PATH_OFFSET + path_len];
        Some(match path.first() {
            None => UnixAddrKind::Unnamed,
            Some(0) => UnixAddrKind::Abstract(&path[1..]),
            Some(_) => {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                UnixAddrKind::Pathname(&path[..end])
            }
        })
    }

    fn storage_bytes(&self) -> &[u8] {
        // SAFETY: `sockaddr_storage` is plain data with no padding-sensitive
        // invariants; every byte was initialized (zeroed at construction).
        unsafe {
            std::slice::from_raw_parts(
                (&raw const self.storage).cast::<u8>(),
                size_of::<libc::sockaddr_storage>(),
            )
        }
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (&raw const self.storage).cast()
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&raw mut self.storage).cast()
    }
}

// === socket helpers (plain system calls that never block) ===

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `getsockname(2)`: the address a socket is bound to.
///
/// # Errors
///
/// The `getsockname` errno (`ENOTSOCK`, …).
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    let mut addr = SockAddr::empty();
    // SAFETY: `addr` is writable storage of the length passed in `addr.len`.
    check(unsafe { libc::getsockname(fd.as_raw_fd(), addr.as_mut_ptr(), &mut addr.len) })?;
    Ok(addr)
}

/// `getpeername(2)`: the address of a connected socket's peer.
///
/// # Errors
///
/// `ENOTCONN` for an unconnected socket; the other `getpeername` errnos.
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    let mut addr = SockAddr::empty();
    // SAFETY: `addr` is writable storage of the length passed in `addr.len`.
    check(unsafe { libc::getpeername(fd.as_raw_fd(), addr.as_mut_ptr(), &mut addr.len) })?;
    Ok(addr)
}

/// `setsockopt(2)` with an `int` value (`TCP_NODELAY`, `SO_REUSEADDR`, …).
///
/// # Errors
///
/// The `setsockopt` errno.
pub fn set_int_option(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    let len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option value is a live `c_int` of the length passed.
    check(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&raw const value).cast(), len) }).map(drop)
}

/// `getsockopt(2)` of an `int` option.
///
/// # Errors
///
/// The `getsockopt` errno.
pub fn int_option(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable `c_int` and `len` holds its size.
    check(unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&raw mut value).cast(), &mut len) })?;
    Ok(value)
}

/// `bind(2)`: gives a socket its local address. It never blocks.
///
/// # Errors
///
/// The `bind` errno (`EADDRINUSE`, `EACCES`, `EINVAL` for a socket already
/// bound or an address of another family, …).
pub fn bind(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: `addr` is a live sockaddr of the length it carries (at most its storage).
    check(unsafe { libc::bind(fd.as_raw_fd(), addr.as_ptr(), addr.len) }).map(drop)
}

/// `listen(2)` with a backlog (the kernel caps it at `net.core.somaxconn`).
///
/// # Errors
///
/// The `listen` errno (`EADDRINUSE` for an unbound socket whose automatic
/// port is taken, `EOPNOTSUPP` for a datagram socket, …).
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: a plain system call on a borrowed, open fd.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// `shutdown(2)` as a direct call (it never blocks), for destructors.
///
/// # Errors
///
/// `ENOTCONN` for an unconnected socket; the other `shutdown` errnos.
pub fn shutdown_now(fd: BorrowedFd<'_>, how: i32) -> io::Result<()> {
    // SAFETY: a plain system call on a borrowed, open fd.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), how) }).map(drop)
}

/// `socketpair(2)` with `SOCK_CLOEXEC`: two connected sockets.
///
/// # Errors
///
/// The `socketpair` errno (`EMFILE`, …).
pub fn socket_pair(domain: i32, ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a writable array of two ints.
    check(unsafe { libc::socketpair(domain, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: the kernel returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

// === the blocking forms ===

fn cancelled(flag: Option<&CancelFlag>) -> bool {
    // Relaxed: the flag only says "stop waiting"; it publishes no other data.
    flag.is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up, which
/// the following call reports), or the op was cancelled (`Err(ECANCELED)`).
fn wait_ready(fd: RawFd, events: libc::c_short, cancel: Option<&CancelFlag>) -> Result<(), i32> {
    let timeout = if cancel.is_some() {
        CANCEL_POLL.as_millis() as libc::c_int
    } else {
        -1
    };
    loop {
        if cancelled(cancel) {
            return Err(libc::ECANCELED);
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid, exclusively borrowed pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if ret > 0 {
            return Ok(());
        }
        if ret < 0 {
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
            if errno != libc::EINTR {
                return Err(errno);
            }
        }
    }
}

/// Runs a `MSG_DONTWAIT` socket call once `fd` is ready, retrying on `EAGAIN`
/// (another reader took the data first) and `EINTR`.
fn retry_when_ready(
    fd: RawFd,
    events: libc::c_short,
    cancel: Option<&CancelFlag>,
    mut call: impl FnMut() -> libc::c_long,
) -> i32 {
    loop {
        if let Err(errno) = wait_ready(fd, events, cancel) {
            return -errno;
        }
        let res = cqe_res(call());
        if res != -libc::EAGAIN && res != -libc::EINTR {
            return res;
        }
    }
}

// === the non-blocking forms ===

/// Runs a non-blocking socket call once (again on `EINTR`): `None` when it
/// would block (`EAGAIN`).
fn once_nonblocking(mut call: impl FnMut() -> libc::c_long) -> Option<i32> {
    loop {
        let res = cqe_res(call());
        if res == -libc::EINTR {
            continue;
        }
        return (res != -libc::EAGAIN).then_some(res);
    }
}

/// The attempt of a readiness op whose call would block on `interest`, or ran.
fn attempt_with(
    interest: Interest,
    cancel: Option<&CancelFlag>,
    call: impl FnMut() -> libc::c_long,
) -> Attempt {
    if cancelled(cancel) {
        return Attempt::Done(-libc::ECANCELED);
    }
    once_nonblocking(call).map_or(Attempt::WouldBlock(interest), Attempt::Done)
}

/// Sets `O_NONBLOCK` on `fd` (`accept4` and `connect` have no per-call
/// flag); returns the flags it had before, when it changed them.
fn set_nonblocking(fd: RawFd) -> Result<Option<libc::c_int>, i32> {
    // SAFETY: a plain fcntl on an fd the op keeps open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(None);
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
    }
    Ok(Some(flags))
}

/// True when `fd` is ready for `events` (or has an error or hang-up) now.
fn ready_now(fd: RawFd, events: libc::c_short) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, exclusively borrowed pollfd; no waiting.
    (unsafe { libc::poll(&mut pfd, 1, 0) }) > 0
}

// === SOCKET ===

/// `socket(domain, type | SOCK_CLOEXEC, protocol)`: its result is a new fd.
#[derive(Debug)]
pub struct Socket {
    domain: i32,
    ty: i32,
    protocol: i32,
    opened: Option<OwnedFd>,
}

impl Socket {
    /// A socket of `domain` (`AF_INET`, …) and `ty` (`SOCK_STREAM`, …);
    /// `SOCK_CLOEXEC` is always added.
    pub fn new(domain: i32, ty: i32, protocol: i32) -> Self {
        Socket {
            domain,
            ty: ty | libc::SOCK_CLOEXEC,
            protocol,
            opened: None,
        }
    }

    /// The socket a successful op created; `None` before completion or after
    /// a failure. An op dropped without this closes the socket.
    pub fn into_fd(mut self) -> Option<OwnedFd> {
        self.opened.take()
    }
}

// SAFETY: references no memory and no fd.
unsafe impl Op for Socket {
    fn prepare(&mut self) -> Sqe {
        sqe::Socket::new(self.domain, self.ty, self.protocol).build()
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        // SAFETY: `cqe` is this op's final completion (the trait's contract): a
        // non-negative `res` is the socket the kernel created for it.
        self.opened = unsafe { adopt_fd(cqe.res) };
    }
    fn run_blocking(&mut self) -> i32 {
        // SAFETY: a plain system call with integer arguments.
        let res = cqe_res(unsafe { libc::socket(self.domain, self.ty, self.protocol) } as libc::c_long);
        // SAFETY: a non-negative `res` is the socket `socket(2)` just created.
        self.opened = unsafe { adopt_fd(res) };
        res
    }
    into_any!();
}

// === CONNECT ===

/// `connect(fd, addr)` with an owned address.
#[derive(Debug)]
pub struct Connect {
    fd: SharedFd,
    addr: Box<SockAddr>,
    /// The non-blocking form started the connect (`EINPROGRESS`).
    in_progress: bool,
    /// The fd's flags before the non-blocking form set `O_NONBLOCK`.
    restore_flags: Option<libc::c_int>,
}

impl Connect {
    /// Connects `fd` to `addr`.
    pub fn new(fd: SharedFd, addr: SockAddr) -> Self {
        Connect {
            fd,
            addr: Box::new(addr),
            in_progress: false,
            restore_flags: None,
        }
    }
}

// SAFETY: the SQE points at the boxed address, owned by the op.
unsafe impl Op for Connect {
    fn prepare(&mut self) -> Sqe {
        sqe::Connect::new(self.fd.as_raw_fd(), self.addr.as_ptr(), self.addr.len).build()
    }
    fn run_blocking(&mut self) -> i32 {
        let fd = self.fd.as_raw_fd();
        // SAFETY: the address is valid for `len` bytes.
        let res = cqe_res(unsafe { libc::connect(fd, self.addr.as_ptr(), self.addr.len) } as libc::c_long);
        if res != -libc::EINTR {
            return res;
        }
        // An interrupted connect goes on in the background: wait for its outcome.
        if let Err(e) = wait_ready(fd, libc::POLLOUT, None) {
            return -e;
        }
        match int_option(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR) {
            Ok(e) => -e,
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
    /// Starts the connect on the socket made non-blocking (`EINPROGRESS`:
    /// wait for writability), then reads its outcome from `SO_ERROR`. The
    /// socket's blocking mode is restored once the connect is over.
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let fd = self.fd.as_raw_fd();
        let res = if self.in_progress {
            if !ready_now(fd, libc::POLLOUT) {
                return Some(Attempt::WouldBlock(Interest::Writable));
            }
            match int_option(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR) {
                Ok(e) => -e,
                Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            }
        } else {
            match set_nonblocking(fd) {
                Err(e) => return Some(Attempt::Done(-e)),
                Ok(old) => self.restore_flags = old,
            }
            // SAFETY: the address is valid for `len` bytes.
            let res =
                cqe_res(unsafe { libc::connect(fd, self.addr.as_ptr(), self.addr.len) } as libc::c_long);
            if res == -libc::EINPROGRESS || res == -libc::EINTR {
                self.in_progress = true;
                return Some(Attempt::WouldBlock(Interest::Writable));
            }
            res
        };
        if let Some(flags) = self.restore_flags.take() {
            // SAFETY: a plain fcntl on an fd the op keeps open.
            unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
        }
        Some(Attempt::Done(res))
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    into_any!();
}

// === ACCEPT ===

/// `accept4(fd, addr, len, SOCK_CLOEXEC)`, once or multishot: each result is a
/// new fd.
#[derive(Debug)]
pub struct Accept {
    fd: SharedFd,
    /// The peer address out-parameter (single-shot only: a multishot op would
    /// overwrite it for every connection while we read it).
    addr: Option<Box<SockAddr>>,
    multishot: bool,
    cancel: Option<CancelFlag>,
    accepted: Option<OwnedFd>,
}

impl Accept {
    /// One accept on listening socket `fd`, recording the peer address.
    pub fn new(fd: SharedFd) -> Self {
        Accept {
            fd,
            addr: Some(Box::new(SockAddr::empty())),
            multishot: false,
            cancel: None,
            accepted: None,
        }
    }

    /// A multishot accept (`IORING_ACCEPT_MULTISHOT`, Linux 5.19): one CQE per
    /// connection until cancelled or failed. No peer address is recorded. Its
    /// blocking form accepts once (the caller re-arms).
    pub fn multishot(fd: SharedFd) -> Self {
        Accept {
            fd,
            addr: None,
            multishot: true,
            cancel: None,
            accepted: None,
        }
    }

    /// Lets the blocking form give up when `flag` is set.
    pub fn cancel_flag(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// The connection this op's final completion accepted; `None` before
    /// completion or after a failure. (A multishot op's other connections
    /// come with its intermediate completions: [`OpEvent::take_fd`].) An op
    /// dropped without this closes the connection.
    ///
    /// ```compile_fail
    /// // No safe function turns a number into an fd the op "accepted":
    /// let stolen: std::os::fd::OwnedFd = spargio_sys::op::net::Accept::take_fd(0);
    /// ```
    pub fn into_fd(mut self) -> Option<OwnedFd> {
        self.accepted.take()
    }

    /// The peer address recorded by a successful single-shot accept.
    pub fn peer_addr(&self) -> Option<SockAddr> {
        self.addr.as_deref().copied()
    }
}

// SAFETY: the SQE points at the boxed address and its length, owned by the op,
// or at nothing (multishot).
unsafe impl Op for Accept {
    fn prepare(&mut self) -> Sqe {
        let (addr, len) = match self.addr.as_deref_mut() {
            Some(a) => {
                a.len = STORAGE_LEN;
                (a.as_mut_ptr(), &raw mut a.len)
            }
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        sqe::Accept::new(self.fd.as_raw_fd(), addr, len)
            .flags(libc::SOCK_CLOEXEC)
            .multishot(self.multishot)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let fd = self.fd.as_raw_fd();
        let (addr, len) = match self.addr.as_deref_mut() {
            Some(a) => {
                a.len = STORAGE_LEN;
                (a.as_mut_ptr(), &raw mut a.len)
            }
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        let res = retry_when_ready(fd, libc::POLLIN, self.cancel.as_ref(), || {
            // SAFETY: `addr`/`len` are null or point into the boxed address.
            (unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC) }) as libc::c_long
        });
        // SAFETY: a non-negative `res` is the connection `accept4` just created.
        self.accepted = unsafe { adopt_fd(res) };
        res
    }
    /// Accepts once on the listener made non-blocking (it stays so; the
    /// connections it accepts do not inherit `O_NONBLOCK`).
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let fd = self.fd.as_raw_fd();
        if let Err(e) = set_nonblocking(fd) {
            return Some(Attempt::Done(-e));
        }
        let (addr, len) = match self.addr.as_deref_mut() {
            Some(a) => {
                a.len = STORAGE_LEN;
                (a.as_mut_ptr(), &raw mut a.len)
            }
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        let attempt = attempt_with(Interest::Readable, self.cancel.as_ref(), || {
            // SAFETY: `addr`/`len` are null or point into the boxed address.
            (unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC) }) as libc::c_long
        });
        if let Attempt::Done(res) = attempt {
            // SAFETY: a non-negative `res` is the connection `accept4` just created.
            self.accepted = unsafe { adopt_fd(res) };
        }
        Some(attempt)
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        // SAFETY: `cqe` is this accept's final completion (the trait's contract):
        // a non-negative `res` is the connection the kernel created for it.
        self.accepted = unsafe { adopt_fd(cqe.res) };
    }
    unsafe fn progress(&mut self, cqe: &Cqe) -> OpEvent {
        // SAFETY: as in `complete`, for one of the multishot accept's connections.
        OpEvent::new(*cqe).with_fd(unsafe { adopt_fd(cqe.res) })
    }
    into_any!();
}

// === SEND / RECV ===

/// `send(fd, buf, MSG_NOSIGNAL | flags)` of an owned buffer's initialized bytes.
#[derive(Debug)]
pub struct Send<B> {
    fd: SharedFd,
    buf: B,
    flags: i32,
    cancel: Option<CancelFlag>,
}

impl<B: IoBuf> Send<B> {
    /// Sends `buf`'s initialized bytes; `MSG_NOSIGNAL` is always added, so a
    /// reset peer gives `EPIPE`, never `SIGPIPE`.
    pub fn new(fd: SharedFd, buf: B, flags: i32) -> Self {
        Send {
            fd,
            buf,
            flags: flags | libc::MSG_NOSIGNAL,
            cancel: None,
        }
    }

    /// Lets the blocking form give up when `flag` is set.
    pub fn cancel_flag(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Takes the buffer back.
    pub fn into_buf(self) -> B {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_init().min(MAX_IO_LEN)
    }
}

// SAFETY: the SQE points at `buf`'s stable, initialized bytes (`IoBuf` contract).
unsafe impl<B: IoBuf> Op for Send<B> {
    fn prepare(&mut self) -> Sqe {
        sqe::Send::new(self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len() as u32)
            .msg_flags(self.flags)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let (fd, ptr, len, flags) = (self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len(), self.flags);
        retry_when_ready(fd, libc::POLLOUT, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is readable for `len` initialized bytes.
            (unsafe { libc::send(fd, ptr.cast(), len, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        })
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let (fd, ptr, len, flags) = (self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len(), self.flags);
        Some(attempt_with(Interest::Writable, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is readable for `len` initialized bytes.
            (unsafe { libc::send(fd, ptr.cast(), len, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        }))
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    into_any!();
}

// === SEND_ZC ===

/// A zero-copy `send(fd, buf, MSG_NOSIGNAL | flags)` of an owned buffer's
/// initialized bytes (`IORING_OP_SEND_ZC`, kernel 6.0).
///
/// The kernel posts two completions: the send's result, with
/// `IORING_CQE_F_MORE`, and later, once the network stack no longer reads the
/// buffer, a notification with `IORING_CQE_F_NOTIF`. The notification is the
/// op's final completion, so [`InFlight`](super::InFlight) keeps the buffer
/// until it arrives, whatever the op's waiter does in between. A send refused
/// at once may post its result alone (no `F_MORE`), and then no notification.
///
/// The blocking and non-blocking forms (the Queue backend, and kernels
/// without the opcode) are a plain `send(2)`, which copies.
#[derive(Debug)]
pub struct SendZc<B> {
    fd: SharedFd,
    buf: B,
    flags: i32,
    report_usage: bool,
    cancel: Option<CancelFlag>,
    /// The send's result (a count or `-errno`), from its first completion.
    sent: Option<i32>,
    /// The notification said the kernel copied the bytes after all.
    copied: bool,
}

impl<B: IoBuf> SendZc<B> {
    /// Sends `buf`'s initialized bytes without copying them into the kernel;
    /// `MSG_NOSIGNAL` is always added.
    pub fn new(fd: SharedFd, buf: B, flags: i32) -> Self {
        SendZc {
            fd,
            buf,
            flags: flags | libc::MSG_NOSIGNAL,
            report_usage: false,
            cancel: None,
            sent: None,
            copied: false,
        }
    }

    /// Asks the notification to say whether the kernel copied the bytes after
    /// all (`IORING_SEND_ZC_REPORT_USAGE`, kernel 6.2; older kernels refuse
    /// the send with `EINVAL`), read with [`SendZc::copied`].
    pub fn report_usage(mut self, on: bool) -> Self {
        self.report_usage = on;
        self
    }

    /// Lets the blocking form give up when `flag` is set.
    pub fn cancel_flag(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// What the send did: the bytes sent, or its error.
    ///
    /// # Errors
    ///
    /// The send's error (`BrokenPipe`, `ConnectionReset`, `ECANCELED` for a
    /// cancelled send, `EINVAL` or `EOPNOTSUPP` where the socket or kernel
    /// cannot send zero-copy); `ErrorKind::Other` if no completion was
    /// recorded (the op was never run).
    pub fn sent(&self) -> io::Result<usize> {
        match self.sent {
            Some(n) if n >= 0 => Ok(n as usize),
            Some(e) => Err(io::Error::from_raw_os_error(-e)),
            None => Err(io::Error::other("the zero-copy send has not completed")),
        }
    }

    /// True when the bytes were copied after all: the notification said so
    /// (with [`SendZc::report_usage`]; a loopback peer, say), or the op ran
    /// as a plain `send(2)`.
    pub fn copied(&self) -> bool {
        self.copied
    }

    /// Takes the buffer back.
    pub fn into_buf(self) -> B {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_init().min(MAX_IO_LEN)
    }

    /// Records the outcome of the plain-send forms.
    fn record_plain(&mut self, res: i32) {
        self.sent = Some(res);
        self.copied = true;
    }
}

// SAFETY: the SQE points at `buf`'s stable, initialized bytes (`IoBuf` contract),
// which the op owns until its final completion, the notification.
unsafe impl<B: IoBuf> Op for SendZc<B> {
    fn prepare(&mut self) -> Sqe {
        let ptr = self.buf.stable_ptr();
        // The SQE carries the address as an integer; whoever reads the bytes
        // (the simulated kernel, under Miri) turns it back into a pointer.
        let _ = ptr.expose_provenance();
        sqe::SendZc::new(self.fd.as_raw_fd(), ptr, self.len() as u32)
            .msg_flags(self.flags)
            .report_usage(self.report_usage)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let (fd, ptr, len, flags) = (self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len(), self.flags);
        let res = retry_when_ready(fd, libc::POLLOUT, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is readable for `len` initialized bytes.
            (unsafe { libc::send(fd, ptr.cast(), len, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        });
        self.record_plain(res);
        res
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let (fd, ptr, len, flags) = (self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len(), self.flags);
        let attempt = attempt_with(Interest::Writable, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is readable for `len` initialized bytes.
            (unsafe { libc::send(fd, ptr.cast(), len, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        });
        if let Attempt::Done(res) = attempt {
            self.record_plain(res);
        }
        Some(attempt)
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    unsafe fn progress(&mut self, cqe: &Cqe) -> OpEvent {
        if cqe.flags & abi::IORING_CQE_F_NOTIF == 0 {
            self.sent = Some(cqe.res);
        }
        OpEvent::new(*cqe)
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        if cqe.flags & abi::IORING_CQE_F_NOTIF == 0 {
            // A send that posts no notification: its result is final.
            self.sent = Some(cqe.res);
        } else if self.report_usage && (cqe.res as u32) & abi::IORING_NOTIF_USAGE_ZC_COPIED != 0 {
            self.copied = true;
        }
    }
    into_any!();
}

/// `recv(fd, buf, flags)` into an owned buffer, from its start up to its capacity.
#[derive(Debug)]
pub struct Recv<B> {
    fd: SharedFd,
    buf: B,
    flags: i32,
    cancel: Option<CancelFlag>,
    /// Bytes the completed receive wrote at the start of `buf`.
    received: usize,
}

impl<B: IoBufMut> Recv<B> {
    /// Receives into `buf` (from its start, up to `bytes_total()`).
    pub fn new(fd: SharedFd, buf: B, flags: i32) -> Self {
        Recv {
            fd,
            buf,
            flags,
            cancel: None,
            received: 0,
        }
    }

    /// Lets the blocking form give up when `flag` is set.
    pub fn cancel_flag(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Takes the buffer back, with the bytes the receive returned marked
    /// initialized (by the op itself, on completion).
    pub fn into_buf(self) -> B {
        self.buf
    }

    /// The bytes the completed receive wrote (empty before completion and
    /// after a failure), whether or not the buffer could count them as
    /// initialized (see [`IoBuf::slice`]).
    pub fn received(&self) -> &[u8] {
        received(&self.buf, self.received)
    }

    fn len(&self) -> usize {
        self.buf.bytes_total().min(MAX_IO_LEN)
    }
}

/// The first `n` bytes of `buf`, which a completed receive wrote.
fn received<B: IoBuf>(buf: &B, n: usize) -> &[u8] {
    let n = n.min(buf.bytes_total());
    if n == 0 {
        return &[];
    }
    // `n` is a count the op recorded from its own final completion (or its
    // blocking call), clamped to the length it asked for.
    // SAFETY: so the first `n` bytes at `stable_ptr()` were written and lie in
    // the buffer (`IoBuf` contract), which the borrow keeps alive and unwritten.
    unsafe { std::slice::from_raw_parts(buf.stable_ptr(), n) }
}

/// The count a receive's result says was written, clamped to what it asked for.
fn received_len(res: i32, len: usize) -> usize {
    usize::try_from(res).map_or(0, |n| n.min(len))
}

/// Marks the bytes a receive returned initialized ([`record_read`]) and
/// returns their count.
///
/// # Safety
///
/// As for [`record_read`]: `res` is what the kernel (or the system call)
/// returned for a receive into `buf` from its start.
unsafe fn record_receive<B: IoBufMut>(buf: &mut B, len: usize, res: i32) -> usize {
    // SAFETY: the caller's contract is `record_read`'s.
    unsafe { record_read(buf, len, res) };
    received_len(res, len)
}

// SAFETY: the SQE points at `buf`'s stable memory (`IoBufMut` contract) for at
// most `bytes_total()` bytes; `buf` is owned by the op.
unsafe impl<B: IoBufMut> Op for Recv<B> {
    fn prepare(&mut self) -> Sqe {
        let len = self.len() as u32;
        sqe::Recv::new(self.fd.as_raw_fd(), self.buf.stable_mut_ptr(), len)
            .msg_flags(self.flags)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let (fd, len, flags) = (self.fd.as_raw_fd(), self.len(), self.flags);
        let ptr = self.buf.stable_mut_ptr();
        let res = retry_when_ready(fd, libc::POLLIN, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is writable for `len` bytes (`IoBufMut` contract).
            (unsafe { libc::recv(fd, ptr.cast(), len, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        });
        // SAFETY: `res` is what `recv` into the start of `buf` returned.
        self.received = unsafe { record_receive(&mut self.buf, len, res) };
        res
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let (fd, len, flags) = (self.fd.as_raw_fd(), self.len(), self.flags);
        let ptr = self.buf.stable_mut_ptr();
        let attempt = attempt_with(Interest::Readable, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is writable for `len` bytes (`IoBufMut` contract).
            (unsafe { libc::recv(fd, ptr.cast(), len, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        });
        if let Attempt::Done(res) = attempt {
            // SAFETY: `res` is what `recv` into the start of `buf` returned.
            self.received = unsafe { record_receive(&mut self.buf, len, res) };
        }
        Some(attempt)
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        let len = self.len();
        // SAFETY: `cqe` is this receive's final completion (the trait's contract).
        self.received = unsafe { record_receive(&mut self.buf, len, cqe.res) };
    }
    into_any!();
}

// === SENDMSG / RECVMSG ===

/// A message header with one iovec and an address, in one heap block the op
/// owns, so the pointers between them stay valid when the op moves.
struct MsgParts {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: SockAddr,
}

// SAFETY: the raw pointers in `hdr` and `iov` point into this block and into
// the op's owned buffer; the block moves between threads only together with
// the op that owns both, and nothing reads them except the kernel and the op.
unsafe impl std::marker::Send for MsgParts {}

impl MsgParts {
    fn new(addr: Option<SockAddr>) -> Box<MsgParts> {
        // SAFETY: `msghdr` and `iovec` are plain data; all-zero (null pointers,
        // zero lengths) is a valid value of each.
        let (hdr, iov) = unsafe {
            (
                std::mem::zeroed::<libc::msghdr>(),
                std::mem::zeroed::<libc::iovec>(),
            )
        };
        let has_addr = addr.is_some();
        let mut parts = Box::new(MsgParts {
            hdr,
            iov,
            addr: addr.unwrap_or_else(SockAddr::empty),
        });
        if !has_addr {
            parts.addr.len = 0;
        }
        parts
    }

    /// Points the header at the iovec (covering `ptr..ptr + len`) and at the
    /// address (if it has a length). Returns the header.
    fn link(&mut self, ptr: *mut u8, len: usize, addr_capacity: libc::socklen_t) -> *mut libc::msghdr {
        self.iov = libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        };
        self.hdr.msg_iov = &raw mut self.iov;
        self.hdr.msg_iovlen = 1;
        if addr_capacity > 0 {
            self.hdr.msg_name = self.addr.as_mut_ptr().cast();
            self.hdr.msg_namelen = addr_capacity;
        } else {
            self.hdr.msg_name = std::ptr::null_mut();
            self.hdr.msg_namelen = 0;
        }
        self.hdr.msg_flags = 0;
        &raw mut self.hdr
    }
}

/// `sendmsg(fd, {buf, addr}, MSG_NOSIGNAL | flags)`: a datagram to an address
/// (UDP `send_to`), or to the connected peer.
pub struct SendMsg<B> {
    fd: SharedFd,
    buf: B,
    parts: Box<MsgParts>,
    flags: i32,
    cancel: Option<CancelFlag>,
}

impl<B> std::fmt::Debug for SendMsg<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendMsg")
            .field("addr", &self.parts.addr)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl<B: IoBuf> SendMsg<B> {
    /// Sends `buf`'s initialized bytes to `addr` (or the connected peer when
    /// `None`); `MSG_NOSIGNAL` is always added.
    pub fn new(fd: SharedFd, buf: B, addr: Option<SockAddr>, flags: i32) -> Self {
        SendMsg {
            fd,
            buf,
            parts: MsgParts::new(addr),
            flags: flags | libc::MSG_NOSIGNAL,
            cancel: None,
        }
    }

    /// Lets the blocking form give up when `flag` is set.
    pub fn cancel_flag(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Takes the buffer back.
    pub fn into_buf(self) -> B {
        self.buf
    }

    fn link(&mut self) -> *mut libc::msghdr {
        let len = self.buf.bytes_init().min(MAX_IO_LEN);
        let addr_len = self.parts.addr.len;
        // The kernel only reads through these pointers for a send.
        self.parts.link(self.buf.stable_ptr().cast_mut(), len, addr_len)
    }
}

// SAFETY: the SQE points at the boxed header, which points at the boxed iovec
// and address and at `buf`'s stable, initialized bytes; all owned by the op.
unsafe impl<B: IoBuf> Op for SendMsg<B> {
    fn prepare(&mut self) -> Sqe {
        let hdr = self.link();
        sqe::SendMsg::new(self.fd.as_raw_fd(), hdr)
            .msg_flags(self.flags)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let hdr = self.link();
        let (fd, flags) = (self.fd.as_raw_fd(), self.flags);
        retry_when_ready(fd, libc::POLLOUT, self.cancel.as_ref(), || {
            // SAFETY: `hdr` and everything it points at are owned by the op.
            (unsafe { libc::sendmsg(fd, hdr, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        })
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let hdr = self.link();
        let (fd, flags) = (self.fd.as_raw_fd(), self.flags);
        Some(attempt_with(Interest::Writable, self.cancel.as_ref(), || {
            // SAFETY: `hdr` and everything it points at are owned by the op.
            (unsafe { libc::sendmsg(fd, hdr, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        }))
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    into_any!();
}

/// `recvmsg(fd, {buf, addr}, flags)`: a datagram and its sender (UDP `recv_from`).
pub struct RecvMsg<B> {
    fd: SharedFd,
    buf: B,
    parts: Box<MsgParts>,
    flags: i32,
    cancel: Option<CancelFlag>,
    /// Bytes the completed receive wrote at the start of `buf`.
    received: usize,
}

impl<B> std::fmt::Debug for RecvMsg<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvMsg")
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// What a completed [`RecvMsg`] gives back.
#[derive(Debug)]
pub struct RecvMsgOut<B> {
    /// The buffer, with the received bytes marked initialized.
    pub buf: B,
    /// The sender's address (empty for a connected stream socket).
    pub addr: SockAddr,
    /// The `msg_flags` the kernel reported (`MSG_TRUNC` for a datagram that
    /// did not fit).
    pub msg_flags: i32,
}

impl<B: IoBufMut> RecvMsg<B> {
    /// Receives into `buf` (from its start, up to `bytes_total()`), recording
    /// the sender's address.
    pub fn new(fd: SharedFd, buf: B, flags: i32) -> Self {
        RecvMsg {
            fd,
            buf,
            parts: MsgParts::new(None),
            flags,
            cancel: None,
            received: 0,
        }
    }

    /// Lets the blocking form give up when `flag` is set.
    pub fn cancel_flag(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Takes the buffer (with the bytes received marked initialized), the
    /// sender's address and the message flags back after completion.
    pub fn into_parts(self) -> RecvMsgOut<B> {
        let addr = self.sender();
        RecvMsgOut {
            buf: self.buf,
            addr,
            msg_flags: self.parts.hdr.msg_flags,
        }
    }

    /// The bytes the completed receive wrote, as [`Recv::received`].
    pub fn received(&self) -> &[u8] {
        received(&self.buf, self.received)
    }

    /// The sender's address, once the receive completed (as in [`into_parts`](Self::into_parts)).
    pub fn sender(&self) -> SockAddr {
        let mut addr = self.parts.addr;
        addr.len = self.parts.hdr.msg_namelen.min(STORAGE_LEN);
        addr
    }

    fn len(&self) -> usize {
        self.buf.bytes_total().min(MAX_IO_LEN)
    }

    fn link(&mut self) -> *mut libc::msghdr {
        let len = self.len();
        let ptr = self.buf.stable_mut_ptr();
        self.parts.link(ptr, len, STORAGE_LEN)
    }
}

// SAFETY: the SQE points at the boxed header, which points at the boxed iovec
// and address and at `buf`'s stable, writable memory; all owned by the op.
unsafe impl<B: IoBufMut> Op for RecvMsg<B> {
    fn prepare(&mut self) -> Sqe {
        let hdr = self.link();
        sqe::RecvMsg::new(self.fd.as_raw_fd(), hdr)
            .msg_flags(self.flags)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let hdr = self.link();
        let (fd, flags, len) = (self.fd.as_raw_fd(), self.flags, self.len());
        let res = retry_when_ready(fd, libc::POLLIN, self.cancel.as_ref(), || {
            // SAFETY: `hdr` and everything it points at are owned by the op.
            (unsafe { libc::recvmsg(fd, hdr, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        });
        // SAFETY: `res` is what `recvmsg` into the start of `buf` returned.
        self.received = unsafe { record_receive(&mut self.buf, len, res) };
        res
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let hdr = self.link();
        let (fd, flags, len) = (self.fd.as_raw_fd(), self.flags, self.len());
        let attempt = attempt_with(Interest::Readable, self.cancel.as_ref(), || {
            // SAFETY: `hdr` and everything it points at are owned by the op.
            (unsafe { libc::recvmsg(fd, hdr, flags | libc::MSG_DONTWAIT) }) as libc::c_long
        });
        if let Attempt::Done(res) = attempt {
            // SAFETY: `res` is what `recvmsg` into the start of `buf` returned.
            self.received = unsafe { record_receive(&mut self.buf, len, res) };
        }
        Some(attempt)
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        let len = self.len();
        // SAFETY: `cqe` is this receive's final completion (the trait's contract).
        self.received = unsafe { record_receive(&mut self.buf, len, cqe.res) };
    }
    into_any!();
}

// === SHUTDOWN ===

/// `shutdown(fd, how)`.
#[derive(Debug)]
pub struct Shutdown {
    fd: SharedFd,
    how: i32,
}

impl Shutdown {
    /// Shuts down reading (`SHUT_RD`), writing (`SHUT_WR`) or both (`SHUT_RDWR`).
    pub fn new(fd: SharedFd, how: i32) -> Self {
        Shutdown { fd, how }
    }
}

// SAFETY: references no memory.
unsafe impl Op for Shutdown {
    fn prepare(&mut self) -> Sqe {
        sqe::Shutdown::new(self.fd.as_raw_fd(), self.how).build()
    }
    fn run_blocking(&mut self) -> i32 {
        // SAFETY: a plain system call on an fd the op keeps open.
        cqe_res(unsafe { libc::shutdown(self.fd.as_raw_fd(), self.how) } as libc::c_long)
    }
    into_any!();
}

// === RECV multishot with provided buffers ===

/// A provided-buffer group for the receive ops of one stream: a [`BufRing`]
/// registered with one ring, shared by the stream and the ops that select
/// from it.
///
/// # Freeing
///
/// Every [`RecvMulti`] op holds an `Arc` of its group, and an op is freed only
/// after its final CQE (the [`Op`] contract; shutdown leaks, never frees, what
/// the kernel still holds). So when the last `Arc` goes away no op can select
/// from the group any more, and dropping it unregisters the group and frees
/// every buffer, including any whose completion nobody read.
pub struct RecvBufGroup {
    ring: Mutex<Option<BufRing>>,
}

impl std::fmt::Debug for RecvBufGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBufGroup")
            .field("ring", &*self.lock())
            .finish()
    }
}

impl RecvBufGroup {
    /// Registers `entries` buffers of `buf_len` bytes with `ring` as group `bgid`.
    ///
    /// Call it on the ring's own thread (a `SINGLE_ISSUER` ring refuses
    /// registrations from others) and submit the group's ops on that ring only.
    ///
    /// # Errors
    ///
    /// As [`BufRing::new`] (`EEXIST` when `bgid` is taken on this ring).
    pub fn new(ring: &Ring, bgid: u16, entries: u16, buf_len: u32) -> io::Result<Arc<RecvBufGroup>> {
        let bufs = BufRing::new(ring, bgid, entries, buf_len)?;
        Ok(Arc::new(RecvBufGroup {
            ring: Mutex::new(Some(bufs)),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Option<BufRing>> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group id.
    pub fn bgid(&self) -> u16 {
        self.lock().as_ref().map_or(0, BufRing::bgid)
    }

    /// Length of each buffer.
    pub fn buf_len(&self) -> u32 {
        self.lock().as_ref().map_or(0, BufRing::buf_len)
    }

    /// Buffers taken out of the group (by completions) and not yet given
    /// back: each is held by a [`ProvidedBuf`], or by an [`OpEvent`] or op
    /// that still owns one. Zero when every buffer is back with the kernel.
    pub fn taken(&self) -> usize {
        self.lock()
            .as_ref()
            .map_or(0, |r| (0..r.entries()).filter(|&bid| r.is_claimed(bid)).count())
    }

    /// Claims the buffer a completion reports filled, as a [`ProvidedBuf`]
    /// that gives it back to the kernel when dropped. `None` for a completion
    /// without a buffer (an error, or end of stream).
    ///
    /// # Safety
    ///
    /// `cqe` must be a completion the kernel posted for an op that selected
    /// from this group, handed over once (see [`BufRing::claim`]).
    unsafe fn claim(self: &Arc<Self>, cqe: &Cqe) -> Option<ProvidedBuf> {
        let bid = cqe.buffer_id()?;
        let len = usize::try_from(cqe.res).ok()?;
        let mut guard = self.lock();
        let ring = guard.as_mut()?;
        // SAFETY: the caller's contract; `claim` refuses an id twice anyway.
        if !unsafe { ring.claim(bid) } {
            return None;
        }
        Some(ProvidedBuf {
            len: len.min(ring.buf_len() as usize),
            group: self.clone(),
            bid,
        })
    }
}

/// A provided buffer that a multishot receive filled, taken from its group:
/// read it with [`ProvidedBuf::copy_to`]; dropping it gives it back to the
/// kernel.
pub struct ProvidedBuf {
    group: Arc<RecvBufGroup>,
    bid: u16,
    len: usize,
}

impl ProvidedBuf {
    /// Bytes the receive wrote.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a receive of zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the received bytes to `out`.
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        let guard = self.group.lock();
        if let Some(data) = guard.as_ref().and_then(|r| r.buffer(self.bid, self.len)) {
            out.extend_from_slice(data);
        }
    }
}

impl std::fmt::Debug for ProvidedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvidedBuf")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for ProvidedBuf {
    fn drop(&mut self) {
        if let Some(ring) = self.group.lock().as_mut() {
            // Claimed by this value alone (`RecvBufGroup::claim`), so recycled once.
            let _ = ring.recycle(self.bid);
        }
    }
}

impl OpEvent {
    /// Appends the data of a multishot receive's completion to `out` and
    /// gives its buffer back; returns the byte count (`0` for end of stream).
    ///
    /// # Errors
    ///
    /// The completion's error (`ENOBUFS` when the group ran dry, which ends
    /// the multishot op: re-arm after consuming).
    pub fn read_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        self.cqe().result()?;
        Ok(self.take_buf().map_or(0, |b| {
            b.copy_to(out);
            b.len()
        }))
    }
}

impl Drop for RecvBufGroup {
    fn drop(&mut self) {
        let ring = self.ring.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(ring) = ring {
            // SAFETY: the last `Arc` is gone, so no `RecvMulti` op (each holds
            // one until it is freed after its final CQE) can select from the
            // group any more (see "Freeing").
            unsafe { ring.release() };
        }
    }
}

/// `recv` multishot with buffer select (`IORING_RECV_MULTISHOT`,
/// `IOSQE_BUFFER_SELECT`; Linux 6.0): one CQE per chunk received, each naming
/// a buffer of the group, until the peer closes (`res == 0`), an error, or
/// the group runs dry (`ENOBUFS`). Read each intermediate completion with [`OpEvent::read_into`] and the last with [`RecvMulti::take_final`].
///
/// The blocking form receives once into a group-sized buffer of its own,
/// which [`RecvMulti::take_final`] hands over with the final completion.
#[derive(Debug)]
pub struct RecvMulti {
    fd: SharedFd,
    group: Arc<RecvBufGroup>,
    bgid: u16,
    fallback: Vec<u8>,
    cancel: Option<CancelFlag>,
    /// The final completion's result and buffer, once it came.
    last: Option<(i32, Option<ProvidedBuf>)>,
}

impl RecvMulti {
    /// A multishot receive on `fd` into `group`'s buffers. Submit it on the
    /// ring the group is registered with.
    pub fn new(fd: SharedFd, group: Arc<RecvBufGroup>) -> Self {
        let bgid = group.bgid();
        RecvMulti {
            fd,
            group,
            bgid,
            fallback: Vec::new(),
            cancel: None,
            last: None,
        }
    }

    /// Lets the blocking form give up when `flag` is set.
    pub fn cancel_flag(mut self, flag: CancelFlag) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// The group this op selects from.
    pub fn group(&self) -> &Arc<RecvBufGroup> {
        &self.group
    }

    /// Appends the data of this op's final completion to `out`: from a group
    /// buffer (io_uring) or from the blocking form's own buffer, each taken
    /// once. Returns the byte count (`0` before completion, and at end of
    /// stream).
    ///
    /// # Errors
    ///
    /// As [`OpEvent::read_into`].
    pub fn take_final(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let Some((res, buf)) = &mut self.last else {
            return Ok(0);
        };
        if *res < 0 {
            return Err(io::Error::from_raw_os_error(-*res));
        }
        if let Some(b) = buf.take() {
            b.copy_to(out);
            return Ok(b.len());
        }
        let data = std::mem::take(&mut self.fallback);
        out.extend_from_slice(&data);
        Ok(data.len())
    }
}

// SAFETY: the SQE references no user memory: the kernel picks buffers from the
// registered group, which the op keeps alive through its `Arc` until it is
// freed after its final CQE (see `RecvBufGroup`). The blocking form writes only
// into the op's own `fallback` vector.
unsafe impl Op for RecvMulti {
    fn prepare(&mut self) -> Sqe {
        sqe::Recv::new(self.fd.as_raw_fd(), std::ptr::null_mut(), 0)
            .buf_group(Some(self.bgid))
            .multishot(true)
            .build()
    }
    fn run_blocking(&mut self) -> i32 {
        let len = self.group.buf_len().max(4096) as usize;
        self.fallback = vec![0u8; len];
        let (fd, ptr) = (self.fd.as_raw_fd(), self.fallback.as_mut_ptr());
        let res = retry_when_ready(fd, libc::POLLIN, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is writable for `len` bytes (the op's own vector).
            (unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) }) as libc::c_long
        });
        self.fallback.truncate(res.max(0) as usize);
        self.last = Some((res, None));
        res
    }
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let len = self.group.buf_len().max(4096) as usize;
        if self.fallback.len() != len {
            self.fallback = vec![0u8; len];
        }
        let (fd, ptr) = (self.fd.as_raw_fd(), self.fallback.as_mut_ptr());
        let attempt = attempt_with(Interest::Readable, self.cancel.as_ref(), || {
            // SAFETY: `ptr` is writable for `len` bytes (the op's own vector).
            (unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) }) as libc::c_long
        });
        if let Attempt::Done(res) = attempt {
            self.fallback.truncate(res.max(0) as usize);
            self.last = Some((res, None));
        }
        Some(attempt)
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    unsafe fn complete(&mut self, cqe: &Cqe) {
        // SAFETY: `cqe` is this op's final completion (the trait's contract), and
        // the op selects from `group`.
        let buf = unsafe { self.group.claim(cqe) };
        self.last = Some((cqe.res, buf));
    }
    unsafe fn progress(&mut self, cqe: &Cqe) -> OpEvent {
        // SAFETY: as in `complete`, for an intermediate completion.
        OpEvent::new(*cqe).with_buf(unsafe { self.group.claim(cqe) })
    }
    into_any!();
}

#[cfg(test)]
mod tests {
    use super::super::{Attempt, Interest};
    use super::*;
    use std::net::TcpListener;

    fn shared(fd: OwnedFd) -> SharedFd {
        Arc::new(fd)
    }

    #[test]
    fn inet_addresses_round_trip() {
        for text in ["127.0.0.1:8080", "[::1]:443", "[fe80::1%2]:7"] {
            let a: SocketAddr = text.parse().unwrap();
            let s = SockAddr::from_inet(a);
            assert_eq!(s.to_inet(), Some(a), "{text}");
            assert!(s.unix().is_none());
        }
    }

    #[test]
    fn unix_addresses_round_trip_and_reject_bad_paths() {
        let p = SockAddr::unix_path(b"/tmp/x.sock").unwrap();
        assert_eq!(p.unix(), Some(UnixAddrKind::Pathname(b"/tmp/x.sock")));
        assert_eq!(p.len() as usize, SUN_PATH_OFFSET + 12);
        let a = SockAddr::unix_abstract(b"name").unwrap();
        assert_eq!(a.unix(), Some(UnixAddrKind::Abstract(b"name")));
        assert!(SockAddr::unix_path(b"").is_err());
        assert!(SockAddr::unix_path(b"a\0b").is_err());
        assert!(SockAddr::unix_path(&[b'a'; 108]).is_err());
        assert!(SockAddr::unix_path(&[b'a'; 107]).is_ok());
        let mut unnamed = SockAddr::empty();
        unnamed.write(&libc::sockaddr_un {
            sun_family: libc::AF_UNIX as _,
            sun_path: [0; 108],
        });
        unnamed.len = SUN_PATH_OFFSET as _;
        assert_eq!(unnamed.unix(), Some(UnixAddrKind::Unnamed));
    }

    #[test]
    fn sends_always_carry_msg_nosignal_and_sockets_cloexec() {
        let (a, _b) = socket_pair(libc::AF_UNIX, libc::SOCK_STREAM).unwrap();
        let fd = shared(a);
        let sqe = Send::new(fd.clone(), vec![1u8; 4], 0).prepare();
        assert_ne!(sqe.as_raw().op_flags & libc::MSG_NOSIGNAL as u32, 0);
        let sqe = SendMsg::new(fd.clone(), vec![1u8; 4], None, 0).prepare();
        assert_ne!(sqe.as_raw().op_flags & libc::MSG_NOSIGNAL as u32, 0);
        let sqe = Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0).prepare();
        assert_ne!(sqe.as_raw().off_or_addr2 & libc::SOCK_CLOEXEC as u64, 0);
        let sqe = Accept::multishot(fd).prepare();
        assert_ne!(sqe.as_raw().op_flags & libc::SOCK_CLOEXEC as u32, 0);
        assert_eq!(sqe.as_raw().ioprio, crate::abi::IORING_ACCEPT_MULTISHOT);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn blocking_forms_move_data_and_addresses() {
        let (a, b) = socket_pair(libc::AF_UNIX, libc::SOCK_DGRAM).unwrap();
        let (a, b) = (shared(a), shared(b));
        let mut send = SendMsg::new(a.clone(), b"hello".to_vec(), None, 0);
        assert_eq!(send.run_blocking(), 5);
        let mut recv = RecvMsg::new(b.clone(), Vec::with_capacity(3), 0);
        assert_eq!(recv.run_blocking(), 3);
        let out = recv.into_parts();
        assert_eq!(out.buf, b"hel");
        assert_ne!(out.msg_flags & libc::MSG_TRUNC, 0);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sock = Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(sock.run_blocking() >= 0);
        let client = shared(sock.into_fd().unwrap());
        assert_eq!(
            Connect::new(client.clone(), SockAddr::from_inet(addr)).run_blocking(),
            0
        );
        let mut accept = Accept::new(shared(OwnedFd::from(listener)));
        assert!(accept.run_blocking() >= 0);
        let peer = accept.peer_addr().unwrap().to_inet().unwrap();
        let server = shared(accept.into_fd().unwrap());
        assert_eq!(peer, local_addr(client.as_fd()).unwrap().to_inet().unwrap());
        assert_eq!(Send::new(client.clone(), b"xyz".to_vec(), 0).run_blocking(), 3);
        let mut r = Recv::new(server.clone(), Vec::with_capacity(8), 0);
        assert_eq!(r.run_blocking(), 3);
        assert_eq!(r.into_buf(), b"xyz");
        assert_eq!(Shutdown::new(client, libc::SHUT_WR).run_blocking(), 0);
        assert_eq!(Recv::new(server, Vec::with_capacity(8), 0).run_blocking(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn nonblocking_forms_report_would_block_then_run() {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = shared(OwnedFd::from(listener));
        let mut accept = Accept::new(listener.clone());
        assert_eq!(
            accept.try_nonblocking(),
            Some(Attempt::WouldBlock(Interest::Readable))
        );
        assert!(accept.into_fd().is_none());

        let mut sock = Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert_eq!(sock.try_nonblocking(), None, "not a readiness op");
        assert!(sock.readiness_fd().is_none());
        assert!(sock.run_blocking() >= 0);
        let client = shared(sock.into_fd().unwrap());
        let mut connect = Connect::new(client.clone(), SockAddr::from_inet(addr));
        let res = loop {
            match connect.try_nonblocking().unwrap() {
                Attempt::Done(res) => break res,
                Attempt::WouldBlock(i) => {
                    assert_eq!(i, Interest::Writable);
                    wait_ready(client.as_raw_fd(), libc::POLLOUT, None).unwrap();
                }
            }
        };
        assert_eq!(res, 0);
        // SAFETY: F_GETFL on an open fd.
        let flags = unsafe { libc::fcntl(client.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "connect restores blocking mode");

        let mut accept = Accept::new(listener);
        wait_ready(accept.readiness_fd().unwrap().as_raw_fd(), libc::POLLIN, None).unwrap();
        let Some(Attempt::Done(fd)) = accept.try_nonblocking() else {
            panic!("accept")
        };
        assert!(fd >= 0);
        let server = shared(accept.into_fd().unwrap());

        let mut recv = Recv::new(server.clone(), Vec::with_capacity(8), 0);
        assert_eq!(
            recv.try_nonblocking(),
            Some(Attempt::WouldBlock(Interest::Readable))
        );
        let mut send = Send::new(client, b"abc".to_vec(), 0);
        assert_eq!(send.try_nonblocking(), Some(Attempt::Done(3)));
        wait_ready(server.as_raw_fd(), libc::POLLIN, None).unwrap();
        assert_eq!(recv.try_nonblocking(), Some(Attempt::Done(3)));
        assert_eq!(recv.into_buf(), b"abc");

        let flag = CancelFlag::default();
        let mut recv = Recv::new(server, Vec::with_capacity(8), 0).cancel_flag(flag.clone());
        flag.store(true, Ordering::Relaxed);
        assert_eq!(recv.try_nonblocking(), Some(Attempt::Done(-libc::ECANCELED)));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn receives_record_what_they_received_even_past_a_buffer_gap() {
        let (a, b) = socket_pair(libc::AF_UNIX, libc::SOCK_DGRAM).unwrap();
        let (a, b) = (shared(a), shared(b));
        assert_eq!(Send::new(a.clone(), b"gap".to_vec(), 0).run_blocking(), 3);
        // A slice starting past the initialized bytes: the buffer cannot count
        // them, but the op still knows what it received.
        let mut recv = Recv::new(b.clone(), Vec::with_capacity(16).slice(8..), 0);
        assert!(recv.received().is_empty());
        assert_eq!(recv.run_blocking(), 3);
        assert_eq!(recv.received(), b"gap");
        assert_eq!(recv.into_buf().into_inner().len(), 0);

        assert_eq!(Send::new(a, b"msg".to_vec(), 0).run_blocking(), 3);
        let mut recv = RecvMsg::new(b, Vec::with_capacity(2), 0);
        assert_eq!(recv.run_blocking(), 2);
        assert_eq!(recv.received(), b"ms", "truncated to the buffer");
        // A socket-pair peer is unnamed: the kernel reports no address bytes.
        assert!(recv.sender().unix().is_none_or(|a| a == UnixAddrKind::Unnamed));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_cancel_flag_ends_a_blocked_receive() {
        let (a, _b) = socket_pair(libc::AF_UNIX, libc::SOCK_STREAM).unwrap();
        let flag = CancelFlag::default();
        let mut recv = Recv::new(shared(a), Vec::with_capacity(8), 0).cancel_flag(flag.clone());
        let t = std::thread::spawn(move || recv.run_blocking());
        std::thread::sleep(CANCEL_POLL);
        flag.store(true, Ordering::Relaxed);
        assert_eq!(t.join().unwrap(), -libc::ECANCELED);
    }
}
