//! Files and paths on io_uring.
//!
//! Every function here submits a native io_uring op (`READ`, `WRITE`,
//! `OPENAT`, `OPENAT2` (for [`Dir`]), `STATX`, `FSYNC`, `FALLOCATE`, `FTRUNCATE`, `UNLINKAT`,
//! `RENAMEAT`, `MKDIRAT`, `SYMLINKAT`, `LINKAT`, `CLOSE`) on the calling
//! shard's ring, except [`canonicalize`] (`realpath`), [`read_dir`]
//! (`getdents64`) and the last step of [`copy`] (`fchmod`), which have no
//! io_uring op and run on the blocking pool. On the Queue backend the same
//! ops run as the equivalent blocking system calls on the pool, except reads
//! and writes of a [`File`] that is a pipe, FIFO, socket, tty or eventfd:
//! those wait for readiness in the shard's epoll set (no thread per pending
//! read; the fd's `O_NONBLOCK` flag is never changed), and, as on io_uring,
//! such a stream has no offset: `pos` is ignored.
//!
//! Buffers are owned: an op takes the buffer and gives it back with the
//! result ([`BufResult`]), so dropping a future mid-read can never free memory
//! the kernel is still writing.
//!
//! ```
//! spargio::run(|_| async {
//!     let path = std::env::temp_dir().join(format!("spargio-doc-{}", std::process::id()));
//!     spargio::fs::write(&path, b"hello".to_vec()).await?;
//!     let file = spargio::fs::File::open(&path).await?;
//!     let (n, buf) = file.read_at(Vec::with_capacity(16), 0).await;
//!     assert_eq!(&buf[..n?], b"hello");
//!     spargio::fs::remove_file(&path).await
//! })
//! .unwrap()
//! .unwrap();
//! ```

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use spargio_sys::abi;
use spargio_sys::op::fs::{
    Close, Dir as AtDir, Fallocate, Fsync, Ftruncate, OpenAt, PathOp, Read, ReadFixed, SharedFd, Statx,
    Write, WriteFixed,
};
use spargio_sys::op::openat2::OpenAt2;

use crate::io::{BufResult, FixedBuf, IoBuf, IoBufMut, check_offset, cqe_result, read_done, submit_current};

pub use spargio_sys::op::fs::MAX_RW_LEN;

mod read_dir;
pub use read_dir::{DirEntry, ReadDir, read_dir};

/// Reads asking for at most this many bytes allocate their buffer at once;
/// longer ones first ask the file's size (see [`File::read_at`]).
pub const SMALL_READ: usize = 64 * 1024;

/// The largest buffer a length-taking read allocates for a file whose size
/// `statx` does not tell (anything but a regular file).
pub const MAX_UNSIZED_READ: usize = 1 << 20;

