//! Kernel ABI of io_uring: structures and constants, written by hand from the
//! kernel's uapi header (`include/uapi/linux/io_uring.h`).
//!
//! Kernel spellings live here and only here; the modules above use Rust names.
//! Every structure is `#[repr(C)]` and its size and field offsets are pinned by
//! compile-time assertions at the bottom of this file, so a typo in a field
//! order cannot compile. Union fields of the kernel structures are flattened
//! into one field each with a name that says what the union may hold
//! (`off_or_addr2`), never `anon_N`.
//!
//! Newer constants than the build machine's `linux/io_uring.h` are included;
//! whether the running kernel accepts them is decided at run time by
//! [`crate::probe`], never by their presence here.

#![allow(missing_docs)] // The kernel constants are documented by their kernel names.

use memoffset::offset_of;
use static_assertions::{assert_eq_size, const_assert_eq};

// === system call numbers (x86_64 / aarch64 and every arch since 5.1) ===

/// `__NR_io_uring_setup`: the same number on every architecture.
pub const SYS_IO_URING_SETUP: libc::c_long = 425;
/// `__NR_io_uring_enter`.
pub const SYS_IO_URING_ENTER: libc::c_long = 426;
/// `__NR_io_uring_register`.
pub const SYS_IO_URING_REGISTER: libc::c_long = 427;

/// `__NR_openat2` (Linux 5.6): the same number on every architecture.
pub const SYS_OPENAT2: libc::c_long = 437;

// === structures ===

/// `struct io_uring_sqe`: one submission queue entry, 64 bytes.
///
/// Field names say what each kernel union holds; the per-opcode meaning is
/// written by the encoders in [`crate::sqe`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct io_uring_sqe {
    /// Operation code (`IORING_OP_*`).
    pub opcode: u8,
    /// `IOSQE_*` flags.
    pub flags: u8,
    /// Request priority; for some ops a flag word (`IORING_RECVSEND_*`, `IORING_ACCEPT_*`).
    pub ioprio: u16,
    /// File descriptor (or registered-file index with `IOSQE_FIXED_FILE`).
    pub fd: i32,
    /// Union: file offset, `addr2`, or the `MSG_RING` target `user_data`.
    pub off_or_addr2: u64,
    /// Union: buffer/struct address, `splice_off_in`, or the `MSG_RING` command.
    pub addr_or_splice_off_in: u64,
    /// Length in bytes or count of vectors; for `MSG_RING` the `res` to post.
    pub len: u32,
    /// Union of the per-opcode flag words (`rw_flags`, `fsync_flags`, `msg_flags`, …).
    pub op_flags: u32,
    /// Passed back unchanged in the CQE.
    pub user_data: u64,
    /// Union: registered buffer index or provided buffer group id.
    pub buf_index_or_group: u16,
    /// Credentials personality id.
    pub personality: u16,
    /// Union: `splice_fd_in`, direct-descriptor `file_index`, `optlen`, or `addr_len`.
    pub splice_fd_in_or_file_index: u32,
    /// Union: `addr3` (third address) or `optval`.
    pub addr3: u64,
    /// Reserved, must be zero.
    pub pad2: u64,
}

/// `struct io_uring_cqe`: one completion queue entry, 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct io_uring_cqe {
    /// The submitting SQE's `user_data`.
    pub user_data: u64,
    /// Result: a count, an fd, or `-errno`.
    pub res: i32,
    /// `IORING_CQE_F_*` flags; the upper 16 bits carry a buffer id with `F_BUFFER`.
    pub flags: u32,
}

/// The 32-byte CQE used by rings set up with `IORING_SETUP_CQE32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct io_uring_cqe32 {
    pub cqe: io_uring_cqe,
    pub big_cqe: [u64; 2],
}

/// `struct io_sqring_offsets`: where the SQ ring fields sit in the SQ mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_sqring_offsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub flags: u32,
    pub dropped: u32,
    pub array: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

/// `struct io_cqring_offsets`: where the CQ ring fields sit in the CQ mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_cqring_offsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub overflow: u32,
    pub cqes: u32,
    pub flags: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

