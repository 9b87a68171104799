//! What the running kernel supports, as one [`Features`] value.
//!
//! Four sources, because no single one tells the whole story:
//!
//! 1. `io_uring_params.features` ([`RingFeatures`]): what setup reported.
//! 2. The `IORING_REGISTER_PROBE` opcode table ([`OpTable`]): which opcodes
//!    the kernel knows. It says nothing about an opcode's flags.
//! 3. The setup flags a default [`Ring`] ended up with after dropping the ones
//!    the kernel refused.
//! 4. A one-time self-test on scratch rings ([`SelfTest`]) for what neither
//!    shows: `MSG_RING` flag passing and `CQE_SKIP`, multishot receive,
//!    setup flags one by one, ring-less `MSG_RING`, provided-buffer rings.
//!
//! [`Features::detect`] runs all of it once per process and caches the result.
//! Parsing the probe is a pure function ([`OpTable::from_probe`],
//! [`OpTable::from_bytes`]) tested without a kernel.
#![allow(unsafe_code)]

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::abi;
use crate::bufring::BufRing;
use crate::cqe::Cqe;
use crate::msg::{self, Message, UserData};
use crate::register;
use crate::ring::{Ring, RingConfig};
use crate::sqe::{AsyncCancel, CancelKey, DirectTarget, FixedSlot, MsgRingSendFd, Recv, Sqe};
use crate::syscall;

/// The `IORING_FEAT_*` bits a ring's setup reported (`io_uring_params.features`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RingFeatures(u32);

/// Names of the `IORING_FEAT_*` bits, in bit order.
const FEATURE_NAMES: [(u32, &str); 18] = [
    (abi::IORING_FEAT_SINGLE_MMAP, "single_mmap"),
    (abi::IORING_FEAT_NODROP, "nodrop"),
    (abi::IORING_FEAT_SUBMIT_STABLE, "submit_stable"),
    (abi::IORING_FEAT_RW_CUR_POS, "rw_cur_pos"),
    (abi::IORING_FEAT_CUR_PERSONALITY, "cur_personality"),
    (abi::IORING_FEAT_FAST_POLL, "fast_poll"),
    (abi::IORING_FEAT_POLL_32BITS, "poll_32bits"),
    (abi::IORING_FEAT_SQPOLL_NONFIXED, "sqpoll_nonfixed"),
    (abi::IORING_FEAT_EXT_ARG, "ext_arg"),
    (abi::IORING_FEAT_NATIVE_WORKERS, "native_workers"),
    (abi::IORING_FEAT_RSRC_TAGS, "rsrc_tags"),
    (abi::IORING_FEAT_CQE_SKIP, "cqe_skip"),
    (abi::IORING_FEAT_LINKED_FILE, "linked_file"),
    (abi::IORING_FEAT_REG_REG_RING, "reg_reg_ring"),
    (abi::IORING_FEAT_RECVSEND_BUNDLE, "recvsend_bundle"),
    (abi::IORING_FEAT_MIN_TIMEOUT, "min_timeout"),
    (abi::IORING_FEAT_RW_ATTR, "rw_attr"),
    (abi::IORING_FEAT_NO_IOWAIT, "no_iowait"),
];

