//! [`read_dir`]: a directory's entries, read on the blocking pool.
//!
//! Linux has no io_uring op for `getdents64`, so the entries are read by
//! `std::fs::read_dir` on the runtime's blocking pool, 128 entries per job; each entry's file type (from `d_type`, or an `lstat` on file systems
//! that leave it unknown) is read in the same job. [`DirEntry::metadata`] is
//! a `STATX` op on the calling shard's ring.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::blocking::BlockingHandle;

use super::Metadata;

/// Entries read by one blocking-pool job.
const BATCH: usize = 128;

type Batch = (std::fs::ReadDir, Vec<io::Result<DirEntry>>);

/// Opens the directory at `path` for reading its entries (without `.` and
/// `..`), in the order the file system gives.
///
/// ```
/// # spargio::RuntimeBuilder::new().shards(1).build().unwrap().block_on(async {
/// let mut total = 0;
/// let mut entries = spargio::fs::read_dir("/etc").await?;
/// while let Some(entry) = entries.next_entry().await? {
///     if entry.file_type().is_file() {
///         total += entry.metadata().await?.len();
///     }
/// }
/// # let _ = total;
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap().unwrap();
/// ```
///
/// # Errors
///
/// The `opendir` error (`NotFound`, `NotADirectory`, `PermissionDenied`);
/// an error outside a spargio runtime or after shutdown began.
pub async fn read_dir(path: impl AsRef<Path>) -> io::Result<ReadDir> {
    let path = path.as_ref().to_path_buf();
    let dir = super::blocking(move || std::fs::read_dir(path)).await?;
    Ok(ReadDir {
        state: State::Idle(dir),
        ready: Vec::new().into_iter(),
    })
}

/// The entries of a directory, from [`read_dir`].
///
/// Dropping it closes the directory (on the blocking pool, if a batch is
/// being read at the time).
#[derive(Debug)]
pub struct ReadDir {
    state: State,
    /// Entries read and not yet returned.
    ready: std::vec::IntoIter<io::Result<DirEntry>>,
}

#[derive(Debug)]
enum State {
    /// Between batches.
    Idle(std::fs::ReadDir),
    /// A batch is being read on the pool.
    Reading(BlockingHandle<Batch>),
    /// The directory ended, or reading it failed for good.
    Done,
}

impl ReadDir {
    /// The next entry, or `None` at the end.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a batch being read when the future is dropped is kept
    /// for the next call, so no entry is lost or repeated.
    ///
    /// # Errors
    ///
    /// The error of reading an entry (the next call goes on with the
    /// following one); an error after the runtime shut down.
    pub async fn next_entry(&mut self) -> io::Result<Option<DirEntry>> {
        loop {
            if let Some(entry) = self.ready.next() {
                return entry.map(Some);
            }
            match &mut self.state {
                State::Done => return Ok(None),
                State::Idle(_) => {
                    let State::Idle(dir) = std::mem::replace(&mut self.state, State::Done) else {
                        unreachable!("matched State::Idle above")
                    };
                    let handle = crate::RuntimeHandle::current().ok_or_else(|| {
                        io::Error::other("spargio I/O must run inside a spargio runtime task")
                    })?;
                    let job = handle
                        .spawn_blocking(move || read_batch(dir))
                        .map_err(|_| crate::io::closed())?;
                    self.state = State::Reading(job);
                }
                // Awaited in place: a dropped future leaves the job here.
                State::Reading(job) => match job.await {
                    Ok((dir, entries)) => {
                        let more = entries.len() == BATCH;
                        self.state = if more { State::Idle(dir) } else { State::Done };
                        self.ready = entries.into_iter();
                    }
                    Err(e) => {
                        self.state = State::Done;
                        return Err(e.into());
                    }
                },
            }
        }
    }
}

fn read_batch(mut dir: std::fs::ReadDir) -> Batch {
    let mut entries = Vec::with_capacity(BATCH);
    for entry in dir.by_ref().take(BATCH) {
        entries.push(entry.and_then(|e| {
            Ok(DirEntry {
                file_type: e.file_type()?,
                name: e.file_name(),
                path: e.path(),
                ino: std::os::unix::fs::DirEntryExt::ino(&e),
            })
        }));
    }
    (dir, entries)
}

/// One entry of a directory.
#[derive(Debug, Clone)]
pub struct DirEntry {
    path: PathBuf,
    name: OsString,
    file_type: std::fs::FileType,
    ino: u64,
}

impl DirEntry {
    /// The entry's full path: the directory's path joined with the name.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The entry's name within the directory.
    pub fn file_name(&self) -> OsString {
        self.name.clone()
    }

    /// The entry's type, without following a symlink (read with the entry).
    pub fn file_type(&self) -> std::fs::FileType {
        self.file_type
    }

    /// The entry's inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The entry's metadata, without following a symlink (`STATX` with
    /// `AT_SYMLINK_NOFOLLOW` on the ring), read now.
    ///
    /// # Errors
    ///
    /// The `statx` error (`NotFound` when the entry was removed since).
    pub async fn metadata(&self) -> io::Result<Metadata> {
        super::symlink_metadata(&self.path).await
    }
}