/// The buffer size for a read of up to `len` bytes at `pos` of a file of
/// `size` bytes (`None`: not a regular file, size unknown).
pub(crate) fn read_capacity(len: usize, pos: u64, size: Option<u64>) -> usize {
    let readable = match size {
        Some(size) => usize::try_from(size.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .max(SMALL_READ),
        None => MAX_UNSIZED_READ,
    };
    len.min(readable).min(MAX_RW_LEN)
}

/// Submits an op whose resources the caller does not need back on failure.
fn submit_op<O: spargio_sys::op::Op>(op: O) -> io::Result<crate::io::OpFuture<O>> {
    submit_current(op).map_err(|(e, _op)| e)
}

/// The shard that registered `buf`: `None` for an unregistered buffer,
/// `Some(None)` when that runtime is gone.
fn fixed_owner(buf: &FixedBuf) -> Option<Option<(Arc<crate::runtime::Shared>, usize)>> {
    let owner = buf.owner()?.downcast_ref::<crate::shard::FixedOwner>()?;
    Some(owner.runtime.upgrade().map(|rt| (rt, owner.shard)))
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains an interior NUL byte"))
}

/// An open file whose I/O runs on io_uring.
///
/// Clones share the fd; it is closed when the last clone (and every op still
/// using it) is gone, or explicitly with [`File::close`].
///
/// Positional methods take their arguments in the order of
/// [`std::os::unix::fs::FileExt`]: the buffer (or, for
/// [`read_vec_at`](File::read_vec_at), the length) first, then the offset:
/// `read_at(buf, pos)`, `write_at(buf, pos)`, `read_exact_at(buf, pos)`.
#[derive(Clone, Debug)]
pub struct File {
    fd: SharedFd,
}

impl File {
    /// Opens a file for reading.
    ///
    /// # Errors
    ///
    /// The `openat` error (`NotFound`, `PermissionDenied`, …); `InvalidInput`
    /// for a path with an interior NUL; an error outside a spargio runtime.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Creates (or truncates) a file for writing.
    ///
    /// # Errors
    ///
    /// As [`File::open`].
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    /// Wraps a `std::fs::File`.
    pub fn from_std(file: std::fs::File) -> File {
        File {
            fd: Arc::new(OwnedFd::from(file)),
        }
    }

    /// Wraps an owned fd.
    pub fn from_owned_fd(fd: OwnedFd) -> File {
        File { fd: Arc::new(fd) }
    }

    /// The shared fd, for [`compat::Io`](crate::compat::Io).
    pub(crate) fn shared_fd(&self) -> &SharedFd {
        &self.fd
    }

    /// Gives back a `std::fs::File`.
    ///
    /// # Errors
    ///
    /// Gives `self` back while clones or ops still share the fd.
    pub fn into_std(self) -> Result<std::fs::File, File> {
        Arc::try_unwrap(self.fd)
            .map(std::fs::File::from)
            .map_err(|fd| File { fd })
    }

    /// Reads up to `len` bytes at `pos` into a new buffer (one read: the
    /// result may be shorter than `len` before the end of the file).
    ///
    /// `len` may come from untrusted input (a length prefix on the wire): the
    /// buffer is sized by what can be read, not by `len`. Above
    /// [`SMALL_READ`] bytes the file's size is asked first (`statx`) and the
    /// buffer holds at most the bytes between `pos` and the end of the file
    /// (at least [`SMALL_READ`], in case it grew); for a file without a size
    /// (a pipe, a device, a `/proc` file) at most [`MAX_UNSIZED_READ`]; and
    /// never more than one read can return ([`MAX_RW_LEN`]).
    ///
    /// # Errors
    ///
    /// The read's or the `statx`'s error; `InvalidInput` for `pos` beyond
    /// `i64::MAX`. A huge `len` is never an error: it gives a short read.
    pub async fn read_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>> {
        check_offset(pos)?;
        let capacity = if len <= SMALL_READ {
            len
        } else {
            read_capacity(len, pos, self.metadata().await?.size_hint())
        };
        let (res, mut buf) = self.read_at(Vec::with_capacity(capacity), pos).await;
        let n = res?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads at `pos` into `buf` (from its start, up to its capacity); returns
    /// the byte count with the buffer. `0` means end of file (or a zero-length buffer).
    pub async fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(e) = check_offset(pos) {
            return (Err(e), buf);
        }
        match submit_current(Read::new(self.fd.clone(), buf, pos)) {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok(fut) => {
                let (cqe, op) = fut.await;
                read_done(cqe_result(&cqe), op)
            }
        }
    }

    /// Fills `buf` (up to its capacity) from `pos`, looping over short reads.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` when the file ends first (the buffer holds what was read).
    pub async fn read_exact_at(&self, buf: Vec<u8>, pos: u64) -> BufResult<(), Vec<u8>> {
        let want = buf.capacity();
        let mut buf = buf;
        buf.clear();
        let mut done = 0usize;
        while done < want {
            let chunk = Vec::with_capacity(want - done);
            let (res, chunk) = self.read_at(chunk, pos + done as u64).await;
            match res {
                Ok(0) => {
                    return (
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file ended before the buffer was full",
                        )),
                        buf,
                    );
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Reads from `pos` to the end of the file.
    ///
    /// # Errors
    ///
    /// The first read error.
    pub async fn read_to_end_at(&self, pos: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = Vec::with_capacity(64 * 1024);
        loop {
            chunk.clear();
            let (res, back) = self.read_at(chunk, pos + out.len() as u64).await;
            chunk = back;
            match res {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `buf`'s initialized bytes at `pos`; returns how many were written.
    pub async fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(e) = check_offset(pos) {
            return (Err(e), buf);
        }
        match submit_current(Write::new(self.fd.clone(), buf, pos)) {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok(fut) => {
                let (cqe, op) = fut.await;
                (cqe_result(&cqe), op.into_buf())
            }
        }
    }

    /// Reads at `pos` into a buffer from [`checkout_fixed_buf`](crate::io::checkout_fixed_buf)
    /// (from its start, up to its capacity); returns the byte count with the buffer.
    ///
    /// A registered buffer is read with `READ_FIXED`, always on the ring of
    /// the shard that registered it (from another shard or thread the op is
    /// steered there), since a buffer index means something only on that
    /// ring. An unregistered one is read like [`File::read_at`].
    ///
    /// # Errors
    ///
    /// The read's error; `InvalidInput` for `pos` beyond `i64::MAX`; `Other`
    /// once the buffer's runtime is shut down.
    ///
    /// ```
    /// spargio::run(|_| async {
    ///     let path = std::env::temp_dir().join(format!("spargio-doc-fixed-{}", std::process::id()));
    ///     spargio::fs::write(&path, b"fixed".to_vec()).await?;
    ///     let file = spargio::fs::File::open(&path).await?;
    ///     let buf = spargio::io::checkout_fixed_buf(4096).expect("a free buffer");
    ///     let (n, buf) = file.read_fixed_at(buf, 0).await;
    ///     assert_eq!(&buf[..n?], b"fixed");
    ///     spargio::fs::remove_file(&path).await
    /// })
    /// .unwrap()
    /// .unwrap();
    /// ```
    pub async fn read_fixed_at(&self, buf: FixedBuf, pos: u64) -> BufResult<usize, FixedBuf> {
        if let Err(e) = check_offset(pos) {
            return (Err(e), buf);
        }
        let Some(owner) = fixed_owner(&buf) else {
            return self.read_at(buf, pos).await;
        };
        let Some((rt, shard)) = owner else {
            return (Err(crate::io::closed()), buf);
        };
        let op = match ReadFixed::new(self.fd.clone(), buf, pos) {
            Ok(op) => op,
            Err(buf) => return self.read_at(buf, pos).await,
        };
        rt.shards[shard]
            .counters
            .fixed_buf_ops
            .fetch_add(1, Ordering::Relaxed);
        match crate::io::submit(&rt, Some(shard), op) {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok(fut) => {
                let (cqe, op) = fut.await;
                let res = cqe_result(&cqe);
                (res, op.into_buf())
            }
        }
    }

    /// Writes the contents of a buffer from [`checkout_fixed_buf`](crate::io::checkout_fixed_buf)
    /// at `pos`; returns how many bytes were written. As [`File::read_fixed_at`]:
    /// `WRITE_FIXED` on the buffer's own shard, or a plain write when the
    /// buffer is not registered.
    ///
    /// # Errors
    ///
    /// As [`File::read_fixed_at`].
    pub async fn write_fixed_at(&self, buf: FixedBuf, pos: u64) -> BufResult<usize, FixedBuf> {
        if let Err(e) = check_offset(pos) {
            return (Err(e), buf);
        }
        let Some(owner) = fixed_owner(&buf) else {
            return self.write_at(buf, pos).await;
        };
        let Some((rt, shard)) = owner else {
            return (Err(crate::io::closed()), buf);
        };
        let op = match WriteFixed::new(self.fd.clone(), buf, pos) {
            Ok(op) => op,
            Err(buf) => return self.write_at(buf, pos).await,
        };
        rt.shards[shard]
            .counters
            .fixed_buf_ops
            .fetch_add(1, Ordering::Relaxed);
        match crate::io::submit(&rt, Some(shard), op) {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok(fut) => {
                let (cqe, op) = fut.await;
                (cqe_result(&cqe), op.into_buf())
            }
        }
    }

    /// Writes all of `buf` at `pos`, looping over short writes.
    ///
    /// # Errors
    ///
    /// The first write error; `WriteZero` if the kernel accepted nothing.
    pub async fn write_all_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        crate::io::write_all_with(buf, |rest, done| self.write_at(rest, pos + done as u64)).await
    }

    /// Flushes data and metadata to the device (`fsync`).
    ///
    /// # Errors
    ///
    /// The `fsync` error (e.g. `EIO`).
    pub async fn sync_all(&self) -> io::Result<()> {
        let (cqe, _) = submit_op(Fsync::new(self.fd.clone(), false))?.await;
        cqe_result(&cqe).map(drop)
    }

    /// Same as [`File::sync_all`] (the seed's name).
    ///
    /// # Errors
    ///
    /// As [`File::sync_all`].
    pub async fn fsync(&self) -> io::Result<()> {
        self.sync_all().await
    }

    /// Flushes data (not all metadata) to the device (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The `fdatasync` error.
    pub async fn sync_data(&self) -> io::Result<()> {
        let (cqe, _) = submit_op(Fsync::new(self.fd.clone(), true))?.await;
        cqe_result(&cqe).map(drop)
    }

    /// Metadata of the open file (`statx` with `AT_EMPTY_PATH`).
    ///
    /// # Errors
    ///
    /// The `statx` error.
    pub async fn metadata(&self) -> io::Result<Metadata> {
        let (cqe, op) = submit_op(Statx::fd(self.fd.clone()))?.await;
        cqe_result(&cqe)?;
        Ok(Metadata::from_statx(op.into_statx()))
    }

    /// Truncates or extends the file to `len` bytes.
    ///
    /// # Errors
    ///
    /// The `ftruncate` error; `InvalidInput` for `len` beyond `i64::MAX`.
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        check_offset(len)?;
        let (cqe, _) = submit_op(Ftruncate::new(self.fd.clone(), len))?.await;
        match cqe_result(&cqe) {
            // Kernels before 6.9 lack IORING_OP_FTRUNCATE: do it on the blocking pool.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let fd = self.fd.clone();
                blocking(move || std::fs::File::from(fd.try_clone()?).set_len(len)).await
            }
            r => r.map(drop),
        }
    }

    /// Allocates disk space for `offset..offset + len` (`fallocate` mode 0).
    ///
    /// # Errors
    ///
    /// The `fallocate` error (`ENOSPC`, `EOPNOTSUPP` on some filesystems).
    pub async fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        check_offset(offset)?;
        check_offset(len)?;
        let (cqe, _) = submit_op(Fallocate::new(self.fd.clone(), 0, offset, len))?.await;
        cqe_result(&cqe).map(drop)
    }

    /// Closes the file with `IORING_OP_CLOSE` and reports the close error.
    ///
    /// # Errors
    ///
    /// The `close` error; `WouldBlock` ("file still shared") while clones or
    /// ops still use the fd (it is then closed when they are gone).
    pub async fn close(self) -> io::Result<()> {
        let fd = Arc::try_unwrap(self.fd)
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "file still shared by clones or ops"))?;
        let (cqe, _) = submit_op(Close::new(fd))?.await;
        cqe_result(&cqe).map(drop)
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Options for opening a file, like `std::fs::OpenOptions`, plus custom flags.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
    custom_flags: i32,
    no_symlinks: bool,
    no_cross_mount: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// All options off; mode `0o666` (before the umask).
    pub fn new() -> Self {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o666,
            custom_flags: 0,
            no_symlinks: false,
            no_cross_mount: false,
        }
    }
    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }
    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }
    /// Writes go to the end (`O_APPEND`).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }
    /// Truncate to zero length (`O_TRUNC`).
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }
    /// Create if missing (`O_CREAT`).
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }
    /// Create, failing if it exists (`O_CREAT | O_EXCL`).
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }
    /// Permission bits for a created file.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }
    /// Extra `open` flags, e.g. `libc::O_DIRECT` or `libc::O_NOATIME`.
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags;
        self
    }
    /// Refuse a symlink anywhere in the path, not only one that leads out of
    /// a [`Dir`] (`RESOLVE_NO_SYMLINKS`; the open fails with `ELOOP`). The open
    /// then goes through `openat2`.
    pub fn no_symlinks(&mut self, on: bool) -> &mut Self {
        self.no_symlinks = on;
        self
    }
    /// Refuse to cross a mount point, bind mounts included
    /// (`RESOLVE_NO_XDEV`; the open fails with `EXDEV`). The open then goes
    /// through `openat2`.
    pub fn no_cross_mount(&mut self, on: bool) -> &mut Self {
        self.no_cross_mount = on;
        self
    }

    /// The `RESOLVE_*` flags these options ask for.
    fn resolve(&self) -> u64 {
        let mut resolve = 0;
        if self.no_symlinks {
            resolve |= abi::RESOLVE_NO_SYMLINKS;
        }
        if self.no_cross_mount {
            resolve |= abi::RESOLVE_NO_XDEV;
        }
        resolve
    }

    fn flags(&self) -> io::Result<i32> {
        let access = match (self.read, self.write || self.append) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "open needs read, write or append",
                ));
            }
        };
        if (self.truncate || self.create || self.create_new) && !(self.write || self.append) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "create/truncate need write or append",
            ));
        }
        let mut flags = access | self.custom_flags;
        if self.append {
            flags |= libc::O_APPEND;
        }
        if self.truncate && !self.create_new {
            flags |= libc::O_TRUNC;
        }
        if self.create_new {
            flags |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            flags |= libc::O_CREAT;
        }
        Ok(flags)
    }

    /// Opens `path` with these options (`IORING_OP_OPENAT`; the fd is `O_CLOEXEC`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for contradictory options or an interior NUL; the `openat`
    /// error otherwise (`NotFound`, `AlreadyExists`, `IsADirectory` when writing
    /// a directory, …); with [`no_symlinks`](Self::no_symlinks) or
    /// [`no_cross_mount`](Self::no_cross_mount), `ELOOP` / `EXDEV` for a path
    /// they refuse, and `Unsupported` where `openat2` is unavailable.
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let flags = self.flags()?;
        let path = cpath(path.as_ref())?;
        let resolve = self.resolve();
        if resolve != 0 {
            let fd = open_at2(OpenAt2::new(AtDir::Cwd, path, flags, self.mode, resolve)).await?;
            return Ok(File::from_owned_fd(fd));
        }
        let (cqe, op) = submit_op(OpenAt::new(AtDir::Cwd, path, flags, self.mode))?.await;
        Ok(File {
            fd: Arc::new(crate::io::created_fd(&cqe, op.into_fd())?),
        })
    }

    /// The equivalent `std::fs::OpenOptions` (for blocking fallbacks), without
    /// [`no_symlinks`](Self::no_symlinks) and
    /// [`no_cross_mount`](Self::no_cross_mount), which std cannot express.
    pub fn to_std(&self) -> std::fs::OpenOptions {
        let mut o = std::fs::OpenOptions::new();
        o.read(self.read)
            .write(self.write)
            .append(self.append)
            .truncate(self.truncate)
            .create(self.create)
            .create_new(self.create_new)
            .mode(self.mode)
            .custom_flags(self.custom_flags);
        o
    }
}

