//! File and path ops: each owns its fd reference, buffer, paths and result
//! structure, and can run as io_uring SQE or as the equivalent system call.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::{Attempt, Interest, Op, cqe_res, op_any};
use crate::abi;
use crate::buf::{FixedBuf, IoBuf, IoBufMut};
use crate::cqe::Cqe;
use crate::sqe::Sqe;

/// An fd shared by the handle that owns it and the ops using it, so it cannot
/// be closed (and its number reused) while an op is in flight.
pub type SharedFd = Arc<OwnedFd>;

/// The directory a path op resolves a relative path from.
#[derive(Clone, Debug, Default)]
pub enum Dir {
    /// The process's working directory (`AT_FDCWD`).
    #[default]
    Cwd,
    /// An open directory, kept open by the op.
    Fd(SharedFd),
}

impl Dir {
    pub(crate) fn raw(&self) -> RawFd {
        match self {
            Dir::Cwd => libc::AT_FDCWD,
            Dir::Fd(fd) => fd.as_raw_fd(),
        }
    }
}

/// Marks the first `res` bytes of `buf` initialized, for a read that asked
/// for at most `len` bytes and returned `res` (a count, or `-errno`).
///
/// # Safety
///
/// `res` must be what the kernel (or the system call) returned for a read
/// into `buf` from its start: a non-negative `res` bytes were written there.
pub(crate) unsafe fn record_read<B: IoBufMut>(buf: &mut B, len: usize, res: i32) {
    if let Ok(n) = usize::try_from(res) {
        // SAFETY: the caller's contract: `n` bytes at the start of `buf` were
        // written; clamped to the length the read was given.
        unsafe { buf.set_init(n.min(len)) };
    }
}

/// Takes ownership of the fd an op created.
///
/// # Safety
///
/// `res`, when non-negative, must be a new fd the kernel (or the system call)
/// returned for this op, owned by nobody else and adopted once.
pub(crate) unsafe fn adopt_fd(res: i32) -> Option<OwnedFd> {
    // SAFETY: the caller's contract.
    (res >= 0).then(|| unsafe { OwnedFd::from_raw_fd(res) })
}

/// The largest length one read or write asks for (the SQE's `len` is 32-bit);
/// longer buffers give short counts, which the callers loop over.
pub const MAX_RW_LEN: usize = 0x7fff_f000;

fn sqe(opcode: u8, fd: RawFd, addr: u64, len: u32, off: u64) -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode,
        fd,
        addr_or_splice_off_in: addr,
        len,
        off_or_addr2: off,
        ..Default::default()
    }
}

/// `pread` into an owned buffer, from its start up to its capacity.
#[derive(Debug)]
pub struct Read<B> {
    fd: SharedFd,
    /// A registered-file slot of the submitting ring holding `fd` (`IOSQE_FIXED_FILE`).
    fixed_slot: Option<u32>,
    buf: B,
    offset: u64,
    /// The fd is a stream ([`Op::stream_fd`]): the non-blocking form reads at
    /// the file's position.
    stream: bool,
}

impl<B: IoBufMut> Read<B> {
    /// Reads at `offset` into `buf` (from its start, up to `bytes_total()`).
    pub fn new(fd: SharedFd, buf: B, offset: u64) -> Self {
        Read {
            fd,
            fixed_slot: None,
            buf,
            offset,
            stream: false,
        }
    }

    /// Reads through registered-file slot `slot` of the ring it is submitted
    /// to, which must hold `fd` (the kernel then skips the per-op fd lookup).
    /// `fd` is still kept open by the op and used by the blocking fallback.
    pub fn with_fixed_slot(mut self, slot: u32) -> Self {
        self.fixed_slot = Some(slot);
        self
    }

