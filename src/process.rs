//! Child processes: [`Command`] mirrors `std::process::Command`; a spawned
//! [`Child`] is awaited through a pidfd on the ring, and its piped stdio are
//! spargio streams with the owned-buffer API of the socket types.
//!
//! # How it works
//!
//! - **Spawning** is `std::process::Command::spawn` (std does the `fork`/
//!   `exec`, the close-on-exec hygiene and the reset of the signal mask and
//!   `SIGPIPE` in the child); spargio then opens a pidfd for the child and
//!   takes over its pipe fds. The spawn itself is a blocking system call
//!   (short: `vfork`-like, until the `exec`).
//! - **Waiting** is `IORING_OP_WAITID` (`P_PIDFD`, `WEXITED | WNOWAIT`)
//!   where the kernel has it (6.7, probed at run time); elsewhere a poll of
//!   the pidfd (`IORING_OP_POLL_ADD`, or epoll readiness on the Queue
//!   backend), which turns readable when the child exits. Either way the
//!   child is then reaped with `waitid(P_PIDFD, WNOHANG)`, so a cancelled
//!   wait loses no exit status. A pidfd names
//!   this very child even if its pid is reused, so [`Child::kill`] can never
//!   hit another process.
//! - **Pipes** stay in blocking mode (io_uring waits for a blocking pipe to
//!   be ready; on an `O_NONBLOCK` one it would fail with `EAGAIN`); on the
//!   Queue backend a pipe op waits for readiness in epoll and then makes one
//!   call that cannot block (a write of at most `PIPE_BUF` bytes).
//! - **No zombies**: a [`Child`] dropped before it was reaped is reaped in
//!   the background, by a task on the current runtime or, outside one, by a
//!   thread that waits for it. With [`Command::kill_on_drop`] it is killed
//!   first. A runtime that shuts down drops its reaping tasks: a child
//!   still running then is reaped only when this process exits.
//!
//! ```
//! use spargio::process::{Command, Stdio};
//!
//! spargio::run(|_| async {
//!     let out = Command::new("sh").args(["-c", "echo hello; exit 3"]).output().await.unwrap();
//!     assert_eq!(out.stdout, b"hello\n");
//!     assert_eq!(out.status.code(), Some(3));
//!
//!     let mut child = Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
//!     let stdin = child.stdin.take().unwrap();
//!     let (res, _) = stdin.write_all(b"echo".to_vec()).await;
//!     res.unwrap();
//!     drop(stdin); // EOF for cat
//!     let got = child.stdout.take().unwrap().read_to_end(Vec::new()).await.unwrap();
//!     assert_eq!(got, b"echo");
//!     assert!(child.wait().await.unwrap().success());
//! })
//! .unwrap();
//! ```

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;

pub use std::process::{ExitStatus, Output, Stdio};

use spargio_sys::op::fs::SharedFd;
use spargio_sys::op::pipe::{PipeRead, PipeWrite, PollOnce, WaitExited};
use spargio_sys::process as sys;

use crate::RuntimeHandle;
use crate::io::{BufResult, IoBuf, IoBufMut, cqe_result, submit_current};

/// A builder for a child process, as `std::process::Command`, whose
/// [`spawn`](Command::spawn) gives a [`Child`] to await.
#[derive(Debug)]
pub struct Command {
    std: std::process::Command,
    kill_on_drop: bool,
    stdin_set: bool,
    stdout_set: bool,
    stderr_set: bool,
}