/// Runs an `openat2` op: on the ring where the kernel has
/// `IORING_OP_OPENAT2` (and as the `openat2` call on the Queue backend), as
/// the `openat2` system call on the blocking pool where it has not.
async fn open_at2(op: OpenAt2) -> io::Result<OwnedFd> {
    let on_ring = spargio_sys::probe::Features::detect().is_ok_and(|f| f.supports(abi::IORING_OP_OPENAT2));
    let res = if on_ring {
        let (cqe, op) = submit_op(op)?.await;
        op.into_fd().ok_or(if cqe.res < 0 { cqe.res } else { -libc::EIO })
    } else {
        // The fd is owned inside the job, so it is closed if the waiter left.
        blocking(move || {
            let mut op = op;
            let res = spargio_sys::op::Op::run_blocking(&mut op);
            Ok(op.into_fd().ok_or(if res < 0 { res } else { -libc::EIO }))
        })
        .await?
    };
    res.map_err(|neg| match -neg {
        libc::ENOSYS => io::Error::new(
            io::ErrorKind::Unsupported,
            "openat2 is unavailable and this resolve mode has no userspace fallback",
        ),
        errno => io::Error::from_raw_os_error(errno),
    })
}

/// An open directory that files are opened beneath: no path given to
/// [`Dir::open_file`], [`Dir::open_with`] or [`Dir::open_dir`] can leave it.
///
/// Every open is an `openat2` relative to the directory's fd with
/// `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` (`IORING_OP_OPENAT2` on the
/// ring, Linux 5.6): an absolute path, a `..` above the directory, or a
/// symlink whose target lies outside it fails with `EXDEV`
/// ([`io::ErrorKind::CrossesDevices`]), a `/proc/<pid>/fd`-style magic link
/// with `ELOOP`. Symlinks and `..` that
/// stay beneath are followed; [`OpenOptions::no_symlinks`] refuses every
/// symlink. Because the kernel resolves the whole path in one call, a
/// concurrent rename cannot move the lookup outside either.
///
/// Where the kernel has no `IORING_OP_OPENAT2` the `openat2` system call runs
/// on the blocking pool (also on the Queue backend); where that is missing
/// too (`ENOSYS`), a userspace walk opens one component at a time with
/// `O_NOFOLLOW` and is stricter: it refuses every `..` (`EXDEV`) and every
/// symlink (`ELOOP`), even those that would stay beneath.
///
/// The directory itself is opened with `O_PATH`: it needs search (`x`)
/// permission only.
///
/// ```
/// spargio::run(|_| async {
///     let root = std::env::temp_dir().join(format!("spargio-doc-dir-{}", std::process::id()));
///     spargio::fs::create_dir_all(&root).await?;
///     spargio::fs::write(root.join("hello.txt"), b"hello".to_vec()).await?;
///     let dir = spargio::fs::Dir::open(&root).await?;
///     let file = dir.open_file("hello.txt").await?;
///     assert_eq!(file.read_vec_at(16, 0).await?, b"hello");
///     assert!(dir.open_file("../../etc/passwd").await.is_err());
///     assert!(dir.open_file("/etc/passwd").await.is_err());
///     spargio::fs::remove_file(root.join("hello.txt")).await?;
///     spargio::fs::remove_dir(&root).await
/// })
/// .unwrap()
/// .unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Dir {
    fd: SharedFd,
}

