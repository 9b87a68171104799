//! The native lane: fds bound to one shard's ring, and persistent file sessions.
//!
//! A [`UringBoundFd`] submits every op on the ring of the shard it was bound
//! to, from whatever thread or task calls it: requests from elsewhere are
//! steered to that shard before submission, and the completion wakes the
//! caller wherever it runs. A [`UringFileSession`] goes one step further: it
//! registers the file in that shard's fixed-file table once, so repeated reads
//! carry `IOSQE_FIXED_FILE` and skip the kernel's per-op fd lookup.
//!
//! Sockets bind the same way ([`RuntimeHandle::bind_tcp_stream`],
//! [`RuntimeHandle::bind_udp_socket`]) and get stream and datagram ops:
//! [`UringBoundFd::send`], [`UringBoundFd::recv`], batches, and multishot
//! receive into provided buffers ([`UringBoundFd::recv_multishot`]). They run
//! the same code as [`crate::net`]'s sockets, on a lane bound to the shard.
//!
//! # Batches on a stream socket
//!
//! Two sends in flight at once on one TCP socket may interleave: if the first
//! is accepted only in part, the second can write before the first's rest.
//! [`UringBoundFd::send_batch`] keeps every send in flight at once and is
//! meant for datagram sockets (each datagram is atomic).
//! [`UringBoundFd::send_all_batch`] keeps byte order: on a stream socket it
//! copies runs of up to `window` small buffers into one contiguous send and
//! continues each send until whole before the next starts; on a datagram
//! socket it keeps up to `window` sends in flight.
//! [`UringBoundFd::recv_batch_into`] issues one receive per buffer, in turn.
//!
//! ```
//! let rt = spargio::Runtime::new().unwrap();
//! let path = std::env::temp_dir().join(format!("spargio-native-doc-{}", std::process::id()));
//! std::fs::write(&path, b"native lane").unwrap();
//! let bound = rt.handle().bind_file(std::fs::File::open(&path).unwrap());
//! let text = rt
//!     .block_on(async move {
//!         let session = bound.start_file_session().await?;
//!         let bytes = session.read_vec_at(6, 0).await?;
//!         session.shutdown().await;
//!         Ok::<_, std::io::Error>(bytes)
//!     })
//!     .unwrap()
//!     .unwrap();
//! assert_eq!(text, b"native");
//! # std::fs::remove_file(&path).unwrap();
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use spargio_sys::op::fs::{Fsync, Read, SharedFd, Statx, Write};

use crate::io::{BufResult, IoBuf, IoBufMut, check_offset, cqe_result, read_done, submit};
use crate::net::stash::RecvStash;
use crate::runtime::{RuntimeHandle, Shared};
use crate::shard;

mod net;

pub use net::{MAX_RECV_LEN, RecvSegments};

/// An fd whose ops all run on one shard's ring.
#[derive(Clone)]
pub struct UringBoundFd {
    fd: SharedFd,
    shard: usize,
    rt: Arc<Shared>,
    /// What dropped receives on a socket left (shared by clones).
    stash: Arc<RecvStash>,
}

impl std::fmt::Debug for UringBoundFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringBoundFd")
            .field("fd", &self.fd.as_raw_fd())
            .field("shard", &self.shard)
            .finish()
    }
}

impl RuntimeHandle {
    /// Binds a file to a shard (the calling shard, or the next in turn from outside).
    pub fn bind_file(&self, file: std::fs::File) -> UringBoundFd {
        self.bind_owned_fd(OwnedFd::from(file))
    }

    /// Binds any owned fd to a shard.
    pub fn bind_owned_fd(&self, fd: OwnedFd) -> UringBoundFd {
        let shard = shard::current_shard_of(&self.shared).unwrap_or_else(|| self.shared.next_round_robin());
        UringBoundFd {
            fd: Arc::new(fd),
            shard,
            rt: self.shared.clone(),
            stash: RecvStash::new(),
        }
    }

