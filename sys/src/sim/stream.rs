//! Simulated byte streams: pipes, connected stream sockets and listeners,
//! and the ops that wait on them (`READ`, `RECV` single and multishot,
//! `WRITE`, `SEND`, `ACCEPT` single and multishot).
//!
//! # Fd numbers
//!
//! Every stream end the simulator hands out is numbered by a *real*
//! placeholder fd of this process: one end of a pipe (for pipe ends) or of an
//! `AF_UNIX` stream socket pair (for sockets and listeners, so `SO_TYPE`
//! says "stream") that the simulator made, whose other end it keeps. The
//! caller owns the placeholder (an [`OwnedFd`] from
//! [`SimKernel::pipe`], [`SimKernel::socket_pair`], [`SimKernel::listener`],
//! [`SimKernel::connect`], or the number in an `ACCEPT` completion, which the
//! kernel gives away as a real kernel does), so code above the simulator may
//! close it, drop it, wrap it in an `OwnedFd`, exactly as a real fd: closing
//! it closes only that placeholder. The simulator learns that the end was
//! closed when its end of the placeholder sees end-of-file, which
//! happens only once every copy of the placeholder is closed (so a `dup`
//! keeps the end open, as on Linux). It checks at every enter and at every
//! stream call of [`SimKernel`], before it looks a number up, so a number
//! that was closed and reused by an unrelated fd is never taken for the old
//! end.
//!
//! # Behaviour
//!
//! - Each end has an in-kernel buffer of [`STREAM_CAPACITY`] bytes (what the
//!   peer wrote and nobody read yet).
//! - `READ`/`RECV` on an empty end stay pending until the peer writes (they
//!   then complete with what is there, up to their length) or the peer is
//!   released (they complete with 0, end of file). A receive of 0 bytes
//!   completes with 0 at once.
//! - `WRITE`/`SEND` complete with what fits (a short count when the buffer is
//!   nearly full); one that finds the buffer full stays pending until the
//!   reader makes room. To a released peer they fail with `-EPIPE`.
//! - `RECV` with `IORING_RECV_MULTISHOT` (in `ioprio`) needs
//!   `IOSQE_BUFFER_SELECT` and the classic provided buffers of
//!   `PROVIDE_BUFFERS`: one CQE per arrival of data, with `F_MORE` and
//!   `F_BUFFER` (the buffer id in `flags >> 16`), up to the buffer's length
//!   (or the SQE's `len` when non-zero); it ends without `F_MORE` at end of
//!   file (res 0), with `-ENOBUFS` when the group is empty, or with
//!   `-ECANCELED`.
//! - `ACCEPT` on a listener stays pending until [`SimKernel::connect`] queues
//!   a connection; each accepted connection is a new end connected to the
//!   client, numbered by a new placeholder. With `IORING_ACCEPT_MULTISHOT`
//!   each connection posts a CQE with `F_MORE`. A non-null address gets an
//!   unnamed `AF_UNIX` address (length 2).
//! - An end is *released* when its fd is closed and no pending op uses it
//!   (an in-flight request holds a reference to its file on Linux too, so a
//!   pending op keeps its end alive; `ASYNC_CANCEL` ends it). A released
//!   end's peer reads end of file once its buffer is drained and gets
//!   `-EPIPE` on writes; a released listener releases the connections still
//!   queued on it.
//! - Wake-ups run when a ring enters (after its SQEs, and before it sleeps),
//!   as the kernel runs a woken request's task work: data written with
//!   [`SimKernel::stream_write`] reaches a pending receive at its ring's next
//!   enter. So a cancel submitted in that enter finds the receive with data
//!   waiting: it cancels it (the data stays for the next receive) or, under
//!   [`Faults::cancel_race_every`], loses the race: the receive completes
//!   with the data and the cancel gets `-EALREADY` or `-ENOENT`. A lost race
//!   needs something to complete with: a pending op with nothing to deliver
//!   is cancelled.
//! - Faults: `eagain_every` (at submission, for reads and writes),
//!   `short_read_max` and `enobufs_every` (for each delivery), `delay_cqes`,
//!   `reorder` and `overflow_every` as for other ops, except that a
//!   multishot op's CQEs are never held back, so they keep their order.
//!   `IORING_OP_CLOSE` is not simulated: ends close when their fd does.
#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use super::{Batch, KernelState, SimKernel, copy_from_user, copy_to_user};
use crate::abi;
use crate::cqe::Cqe;