impl Dir {
    /// Opens the directory at `path` (which may itself contain symlinks: it is
    /// the caller's trusted root) with `O_PATH | O_DIRECTORY`.
    ///
    /// # Errors
    ///
    /// The `openat` error (`NotFound`, `NotADirectory`, `PermissionDenied`, …);
    /// `InvalidInput` for a path with an interior NUL; an error outside a
    /// spargio runtime.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = cpath(path.as_ref())?;
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let (cqe, op) = submit_op(OpenAt::new(AtDir::Cwd, path, flags, 0))?.await;
        Ok(Dir {
            fd: Arc::new(crate::io::created_fd(&cqe, op.into_fd())?),
        })
    }

    /// Wraps an open directory (e.g. `std::fs::File::open(dir)`). Opens
    /// beneath an fd that is not a directory fail with `ENOTDIR`.
    pub fn from_std(dir: std::fs::File) -> Dir {
        Dir {
            fd: Arc::new(OwnedFd::from(dir)),
        }
    }

    /// Opens the file at `path` beneath this directory for reading.
    ///
    /// # Errors
    ///
    /// As [`Dir::open_with`].
    pub async fn open_file(&self, path: impl AsRef<Path>) -> io::Result<File> {
        self.open_with(path, OpenOptions::new().read(true)).await
    }

    /// Opens (or creates) the file at `path` beneath this directory with
    /// `options`.
    ///
    /// # Errors
    ///
    /// `EXDEV` ([`io::ErrorKind::CrossesDevices`]) for a path that leaves the
    /// directory (absolute, `..` above it, a symlink out of it), `ELOOP` for
    /// a magic link, or any symlink
    /// with [`OpenOptions::no_symlinks`]; `InvalidInput` for contradictory
    /// options or an interior NUL; otherwise the `openat2` error (`NotFound`,
    /// `AlreadyExists`, …); `Unsupported` where neither `openat2` nor the
    /// walk (see [`Dir`]) can serve the options.
    pub async fn open_with(&self, path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<File> {
        let flags = options.flags()?;
        let fd = self
            .open_beneath(path.as_ref(), flags, options.mode, options.resolve())
            .await?;
        Ok(File::from_owned_fd(fd))
    }

    /// Opens the directory at `path` beneath this one, as a [`Dir`] whose
    /// opens stay beneath it in turn.
    ///
    /// # Errors
    ///
    /// As [`Dir::open_with`]; `NotADirectory` when `path` is not one.
    pub async fn open_dir(&self, path: impl AsRef<Path>) -> io::Result<Dir> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let fd = self.open_beneath(path.as_ref(), flags, 0, 0).await?;
        Ok(Dir { fd: Arc::new(fd) })
    }

    async fn open_beneath(&self, path: &Path, flags: i32, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
        let resolve = resolve | abi::RESOLVE_BENEATH | abi::RESOLVE_NO_MAGICLINKS;
        let op = OpenAt2::new(AtDir::Fd(self.fd.clone()), cpath(path)?, flags, mode, resolve);
        open_at2(op).await
    }
}

