//! Each fault the simulated kernel injects, exercised through a `Ring`, and
//! the ops it executes (files, provided buffers, timeouts on the virtual
//! clock, cancellation).
//!
//! Entries that point at memory go through `Ring::push_unchecked`; each call
//! site says which buffer it lends and why that buffer outlives the entry.
//! Memory is lent to the simulated kernel (`SimKernel::lend`) and SQEs carry
//! the loan's address, so these tests pass under `-Zmiri-strict-provenance`.

use std::thread;
use std::time::Duration;

use spargio_sys::abi;
use spargio_sys::msg::UserData;
use spargio_sys::ring::{Ring, RingConfig};
use spargio_sys::sim::{Faults, Lent, SimKernel};
use spargio_sys::{Cqe, Sqe};

/// Long enough never to expire in a passing test; a failing one ends instead of hanging.
const PATIENCE: Duration = Duration::from_secs(5);

fn ring(kernel: &SimKernel, sq_entries: u32, cq_entries: u32) -> Ring {
    Ring::sim(
        kernel,
        &RingConfig {
            sq_entries,
            cq_entries,
            ..RingConfig::default()
        },
    )
    .unwrap()
}

fn nop(user_data: u64) -> Sqe {
    Sqe::nop().user_data(user_data)
}

fn cqe(user_data: u64, res: i32) -> Cqe {
    Cqe {
        user_data,
        res,
        flags: 0,
    }
}

/// Submits, waits for `n` CQEs, and takes every ready one.
fn wait(ring: &mut Ring, n: u32) -> Vec<Cqe> {
    ring.submit_and_wait(n, Some(PATIENCE)).unwrap();
    let mut out = Vec::new();
    ring.drain_cqes(&mut out);
    assert!(out.len() >= n as usize, "waited for {n} CQEs, got {out:?}");
    out
}

fn drain(ring: &mut Ring) -> Vec<Cqe> {
    let mut out = Vec::new();
    ring.drain_cqes(&mut out);
    out
}

/// Queues an entry that may point at memory.
///
/// # Safety
///
/// What the entry points at must stay valid, and untouched by the test,
/// until its final CQE has been reaped.
unsafe fn push_lent(ring: &mut Ring, sqe: abi::io_uring_sqe) {
    // SAFETY: forwarded to this function's caller.
    unsafe { ring.push_unchecked(&Sqe::from_raw(sqe)) }.unwrap();
}

fn read_sqe(op: u8, fd: i32, buf: &Lent<'_>, offset: u64, user_data: u64) -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode: op,
        fd,
        addr_or_splice_off_in: buf.addr(),
        len: buf.len() as u32,
        off_or_addr2: offset,
        user_data,
        ..Default::default()
    }
}

fn write_sqe(fd: i32, buf: &Lent<'_>, offset: u64, user_data: u64) -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode: abi::IORING_OP_WRITE,
        fd,
        addr_or_splice_off_in: buf.addr(),
        len: buf.len() as u32,
        off_or_addr2: offset,
        user_data,
        ..Default::default()
    }
}

/// A RECV into a buffer chosen from provided-buffer group `group`.
fn recv_select(fd: i32, group: u16, user_data: u64) -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode: abi::IORING_OP_RECV,
        flags: abi::IOSQE_BUFFER_SELECT,
        fd,
        buf_index_or_group: group,
        user_data,
        ..Default::default()
    }
}

fn timespec(d: Duration) -> abi::kernel_timespec {
    abi::kernel_timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

fn timeout_sqe(
    ts: &Lent<'_, abi::kernel_timespec>,
    count: u64,
    flags: u32,
    user_data: u64,
) -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode: abi::IORING_OP_TIMEOUT,
        addr_or_splice_off_in: ts.addr(),
        len: 1,
        off_or_addr2: count,
        op_flags: flags,
        user_data,
        ..Default::default()
    }
}