/// `struct io_uring_params`: in/out argument of `io_uring_setup`, 120 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_params {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub flags: u32,
    pub sq_thread_cpu: u32,
    pub sq_thread_idle: u32,
    pub features: u32,
    pub wq_fd: u32,
    pub resv: [u32; 3],
    pub sq_off: io_sqring_offsets,
    pub cq_off: io_cqring_offsets,
}

/// `struct io_uring_probe` header; `ops_len` entries of [`io_uring_probe_op`] follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_probe {
    pub last_op: u8,
    pub ops_len: u8,
    pub resv: u16,
    pub resv2: [u32; 3],
}

/// `struct io_uring_probe_op`: one opcode's entry in a probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_probe_op {
    pub op: u8,
    pub resv: u8,
    /// `IO_URING_OP_SUPPORTED` when the kernel knows the opcode.
    pub flags: u16,
    pub resv2: u32,
}

/// `struct io_uring_getevents_arg`: the `IORING_ENTER_EXT_ARG` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_getevents_arg {
    pub sigmask: u64,
    pub sigmask_sz: u32,
    /// `min_wait_usec` on kernels with `IORING_FEAT_MIN_TIMEOUT`; zero otherwise.
    pub min_wait_usec: u32,
    /// Address of a `__kernel_timespec`, or zero for no timeout.
    pub ts: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kernel_timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

/// `struct io_uring_buf`: one entry of a provided-buffer ring, 16 bytes.
///
/// The ring's tail lives in the `resv` field of entry 0 (`struct io_uring_buf_ring`
/// overlays its header on the first entry): see [`BUF_RING_TAIL_OFFSET`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_buf {
    pub addr: u64,
    pub len: u32,
    pub bid: u16,
    pub resv: u16,
}

/// Byte offset of the shared `tail` (u16) inside a provided-buffer ring.
pub const BUF_RING_TAIL_OFFSET: usize = 14;

/// `struct io_uring_buf_reg`: argument of `IORING_REGISTER_PBUF_RING`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_buf_reg {
    pub ring_addr: u64,
    pub ring_entries: u32,
    pub bgid: u16,
    pub flags: u16,
    pub resv: [u64; 3],
}

/// `struct io_uring_rsrc_register`: argument of `IORING_REGISTER_FILES2`/`BUFFERS2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_rsrc_register {
    pub nr: u32,
    pub flags: u32,
    pub resv2: u64,
    pub data: u64,
    pub tags: u64,
}

/// `struct io_uring_rsrc_update`: argument of `IORING_REGISTER_FILES_UPDATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_rsrc_update {
    pub offset: u32,
    pub resv: u32,
    pub data: u64,
}

/// `struct io_uring_rsrc_update2`: argument of `IORING_REGISTER_FILES_UPDATE2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct io_uring_rsrc_update2 {
    pub offset: u32,
    pub resv: u32,
    pub data: u64,
    pub tags: u64,
    pub nr: u32,
    pub resv2: u32,
}

/// `struct open_how` (`include/uapi/linux/openat2.h`): the argument of
/// `openat2(2)`, and of `IORING_OP_OPENAT2` by address in `sqe.addr2` with its
/// size in `sqe.len`; 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct open_how {
    /// `O_*` open flags.
    pub flags: u64,
    /// Permission bits for a created file; must be 0 unless `O_CREAT` or `O_TMPFILE`.
    pub mode: u64,
    /// `RESOLVE_*` path-resolution flags.
    pub resolve: u64,
}

/// `OPEN_HOW_SIZE_VER0`: the smallest `open_how` size the kernel accepts.
pub const OPEN_HOW_SIZE_VER0: usize = 24;

// === open_how.resolve flags (`include/uapi/linux/openat2.h`) ===