impl AsRawFd for Dir {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What `statx` reported about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    len: u64,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    dev: u64,
    blksize: u32,
    blocks: u64,
    modified: SystemTime,
    accessed: SystemTime,
    created: Option<SystemTime>,
}

fn ts(t: libc::statx_timestamp) -> SystemTime {
    let d = Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec);
    if t.tv_sec >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

impl Metadata {
    /// The size a read can go by: the length of a regular file, `None` for
    /// anything else (pipes, devices and `/proc` files report 0 or nothing).
    pub(crate) fn size_hint(&self) -> Option<u64> {
        self.is_file().then_some(self.len)
    }

    pub(crate) fn from_statx(s: libc::statx) -> Metadata {
        Metadata {
            len: s.stx_size,
            mode: u32::from(s.stx_mode),
            nlink: s.stx_nlink,
            uid: s.stx_uid,
            gid: s.stx_gid,
            ino: s.stx_ino,
            dev: (u64::from(s.stx_dev_major) << 32) | u64::from(s.stx_dev_minor),
            blksize: s.stx_blksize,
            blocks: s.stx_blocks,
            modified: ts(s.stx_mtime),
            accessed: ts(s.stx_atime),
            created: (s.stx_mask & libc::STATX_BTIME != 0).then(|| ts(s.stx_btime)),
        }
    }
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    /// True for a symbolic link (only from [`symlink_metadata`]).
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
    /// Permission bits and file type (`st_mode`).
    pub fn mode(&self) -> u32 {
        self.mode
    }
    /// Hard link count.
    pub fn nlink(&self) -> u32 {
        self.nlink
    }
    /// Owner user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// Owner group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }
    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }
    /// Device (major << 32 | minor).
    pub fn dev(&self) -> u64 {
        self.dev
    }
    /// Preferred I/O block size.
    pub fn blksize(&self) -> u32 {
        self.blksize
    }
    /// 512-byte blocks allocated.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    /// Last modification time.
    pub fn modified(&self) -> SystemTime {
        self.modified
    }
    /// Last access time.
    pub fn accessed(&self) -> SystemTime {
        self.accessed
    }
    /// Creation time, where the filesystem records one.
    pub fn created(&self) -> Option<SystemTime> {
        self.created
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let handle = crate::RuntimeHandle::current()
        .ok_or_else(|| io::Error::other("spargio I/O must run inside a spargio runtime task"))?;
    let job = handle.spawn_blocking(f).map_err(|_| crate::io::closed())?;
    match job.await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

async fn path_op(op: PathOp) -> io::Result<()> {
    let (cqe, _) = submit_op(op)?.await;
    cqe_result(&cqe).map(drop)
}

/// Reads a whole file.
///
/// # Errors
///
/// The open or read error.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    File::open(path).await?.read_to_end_at(0).await
}

