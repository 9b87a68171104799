//! Soundness of the safe API, from outside, as a `#![forbid(unsafe_code)]`
//! user would try it: no sequence of safe calls makes the kernel write into
//! freed memory, trusts a caller's count or fd, or lets a forged completion
//! finish an op. Each test is named after the item of the soundness audit it
//! closes; what must not even compile is pinned by `compile_fail` doctests in
//! `spargio-sys` (`RingCqe`, `InFlight::complete`, the ops' `into_*`).
//!
//! Real-kernel tests skip, with a printed reason, only when io_uring itself is
//! unavailable here.
#![forbid(unsafe_code)]

mod common;

use std::future::Future;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::{Kernel, build, builder, join, yield_now};
use spargio::sys::msg::{OpId, UserData};
use spargio::sys::op::fs::{Dir, OpenAt, Read};
use spargio::sys::op::net::{Recv, RecvBufGroup, RecvMsg, RecvMulti, socket_pair};
use spargio::sys::op::{Completion, InFlight, Op};
use spargio::sys::ring::{PushError, Ring, RingConfig};
use spargio::sys::sim::SimKernel;
use spargio::sys::{Cqe, Sqe, abi, register};

fn kernel_ring() -> Option<Ring> {
    match Ring::new(8) {
        Ok(r) => Some(r),
        Err(e) if e.io_uring_unavailable() => {
            eprintln!("SKIPPED (real io_uring): {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Item 1: a table dropped while the kernel still owns a read's buffer leaks
/// the buffer; the kernel's write lands there, never in memory allocated
/// after the drop (allocations of the same size are the canaries).
#[test]
fn item1_a_dropped_op_table_leaks_the_buffers_the_kernel_still_writes() {
    const LEN: usize = 4096;
    let Some(mut ring) = kernel_ring() else { return };
    let (reader, mut writer) = std::io::pipe().unwrap();
    let reader = Arc::new(OwnedFd::from(reader));
    let mut table = InFlight::default();
    if let Err((_, e)) = table.submit(
        &mut ring,
        Box::new(Read::new(reader, Vec::with_capacity(LEN), 0)),
        (),
    ) {
        panic!("submit: {e}");
    }
    ring.submit().unwrap();
    drop(table);
    let canaries: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; LEN]).collect();
    writer.write_all(b"PWNED").unwrap();
    // The read completes now, into whatever its buffer has become.
    ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    let cqe = ring.reap().expect("the read's completion");
    assert_eq!(cqe.res, 5, "the kernel did write the bytes somewhere");
    for c in &canaries {
        assert!(
            !c.windows(5).any(|w| w == b"PWNED"),
            "the kernel wrote into memory allocated after the table was dropped"
        );
    }
}

/// Item 2: no safe push or message can post a completion that carries an
/// op's tag, into any ring.
#[test]
fn item2_messages_and_safe_pushes_never_carry_an_op_tag() {
    let kernel = SimKernel::new();
    let mut a = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    let b = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    let op_tag = UserData::op(OpId::new(0, 0));
    // A raw MSG_RING names an fd number: the safe push refuses it outright.
    let raw = Sqe::from_raw(abi::io_uring_sqe {
        opcode: abi::IORING_OP_MSG_RING,
        fd: b.as_raw_fd(),
        addr_or_splice_off_in: abi::IORING_MSG_DATA,
        off_or_addr2: op_tag.get(),
        ..Default::default()
    });
    assert_eq!(a.push(&raw), Err(PushError::NeedsOwner));
    // The typed message refuses an op's tag, as the posted or the own tag.
    let post = Cqe {
        user_data: op_tag.get(),
        res: 0,
        flags: 0,
    };
    assert_eq!(
        a.push_msg_ring(&b.ring_fd(), post, false, UserData::IGNORE, false),
        Err(PushError::ReservedTag)
    );
    let fine = Cqe {
        user_data: UserData::IGNORE.get(),
        ..post
    };
    assert_eq!(
        a.push_msg_ring(&b.ring_fd(), fine, false, op_tag, false),
        Err(PushError::ReservedTag)
    );
    // So does the ring-less message of foreign threads.
    let err = register::send_msg_ring_without_ring(&b.ring_fd(), op_tag, 0, None).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    // And a NOP, or a cancel, cannot complete with an op's tag either.
    assert_eq!(
        a.push(&Sqe::nop().user_data(op_tag.get())),
        Err(PushError::ReservedTag)
    );
}

/// Item 2, the runtime's side: whatever the public message APIs send (every
/// tag, extreme values), a read waiting on an empty pipe stays waiting, and
/// then returns exactly the bytes written.
#[test]
fn item2_no_public_message_completes_a_pending_read() {
    let Some(b) = builder(Kernel::IoUring, 2) else {
        return;
    };
    let rt = build(Kernel::IoUring, b);
    let (reader, mut writer) = std::io::pipe().unwrap();
    let file = spargio::fs::File::from_owned_fd(OwnedFd::from(reader));
    let read = rt
        .handle()
        .spawn_pinned(1, async move { file.read_at(Vec::with_capacity(16), 0).await })
        .unwrap();
    let tags: Vec<u16> = (0..=u16::MAX).step_by(97).chain([u16::MAX]).collect();
    let values = [0, 1, u32::MAX, 0x8000_0000];
    let total = tags.len() * values.len() + 2 + 2;
    // Shard 1 takes every message as an event (they never touch its op table).
    let sink = rt
        .handle()
        .spawn_pinned(1, async move {
            let ctx = spargio::ShardCtx::current().unwrap();
            for _ in 0..total {
                let _ = ctx.next_event().await;
            }
        })
        .unwrap();
    let handle = rt.handle().clone();
    join(
        "flood",
        rt.handle()
            .spawn_pinned(0, async move {
                let to = handle.remote(1).unwrap();
                for &tag in &tags {
                    for val in values {
                        // Out of credits (backpressure): let the target drain.
                        while to.send_raw_nowait(tag, val).is_err() {
                            yield_now().await;
                        }
                    }
                }
                for val in [0, u32::MAX] {
                    to.send_raw(u16::MAX, val).await.unwrap();
                }
                while to.send_many_raw_nowait([(0, 0), (u16::MAX, u32::MAX)]).is_err() {
                    yield_now().await;
                }
            })
            .unwrap(),
    );
    join("every message arrived", sink);
    // Every message has been taken as an event; none completed the read.
    assert!(!read.is_finished(), "a message completed the read");
    writer.write_all(b"data").unwrap();
    let (res, buf) = join("read", read);
    assert_eq!(res.unwrap(), 4);
    assert_eq!(buf, b"data");
}

/// Item 3: a caller cannot mark bytes initialized: the ops record what the
/// kernel (or the system call) wrote, and give back nothing more.
#[test]
fn item3_ops_hand_back_only_what_was_written() {
    let (a, b) = socket_pair(libc::AF_UNIX, libc::SOCK_DGRAM).unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    // Never run: nothing is initialized, whatever the capacity.
    assert!(
        Read::new(a.clone(), Vec::with_capacity(32), 0)
            .into_buf()
            .is_empty()
    );
    assert!(
        Recv::new(a.clone(), Vec::with_capacity(32), 0)
            .into_buf()
            .is_empty()
    );
    assert!(
        RecvMsg::new(a.clone(), Vec::with_capacity(32), 0)
            .into_parts()
            .buf
            .is_empty()
    );
    // Run: exactly the received bytes.
    spargio::sys::op::net::Send::new(b.clone(), b"abc".to_vec(), 0).run_blocking();
    let mut recv = Recv::new(a.clone(), Vec::with_capacity(32), 0);
    assert_eq!(recv.run_blocking(), 3);
    assert_eq!(recv.into_buf(), b"abc");
    // A failed receive initializes nothing.
    let not_a_socket = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    let mut recv = Recv::new(not_a_socket, Vec::with_capacity(32), 0);
    assert_eq!(recv.run_blocking(), -libc::ENOTSOCK);
    assert!(recv.into_buf().is_empty());
}

/// Item 5: safe code can neither close a raw fd number through the ring nor
/// turn one into an `OwnedFd` through an op; an op owns what it created.
#[test]
fn item5_no_safe_call_adopts_or_closes_a_raw_fd() {
    let kernel = SimKernel::new();
    let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    for opcode in [
        abi::IORING_OP_CLOSE,
        abi::IORING_OP_SHUTDOWN,
        abi::IORING_OP_FTRUNCATE,
        abi::IORING_OP_SPLICE,
        abi::IORING_OP_MSG_RING,
    ] {
        let sqe = Sqe::from_raw(abi::io_uring_sqe {
            opcode,
            fd: 0,
            ..Default::default()
        });
        assert_eq!(ring.push(&sqe), Err(PushError::NeedsOwner), "opcode {opcode}");
    }
    // An open that was never submitted created nothing.
    let open = OpenAt::new(Dir::Cwd, c"/".to_owned(), libc::O_RDONLY, 0);
    assert!(open.into_fd().is_none());
    // Run, it owns the fd it opened, and closes it if nobody takes it (a file
    // of this test's own, so other tests' fds do not count).
    let path = std::env::temp_dir().join(format!("spargio-item5-{}", std::process::id()));
    std::fs::write(&path, b"x").unwrap();
    let opened_here = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|target| target == path)
    };
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut open = OpenAt::new(Dir::Cwd, cpath, libc::O_RDONLY, 0);
    let fd = open.run_blocking();
    assert!(fd >= 0);
    assert!(opened_here(), "the op holds the file open");
    drop(open);
    assert!(!opened_here(), "dropping the op closed the fd it created");
    std::fs::remove_file(&path).unwrap();
}