/// Refuse to cross a mount point (bind mounts included).
pub const RESOLVE_NO_XDEV: u64 = 0x01;
/// Refuse "magic links" (`/proc/<pid>/fd/<n>` and the like).
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// Refuse every symlink (implies `RESOLVE_NO_MAGICLINKS`).
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// Refuse to leave the directory `dirfd` names: absolute paths, `..` above it,
/// symlinks pointing out of it all fail with `EXDEV`.
pub const RESOLVE_BENEATH: u64 = 0x08;
/// Resolve as if `dirfd` were the root (`chroot`-like).
pub const RESOLVE_IN_ROOT: u64 = 0x10;
/// Only resolve from the dentry cache; `EAGAIN` otherwise.
pub const RESOLVE_CACHED: u64 = 0x20;

// === mmap offsets ===

pub const IORING_OFF_SQ_RING: i64 = 0;
pub const IORING_OFF_CQ_RING: i64 = 0x800_0000;
pub const IORING_OFF_SQES: i64 = 0x1000_0000;
pub const IORING_OFF_PBUF_RING: i64 = 0x8000_0000;
pub const IORING_OFF_PBUF_SHIFT: u32 = 16;

// === io_uring_setup flags ===

pub const IORING_SETUP_IOPOLL: u32 = 1 << 0;
pub const IORING_SETUP_SQPOLL: u32 = 1 << 1;
pub const IORING_SETUP_SQ_AFF: u32 = 1 << 2;
pub const IORING_SETUP_CQSIZE: u32 = 1 << 3;
pub const IORING_SETUP_CLAMP: u32 = 1 << 4;
pub const IORING_SETUP_ATTACH_WQ: u32 = 1 << 5;
pub const IORING_SETUP_R_DISABLED: u32 = 1 << 6;
pub const IORING_SETUP_SUBMIT_ALL: u32 = 1 << 7;
pub const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;
pub const IORING_SETUP_TASKRUN_FLAG: u32 = 1 << 9;
pub const IORING_SETUP_SQE128: u32 = 1 << 10;
pub const IORING_SETUP_CQE32: u32 = 1 << 11;
pub const IORING_SETUP_SINGLE_ISSUER: u32 = 1 << 12;
pub const IORING_SETUP_DEFER_TASKRUN: u32 = 1 << 13;
pub const IORING_SETUP_NO_MMAP: u32 = 1 << 14;
pub const IORING_SETUP_REGISTERED_FD_ONLY: u32 = 1 << 15;
pub const IORING_SETUP_NO_SQARRAY: u32 = 1 << 16;
pub const IORING_SETUP_HYBRID_IOPOLL: u32 = 1 << 17;

// === io_uring_enter flags ===

pub const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
pub const IORING_ENTER_SQ_WAKEUP: u32 = 1 << 1;
pub const IORING_ENTER_SQ_WAIT: u32 = 1 << 2;
pub const IORING_ENTER_EXT_ARG: u32 = 1 << 3;
pub const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
pub const IORING_ENTER_ABS_TIMER: u32 = 1 << 5;
pub const IORING_ENTER_EXT_ARG_REG: u32 = 1 << 6;
pub const IORING_ENTER_NO_IOWAIT: u32 = 1 << 7;

// === SQ ring flags (`sq_off.flags`) and CQ ring flags (`cq_off.flags`) ===

pub const IORING_SQ_NEED_WAKEUP: u32 = 1 << 0;
pub const IORING_SQ_CQ_OVERFLOW: u32 = 1 << 1;
pub const IORING_SQ_TASKRUN: u32 = 1 << 2;
pub const IORING_CQ_EVENTFD_DISABLED: u32 = 1 << 0;

// === io_uring_params.features ===

