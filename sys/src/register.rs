//! `io_uring_register` operations, as safe functions wherever soundness allows.
//!
//! Each function takes the ring as a [`BorrowedFd`], so the fd is open for the
//! call. A registration is safe when the kernel keeps no pointer into our
//! memory after the call returns: registered files (the kernel takes its own
//! references to the files), ring fds, eventfds, probes, and ring-less
//! `MSG_RING` data messages. Registering buffers is `unsafe` because the kernel
//! reads and writes them until they are unregistered. Provided-buffer rings
//! live in [`crate::bufring`], which owns their memory.
//!
//! [`Ring`] has thin methods for the same operations at the end of this file.
//!
//! Not wrapped yet: `IORING_REGISTER_SYNC_CANCEL` (its argument struct,
//! `io_uring_sync_cancel_reg`, is not in [`crate::abi`]), personalities,
//! restrictions, io-wq affinity and worker limits, NAPI, clocks.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr;

use crate::abi;
use crate::msg::{self, Message, UserData};
use crate::probe::OpTable;
use std::sync::Arc;

use crate::buf::FixedBufTable;
use crate::ring::{Ring, RingFd};

/// The largest number of probe entries the kernel may fill: opcodes are `u8`.
const PROBE_OPS: usize = 256;

/// The `IORING_REGISTER_PROBE` argument: the header followed by its entries,
/// laid out (and aligned) exactly as the kernel's flexible array member.
#[repr(C)]
struct ProbeBuffer {
    header: abi::io_uring_probe,
    ops: [abi::io_uring_probe_op; PROBE_OPS],
}

/// The fd numbers of a fixed-file table update, `-1` for an empty slot.
fn raw_fds(fds: &[Option<BorrowedFd<'_>>]) -> Vec<RawFd> {
    fds.iter().map(|fd| fd.map_or(-1, |fd| fd.as_raw_fd())).collect()
}

fn len_u32(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "more than u32::MAX entries"))
}

/// Registers `fds` as the ring's fixed-file table (`IORING_REGISTER_FILES`).
///
/// A `None` entry leaves that slot empty (sparse), to be filled later by
/// [`update_files`] or by direct-descriptor ops. The kernel takes its own
/// reference to each file: closing an fd afterwards does not affect the table.
/// The fds are borrowed, so only files the caller holds can be registered.
///
/// # Errors
///
/// `EBUSY` when a table is already registered, `EBADF` for an fd that is not
/// open (or is an io_uring), `EMFILE` over `RLIMIT_NOFILE`, `EINVAL` for an
/// empty slice.
pub fn register_files(ring: BorrowedFd<'_>, fds: &[Option<BorrowedFd<'_>>]) -> io::Result<()> {
    let nr = len_u32(fds.len())?;
    let fds = raw_fds(fds);
    // SAFETY: the kernel reads `nr` i32s from `fds` during the call and keeps no
    // pointer to them (it takes file references).
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_FILES,
            fds.as_ptr().cast(),
            nr,
        )
    }
    .map(drop)
}

/// Registers an empty fixed-file table of `nr` slots (`IORING_REGISTER_FILES2`
/// with `IORING_RSRC_REGISTER_SPARSE`, Linux 5.19).
///
/// # Errors
///
/// As [`register_files`]; `EINVAL` on kernels without sparse registration.
pub fn register_files_sparse(ring: BorrowedFd<'_>, nr: u32) -> io::Result<()> {
    let arg = abi::io_uring_rsrc_register {
        nr,
        flags: abi::IORING_RSRC_REGISTER_SPARSE,
        ..Default::default()
    };
    let size = len_u32(size_of::<abi::io_uring_rsrc_register>())?;
    // SAFETY: `arg` is a valid `io_uring_rsrc_register` for the call; with
    // SPARSE the kernel reads no `data` or `tags` array (both zero).
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_FILES2,
            ptr::from_ref(&arg).cast(),
            size,
        )
    }
    .map(drop)
}

