//! File I/O benchmarks against Tokio and compio in the same run (see
//! docs/BENCHMARKS.md).
//!
//! A 16 MiB file of 4096 × 4 KiB blocks is written and fsynced first (page
//! cache warm). `fs_read_rtt_4k`: 256 sequential 4 KiB reads at block
//! `i % 4096`, reusing one buffer (`spargio_fixed`: a registered buffer
//! from `io::checkout_fixed_buf`, read with `READ_FIXED`). `fs_read_throughput_4k_qd32`: 4096 reads in
//! batches of 32 in flight. spargio runs 2 shards, each iteration one
//! `block_on` from the bench thread. Tokio (2 workers) runs
//! `spawn_blocking(pread)` (its fastest way) and `tokio::fs`. `compio`:
//! compio 0.19 on its io_uring driver, one runtime on the bench thread (it is
//! thread-per-core and cannot spread the reads over a second core), each
//! iteration one `block_on`; its `read_at` takes an owned buffer and hands it
//! back, so 32 buffers are reused for all iterations, and a qd32 batch is
//! the 32 `read_at` futures joined. Each function also records its process
//! CPU per iteration (`cpu.json`, `common::harness::bench_batches`).
//!
//! `fs_read_rtt_4k_direct`: the `fs_read_rtt_4k` loop on a second copy of the
//! file opened with `O_DIRECT` (so every read goes to the device), reading
//! into a 4 KiB-aligned [`AlignedBuf`](spargio::io::AlignedBuf); Tokio runs
//! `spawn_blocking(pread)` into an aligned buffer. That copy lives under
//! `./target` (or `/var/tmp`), since the temp dir may be a tmpfs without
//! `O_DIRECT`; where `O_DIRECT` is refused the group is skipped with a reason.
#![forbid(unsafe_code)]

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::ops::DerefMut;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use common::echo::compio_available;
use common::harness::bench_batches;
use compio::io::AsyncReadAt;
use criterion::{Criterion, criterion_group, criterion_main};
use spargio::io::{AlignedBuf, IoBufMut};

const BLOCK: usize = 4096;
const BLOCKS: u64 = 4096;
const RTT_READS: u64 = 256;
const QD: u64 = 32;

/// Writes the 16 MiB data file into `dir`.
fn data_file(dir: &Path) -> PathBuf {
    let path = dir.join(format!("spargio-bench-fs-{}", std::process::id()));
    let block: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
    let mut all = Vec::with_capacity(BLOCK * BLOCKS as usize);
    for _ in 0..BLOCKS {
        all.extend_from_slice(&block);
    }
    std::fs::write(&path, &all).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    path
}

/// Polls a set of futures to completion together (a minimal join-all).
struct JoinAll<F: Future> {
    futs: Vec<Option<Pin<Box<F>>>>,
    left: usize,
}

fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> JoinAll<F> {
    let futs: Vec<_> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let left = futs.len();
    JoinAll { futs, left }
}

impl<F: Future> Future for JoinAll<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut done = 0;
        for slot in self.futs.iter_mut() {
            if let Some(f) = slot
                && f.as_mut().poll(cx).is_ready()
            {
                *slot = None;
                done += 1;
            }
        }
        self.left -= done;
        if self.left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