    /// Binds an fd to a chosen shard.
    ///
    /// # Errors
    ///
    /// [`crate::RuntimeError::NoSuchShard`] for an index out of range.
    pub fn bind_owned_fd_to(&self, fd: OwnedFd, shard: usize) -> Result<UringBoundFd, crate::RuntimeError> {
        if shard >= self.shard_count() {
            return Err(crate::RuntimeError::NoSuchShard(shard));
        }
        Ok(UringBoundFd {
            fd: Arc::new(fd),
            shard,
            rt: self.shared.clone(),
            stash: RecvStash::new(),
        })
    }
}

impl UringBoundFd {
    /// The shard whose ring runs this fd's ops.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The raw fd (still owned by this value).
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Takes the fd back, once no clone of this value and no op in flight
    /// (including a cancelled one awaiting its final completion) holds it,
    /// and no bytes that a dropped receive took wait to be received (see
    /// [`recv_into`](Self::recv_into)).
    ///
    /// # Errors
    ///
    /// Gives `self` back while anything else still holds the fd.
    pub fn into_owned_fd(self) -> Result<OwnedFd, UringBoundFd> {
        if self.stash.is_busy() {
            return Err(self);
        }
        let UringBoundFd { fd, shard, rt, stash } = self;
        Arc::try_unwrap(fd).map_err(|fd| UringBoundFd { fd, shard, rt, stash })
    }

    /// Reads up to `len` bytes at `pos` (one read: the result may be shorter
    /// than `len` before the end of the file).
    ///
    /// The buffer is sized by what can be read, not by `len`, as
    /// [`File::read_at`](crate::fs::File::read_at) describes: a `len` from
    /// untrusted input (4 GiB for a 10-byte file, or `1 << 40`) allocates at
    /// most the bytes left in the file, or
    /// [`MAX_UNSIZED_READ`](crate::fs::MAX_UNSIZED_READ) for a file without a
    /// size, and gives a short read.
    ///
    /// # Errors
    ///
    /// The read error (or, above [`SMALL_READ`](crate::fs::SMALL_READ)
    /// bytes, the `statx` error); `InvalidInput` for `pos` beyond
    /// `i64::MAX`; an error once the runtime shut down. A huge `len` is never
    /// an error.
    pub async fn read_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>> {
        let capacity = self.read_capacity(pos, len).await?;
        let (res, mut buf) = self.read_at(Vec::with_capacity(capacity), pos).await;
        buf.truncate(res?);
        Ok(buf)
    }

    /// The buffer size for a read of up to `len` bytes at `pos` (`statx` on
    /// this fd's shard when `len` is above `SMALL_READ`).
    async fn read_capacity(&self, pos: u64, len: usize) -> io::Result<usize> {
        check_offset(pos)?;
        if len <= crate::fs::SMALL_READ {
            return Ok(len);
        }
        let fut = submit(&self.rt, Some(self.shard), Statx::fd(self.fd.clone())).map_err(|(e, _)| e)?;
        let (cqe, op) = fut.await;
        cqe_result(&cqe)?;
        let meta = crate::fs::Metadata::from_statx(op.into_statx());
        Ok(crate::fs::read_capacity(len, pos, meta.size_hint()))
    }