impl RingFeatures {
    /// Wraps raw `IORING_FEAT_*` bits.
    pub const fn from_bits(bits: u32) -> RingFeatures {
        RingFeatures(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every bit of `feature` (an `IORING_FEAT_*` constant) is set.
    pub const fn contains(self, feature: u32) -> bool {
        self.0 & feature == feature
    }

    /// SQ and CQ rings share one mapping (5.4).
    pub const fn single_mmap(self) -> bool {
        self.contains(abi::IORING_FEAT_SINGLE_MMAP)
    }

    /// The kernel never drops a CQE when the CQ is full; it holds it (5.5).
    pub const fn nodrop(self) -> bool {
        self.contains(abi::IORING_FEAT_NODROP)
    }

    /// SQE data is consumed at submission: memory an SQE points at for the
    /// submission only (not for the op's duration) may be reused after it (5.5).
    pub const fn submit_stable(self) -> bool {
        self.contains(abi::IORING_FEAT_SUBMIT_STABLE)
    }

    /// Internal poll-driven retry instead of a worker thread (5.7).
    pub const fn fast_poll(self) -> bool {
        self.contains(abi::IORING_FEAT_FAST_POLL)
    }

    /// `io_uring_enter` takes `IORING_ENTER_EXT_ARG` (a wait timeout) (5.11).
    pub const fn ext_arg(self) -> bool {
        self.contains(abi::IORING_FEAT_EXT_ARG)
    }

    /// `IOSQE_CQE_SKIP_SUCCESS` (5.17).
    pub const fn cqe_skip(self) -> bool {
        self.contains(abi::IORING_FEAT_CQE_SKIP)
    }

    /// Registered ring fds may be used with `io_uring_register` too (6.3).
    pub const fn reg_reg_ring(self) -> bool {
        self.contains(abi::IORING_FEAT_REG_REG_RING)
    }

    /// `IORING_RECVSEND_BUNDLE` (6.10).
    pub const fn recvsend_bundle(self) -> bool {
        self.contains(abi::IORING_FEAT_RECVSEND_BUNDLE)
    }

    /// `min_wait_usec` in the enter wait argument (6.12).
    pub const fn min_timeout(self) -> bool {
        self.contains(abi::IORING_FEAT_MIN_TIMEOUT)
    }

    /// Names of the set bits this crate knows, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        FEATURE_NAMES
            .into_iter()
            .filter(move |(bit, _)| self.contains(*bit))
            .map(|(_, name)| name)
    }
}

impl fmt::Debug for RingFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RingFeatures({:#x}: ", self.0)?;
        f.debug_list().entries(self.names()).finish()?;
        f.write_str(")")
    }
}

/// Names of the `IORING_SETUP_*` flags, in bit order.
const SETUP_FLAG_NAMES: [(u32, &str); 18] = [
    (abi::IORING_SETUP_IOPOLL, "iopoll"),
    (abi::IORING_SETUP_SQPOLL, "sqpoll"),
    (abi::IORING_SETUP_SQ_AFF, "sq_aff"),
    (abi::IORING_SETUP_CQSIZE, "cqsize"),
    (abi::IORING_SETUP_CLAMP, "clamp"),
    (abi::IORING_SETUP_ATTACH_WQ, "attach_wq"),
    (abi::IORING_SETUP_R_DISABLED, "r_disabled"),
    (abi::IORING_SETUP_SUBMIT_ALL, "submit_all"),
    (abi::IORING_SETUP_COOP_TASKRUN, "coop_taskrun"),
    (abi::IORING_SETUP_TASKRUN_FLAG, "taskrun_flag"),
    (abi::IORING_SETUP_SQE128, "sqe128"),
    (abi::IORING_SETUP_CQE32, "cqe32"),
    (abi::IORING_SETUP_SINGLE_ISSUER, "single_issuer"),
    (abi::IORING_SETUP_DEFER_TASKRUN, "defer_taskrun"),
    (abi::IORING_SETUP_NO_MMAP, "no_mmap"),
    (abi::IORING_SETUP_REGISTERED_FD_ONLY, "registered_fd_only"),
    (abi::IORING_SETUP_NO_SQARRAY, "no_sqarray"),
    (abi::IORING_SETUP_HYBRID_IOPOLL, "hybrid_iopoll"),
];

/// Names of the set `IORING_SETUP_*` flags in `flags`, in bit order.
pub fn setup_flag_names(flags: u32) -> impl Iterator<Item = &'static str> {
    SETUP_FLAG_NAMES
        .into_iter()
        .filter(move |(bit, _)| flags & bit != 0)
        .map(|(_, name)| name)
}

/// Lower-case names of the opcodes this crate knows, indexed by opcode.
const OP_NAMES: [&str; abi::IORING_OP_LAST as usize] = [
    "nop",
    "readv",
    "writev",
    "fsync",
    "read_fixed",
    "write_fixed",
    "poll_add",
    "poll_remove",
    "sync_file_range",
    "sendmsg",
    "recvmsg",
    "timeout",
    "timeout_remove",
    "accept",
    "async_cancel",
    "link_timeout",
    "connect",
    "fallocate",
    "openat",
    "close",
    "files_update",
    "statx",
    "read",
    "write",
    "fadvise",
    "madvise",
    "send",
    "recv",
    "openat2",
    "epoll_ctl",
    "splice",
    "provide_buffers",
    "remove_buffers",
    "tee",
    "shutdown",
    "renameat",
    "unlinkat",
    "mkdirat",
    "symlinkat",
    "linkat",
    "msg_ring",
    "fsetxattr",
    "setxattr",
    "fgetxattr",
    "getxattr",
    "socket",
    "uring_cmd",
    "send_zc",
    "sendmsg_zc",
    "read_multishot",
    "waitid",
    "futex_wait",
    "futex_wake",
    "futex_waitv",
    "fixed_fd_install",
    "ftruncate",
    "bind",
    "listen",
    "recv_zc",
    "epoll_wait",
    "readv_fixed",
    "writev_fixed",
    "pipe",
];