fn offset(i: u64) -> u64 {
    (i % BLOCKS) * BLOCK as u64
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Opens `path` for reading with `flags` (`custom_flags`) on `rt`.
fn open_on(rt: &spargio::Runtime, path: &Path, flags: i32) -> spargio::fs::File {
    let p = path.to_path_buf();
    rt.block_on(async move {
        spargio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(p)
            .await
            .unwrap()
    })
    .unwrap()
}

/// The RTT loop: `RTT_READS` sequential one-block reads into one reused
/// buffer (`read_at` fills it from its start each time).
async fn spargio_rtt<B: IoBufMut>(f: spargio::fs::File, mut buf: B) {
    for i in 0..RTT_READS {
        let (n, back) = f.read_at(buf, offset(i)).await;
        assert_eq!(n.unwrap(), BLOCK);
        buf = back;
    }
}

/// [`spargio_rtt`] on Tokio: one `spawn_blocking(pread)` per read.
async fn tokio_rtt<B>(f: Arc<std::fs::File>, mut buf: B)
where
    B: DerefMut<Target = [u8]> + Send + 'static,
{
    for i in 0..RTT_READS {
        let f = f.clone();
        let (n, back) = tokio::task::spawn_blocking(move || {
            let n = f.read_at(&mut buf, offset(i)).unwrap();
            (n, buf)
        })
        .await
        .unwrap();
        assert_eq!(n, BLOCK);
        buf = back;
    }
}

/// A compio runtime built on the bench thread, which runs it in `block_on`
/// (compio is thread-per-core: one runtime, one thread), the data file opened
/// on it, and the owned buffers its reads reuse from iteration to iteration.
/// Field order is drop order: the file before its runtime.
struct CompioFile {
    file: compio::fs::File,
    bufs: RefCell<Vec<Vec<u8>>>,
    rt: compio::runtime::Runtime,
}

impl CompioFile {
    /// Builds the runtime and opens `path` for reading on it.
    ///
    /// # Panics
    ///
    /// If the runtime cannot be built (the `compio` functions are only
    /// measured once [`compio_available`] has built one here) or the file
    /// cannot be opened.
    fn open(path: &Path) -> CompioFile {
        let rt = compio::runtime::Runtime::new().expect("build the compio runtime");
        let p = path.to_path_buf();
        let file = rt
            .block_on(compio::fs::File::open(p))
            .expect("open the data file on compio");
        let bufs = RefCell::new((0..QD).map(|_| Vec::with_capacity(BLOCK)).collect());
        CompioFile { file, bufs, rt }
    }

    /// Reads block `at` into one of the owned buffers, which compio's
    /// `read_at` takes and hands back (it reads into the buffer's capacity
    /// from its start).
    async fn read_block(&self, at: u64) {
        let buf = self
            .bufs
            .borrow_mut()
            .pop()
            .expect("one buffer per read in flight");
        let compio::BufResult(n, back) = self.file.read_at(buf, offset(at)).await;
        assert_eq!(n.unwrap(), BLOCK);
        self.bufs.borrow_mut().push(back);
    }

    /// One `fs_read_rtt_4k` iteration: `RTT_READS` sequential reads.
    fn rtt(&self) {
        self.rt.block_on(async {
            for i in 0..RTT_READS {
                self.read_block(i).await;
            }
        })
    }

    /// One `fs_read_throughput_4k_qd32` iteration: batches of [`QD`] reads,
    /// each batch joined.
    fn qd32(&self) {
        self.rt.block_on(async {
            for batch in 0..BLOCKS / QD {
                join_all((0..QD).map(|k| self.read_block(batch * QD + k))).await;
            }
        })
    }
}

fn bench_rtt(c: &mut Criterion, path: &PathBuf, compio: bool) {
    const GROUP: &str = "fs_read_rtt_4k";
    let mut g = c.benchmark_group(GROUP);
    g.throughput(criterion::Throughput::Elements(RTT_READS));

    let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
    let file = open_on(&rt, path, 0);
    bench_batches(
        &mut g,
        GROUP,
        "spargio",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = file.clone();
                rt.block_on(spargio_rtt(f, Vec::with_capacity(BLOCK))).unwrap();
            })
        },
    );

    bench_batches(
        &mut g,
        GROUP,
        "spargio_fixed",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = file.clone();
                rt.block_on(async move {
                    let mut buf = spargio::io::checkout_fixed_buf(BLOCK).expect("a free fixed buffer");
                    for i in 0..RTT_READS {
                        buf.clear();
                        let (n, back) = f.read_fixed_at(buf, offset(i)).await;
                        assert_eq!(n.unwrap(), BLOCK);
                        buf = back;
                    }
                })
                .unwrap();
            })
        },
    );

    // The session lives on shard 0, where `block_on` runs the driver task.
    let bound = rt
        .handle()
        .bind_owned_fd_to(std::fs::File::open(path).unwrap().into(), 0)
        .unwrap();
    let session = {
        let b = bound.clone();
        Arc::new(
            rt.block_on(async move { b.start_file_session().await.unwrap() })
                .unwrap(),
        )
    };
    bench_batches(
        &mut g,
        GROUP,
        "spargio_session",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let s = session.clone();
                rt.block_on(async move {
                    let mut buf = Vec::with_capacity(BLOCK);
                    for i in 0..RTT_READS {
                        buf.clear();
                        let (n, back) = s.read_at(buf, offset(i)).await;
                        assert_eq!(n.unwrap(), BLOCK);
                        buf = back;
                    }
                })
                .unwrap();
            })
        },
    );

    let tokio_rt = tokio_runtime();
    let std_file = Arc::new(std::fs::File::open(path).unwrap());
    bench_batches(
        &mut g,
        GROUP,
        "tokio_spawn_blocking",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = std_file.clone();
                tokio_rt.block_on(tokio_rtt(f, vec![0u8; BLOCK]))
            })
        },
    );

    let tokio_file = {
        let p = path.clone();
        Arc::new(tokio::sync::Mutex::new(
            tokio_rt.block_on(async move { tokio::fs::File::open(p).await.unwrap() }),
        ))
    };
    bench_batches(
        &mut g,
        GROUP,
        "tokio_fs",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = tokio_file.clone();
                tokio_rt.block_on(async move {
                    use tokio::io::{AsyncReadExt, AsyncSeekExt};
                    let mut f = f.lock().await;
                    let mut buf = vec![0u8; BLOCK];
                    for i in 0..RTT_READS {
                        f.seek(std::io::SeekFrom::Start(offset(i))).await.unwrap();
                        f.read_exact(&mut buf).await.unwrap();
                    }
                })
            })
        },
    );
    if compio {
        bench_batches(
            &mut g,
            GROUP,
            "compio",
            || CompioFile::open(path),
            |h, iters| (0..iters).for_each(|_| h.rtt()),
        );
    }
    g.finish();
    drop(session);
    drop(rt);
}