    /// Reads at `pos` into `buf` (up to its capacity).
    pub async fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        self.read_op(Read::new(self.fd.clone(), buf, pos), pos).await
    }

    async fn read_op<B: IoBufMut>(&self, op: Read<B>, pos: u64) -> BufResult<usize, B> {
        if let Err(e) = check_offset(pos) {
            return (Err(e), op.into_buf());
        }
        match submit(&self.rt, Some(self.shard), op) {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok(fut) => {
                let (cqe, op) = fut.await;
                read_done(cqe_result(&cqe), op)
            }
        }
    }

    /// Writes `buf`'s initialized bytes at `pos`.
    pub async fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(e) = check_offset(pos) {
            return (Err(e), buf);
        }
        match submit(&self.rt, Some(self.shard), Write::new(self.fd.clone(), buf, pos)) {
            Err((e, op)) => (Err(e), op.into_buf()),
            Ok(fut) => {
                let (cqe, op) = fut.await;
                (cqe_result(&cqe), op.into_buf())
            }
        }
    }

    /// Flushes the file to its device (`fsync`).
    ///
    /// # Errors
    ///
    /// The `fsync` error, or an error once the runtime shut down.
    pub async fn fsync(&self) -> io::Result<()> {
        let fut =
            submit(&self.rt, Some(self.shard), Fsync::new(self.fd.clone(), false)).map_err(|(e, _)| e)?;
        let (cqe, _) = fut.await;
        cqe_result(&cqe).map(drop)
    }

    /// Registers the file in its shard's fixed-file table and returns a
    /// session whose reads skip the per-op fd lookup. Where the ring has no
    /// free slot (or no table, e.g. on the Queue backend) the session still
    /// works, through the plain fd.
    ///
    /// # Errors
    ///
    /// An error once the runtime shut down.
    pub async fn start_file_session(&self) -> io::Result<UringFileSession> {
        let fd = self.fd.clone();
        let handle = RuntimeHandle {
            shared: self.rt.clone(),
        };
        let slot = handle
            .spawn_pinned(self.shard, async move { register_slot(&fd) })
            .map_err(|e| io::Error::other(e.to_string()))?
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        if slot.is_some() {
            self.rt.shards[self.shard]
                .counters
                .file_sessions
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(UringFileSession {
            bound: self.clone(),
            slot,
        })
    }
}

/// Puts `fd` in a free slot of the calling shard's registered-file table.
fn register_slot(fd: &SharedFd) -> Option<u32> {
    let slot = shard::alloc_fixed_slot()?;
    match shard::with_ring(|ring| ring.update_files(slot, &[Some(std::os::fd::AsFd::as_fd(&**fd))])) {
        Some(Ok(1)) => Some(slot),
        _ => {
            shard::free_fixed_slot(slot);
            None
        }
    }
}

/// Empties a slot of the calling shard's registered-file table.
fn unregister_slot(slot: u32) {
    if let Some(Ok(_)) = shard::with_ring(|ring| ring.update_files(slot, &[None])) {
        shard::free_fixed_slot(slot);
    }
}

/// A file registered on one shard's ring for repeated reads.
///
/// Dropping the session releases its slot (on its shard, in the background);
/// [`UringFileSession::shutdown`] does it and waits.
#[derive(Debug)]
pub struct UringFileSession {
    bound: UringBoundFd,
    slot: Option<u32>,
}

impl UringFileSession {
    /// The shard the session lives on.
    pub fn shard(&self) -> usize {
        self.bound.shard
    }

    /// True when reads go through a registered-file slot.
    pub fn is_registered(&self) -> bool {
        self.slot.is_some()
    }

    /// Reads up to `len` bytes at `pos`; the buffer is sized by what can be
    /// read, not by `len`, as [`UringBoundFd::read_vec_at`] describes.
    ///
    /// # Errors
    ///
    /// As [`UringBoundFd::read_vec_at`].
    pub async fn read_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>> {
        let capacity = self.bound.read_capacity(pos, len).await?;
        let (res, mut buf) = self.read_at(Vec::with_capacity(capacity), pos).await;
        buf.truncate(res?);
        Ok(buf)
    }

    /// Reads at `pos` into `buf` (up to its capacity).
    pub async fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        let op = Read::new(self.bound.fd.clone(), buf, pos);
        let op = match self.slot {
            Some(slot) => op.with_fixed_slot(slot),
            None => op,
        };
        self.bound.read_op(op, pos).await
    }

    /// Releases the registered slot and waits until it is released.
    pub async fn shutdown(mut self) {
        if let Some(slot) = self.slot.take() {
            let handle = RuntimeHandle {
                shared: self.bound.rt.clone(),
            };
            if let Ok(j) = handle.spawn_pinned(self.bound.shard, async move { unregister_slot(slot) }) {
                let _ = j.await;
            }
        }
    }
}

impl Drop for UringFileSession {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let handle = RuntimeHandle {
                shared: self.bound.rt.clone(),
            };
            // At shutdown the ring closes with its table; nothing to release then.
            let _ = handle.spawn_pinned(self.bound.shard, async move { unregister_slot(slot) });
        }
    }
}