fn cancel_sqe(target: u64, flags: u32, user_data: u64) -> Sqe {
    Sqe::from_raw(abi::io_uring_sqe {
        opcode: abi::IORING_OP_ASYNC_CANCEL,
        fd: -1,
        addr_or_splice_off_in: target,
        op_flags: flags,
        user_data,
        ..Default::default()
    })
}

fn timeout_remove_sqe(target: u64, user_data: u64) -> Sqe {
    Sqe::from_raw(abi::io_uring_sqe {
        opcode: abi::IORING_OP_TIMEOUT_REMOVE,
        fd: -1,
        addr_or_splice_off_in: target,
        user_data,
        ..Default::default()
    })
}

/// Queues an entry that lends no memory (a cancel's `addr` is a user_data).
fn push_plain(ring: &mut Ring, sqe: &Sqe) {
    // SAFETY: NOP, cancel and timeout-remove entries lend no memory to the kernel.
    unsafe { ring.push_unchecked(sqe) }.unwrap();
}

fn sorted_user_data(cqes: &[Cqe]) -> Vec<u64> {
    let mut v: Vec<u64> = cqes.iter().map(|c| c.user_data).collect();
    v.sort_unstable();
    v
}

// === enter errors ===

#[test]
fn eintr_from_enter_is_retried_by_submit_and_wait() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        enter_eintr_every: Some(2),
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 4, 8);
    for i in 0..6 {
        ring.push(&nop(i)).unwrap();
        assert_eq!(wait(&mut ring, 1), vec![cqe(i, 0)]);
    }
    // Waiting enters 1..=11: the even ones were interrupted and retried.
    assert_eq!(kernel.injected().eintr, 5);
}

#[test]
fn eintr_only_interrupts_waiting_enters() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        enter_eintr_every: Some(1),
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 4, 8);
    ring.push(&nop(1)).unwrap();
    assert_eq!(
        ring.submit().unwrap(),
        1,
        "a plain submit does not wait, so no signal interrupts it"
    );
    assert_eq!(drain(&mut ring), vec![cqe(1, 0)]);
    assert_eq!(kernel.injected().eintr, 0);
}

#[test]
fn ebusy_every_nth_enter_returns_before_submitting() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        enter_ebusy_every: Some(2),
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 4, 8);
    ring.push(&nop(0)).unwrap();
    assert_eq!(ring.submit().unwrap(), 1);
    ring.push(&nop(1)).unwrap();
    let err = ring.submit().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
    assert_eq!(ring.sq_len(), 1, "EBUSY came before the kernel took anything");
    assert_eq!(ring.submit().unwrap(), 1, "the retry succeeds");
    assert_eq!(drain(&mut ring), vec![cqe(0, 0), cqe(1, 0)]);
    assert_eq!(kernel.injected().ebusy, 1);
}

#[test]
fn ebusy_while_overflowed_surfaces_and_succeeds_after_reaping() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        ebusy_while_overflowed: true,
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 4, 8);
    for i in 0..9 {
        ring.push(&nop(i)).unwrap();
        ring.submit().unwrap();
    }
    assert!(
        ring.cq_overflow_pending(),
        "the ninth CQE overflowed an 8-entry CQ"
    );
    assert_eq!(ring.sim_ring().unwrap().overflowed(), 1);

    ring.push(&nop(9)).unwrap();
    let err = ring.submit().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
    assert_eq!(ring.sq_len(), 1, "nothing was submitted");

    // Reap, then retry: the overflow is flushed and the entry goes in.
    assert_eq!(sorted_user_data(&drain(&mut ring)), (0..8).collect::<Vec<_>>());
    assert_eq!(ring.submit().unwrap(), 1);
    assert_eq!(drain(&mut ring), vec![cqe(8, 0), cqe(9, 0)]);
    assert!(!ring.cq_overflow_pending());
    assert_eq!(kernel.injected().ebusy, 1);
}

// === CQ overflow, reordering, delays ===