/// Bytes an end's in-kernel buffer holds.
pub const STREAM_CAPACITY: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndKind {
    PipeRead,
    PipeWrite,
    Socket,
    Listener,
}

struct End {
    kind: EndKind,
    peer: Option<usize>,
    /// Bytes readable at this end (the peer wrote them).
    inbox: VecDeque<u8>,
    /// Connections queued on a listener, not yet accepted.
    backlog: VecDeque<usize>,
    /// The simulator's end of the placeholder pipe; `None` once the
    /// placeholder is closed (or, for a queued connection, not made yet).
    watch: Option<File>,
    /// The placeholder's number while `watch` is `Some`.
    fd: RawFd,
    /// On a listener's backlog.
    queued: bool,
    released: bool,
}

impl End {
    fn new(kind: EndKind) -> End {
        End {
            kind,
            peer: None,
            inbox: VecDeque::new(),
            backlog: VecDeque::new(),
            watch: None,
            fd: -1,
            queued: false,
            released: false,
        }
    }
}

/// A pending stream op.
struct StreamOp {
    ring: RawFd,
    seq: u64,
    user_data: u64,
    sqe_flags: u8,
    opcode: u8,
    fd: RawFd,
    end: usize,
    addr: u64,
    len: u32,
    /// `ACCEPT`: the address-length pointer.
    addr2: u64,
    group: Option<u16>,
    multishot: bool,
}

/// Every stream end and pending stream op of one kernel.
#[derive(Default)]
pub(super) struct Streams {
    ends: Vec<End>,
    by_fd: HashMap<RawFd, usize>,
    pending: Vec<StreamOp>,
}

impl Streams {
    /// Whether `fd` names a stream end (after [`Streams::sync_closed`]).
    pub(super) fn contains(&self, fd: RawFd) -> bool {
        self.by_fd.contains_key(&fd)
    }

    /// Pending stream ops submitted on ring `ring`.
    pub(super) fn pending_on(&self, ring: RawFd) -> usize {
        self.pending.iter().filter(|op| op.ring == ring).count()
    }

    /// Forgets the pending ops of a ring that is going away.
    pub(super) fn drop_ring(&mut self, ring: RawFd) {
        self.pending.retain(|op| op.ring != ring);
    }

    /// Marks ends whose placeholder fds are all closed.
    pub(super) fn sync_closed(&mut self) {
        for (i, end) in self.ends.iter_mut().enumerate() {
            let Some(watch) = end.watch.as_mut() else { continue };
            let mut scratch = [0u8; 64];
            let closed = loop {
                match watch.read(&mut scratch) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    // Nothing else is expected of a pipe; treat it as closed.
                    Err(_) => break true,
                }
            };
            if closed {
                end.watch = None;
                if self.by_fd.get(&end.fd) == Some(&i) {
                    self.by_fd.remove(&end.fd);
                }
                end.fd = -1;
            }
        }
    }

    /// Ends nobody holds become released (fixpoint); returns whether any did.
    fn release_unheld(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut changed = false;
            for i in 0..self.ends.len() {
                let end = &self.ends[i];
                if end.released
                    || end.watch.is_some()
                    || end.queued
                    || self.pending.iter().any(|op| op.end == i)
                {
                    continue;
                }
                let end = &mut self.ends[i];
                end.released = true;
                end.inbox = VecDeque::new();
                for conn in std::mem::take(&mut end.backlog) {
                    self.ends[conn].queued = false;
                }
                changed = true;
            }
            if !changed {
                return any;
            }
            any = true;
        }
    }

    fn new_end(&mut self, kind: EndKind) -> usize {
        self.ends.push(End::new(kind));
        self.ends.len() - 1
    }

    /// Gives end `i` a placeholder fd; returns the caller's copy.
    fn open(&mut self, i: usize) -> io::Result<OwnedFd> {
        let (user, watch) = placeholder(self.ends[i].kind)?;
        let fd = user.as_raw_fd();
        let end = &mut self.ends[i];
        end.watch = Some(watch);
        end.fd = fd;
        self.by_fd.insert(fd, i);
        Ok(user)
    }

    fn end_of(&self, fd: RawFd) -> io::Result<usize> {
        self.by_fd
            .get(&fd)
            .copied()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Whether a read on end `i` is at end of file (its buffer is empty and
    /// its peer is released, or it never had one).
    fn at_eof(&self, i: usize) -> bool {
        let end = &self.ends[i];
        end.inbox.is_empty() && end.peer.is_none_or(|p| self.ends[p].released)
    }
}

/// A placeholder for an end of `kind`: the caller's end and the simulator's
/// end of a new pipe (for pipe ends: the caller gets the write end) or, for
/// sockets and listeners, of a new `AF_UNIX` stream socket pair (so that
/// code asking the fd for `SO_TYPE` learns it is a stream socket). All
/// close-on-exec and non-blocking.
fn placeholder(kind: EndKind) -> io::Result<(OwnedFd, File)> {
    let mut fds = [-1 as RawFd; 2];
    let r = if matches!(kind, EndKind::PipeRead | EndKind::PipeWrite) {
        // SAFETY: `fds` is an array of two ints, as pipe2 requires.
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) }
    } else {
        let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        // SAFETY: `fds` is an array of two ints, as socketpair requires.
        unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded: both fds are new and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((theirs, File::from(ours)))
}