pub const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
pub const IORING_FEAT_NODROP: u32 = 1 << 1;
pub const IORING_FEAT_SUBMIT_STABLE: u32 = 1 << 2;
pub const IORING_FEAT_RW_CUR_POS: u32 = 1 << 3;
pub const IORING_FEAT_CUR_PERSONALITY: u32 = 1 << 4;
pub const IORING_FEAT_FAST_POLL: u32 = 1 << 5;
pub const IORING_FEAT_POLL_32BITS: u32 = 1 << 6;
pub const IORING_FEAT_SQPOLL_NONFIXED: u32 = 1 << 7;
pub const IORING_FEAT_EXT_ARG: u32 = 1 << 8;
pub const IORING_FEAT_NATIVE_WORKERS: u32 = 1 << 9;
pub const IORING_FEAT_RSRC_TAGS: u32 = 1 << 10;
pub const IORING_FEAT_CQE_SKIP: u32 = 1 << 11;
pub const IORING_FEAT_LINKED_FILE: u32 = 1 << 12;
pub const IORING_FEAT_REG_REG_RING: u32 = 1 << 13;
pub const IORING_FEAT_RECVSEND_BUNDLE: u32 = 1 << 14;
pub const IORING_FEAT_MIN_TIMEOUT: u32 = 1 << 15;
pub const IORING_FEAT_RW_ATTR: u32 = 1 << 16;
pub const IORING_FEAT_NO_IOWAIT: u32 = 1 << 17;

// === SQE flags (`io_uring_sqe.flags`) ===

pub const IOSQE_FIXED_FILE: u8 = 1 << 0;
pub const IOSQE_IO_DRAIN: u8 = 1 << 1;
pub const IOSQE_IO_LINK: u8 = 1 << 2;
pub const IOSQE_IO_HARDLINK: u8 = 1 << 3;
pub const IOSQE_ASYNC: u8 = 1 << 4;
pub const IOSQE_BUFFER_SELECT: u8 = 1 << 5;
pub const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;

// === CQE flags ===

pub const IORING_CQE_F_BUFFER: u32 = 1 << 0;
pub const IORING_CQE_F_MORE: u32 = 1 << 1;
pub const IORING_CQE_F_SOCK_NONEMPTY: u32 = 1 << 2;
pub const IORING_CQE_F_NOTIF: u32 = 1 << 3;
pub const IORING_CQE_F_BUF_MORE: u32 = 1 << 4;
pub const IORING_CQE_BUFFER_SHIFT: u32 = 16;

// === opcodes (`enum io_uring_op`) ===