/// Replaces the fixed-file slots `offset..offset + fds.len()` with `fds`
/// (`IORING_REGISTER_FILES_UPDATE`); `None` empties a slot. Returns how many
/// slots were updated.
///
/// # Errors
///
/// `ENXIO` when no table is registered, `EINVAL` for slots past its end,
/// `EBADF` for an fd that is not open.
pub fn update_files(ring: BorrowedFd<'_>, offset: u32, fds: &[Option<BorrowedFd<'_>>]) -> io::Result<u32> {
    let nr = len_u32(fds.len())?;
    let fds = raw_fds(fds);
    let arg = abi::io_uring_rsrc_update {
        offset,
        resv: 0,
        data: fds.as_ptr() as u64,
    };
    // SAFETY: `arg` and the `nr` i32s it points at are valid for the call; the
    // kernel keeps no pointer to either.
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_FILES_UPDATE,
            ptr::from_ref(&arg).cast(),
            nr,
        )
    }
}

/// Drops the ring's fixed-file table (`IORING_UNREGISTER_FILES`).
///
/// # Errors
///
/// `ENXIO` when no table is registered.
pub fn unregister_files(ring: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no argument.
    unsafe { crate::syscall::register(ring.as_raw_fd(), abi::IORING_UNREGISTER_FILES, ptr::null(), 0) }
        .map(drop)
}

/// Registers the ring's own fd with the calling thread (`IORING_REGISTER_RING_FDS`,
/// Linux 5.18) and returns its index, which `io_uring_enter` and
/// `io_uring_register` then accept with `IORING_ENTER_REGISTERED_RING` /
/// `IORING_REGISTER_USE_REGISTERED_RING` to skip the fd lookup.
///
/// The index belongs to the calling thread: other threads cannot use it.
///
/// # Errors
///
/// `EINVAL` on older kernels, `EBUSY` when the thread's table (16 slots) is full.
pub fn register_ring_fd(ring: BorrowedFd<'_>) -> io::Result<u32> {
    // offset u32::MAX (-1): let the kernel pick a free slot and write it back.
    let mut arg = abi::io_uring_rsrc_update {
        offset: u32::MAX,
        resv: 0,
        data: ring.as_raw_fd() as u64,
    };
    // SAFETY: `arg` is a valid, exclusively borrowed `io_uring_rsrc_update` for
    // the call; the kernel writes the chosen index into its `offset`.
    let n = unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_RING_FDS,
            ptr::from_mut(&mut arg).cast_const().cast(),
            1,
        )
    }?;
    if n != 1 {
        return Err(io::Error::other("IORING_REGISTER_RING_FDS registered no fd"));
    }
    Ok(arg.offset)
}

/// Unregisters the calling thread's registered ring fd `index`
/// (`IORING_UNREGISTER_RING_FDS`).
///
/// # Errors
///
/// `EINVAL` for an index out of range; unregistering an empty slot is not an error.
pub fn unregister_ring_fd(ring: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    let arg = abi::io_uring_rsrc_update {
        offset: index,
        resv: 0,
        data: 0,
    };
    // SAFETY: `arg` is valid for the call; the kernel only reads it.
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_UNREGISTER_RING_FDS,
            ptr::from_ref(&arg).cast(),
            1,
        )
    }
    .map(drop)
}

/// Makes the kernel signal `eventfd` whenever it posts a CQE to this ring
/// (`IORING_REGISTER_EVENTFD`). The kernel keeps its own reference to the eventfd.
///
/// # Errors
///
/// `EBUSY` when an eventfd is already registered, `EBADF` when `eventfd` is
/// not one.
pub fn register_eventfd(ring: BorrowedFd<'_>, eventfd: BorrowedFd<'_>) -> io::Result<()> {
    let fd: RawFd = eventfd.as_raw_fd();
    // SAFETY: the kernel reads one i32 from `fd` during the call.
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_EVENTFD,
            ptr::from_ref(&fd).cast(),
            1,
        )
    }
    .map(drop)
}