impl Command {
    /// A command that runs `program` (looked up in `PATH` when it has no `/`).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            std: std::process::Command::new(program),
            kill_on_drop: false,
            stdin_set: false,
            stdout_set: false,
            stderr_set: false,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets environment variables of the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (plus what `env` adds).
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// The child's standard input: [`Stdio::piped`] (then [`Child::stdin`]),
    /// [`Stdio::null`] or [`Stdio::inherit`] (the default for `spawn` and
    /// `status`).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdin(cfg);
        self.stdin_set = true;
        self
    }

    /// The child's standard output, as [`Command::stdin`].
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdout(cfg);
        self.stdout_set = true;
        self
    }

    /// The child's standard error, as [`Command::stdin`].
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stderr(cfg);
        self.stderr_set = true;
        self
    }

    /// Kills (`SIGKILL`) the child when its [`Child`] is dropped before the
    /// child was reaped. Off by default: a dropped child keeps running (and
    /// is reaped in the background when it exits).
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Command {
        self.kill_on_drop = kill;
        self
    }

    /// The `std` command underneath, for settings this type does not mirror
    /// (`std::os::unix::process::CommandExt`: `uid`, `process_group`, …).
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// Starts the child.
    ///
    /// # Errors
    ///
    /// The spawn's error (`NotFound` for a missing program, …); the error of
    /// `pidfd_open` (Linux before 5.3: `ENOSYS`).
    pub fn spawn(&mut self) -> io::Result<Child> {
        let mut child = self.std.spawn()?;
        let pid = child.id();
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd nothing could wait for it: stop and reap it now.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let stdin = child.stdin.take().map(|s| ChildStdin {
            fd: Arc::new(OwnedFd::from(s)),
        });
        let stdout = child.stdout.take().map(|s| ChildStdout {
            fd: Arc::new(OwnedFd::from(s)),
        });
        let stderr = child.stderr.take().map(|s| ChildStderr {
            fd: Arc::new(OwnedFd::from(s)),
        });
        // std's `Child` neither waits nor kills on drop; the pidfd takes over.
        drop(child);
        Ok(Child {
            pid,
            pidfd: Arc::new(pidfd),
            status: None,
            kill_on_drop: self.kill_on_drop,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Runs the child to its end and returns its exit status. Stdio not set
    /// otherwise is inherited.
    ///
    /// # Errors
    ///
    /// As [`Command::spawn`] and [`Child::wait`].
    pub async fn status(&mut self) -> io::Result<ExitStatus> {
        let mut child = self.spawn()?;
        // Pipes the caller asked for are closed: nobody would read them.
        child.stdin.take();
        child.stdout.take();
        child.stderr.take();
        child.wait().await
    }

    /// Runs the child to its end, collecting its standard output and error.
    /// Unless set otherwise, stdout and stderr are piped and stdin is null.
    ///
    /// # Errors
    ///
    /// As [`Command::spawn`], [`Child::wait`], and the pipe reads.
    pub async fn output(&mut self) -> io::Result<Output> {
        if !self.stdin_set {
            self.std.stdin(Stdio::null());
        }
        if !self.stdout_set {
            self.std.stdout(Stdio::piped());
        }
        if !self.stderr_set {
            self.std.stderr(Stdio::piped());
        }
        let child = self.spawn();
        // Restore the caller's settings for the next spawn.
        if !self.stdin_set {
            self.std.stdin(Stdio::inherit());
        }
        if !self.stdout_set {
            self.std.stdout(Stdio::inherit());
        }
        if !self.stderr_set {
            self.std.stderr(Stdio::inherit());
        }
        child?.wait_with_output().await
    }
}

/// A spawned child process, from [`Command::spawn`].
///
/// Dropping it does not wait for the child: see [the module docs](self)
/// (background reaping, [`Command::kill_on_drop`]).
#[derive(Debug)]
pub struct Child {
    pid: u32,
    pidfd: SharedFd,
    status: Option<ExitStatus>,
    kill_on_drop: bool,
    /// The child's standard input, when piped.
    pub stdin: Option<ChildStdin>,
    /// The child's standard output, when piped.
    pub stdout: Option<ChildStdout>,
    /// The child's standard error, when piped.
    pub stderr: Option<ChildStderr>,
}

impl Child {
    /// The child's process id, until it has been reaped (then `None`: the
    /// number may belong to another process by now).
    pub fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid)
    }

    /// The child's exit status if it has exited (reaping it), without waiting.
    ///
    /// # Errors
    ///
    /// The error of `waitid`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let reaped = sys::try_reap(self.pidfd.as_fd())?.map(ExitStatus::from_raw);
        self.status = reaped;
        Ok(reaped)
    }

    /// Waits for the child to exit and reaps it. Closes the child's stdin
    /// first (a child reading it would otherwise wait for us forever).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped `wait` reaps nothing, and the next call (or the
    /// background reaper) still finds the child.
    ///
    /// # Errors
    ///
    /// The error of `waitid`; an error outside a spargio runtime task, or
    /// after shutdown began.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            wait_exited(&self.pidfd).await?;
        }
    }

    /// Waits for the child while reading all of its piped stdout and stderr
    /// (concurrently, so a child that fills one pipe cannot stall).
    ///
    /// # Errors
    ///
    /// As [`Child::wait`], and the pipe reads.
    pub async fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let stdout = self.stdout.take();
        let stderr = self.stderr.take();
        let read_out = async move {
            match stdout {
                Some(s) => s.read_to_end(Vec::new()).await,
                None => Ok(Vec::new()),
            }
        };
        let read_err = async move {
            match stderr {
                Some(s) => s.read_to_end(Vec::new()).await,
                None => Ok(Vec::new()),
            }
        };
        let (out, err) = join2(read_out, read_err).await;
        let status = self.wait().await?;
        Ok(Output {
            status,
            stdout: out?,
            stderr: err?,
        })
    }

    /// Sends `SIGKILL` to the child without waiting for it to exit. Nothing
    /// happens once it has been reaped.
    ///
    /// # Errors
    ///
    /// The error of `pidfd_send_signal` (other than the child having exited).
    pub fn start_kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            res => res,
        }
    }

    /// Kills the child (`SIGKILL`) and waits for it to exit.
    ///
    /// # Errors
    ///
    /// As [`Child::start_kill`] and [`Child::wait`].
    pub async fn kill(&mut self) -> io::Result<()> {
        self.start_kill()?;
        self.wait().await.map(drop)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if self.kill_on_drop {
            let _ = self.start_kill();
        }
        if let Ok(Some(_)) = self.try_wait() {
            return;
        }
        reap_in_background(self.pidfd.clone());
    }
}