pub const IORING_OP_NOP: u8 = 0;
pub const IORING_OP_READV: u8 = 1;
pub const IORING_OP_WRITEV: u8 = 2;
pub const IORING_OP_FSYNC: u8 = 3;
pub const IORING_OP_READ_FIXED: u8 = 4;
pub const IORING_OP_WRITE_FIXED: u8 = 5;
pub const IORING_OP_POLL_ADD: u8 = 6;
pub const IORING_OP_POLL_REMOVE: u8 = 7;
pub const IORING_OP_SYNC_FILE_RANGE: u8 = 8;
pub const IORING_OP_SENDMSG: u8 = 9;
pub const IORING_OP_RECVMSG: u8 = 10;
pub const IORING_OP_TIMEOUT: u8 = 11;
pub const IORING_OP_TIMEOUT_REMOVE: u8 = 12;
pub const IORING_OP_ACCEPT: u8 = 13;
pub const IORING_OP_ASYNC_CANCEL: u8 = 14;
pub const IORING_OP_LINK_TIMEOUT: u8 = 15;
pub const IORING_OP_CONNECT: u8 = 16;
pub const IORING_OP_FALLOCATE: u8 = 17;
pub const IORING_OP_OPENAT: u8 = 18;
pub const IORING_OP_CLOSE: u8 = 19;
pub const IORING_OP_FILES_UPDATE: u8 = 20;
pub const IORING_OP_STATX: u8 = 21;
pub const IORING_OP_READ: u8 = 22;
pub const IORING_OP_WRITE: u8 = 23;
pub const IORING_OP_FADVISE: u8 = 24;
pub const IORING_OP_MADVISE: u8 = 25;
pub const IORING_OP_SEND: u8 = 26;
pub const IORING_OP_RECV: u8 = 27;
pub const IORING_OP_OPENAT2: u8 = 28;
pub const IORING_OP_EPOLL_CTL: u8 = 29;
pub const IORING_OP_SPLICE: u8 = 30;
pub const IORING_OP_PROVIDE_BUFFERS: u8 = 31;
pub const IORING_OP_REMOVE_BUFFERS: u8 = 32;
pub const IORING_OP_TEE: u8 = 33;
pub const IORING_OP_SHUTDOWN: u8 = 34;
pub const IORING_OP_RENAMEAT: u8 = 35;
pub const IORING_OP_UNLINKAT: u8 = 36;
pub const IORING_OP_MKDIRAT: u8 = 37;
pub const IORING_OP_SYMLINKAT: u8 = 38;
pub const IORING_OP_LINKAT: u8 = 39;
pub const IORING_OP_MSG_RING: u8 = 40;
pub const IORING_OP_FSETXATTR: u8 = 41;
pub const IORING_OP_SETXATTR: u8 = 42;
pub const IORING_OP_FGETXATTR: u8 = 43;
pub const IORING_OP_GETXATTR: u8 = 44;
pub const IORING_OP_SOCKET: u8 = 45;
pub const IORING_OP_URING_CMD: u8 = 46;
pub const IORING_OP_SEND_ZC: u8 = 47;
pub const IORING_OP_SENDMSG_ZC: u8 = 48;
pub const IORING_OP_READ_MULTISHOT: u8 = 49;
pub const IORING_OP_WAITID: u8 = 50;
pub const IORING_OP_FUTEX_WAIT: u8 = 51;
pub const IORING_OP_FUTEX_WAKE: u8 = 52;
pub const IORING_OP_FUTEX_WAITV: u8 = 53;
pub const IORING_OP_FIXED_FD_INSTALL: u8 = 54;
pub const IORING_OP_FTRUNCATE: u8 = 55;
pub const IORING_OP_BIND: u8 = 56;
pub const IORING_OP_LISTEN: u8 = 57;
pub const IORING_OP_RECV_ZC: u8 = 58;
pub const IORING_OP_EPOLL_WAIT: u8 = 59;
pub const IORING_OP_READV_FIXED: u8 = 60;
pub const IORING_OP_WRITEV_FIXED: u8 = 61;
pub const IORING_OP_PIPE: u8 = 62;
/// One past the highest opcode this crate knows.
pub const IORING_OP_LAST: u8 = 63;

// === per-opcode flag words ===

/// `fsync_flags`.
pub const IORING_FSYNC_DATASYNC: u32 = 1 << 0;

/// `timeout_flags`.
pub const IORING_TIMEOUT_ABS: u32 = 1 << 0;
pub const IORING_TIMEOUT_UPDATE: u32 = 1 << 1;
pub const IORING_TIMEOUT_BOOTTIME: u32 = 1 << 2;
pub const IORING_TIMEOUT_REALTIME: u32 = 1 << 3;
pub const IORING_LINK_TIMEOUT_UPDATE: u32 = 1 << 4;
pub const IORING_TIMEOUT_ETIME_SUCCESS: u32 = 1 << 5;
pub const IORING_TIMEOUT_MULTISHOT: u32 = 1 << 6;

/// `cancel_flags` of `IORING_OP_ASYNC_CANCEL` (and `IORING_REGISTER_SYNC_CANCEL`).
pub const IORING_ASYNC_CANCEL_ALL: u32 = 1 << 0;
pub const IORING_ASYNC_CANCEL_FD: u32 = 1 << 1;
pub const IORING_ASYNC_CANCEL_ANY: u32 = 1 << 2;
pub const IORING_ASYNC_CANCEL_FD_FIXED: u32 = 1 << 3;
pub const IORING_ASYNC_CANCEL_USERDATA: u32 = 1 << 4;
pub const IORING_ASYNC_CANCEL_OP: u32 = 1 << 5;

/// `POLL_ADD` flags, carried in `sqe.len`.
pub const IORING_POLL_ADD_MULTI: u32 = 1 << 0;
pub const IORING_POLL_UPDATE_EVENTS: u32 = 1 << 1;
pub const IORING_POLL_UPDATE_USER_DATA: u32 = 1 << 2;
pub const IORING_POLL_ADD_LEVEL: u32 = 1 << 3;