/// Stops signalling the registered eventfd (`IORING_UNREGISTER_EVENTFD`).
///
/// # Errors
///
/// `ENXIO` when none is registered.
pub fn unregister_eventfd(ring: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no argument.
    unsafe { crate::syscall::register(ring.as_raw_fd(), abi::IORING_UNREGISTER_EVENTFD, ptr::null(), 0) }
        .map(drop)
}

/// Registers fixed buffers (`IORING_REGISTER_BUFFERS`) for `READ_FIXED` /
/// `WRITE_FIXED` and registered-buffer sends.
///
/// # Errors
///
/// `EBUSY` when buffers are already registered, `ENOMEM`/`EFAULT` when the
/// kernel cannot pin the memory (memlock limit), `EINVAL` for zero-length or
/// too many (over 16384) buffers or one over 1 GiB.
///
/// # Safety
///
/// Every buffer `iovecs` describes must stay valid (allocated, and not
/// accessed in ways that conflict with the kernel's access through fixed-buffer
/// ops) until [`unregister_buffers`] returns or the ring is closed and all ops
/// using them have completed. The `iovec` array itself is only read during the call.
pub unsafe fn register_buffers(ring: BorrowedFd<'_>, iovecs: &[libc::iovec]) -> io::Result<()> {
    let nr = len_u32(iovecs.len())?;
    // SAFETY: the array is read during the call; the lifetime of the memory it
    // describes is the caller's obligation (see `# Safety`).
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_BUFFERS,
            iovecs.as_ptr().cast(),
            nr,
        )
    }
    .map(drop)
}

/// Unregisters the fixed buffers (`IORING_UNREGISTER_BUFFERS`).
///
/// # Errors
///
/// `ENXIO` when none are registered.
pub fn unregister_buffers(ring: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no argument; unregistering only drops the kernel's references.
    unsafe { crate::syscall::register(ring.as_raw_fd(), abi::IORING_UNREGISTER_BUFFERS, ptr::null(), 0) }
        .map(drop)
}

/// Registers a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
///
/// # Errors
///
/// `EINVAL` for bad entries or alignment (or an old kernel), `EEXIST` when the
/// group id is taken.
///
/// # Safety
///
/// Unless `reg.flags` has `IOU_PBUF_RING_MMAP`, `reg.ring_addr` must point at
/// `reg.ring_entries` page-aligned `io_uring_buf` entries that stay valid until
/// the group is unregistered, and every buffer published in the ring must stay
/// valid until the kernel has handed it back in a CQE or the group is
/// unregistered with no op using it. [`crate::bufring::BufRing`] upholds this.
pub unsafe fn register_pbuf_ring(ring: BorrowedFd<'_>, reg: &abi::io_uring_buf_reg) -> io::Result<()> {
    // SAFETY: `reg` is valid for the call; the memory it names is the caller's
    // obligation (see `# Safety`).
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_PBUF_RING,
            ptr::from_ref(reg).cast(),
            1,
        )
    }
    .map(drop)
}

/// Unregisters the provided-buffer group `bgid` (`IORING_UNREGISTER_PBUF_RING`).
///
/// # Errors
///
/// `ENOENT` when no ring is registered under `bgid`.
pub fn unregister_pbuf_ring(ring: BorrowedFd<'_>, bgid: u16) -> io::Result<()> {
    let reg = abi::io_uring_buf_reg {
        bgid,
        ..Default::default()
    };
    // SAFETY: `reg` is valid for the call and only read. Unregistering makes the
    // kernel forget the ring; it never makes it touch user memory.
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_UNREGISTER_PBUF_RING,
            ptr::from_ref(&reg).cast(),
            1,
        )
    }
    .map(drop)
}

