//! The ring against the running kernel (and the same paths on the simulator).
//!
//! Real-kernel tests skip, with a printed reason, only when io_uring itself is
//! unavailable here; any other failure fails the test.

use std::os::fd::AsRawFd;
use std::time::Duration;

use spargio_sys::abi;
use spargio_sys::ring::{PushError, Ring, RingConfig};
use spargio_sys::sim::SimKernel;
use spargio_sys::{Cqe, Sqe};

/// A kernel ring, or `None` (with the reason printed) where io_uring is unavailable.
fn kernel_ring(config: &RingConfig) -> Option<Ring> {
    match Ring::with_config(config) {
        Ok(r) => Some(r),
        Err(e) if e.io_uring_unavailable() => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Queues an entry that names raw fds (what these kernel tests are about).
fn push_raw(ring: &mut Ring, sqe: &Sqe) -> Result<(), PushError> {
    // SAFETY: the test entries point at no memory, or at memory the test keeps
    // alive until it has reaped their completions; the fds they name belong to
    // the test; no op table tracks these rings.
    unsafe { ring.push_unchecked(sqe) }
}

fn msg_ring_sqe(target: i32, res: u32, user_data: u64, msg_flags: u32) -> Sqe {
    let mut raw = abi::io_uring_sqe {
        opcode: abi::IORING_OP_MSG_RING,
        fd: target,
        addr_or_splice_off_in: abi::IORING_MSG_DATA,
        len: res,
        off_or_addr2: user_data,
        op_flags: msg_flags,
        ..Default::default()
    };
    raw.user_data = 0x5151;
    Sqe::from_raw(raw)
}

fn wait_one(ring: &mut Ring) -> Cqe {
    ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    ring.pop_cqe().expect("a completion within 5 s")
}

fn nop_round_trip(ring: &mut Ring) {
    ring.push(&Sqe::nop().user_data(0xdead_beef_0000_0001)).unwrap();
    let c = wait_one(ring);
    assert_eq!(
        c,
        Cqe {
            user_data: 0xdead_beef_0000_0001,
            res: 0,
            flags: 0
        }
    );
    assert!(ring.pop_cqe().is_none());
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_nop_round_trip() {
    let Some(mut ring) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    nop_round_trip(&mut ring);
}

#[test]
fn sim_nop_round_trip() {
    let mut ring = Ring::sim(&SimKernel::new(), &RingConfig::default()).unwrap();
    nop_round_trip(&mut ring);
}

/// Pushes `total` NOPs through a small SQ, reaping as it goes; checks that
/// every user_data comes back exactly once.
fn many_nops(ring: &mut Ring, total: u64) {
    let mut seen = vec![false; total as usize];
    let mut done = 0u64;
    let mut next = 0u64;
    while done < total {
        while next < total {
            match ring.push(&Sqe::nop().user_data(next + 1)) {
                Ok(()) => next += 1,
                Err(PushError::Full) => break,
                Err(e) => panic!("{e}"),
            }
            // Never queue more than the CQ can hold plus what was reaped.
            if next - done >= u64::from(ring.cq_entries()) {
                break;
            }
        }
        ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
        while let Some(c) = ring.pop_cqe() {
            assert_eq!(c.res, 0);
            let i = (c.user_data - 1) as usize;
            assert!(!seen[i], "user_data {} completed twice", c.user_data);
            seen[i] = true;
            done += 1;
        }
    }
    assert!(seen.iter().all(|s| *s));
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_ten_thousand_nops_through_small_rings() {
    let config = RingConfig {
        sq_entries: 8,
        cq_entries: 16,
        ..RingConfig::default()
    };
    let Some(mut ring) = kernel_ring(&config) else {
        return;
    };
    assert_eq!((ring.sq_entries(), ring.cq_entries()), (8, 16));
    many_nops(&mut ring, 10_000);
}

#[test]
fn sim_many_nops_through_small_rings() {
    let config = RingConfig {
        sq_entries: 8,
        cq_entries: 16,
        ..RingConfig::default()
    };
    let mut ring = Ring::sim(&SimKernel::new(), &config).unwrap();
    many_nops(&mut ring, if cfg!(miri) { 100 } else { 10_000 });
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_sq_overfill_never_errors() {
    // 64 NOPs pushed into an 8-entry SQ with nothing reaped in between: a full SQ
    // is submitted and refilled, and the 32-entry CQ holds them all.
    let config = RingConfig {
        sq_entries: 8,
        cq_entries: 64,
        ..RingConfig::default()
    };
    let Some(mut ring) = kernel_ring(&config) else {
        return;
    };
    for i in 0..64 {
        ring.push(&Sqe::nop().user_data(i)).unwrap();
    }
    ring.submit_and_wait(64, Some(Duration::from_secs(5))).unwrap();
    let mut got: Vec<u64> = std::iter::from_fn(|| ring.pop_cqe())
        .map(|c| c.user_data)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..64).collect::<Vec<_>>());
}

fn msg_ring_between(a: &mut Ring, b: &mut Ring) {
    // Data message: b receives a CQE with the chosen user_data and res.
    push_raw(a, &msg_ring_sqe(b.as_raw_fd(), 77, 0xabcd, 0)).unwrap();
    let sent = wait_one(a);
    assert_eq!((sent.user_data, sent.res), (0x5151, 0));
    let got = wait_one(b);
    assert_eq!((got.user_data, got.res, got.flags), (0xabcd, 77, 0));

    // Skip-success on the sender: only the receiver sees a CQE.
    let mut sqe = *msg_ring_sqe(b.as_raw_fd(), 5, 0x1, 0).as_raw();
    sqe.flags |= abi::IOSQE_CQE_SKIP_SUCCESS;
    push_raw(a, &Sqe::from_raw(sqe)).unwrap();
    a.submit().unwrap();
    let got = wait_one(b);
    assert_eq!((got.user_data, got.res), (0x1, 5));
    a.submit_and_wait(0, None).unwrap();
    assert!(a.pop_cqe().is_none(), "skip-success produced a CQE");
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_msg_ring_between_two_rings() {
    let Some(mut a) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    let Some(mut b) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    msg_ring_between(&mut a, &mut b);
}

#[test]
fn sim_msg_ring_between_two_rings() {
    let kernel = SimKernel::new();
    let mut a = Ring::sim(&kernel, &RingConfig::default()).unwrap();
    let mut b = Ring::sim(&kernel, &RingConfig::default()).unwrap();
    msg_ring_between(&mut a, &mut b);
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_msg_ring_flags_pass() {
    let Some(mut a) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    let Some(mut b) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    let mut sqe = *msg_ring_sqe(b.as_raw_fd(), 9, 0x77, abi::IORING_MSG_RING_FLAGS_PASS).as_raw();
    sqe.splice_fd_in_or_file_index = 0x00aa_0000;
    push_raw(&mut a, &Sqe::from_raw(sqe)).unwrap();
    let sent = wait_one(&mut a);
    if sent.res == -libc::EINVAL {
        eprintln!("skipping: this kernel has no IORING_MSG_RING_FLAGS_PASS");
        return;
    }
    assert_eq!(sent.res, 0);
    let got = wait_one(&mut b);
    assert_eq!((got.user_data, got.res, got.flags), (0x77, 9, 0x00aa_0000));
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_msg_ring_to_non_ring_fd_is_an_error() {
    let Some(mut a) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    push_raw(&mut a, &msg_ring_sqe(file.as_raw_fd(), 1, 1, 0)).unwrap();
    let c = wait_one(&mut a);
    assert_eq!(c.res, -libc::EBADFD, "MSG_RING to a regular file: {c:?}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_msg_ring_to_closed_ring_is_an_error() {
    let Some(mut a) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    let b = kernel_ring(&RingConfig::default()).unwrap();
    // Tests run in parallel and fd numbers are reused lowest-first, so message
    // a high duplicate of the ring's fd that no other test will be handed.
    // SAFETY: F_DUPFD_CLOEXEC on a live fd creates a new fd; no memory involved.
    let dup = unsafe { libc::fcntl(b.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3000) };
    assert!(dup >= 3000, "fcntl: {}", std::io::Error::last_os_error());
    drop(b);
    // SAFETY: `dup` is our own fd, closed once.
    assert_eq!(unsafe { libc::close(dup) }, 0);
    push_raw(&mut a, &msg_ring_sqe(dup, 1, 1, 0)).unwrap();
    let c = wait_one(&mut a);
    assert_eq!(c.res, -libc::EBADF, "MSG_RING to a closed fd: {c:?}");
}

#[test]
fn sim_msg_ring_to_unknown_ring_is_an_error() {
    let kernel = SimKernel::new();
    let mut a = Ring::sim(&kernel, &RingConfig::default()).unwrap();
    let b = Ring::sim(&kernel, &RingConfig::default()).unwrap();
    let dead = b.as_raw_fd();
    drop(b);
    push_raw(&mut a, &msg_ring_sqe(dead, 1, 1, 0)).unwrap();
    assert_eq!(wait_one(&mut a).res, -libc::EBADF);
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_ring_fd_is_close_on_exec() {
    let Some(ring) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    // Checked through /proc: the fdinfo flags field is octal and
    // includes O_CLOEXEC (02000000) when set.
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ring.as_raw_fd())).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap()
        .trim();
    let flags = u32::from_str_radix(flags, 8).unwrap();
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "ring fd lacks O_CLOEXEC: {info}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_timed_wait_returns_without_completions() {
    let Some(mut ring) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    ring.submit_and_wait(1, Some(Duration::from_millis(10))).unwrap();
    assert!(ring.pop_cqe().is_none());
}

#[test]
fn sim_timed_wait_returns_without_completions() {
    let mut ring = Ring::sim(&SimKernel::new(), &RingConfig::default()).unwrap();
    ring.submit_and_wait(1, Some(Duration::from_millis(1))).unwrap();
    assert!(ring.pop_cqe().is_none());
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_setup_reports_best_flags() {
    let Some(ring) = kernel_ring(&RingConfig::default()) else {
        return;
    };
    let flags = ring.setup_flags();
    eprintln!("setup flags accepted: {flags:#x}");
    assert_ne!(flags & abi::IORING_SETUP_CQSIZE, 0);
    assert!(ring.features() & abi::IORING_FEAT_SINGLE_MMAP != 0);
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_setup_rejects_zero_entries_with_a_cause() {
    let err = Ring::new(0).unwrap_err();
    if err.io_uring_unavailable() {
        return;
    }
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    assert!(err.to_string().contains("entries"), "{err}");
}

#[test]
fn safe_push_refuses_memory_referencing_entries() {
    let mut ring = Ring::sim(&SimKernel::new(), &RingConfig::default()).unwrap();
    let read = Sqe::from_raw(abi::io_uring_sqe {
        opcode: abi::IORING_OP_READ,
        fd: 0,
        addr_or_splice_off_in: 0x1000,
        len: 16,
        ..Default::default()
    });
    assert_eq!(ring.push(&read), Err(PushError::NeedsOwner));
}
