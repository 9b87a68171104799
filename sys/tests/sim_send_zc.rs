//! Zero-copy sends (`op::net::SendZc`) on the simulated kernel: the op stays
//! in the table, with its buffer, from the send's result (`F_MORE`) until
//! the notification (`F_NOTIF`), also when its waiter went away in between.
//! The simulated kernel reads the buffer only when it posts the notification,
//! so under Miri a buffer freed early is a use-after-free it reports.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use spargio_sys::abi;
use spargio_sys::op::net::SendZc;
use spargio_sys::op::{Completion, InFlight, Op};
use spargio_sys::ring::{Ring, RingConfig};
use spargio_sys::sim::SimKernel;

/// An `OwnedFd` for a simulated file's fd number, never closed: [`forget_fd`]
/// takes it back once every op holding it is gone.
fn sim_fd(file: RawFd) -> Arc<OwnedFd> {
    // SAFETY: `file` is a simulated fd number that nothing else owns, and
    // `forget_fd` turns the `OwnedFd` back into a number instead of closing it.
    Arc::new(unsafe { OwnedFd::from_raw_fd(file) })
}

fn forget_fd(fd: Arc<OwnedFd>) {
    let fd = Arc::try_unwrap(fd).expect("no op holds the fd any more");
    let _ = fd.into_raw_fd();
}

/// One enter that waits for one CQE, and what the table makes of it.
fn next(ring: &mut Ring, table: &mut InFlight<u32>) -> Completion<u32> {
    ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    let cqe = ring.reap().expect("a completion");
    table.complete(cqe)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn finished(done: Completion<u32>) -> (spargio_sys::Cqe, Box<dyn Op>) {
    match done {
        Completion::Finished { op, cqe, .. } => (cqe, op),
        Completion::More { .. } => panic!("a second intermediate completion"),
        Completion::Stale => panic!("a stale completion"),
    }
}

#[test]
fn the_buffer_stays_with_the_table_until_the_notification() {
    let kernel = SimKernel::new();
    let file = kernel.create_file(Vec::new());
    let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    let fd = sim_fd(file);
    let data = pattern(if cfg!(miri) { 3000 } else { 70_000 });
    let mut table = InFlight::default();
    let send = SendZc::new(fd.clone(), data.clone(), 0);
    assert!(table.submit(&mut ring, Box::new(send), 7).is_ok());

    // The send's result: more to come, nothing read from the buffer yet.
    let Completion::More { payload, event } = next(&mut ring, &mut table) else {
        panic!("the result comes with IORING_CQE_F_MORE")
    };
    assert_eq!(payload, 7);
    assert_eq!(event.cqe().res, data.len() as i32);
    assert_eq!(event.cqe().flags & abi::IORING_CQE_F_NOTIF, 0);
    assert_eq!(table.len(), 1, "the op is in flight until its notification");
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 1);
    assert_eq!(kernel.file_contents(file).unwrap().len(), 0);

    // The notification is the final completion and gives the op back.
    let (cqe, op) = finished(next(&mut ring, &mut table));
    assert_ne!(cqe.flags & abi::IORING_CQE_F_NOTIF, 0);
    assert!(table.is_empty());
    let send = op.into_any().downcast::<SendZc<Vec<u8>>>().unwrap();
    assert_eq!(send.sent().unwrap(), data.len());
    assert!(!send.copied());
    assert_eq!(send.into_buf(), data);
    assert_eq!(kernel.file_contents(file).unwrap(), data);
    forget_fd(fd);
}

/// The waiter leaves after the result (the runtime then asks to cancel the
/// op): the table still holds the buffer, which the kernel reads afterwards.
#[test]
fn a_waiter_that_leaves_between_the_two_completions_frees_nothing_early() {
    let kernel = SimKernel::new();
    let file = kernel.create_file(b"head:".to_vec());
    let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    let fd = sim_fd(file);
    let data = pattern(if cfg!(miri) { 2048 } else { 1 << 20 });
    let mut table = InFlight::default();
    let id = match table.submit(&mut ring, Box::new(SendZc::new(fd.clone(), data.clone(), 0)), 1) {
        Ok(id) => id,
        Err((_, e)) => panic!("push refused: {e:?}"),
    };
    let Completion::More { .. } = next(&mut ring, &mut table) else {
        panic!("the result comes with IORING_CQE_F_MORE")
    };
    // What a dropped future does: ask for cancellation. The send is done, so
    // the cancel finds nothing (its CQE is not the op's); the op stays.
    let cancel = table.cancel_sqe(id).expect("the op is still in flight");
    ring.push(&cancel).unwrap();
    // Other memory comes and goes meanwhile; the op's buffer must not be reused.
    let churn: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; data.len()]).collect();
    drop(churn);
    let mut final_op = None;
    while final_op.is_none() {
        match next(&mut ring, &mut table) {
            Completion::Finished { op, cqe, .. } => {
                assert_ne!(cqe.flags & abi::IORING_CQE_F_NOTIF, 0);
                final_op = Some(op);
            }
            Completion::Stale => {} // the cancel's own completion
            Completion::More { .. } => panic!("one result only"),
        }
    }
    assert!(table.is_empty());
    drop(final_op);
    let mut expected = b"head:".to_vec();
    expected.extend_from_slice(&data);
    assert_eq!(kernel.file_contents(file).unwrap(), expected);
    forget_fd(fd);
}

#[test]
fn a_refused_send_completes_once_without_a_notification() {
    let kernel = SimKernel::new();
    let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    // No simulated file has this number.
    let fd = sim_fd(kernel.create_file(Vec::new()) + 1000);
    let mut table = InFlight::default();
    assert!(
        table
            .submit(&mut ring, Box::new(SendZc::new(fd.clone(), vec![1u8; 16], 0)), 3)
            .is_ok()
    );
    let (cqe, op) = finished(next(&mut ring, &mut table));
    assert_eq!(cqe.res, -libc::EBADF);
    let send = op.into_any().downcast::<SendZc<Vec<u8>>>().unwrap();
    assert_eq!(send.sent().unwrap_err().raw_os_error(), Some(libc::EBADF));
    drop(send);
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 0);
    forget_fd(fd);
}