/// Reads a whole file as UTF-8.
///
/// # Errors
///
/// The open or read error; `InvalidData` for bytes that are not UTF-8.
pub async fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    String::from_utf8(read(path).await?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Creates or truncates a file and writes `contents` to it.
///
/// # Errors
///
/// The open or write error.
pub async fn write<B: IoBuf>(path: impl AsRef<Path>, contents: B) -> io::Result<()> {
    let file = File::create(path).await?;
    file.write_all_at(contents, 0).await.0
}

/// Creates a directory (`IORING_OP_MKDIRAT`, mode `0o777` before the umask).
///
/// # Errors
///
/// `AlreadyExists`, `NotFound` (missing parent), …
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    path_op(PathOp::Mkdir {
        path: cpath(path.as_ref())?,
        mode: 0o777,
    })
    .await
}

/// Creates a directory and any missing parents.
///
/// # Errors
///
/// The first `mkdir` error other than "already exists as a directory".
pub async fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() {
            break;
        }
        match metadata(p).await {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is not a directory", p.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p.to_path_buf()),
            Err(e) => return Err(e),
        }
        cur = p.parent();
    }
    for p in missing.iter().rev() {
        match create_dir(p).await {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            r => r?,
        }
    }
    Ok(())
}

/// The chunk size of [`copy`]: each chunk is one `READ` and one `WRITE`.
pub const COPY_CHUNK: usize = 256 * 1024;

