//! The safe submission API (`op::InFlight` with owned ops) against the running
//! kernel: file writes and reads with contents checked, and the op table's
//! bookkeeping (stale CQEs, generations, cancellation of a pending read).
//!
//! Real-kernel tests skip, with a printed reason, only when io_uring itself is
//! unavailable here.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use spargio_sys::msg::{OpId, UserData};
use spargio_sys::op::fs::{Fsync, Read, Write};
use spargio_sys::op::{Completion, InFlight};
use spargio_sys::ring::{PushError, Ring};
use spargio_sys::{Cqe, Sqe};

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

/// Waits for and completes one final CQE: its result and the op.
fn finish_one(ring: &mut Ring, table: &mut InFlight<u32>) -> (u32, Cqe, Box<dyn spargio_sys::op::Op>) {
    loop {
        ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
        let cqe = ring.reap().expect("a completion within 5 s");
        match table.complete(cqe) {
            Completion::Finished { payload, op, cqe } => return (payload, cqe, op),
            Completion::More { .. } => panic!("no multishot op was submitted"),
            Completion::Stale => {} // The cancel's own CQE, say.
        }
    }
}

/// Submits `op` with `payload`; the SQ has room in these tests.
fn put(table: &mut InFlight<u32>, ring: &mut Ring, op: Box<dyn spargio_sys::op::Op>, payload: u32) -> OpId {
    match table.submit(ring, op, payload) {
        Ok(id) => id,
        Err((_, e)) => panic!("push refused: {e:?}"),
    }
}

