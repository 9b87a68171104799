//! Throughput mode with SQPOLL: every shard ring shares one kernel
//! submission thread, and the runtime works on it. A binary of its own, so
//! no other test's rings are counted.
#![forbid(unsafe_code)]

use spargio::RuntimeBuilder;

/// Threads of this process that are io_uring SQPOLL threads.
fn sqpoll_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("iou-sqp"))
        .count()
}

#[test]
fn shards_share_one_sqpoll_thread() {
    let before = sqpoll_threads();
    let built = RuntimeBuilder::new()
        .shards(4)
        .fallback_to_queue(false)
        .io_uring_throughput_mode(true)
        .build();
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            println!("SKIPPED: SQPOLL rings cannot be set up here: {e}");
            return;
        }
    };
    let h = rt.handle().clone();
    let sum = rt
        .block_on(async move {
            let mut sum = 0;
            for shard in 0..4 {
                let to = h.remote((shard + 1) % 4).unwrap();
                sum += h
                    .spawn_pinned(shard, async move {
                        // A message and a file read, both submitted through
                        // the shared submission thread.
                        to.send_raw(1, 0).await.unwrap();
                        spargio::fs::read("/proc/self/stat").await.unwrap().len().min(1)
                    })
                    .unwrap()
                    .await
                    .unwrap();
            }
            sum
        })
        .unwrap();
    assert_eq!(sum, 4);
    // A submission thread names itself `iou-sqp-<pid>` once it first runs,
    // a moment after the ring that created it is set up; by now it has run
    // (every ring has submitted through it), but give it a bounded moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqpoll_threads() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(
        sqpoll_threads() - before,
        1,
        "one submission thread for 4 shard rings"
    );
    rt.shutdown();
}
