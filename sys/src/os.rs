//! Small safe wrappers over OS calls the runtime needs and `std` lacks.
#![allow(unsafe_code)]

use std::io;

/// Number of CPUs configured on this machine (`_SC_NPROCESSORS_CONF`).
pub fn configured_cpus() -> usize {
    // SAFETY: sysconf reads a constant; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Pins the calling thread to one CPU.
///
/// # Errors
///
/// `InvalidInput` for a CPU index this machine does not have; the `errno` of
/// `sched_setaffinity` otherwise (e.g. `EINVAL` when the CPU is offline or
/// outside the process's cpuset).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= configured_cpus() || cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no CPU {cpu} on this machine"),
        ));
    }
    // SAFETY: `cpu_set_t` is plain data for which all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` was checked above, so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = this thread.
    let ret = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if ret != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// CPU time (user + system) this process has used, from `getrusage`.
pub fn process_cpu_time() -> std::time::Duration {
    // SAFETY: `rusage` is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, exclusively borrowed rusage for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Number of open file descriptors of this process (entries of `/proc/self/fd`).
///
/// # Errors
///
/// The error of reading `/proc/self/fd`.
pub fn open_fd_count() -> io::Result<usize> {
    // The directory handle itself is one of the entries while we read it.
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}

/// The soft and hard `RLIMIT_NOFILE` limits of this process (`getrlimit`).
///
/// # Errors
///
/// The `getrlimit` errno.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    // SAFETY: `rlimit` is plain data; all-zero is a valid value.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is a valid, exclusively borrowed rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((rl.rlim_cur, rl.rlim_max))
}

/// Sets the soft `RLIMIT_NOFILE` limit of this process (the hard limit stays).
/// Affects every thread; fds already open stay open.
///
/// # Errors
///
/// `EINVAL` for a soft limit above the hard one; the other `setrlimit` errnos.
pub fn set_nofile_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let rl = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `rl` is a valid rlimit for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores the default disposition of `SIGPIPE` (terminate the process),
/// which the Rust runtime sets to "ignore" at start-up. Tests use it to show
/// that no send raises `SIGPIPE`.
///
/// # Errors
///
/// The `sigaction` errno.
pub fn set_sigpipe_default() -> io::Result<()> {
    // SAFETY: `sigaction` is plain data; all-zero is a valid value (empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = libc::SIG_DFL;
    // SAFETY: installs the default disposition (no handler code runs in this
    // process); `action` is valid and the old action is not requested.
    if unsafe { libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many times this process image has been forked into the calling
/// process: 0 in the process that first called this, 1 in its fork child,
/// and so on. A value saved when a runtime is built tells, with one atomic
/// load, whether the code now runs in a fork child, where the runtime's
/// threads do not exist and its ring mappings (`MADV_DONTFORK`) are gone.
///
/// The first call registers a `pthread_atfork` child handler; forks before
/// that call are not counted, so call it before anything forks (building a
/// runtime does).
pub fn fork_generation() -> u64 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler with no memory arguments; the handler
        // only increments an atomic, which is async-signal-safe, as a fork
        // child handler must be.
        let ret = unsafe { libc::pthread_atfork(None, None, Some(count_fork)) };
        assert_eq!(ret, 0, "pthread_atfork failed: {ret}");
    });
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Forks seen by [`fork_generation`]'s handler in this process's ancestry.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn count_fork() {
    // Runs in the child, in the forking thread, before `fork` returns there:
    // that thread's later loads see it without further ordering.
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Test support: forks, runs `f` in the child (without exec) and returns the
/// child's exit code (`f`'s result; 101 if it panicked; 128 + the signal if
/// a signal ended it).
///
/// The child has only the calling thread: every other thread of the process
/// is gone, with whatever locks it held, so code in `f` that waits on such a
/// lock (an output stream another thread was printing to, say) hangs. It
/// never sees memory those threads were writing as anything but a frozen
/// state, so this is a liveness hazard, not a memory-safety one. Meant for
/// tests of fork-without-exec behaviour; a program that forks should exec.
///
/// # Errors
///
/// The `errno` of `fork` or `waitpid`.
pub fn run_in_forked_child(f: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: `fork` takes no arguments; the child runs only `f` and then
    // `_exit`s without running the parent's destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child at once, as a fork child without exec must.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(128 + libc::WTERMSIG(status))
    }
}

/// The credentials the kernel checks for file system access and for most
/// other permission checks: effective user and group ids and the
/// supplementary groups of the calling thread.
///
/// An SQPOLL ring's submission thread acts with the credentials the ring was
/// created with, whatever the submitter's are later; a ring compares them
/// with [`Credentials::matches_current`] before it lets the kernel see more
/// entries (see [`Ring`](crate::Ring)). The fs ids (`setfsuid`) are not
/// compared: they follow the effective ids through `setuid`/`seteuid`, and
/// only a per-thread `setfsuid` call moves them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    euid: u32,
    egid: u32,
    groups: Vec<u32>,
}

/// Most supplementary groups a process can have (`NGROUPS_MAX` on Linux).
const NGROUPS_MAX: usize = 65_536;