    /// Takes the buffer back. The bytes the read returned are marked
    /// initialized (on completion, by the op itself); before a completion,
    /// or after a failed read, nothing new is (`tests/soundness.rs`, item 3,
    /// runs this):
    ///
    /// ```no_run
    /// # use std::{os::fd::OwnedFd, sync::Arc};
    /// use spargio_sys::op::fs::Read;
    /// let fd = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    /// assert!(Read::new(fd, Vec::with_capacity(64), 0).into_buf().is_empty());
    /// ```
    ///
    /// ```compile_fail
    /// # use std::{os::fd::OwnedFd, sync::Arc};
    /// # use spargio_sys::op::fs::Read;
    /// // The count comes from the completion, never from the caller:
    /// let fd = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    /// let uninit = Read::new(fd, Vec::with_capacity(64), 0).into_buf(64);
    /// ```
    pub fn into_buf(self) -> B {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_total().min(MAX_RW_LEN)
    }
}

// SAFETY: the SQE points at `buf`'s stable memory (`IoBufMut` contract) for at
// most `bytes_total()` bytes; `buf` is owned by the op.
unsafe impl<B: IoBufMut> Op for Read<B> {
    unsafe fn complete(&mut self, cqe: &Cqe) {
        let len = self.len();
        // SAFETY: `cqe` is this read's final completion (the trait's contract).
        unsafe { record_read(&mut self.buf, len, cqe.res) };
    }
    fn prepare(&mut self) -> Sqe {
        let len = self.len() as u32;
        let ptr = self.buf.stable_mut_ptr() as u64;
        match self.fixed_slot {
            None => Sqe::from_raw(sqe(
                abi::IORING_OP_READ,
                self.fd.as_raw_fd(),
                ptr,
                len,
                self.offset,
            )),
            Some(slot) => {
                let mut s = sqe(abi::IORING_OP_READ, slot as RawFd, ptr, len, self.offset);
                s.flags |= abi::IOSQE_FIXED_FILE;
                Sqe::from_raw(s)
            }
        }
    }
    fn run_blocking(&mut self) -> i32 {
        let len = self.len();
        let ptr = self.buf.stable_mut_ptr();
        let Ok(off) = libc::off_t::try_from(self.offset) else {
            return -libc::EINVAL;
        };
        let fd = self.fd.as_raw_fd();
        // SAFETY: `ptr` is writable for `len` bytes (`IoBufMut` contract).
        let mut res = cqe_res(unsafe { libc::pread(fd, ptr.cast(), len, off) } as libc::c_long);
        if res == -libc::ESPIPE {
            // A stream (pipe, tty, …): io_uring ignores the offset there.
            // SAFETY: as above.
            res = cqe_res(unsafe { libc::read(fd, ptr.cast(), len) } as libc::c_long);
        }
        // SAFETY: `res` is what `pread`/`read` into the start of `buf` returned.
        unsafe { record_read(&mut self.buf, len, res) };
        res
    }
    /// One `preadv2(RWF_NOWAIT)`: at the offset, or at the file's position
    /// once the fd is known to be a stream ([`Op::stream_fd`]). `None` where
    /// the file does not support `RWF_NOWAIT` (`EOPNOTSUPP`): the read then
    /// runs as a blocking call.
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let len = self.len();
        let iov = libc::iovec {
            iov_base: self.buf.stable_mut_ptr().cast(),
            iov_len: len,
        };
        let off = match (self.stream, libc::off_t::try_from(self.offset)) {
            (true, _) => -1,
            (false, Ok(off)) => off,
            (false, Err(_)) => return Some(Attempt::Done(-libc::EINVAL)),
        };
        let res = nowait(|| {
            // SAFETY: `iov` describes `len` writable bytes of `buf` (`IoBufMut`
            // contract); the fd is kept open by the op.
            unsafe { libc::preadv2(self.fd.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) }
        })?;
        if let Attempt::Done(res) = res {
            // SAFETY: `res` is what `preadv2` into the start of `buf` returned.
            unsafe { record_read(&mut self.buf, len, res) };
        }
        Some(res)
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    fn stream_fd(&mut self) {
        self.stream = true;
    }
    op_any!();
}