#[test]
fn forced_overflow_sets_the_flag_and_a_getevents_enter_flushes() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        overflow_every: Some(1),
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 4, 8);
    for i in 0..3 {
        ring.push(&nop(i)).unwrap();
    }
    ring.submit().unwrap();
    assert_eq!(ring.cq_len(), 0, "every CQE went to the overflow list");
    assert!(ring.cq_overflow_pending() && ring.needs_flush());
    assert_eq!(ring.sim_ring().unwrap().overflowed(), 3);
    ring.submit_and_flush().unwrap();
    assert!(!ring.cq_overflow_pending());
    assert_eq!(
        drain(&mut ring),
        vec![cqe(0, 0), cqe(1, 0), cqe(2, 0)],
        "flushed in order"
    );
    assert_eq!(kernel.injected().overflowed, 3);
}

#[test]
fn reordered_cqes_all_arrive() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        reorder: true,
        seed: 5,
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 8, 16);
    for i in 0..8 {
        ring.push(&nop(i)).unwrap();
    }
    let got = wait(&mut ring, 8);
    let order: Vec<u64> = got.iter().map(|c| c.user_data).collect();
    assert_eq!(
        sorted_user_data(&got),
        (0..8).collect::<Vec<_>>(),
        "each completion exactly once"
    );
    assert_ne!(order, (0..8).collect::<Vec<_>>(), "the batch was shuffled");
    assert_eq!(kernel.injected().reordered_batches, 1);
}

#[test]
fn delayed_cqes_are_held_then_released_by_later_enters() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        delay_cqes: 3,
        seed: 1,
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 16, 32);
    for i in 0..16 {
        ring.push(&nop(i)).unwrap();
    }
    ring.submit().unwrap();
    let held = ring.sim_ring().unwrap().delayed();
    assert!(held > 0, "some CQEs were held back");
    assert_eq!(ring.cq_len() as usize + held, 16);
    assert_eq!(kernel.injected().delayed_cqes, held as u64);
    // Each held CQE waits at most 3 more enters, even enters that do not wait.
    for _ in 0..3 {
        ring.submit_and_flush().unwrap();
    }
    assert_eq!(ring.sim_ring().unwrap().delayed(), 0);
    assert_eq!(sorted_user_data(&drain(&mut ring)), (0..16).collect::<Vec<_>>());
}

#[test]
fn delayed_cqes_are_released_to_a_waiter() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        delay_cqes: 100,
        seed: 9,
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 16, 32);
    for i in 0..16 {
        ring.push(&nop(i)).unwrap();
    }
    ring.submit().unwrap();
    assert!(ring.sim_ring().unwrap().delayed() > 0);
    // A waiter never blocks on held CQEs: they are posted before it would sleep.
    let got = wait(&mut ring, 16);
    assert_eq!(sorted_user_data(&got), (0..16).collect::<Vec<_>>());
    assert_eq!(ring.sim_ring().unwrap().delayed(), 0);
}

// === files: short reads, EAGAIN, offsets ===