/// The name of opcode `op` (`"msg_ring"` for `IORING_OP_MSG_RING`), if this
/// crate knows it.
pub fn op_name(op: u8) -> Option<&'static str> {
    OP_NAMES.get(usize::from(op)).copied()
}

/// Opcodes the runtime cares about beyond the basics, listed by [`Features`]'s
/// `Display`.
const NOTABLE_OPS: [u8; 15] = [
    abi::IORING_OP_OPENAT2,
    abi::IORING_OP_MSG_RING,
    abi::IORING_OP_SOCKET,
    abi::IORING_OP_SEND_ZC,
    abi::IORING_OP_SENDMSG_ZC,
    abi::IORING_OP_READ_MULTISHOT,
    abi::IORING_OP_WAITID,
    abi::IORING_OP_FUTEX_WAIT,
    abi::IORING_OP_FIXED_FD_INSTALL,
    abi::IORING_OP_FTRUNCATE,
    abi::IORING_OP_BIND,
    abi::IORING_OP_LISTEN,
    abi::IORING_OP_RECV_ZC,
    abi::IORING_OP_EPOLL_WAIT,
    abi::IORING_OP_PIPE,
];

/// The opcode table of `IORING_REGISTER_PROBE`: which opcodes the kernel supports.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OpTable {
    /// The highest opcode the kernel knows (`io_uring_probe.last_op`).
    last_op: u8,
    /// One bit per opcode: bit `op % 64` of word `op / 64`.
    supported: [u64; 4],
}

impl OpTable {
    /// A table with exactly the opcodes in `ops` supported, and `last_op` as given.
    pub fn from_ops(last_op: u8, ops: impl IntoIterator<Item = u8>) -> OpTable {
        let mut t = OpTable {
            last_op,
            supported: [0; 4],
        };
        for op in ops {
            t.supported[usize::from(op / 64)] |= 1 << (op % 64);
        }
        t
    }

    /// Reads a probe the kernel filled: the first `header.ops_len` entries of
    /// `ops` (fewer if `ops` is shorter), each supported when its flags have
    /// `IO_URING_OP_SUPPORTED`. Pure and total.
    pub fn from_probe(header: &abi::io_uring_probe, ops: &[abi::io_uring_probe_op]) -> OpTable {
        let entries = ops.iter().take(usize::from(header.ops_len));
        let supported = entries
            .filter(|e| e.flags & abi::IO_URING_OP_SUPPORTED != 0)
            .map(|e| e.op);
        OpTable::from_ops(header.last_op, supported)
    }