/// One `RWF_NOWAIT` call (again on `EINTR`) as an attempt of a readiness op
/// waiting for `interest`; `None` when the file does not support the flag.
fn nowait_attempt(interest: Interest, mut call: impl FnMut() -> libc::ssize_t) -> Option<Attempt> {
    loop {
        let res = cqe_res(call() as libc::c_long);
        return match -res {
            libc::EINTR => continue,
            libc::EOPNOTSUPP => None,
            libc::EAGAIN => Some(Attempt::WouldBlock(interest)),
            _ => Some(Attempt::Done(res)),
        };
    }
}

fn nowait(call: impl FnMut() -> libc::ssize_t) -> Option<Attempt> {
    nowait_attempt(Interest::Readable, call)
}

/// `pwrite` of an owned buffer's initialized bytes.
#[derive(Debug)]
pub struct Write<B> {
    fd: SharedFd,
    buf: B,
    offset: u64,
    /// As [`Read`]'s.
    stream: bool,
}

impl<B: IoBuf> Write<B> {
    /// Writes `buf`'s initialized bytes at `offset`.
    pub fn new(fd: SharedFd, buf: B, offset: u64) -> Self {
        Write {
            fd,
            buf,
            offset,
            stream: false,
        }
    }

    /// Takes the buffer back.
    pub fn into_buf(self) -> B {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_init().min(MAX_RW_LEN)
    }
}

// SAFETY: the SQE points at `buf`'s stable, initialized bytes (`IoBuf` contract).
unsafe impl<B: IoBuf> Op for Write<B> {
    fn prepare(&mut self) -> Sqe {
        let len = self.len() as u32;
        let ptr = self.buf.stable_ptr() as u64;
        Sqe::from_raw(sqe(
            abi::IORING_OP_WRITE,
            self.fd.as_raw_fd(),
            ptr,
            len,
            self.offset,
        ))
    }
    fn run_blocking(&mut self) -> i32 {
        let Ok(off) = libc::off_t::try_from(self.offset) else {
            return -libc::EINVAL;
        };
        let (fd, ptr, len) = (self.fd.as_raw_fd(), self.buf.stable_ptr(), self.len());
        // SAFETY: `ptr` is readable for `len` initialized bytes.
        let res = cqe_res(unsafe { libc::pwrite(fd, ptr.cast(), len, off) } as libc::c_long);
        if res != -libc::ESPIPE {
            return res;
        }
        // A stream (pipe, tty, …): io_uring ignores the offset there.
        // SAFETY: as above.
        cqe_res(unsafe { libc::write(fd, ptr.cast(), len) } as libc::c_long)
    }
    /// One `pwritev2(RWF_NOWAIT)`, as [`Read`]'s non-blocking form.
    fn try_nonblocking(&mut self) -> Option<Attempt> {
        let iov = libc::iovec {
            iov_base: self.buf.stable_ptr().cast_mut().cast(),
            iov_len: self.len(),
        };
        let off = match (self.stream, libc::off_t::try_from(self.offset)) {
            (true, _) => -1,
            (false, Ok(off)) => off,
            (false, Err(_)) => return Some(Attempt::Done(-libc::EINVAL)),
        };
        nowait_attempt(Interest::Writable, || {
            // SAFETY: `iov` describes `len()` initialized bytes of `buf`, which
            // the kernel only reads; the fd is kept open by the op.
            unsafe { libc::pwritev2(self.fd.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) }
        })
    }
    fn readiness_fd(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
    fn stream_fd(&mut self) {
        self.stream = true;
    }
    op_any!();
}

/// `pread` into a registered buffer (`IORING_OP_READ_FIXED`), from its start
/// up to its capacity. Submit it only on the ring that registered the
/// buffer's table; the kernel rejects (`EFAULT`) an address outside the
/// registered buffer of that index.
#[derive(Debug)]
pub struct ReadFixed {
    fd: SharedFd,
    buf: FixedBuf,
    offset: u64,
}

impl ReadFixed {
    /// Reads at `offset` into `buf`; gives `buf` back when it is not a table buffer.
    ///
    /// # Errors
    ///
    /// `Err(buf)` when `buf` is not registered ([`FixedBuf::is_registered`]).
    pub fn new(fd: SharedFd, buf: FixedBuf, offset: u64) -> Result<Self, FixedBuf> {
        if !buf.is_registered() {
            return Err(buf);
        }
        Ok(ReadFixed { fd, buf, offset })
    }

