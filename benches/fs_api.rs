//! File I/O benchmarks against Tokio in the same run (see docs/BENCHMARKS.md).
//!
//! A 16 MiB file of 4096 × 4 KiB blocks is written and fsynced first (page
//! cache warm). `fs_read_rtt_4k`: 256 sequential 4 KiB reads at block
//! `i % 4096`, reusing one buffer. `fs_read_throughput_4k_qd32`: 4096 reads in
//! batches of 32 in flight. Tokio runs `spawn_blocking(pread)` (its fastest
//! way) and `tokio::fs`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use criterion::{Criterion, criterion_group, criterion_main};

const BLOCK: usize = 4096;
const BLOCKS: u64 = 4096;
const RTT_READS: u64 = 256;
const QD: u64 = 32;

fn data_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("spargio-bench-fs-{}", std::process::id()));
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

fn bench_rtt(c: &mut Criterion, path: &PathBuf) {
    let mut g = c.benchmark_group("fs_read_rtt_4k");
    g.throughput(criterion::Throughput::Elements(RTT_READS));

    let rt = spargio::RuntimeBuilder::new().shards(2).build().unwrap();
    let file = {
        let p = path.clone();
        rt.block_on(async move { spargio::fs::File::open(p).await.unwrap() })
            .unwrap()
    };
    g.bench_function("spargio", |b| {
        b.iter(|| {
            let f = file.clone();
            rt.block_on(async move {
                let mut buf = Vec::with_capacity(BLOCK);
                for i in 0..RTT_READS {
                    buf.clear();
                    let (n, back) = f.read_at_into(buf, offset(i)).await;
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
                    let (n, back) = s.read_at_into(buf, offset(i)).await;
                    assert_eq!(n.unwrap(), BLOCK);
                    buf = back;
                }
            })
            .unwrap();
        })
    });

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let std_file = Arc::new(std::fs::File::open(path).unwrap());
    g.bench_function("tokio_spawn_blocking", |b| {
        b.iter(|| {
            let f = std_file.clone();
            tokio_rt.block_on(async move {
                let mut buf = vec![0u8; BLOCK];
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
            })
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
    let file = {
        let p = path.clone();
        rt.block_on(async move { spargio::fs::File::open(p).await.unwrap() })
            .unwrap()
    };
    g.bench_function("spargio", |b| {
        b.iter(|| {
            let f = file.clone();
            rt.block_on(async move {
                for batch in 0..BLOCKS / QD {
                    join_all((0..QD).map(|k| {
                        let f = &f;
                        async move {
                            let (n, _) = f
                                .read_at_into(Vec::with_capacity(BLOCK), offset(batch * QD + k))
                                .await;
                            assert_eq!(n.unwrap(), BLOCK);
                        }
                    }))
                    .await;
                }
            })
            .unwrap();
        })
    });

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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

fn benches(c: &mut Criterion) {
    let path = data_file();
    bench_rtt(c, &path);
    bench_qd32(c, &path);
    let _ = std::fs::remove_file(&path);
}

criterion_group!(fs, benches);
criterion_main!(fs);