    /// Parses a probe buffer from its bytes (native endian, as the kernel wrote
    /// it): a 16-byte header, then 8-byte entries. Pure and total.
    ///
    /// # Errors
    ///
    /// `None` when `bytes` is shorter than the header plus the `ops_len`
    /// entries it announces.
    pub fn from_bytes(bytes: &[u8]) -> Option<OpTable> {
        const HEADER: usize = size_of::<abi::io_uring_probe>();
        const ENTRY: usize = size_of::<abi::io_uring_probe_op>();
        let header = abi::io_uring_probe {
            last_op: *bytes.first()?,
            ops_len: *bytes.get(1)?,
            ..Default::default()
        };
        let body = bytes.get(HEADER..HEADER + usize::from(header.ops_len) * ENTRY)?;
        let ops: Vec<abi::io_uring_probe_op> = body
            .chunks_exact(ENTRY)
            .map(|e| abi::io_uring_probe_op {
                op: e[0],
                resv: e[1],
                flags: u16::from_ne_bytes([e[2], e[3]]),
                resv2: u32::from_ne_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        Some(OpTable::from_probe(&header, &ops))
    }

    /// True when the kernel supports opcode `op` (an `IORING_OP_*` constant).
    pub const fn supports(&self, op: u8) -> bool {
        self.supported[(op / 64) as usize] & (1 << (op % 64)) != 0
    }

    /// The highest opcode the kernel knows, supported or not.
    pub const fn last_op(&self) -> u8 {
        self.last_op
    }

    /// The supported opcodes, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(|op| self.supports(*op))
    }

    /// How many opcodes are supported.
    pub fn count(&self) -> u32 {
        self.supported.iter().map(|w| w.count_ones()).sum()
    }
}

impl fmt::Debug for OpTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpTable")
            .field("last_op", &self.last_op)
            .field(
                "supported",
                &self
                    .iter()
                    .map(|op| op_name(op).unwrap_or("?"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What the start-up self-test found: abilities the probe cannot show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SelfTest {
    /// `IORING_SETUP_SINGLE_ISSUER` accepted on its own (6.0).
    pub setup_single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER`) accepted (6.1).
    pub setup_defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG` accepted (5.19).
    pub setup_coop_taskrun: bool,
    /// `IORING_SETUP_NO_SQARRAY` accepted (6.6).
    pub setup_no_sqarray: bool,
    /// `IORING_SETUP_SUBMIT_ALL` accepted (5.18).
    pub setup_submit_all: bool,
    /// A `MSG_RING` with `IORING_MSG_RING_FLAGS_PASS` delivered its CQE flags
    /// (6.3): messages may carry [`Message::extra`].
    pub msg_ring_flags_pass: bool,
    /// `IORING_MSG_RING_CQE_SKIP` on a file-passing `MSG_RING` posted no CQE
    /// to the target (6.2). The flag applies to fd passing only; data messages
    /// reject it.
    pub msg_ring_cqe_skip: bool,
    /// `IORING_REGISTER_PBUF_RING` registered a provided-buffer ring (5.19).
    pub pbuf_ring: bool,
    /// A `RECV` with `IORING_RECV_MULTISHOT` and buffer select stayed armed
    /// (`IORING_CQE_F_MORE`) after receiving (6.0).
    pub recv_multishot: bool,
    /// `IORING_REGISTER_SEND_MSG_RING` posted a CQE from outside any ring (6.13):
    /// foreign threads can message a shard without an eventfd.
    pub register_send_msg_ring: bool,
}

/// Everything spargio needs to know about the running kernel's io_uring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// The feature bits a default ring's setup reported.
    pub ring: RingFeatures,
    /// The opcode table.
    pub ops: OpTable,
    /// The setup flags a default ring ([`Ring::new`]) ended up with.
    pub setup_flags: u32,
    /// What the self-test found.
    pub checked: SelfTest,
}

static DETECTED: OnceLock<Features> = OnceLock::new();

impl Features {
    /// Detects the running kernel's features once per process: sets up scratch
    /// rings on the calling thread, probes, runs the [`SelfTest`], and caches
    /// the result. Later calls return the cached value; a failed detection is
    /// not cached.
    ///
    /// # Errors
    ///
    /// io_uring unavailable (the [`SetupError`](crate::ring::SetupError) of the
    /// first ring, as `io::Error`), or a self-test step failing in a way that
    /// is not "unsupported" (named in the error).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use spargio_sys::{abi, probe::Features};
    ///
    /// let features = Features::detect()?;
    /// if features.supports(abi::IORING_OP_MSG_RING) {
    ///     println!("{features}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn detect() -> io::Result<&'static Features> {
        if let Some(f) = DETECTED.get() {
            return Ok(f);
        }
        let detected = Features::detect_uncached()?;
        Ok(DETECTED.get_or_init(|| detected))
    }

    /// Runs the whole detection without the cache.
    ///
    /// # Errors
    ///
    /// As [`Features::detect`].
    pub fn detect_uncached() -> io::Result<Features> {
        let ring = Ring::new(8)?;
        let ops = register::probe(kernel_fd(&ring)?)?;
        let checked = SelfTest::run(&ops)?;
        Ok(Features {
            ring: RingFeatures(ring.features()),
            ops,
            setup_flags: ring.setup_flags(),
            checked,
        })
    }

    /// True when the kernel supports opcode `op`.
    pub const fn supports(&self, op: u8) -> bool {
        self.ops.supports(op)
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<'a>(
            f: &mut fmt::Formatter<'_>,
            label: &str,
            names: impl Iterator<Item = &'a str>,
        ) -> fmt::Result {
            write!(f, "{label:<10}")?;
            let mut none = true;
            for name in names {
                write!(f, " {name}")?;
                none = false;
            }
            writeln!(f, "{}", if none { " -" } else { "" })
        }
        writeln!(f, "io_uring features")?;
        list(f, "ring:", self.ring.names())?;
        list(f, "setup:", setup_flag_names(self.setup_flags))?;
        writeln!(
            f,
            "{:<10} {} supported, last opcode {} ({})",
            "ops:",
            self.ops.count(),
            self.ops.last_op(),
            op_name(self.ops.last_op()).unwrap_or("newer than this crate"),
        )?;
        list(
            f,
            "notable:",
            NOTABLE_OPS
                .into_iter()
                .filter(|op| self.supports(*op))
                .filter_map(op_name),
        )?;
        let c = &self.checked;
        let checks = [
            (c.setup_single_issuer, "setup_single_issuer"),
            (c.setup_defer_taskrun, "setup_defer_taskrun"),
            (c.setup_coop_taskrun, "setup_coop_taskrun"),
            (c.setup_no_sqarray, "setup_no_sqarray"),
            (c.setup_submit_all, "setup_submit_all"),
            (c.msg_ring_flags_pass, "msg_ring_flags_pass"),
            (c.msg_ring_cqe_skip, "msg_ring_cqe_skip"),
            (c.pbuf_ring, "pbuf_ring"),
            (c.recv_multishot, "recv_multishot"),
            (c.register_send_msg_ring, "register_send_msg_ring"),
        ];
        list(
            f,
            "checked:",
            checks.iter().filter(|(ok, _)| *ok).map(|(_, name)| *name),
        )?;
        list(
            f,
            "missing:",
            checks.iter().filter(|(ok, _)| !*ok).map(|(_, name)| *name),
        )
    }
}

// === the self-test ===

/// How long one self-test step waits for a completion before failing.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer group the self-test registers on its scratch ring.
const SCRATCH_BGID: u16 = 0;

/// `user_data` of the self-test's own SQEs.
fn step(n: u32) -> UserData {
    UserData::internal(u16::MAX, n)
}

fn kernel_fd(ring: &Ring) -> io::Result<std::os::fd::BorrowedFd<'_>> {
    ring.kernel_fd()
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "probing needs a kernel ring"))
}