/// Item 6: provided buffers come back to their group exactly once, whether
/// their completion is read or dropped unread, so no buffer is published
/// twice and no receive's data is overwritten.
#[test]
fn item6_provided_buffers_are_recycled_once() {
    let Some(mut ring) = kernel_ring() else { return };
    let group = match RecvBufGroup::new(&ring, 3, 4, 64) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED: provided-buffer rings unavailable: {e}");
            return;
        }
    };
    let (rx, tx) = socket_pair(libc::AF_UNIX, libc::SOCK_SEQPACKET).unwrap();
    let tx = std::os::unix::net::UnixDatagram::from(tx);
    let mut table = InFlight::default();
    if let Err((_, e)) = table.submit(&mut ring, Box::new(RecvMulti::new(Arc::new(rx), group)), 0u8) {
        panic!("submit: {e}");
    }
    // Many more messages than buffers: this only works if each buffer goes
    // back once per use.
    let mut got = 0;
    for i in 0..64u8 {
        let msg = [i; 9];
        tx.send(&msg).unwrap();
        ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
        let cqe = ring.reap().expect("a completion");
        match table.complete(cqe) {
            Completion::More { mut event, .. } => {
                if i % 3 == 0 {
                    // Dropped unread: its buffer goes back all the same.
                    drop(event);
                } else {
                    let mut out = Vec::new();
                    assert_eq!(event.read_into(&mut out).unwrap(), 9);
                    assert_eq!(out, msg, "message {i}");
                    assert!(event.take_buf().is_none(), "a buffer is taken once");
                }
                got += 1;
            }
            Completion::Finished { cqe, .. } => panic!("the multishot receive ended: {cqe:?}"),
            Completion::Stale => panic!("stale completion"),
        }
    }
    assert_eq!(got, 64);
}