#[test]
fn short_reads_return_fewer_bytes_and_resume() {
    let kernel = SimKernel::new();
    let data: Vec<u8> = (0..=199).collect();
    let fd = kernel.create_file(data.clone());
    kernel.set_faults(Faults {
        short_read_max: Some(7),
        seed: 3,
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 4, 8);
    let mut buf = vec![0u8; 64];
    let mut got = Vec::new();
    loop {
        let lent = kernel.lend(buf);
        let sqe = read_sqe(abi::IORING_OP_READ, fd, &lent, got.len() as u64, 1);
        // SAFETY: the buffer stays lent until this read's CQE is reaped just below.
        unsafe { push_lent(&mut ring, sqe) };
        let [c] = wait(&mut ring, 1)[..] else {
            panic!("one CQE")
        };
        buf = lent.into_inner();
        let n = usize::try_from(c.res).expect("a byte count");
        assert!(n <= 7, "a read of {n} bytes is not short");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
    assert!(kernel.injected().short_reads > 0);
}

#[test]
fn eagain_completes_the_op_without_doing_it() {
    let kernel = SimKernel::new();
    let fd = kernel.create_file(b"hello world".to_vec());
    kernel.set_faults(Faults {
        eagain_every: Some(2),
        ..Faults::default()
    });
    let mut ring = ring(&kernel, 4, 8);
    let upper_lent = kernel.lend_readonly(b"HELLO");

    let lent = kernel.lend([0u8; 5]);
    let read = read_sqe(abi::IORING_OP_READ, fd, &lent, 0, 1);
    // SAFETY: the buffer stays lent until the CQE is reaped on the next line.
    unsafe { push_lent(&mut ring, read) };
    assert_eq!(wait(&mut ring, 1), vec![cqe(1, 5)]);
    let buf = lent.into_inner();
    assert_eq!(buf, b"hello");

    // SAFETY: `upper_lent` stays lent to the end of the test and is only read.
    unsafe { push_lent(&mut ring, write_sqe(fd, &upper_lent, 0, 2)) };
    assert_eq!(wait(&mut ring, 1), vec![cqe(2, -libc::EAGAIN)]);
    assert_eq!(
        kernel.file_contents(fd).unwrap(),
        b"hello world",
        "a failed write changes nothing"
    );

    // SAFETY: as above.
    unsafe { push_lent(&mut ring, write_sqe(fd, &upper_lent, 0, 3)) };
    assert_eq!(wait(&mut ring, 1), vec![cqe(3, 5)], "the retry succeeds");
    assert_eq!(kernel.file_contents(fd).unwrap(), b"HELLO world");

    let lent = kernel.lend(buf);
    let read = read_sqe(abi::IORING_OP_READ, fd, &lent, 6, 4);
    // SAFETY: the buffer stays lent until the CQE is reaped on the next line.
    unsafe { push_lent(&mut ring, read) };
    assert_eq!(wait(&mut ring, 1), vec![cqe(4, -libc::EAGAIN)]);
    assert_eq!(kernel.injected().eagain, 2);
}

#[test]
fn reads_and_writes_follow_offsets_and_the_file_position() {
    let kernel = SimKernel::new();
    let fd = kernel.create_file(Vec::new());
    let sources = [
        kernel.lend_readonly(b"abc"),
        kernel.lend_readonly(b"xy"),
        kernel.lend_readonly(b"z"),
    ];
    let mut ring = ring(&kernel, 8, 16);
    // SAFETY: the three sources are lent before the ring is made and only read.
    unsafe {
        push_lent(&mut ring, write_sqe(fd, &sources[0], 5, 1));
        push_lent(&mut ring, write_sqe(fd, &sources[1], u64::MAX, 2));
        push_lent(&mut ring, write_sqe(fd, &sources[2], u64::MAX, 3));
    }
    assert_eq!(wait(&mut ring, 3), vec![cqe(1, 3), cqe(2, 2), cqe(3, 1)]);
    assert_eq!(
        kernel.file_contents(fd).unwrap(),
        b"xyz\0\0abc",
        "zero-filled gap, position writes"
    );

    let lent = kernel.lend([0u8; 4]);
    let read = read_sqe(abi::IORING_OP_READ, fd, &lent, u64::MAX, 4);
    // SAFETY: the buffer stays lent until the CQE is reaped on the next line.
    unsafe { push_lent(&mut ring, read) };
    assert_eq!(wait(&mut ring, 1), vec![cqe(4, 4)]);
    assert_eq!(
        lent.into_inner(),
        b"\0\0ab",
        "read at the position the writes left"
    );

    let lent = kernel.lend([0u8; 8]);
    for (user_data, want) in [(5, 1), (6, 0)] {
        let recv = read_sqe(abi::IORING_OP_RECV, fd, &lent, 0, user_data);
        // SAFETY: the buffer stays lent until the CQE is reaped on the next line.
        unsafe { push_lent(&mut ring, recv) };
        assert_eq!(
            wait(&mut ring, 1),
            vec![cqe(user_data, want)],
            "RECV streams from the position"
        );
    }

    let past_end = read_sqe(abi::IORING_OP_READ, fd, &lent, 100, 7);
    let unknown_fd = read_sqe(abi::IORING_OP_READ, fd + 1000, &lent, 0, 8);
    let null = abi::io_uring_sqe {
        addr_or_splice_off_in: 0,
        user_data: 9,
        ..past_end
    };
    // SAFETY: the buffer stays lent until the CQEs are reaped below; the last
    // entry points at no memory at all.
    unsafe {
        push_lent(&mut ring, past_end);
        push_lent(&mut ring, unknown_fd);
        push_lent(&mut ring, null);
    }
    assert_eq!(
        wait(&mut ring, 3),
        vec![cqe(7, 0), cqe(8, -libc::EBADF), cqe(9, -libc::EFAULT)]
    );
    assert_eq!(lent.into_inner()[0], b'c');
    assert!(kernel.remove_file(fd));
    assert_eq!(kernel.file_contents(fd), None);
}

#[test]
fn access_outside_a_loan_or_against_its_mode_is_efault() {
    let kernel = SimKernel::new();
    let fd = kernel.create_file(b"0123456789".to_vec());
    let lent = kernel.lend([0u8; 8]);
    let readonly_lent = kernel.lend_readonly(b"abcd");
    let mut ring = ring(&kernel, 4, 8);
    // A read 4 bytes longer than the loan, and a read into read-only memory.
    let overrun = abi::io_uring_sqe {
        len: 12,
        ..read_sqe(abi::IORING_OP_READ, fd, &lent, 0, 1)
    };
    let into_readonly = read_sqe(abi::IORING_OP_READ, fd, &readonly_lent, 0, 2);
    // SAFETY: both entries fail their address checks before touching memory;
    // the loans outlive them anyway.
    unsafe {
        push_lent(&mut ring, overrun);
        push_lent(&mut ring, into_readonly);
    }
    assert_eq!(
        wait(&mut ring, 2),
        vec![cqe(1, -libc::EFAULT), cqe(2, -libc::EFAULT)]
    );
    assert_eq!(lent.into_inner(), [0; 8], "nothing was written");
    assert_eq!(readonly_lent.into_inner(), b"abcd");
}

// === provided buffers and ENOBUFS ===

#[test]
fn buffer_select_gets_enobufs_without_buffers_and_under_the_fault() {
    let kernel = SimKernel::new();
    let fd = kernel.create_file(b"0123456789abcdef".to_vec());
    let mut ring = ring(&kernel, 4, 8);
    let pool_lent = kernel.lend([0u8; 8]);

    // SAFETY: a buffer-select RECV lends no memory of its own.
    unsafe { push_lent(&mut ring, recv_select(fd, 7, 1)) };
    assert_eq!(
        wait(&mut ring, 1),
        vec![cqe(1, -libc::ENOBUFS)],
        "no buffers provided yet"
    );

    let provide = abi::io_uring_sqe {
        opcode: abi::IORING_OP_PROVIDE_BUFFERS,
        fd: 2,
        addr_or_splice_off_in: pool_lent.addr(),
        len: 4,
        off_or_addr2: 10,
        buf_index_or_group: 7,
        user_data: 2,
        ..Default::default()
    };
    // SAFETY: the pool stays lent until every buffer in it has come
    // back in a CQE (both are consumed by the RECVs below before the loan ends).
    unsafe { push_lent(&mut ring, provide) };
    assert_eq!(wait(&mut ring, 1), vec![cqe(2, 0)]);

    kernel.set_faults(Faults {
        enobufs_every: Some(2),
        ..Faults::default()
    });
    let buffer = |bid: u32| abi::IORING_CQE_F_BUFFER | bid << abi::IORING_CQE_BUFFER_SHIFT;
    let want = [
        Cqe {
            user_data: 3,
            res: 4,
            flags: buffer(10),
        },
        cqe(4, -libc::ENOBUFS), // injected: a buffer was available
        Cqe {
            user_data: 5,
            res: 4,
            flags: buffer(11),
        },
        cqe(6, -libc::ENOBUFS), // injected
        cqe(7, -libc::ENOBUFS), // the group is empty now
    ];
    for w in want {
        // SAFETY: a buffer-select RECV lends no memory of its own.
        unsafe { push_lent(&mut ring, recv_select(fd, 7, w.user_data)) };
        let [c] = wait(&mut ring, 1)[..] else {
            panic!("one CQE")
        };
        assert_eq!(c, w);
        assert_eq!(c.buffer_id(), (c.res > 0).then_some((c.flags >> 16) as u16));
    }
    assert_eq!(pool_lent.into_inner(), b"01234567");
    assert_eq!(kernel.injected().enobufs, 2);
}

// === timeouts on the virtual clock ===

#[test]
fn timeout_fires_when_the_virtual_clock_passes_it() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::from_millis(10));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, 1)) };
    ring.submit().unwrap();
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 1);
    kernel.advance(Duration::from_millis(9));
    assert_eq!(ring.cq_len(), 0, "not yet");
    kernel.advance(Duration::from_millis(1));
    assert_eq!(drain(&mut ring), vec![cqe(1, -libc::ETIME)]);
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 0);
    assert_eq!(kernel.now(), Duration::from_millis(10));
}

