//! `openat2(dirfd, path, how)`: an open whose path resolution the caller
//! restricts (`RESOLVE_*`), e.g. never leaving the directory `dirfd` names
//! (`RESOLVE_BENEATH`). io_uring opcode `IORING_OP_OPENAT2` (Linux 5.6); the
//! blocking form is the `openat2(2)` system call, and where that is missing
//! too (`ENOSYS`: an old kernel, or a seccomp filter that does not know it) a
//! component-by-component walk that is stricter than the kernel (see
//! [`OpenAt2`]).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt as _;

use super::fs::{Dir, adopt_fd};
use super::{Op, cqe_res, op_any};
use crate::abi;
use crate::cqe::Cqe;
use crate::sqe::Sqe;

/// `openat2(dirfd, path, &how, sizeof how)` with `O_CLOEXEC`: its result is a new fd.
///
/// The SQE is `fd = dirfd`, `addr = path`, `addr2 = &how`, `len = sizeof how`
/// (`io_uring/openclose.c`: `io_openat2_prep`). The op keeps the directory's
/// fd open until its completion, so its number cannot be reused meanwhile.
///
/// # The fallback walk
///
/// When the `openat2` system call is missing (`ENOSYS`) and `resolve` has
/// `RESOLVE_BENEATH`, [`Op::run_blocking`] opens the path one component at a
/// time, each with `O_NOFOLLOW`, from `dirfd`. It refuses more than the kernel
/// would, never less: an absolute path or any `..` component fails with
/// `EXDEV` (even one that would stay beneath), any symlink with `ELOOP` (even
/// one that would stay beneath), a component that is not a directory with
/// `ENOTDIR`, and with `RESOLVE_NO_XDEV` any component on another device
/// with `EXDEV`. Resolve flags it cannot honour (`RESOLVE_IN_ROOT`,
/// `RESOLVE_CACHED`), or a request without `RESOLVE_BENEATH`, keep `ENOSYS`.
#[derive(Debug)]
pub struct OpenAt2 {
    dir: Dir,
    path: CString,
    how: abi::open_how,
    opened: Option<OwnedFd>,
}

impl OpenAt2 {
    /// Opens `path` relative to `dir` with
    /// open flags `flags` (`O_CLOEXEC` is always added), permission bits
    /// `mode` for a created file (dropped unless `flags` has `O_CREAT` or
    /// `O_TMPFILE`: the kernel refuses a mode otherwise) and resolve flags
    /// `resolve` (`abi::RESOLVE_*`).
    pub fn new(dir: Dir, path: CString, flags: i32, mode: u32, resolve: u64) -> Self {
        let flags = flags | libc::O_CLOEXEC;
        let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
        OpenAt2 {
            dir,
            path,
            how: abi::open_how {
                // Through u32: open flags are a bit set, never sign-extended.
                flags: u64::from(flags as u32),
                mode: if creates { u64::from(mode) } else { 0 },
                resolve,
            },
            opened: None,
        }
    }

    /// The `open_how` the op passes.
    pub fn how(&self) -> abi::open_how {
        self.how
    }

    /// The fd a successful open created; `None` before completion or after a
    /// failure. An op dropped without this closes the fd.
    pub fn into_fd(mut self) -> Option<OwnedFd> {
        self.opened.take()
    }

    fn dirfd(&self) -> RawFd {
        self.dir.raw()
    }
}

// SAFETY: the SQE points at `path`'s heap bytes and at `how`, both owned by
// the op (`how` lives in the boxed op, which does not move while in flight),
// and names `dir`'s fd, which the op keeps open.
unsafe impl Op for OpenAt2 {
    unsafe fn complete(&mut self, cqe: &Cqe) {
        // SAFETY: `cqe` is this open's final completion (the trait's contract):
        // a non-negative `res` is the fd the kernel created for it.
        self.opened = unsafe { adopt_fd(cqe.res) };
    }
    fn prepare(&mut self) -> Sqe {
        Sqe::from_raw(abi::io_uring_sqe {
            opcode: abi::IORING_OP_OPENAT2,
            fd: self.dirfd(),
            addr_or_splice_off_in: self.path.as_ptr() as u64,
            len: size_of::<abi::open_how>() as u32,
            off_or_addr2: &self.how as *const abi::open_how as u64,
            ..Default::default()
        })
    }
    fn run_blocking(&mut self) -> i32 {
        // SAFETY: `path` is a valid C string and `how` an `open_how` of the
        // size passed; both are owned by the op and outlive the call.
        let ret = unsafe {
            libc::syscall(
                abi::SYS_OPENAT2,
                self.dirfd(),
                self.path.as_ptr(),
                &self.how as *const abi::open_how,
                size_of::<abi::open_how>(),
            )
        };
        let res = cqe_res(ret);
        if res == -libc::ENOSYS && self.how.resolve & abi::RESOLVE_BENEATH != 0 {
            return match open_beneath_by_walk(self.dirfd(), &self.path, &self.how) {
                Ok(fd) => {
                    let raw = fd.as_raw_fd();
                    self.opened = Some(fd);
                    raw
                }
                Err(errno) => -errno,
            };
        }
        // SAFETY: a non-negative `res` is the fd `openat2` just created.
        self.opened = unsafe { adopt_fd(res) };
        res
    }
    op_any!();
}