struct PanickingWaker(AtomicBool);

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
        panic!("a waker that panics on purpose (soundness item 7)");
    }
}

/// Polls `fut` once with `waker`.
fn poll_with<F: Future + ?Sized>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

/// Item 7: a user waker that panics when the shard reaps its op's completion
/// (or fires its timer) does not unwind out of the shard: the runtime goes
/// on, and the op's result is still there for the next poll.
#[test]
fn item7_a_panicking_waker_does_not_take_a_shard_down() {
    for kernel in [Kernel::IoUring, Kernel::Sim] {
        let Some(b) = builder(kernel, 1) else { continue };
        let rt = build(kernel, b);
        let (reader, mut writer) = std::io::pipe().unwrap();
        let file = spargio::fs::File::from_owned_fd(OwnedFd::from(reader));
        let task = rt
            .handle()
            .spawn_pinned(0, async move {
                let flag = Arc::new(PanickingWaker(AtomicBool::new(false)));
                let waker = Waker::from(flag.clone());
                let mut read = std::pin::pin!(file.read_at(Vec::with_capacity(8), 0));
                assert!(poll_with(read.as_mut(), &waker).is_pending());
                let mut sleep = std::pin::pin!(spargio::time::sleep(Duration::from_millis(1)));
                assert!(poll_with(sleep.as_mut(), &waker).is_pending());
                writer.write_all(b"ok").unwrap();
                while !flag.0.load(Ordering::SeqCst) {
                    yield_now().await;
                }
                sleep.await;
                read.await
            })
            .unwrap();
        let (res, buf) = join("read after a panicking waker", task);
        if kernel == Kernel::Sim {
            // The pipe is a real one, unknown to the simulated kernel: the read
            // fails, but it completes.
            assert!(res.is_err() || buf == b"ok");
        } else {
            assert_eq!(res.unwrap(), 2);
            assert_eq!(buf, b"ok");
        }
        // The shard still runs tasks.
        assert_eq!(
            join("after", rt.handle().spawn_pinned(0, async { 7 }).unwrap()),
            7
        );
    }
}