/// An errno that means "this kernel does not know that".
fn is_unsupported(errno: i32) -> bool {
    matches!(errno, libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
}

fn failed(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("io_uring self-test, {what}: {e}"))
}

/// A ring with the completions it has reaped but nobody has asked for yet.
struct Scratch {
    ring: Ring,
    reaped: Vec<Cqe>,
}

impl Scratch {
    fn new(config: &RingConfig) -> io::Result<Scratch> {
        Ok(Scratch {
            ring: Ring::with_config(config)?,
            reaped: Vec::new(),
        })
    }

    /// Takes a reaped CQE for `user_data`, waiting up to [`STEP_TIMEOUT`].
    fn wait_for(&mut self, user_data: UserData) -> io::Result<Cqe> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            self.ring.drain_cqes(&mut self.reaped);
            if let Some(i) = self.reaped.iter().position(|c| c.user_data == user_data.get()) {
                return Ok(self.reaped.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no completion within 5 s",
                ));
            }
            self.ring.submit_and_wait(1, Some(left))?;
        }
    }

    /// Posts held-back completions and reports whether any for `user_data` exists.
    fn has(&mut self, user_data: UserData) -> io::Result<bool> {
        self.ring.submit_and_flush()?;
        self.ring.drain_cqes(&mut self.reaped);
        Ok(self.reaped.iter().any(|c| c.user_data == user_data.get()))
    }

    /// Queues one of the self-test's entries. They name fds and memory the
    /// self-test owns (its socket pairs, scratch rings and buffer rings), so
    /// they go through the unchecked push.
    fn push(&mut self, sqe: &Sqe) -> io::Result<()> {
        // SAFETY: each check keeps what its entries point at (sockets, rings,
        // provided buffers) alive until it has reaped their final completions,
        // or leaks it on error; no entry carries an op's tag (see `step`).
        unsafe { self.ring.push_unchecked(sqe) }.map_err(|e| io::Error::new(io::ErrorKind::WouldBlock, e))
    }
}