fn temp_file(tag: &str) -> (std::path::PathBuf, Arc<OwnedFd>) {
    let path = std::env::temp_dir().join(format!("spargio-sys-{tag}-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    (path, Arc::new(OwnedFd::from(file)))
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_file_write_fsync_read_round_trip() {
    let Some(mut ring) = kernel_ring() else { return };
    let (path, fd) = temp_file("rw");
    let mut table = InFlight::default();
    let data: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
    put(
        &mut table,
        &mut ring,
        Box::new(Write::new(fd.clone(), data.clone(), 4096)),
        1,
    );
    let (payload, cqe, _) = finish_one(&mut ring, &mut table);
    assert_eq!((payload, cqe.res), (1, 65_536));
    put(&mut table, &mut ring, Box::new(Fsync::new(fd.clone(), false)), 2);
    assert_eq!(finish_one(&mut ring, &mut table).1.res, 0);
    // Read across the written range: 1000 bytes of the hole, then data.
    put(
        &mut table,
        &mut ring,
        Box::new(Read::new(fd.clone(), Vec::with_capacity(8192), 3096)),
        3,
    );
    let (payload, cqe, op) = finish_one(&mut ring, &mut table);
    assert_eq!((payload, cqe.res), (3, 8192));
    let read = op
        .into_any()
        .downcast::<Read<Vec<u8>>>()
        .expect("the read op comes back");
    let buf = read.into_buf();
    assert!(buf[..1000].iter().all(|&b| b == 0), "the hole reads as zeros");
    assert_eq!(&buf[1000..], &data[..7192]);
    // What the kernel wrote is what std reads.
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len(), 4096 + 65_536);
    assert_eq!(&on_disk[4096..], &data[..]);
    assert!(table.is_empty());
    std::fs::remove_file(&path).unwrap();
}

#[test]
#[cfg_attr(miri, ignore)]
fn kernel_read_past_eof_and_on_a_bad_fd() {
    let Some(mut ring) = kernel_ring() else { return };
    let (path, fd) = temp_file("eof");
    std::fs::write(&path, b"abc").unwrap();
    let mut table = InFlight::default();
    put(
        &mut table,
        &mut ring,
        Box::new(Read::new(fd.clone(), Vec::with_capacity(16), 1 << 40)),
        0,
    );
    assert_eq!(
        finish_one(&mut ring, &mut table).1.res,
        0,
        "past EOF reads nothing"
    );
    // A write-only fd read: EBADF from the kernel, as a CQE, not a crash.
    let wo = Arc::new(OwnedFd::from(
        std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
    ));
    put(
        &mut table,
        &mut ring,
        Box::new(Read::new(wo, Vec::with_capacity(16), 0)),
        0,
    );
    assert_eq!(finish_one(&mut ring, &mut table).1.res, -libc::EBADF);
    std::fs::remove_file(&path).unwrap();
}

#[test]
#[cfg_attr(miri, ignore)]
fn forged_stale_and_foreign_cqes_complete_nothing() {
    let Some(mut ring) = kernel_ring() else { return };
    let Some(mut other) = kernel_ring() else { return };
    let (reader, _writer) = std::io::pipe().unwrap();
    let reader = Arc::new(OwnedFd::from(reader));
    let mut table = InFlight::default();
    // A read on an empty pipe stays in flight.
    let id = put(
        &mut table,
        &mut ring,
        Box::new(Read::new(reader.clone(), Vec::with_capacity(8), 0)),
        7,
    );
    ring.submit().unwrap();
    // No safe push puts an op's tag in flight, whatever the generation.
    let wrong_gen = OpId::new(id.index(), id.generation().wrapping_add(1) & 0x0fff_ffff);
    for target in [id, wrong_gen] {
        let forged = Sqe::nop().user_data(UserData::op(target).get());
        assert_eq!(ring.push(&forged), Err(PushError::ReservedTag));
    }
    // A real completion that is not an op's, or one reaped from another ring
    // (with this op's very tag, pushed there by its own table), is stale.
    ring.push(&Sqe::nop().user_data(UserData::IGNORE.get())).unwrap();
    ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(table.complete(ring.reap().unwrap()), Completion::Stale));
    let mut other_table = InFlight::default();
    let other_id = put(&mut other_table, &mut other, Box::new(spargio_sys::op::Nop), 1);
    assert_eq!(other_id, id, "both tables start at slot 0, generation 0");
    other.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(table.complete(other.reap().unwrap()), Completion::Stale));
    assert_eq!(table.len(), 1, "the pending read is untouched");
    // One table per ring: a second table cannot submit on it.
    let mut second = InFlight::default();
    match second.submit(&mut ring, Box::new(spargio_sys::op::Nop), 0u32) {
        Err((_, e)) => assert_eq!(e, PushError::OtherTable),
        Ok(_) => panic!("a second table took the ring"),
    }
    // Cancel it: its final CQE (-ECANCELED) hands the op and its buffer back.
    let cancel = table.cancel_sqe(id).expect("in flight");
    assert!(table.cancel_sqe(id).is_none(), "one cancel per op");
    ring.push(&cancel).unwrap();
    let (payload, cqe, op) = finish_one(&mut ring, &mut table);
    assert_eq!((payload, cqe.res), (7, -libc::ECANCELED));
    let buf = op.into_any().downcast::<Read<Vec<u8>>>().unwrap().into_buf();
    assert!(buf.is_empty(), "a cancelled read marks nothing initialized");
    assert!(table.is_empty());
    // The slot is reused with a new generation.
    let again = put(
        &mut table,
        &mut ring,
        Box::new(Read::new(reader, Vec::with_capacity(8), 0)),
        8,
    );
    assert_eq!(again.index(), id.index());
    assert_ne!(again.generation(), id.generation());
    let cancel = table.cancel_sqe(again).unwrap();
    ring.push(&cancel).unwrap();
    assert_eq!(finish_one(&mut ring, &mut table).0, 8);
}

/// `IORING_OP_WAITID` (kernel 6.7) as `op::pipe::WaitExited` encodes it: it
/// completes with 0 once the child exited, and leaves it to be reaped.
#[test]
#[cfg_attr(miri, ignore)]
fn kernel_waitid_waits_for_a_child_without_reaping_it() {
    use spargio_sys::op::pipe::WaitExited;
    use spargio_sys::{abi, probe::Features, process};
    let Some(mut ring) = kernel_ring() else { return };
    if !Features::detect().unwrap().supports(abi::IORING_OP_WAITID) {
        eprintln!("SKIPPED: this kernel has no IORING_OP_WAITID");
        return;
    }
    let child = std::process::Command::new("sh")
        .args(["-c", "exit 5"])
        .spawn()
        .unwrap();
    let pidfd = Arc::new(process::pidfd_open(child.id()).unwrap());
    let mut table = InFlight::default();
    put(&mut table, &mut ring, Box::new(WaitExited::new(pidfd.clone())), 9);
    let (payload, cqe, _) = finish_one(&mut ring, &mut table);
    assert_eq!((payload, cqe.res), (9, 0));
    // WNOWAIT: the child is still there to reap, with its status.
    let status = process::try_reap((*pidfd).as_fd()).unwrap().expect("exited");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(std::process::ExitStatus::from_raw(status).code(), Some(5));
    drop(child);
}