/// Asks the kernel which opcodes it supports (`IORING_REGISTER_PROBE`, Linux 5.6).
///
/// # Errors
///
/// `EINVAL` on kernels without the probe.
pub fn probe(ring: BorrowedFd<'_>) -> io::Result<OpTable> {
    // Boxed: 2 KiB. The kernel requires the buffer to be zeroed.
    let mut buf = Box::new(ProbeBuffer {
        header: abi::io_uring_probe::default(),
        ops: [abi::io_uring_probe_op::default(); PROBE_OPS],
    });
    // SAFETY: `buf` is a zeroed header followed by PROBE_OPS entries, exclusively
    // borrowed for the call; the kernel writes at most that many entries.
    unsafe {
        crate::syscall::register(
            ring.as_raw_fd(),
            abi::IORING_REGISTER_PROBE,
            ptr::from_mut(&mut *buf).cast_const().cast(),
            PROBE_OPS as u32,
        )
    }?;
    Ok(OpTable::from_probe(&buf.header, &buf.ops))
}

/// Posts a CQE into the ring `target` without a ring of one's own
/// (`IORING_REGISTER_SEND_MSG_RING`, Linux 6.13): how a thread with no ring
/// (a foreign thread, protocol 2) sends a `MSG_RING` data message.
///
/// The target reaps a CQE with `user_data`, `res` (the bit pattern of the
/// `u32`) and, with `Some(flags)`, those CQE flags (which needs
/// `IORING_MSG_RING_FLAGS_PASS`). A data message points at no memory, and
/// the target is a ring this crate made ([`RingFd`] keeps its fd open), so
/// this is safe. Returns once the CQE is posted (or queued as task work for a
/// `DEFER_TASKRUN` target).
///
/// # Errors
///
/// `InvalidInput` for a `user_data` that names an op (a message never
/// completes an op of the target's table); `EINVAL` (or `EBADF` before 6.13,
/// which rejected fd `-1`) when the kernel lacks ring-less messages;
/// `EBADFD` when `target` is a simulated ring; `EOVERFLOW` when the target's
/// CQ is full; `EOWNERDEAD` when the `SINGLE_ISSUER` target's thread has
/// exited.
pub fn send_msg_ring_without_ring(
    target: &RingFd,
    user_data: UserData,
    res: u32,
    flags: Option<u32>,
) -> io::Result<()> {
    if matches!(user_data.decode(), msg::Tag::Op(_)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message may not carry an op's tag",
        ));
    }
    let post = crate::Cqe {
        user_data: user_data.get(),
        res: res as i32,
        flags: flags.unwrap_or(0),
    };
    let sqe = msg::post_sqe(target.raw(), post, flags.is_some(), UserData::from_raw(0));
    // SAFETY: the kernel copies the 64-byte SQE during the call; a MSG_RING data
    // command references no memory, and `target` keeps the ring's fd open.
    unsafe {
        crate::syscall::register(
            -1,
            abi::IORING_REGISTER_SEND_MSG_RING,
            ptr::from_ref(sqe.as_raw()).cast(),
            1,
        )
    }
    .map(drop)
}

/// Sends a runtime [`Message`] with [`send_msg_ring_without_ring`].
///
/// # Errors
///
/// As [`send_msg_ring_without_ring`].
pub fn send_message_without_ring(target: &RingFd, m: &Message) -> io::Result<()> {
    let post = m.target_cqe();
    send_msg_ring_without_ring(target, m.user_data(), post.res as u32, m.extra)
}

/// A [`FixedBufTable`] registered with one ring (`IORING_REGISTER_BUFFERS`).
///
/// Holds the table and the ring's fd, so neither goes away while the kernel
/// may use the buffers. [`FixedBufRegistration::unregister`] on the same ring
/// releases both; a registration dropped without it (or whose unregister
/// failed) leaks the table and the ring fd on purpose: the kernel may still
/// hold the memory, so it is never freed.
#[derive(Debug)]
pub struct FixedBufRegistration {
    /// `None` only after a successful unregister.
    held: Option<(Arc<FixedBufTable>, RingFd)>,
}