/// Reaps a child nobody waits for: a task on the current runtime, or a
/// thread that blocks in `waitid` outside one.
fn reap_in_background(pidfd: SharedFd) {
    if let Some(handle) = RuntimeHandle::current() {
        let fd = pidfd.clone();
        let task = async move {
            loop {
                match sys::try_reap(fd.as_fd()) {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(_) => return,
                }
                if wait_exited(&fd).await.is_err() {
                    return;
                }
            }
        };
        if handle.spawn_stealable(task).is_ok() {
            return;
        }
    }
    let spawned = std::thread::Builder::new()
        .name("spargio-reaper".into())
        .spawn(move || {
            let _ = sys::reap_blocking(pidfd.as_fd());
        });
    // No thread either (out of threads): the child stays a zombie until this
    // process exits, which is all that is left to do.
    drop(spawned);
}

/// Waits until the child `pidfd` names has exited (without reaping it): with
/// `IORING_OP_WAITID` where the kernel has it (6.7) and the shard runs on
/// io_uring, else by polling the pidfd.
async fn wait_exited(pidfd: &SharedFd) -> io::Result<()> {
    let on_ring = RuntimeHandle::current().is_some_and(|h| h.backend() == crate::Backend::IoUring)
        && spargio_sys::probe::Features::detect()
            .is_ok_and(|f| f.supports(spargio_sys::abi::IORING_OP_WAITID));
    if !on_ring {
        return wait_readable(pidfd).await;
    }
    let fut = submit_current(WaitExited::new(pidfd.clone())).map_err(|(e, _)| e)?;
    let (cqe, _) = fut.await;
    match cqe_result(&cqe) {
        // A simulated ring (or a kernel that refuses the op after all): poll.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => wait_readable(pidfd).await,
        res => res.map(drop),
    }
}

/// Waits until `fd` polls readable, on the calling shard's ring.
async fn wait_readable(fd: &SharedFd) -> io::Result<()> {
    let fut = submit_current(PollOnce::readable(fd.clone())).map_err(|(e, _)| e)?;
    let (cqe, _) = fut.await;
    cqe_result(&cqe).map(drop)
}

/// Runs two futures to completion concurrently on the calling task.
async fn join2<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.expect("set above"), rb.expect("set above"))
}

async fn pipe_read<B: IoBufMut>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    if buf.bytes_total() == 0 {
        return (Ok(0), buf);
    }
    match submit_current(PipeRead::new(fd.clone(), buf)) {
        Err((e, op)) => (Err(e), op.into_buf()),
        Ok(fut) => {
            let (cqe, op) = fut.await;
            (cqe_result(&cqe), op.into_buf())
        }
    }
}

async fn read_to_end(fd: &SharedFd, mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    const CHUNK: usize = 64 * 1024;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        chunk.clear();
        let (res, back) = pipe_read(fd, chunk).await;
        chunk = back;
        match res {
            Ok(0) => return Ok(out),
            Ok(_) => out.extend_from_slice(&chunk),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The writing end of a child's piped standard input. Dropping it closes
/// the pipe: the child reads end of file.
#[derive(Debug)]
pub struct ChildStdin {
    fd: SharedFd,
}

impl ChildStdin {
    /// Writes `buf`'s initialized bytes (the count may be short) and gives
    /// the buffer back. An empty buffer writes nothing.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped write may have written part of `buf`.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` once the child closed its stdin (or exited); an error
    /// outside a spargio runtime task.
    pub async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        if buf.bytes_init() == 0 {
            return (Ok(0), buf);
        }
        match submit_current(PipeWrite::new(self.fd.clone(), buf)) {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok(fut) => {
                let (cqe, op) = fut.await;
                (cqe_result(&cqe), op.into_buf())
            }
        }
    }

    /// Writes all of `buf`'s initialized bytes, looping over short writes.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`ChildStdin::write`].
    ///
    /// # Errors
    ///
    /// As [`ChildStdin::write`]; `WriteZero` if a write took nothing.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        crate::io::write_all_with(buf, |rest, _| self.write(rest)).await
    }
}

macro_rules! reader {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The reading end of a child's piped ", $what, ".")]
        #[derive(Debug)]
        pub struct $name {
            fd: SharedFd,
        }

        impl $name {
            /// Reads into `buf`, from its start up to its capacity, and gives
            /// it back with the count; `Ok(0)` at end of file (the child
            /// closed it or exited) or for a buffer without capacity.
            ///
            /// # Cancel safety
            ///
            /// Not cancel safe: bytes a dropped read took are lost with its
            /// buffer.
            ///
            /// # Errors
            ///
            /// The read's error; an error outside a spargio runtime task.
            pub async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
                pipe_read(&self.fd, buf).await
            }

            /// Reads until end of file, appending to `out`, and returns it.
            ///
            /// # Errors
            ///
            /// As [`read`](Self::read).
            pub async fn read_to_end(self, out: Vec<u8>) -> io::Result<Vec<u8>> {
                read_to_end(&self.fd, out).await
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.as_raw_fd()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }
    };
}

reader!(ChildStdout, "standard output");
reader!(ChildStderr, "standard error");

impl AsRawFd for ChildStdin {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for ChildStdin {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