    /// Takes the buffer back, with the bytes the read returned marked
    /// initialized (as [`Read::into_buf`]).
    pub fn into_buf(self) -> FixedBuf {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_total().min(MAX_RW_LEN)
    }
}

// SAFETY: the SQE points at the op's `FixedBuf` (stable table memory kept alive
// by its `Arc`, used by no one else) for at most `bytes_total()` bytes.
unsafe impl Op for ReadFixed {
    unsafe fn complete(&mut self, cqe: &Cqe) {
        let len = self.len();
        // SAFETY: `cqe` is this read's final completion (the trait's contract).
        unsafe { record_read(&mut self.buf, len, cqe.res) };
    }
    fn prepare(&mut self) -> Sqe {
        let len = self.len() as u32;
        let index = self.buf.buf_index().expect("checked in `new`");
        let ptr = self.buf.stable_mut_ptr() as u64;
        let mut s = sqe(
            abi::IORING_OP_READ_FIXED,
            self.fd.as_raw_fd(),
            ptr,
            len,
            self.offset,
        );
        s.buf_index_or_group = index;
        Sqe::from_raw(s)
    }
    fn run_blocking(&mut self) -> i32 {
        let len = self.len();
        let ptr = self.buf.stable_mut_ptr();
        let Ok(off) = libc::off_t::try_from(self.offset) else {
            return -libc::EINVAL;
        };
        // SAFETY: `ptr` is writable for `len` bytes (`IoBufMut` contract).
        let res = cqe_res(unsafe { libc::pread(self.fd.as_raw_fd(), ptr.cast(), len, off) } as libc::c_long);
        // SAFETY: `res` is what `pread` into the start of `buf` returned.
        unsafe { record_read(&mut self.buf, len, res) };
        res
    }
    op_any!();
}

/// `pwrite` of a registered buffer's contents (`IORING_OP_WRITE_FIXED`); as
/// [`ReadFixed`], only on the ring that registered the buffer's table.
#[derive(Debug)]
pub struct WriteFixed {
    fd: SharedFd,
    buf: FixedBuf,
    offset: u64,
}

impl WriteFixed {
    /// Writes `buf`'s contents at `offset`; gives `buf` back when it is not a
    /// table buffer.
    ///
    /// # Errors
    ///
    /// `Err(buf)` when `buf` is not registered ([`FixedBuf::is_registered`]).
    pub fn new(fd: SharedFd, buf: FixedBuf, offset: u64) -> Result<Self, FixedBuf> {
        if !buf.is_registered() {
            return Err(buf);
        }
        Ok(WriteFixed { fd, buf, offset })
    }

    /// Takes the buffer back.
    pub fn into_buf(self) -> FixedBuf {
        self.buf
    }