impl Credentials {
    /// The calling thread's credentials (`geteuid`, `getegid`, `getgroups`).
    ///
    /// # Errors
    ///
    /// The `getgroups` errno.
    pub fn current() -> io::Result<Credentials> {
        loop {
            // SAFETY: a null list with size 0 only asks for the count.
            let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            let mut groups = vec![0; n.min(NGROUPS_MAX)];
            match read_groups(&mut groups) {
                Ok(got) => {
                    groups.truncate(got);
                    groups.sort_unstable();
                    return Ok(Credentials {
                        euid: effective_uid(),
                        egid: effective_gid(),
                        groups,
                    });
                }
                // The list grew between the two calls: ask again.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// These credentials with another effective user id (tests that need a
    /// change of credentials without making one).
    #[cfg(test)]
    pub(crate) fn with_euid(mut self, euid: u32) -> Credentials {
        self.euid = euid;
        self
    }

    /// The effective user id.
    pub fn euid(&self) -> u32 {
        self.euid
    }

    /// The effective group id.
    pub fn egid(&self) -> u32 {
        self.egid
    }

    /// The supplementary group ids, sorted.
    pub fn groups(&self) -> &[u32] {
        &self.groups
    }

    /// True when the calling thread's credentials are still these. Three
    /// system calls and no allocation for up to 32 supplementary groups;
    /// false when they cannot be read.
    pub fn matches_current(&self) -> bool {
        if effective_uid() != self.euid || effective_gid() != self.egid {
            return false;
        }
        // One slot more than we expect: a longer list does not fit and fails.
        let want = self.groups.len() + 1;
        let mut small = [0u32; 33];
        let mut large;
        let buf = if want <= small.len() {
            &mut small[..want]
        } else {
            large = vec![0; want];
            &mut large[..]
        };
        match read_groups(buf) {
            Ok(n) if n == self.groups.len() => {
                let got = &mut buf[..n];
                got.sort_unstable();
                got == &self.groups[..]
            }
            _ => false,
        }
    }
}

/// `geteuid()`.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// `getegid()`.
pub fn effective_gid() -> u32 {
    // SAFETY: getegid takes no arguments and cannot fail.
    unsafe { libc::getegid() }
}

/// `getgroups(buf.len(), buf)`: how many ids were written. `EINVAL` when the
/// list does not fit.
fn read_groups(buf: &mut [u32]) -> io::Result<usize> {
    let len = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `buf` is valid for writes of `len` gid_t (u32) entries.
    let n = unsafe { libc::getgroups(len, buf.as_mut_ptr()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Drops the process's privileges for good: clears the supplementary groups
/// (`setgroups(0)`), then sets the real, effective and saved group id
/// (`setgid`) and user id (`setuid`), in that order (after `setuid` the
/// group calls would no longer be allowed). glibc applies each call to every
/// thread of the process.
///
/// For tests and programs that start as root and must show what an
/// unprivileged process can do; it cannot be undone.
///
/// # Errors
///
/// The errno of the first call that fails (`EPERM` without `CAP_SETGID` /
/// `CAP_SETUID`); the calls before it stay in effect.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a null list with size 0 clears the supplementary groups.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setgid takes a plain id; no memory is passed.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setuid takes a plain id; no memory is passed.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The audit architecture of this build, as seccomp reports it
/// (`AUDIT_ARCH_X86_64`, `AUDIT_ARCH_AARCH64`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Test support: installs a seccomp filter that makes `io_uring_setup` fail
/// with `errno` (`EPERM`, `ENOSYS`) in every thread of the calling process
/// and every thread or child it starts, as Docker's default profile does.
/// Other system calls are allowed. Irreversible: call it only in a process
/// made for the purpose (a test that re-runs its binary as a child).
///
/// # Errors
///
/// `Unsupported` on architectures other than x86_64 and aarch64; the
/// `prctl(PR_SET_NO_NEW_PRIVS)` or `seccomp` errno (`EINVAL` where seccomp
/// filters are not built in).
pub fn deny_io_uring_for_test(errno: i32) -> io::Result<()> {
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = errno;
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no seccomp filter for this architecture",
        ));
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
        // Offsets in `struct seccomp_data`: nr at 0, arch at 4.
        let stmt = |code, k| libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let jump = |k, jt, jf| libc::sock_filter {
            code: JEQ_K,
            jt,
            jf,
            k,
        };
        let mut program = [
            stmt(LD_W_ABS, 4),
            jump(AUDIT_ARCH, 0, 3), // another ABI: allow
            stmt(LD_W_ABS, 0),
            jump(libc::SYS_io_uring_setup as u32, 0, 1),
            stmt(RET_K, libc::SECCOMP_RET_ERRNO | (errno as u32 & 0xffff)),
            stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        ];
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: prctl with integer arguments; it only restricts this process.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fprog` points at `program`, valid for `len` instructions for
        // the call (the kernel copies the program); TSYNC applies it to every
        // thread of the process.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &raw const fprog,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg_attr(miri, ignore)]
    fn pinning_to_a_missing_cpu_is_invalid_input() {
        let err = super::pin_current_thread(100_000).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn current_credentials_match_themselves() {
        let creds = super::Credentials::current().unwrap();
        assert_eq!(creds.euid(), super::effective_uid());
        assert!(creds.matches_current());
        let mut other = creds.clone();
        other.groups.push(u32::MAX);
        other.groups.sort_unstable();
        assert!(!other.matches_current(), "one group more");
        let mut other = creds.clone();
        other.euid = creds.euid.wrapping_add(1);
        assert!(!other.matches_current(), "another euid");
    }
}