/// Copies the contents of the regular file `from` to `to`, creating or
/// truncating `to`, and gives `to` the permission bits of `from` (as
/// `std::fs::copy`). Returns the number of bytes copied.
///
/// The bytes go through the ring: `READ` and `WRITE` ops of [`COPY_CHUNK`]
/// bytes into one owned buffer, so no pool thread is held for a long copy
/// and dropping the future stops it between chunks (the destination then
/// holds a prefix of the source). Only the final `fchmod`, which has no
/// io_uring op, runs on the blocking pool.
///
/// ```
/// # spargio::RuntimeBuilder::new().shards(1).build().unwrap().block_on(async {
/// let dir = std::env::temp_dir();
/// let (a, b) = (dir.join(format!("copy-a-{}", std::process::id())), dir.join(format!("copy-b-{}", std::process::id())));
/// spargio::fs::write(&a, b"contents".to_vec()).await?;
/// assert_eq!(spargio::fs::copy(&a, &b).await?, 8);
/// assert_eq!(spargio::fs::read(&b).await?, b"contents");
/// # spargio::fs::remove_file(&a).await?;
/// # spargio::fs::remove_file(&b).await?;
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap().unwrap();
/// ```
///
/// # Errors
///
/// `InvalidInput` when `from` is not a regular file (or a symlink to one)
/// or when `from` and `to` are the same file (which is left as it was); the
/// open, read, write or `fchmod` error.
pub async fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
    let (from, to) = (from.as_ref(), to.as_ref());
    let src = File::open(from).await?;
    let src_meta = src.metadata().await?;
    if !src_meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("copy: {} is not a regular file", from.display()),
        ));
    }
    let mode = src_meta.mode() & 0o7777;
    // Opened without O_TRUNC, so copying a file onto itself is caught before
    // anything is lost.
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(mode)
        .open(to)
        .await?;
    let dst_meta = dst.metadata().await?;
    if (dst_meta.dev(), dst_meta.ino()) == (src_meta.dev(), src_meta.ino()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("copy: {} and {} are the same file", from.display(), to.display()),
        ));
    }
    dst.set_len(0).await?;
    let mut buf = Vec::with_capacity(COPY_CHUNK);
    let mut pos = 0u64;
    loop {
        buf.clear();
        let (res, back) = src.read_at(buf, pos).await;
        buf = back;
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let (res, back) = dst.write_all_at(buf, pos).await;
        buf = back;
        res?;
        pos += buf.len() as u64;
    }
    src.close().await?;
    let dst = dst
        .into_std()
        .map_err(|_| io::Error::other("copy: the destination is still in use"))?;
    let permissions = std::os::unix::fs::PermissionsExt::from_mode(mode);
    blocking(move || dst.set_permissions(permissions)).await?;
    Ok(pos)
}