/// What one attempt at a pending op came to.
enum Outcome {
    Stay,
    Final(i32, u32),
    More(i32, u32),
}

impl SimKernel {
    /// A simulated pipe: `(read end, write end)`, each numbered by a
    /// placeholder fd this process owns (see the module docs of `sim`'s
    /// streams: closing it closes the simulated end).
    ///
    /// # Errors
    ///
    /// When the placeholder pipes cannot be made (`EMFILE`, …).
    ///
    /// # Example
    ///
    /// ```
    /// use spargio_sys::sim::SimKernel;
    ///
    /// let kernel = SimKernel::new();
    /// let (r, w) = kernel.pipe().unwrap();
    /// assert_eq!(kernel.stream_write(&w, b"hi").unwrap(), 2);
    /// assert_eq!(kernel.stream_read(&r, 8).unwrap(), b"hi");
    /// kernel.close(w);
    /// assert_eq!(kernel.stream_read(&r, 8).unwrap(), b""); // end of file
    /// ```
    pub fn pipe(&self) -> io::Result<(OwnedFd, OwnedFd)> {
        let mut k = self.lock();
        k.streams.sync_closed();
        let s = &mut k.streams;
        let (r, w) = (s.new_end(EndKind::PipeRead), s.new_end(EndKind::PipeWrite));
        s.ends[r].peer = Some(w);
        s.ends[w].peer = Some(r);
        let rfd = s.open(r)?;
        let wfd = s.open(w)?;
        Ok((rfd, wfd))
    }

    /// A pair of connected simulated stream sockets.
    ///
    /// # Errors
    ///
    /// As [`SimKernel::pipe`].
    ///
    /// # Example
    ///
    /// ```
    /// use spargio_sys::sim::SimKernel;
    ///
    /// let kernel = SimKernel::new();
    /// let (a, b) = kernel.socket_pair().unwrap();
    /// kernel.stream_write(&a, b"ping").unwrap();
    /// assert_eq!(kernel.stream_buffered(&b), Some(4));
    /// drop(b); // closes the simulated end: writes to it fail
    /// assert_eq!(kernel.stream_write(&a, b"x").unwrap_err().raw_os_error(), Some(libc::EPIPE));
    /// ```
    pub fn socket_pair(&self) -> io::Result<(OwnedFd, OwnedFd)> {
        let mut k = self.lock();
        k.streams.sync_closed();
        let s = &mut k.streams;
        let (a, b) = (s.new_end(EndKind::Socket), s.new_end(EndKind::Socket));
        s.ends[a].peer = Some(b);
        s.ends[b].peer = Some(a);
        let afd = s.open(a)?;
        let bfd = s.open(b)?;
        Ok((afd, bfd))
    }