#[test]
fn zero_timeout_fires_at_submission() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::ZERO);
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, 1)) };
    assert_eq!(wait(&mut ring, 1), vec![cqe(1, -libc::ETIME)]);
}

#[test]
fn timeout_with_a_count_completes_after_that_many_completions() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::from_secs(3600));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 2, 0, 100)) };
    ring.push(&nop(1)).unwrap();
    assert_eq!(wait(&mut ring, 1), vec![cqe(1, 0)]);
    ring.push(&nop(2)).unwrap();
    assert_eq!(wait(&mut ring, 2), vec![cqe(2, 0), cqe(100, 0)]);
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 0);
}

#[test]
fn absolute_timeout_uses_the_virtual_clock() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::from_millis(8));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    kernel.advance(Duration::from_millis(5));
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, abi::IORING_TIMEOUT_ABS, 1)) };
    ring.submit().unwrap();
    kernel.advance(Duration::from_millis(2));
    assert!(drain(&mut ring).is_empty());
    kernel.advance(Duration::from_millis(1));
    assert_eq!(drain(&mut ring), vec![cqe(1, -libc::ETIME)]);
}

#[test]
fn multishot_timeout_repeats_then_ends() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::from_millis(5));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe {
        push_lent(
            &mut ring,
            timeout_sqe(&ts_lent, 3, abi::IORING_TIMEOUT_MULTISHOT, 1),
        )
    };
    ring.submit().unwrap();
    kernel.advance(Duration::from_millis(12));
    let more = Cqe {
        user_data: 1,
        res: -libc::ETIME,
        flags: abi::IORING_CQE_F_MORE,
    };
    assert_eq!(drain(&mut ring), vec![more, more]);
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 1);
    kernel.advance(Duration::from_millis(3));
    assert_eq!(
        drain(&mut ring),
        vec![cqe(1, -libc::ETIME)],
        "the last shot has no F_MORE"
    );
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 0);
}