/// Send/recv flags, carried in `sqe.ioprio`.
pub const IORING_RECVSEND_POLL_FIRST: u16 = 1 << 0;
pub const IORING_RECV_MULTISHOT: u16 = 1 << 1;
pub const IORING_RECVSEND_FIXED_BUF: u16 = 1 << 2;
pub const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
pub const IORING_RECVSEND_BUNDLE: u16 = 1 << 4;
/// Set in a zero-copy notification's `res` when the data was copied.
pub const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// Accept flags, carried in `sqe.ioprio`.
pub const IORING_ACCEPT_MULTISHOT: u16 = 1 << 0;
pub const IORING_ACCEPT_DONTWAIT: u16 = 1 << 1;
pub const IORING_ACCEPT_POLL_FIRST: u16 = 1 << 2;

/// `MSG_RING` commands, carried in `sqe.addr`.
pub const IORING_MSG_DATA: u64 = 0;
pub const IORING_MSG_SEND_FD: u64 = 1;
/// `msg_ring_flags`.
pub const IORING_MSG_RING_CQE_SKIP: u32 = 1 << 0;
pub const IORING_MSG_RING_FLAGS_PASS: u32 = 1 << 1;

/// Ask the kernel to pick a free direct-descriptor slot.
pub const IORING_FILE_INDEX_ALLOC: u32 = !0;

/// `splice_flags`: `splice_fd_in` is a registered file index.
pub const SPLICE_F_FD_IN_FIXED: u32 = 1 << 31;

// === io_uring_register opcodes ===

pub const IORING_REGISTER_BUFFERS: u32 = 0;
pub const IORING_UNREGISTER_BUFFERS: u32 = 1;
pub const IORING_REGISTER_FILES: u32 = 2;
pub const IORING_UNREGISTER_FILES: u32 = 3;
pub const IORING_REGISTER_EVENTFD: u32 = 4;
pub const IORING_UNREGISTER_EVENTFD: u32 = 5;
pub const IORING_REGISTER_FILES_UPDATE: u32 = 6;
pub const IORING_REGISTER_EVENTFD_ASYNC: u32 = 7;
pub const IORING_REGISTER_PROBE: u32 = 8;
pub const IORING_REGISTER_PERSONALITY: u32 = 9;
pub const IORING_UNREGISTER_PERSONALITY: u32 = 10;
pub const IORING_REGISTER_RESTRICTIONS: u32 = 11;
pub const IORING_REGISTER_ENABLE_RINGS: u32 = 12;
pub const IORING_REGISTER_FILES2: u32 = 13;
pub const IORING_REGISTER_FILES_UPDATE2: u32 = 14;
pub const IORING_REGISTER_BUFFERS2: u32 = 15;
pub const IORING_REGISTER_BUFFERS_UPDATE: u32 = 16;
pub const IORING_REGISTER_IOWQ_AFF: u32 = 17;
pub const IORING_UNREGISTER_IOWQ_AFF: u32 = 18;
pub const IORING_REGISTER_IOWQ_MAX_WORKERS: u32 = 19;
pub const IORING_REGISTER_RING_FDS: u32 = 20;
pub const IORING_UNREGISTER_RING_FDS: u32 = 21;
pub const IORING_REGISTER_PBUF_RING: u32 = 22;
pub const IORING_UNREGISTER_PBUF_RING: u32 = 23;
pub const IORING_REGISTER_SYNC_CANCEL: u32 = 24;
pub const IORING_REGISTER_FILE_ALLOC_RANGE: u32 = 25;
pub const IORING_REGISTER_PBUF_STATUS: u32 = 26;
pub const IORING_REGISTER_NAPI: u32 = 27;
pub const IORING_UNREGISTER_NAPI: u32 = 28;
pub const IORING_REGISTER_CLOCK: u32 = 29;
pub const IORING_REGISTER_CLONE_BUFFERS: u32 = 30;
pub const IORING_REGISTER_SEND_MSG_RING: u32 = 31;
/// Or'ed into the opcode: the fd argument is a registered ring index.
pub const IORING_REGISTER_USE_REGISTERED_RING: u32 = 1 << 31;