fn bench_qd32(c: &mut Criterion, path: &PathBuf, compio: bool) {
    const GROUP: &str = "fs_read_throughput_4k_qd32";
    let mut g = c.benchmark_group(GROUP);
    g.throughput(criterion::Throughput::Elements(BLOCKS));

    let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
    let file = open_on(&rt, path, 0);
    bench_batches(
        &mut g,
        GROUP,
        "spargio",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = file.clone();
                rt.block_on(async move {
                    for batch in 0..BLOCKS / QD {
                        join_all((0..QD).map(|k| {
                            let f = &f;
                            async move {
                                let (n, _) =
                                    f.read_at(Vec::with_capacity(BLOCK), offset(batch * QD + k)).await;
                                assert_eq!(n.unwrap(), BLOCK);
                            }
                        }))
                        .await;
                    }
                })
                .unwrap();
            })
        },
    );

    let tokio_rt = tokio_runtime();
    let std_file = Arc::new(std::fs::File::open(path).unwrap());
    bench_batches(
        &mut g,
        GROUP,
        "tokio_spawn_blocking",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = std_file.clone();
                tokio_rt.block_on(async move {
                    for batch in 0..BLOCKS / QD {
                        let handles: Vec<_> = (0..QD)
                            .map(|k| {
                                let f = f.clone();
                                tokio::task::spawn_blocking(move || {
                                    let mut buf = vec![0u8; BLOCK];
                                    f.read_at(&mut buf, offset(batch * QD + k)).unwrap()
                                })
                            })
                            .collect();
                        for h in handles {
                            assert_eq!(h.await.unwrap(), BLOCK);
                        }
                    }
                })
            })
        },
    );
    if compio {
        bench_batches(
            &mut g,
            GROUP,
            "compio",
            || CompioFile::open(path),
            |h, iters| (0..iters).for_each(|_| h.qd32()),
        );
    }
    g.finish();
}

fn bench_rtt_direct(c: &mut Criterion) {
    let target = std::env::current_dir().unwrap().join("target");
    let dir = if target.is_dir() {
        target
    } else {
        PathBuf::from("/var/tmp")
    };
    let path = data_file(&dir);
    let std_file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!(
                "fs_read_rtt_4k_direct: SKIPPED (O_DIRECT): {}: {e}",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    const GROUP: &str = "fs_read_rtt_4k_direct";
    let mut g = c.benchmark_group(GROUP);
    g.throughput(criterion::Throughput::Elements(RTT_READS));

    let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
    let file = open_on(&rt, &path, libc::O_DIRECT);
    bench_batches(
        &mut g,
        GROUP,
        "spargio",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = file.clone();
                rt.block_on(spargio_rtt(f, AlignedBuf::with_capacity(BLOCK, BLOCK)))
                    .unwrap();
            })
        },
    );

    let tokio_rt = tokio_runtime();
    bench_batches(
        &mut g,
        GROUP,
        "tokio_spawn_blocking",
        || (),
        |_, iters| {
            (0..iters).for_each(|_| {
                let f = std_file.clone();
                tokio_rt.block_on(tokio_rtt(f, AlignedBuf::zeroed(BLOCK, BLOCK)))
            })
        },
    );
    g.finish();
    drop(rt);
    let _ = std::fs::remove_file(&path);
}

fn benches(c: &mut Criterion) {
    let path = data_file(&std::env::temp_dir());
    let compio = compio_available();
    bench_rtt(c, &path, compio);
    bench_qd32(c, &path, compio);
    let _ = std::fs::remove_file(&path);
    bench_rtt_direct(c);
}

criterion_group!(fs, benches);
criterion_main!(fs);