#[test]
fn timeout_update_rearms_a_pending_timeout() {
    let kernel = SimKernel::new();
    let (first, later) = (timespec(Duration::from_secs(1)), timespec(Duration::from_secs(5)));
    let (first_lent, later_lent) = (kernel.lend_value(first), kernel.lend_value(later));
    let mut ring = ring(&kernel, 4, 8);
    let update = abi::io_uring_sqe {
        opcode: abi::IORING_OP_TIMEOUT_REMOVE,
        fd: -1,
        addr_or_splice_off_in: 1,
        off_or_addr2: later_lent.addr(),
        op_flags: abi::IORING_TIMEOUT_UPDATE,
        user_data: 2,
        ..Default::default()
    };
    // SAFETY: both timespecs are lent before the ring is made, and stay lent past it.
    unsafe {
        push_lent(&mut ring, timeout_sqe(&first_lent, 0, 0, 1));
        push_lent(&mut ring, update);
    }
    assert_eq!(wait(&mut ring, 1), vec![cqe(2, 0)]);
    kernel.advance(Duration::from_secs(1));
    assert!(drain(&mut ring).is_empty(), "the old deadline no longer applies");
    kernel.advance(Duration::from_secs(4));
    assert_eq!(drain(&mut ring), vec![cqe(1, -libc::ETIME)]);
}