impl SelfTest {
    /// Runs every check on scratch rings created (and closed) on the calling
    /// thread. `ops` decides which checks are possible at all.
    ///
    /// # Errors
    ///
    /// A check that failed in a way other than "unsupported" (named in the error).
    pub fn run(ops: &OpTable) -> io::Result<SelfTest> {
        let accepts = |flags| setup_accepts(flags).map_err(|e| failed("setup flags", e));
        let mut t = SelfTest {
            setup_single_issuer: accepts(abi::IORING_SETUP_SINGLE_ISSUER)?,
            setup_defer_taskrun: accepts(abi::IORING_SETUP_SINGLE_ISSUER | abi::IORING_SETUP_DEFER_TASKRUN)?,
            setup_coop_taskrun: accepts(abi::IORING_SETUP_COOP_TASKRUN | abi::IORING_SETUP_TASKRUN_FLAG)?,
            setup_no_sqarray: accepts(abi::IORING_SETUP_NO_SQARRAY)?,
            setup_submit_all: accepts(abi::IORING_SETUP_SUBMIT_ALL)?,
            ..SelfTest::default()
        };
        let mut scratch = Scratch::new(&RingConfig::with_entries(8))?;
        if ops.supports(abi::IORING_OP_MSG_RING) {
            t.msg_ring_flags_pass =
                msg_ring_flags_pass(&mut scratch).map_err(|e| failed("MSG_RING flags", e))?;
            t.msg_ring_cqe_skip =
                msg_ring_cqe_skip(&mut scratch).map_err(|e| failed("MSG_RING CQE_SKIP", e))?;
            t.register_send_msg_ring =
                register_send_msg_ring(&mut scratch).map_err(|e| failed("SEND_MSG_RING", e))?;
        }
        match BufRing::new(&scratch.ring, SCRATCH_BGID, 2, 64) {
            Ok(bufs) => {
                t.pbuf_ring = true;
                if ops.supports(abi::IORING_OP_RECV) && ops.supports(abi::IORING_OP_ASYNC_CANCEL) {
                    t.recv_multishot =
                        recv_multishot(&mut scratch, bufs).map_err(|e| failed("multishot recv", e))?;
                }
            }
            Err(e) if e.raw_os_error().is_some_and(is_unsupported) => {}
            Err(e) => return Err(failed("buffer ring", e)),
        }
        Ok(t)
    }
}