    /// A simulated listening socket, for `ACCEPT` and [`SimKernel::connect`].
    ///
    /// # Errors
    ///
    /// As [`SimKernel::pipe`].
    ///
    /// # Example
    ///
    /// ```
    /// use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// use spargio_sys::ring::{Ring, RingConfig};
    /// use spargio_sys::sim::SimKernel;
    /// use spargio_sys::{abi, Sqe};
    ///
    /// let kernel = SimKernel::new();
    /// let listener = kernel.listener().unwrap();
    /// let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    /// let accept = Sqe::from_raw(abi::io_uring_sqe {
    ///     opcode: abi::IORING_OP_ACCEPT,
    ///     fd: listener.as_raw_fd(),
    ///     user_data: 1,
    ///     ..Default::default()
    /// });
    /// // SAFETY: the SQE points at no memory (no peer address asked for).
    /// unsafe { ring.push_unchecked(&accept) }.unwrap();
    /// ring.submit().unwrap();
    /// assert!(ring.pop_cqe().is_none()); // waits for a connection
    /// let client = kernel.connect(&listener).unwrap();
    /// ring.submit_and_wait(1, None).unwrap();
    /// let cqe = ring.pop_cqe().unwrap();
    /// // SAFETY: a successful accept's result is a new fd, now ours.
    /// let server = unsafe { OwnedFd::from_raw_fd(cqe.res) };
    /// kernel.stream_write(&client, b"hi").unwrap();
    /// assert_eq!(kernel.stream_read(&server, 8).unwrap(), b"hi");
    /// ```
    pub fn listener(&self) -> io::Result<OwnedFd> {
        let mut k = self.lock();
        k.streams.sync_closed();
        let s = &mut k.streams;
        let l = s.new_end(EndKind::Listener);
        s.open(l)
    }