/// `io_uring_probe_op.flags`: the opcode is supported.
pub const IO_URING_OP_SUPPORTED: u16 = 1 << 0;

/// `io_uring_buf_reg.flags`.
pub const IOU_PBUF_RING_MMAP: u16 = 1 << 0;
pub const IOU_PBUF_RING_INC: u16 = 1 << 1;

/// `io_uring_rsrc_register.flags`: sparse registration.
pub const IORING_RSRC_REGISTER_SPARSE: u32 = 1 << 0;

// === layout pins ===

assert_eq_size!(io_uring_sqe, [u8; 64]);
assert_eq_size!(io_uring_cqe, [u8; 16]);
assert_eq_size!(io_uring_cqe32, [u8; 32]);
assert_eq_size!(io_sqring_offsets, [u8; 40]);
assert_eq_size!(io_cqring_offsets, [u8; 40]);
assert_eq_size!(io_uring_params, [u8; 120]);
assert_eq_size!(io_uring_probe, [u8; 16]);
assert_eq_size!(io_uring_probe_op, [u8; 8]);
assert_eq_size!(io_uring_getevents_arg, [u8; 24]);
assert_eq_size!(kernel_timespec, [u8; 16]);
assert_eq_size!(io_uring_buf, [u8; 16]);
assert_eq_size!(io_uring_buf_reg, [u8; 40]);
assert_eq_size!(io_uring_rsrc_register, [u8; 32]);
assert_eq_size!(io_uring_rsrc_update, [u8; 16]);
assert_eq_size!(io_uring_rsrc_update2, [u8; 32]);
assert_eq_size!(open_how, [u8; OPEN_HOW_SIZE_VER0]);

const_assert_eq!(offset_of!(io_uring_sqe, opcode), 0);
const_assert_eq!(offset_of!(io_uring_sqe, flags), 1);
const_assert_eq!(offset_of!(io_uring_sqe, ioprio), 2);
const_assert_eq!(offset_of!(io_uring_sqe, fd), 4);
const_assert_eq!(offset_of!(io_uring_sqe, off_or_addr2), 8);
const_assert_eq!(offset_of!(io_uring_sqe, addr_or_splice_off_in), 16);
const_assert_eq!(offset_of!(io_uring_sqe, len), 24);
const_assert_eq!(offset_of!(io_uring_sqe, op_flags), 28);
const_assert_eq!(offset_of!(io_uring_sqe, user_data), 32);
const_assert_eq!(offset_of!(io_uring_sqe, buf_index_or_group), 40);
const_assert_eq!(offset_of!(io_uring_sqe, personality), 42);
const_assert_eq!(offset_of!(io_uring_sqe, splice_fd_in_or_file_index), 44);
const_assert_eq!(offset_of!(io_uring_sqe, addr3), 48);
const_assert_eq!(offset_of!(io_uring_sqe, pad2), 56);

const_assert_eq!(offset_of!(io_uring_cqe, user_data), 0);
const_assert_eq!(offset_of!(io_uring_cqe, res), 8);
const_assert_eq!(offset_of!(io_uring_cqe, flags), 12);
const_assert_eq!(offset_of!(io_uring_cqe32, big_cqe), 16);

const_assert_eq!(offset_of!(io_sqring_offsets, head), 0);
const_assert_eq!(offset_of!(io_sqring_offsets, tail), 4);
const_assert_eq!(offset_of!(io_sqring_offsets, ring_mask), 8);
const_assert_eq!(offset_of!(io_sqring_offsets, ring_entries), 12);
const_assert_eq!(offset_of!(io_sqring_offsets, flags), 16);
const_assert_eq!(offset_of!(io_sqring_offsets, dropped), 20);
const_assert_eq!(offset_of!(io_sqring_offsets, array), 24);
const_assert_eq!(offset_of!(io_sqring_offsets, resv1), 28);
const_assert_eq!(offset_of!(io_sqring_offsets, user_addr), 32);