/// Removes a file (`IORING_OP_UNLINKAT`).
///
/// # Errors
///
/// `NotFound`, `IsADirectory`, …
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    path_op(PathOp::Unlink {
        path: cpath(path.as_ref())?,
        flags: 0,
    })
    .await
}

/// Removes an empty directory (`IORING_OP_UNLINKAT` with `AT_REMOVEDIR`).
///
/// # Errors
///
/// `NotFound`, `DirectoryNotEmpty`, …
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    path_op(PathOp::Unlink {
        path: cpath(path.as_ref())?,
        flags: libc::AT_REMOVEDIR,
    })
    .await
}

/// Renames `from` to `to`, replacing `to` if it exists (`IORING_OP_RENAMEAT`).
///
/// # Errors
///
/// The `renameat2` error.
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    path_op(PathOp::Rename {
        from: cpath(from.as_ref())?,
        to: cpath(to.as_ref())?,
        flags: 0,
    })
    .await
}

/// Creates a hard link `to` for `from` (`IORING_OP_LINKAT`).
///
/// # Errors
///
/// The `linkat` error.
pub async fn hard_link(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    path_op(PathOp::HardLink {
        from: cpath(from.as_ref())?,
        to: cpath(to.as_ref())?,
    })
    .await
}

/// Creates a symbolic link at `link` pointing to `target` (`IORING_OP_SYMLINKAT`).
///
/// # Errors
///
/// The `symlinkat` error.
pub async fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    path_op(PathOp::Symlink {
        target: cpath(target.as_ref())?,
        link: cpath(link.as_ref())?,
    })
    .await
}

/// Metadata of `path`, following symlinks (`IORING_OP_STATX`).
///
/// # Errors
///
/// The `statx` error.
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    stat(path.as_ref(), 0).await
}

/// Metadata of `path` itself, not following a final symlink.
///
/// # Errors
///
/// The `statx` error.
pub async fn symlink_metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    stat(path.as_ref(), libc::AT_SYMLINK_NOFOLLOW).await
}

async fn stat(path: &Path, flags: i32) -> io::Result<Metadata> {
    let (cqe, op) = submit_op(Statx::path(AtDir::Cwd, cpath(path)?, flags))?.await;
    cqe_result(&cqe)?;
    Ok(Metadata::from_statx(op.into_statx()))
}

/// The absolute, symlink-free form of `path`. io_uring has no op for this: it
/// runs `realpath` on the blocking pool.
///
/// # Errors
///
/// The `realpath` error.
pub async fn canonicalize(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let path = path.as_ref().to_path_buf();
    blocking(move || std::fs::canonicalize(path)).await
}