/// Item 8: in a child forked without exec, every entry point of a runtime
/// the parent built reports `ForkedChild` and touches no ring (the rings are
/// not mapped there); dropping the runtime there leaks instead of joining
/// threads that do not exist. The parent's runtime is unaffected.
#[test]
fn item8_a_fork_child_gets_errors_not_crashes() {
    for kernel in [Kernel::IoUring, Kernel::Queue] {
        let Some(b) = builder(kernel, 2) else { continue };
        let rt = build(kernel, b);
        let Some(b2) = builder(kernel, 1) else { continue };
        let doomed = build(kernel, b2);
        assert_eq!(
            join("before", rt.handle().spawn_pinned(1, async { 1 }).unwrap()),
            1
        );
        let handle = rt.handle().clone();
        let code = spargio::sys::os::run_in_forked_child(move || {
            let forked = |e: &spargio::RuntimeError| matches!(e, spargio::RuntimeError::ForkedChild);
            if !handle.spawn_pinned(0, async {}).is_err_and(|e| forked(&e)) {
                return 1;
            }
            if !handle.spawn_stealable(async {}).is_err_and(|e| forked(&e)) {
                return 2;
            }
            if !handle.spawn_blocking(|| ()).is_err_and(|e| forked(&e)) {
                return 3;
            }
            let to = handle.remote(1).unwrap();
            if to.send_raw_nowait(1, 2) != Err(spargio::SendError::ForkedChild) {
                return 4;
            }
            if !doomed.block_on(async {}).is_err_and(|e| forked(&e)) {
                return 5;
            }
            drop(doomed);
            0
        })
        .unwrap();
        assert_eq!(
            code, 0,
            "{kernel:?}: entry point {code} did not report ForkedChild"
        );
        // The parent goes on as before.
        assert_eq!(
            join("after", rt.handle().spawn_pinned(1, async { 2 }).unwrap()),
            2
        );
        rt.handle().remote(1).unwrap().send_raw_nowait(1, 2).unwrap();
    }
}
