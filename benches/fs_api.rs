//! File I/O benchmarks against Tokio in the same run (see docs/BENCHMARKS.md).
//!
//! A 16 MiB file of 4096 × 4 KiB blocks is written and fsynced first (page
//! cache warm). `fs_read_rtt_4k`: 256 sequential 4 KiB reads at block
//! `i % 4096`, reusing one buffer (`spargio_fixed`: a registered buffer
//! from `io::checkout_fixed_buf`, read with `READ_FIXED`). `fs_read_throughput_4k_qd32`: 4096 reads in
//! batches of 32 in flight. Tokio runs `spawn_blocking(pread)` (its fastest
//! way) and `tokio::fs`.
//!
//! `fs_read_rtt_4k_direct`: the `fs_read_rtt_4k` loop on a second copy of the
//! file opened with `O_DIRECT` (so every read goes to the device), reading
//! into a 4 KiB-aligned [`AlignedBuf`](spargio::io::AlignedBuf); Tokio runs
//! `spawn_blocking(pread)` into an aligned buffer. That copy lives under
//! `./target` (or `/var/tmp`), since the temp dir may be a tmpfs without
//! `O_DIRECT`; where `O_DIRECT` is refused the group is skipped with a reason.
#![forbid(unsafe_code)]

use std::future::Future;
use std::ops::DerefMut;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

fn bench_rtt(c: &mut Criterion, path: &PathBuf) {
    let mut g = c.benchmark_group("fs_read_rtt_4k");
    g.throughput(criterion::Throughput::Elements(RTT_READS));

    let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
    let file = open_on(&rt, path, 0);
    g.bench_function("spargio", |b| {
        b.iter(|| {
            let f = file.clone();
            rt.block_on(spargio_rtt(f, Vec::with_capacity(BLOCK))).unwrap();
        })
    });

    g.bench_function("spargio_fixed", |b| {
        b.iter(|| {
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
    });

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
    g.bench_function("spargio_session", |b| {
        b.iter(|| {
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
    });

    let tokio_rt = tokio_runtime();
    let std_file = Arc::new(std::fs::File::open(path).unwrap());
    g.bench_function("tokio_spawn_blocking", |b| {
        b.iter(|| {
            let f = std_file.clone();
            tokio_rt.block_on(tokio_rtt(f, vec![0u8; BLOCK]))
        })
    });

    let tokio_file = {
        let p = path.clone();
        Arc::new(tokio::sync::Mutex::new(
            tokio_rt.block_on(async move { tokio::fs::File::open(p).await.unwrap() }),
        ))
    };
    g.bench_function("tokio_fs", |b| {
        b.iter(|| {
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
    });
    g.finish();
    drop(session);
    drop(rt);
}

fn bench_qd32(c: &mut Criterion, path: &PathBuf) {
    let mut g = c.benchmark_group("fs_read_throughput_4k_qd32");
    g.throughput(criterion::Throughput::Elements(BLOCKS));

    let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
    let file = open_on(&rt, path, 0);
    g.bench_function("spargio", |b| {
        b.iter(|| {
            let f = file.clone();
            rt.block_on(async move {
                for batch in 0..BLOCKS / QD {
                    join_all((0..QD).map(|k| {
                        let f = &f;
                        async move {
                            let (n, _) = f.read_at(Vec::with_capacity(BLOCK), offset(batch * QD + k)).await;
                            assert_eq!(n.unwrap(), BLOCK);
                        }
                    }))
                    .await;
                }
            })
            .unwrap();
        })
    });

    let tokio_rt = tokio_runtime();
    let std_file = Arc::new(std::fs::File::open(path).unwrap());
    g.bench_function("tokio_spawn_blocking", |b| {
        b.iter(|| {
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
    });
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
    let mut g = c.benchmark_group("fs_read_rtt_4k_direct");
    g.throughput(criterion::Throughput::Elements(RTT_READS));

    let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
    let file = open_on(&rt, &path, libc::O_DIRECT);
    g.bench_function("spargio", |b| {
        b.iter(|| {
            let f = file.clone();
            rt.block_on(spargio_rtt(f, AlignedBuf::with_capacity(BLOCK, BLOCK)))
                .unwrap();
        })
    });

    let tokio_rt = tokio_runtime();
    g.bench_function("tokio_spawn_blocking", |b| {
        b.iter(|| {
            let f = std_file.clone();
            tokio_rt.block_on(tokio_rtt(f, AlignedBuf::zeroed(BLOCK, BLOCK)))
        })
    });
    g.finish();
    drop(rt);
    let _ = std::fs::remove_file(&path);
}

fn benches(c: &mut Criterion) {
    let path = data_file(&std::env::temp_dir());
    bench_rtt(c, &path);
    bench_qd32(c, &path);
    let _ = std::fs::remove_file(&path);
    bench_rtt_direct(c);
}

criterion_group!(fs, benches);
criterion_main!(fs);