/// True when `io_uring_setup` accepts `flags` (plus `CQSIZE`-free defaults).
fn setup_accepts(flags: u32) -> io::Result<bool> {
    let mut params = abi::io_uring_params {
        flags,
        ..Default::default()
    };
    match syscall::setup(4, &mut params) {
        Ok(_fd) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends the scratch ring a message with a second payload in the CQE flags.
fn msg_ring_flags_pass(s: &mut Scratch) -> io::Result<bool> {
    let m = Message {
        from_shard: 0,
        tag: 0x5e1f,
        value: 0x8000_0001,
        extra: Some(0xa5a5_0f0f),
    };
    s.push(&msg::message_sqe(s.ring.as_raw_fd(), &m, step(1)))?;
    let sent = s.wait_for(step(1))?;
    if sent.res < 0 && is_unsupported(-sent.res) {
        return Ok(false);
    }
    sent.result()?;
    let got = s.wait_for(m.user_data())?;
    // A kernel that took the flag but dropped the payload does not support it.
    Ok(got == m.target_cqe())
}

/// Passes a registered file to a second ring with `IORING_MSG_RING_CQE_SKIP`
/// and checks that the target saw no completion.
fn msg_ring_cqe_skip(s: &mut Scratch) -> io::Result<bool> {
    let mut target = Scratch::new(&RingConfig::with_entries(8))?;
    let (a, _b) = UnixStream::pair()?;
    match s.ring.register_files(&[Some(std::os::fd::AsFd::as_fd(&a))]) {
        Ok(()) => {}
        Err(e) if e.raw_os_error().is_some_and(is_unsupported) => return Ok(false),
        Err(e) => return Err(e),
    }
    let result = (|| {
        match target.ring.register_files_sparse(1) {
            Ok(()) => {}
            Err(e) if e.raw_os_error().is_some_and(is_unsupported) => return Ok(false),
            Err(e) => return Err(e),
        }
        let posted = step(3);
        let target_slot = DirectTarget::Slot(FixedSlot::new(0).expect("slot 0 exists"));
        let sqe = MsgRingSendFd::new(target.ring.as_raw_fd(), 0, target_slot, posted.get())
            .skip_cqe(true)
            .build()
            .user_data(step(2).get());
        s.push(&sqe)?;
        let sent = s.wait_for(step(2))?;
        if sent.res < 0 && is_unsupported(-sent.res) {
            return Ok(false);
        }
        sent.result()?;
        Ok(!target.has(posted)?)
    })();
    s.ring.unregister_files()?;
    result
}

/// Posts a CQE into the scratch ring from no ring at all.
fn register_send_msg_ring(s: &mut Scratch) -> io::Result<bool> {
    let posted = step(4);
    match register::send_msg_ring_without_ring(&s.ring.ring_fd(), posted, 77, None) {
        Ok(()) => {}
        // Before 6.13 fd -1 is EBADF; after, an unknown blind opcode is EINVAL.
        Err(e)
            if e.raw_os_error()
                .is_some_and(|e| is_unsupported(e) || e == libc::EBADF) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    Ok(s.wait_for(posted)?.res == 77)
}

/// Arms a multishot `RECV` with buffer select on a socket pair holding one
/// byte; supported when it receives and stays armed. Cancels it and reaps its
/// final completion before releasing `bufs`.
fn recv_multishot(s: &mut Scratch, mut bufs: BufRing) -> io::Result<bool> {
    let (mut tx, rx) = UnixStream::pair()?;
    tx.write_all(b"x")?;
    let recv = step(5);
    let sqe = Recv::new(rx.as_raw_fd(), std::ptr::null_mut(), 0)
        .buf_group(Some(bufs.bgid()))
        .multishot(true)
        .build()
        .user_data(recv.get());
    // A buffer-select receive points at no memory of its own: the safe push
    // takes it, and `bufs` is only released once the op is over.
    s.push(&sqe)?;
    let first = s.wait_for(recv)?;
    if !first.has_more() {
        // The op is over: unsupported (EINVAL), or finished for another reason.
        return if first.res < 0 && is_unsupported(-first.res) {
            Ok(false)
        } else {
            first.result().map(|_| false)
        };
    }
    let supported = first.res == 1
        && first.buffer_id().is_some_and(|bid| {
            // SAFETY: the kernel reported `bid` in this CQE of an op that selected
            // from `bufs`' group, and no other claim used this CQE.
            unsafe { bufs.claim(bid) };
            bufs.buffer(bid, 1) == Some(b"x")
        });
    s.push(
        &AsyncCancel::new(CancelKey::UserData(recv.get()))
            .build()
            .user_data(step(6).get()),
    )?;
    // Reap the receive's final completion. On error `bufs` is dropped without
    // `release`, which leaks its buffers rather than free them under the kernel.
    while s.wait_for(recv)?.has_more() {}
    s.wait_for(step(6))?;
    // SAFETY: the only op that selected from the group has posted and we have
    // reaped its final completion (no F_MORE).
    unsafe { bufs.release() };
    Ok(supported)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn probe_bytes(last_op: u8, entries: &[(u8, u16)]) -> Vec<u8> {
        let mut b = vec![last_op, entries.len() as u8];
        b.resize(16, 0);
        for &(op, flags) in entries {
            b.extend_from_slice(&[op, 0]);
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
        }
        b
    }

    #[test]
    fn parses_a_probe() {
        let entries: Vec<(u8, u16)> = (0..=40u8).map(|op| (op, u16::from(op % 3 != 1))).collect();
        let t = OpTable::from_bytes(&probe_bytes(40, &entries)).unwrap();
        assert_eq!(t.last_op(), 40);
        assert!(t.supports(abi::IORING_OP_NOP));
        assert!(!t.supports(1));
        assert!(t.supports(abi::IORING_OP_MSG_RING) == (40 % 3 != 1));
        assert!(!t.supports(41));
        assert!(!t.supports(255));
        assert_eq!(t.count(), entries.iter().filter(|e| e.1 != 0).count() as u32);
        assert_eq!(t.iter().filter(|op| *op % 3 == 1).count(), 0);
    }

    #[test]
    fn ignores_entries_past_ops_len_and_rejects_truncation() {
        let mut b = probe_bytes(2, &[(0, 1), (1, 1)]);
        b[1] = 1; // ops_len 1: the second entry is not part of the probe.
        let t = OpTable::from_bytes(&b).unwrap();
        assert!(t.supports(0) && !t.supports(1));
        b[1] = 3; // announces more entries than the buffer holds
        assert_eq!(OpTable::from_bytes(&b), None);
        assert_eq!(OpTable::from_bytes(&[]), None);
        assert_eq!(OpTable::from_bytes(&[5]), None);
        assert_eq!(OpTable::from_bytes(&[5, 0]), None);
    }

    #[test]
    fn typed_and_byte_parsing_agree() {
        let header = abi::io_uring_probe {
            last_op: 62,
            ops_len: 2,
            ..Default::default()
        };
        let ops = [
            abi::io_uring_probe_op {
                op: 62,
                flags: abi::IO_URING_OP_SUPPORTED,
                ..Default::default()
            },
            abi::io_uring_probe_op {
                op: 3,
                flags: 0,
                ..Default::default()
            },
        ];
        let t = OpTable::from_probe(&header, &ops);
        assert_eq!(
            t,
            OpTable::from_bytes(&probe_bytes(62, &[(62, 1), (3, 0)])).unwrap()
        );
        assert_eq!(t, OpTable::from_ops(62, [62]));
    }

    #[test]
    fn names_cover_the_known_constants() {
        assert_eq!(op_name(abi::IORING_OP_MSG_RING), Some("msg_ring"));
        assert_eq!(op_name(abi::IORING_OP_PIPE), Some("pipe"));
        assert_eq!(op_name(abi::IORING_OP_LAST), None);
        assert_eq!(op_name(abi::IORING_OP_RECV), Some("recv"));
        assert_eq!(op_name(abi::IORING_OP_SEND_ZC), Some("send_zc"));
        let f = RingFeatures::from_bits(abi::IORING_FEAT_NODROP | abi::IORING_FEAT_EXT_ARG | 1 << 31);
        assert_eq!(f.names().collect::<Vec<_>>(), ["nodrop", "ext_arg"]);
        assert!(f.nodrop() && f.ext_arg() && !f.single_mmap());
        let names: Vec<_> =
            setup_flag_names(abi::IORING_SETUP_CQSIZE | abi::IORING_SETUP_NO_SQARRAY).collect();
        assert_eq!(names, ["cqsize", "no_sqarray"]);
    }

    #[test]
    fn display_lists_supported_and_missing() {
        let features = Features {
            ring: RingFeatures::from_bits(abi::IORING_FEAT_SINGLE_MMAP),
            ops: OpTable::from_ops(62, [abi::IORING_OP_NOP, abi::IORING_OP_MSG_RING]),
            setup_flags: abi::IORING_SETUP_SINGLE_ISSUER,
            checked: SelfTest {
                msg_ring_flags_pass: true,
                ..SelfTest::default()
            },
        };
        let text = features.to_string();
        assert!(text.contains("single_mmap"), "{text}");
        assert!(text.contains("single_issuer"), "{text}");
        assert!(text.contains("2 supported, last opcode 62 (pipe)"), "{text}");
        assert!(text.contains("notable:   msg_ring\n"), "{text}");
        assert!(text.contains("checked:   msg_ring_flags_pass\n"), "{text}");
        assert!(text.contains("missing:   setup_single_issuer"), "{text}");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2200)) {
            if let Some(t) = OpTable::from_bytes(&bytes) {
                prop_assert!(t.count() <= u32::from(bytes[1]));
                prop_assert_eq!(t.last_op(), bytes[0]);
            }
        }

        #[test]
        fn parsing_round_trips(last_op in any::<u8>(), ops in proptest::collection::btree_set(any::<u8>(), 0..200)) {
            let entries: Vec<(u8, u16)> = ops.iter().map(|op| (*op, abi::IO_URING_OP_SUPPORTED)).collect();
            let t = OpTable::from_bytes(&probe_bytes(last_op, &entries)).unwrap();
            prop_assert_eq!(t, OpTable::from_ops(last_op, ops.iter().copied()));
            prop_assert_eq!(t.iter().collect::<Vec<_>>(), ops.into_iter().collect::<Vec<_>>());
        }
    }
}