const_assert_eq!(offset_of!(io_cqring_offsets, head), 0);
const_assert_eq!(offset_of!(io_cqring_offsets, tail), 4);
const_assert_eq!(offset_of!(io_cqring_offsets, ring_mask), 8);
const_assert_eq!(offset_of!(io_cqring_offsets, ring_entries), 12);
const_assert_eq!(offset_of!(io_cqring_offsets, overflow), 16);
const_assert_eq!(offset_of!(io_cqring_offsets, cqes), 20);
const_assert_eq!(offset_of!(io_cqring_offsets, flags), 24);
const_assert_eq!(offset_of!(io_cqring_offsets, resv1), 28);
const_assert_eq!(offset_of!(io_cqring_offsets, user_addr), 32);

const_assert_eq!(offset_of!(io_uring_params, sq_entries), 0);
const_assert_eq!(offset_of!(io_uring_params, cq_entries), 4);
const_assert_eq!(offset_of!(io_uring_params, flags), 8);
const_assert_eq!(offset_of!(io_uring_params, sq_thread_cpu), 12);
const_assert_eq!(offset_of!(io_uring_params, sq_thread_idle), 16);
const_assert_eq!(offset_of!(io_uring_params, features), 20);
const_assert_eq!(offset_of!(io_uring_params, wq_fd), 24);
const_assert_eq!(offset_of!(io_uring_params, resv), 28);
const_assert_eq!(offset_of!(io_uring_params, sq_off), 40);
const_assert_eq!(offset_of!(io_uring_params, cq_off), 80);

const_assert_eq!(offset_of!(io_uring_probe, last_op), 0);
const_assert_eq!(offset_of!(io_uring_probe, ops_len), 1);
const_assert_eq!(offset_of!(io_uring_probe, resv), 2);
const_assert_eq!(offset_of!(io_uring_probe, resv2), 4);
const_assert_eq!(offset_of!(io_uring_probe_op, op), 0);
const_assert_eq!(offset_of!(io_uring_probe_op, flags), 2);
const_assert_eq!(offset_of!(io_uring_probe_op, resv2), 4);

const_assert_eq!(offset_of!(io_uring_getevents_arg, sigmask), 0);
const_assert_eq!(offset_of!(io_uring_getevents_arg, sigmask_sz), 8);
const_assert_eq!(offset_of!(io_uring_getevents_arg, min_wait_usec), 12);
const_assert_eq!(offset_of!(io_uring_getevents_arg, ts), 16);

const_assert_eq!(offset_of!(io_uring_buf, addr), 0);
const_assert_eq!(offset_of!(io_uring_buf, len), 8);
const_assert_eq!(offset_of!(io_uring_buf, bid), 12);
const_assert_eq!(offset_of!(io_uring_buf, resv), BUF_RING_TAIL_OFFSET);

const_assert_eq!(offset_of!(io_uring_buf_reg, ring_addr), 0);
const_assert_eq!(offset_of!(io_uring_buf_reg, ring_entries), 8);
const_assert_eq!(offset_of!(io_uring_buf_reg, bgid), 12);
const_assert_eq!(offset_of!(io_uring_buf_reg, flags), 14);
const_assert_eq!(offset_of!(io_uring_buf_reg, resv), 16);

const_assert_eq!(offset_of!(io_uring_rsrc_register, nr), 0);
const_assert_eq!(offset_of!(io_uring_rsrc_register, flags), 4);
const_assert_eq!(offset_of!(io_uring_rsrc_register, data), 16);
const_assert_eq!(offset_of!(io_uring_rsrc_register, tags), 24);
const_assert_eq!(offset_of!(io_uring_rsrc_update2, nr), 24);
const_assert_eq!(offset_of!(io_uring_rsrc_update, data), 8);

const_assert_eq!(offset_of!(open_how, flags), 0);
const_assert_eq!(offset_of!(open_how, mode), 8);
const_assert_eq!(offset_of!(open_how, resolve), 16);
