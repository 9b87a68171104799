//! `O_DIRECT` file I/O with [`AlignedBuf`], on both backends (io_uring and
//! Queue): aligned blocks round-trip, unaligned buffers and offsets give
//! `EINVAL` without hurting the runtime.
//!
//! The files live under `./target` (or `/var/tmp`), not the temp dir, which
//! may be a tmpfs without `O_DIRECT`; a filesystem that refuses `O_DIRECT`
//! skips the test with a printed reason.
#![forbid(unsafe_code)]

mod common;

use common::runtime_on as runtime;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use spargio::Backend;
use spargio::fs::{File, OpenOptions};
use spargio::io::{AlignedBuf, IoBuf};

/// The alignment and block size used: a multiple of every common logical
/// block size (512, 4096).
const BLOCK: usize = 4096;
const BLOCKS: usize = 8;

/// A fresh path on a disk-backed filesystem.
fn direct_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let target = std::env::current_dir().unwrap().join("target");
    let dir = if target.is_dir() {
        target
    } else {
        PathBuf::from("/var/tmp")
    };
    dir.join(format!("spargio-direct-{}-{tag}-{n}", std::process::id()))
}

/// Opens `path` with `O_DIRECT`; `None` (after printing why) when the
/// filesystem does not support it.
async fn open_direct(path: &PathBuf) -> Option<File> {
    let res = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .await;
    match res {
        Ok(file) => Some(file),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            println!("SKIPPED (O_DIRECT): {}: {e}", path.display());
            let _ = std::fs::remove_file(path);
            None
        }
        Err(e) => panic!("open {} with O_DIRECT: {e}", path.display()),
    }
}

/// Runs `body` on each backend with a fresh `O_DIRECT` file, then closes and
/// removes the file (skipping where the filesystem refuses `O_DIRECT`).
fn on_both_backends<F, Fut>(tag: &str, body: F)
where
    F: Fn(Backend, File) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    for backend in [Backend::IoUring, Backend::Queue] {
        let path = direct_path(tag);
        let body = body.clone();
        runtime(backend)
            .block_on(async move {
                let Some(file) = open_direct(&path).await else {
                    return;
                };
                body(backend, file.clone()).await;
                file.close().await.unwrap();
                std::fs::remove_file(&path).unwrap();
            })
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    }
}

/// The byte at `pos` of the test file.
fn pattern(pos: usize) -> u8 {
    ((pos / BLOCK) * 7 + pos % 251) as u8
}

fn assert_einval(res: io::Result<impl std::fmt::Debug>, what: &str) {
    match res {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{what}: {e}"),
        Ok(v) => panic!("{what}: expected EINVAL, got Ok({v:?})"),
    }
}

#[test]
fn aligned_blocks_round_trip_with_o_direct_on_both_backends() {
    on_both_backends("rt", |_backend, file| async move {
        // One block at a time, from one reused aligned buffer.
        let mut block = AlignedBuf::zeroed(BLOCK, BLOCK);
        for i in 0..BLOCKS {
            for (j, b) in block.iter_mut().enumerate() {
                *b = pattern(i * BLOCK + j);
            }
            let (res, back) = file.write_all_at(block, (i * BLOCK) as u64).await;
            res.unwrap_or_else(|e| panic!("write block {i}: {e}"));
            block = back;
        }
        file.sync_all().await.unwrap();
        assert_eq!(file.metadata().await.unwrap().len(), (BLOCKS * BLOCK) as u64);

        // The whole file in one read.
        let all = AlignedBuf::with_capacity(BLOCKS * BLOCK, BLOCK);
        let (n, all) = file.read_at(all, 0).await;
        assert_eq!(n.unwrap(), BLOCKS * BLOCK);
        assert_eq!(all.len(), BLOCKS * BLOCK);
        assert!(all.iter().enumerate().all(|(pos, &b)| b == pattern(pos)));

        // Block by block, backwards, into one cleared buffer.
        let mut buf = AlignedBuf::with_capacity(BLOCK, BLOCK);
        for i in (0..BLOCKS).rev() {
            buf.clear();
            let (n, back) = file.read_at(buf, (i * BLOCK) as u64).await;
            assert_eq!(n.unwrap(), BLOCK, "block {i}");
            assert!(back.iter().enumerate().all(|(j, &b)| b == pattern(i * BLOCK + j)));
            buf = back;
        }

        // At the end of the file: 0 bytes.
        buf.clear();
        let (n, buf) = file.read_at(buf, (BLOCKS * BLOCK) as u64).await;
        assert_eq!(n.unwrap(), 0);
        assert!(buf.is_empty());
    });
}

#[test]
fn unaligned_buffers_give_einval_and_the_runtime_keeps_serving() {
    on_both_backends("einval", |backend, file| async move {
        let mut block = AlignedBuf::zeroed(BLOCK, BLOCK);
        block.fill(0xa5);
        let (res, block) = file.write_all_at(block, 0).await;
        res.unwrap();

        // A Vec at an odd address: refused for writing and reading.
        let odd = vec![0x11u8; BLOCK + 1].slice(1..);
        assert_eq!(odd.bytes_init(), BLOCK);
        let (res, _) = file.write_at(odd, 0).await;
        assert_einval(res, &format!("{backend:?}: write from an odd address"));
        let odd = Vec::with_capacity(BLOCK + 1).slice(1..);
        let (res, _) = file.read_at(odd, 0).await;
        assert_einval(res, &format!("{backend:?}: read into an odd address"));

        // An aligned address with an unaligned length, and an unaligned offset.
        let short = AlignedBuf::with_capacity(100, BLOCK);
        let (res, short) = file.read_at(short, 0).await;
        assert_einval(res, &format!("{backend:?}: read of 100 bytes"));
        assert!(short.is_empty(), "a failed read initializes nothing");
        let (res, _) = file.write_at(block, 1).await;
        assert_einval(res, &format!("{backend:?}: write at offset 1"));

        // The runtime still serves, and the failed writes changed nothing.
        let (n, back) = file.read_at(AlignedBuf::with_capacity(BLOCK, BLOCK), 0).await;
        assert_eq!(n.unwrap(), BLOCK);
        assert!(back.iter().all(|&b| b == 0xa5));
        assert_eq!(file.metadata().await.unwrap().len(), BLOCK as u64);
    });
}