/// The resolve flags the walk can honour (by refusing every symlink).
const WALK_RESOLVE: u64 =
    abi::RESOLVE_BENEATH | abi::RESOLVE_NO_MAGICLINKS | abi::RESOLVE_NO_SYMLINKS | abi::RESOLVE_NO_XDEV;

/// `openat(dir, name, flags | O_CLOEXEC, mode)` as an owned fd, or the errno.
fn openat(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    // SAFETY: `name` is a valid C string; the mode is passed as the variadic arg.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: `openat` just returned `fd` as a new fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `(is a symlink, is a directory, device)` of an open fd (an `O_PATH` one too).
fn kind(fd: OwnedFd) -> Result<(File, bool, bool, u64), i32> {
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let ty = meta.file_type();
    Ok((file, ty.is_symlink(), ty.is_dir(), meta.dev()))
}

/// The userspace form of `openat2` with `RESOLVE_BENEATH` (see [`OpenAt2`]):
/// every component opened with `O_NOFOLLOW`, `..`, absolute paths and
/// symlinks refused. Returns the new fd or an errno.
fn open_beneath_by_walk(dirfd: RawFd, path: &CStr, how: &abi::open_how) -> Result<OwnedFd, i32> {
    if how.resolve & !WALK_RESOLVE != 0 || how.resolve & abi::RESOLVE_BENEATH == 0 {
        return Err(libc::ENOSYS);
    }
    let flags = i32::try_from(how.flags).map_err(|_| libc::EINVAL)?;
    let mode = u32::try_from(how.mode).map_err(|_| libc::EINVAL)?;
    let bytes = path.to_bytes();
    if bytes.is_empty() {
        return Err(libc::ENOENT);
    }
    if bytes[0] == b'/' {
        return Err(libc::EXDEV);
    }
    let parts: Vec<&[u8]> = bytes
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if parts.iter().any(|p| *p == b"..") {
        return Err(libc::EXDEV);
    }
    let no_xdev = how.resolve & abi::RESOLVE_NO_XDEV != 0;
    let root_dev = if no_xdev {
        let dot = openat(dirfd, c".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Some(kind(dot)?.3)
    } else {
        None
    };
    let (last, parents): (&[u8], &[&[u8]]) = match parts.split_last() {
        Some((last, parents)) => (last, parents),
        None => (b".", &[]),
    };
    let mut cur: Option<File> = None;
    for part in parents {
        let name = CString::new(*part).map_err(|_| libc::EINVAL)?;
        let at = cur.as_ref().map_or(dirfd, AsRawFd::as_raw_fd);
        let fd = openat(at, &name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let (dir, is_link, is_dir, dev) = kind(fd)?;
        if is_link {
            return Err(libc::ELOOP);
        }
        if !is_dir {
            return Err(libc::ENOTDIR);
        }
        if root_dev.is_some_and(|root| root != dev) {
            return Err(libc::EXDEV);
        }
        cur = Some(dir);
    }
    let name = CString::new(last).map_err(|_| libc::EINVAL)?;
    let at = cur.as_ref().map_or(dirfd, AsRawFd::as_raw_fd);
    let mut final_flags = flags | libc::O_NOFOLLOW;
    if bytes.ends_with(b"/") {
        final_flags |= libc::O_DIRECTORY;
    }
    let fd = openat(at, &name, final_flags, mode)?;
    // `O_PATH | O_NOFOLLOW` opens a symlink itself, and a mount point needs its device.
    if flags & libc::O_PATH != 0 || no_xdev {
        let (file, is_link, _, dev) = kind(fd)?;
        if is_link {
            return Err(libc::ELOOP);
        }
        if root_dev.is_some_and(|root| root != dev) {
            return Err(libc::EXDEV);
        }
        return Ok(OwnedFd::from(file));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::os::fd::AsRawFd;

    use super::*;

    fn beneath() -> abi::open_how {
        abi::open_how {
            flags: libc::O_RDONLY as u64,
            mode: 0,
            resolve: abi::RESOLVE_BENEATH | abi::RESOLVE_NO_MAGICLINKS,
        }
    }

    /// A directory `root` with `sub/file`, `top`, and symlinks: `out` to `/etc`,
    /// `up` to `..`, `inside` to `sub/file`; plus `outside` next to `root`.
    fn tree(tag: &str) -> (std::path::PathBuf, File) {
        let base = std::env::temp_dir().join(format!("spargio-openat2-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), b"beneath").unwrap();
        std::fs::write(root.join("top"), b"top").unwrap();
        std::fs::write(base.join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("sub/file", root.join("inside")).unwrap();
        let dir = File::open(&root).unwrap();
        (base, dir)
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    #[cfg_attr(miri, ignore)] // real files and system calls
    fn the_walk_opens_files_beneath_and_refuses_every_escape() {
        let (base, dir) = tree("walk");
        let d = dir.as_raw_fd();
        let how = beneath();
        let open = |p: &CStr| open_beneath_by_walk(d, p, &how);
        assert_eq!(read_all(open(c"sub/file").unwrap()), "beneath");
        assert_eq!(read_all(open(c"./sub/./file").unwrap()), "beneath");
        assert_eq!(read_all(open(c"top").unwrap()), "top");
        assert_eq!(open(c"/etc/passwd").unwrap_err(), libc::EXDEV);
        assert_eq!(open(c"../outside").unwrap_err(), libc::EXDEV);
        assert_eq!(open(c"sub/../../outside").unwrap_err(), libc::EXDEV);
        assert_eq!(open(c"out/passwd").unwrap_err(), libc::ELOOP);
        assert_eq!(open(c"out").unwrap_err(), libc::ELOOP);
        assert_eq!(open(c"up/outside").unwrap_err(), libc::ELOOP);
        // Stricter than the kernel: a symlink that stays beneath is refused too.
        assert_eq!(open(c"inside").unwrap_err(), libc::ELOOP);
        assert_eq!(open(c"top/x").unwrap_err(), libc::ENOTDIR);
        assert_eq!(open(c"missing").unwrap_err(), libc::ENOENT);
        assert_eq!(open(c"").unwrap_err(), libc::ENOENT);
        let o_path = abi::open_how {
            flags: (libc::O_PATH | libc::O_NOFOLLOW) as u64,
            ..how
        };
        assert_eq!(open_beneath_by_walk(d, c"out", &o_path).unwrap_err(), libc::ELOOP);
        let in_root = abi::open_how {
            resolve: abi::RESOLVE_IN_ROOT,
            ..how
        };
        assert_eq!(
            open_beneath_by_walk(d, c"top", &in_root).unwrap_err(),
            libc::ENOSYS
        );
        // The directory itself.
        assert!(open(c".").is_ok());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // real files and system calls
    fn the_syscall_form_refuses_escapes_like_the_walk() {
        let (base, dir) = tree("syscall");
        let dir = std::sync::Arc::new(OwnedFd::from(dir));
        let run = |path: &CStr, resolve: u64| {
            let mut op = OpenAt2::new(
                Dir::Fd(dir.clone()),
                path.to_owned(),
                libc::O_RDONLY,
                0o644,
                resolve,
            );
            assert_eq!(op.how().mode, 0, "a mode without O_CREAT is dropped");
            let res = op.run_blocking();
            if res >= 0 {
                Ok(read_all(op.into_fd().unwrap()))
            } else {
                Err(-res)
            }
        };
        let beneath = abi::RESOLVE_BENEATH | abi::RESOLVE_NO_MAGICLINKS;
        assert_eq!(run(c"sub/file", beneath).unwrap(), "beneath");
        assert_eq!(run(c"inside", beneath).unwrap(), "beneath");
        assert_eq!(
            run(c"inside", beneath | abi::RESOLVE_NO_SYMLINKS).unwrap_err(),
            libc::ELOOP
        );
        for escape in [c"out/passwd", c"../outside", c"up/outside", c"/etc/passwd"] {
            assert_eq!(run(escape, beneath).unwrap_err(), libc::EXDEV, "{escape:?}");
        }
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // real files and system calls
    fn the_sqe_carries_dirfd_path_and_how() {
        let dir = std::sync::Arc::new(OwnedFd::from(File::open("/").unwrap()));
        let raw = dir.as_raw_fd();
        let mut op = OpenAt2::new(
            Dir::Fd(dir),
            c"etc".to_owned(),
            libc::O_RDONLY,
            0,
            abi::RESOLVE_BENEATH,
        );
        let sqe = *op.prepare().as_raw();
        assert_eq!(sqe.opcode, abi::IORING_OP_OPENAT2);
        assert_eq!(sqe.fd, raw);
        assert_eq!(sqe.len as usize, abi::OPEN_HOW_SIZE_VER0);
        assert_eq!(sqe.off_or_addr2, &op.how as *const abi::open_how as u64);
        assert_eq!(sqe.addr_or_splice_off_in, op.path.as_ptr() as u64);
        assert_eq!(
            (
                sqe.op_flags,
                sqe.buf_index_or_group,
                sqe.splice_fd_in_or_file_index
            ),
            (0, 0, 0)
        );
        assert_eq!(op.how().flags & libc::O_CLOEXEC as u64, libc::O_CLOEXEC as u64);
    }
}