#[test]
fn auto_advance_jumps_to_the_next_deadline_instead_of_blocking() {
    let kernel = SimKernel::new();
    kernel.set_auto_advance(true);
    let ts = timespec(Duration::from_secs(3600));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, 1)) };
    ring.submit_and_wait(1, None).unwrap();
    assert_eq!(drain(&mut ring), vec![cqe(1, -libc::ETIME)]);
    assert_eq!(kernel.now(), Duration::from_secs(3600));
}

// === cancellation ===

#[test]
fn cancel_of_a_pending_timeout() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::from_secs(1));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, 1)) };
    ring.submit().unwrap();
    push_plain(&mut ring, &cancel_sqe(1, 0, 2));
    assert_eq!(wait(&mut ring, 2), vec![cqe(1, -libc::ECANCELED), cqe(2, 0)]);
    push_plain(&mut ring, &cancel_sqe(1, 0, 3));
    assert_eq!(
        wait(&mut ring, 1),
        vec![cqe(3, -libc::ENOENT)],
        "nothing left to cancel"
    );

    // SAFETY: as above.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, 4)) };
    push_plain(&mut ring, &timeout_remove_sqe(4, 5));
    assert_eq!(wait(&mut ring, 2), vec![cqe(4, -libc::ECANCELED), cqe(5, 0)]);
    push_plain(&mut ring, &timeout_remove_sqe(4, 6));
    assert_eq!(wait(&mut ring, 1), vec![cqe(6, -libc::ENOENT)]);

    kernel.advance(Duration::from_secs(10));
    assert!(drain(&mut ring).is_empty(), "cancelled timeouts never fire");
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 0);
}

#[test]
fn cancel_any_ends_every_pending_op() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::from_secs(1));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 8, 16);
    // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
    unsafe {
        for i in 1..=3 {
            push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, i));
        }
    }
    push_plain(&mut ring, &cancel_sqe(0, abi::IORING_ASYNC_CANCEL_ANY, 9));
    let got = wait(&mut ring, 4);
    let cancelled = [
        cqe(1, -libc::ECANCELED),
        cqe(2, -libc::ECANCELED),
        cqe(3, -libc::ECANCELED),
    ];
    assert_eq!(got[..3], cancelled);
    assert_eq!(got[3], cqe(9, 3), "ANY reports how many it cancelled");
}

#[test]
fn cancel_racing_completion_gives_one_outcome_for_the_target() {
    let mut lost_results = Vec::new();
    for seed in 0..8 {
        let kernel = SimKernel::new();
        kernel.set_faults(Faults {
            cancel_race_every: Some(1),
            reorder: true,
            seed,
            ..Faults::default()
        });
        let ts = timespec(Duration::from_secs(1));
        let ts_lent = kernel.lend_value(ts);
        let mut ring = ring(&kernel, 4, 8);
        // SAFETY: `ts_lent` is made before the ring, so it stays lent past the ring.
        unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, 1)) };
        ring.submit().unwrap();
        push_plain(&mut ring, &cancel_sqe(1, 0, 2));
        let mut got = wait(&mut ring, 2);
        kernel.advance(Duration::from_secs(10));
        ring.submit_and_flush().unwrap();
        got.extend(drain(&mut ring));

        let target: Vec<&Cqe> = got.iter().filter(|c| c.user_data == 1).collect();
        assert_eq!(
            target,
            [&cqe(1, -libc::ETIME)],
            "the target completes once, normally"
        );
        let cancel: Vec<i32> = got.iter().filter(|c| c.user_data == 2).map(|c| c.res).collect();
        let [res] = cancel[..] else {
            panic!("one cancel CQE: {got:?}")
        };
        assert!(
            res == -libc::EALREADY || res == -libc::ENOENT,
            "a lost race is EALREADY or ENOENT, got {res}"
        );
        lost_results.push(res);
        assert_eq!(kernel.injected().cancel_races, 1);
    }
    assert!(lost_results.contains(&-libc::EALREADY) && lost_results.contains(&-libc::ENOENT));
}