    fn len(&self) -> usize {
        self.buf.bytes_init().min(MAX_RW_LEN)
    }
}

// SAFETY: the SQE points at the op's `FixedBuf`'s initialized bytes (stable
// table memory kept alive by its `Arc`, used by no one else).
unsafe impl Op for WriteFixed {
    fn prepare(&mut self) -> Sqe {
        let len = self.len() as u32;
        let index = self.buf.buf_index().expect("checked in `new`");
        let ptr = self.buf.stable_ptr() as u64;
        let mut s = sqe(
            abi::IORING_OP_WRITE_FIXED,
            self.fd.as_raw_fd(),
            ptr,
            len,
            self.offset,
        );
        s.buf_index_or_group = index;
        Sqe::from_raw(s)
    }
    fn run_blocking(&mut self) -> i32 {
        let Ok(off) = libc::off_t::try_from(self.offset) else {
            return -libc::EINVAL;
        };
        // SAFETY: `stable_ptr()` is readable for `len()` initialized bytes.
        cqe_res(
            unsafe { libc::pwrite(self.fd.as_raw_fd(), self.buf.stable_ptr().cast(), self.len(), off) }
                as libc::c_long,
        )
    }
    op_any!();
}

/// `fsync` / `fdatasync`.
#[derive(Debug)]
pub struct Fsync {
    fd: SharedFd,
    datasync: bool,
}

impl Fsync {
    /// Flushes data and (unless `datasync`) metadata of `fd`.
    pub fn new(fd: SharedFd, datasync: bool) -> Self {
        Fsync { fd, datasync }
    }
}

// SAFETY: references no memory.
unsafe impl Op for Fsync {
    fn prepare(&mut self) -> Sqe {
        let mut s = sqe(abi::IORING_OP_FSYNC, self.fd.as_raw_fd(), 0, 0, 0);
        if self.datasync {
            s.op_flags = abi::IORING_FSYNC_DATASYNC;
        }
        Sqe::from_raw(s)
    }
    fn run_blocking(&mut self) -> i32 {
        let fd = self.fd.as_raw_fd();
        // SAFETY: plain syscalls on an fd this op keeps open.
        let ret = unsafe {
            if self.datasync {
                libc::fdatasync(fd)
            } else {
                libc::fsync(fd)
            }
        };
        cqe_res(ret as libc::c_long)
    }
    op_any!();
}

/// `openat(dirfd, path, flags | O_CLOEXEC, mode)`: its result is a new fd.
#[derive(Debug)]
pub struct OpenAt {
    dir: Dir,
    path: CString,
    flags: i32,
    mode: u32,
    opened: Option<OwnedFd>,
}

impl OpenAt {
    /// Opens `path` relative to `dir`. `O_CLOEXEC` is always added.
    pub fn new(dir: Dir, path: CString, flags: i32, mode: u32) -> Self {
        OpenAt {
            dir,
            path,
            flags: flags | libc::O_CLOEXEC,
            mode,
            opened: None,
        }
    }

