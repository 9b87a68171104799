//! Memory lent to the simulated kernel belongs to the kernel until it is
//! taken back, so no use of a `Lent` (dropping it, leaking it, sending it to
//! another thread) lets the kernel reach memory that safe code freed or reuses.
//!
//! Run under Miri: the kernel's accesses to lent memory are checked against
//! the memory's lifetime and borrows, and a loan that is never freed fails
//! Miri's leak check.

use std::time::Duration;

use spargio_sys::abi;
use spargio_sys::ring::{Ring, RingConfig};
use spargio_sys::sim::{Lent, SimKernel};
use spargio_sys::{Cqe, Sqe};

fn read_into(fd: i32, addr: u64, len: u32, user_data: u64) -> Sqe {
    Sqe::from_raw(abi::io_uring_sqe {
        opcode: abi::IORING_OP_READ,
        fd,
        addr_or_splice_off_in: addr,
        len,
        user_data,
        ..Default::default()
    })
}

fn run_one(ring: &mut Ring) -> Cqe {
    ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    ring.pop_cqe().expect("one CQE")
}

/// With loans that borrowed their memory, a forgotten `Lent` kept its loan
/// after the borrow ended: once safe code reused the memory, the kernel wrote
/// through the loan's stale pointer (undefined behaviour Miri reports). Now
/// the forgotten memory stays the kernel's until the kernel goes.
#[test]
fn a_forgotten_loan_keeps_its_memory_with_the_kernel() {
    let kernel = SimKernel::new();
    let file = kernel.create_file(b"fresh".to_vec());
    let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    let lent = kernel.lend(vec![0u8; 5]);
    let addr = lent.addr();
    std::mem::forget(lent);
    // Safe code allocates, writes and frees memory of the same size: none of it
    // can be the forgotten loan's.
    for i in 0..8u8 {
        let reuse = vec![i; 5];
        assert_ne!(reuse.as_ptr().addr() as u64, addr);
        drop(reuse);
    }
    // SAFETY: the memory at `addr` belongs to the kernel through the forgotten
    // loan, for as long as the kernel lives (past this read's CQE).
    unsafe { ring.push_unchecked(&read_into(file, addr, 5, 1)) }.unwrap();
    assert_eq!(run_one(&mut ring).res, 5, "the kernel wrote into its own memory");
    // The kernel's last handles free the forgotten memory (or Miri reports a leak).
    drop(ring);
    drop(kernel);
}

#[test]
fn a_dropped_loan_frees_its_memory_and_into_inner_gives_it_back() {
    let kernel = SimKernel::new();
    let file = kernel.create_file(b"abcdef".to_vec());
    let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();

    let dropped = kernel.lend(Vec::from(*b"12345678"));
    // SAFETY: `dropped` stays lent until the CQE is reaped on the next line.
    unsafe { ring.push_unchecked(&read_into(file, dropped.addr(), 3, 1)) }.unwrap();
    assert_eq!(
        run_one(&mut ring),
        Cqe {
            user_data: 1,
            res: 3,
            flags: 0
        }
    );
    drop(dropped);

    let kept = kernel.lend([0u8; 6]);
    assert_eq!((kept.len(), kept.is_empty()), (6, false));
    // SAFETY: `kept` stays lent until the CQE is reaped on the next line.
    unsafe { ring.push_unchecked(&read_into(file, kept.addr(), 6, 2)) }.unwrap();
    assert_eq!(run_one(&mut ring).res, 6);
    assert_eq!(kept.into_inner(), b"abcdef");

    let ts = abi::kernel_timespec {
        tv_sec: 1,
        tv_nsec: 2,
    };
    let value: Lent<'_, abi::kernel_timespec> = kernel.lend_value(ts);
    assert_eq!(value.len(), size_of::<abi::kernel_timespec>());
    assert_eq!(value.into_inner(), [ts]);
    let empty = kernel.lend(Vec::new());
    assert!(empty.is_empty());
}

#[test]
fn a_loan_can_end_on_another_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let kernel = SimKernel::new();
    let lent = kernel.lend_readonly(b"xyz");
    let value = kernel.lend_value(7u64);
    assert_send(&lent);
    assert_send(&value);
    let back =
        std::thread::scope(|s| s.spawn(move || (lent.into_inner(), value.into_inner())).join()).unwrap();
    assert_eq!(back, (b"xyz".to_vec(), vec![7u64]));
}