impl FixedBufRegistration {
    /// Registers every buffer of `table` as the fixed buffers of `ring`,
    /// buffer `i` under index `i`.
    ///
    /// # Errors
    ///
    /// As [`register_buffers`] (`EBUSY` when the ring has buffers already,
    /// `ENOMEM` over the memlock limit); `Unsupported` on a simulated ring.
    pub fn register(ring: &mut Ring, table: Arc<FixedBufTable>) -> io::Result<Self> {
        let iovecs = table.iovecs();
        // Each buffer is used by the one `FixedBuf` holding its index, which an
        // op lends to the kernel by value; the table never touches the bytes.
        // SAFETY: the iovecs describe the table's allocation, kept valid by the
        // `Arc` held here until a successful unregister (leaked otherwise, `Drop`).
        unsafe { register_buffers(kernel_fd(ring)?, &iovecs) }?;
        Ok(FixedBufRegistration {
            held: Some((table, ring.ring_fd())),
        })
    }

    /// The registered table.
    pub fn table(&self) -> &Arc<FixedBufTable> {
        &self.held.as_ref().expect("registered until unregister").0
    }

    /// Unregisters the buffers from `ring`, which must be the ring they were
    /// registered with, and releases the table. Ops that used them hold their
    /// `FixedBuf`, so the memory of one still in flight stays alive anyway.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for another ring; as [`unregister_buffers`]. Either way
    /// the registration is leaked (the table's memory is never freed).
    pub fn unregister(mut self, ring: &mut Ring) -> io::Result<()> {
        let (_, ring_fd) = self.held.as_ref().expect("registered until unregister");
        // Same ring: we hold its fd open, so its number cannot have been reused.
        if ring.ring_fd().raw() != ring_fd.raw() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fixed buffers unregistered from another ring",
            ));
        }
        unregister_buffers(kernel_fd(ring)?)?;
        self.held = None;
        Ok(())
    }
}

impl Drop for FixedBufRegistration {
    fn drop(&mut self) {
        // Never unregistered: the kernel may still use the memory, so it stays.
        if let Some(held) = self.held.take() {
            std::mem::forget(held);
        }
    }
}

fn kernel_fd(ring: &Ring) -> io::Result<BorrowedFd<'_>> {
    ring.kernel_fd().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring_register on a simulated ring",
        )
    })
}

/// Registration methods on a kernel ring; each fails with `Unsupported` on a
/// simulated ring.
impl Ring {
    /// [`register_files`] on this ring.
    ///
    /// # Errors
    ///
    /// As [`register_files`].
    pub fn register_files(&mut self, fds: &[Option<BorrowedFd<'_>>]) -> io::Result<()> {
        register_files(kernel_fd(self)?, fds)
    }

    /// [`register_files_sparse`] on this ring.
    ///
    /// # Errors
    ///
    /// As [`register_files_sparse`].
    pub fn register_files_sparse(&mut self, nr: u32) -> io::Result<()> {
        register_files_sparse(kernel_fd(self)?, nr)
    }

    /// [`update_files`] on this ring.
    ///
    /// # Errors
    ///
    /// As [`update_files`].
    pub fn update_files(&mut self, offset: u32, fds: &[Option<BorrowedFd<'_>>]) -> io::Result<u32> {
        update_files(kernel_fd(self)?, offset, fds)
    }

    /// [`unregister_files`] on this ring.
    ///
    /// # Errors
    ///
    /// As [`unregister_files`].
    pub fn unregister_files(&mut self) -> io::Result<()> {
        unregister_files(kernel_fd(self)?)
    }

    /// [`probe`] of this ring's kernel.
    ///
    /// # Errors
    ///
    /// As [`probe`].
    pub fn probe(&self) -> io::Result<OpTable> {
        probe(kernel_fd(self)?)
    }
}