// === errors and threads ===

#[test]
fn unsupported_entries_fail_cleanly() {
    let kernel = SimKernel::new();
    let file = kernel.create_file(Vec::new());
    let mut ring = ring(&kernel, 8, 16);
    let linked = abi::io_uring_sqe {
        flags: abi::IOSQE_IO_LINK,
        ..*nop(1).as_raw()
    };
    let select = abi::io_uring_sqe {
        flags: abi::IOSQE_BUFFER_SELECT,
        ..*nop(2).as_raw()
    };
    let unknown = abi::io_uring_sqe {
        opcode: abi::IORING_OP_LAST,
        ..*nop(3).as_raw()
    };
    let fixed = abi::io_uring_sqe {
        flags: abi::IOSQE_FIXED_FILE,
        ..recv_select(0, 0, 4)
    };
    let msg_to_file = abi::io_uring_sqe {
        opcode: abi::IORING_OP_MSG_RING,
        fd: file,
        addr_or_splice_off_in: abi::IORING_MSG_DATA,
        user_data: 5,
        ..Default::default()
    };
    // SAFETY: none of these entries reaches user memory: each fails validation first.
    unsafe {
        for sqe in [linked, select, unknown, fixed, msg_to_file] {
            push_lent(&mut ring, sqe);
        }
    }
    assert_eq!(
        wait(&mut ring, 5),
        vec![
            cqe(1, -libc::EINVAL),
            cqe(2, -libc::EINVAL),
            cqe(3, -libc::EINVAL),
            cqe(4, -libc::EBADF),
            cqe(5, -libc::EBADFD)
        ]
    );
}

#[test]
fn a_blocked_waiter_wakes_when_another_thread_advances_the_clock() {
    let kernel = SimKernel::new();
    let ts = timespec(Duration::from_millis(50));
    let ts_lent = kernel.lend_value(ts);
    let mut ring = ring(&kernel, 4, 8);
    // SAFETY: `ts_lent` outlives the waiter thread, which is joined below.
    unsafe { push_lent(&mut ring, timeout_sqe(&ts_lent, 0, 0, 1)) };
    ring.submit().unwrap();
    let waiter = thread::spawn(move || {
        ring.submit_and_wait(1, Some(Duration::from_secs(30))).unwrap();
        ring.pop_cqe()
    });
    kernel.advance(Duration::from_millis(50));
    assert_eq!(waiter.join().unwrap(), Some(cqe(1, -libc::ETIME)));
}

#[test]
fn a_blocked_waiter_wakes_on_msg_ring_from_another_thread() {
    let kernel = SimKernel::new();
    let mut a = ring(&kernel, 4, 8);
    let mut b = ring(&kernel, 4, 8);
    let target = b.ring_fd();
    let waiter = thread::spawn(move || {
        b.submit_and_wait(1, Some(Duration::from_secs(30))).unwrap();
        b.pop_cqe()
    });
    a.push_msg_ring(&target, cqe(0x77, 42), false, UserData::from_raw(1), false)
        .unwrap();
    assert_eq!(wait(&mut a, 1), vec![cqe(1, 0)]);
    assert_eq!(waiter.join().unwrap(), Some(cqe(0x77, 42)));
}