    /// The fd a successful open created; `None` before completion or after a
    /// failure. An op dropped without this closes the fd.
    pub fn into_fd(mut self) -> Option<OwnedFd> {
        self.opened.take()
    }
}

// SAFETY: the SQE points at `path`'s heap bytes, owned by the op, and names
// `dir`'s fd, which the op keeps open.
unsafe impl Op for OpenAt {
    unsafe fn complete(&mut self, cqe: &Cqe) {
        // SAFETY: `cqe` is this open's final completion (the trait's contract):
        // a non-negative `res` is the fd the kernel created for it.
        self.opened = unsafe { adopt_fd(cqe.res) };
    }
    fn prepare(&mut self) -> Sqe {
        let mut s = sqe(
            abi::IORING_OP_OPENAT,
            self.dir.raw(),
            self.path.as_ptr() as u64,
            self.mode,
            0,
        );
        s.op_flags = self.flags as u32;
        Sqe::from_raw(s)
    }
    fn run_blocking(&mut self) -> i32 {
        // SAFETY: `path` is a valid C string; the mode is passed as the variadic arg.
        let res = cqe_res(
            unsafe { libc::openat(self.dir.raw(), self.path.as_ptr(), self.flags, self.mode) }
                as libc::c_long,
        );
        // SAFETY: a non-negative `res` is the fd `openat` just created.
        self.opened = unsafe { adopt_fd(res) };
        res
    }
    op_any!();
}

/// Closes an fd, taking ownership of it.
#[derive(Debug)]
pub struct Close {
    fd: Option<OwnedFd>,
}

impl Close {
    /// Closes `fd` (the kernel owns it from submission on).
    pub fn new(fd: OwnedFd) -> Self {
        Close { fd: Some(fd) }
    }
}

// SAFETY: references no memory. The fd number is given up on `prepare`: the
// kernel closes it, so the OwnedFd must not close it again.
unsafe impl Op for Close {
    fn prepare(&mut self) -> Sqe {
        let fd = self.fd.take().map_or(-1, std::os::fd::IntoRawFd::into_raw_fd);
        Sqe::from_raw(sqe(abi::IORING_OP_CLOSE, fd, 0, 0, 0))
    }
    fn run_blocking(&mut self) -> i32 {
        let Some(fd) = self.fd.take() else {
            return -libc::EBADF;
        };
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: we own `raw` (taken out of the OwnedFd) and close it once.
        cqe_res(unsafe { libc::close(raw) } as libc::c_long)
    }
    op_any!();
}

/// `statx(dirfd, path, flags, mask)` into an owned `statx` buffer.
pub struct Statx {
    dir: Dir,
    path: CString,
    flags: i32,
    mask: u32,
    out: Box<libc::statx>,
}

impl std::fmt::Debug for Statx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statx")
            .field("path", &self.path)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl Statx {
    /// Metadata of `path` relative to `dir` (`flags` e.g. `AT_SYMLINK_NOFOLLOW`).
    pub fn path(dir: Dir, path: CString, flags: i32) -> Self {
        Self::build(dir, path, flags)
    }

    /// Metadata of an open file (`AT_EMPTY_PATH`).
    pub fn fd(fd: SharedFd) -> Self {
        Self::build(Dir::Fd(fd), CString::default(), libc::AT_EMPTY_PATH)
    }

    fn build(dir: Dir, path: CString, flags: i32) -> Self {
        // SAFETY: `statx` is plain integer data; all-zero is a valid value.
        let out = Box::new(unsafe { std::mem::zeroed::<libc::statx>() });
        Statx {
            dir,
            path,
            flags,
            mask: libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            out,
        }
    }

    /// The result, after a successful completion.
    pub fn into_statx(self) -> libc::statx {
        *self.out
    }
}

// SAFETY: the SQE points at `path`'s heap bytes and the boxed `out`, both owned.
unsafe impl Op for Statx {
    fn prepare(&mut self) -> Sqe {
        let out = &mut *self.out as *mut libc::statx as u64;
        let mut s = sqe(
            abi::IORING_OP_STATX,
            self.dir.raw(),
            self.path.as_ptr() as u64,
            self.mask,
            out,
        );
        s.op_flags = self.flags as u32;
        Sqe::from_raw(s)
    }
    fn run_blocking(&mut self) -> i32 {
        // SAFETY: valid C string and an exclusively owned statx buffer.
        cqe_res(unsafe {
            libc::statx(
                self.dir.raw(),
                self.path.as_ptr(),
                self.flags,
                self.mask,
                &mut *self.out,
            )
        } as libc::c_long)
    }
    op_any!();
}

/// `fallocate(fd, mode, offset, len)`.
#[derive(Debug)]
pub struct Fallocate {
    fd: SharedFd,
    mode: i32,
    offset: u64,
    len: u64,
}

impl Fallocate {
    /// Allocates (or, with a mode, punches/zeroes) `offset..offset + len`.
    pub fn new(fd: SharedFd, mode: i32, offset: u64, len: u64) -> Self {
        Fallocate {
            fd,
            mode,
            offset,
            len,
        }
    }
}

// SAFETY: references no memory.
unsafe impl Op for Fallocate {
    fn prepare(&mut self) -> Sqe {
        Sqe::from_raw(sqe(
            abi::IORING_OP_FALLOCATE,
            self.fd.as_raw_fd(),
            self.len,
            self.mode as u32,
            self.offset,
        ))
    }
    fn run_blocking(&mut self) -> i32 {
        let (Ok(off), Ok(len)) = (
            libc::off_t::try_from(self.offset),
            libc::off_t::try_from(self.len),
        ) else {
            return -libc::EINVAL;
        };
        // SAFETY: plain syscall on an fd this op keeps open.
        cqe_res(unsafe { libc::fallocate(self.fd.as_raw_fd(), self.mode, off, len) } as libc::c_long)
    }
    op_any!();
}

/// `ftruncate(fd, len)` (io_uring opcode since Linux 6.9).
#[derive(Debug)]
pub struct Ftruncate {
    fd: SharedFd,
    len: u64,
}

impl Ftruncate {
    /// Sets the file's length.
    pub fn new(fd: SharedFd, len: u64) -> Self {
        Ftruncate { fd, len }
    }
}

// SAFETY: references no memory.
unsafe impl Op for Ftruncate {
    fn prepare(&mut self) -> Sqe {
        Sqe::from_raw(sqe(abi::IORING_OP_FTRUNCATE, self.fd.as_raw_fd(), 0, 0, self.len))
    }
    fn run_blocking(&mut self) -> i32 {
        let Ok(len) = libc::off_t::try_from(self.len) else {
            return -libc::EINVAL;
        };
        // SAFETY: plain syscall on an fd this op keeps open.
        cqe_res(unsafe { libc::ftruncate(self.fd.as_raw_fd(), len) } as libc::c_long)
    }
    op_any!();
}

/// The path-only ops: unlink/rmdir, rename, mkdir, symlink, hard link.
#[derive(Debug)]
pub enum PathOp {
    /// `unlinkat(AT_FDCWD, path, flags)` (`AT_REMOVEDIR` removes a directory).
    Unlink {
        /// The path.
        path: CString,
        /// `0` or `AT_REMOVEDIR`.
        flags: i32,
    },
    /// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`.
    Rename {
        /// Old path.
        from: CString,
        /// New path.
        to: CString,
        /// `renameat2` flags.
        flags: u32,
    },
    /// `mkdirat(AT_FDCWD, path, mode)`.
    Mkdir {
        /// The path.
        path: CString,
        /// Permission bits.
        mode: u32,
    },
    /// `symlinkat(target, AT_FDCWD, link)`.
    Symlink {
        /// What the link points to.
        target: CString,
        /// Where the link is created.
        link: CString,
    },
    /// `linkat(AT_FDCWD, from, AT_FDCWD, to, 0)`.
    HardLink {
        /// Existing path.
        from: CString,
        /// New name.
        to: CString,
    },
}

// SAFETY: the SQE points only at the CStrings' heap bytes, owned by the op.
unsafe impl Op for PathOp {
    fn prepare(&mut self) -> Sqe {
        let cwd = libc::AT_FDCWD;
        let s = match self {
            PathOp::Unlink { path, flags } => {
                let mut s = sqe(abi::IORING_OP_UNLINKAT, cwd, path.as_ptr() as u64, 0, 0);
                s.op_flags = *flags as u32;
                s
            }
            PathOp::Rename { from, to, flags } => {
                let mut s = sqe(
                    abi::IORING_OP_RENAMEAT,
                    cwd,
                    from.as_ptr() as u64,
                    cwd as u32,
                    to.as_ptr() as u64,
                );
                s.op_flags = *flags;
                s
            }
            PathOp::Mkdir { path, mode } => sqe(abi::IORING_OP_MKDIRAT, cwd, path.as_ptr() as u64, *mode, 0),
            PathOp::Symlink { target, link } => sqe(
                abi::IORING_OP_SYMLINKAT,
                cwd,
                target.as_ptr() as u64,
                0,
                link.as_ptr() as u64,
            ),
            PathOp::HardLink { from, to } => sqe(
                abi::IORING_OP_LINKAT,
                cwd,
                from.as_ptr() as u64,
                cwd as u32,
                to.as_ptr() as u64,
            ),
        };
        Sqe::from_raw(s)
    }
    fn run_blocking(&mut self) -> i32 {
        let cwd = libc::AT_FDCWD;
        // SAFETY: every pointer is a valid C string owned by the op.
        let ret = unsafe {
            match self {
                PathOp::Unlink { path, flags } => libc::unlinkat(cwd, path.as_ptr(), *flags),
                PathOp::Rename { from, to, flags } => {
                    libc::renameat2(cwd, from.as_ptr(), cwd, to.as_ptr(), *flags as libc::c_uint)
                }
                PathOp::Mkdir { path, mode } => libc::mkdirat(cwd, path.as_ptr(), *mode as libc::mode_t),
                PathOp::Symlink { target, link } => libc::symlinkat(target.as_ptr(), cwd, link.as_ptr()),
                PathOp::HardLink { from, to } => libc::linkat(cwd, from.as_ptr(), cwd, to.as_ptr(), 0),
            }
        };
        cqe_res(ret as libc::c_long)
    }
    op_any!();
}