    /// Connects a new client to `listener`: queues the server side for an
    /// `ACCEPT` and returns the client's end.
    ///
    /// # Errors
    ///
    /// `EBADF` when `listener` is no simulated stream end of this kernel,
    /// `ECONNREFUSED` when it is not a listener.
    pub fn connect(&self, listener: impl std::os::fd::AsFd) -> io::Result<OwnedFd> {
        let mut k = self.lock();
        k.streams.sync_closed();
        let s = &mut k.streams;
        let l = s.end_of(listener.as_fd().as_raw_fd())?;
        if s.ends[l].kind != EndKind::Listener {
            return Err(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        }
        let (client, server) = (s.new_end(EndKind::Socket), s.new_end(EndKind::Socket));
        s.ends[client].peer = Some(server);
        s.ends[server].peer = Some(client);
        let fd = s.open(client)?;
        s.ends[server].queued = true;
        s.ends[l].backlog.push_back(server);
        k.notify_all();
        Ok(fd)
    }

    /// Writes `data` into stream end `fd` from outside the rings (a
    /// non-blocking write): what fits in the peer's buffer. Pending ops see
    /// it at their ring's next enter.
    ///
    /// # Errors
    ///
    /// `EBADF` for an fd that is no writable simulated end, `EPIPE` when the
    /// peer is released, `WouldBlock` (`EAGAIN`) when its buffer is full.
    pub fn stream_write(&self, fd: impl std::os::fd::AsFd, data: &[u8]) -> io::Result<usize> {
        let mut k = self.lock();
        k.streams.sync_closed();
        k.streams.release_unheld();
        let s = &mut k.streams;
        let i = s.end_of(fd.as_fd().as_raw_fd())?;
        if !matches!(s.ends[i].kind, EndKind::PipeWrite | EndKind::Socket) {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let Some(p) = s.ends[i].peer.filter(|&p| !s.ends[p].released) else {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        };
        let room = STREAM_CAPACITY - s.ends[p].inbox.len();
        if room == 0 && !data.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let n = room.min(data.len());
        s.ends[p].inbox.extend(&data[..n]);
        k.notify_all();
        Ok(n)
    }

    /// Reads up to `max` bytes from stream end `fd` from outside the rings
    /// (a non-blocking read); an empty vector is end of file.
    ///
    /// # Errors
    ///
    /// `EBADF` for an fd that is no readable simulated end, `WouldBlock`
    /// (`EAGAIN`) when nothing is there yet.
    pub fn stream_read(&self, fd: impl std::os::fd::AsFd, max: usize) -> io::Result<Vec<u8>> {
        let mut k = self.lock();
        k.streams.sync_closed();
        k.streams.release_unheld();
        let s = &mut k.streams;
        let i = s.end_of(fd.as_fd().as_raw_fd())?;
        if !matches!(s.ends[i].kind, EndKind::PipeRead | EndKind::Socket) {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if s.ends[i].inbox.is_empty() {
            return if s.at_eof(i) || max == 0 {
                Ok(Vec::new())
            } else {
                Err(io::Error::from_raw_os_error(libc::EAGAIN))
            };
        }
        let n = max.min(s.ends[i].inbox.len());
        let out: Vec<u8> = s.ends[i].inbox.drain(..n).collect();
        k.notify_all();
        Ok(out)
    }

    /// Closes stream end `fd` (its placeholder) and lets the kernel see it
    /// at once; the same as dropping it, which the kernel notices at the
    /// next enter or stream call.
    pub fn close(&self, fd: OwnedFd) {
        drop(fd);
        let mut k = self.lock();
        k.streams.sync_closed();
        k.notify_all();
    }

    /// Simulated stream ends whose fd is open (placeholders not yet closed):
    /// for checks that every end handed out was closed.
    pub fn open_streams(&self) -> usize {
        let mut k = self.lock();
        k.streams.sync_closed();
        k.streams.ends.iter().filter(|e| e.watch.is_some()).count()
    }

    /// Bytes waiting in the buffer of stream end `fd` (written by its peer,
    /// not yet read); `None` for an fd that is no open simulated end.
    pub fn stream_buffered(&self, fd: impl std::os::fd::AsFd) -> Option<usize> {
        let mut k = self.lock();
        k.streams.sync_closed();
        let s = &k.streams;
        let i = s.end_of(fd.as_fd().as_raw_fd()).ok()?;
        Some(s.ends[i].inbox.len())
    }
}

impl KernelState {
    fn notify_all(&self) {
        for ring in self.rings.values() {
            ring.shared.posted.notify_all();
        }
    }

    /// Submits a stream op (its fd is a stream end): checks it and makes it
    /// pending; [`KernelState::stream_progress`] completes it.
    pub(super) fn stream_submit(&mut self, ring: RawFd, sqe: &abi::io_uring_sqe, batch: &mut Batch) {
        match self.stream_check(sqe) {
            Ok((end, group, multishot)) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.streams.pending.push(StreamOp {
                    ring,
                    seq,
                    user_data: sqe.user_data,
                    sqe_flags: sqe.flags,
                    opcode: sqe.opcode,
                    fd: sqe.fd,
                    end,
                    addr: sqe.addr_or_splice_off_in,
                    len: sqe.len.min(i32::MAX as u32),
                    addr2: sqe.off_or_addr2,
                    group,
                    multishot,
                });
            }
            Err(res) => batch.complete(sqe, res, 0),
        }
    }

    /// `Ok((end, buffer group, multishot))` or the error the SQE completes with.
    fn stream_check(&mut self, sqe: &abi::io_uring_sqe) -> Result<(usize, Option<u16>, bool), i32> {
        if sqe.flags & abi::IOSQE_FIXED_FILE != 0 {
            return Err(-libc::EBADF);
        }
        let end = self.streams.end_of(sqe.fd).map_err(|_| -libc::EBADF)?;
        let kind = self.streams.ends[end].kind;
        let select = sqe.flags & abi::IOSQE_BUFFER_SELECT != 0;
        let group = select.then_some(sqe.buf_index_or_group);
        let multishot = match sqe.opcode {
            abi::IORING_OP_READ => {
                if !matches!(kind, EndKind::PipeRead | EndKind::Socket) {
                    return Err(if kind == EndKind::Listener {
                        -libc::ENOTCONN
                    } else {
                        -libc::EBADF
                    });
                }
                false
            }
            abi::IORING_OP_RECV => {
                match kind {
                    EndKind::Socket => {}
                    EndKind::Listener => return Err(-libc::ENOTCONN),
                    _ => return Err(-libc::ENOTSOCK),
                }
                let known = abi::IORING_RECVSEND_POLL_FIRST | abi::IORING_RECV_MULTISHOT;
                if sqe.ioprio & !known != 0 {
                    return Err(-libc::EINVAL);
                }
                let multishot = sqe.ioprio & abi::IORING_RECV_MULTISHOT != 0;
                if multishot && !select {
                    return Err(-libc::EINVAL);
                }
                multishot
            }
            abi::IORING_OP_WRITE | abi::IORING_OP_SEND => {
                match kind {
                    EndKind::Socket => {}
                    EndKind::PipeWrite if sqe.opcode == abi::IORING_OP_WRITE => {}
                    EndKind::PipeRead if sqe.opcode == abi::IORING_OP_WRITE => return Err(-libc::EBADF),
                    EndKind::Listener => return Err(-libc::ENOTCONN),
                    _ => return Err(-libc::ENOTSOCK),
                }
                if sqe.opcode == abi::IORING_OP_SEND && sqe.ioprio & !abi::IORING_RECVSEND_POLL_FIRST != 0 {
                    return Err(-libc::EINVAL);
                }
                false
            }
            abi::IORING_OP_ACCEPT => {
                match kind {
                    EndKind::Listener => {}
                    EndKind::Socket => return Err(-libc::EINVAL),
                    _ => return Err(-libc::ENOTSOCK),
                }
                let known = abi::IORING_ACCEPT_MULTISHOT | abi::IORING_ACCEPT_POLL_FIRST;
                if sqe.ioprio & !known != 0 {
                    return Err(-libc::EINVAL);
                }
                if sqe.op_flags & !(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u32 != 0 {
                    return Err(-libc::EINVAL);
                }
                let multishot = sqe.ioprio & abi::IORING_ACCEPT_MULTISHOT != 0;
                // A multishot accept writes no address (the kernel refuses one).
                if multishot && sqe.addr_or_splice_off_in != 0 {
                    return Err(-libc::EINVAL);
                }
                return Ok((end, None, multishot));
            }
            _ => return Err(-libc::EINVAL),
        };
        if !select && sqe.addr_or_splice_off_in == 0 && sqe.len > 0 {
            return Err(-libc::EFAULT);
        }
        let faults = &mut self.faults;
        if faults.eagain.tick(faults.faults.eagain_every) {
            faults.injected.eagain += 1;
            return Err(-libc::EAGAIN);
        }
        Ok((end, group, multishot))
    }

    /// Pending stream ops of ring `ring` that an `ASYNC_CANCEL` matches,
    /// by sequence number, in submission order.
    pub(super) fn stream_cancel_hits(
        &self,
        ring: RawFd,
        matches: impl Fn(u64, RawFd, u8) -> bool,
    ) -> Vec<u64> {
        let mut hits: Vec<&StreamOp> = self
            .streams
            .pending
            .iter()
            .filter(|op| op.ring == ring && matches(op.user_data, op.fd, op.opcode))
            .collect();
        hits.sort_by_key(|op| op.seq);
        hits.into_iter().map(|op| op.seq).collect()
    }

    /// Ends the pending stream op `seq` with `-ECANCELED`; when `lost`, it
    /// first gets one attempt, as if its data arrived as the cancel did.
    /// Returns `Some(true)` when that attempt ended the op (the cancel lost
    /// the race), `Some(false)` when the cancel ended it after a delivery
    /// (a multishot op's), `None` when nothing raced.
    pub(super) fn stream_cancel(&mut self, seq: u64, lost: bool, batch: &mut Batch) -> Option<bool> {
        let find = |s: &Self| s.streams.pending.iter().position(|op| op.seq == seq);
        let mut raced = None;
        if lost && let Some(i) = find(self) {
            let mut out = Vec::new();
            if self.stream_attempt(i, &mut out) {
                raced = Some(find(self).is_none());
            }
            for (ring, cqe, multishot) in out {
                self.stream_post(ring, cqe, multishot);
            }
        }
        if let Some(i) = find(self) {
            let op = self.streams.pending.remove(i);
            batch.0.push((
                Cqe {
                    user_data: op.user_data,
                    res: -libc::ECANCELED,
                    flags: 0,
                },
                true,
            ));
        }
        raced
    }

    /// Runs every pending stream op that can make progress, until none can,
    /// and posts their CQEs.
    pub(super) fn stream_progress(&mut self) {
        self.streams.sync_closed();
        let mut out = Vec::new();
        loop {
            let mut changed = self.streams.release_unheld();
            let mut i = 0;
            while i < self.streams.pending.len() {
                let before = self.streams.pending.len();
                if self.stream_attempt(i, &mut out) {
                    changed = true;
                }
                if self.streams.pending.len() == before {
                    i += 1;
                }
            }
            if !changed {
                break;
            }
        }
        for (ring, cqe, multishot) in out {
            self.stream_post(ring, cqe, multishot);
        }
    }

    fn stream_post(&mut self, ring: RawFd, cqe: Cqe, multishot: bool) {
        let Some(r) = self.rings.get_mut(&ring) else {
            return;
        };
        if multishot {
            r.post(&mut self.faults, cqe, true);
        } else {
            r.post_batch(&mut self.faults, Batch(vec![(cqe, true)], Vec::new()));
        }
    }

    /// One attempt at pending op `i`: pushes what it posts to `out` (and
    /// removes it when it ends). Returns whether it did anything.
    fn stream_attempt(&mut self, i: usize, out: &mut Vec<(RawFd, Cqe, bool)>) -> bool {
        let op = &self.streams.pending[i];
        let outcome = match op.opcode {
            abi::IORING_OP_ACCEPT => self.stream_accept(i),
            abi::IORING_OP_WRITE | abi::IORING_OP_SEND => self.stream_write_op(i),
            _ => self.stream_read_op(i),
        };
        let op = &self.streams.pending[i];
        let skip = op.sqe_flags & abi::IOSQE_CQE_SKIP_SUCCESS != 0;
        let (ring, user_data, multishot) = (op.ring, op.user_data, op.multishot);
        match outcome {
            Outcome::Stay => false,
            Outcome::More(res, flags) => {
                let cqe = Cqe {
                    user_data,
                    res,
                    flags: flags | abi::IORING_CQE_F_MORE,
                };
                out.push((ring, cqe, true));
                true
            }
            Outcome::Final(res, flags) => {
                self.streams.pending.remove(i);
                if !(skip && res >= 0) {
                    out.push((
                        ring,
                        Cqe {
                            user_data,
                            res,
                            flags,
                        },
                        multishot,
                    ));
                }
                true
            }
        }
    }

    fn stream_read_op(&mut self, i: usize) -> Outcome {
        let KernelState {
            streams,
            rings,
            faults,
            loans,
            ..
        } = self;
        let op = &streams.pending[i];
        let end = op.end;
        if op.group.is_none() && op.len == 0 {
            return Outcome::Final(0, 0);
        }
        if streams.ends[end].inbox.is_empty() {
            return if streams.at_eof(end) {
                Outcome::Final(0, 0)
            } else {
                Outcome::Stay
            };
        }
        let (dest, cap, flags, buf) = match op.group {
            Some(group) => {
                if faults.enobufs.tick(faults.faults.enobufs_every) {
                    faults.injected.enobufs += 1;
                    return Outcome::Final(-libc::ENOBUFS, 0);
                }
                let Some(ring) = rings.get_mut(&op.ring) else {
                    return Outcome::Stay;
                };
                let Some(buf) = ring.select_buffer(loans, group) else {
                    return Outcome::Final(-libc::ENOBUFS, 0);
                };
                let cap = if op.len == 0 { buf.len } else { op.len.min(buf.len) };
                let flags = abi::IORING_CQE_F_BUFFER | u32::from(buf.bid) << abi::IORING_CQE_BUFFER_SHIFT;
                (buf.addr, cap, flags, Some((group, buf)))
            }
            None => (op.addr, op.len, 0, None),
        };
        let inbox = &mut streams.ends[end].inbox;
        let mut n = (cap as usize).min(inbox.len());
        if let Some(max) = faults.faults.short_read_max.filter(|&m| m > 0) {
            let limit = 1 + faults.rng.below(u64::from(max)) as usize;
            if n > limit {
                n = limit;
                faults.injected.short_reads += 1;
            }
        }
        let bytes: Vec<u8> = inbox.iter().take(n).copied().collect();
        // SAFETY: `dest` came in an SQE pushed with `Ring::push_unchecked` (or
        // was provided through one), whose caller promised `cap >= n` writable
        // bytes there, untouched by anyone else, until the op's final CQE.
        if let Err(res) = unsafe { copy_to_user(loans, dest, &bytes) } {
            if let (Some((group, buf)), Some(ring)) = (buf, rings.get_mut(&op.ring)) {
                ring.unselect_buffer(group, buf);
            }
            return Outcome::Final(res, 0);
        }
        inbox.drain(..n);
        if op.multishot {
            Outcome::More(n as i32, flags)
        } else {
            Outcome::Final(n as i32, flags)
        }
    }

    fn stream_write_op(&mut self, i: usize) -> Outcome {
        let KernelState { streams, loans, .. } = self;
        let op = &streams.pending[i];
        let Some(peer) = streams.ends[op.end].peer.filter(|&p| !streams.ends[p].released) else {
            return Outcome::Final(-libc::EPIPE, 0);
        };
        if op.len == 0 {
            return Outcome::Final(0, 0);
        }
        let room = STREAM_CAPACITY - streams.ends[peer].inbox.len();
        if room == 0 {
            return Outcome::Stay;
        }
        let mut bytes = vec![0u8; room.min(op.len as usize)];
        // SAFETY: `addr` came in an SQE pushed with `Ring::push_unchecked`,
        // whose caller promised `len` readable bytes there until the final CQE.
        if let Err(res) = unsafe { copy_from_user(loans, op.addr, &mut bytes) } {
            return Outcome::Final(res, 0);
        }
        let n = bytes.len();
        streams.ends[peer].inbox.extend(bytes);
        Outcome::Final(n as i32, 0)
    }

    fn stream_accept(&mut self, i: usize) -> Outcome {
        let KernelState { streams, loans, .. } = self;
        let (listener, addr, addr2, multishot) = {
            let op = &streams.pending[i];
            (op.end, op.addr, op.addr2, op.multishot)
        };
        let Some(&conn) = streams.ends[listener].backlog.front() else {
            return Outcome::Stay;
        };
        let fd = match streams.open(conn) {
            Ok(fd) => fd,
            Err(e) => return Outcome::Final(-e.raw_os_error().unwrap_or(libc::EMFILE), 0),
        };
        streams.ends[listener].backlog.pop_front();
        streams.ends[conn].queued = false;
        if addr != 0 {
            // An unnamed AF_UNIX address: the family alone.
            let family = (libc::AF_UNIX as libc::sa_family_t).to_ne_bytes();
            let mut len = [0u8; 4];
            // SAFETY: the accept's SQE, pushed with `Ring::push_unchecked`,
            // points at a socklen_t and an address buffer of that length,
            // writable until its final CQE.
            let wrote = unsafe {
                copy_from_user(loans, addr2, &mut len).and_then(|()| {
                    let cap = u32::from_ne_bytes(len) as usize;
                    copy_to_user(loans, addr, &family[..cap.min(family.len())])?;
                    copy_to_user(loans, addr2, &(family.len() as u32).to_ne_bytes())
                })
            };
            if let Err(res) = wrote {
                // The connection goes back to the queue; its placeholder closes.
                drop(fd);
                streams.sync_closed();
                let end = &mut streams.ends[conn];
                end.queued = true;
                streams.ends[listener].backlog.push_front(conn);
                return Outcome::Final(res, 0);
            }
        }
        // The new fd is the completion's: whoever reaps it owns it.
        let raw = fd.into_raw_fd();
        if multishot {
            Outcome::More(raw, 0)
        } else {
            Outcome::Final(raw, 0)
        }
    }
}

/// Borrowed fds name stream ends too.
impl SimKernel {
    /// Whether `fd` names an open simulated stream end of this kernel.
    pub fn is_stream(&self, fd: BorrowedFd<'_>) -> bool {
        let mut k = self.lock();
        k.streams.sync_closed();
        k.streams.contains(fd.as_raw_fd())
    }
}
