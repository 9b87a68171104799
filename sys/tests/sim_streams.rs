//! The simulated kernel's streams: pipes, connected sockets, listeners, and
//! the ops that wait on them (receive once or multishot, send, accept once
//! or multishot), with cancels, lost cancel races and closes.
//!
//! Every buffer an SQE points at is lent to the kernel (`SimKernel::lend`)
//! and outlives the op's final completion, which each test reaps before it
//! takes the buffer back.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use spargio_sys::ring::{Ring, RingConfig};
use spargio_sys::sim::{Faults, STREAM_CAPACITY, SimKernel};
use spargio_sys::{Cqe, Sqe, abi};

const PATIENCE: Duration = Duration::from_secs(5);

fn ring(kernel: &SimKernel) -> Ring {
    Ring::sim(kernel, &RingConfig::with_entries(8)).unwrap()
}

fn sqe(opcode: u8, fd: RawFd, addr: u64, len: u32, user_data: u64) -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode,
        fd,
        addr_or_splice_off_in: addr,
        len,
        user_data,
        ..Default::default()
    }
}

/// Pushes `raw`, whose memory (if any) is lent and stays lent until the
/// test reaps the op's final CQE.
fn push(ring: &mut Ring, raw: abi::io_uring_sqe) {
    // SAFETY: every caller lends the memory `raw` points at and keeps the loan
    // until the op's final completion is reaped.
    unsafe { ring.push_unchecked(&Sqe::from_raw(raw)) }.unwrap();
}

/// Submits and takes every ready CQE (without waiting).
fn enter(ring: &mut Ring) -> Vec<Cqe> {
    ring.submit_and_wait(0, Some(Duration::ZERO)).unwrap();
    let mut out = Vec::new();
    ring.drain_cqes(&mut out);
    out
}

fn cancel(user_data: u64, target: u64) -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode: abi::IORING_OP_ASYNC_CANCEL,
        fd: -1,
        addr_or_splice_off_in: target,
        user_data,
        ..Default::default()
    }
}

#[test]
fn a_receive_on_an_empty_socket_waits_for_the_peer() {
    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let buf = kernel.lend(vec![0u8; 16]);
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 16, 1),
    );
    assert!(enter(&mut ring).is_empty(), "nothing to receive yet");
    assert_eq!(ring.sim_ring().unwrap().pending_ops(), 1);
    assert_eq!(kernel.stream_write(&b, b"hello").unwrap(), 5);
    // A waiter wakes for it.
    ring.submit_and_wait(1, Some(PATIENCE)).unwrap();
    let cqe = ring.pop_cqe().unwrap();
    assert_eq!((cqe.user_data, cqe.res, cqe.flags), (1, 5, 0));
    assert_eq!(&buf.into_inner()[..5], b"hello");
}

#[test]
fn a_closed_peer_gives_end_of_file_and_epipe() {
    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    kernel.stream_write(&b, b"xy").unwrap();
    kernel.close(b);
    let buf = kernel.lend(vec![0u8; 1]);
    let out = kernel.lend_readonly(vec![7u8; 4]);
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 1, 1),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 1, 2),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 1, 3),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_SEND, a.as_raw_fd(), out.addr(), 4, 4),
    );
    let mut got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    got.sort_unstable();
    // Buffered bytes first, then end of file; a send to the closed peer fails.
    assert_eq!(got, [(1, 1), (2, 1), (3, 0), (4, -libc::EPIPE)]);
    assert_eq!(kernel.open_streams(), 1);
    drop(a);
    assert_eq!(kernel.open_streams(), 0);
}

#[test]
fn a_send_into_a_full_buffer_waits_for_room_and_short_counts_fill_it() {
    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let data = kernel.lend_readonly(vec![1u8; STREAM_CAPACITY - 3]);
    let more = kernel.lend_readonly(vec![2u8; 10]);
    push(
        &mut ring,
        sqe(
            abi::IORING_OP_SEND,
            a.as_raw_fd(),
            data.addr(),
            data.len() as u32,
            1,
        ),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_SEND, a.as_raw_fd(), more.addr(), 10, 2),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_SEND, a.as_raw_fd(), more.addr(), 10, 3),
    );
    let got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    assert_eq!(
        got,
        [(1, STREAM_CAPACITY as i32 - 3), (2, 3)],
        "the third waits for room"
    );
    assert_eq!(kernel.stream_buffered(&b), Some(STREAM_CAPACITY));
    assert_eq!(kernel.stream_read(&b, 4).unwrap().len(), 4);
    let got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    assert_eq!(got, [(3, 4)]);
}

#[test]
fn pipes_read_and_write_and_refuse_socket_ops() {
    let kernel = SimKernel::new();
    let (r, w) = kernel.pipe().unwrap();
    let mut ring = ring(&kernel);
    let src = kernel.lend_readonly(b"pipe".to_vec());
    let dst = kernel.lend(vec![0u8; 8]);
    push(
        &mut ring,
        sqe(abi::IORING_OP_READ, r.as_raw_fd(), dst.addr(), 8, 1),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_WRITE, w.as_raw_fd(), src.addr(), 4, 2),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, r.as_raw_fd(), dst.addr(), 8, 3),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_READ, w.as_raw_fd(), dst.addr(), 8, 4),
    );
    let mut got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    got.sort_unstable();
    assert_eq!(got, [(1, 4), (2, 4), (3, -libc::ENOTSOCK), (4, -libc::EBADF)]);
    assert_eq!(&dst.into_inner()[..4], b"pipe");
}

#[test]
fn a_multishot_receive_posts_one_cqe_per_arrival_until_end_of_file() {
    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let pool = kernel.lend(vec![0u8; 4 * 8]);
    let mut provide = sqe(abi::IORING_OP_PROVIDE_BUFFERS, 4, pool.addr(), 8, 9);
    provide.buf_index_or_group = 3;
    push(&mut ring, provide);
    let mut recv = sqe(abi::IORING_OP_RECV, a.as_raw_fd(), 0, 0, 1);
    recv.flags = abi::IOSQE_BUFFER_SELECT;
    recv.ioprio = abi::IORING_RECV_MULTISHOT;
    recv.buf_index_or_group = 3;
    push(&mut ring, recv);
    assert_eq!(
        enter(&mut ring).iter().map(|c| c.user_data).collect::<Vec<_>>(),
        [9]
    );
    kernel.stream_write(&b, b"abc").unwrap();
    let got = enter(&mut ring);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].res, 3);
    assert!(got[0].has_more());
    assert_eq!(got[0].buffer_id(), Some(0));
    // Ten bytes fill one 8-byte buffer and part of the next.
    kernel.stream_write(&b, b"0123456789").unwrap();
    let got = enter(&mut ring);
    let shots: Vec<(i32, Option<u16>, bool)> =
        got.iter().map(|c| (c.res, c.buffer_id(), c.has_more())).collect();
    assert_eq!(shots, [(8, Some(1), true), (2, Some(2), true)]);
    kernel.close(b);
    let got = enter(&mut ring);
    assert_eq!(got.iter().map(|c| (c.res, c.flags)).collect::<Vec<_>>(), [(0, 0)]);
    let pool = pool.into_inner();
    assert_eq!(&pool[..3], b"abc");
    assert_eq!(&pool[8..16], b"01234567");
    assert_eq!(&pool[16..18], b"89");
}

#[test]
fn a_multishot_receive_ends_with_enobufs_when_the_group_runs_dry() {
    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let pool = kernel.lend(vec![0u8; 4]);
    push(
        &mut ring,
        sqe(abi::IORING_OP_PROVIDE_BUFFERS, 1, pool.addr(), 4, 9),
    );
    let mut recv = sqe(abi::IORING_OP_RECV, a.as_raw_fd(), 0, 0, 1);
    recv.flags = abi::IOSQE_BUFFER_SELECT;
    recv.ioprio = abi::IORING_RECV_MULTISHOT;
    push(&mut ring, recv);
    kernel.stream_write(&b, b"123456").unwrap();
    let got: Vec<(u64, i32, bool)> = enter(&mut ring)
        .iter()
        .map(|c| (c.user_data, c.res, c.has_more()))
        .collect();
    assert_eq!(got, [(9, 0, false), (1, 4, true), (1, -libc::ENOBUFS, false)]);
    // The rest stays for the next receive.
    assert_eq!(kernel.stream_buffered(&a), Some(2));
    // Multishot needs buffer select.
    let mut bad = sqe(abi::IORING_OP_RECV, a.as_raw_fd(), pool.addr(), 4, 2);
    bad.ioprio = abi::IORING_RECV_MULTISHOT;
    push(&mut ring, bad);
    assert_eq!(enter(&mut ring)[0].res, -libc::EINVAL);
}

/// Takes ownership of an fd an accept completion gave.
fn adopt(res: i32) -> OwnedFd {
    assert!(res >= 0, "accept failed: {res}");
    // SAFETY: a successful ACCEPT completion's result is a new fd the kernel
    // made for its reaper, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(res) }
}

#[test]
fn accepts_wait_for_connections_once_and_multishot() {
    let kernel = SimKernel::new();
    let listener = kernel.listener().unwrap();
    let mut ring = ring(&kernel);
    let addr = kernel.lend(vec![0xffu8; 16]);
    let addr_len = kernel.lend(16u32.to_ne_bytes().to_vec());
    let mut once = sqe(abi::IORING_OP_ACCEPT, listener.as_raw_fd(), addr.addr(), 0, 1);
    once.off_or_addr2 = addr_len.addr();
    push(&mut ring, once);
    assert!(enter(&mut ring).is_empty());
    let client = kernel.connect(&listener).unwrap();
    kernel.stream_write(&client, b"hi").unwrap();
    let got = enter(&mut ring);
    assert_eq!(got.len(), 1);
    let server = adopt(got[0].res);
    assert_eq!(kernel.stream_read(&server, 8).unwrap(), b"hi");
    assert_eq!(u32::from_ne_bytes(addr_len.into_inner().try_into().unwrap()), 2);
    assert_eq!(addr.into_inner()[..2], (libc::AF_UNIX as u16).to_ne_bytes());

    let mut multi = sqe(abi::IORING_OP_ACCEPT, listener.as_raw_fd(), 0, 0, 2);
    multi.ioprio = abi::IORING_ACCEPT_MULTISHOT;
    push(&mut ring, multi);
    let clients: Vec<OwnedFd> = (0..3).map(|_| kernel.connect(&listener).unwrap()).collect();
    let got = enter(&mut ring);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|c| c.has_more() && c.user_data == 2));
    let servers: Vec<OwnedFd> = got.iter().map(|c| adopt(c.res)).collect();
    assert_eq!(kernel.open_streams(), 1 + 2 + 2 * 3);
    push(&mut ring, cancel(10, 2));
    let mut got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    got.sort_unstable();
    assert_eq!(got, [(2, -libc::ECANCELED), (10, 0)]);
    // A closed server end is end of file for its client.
    drop(servers);
    assert_eq!(kernel.stream_read(&clients[0], 8).unwrap(), b"");
    drop((clients, client, server, listener));
    assert_eq!(kernel.open_streams(), 0);
}

#[test]
fn a_closed_listener_releases_its_queued_connections() {
    let kernel = SimKernel::new();
    let listener = kernel.listener().unwrap();
    let client = kernel.connect(&listener).unwrap();
    assert_eq!(
        kernel.stream_read(&client, 8).unwrap_err().raw_os_error(),
        Some(libc::EAGAIN)
    );
    kernel.close(listener);
    assert_eq!(kernel.stream_read(&client, 8).unwrap(), b"");
    assert_eq!(
        kernel.stream_write(&client, b"x").unwrap_err().raw_os_error(),
        Some(libc::EPIPE)
    );
}

#[test]
fn a_cancelled_receive_leaves_the_data_for_the_next_one() {
    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let buf = kernel.lend(vec![0u8; 8]);
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 8, 1),
    );
    assert!(enter(&mut ring).is_empty());
    // The data arrives as the cancel does: the cancel wins, the data stays.
    kernel.stream_write(&b, b"kept").unwrap();
    push(&mut ring, cancel(10, 1));
    let mut got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    got.sort_unstable();
    assert_eq!(got, [(1, -libc::ECANCELED), (10, 0)]);
    assert_eq!(kernel.stream_read(&a, 8).unwrap(), b"kept");
    // Nothing pending: the cancel finds nothing.
    push(&mut ring, cancel(11, 1));
    assert_eq!(enter(&mut ring)[0].res, -libc::ENOENT);
}

#[test]
fn a_receive_that_wins_its_cancel_race_completes_with_the_data() {
    let kernel = SimKernel::new();
    kernel.set_faults(Faults {
        cancel_race_every: Some(1),
        ..Faults::default()
    });
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let buf = kernel.lend(vec![0u8; 8]);
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 8, 1),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, b.as_raw_fd(), buf.addr(), 8, 2),
    );
    assert!(enter(&mut ring).is_empty());
    kernel.stream_write(&b, b"raced").unwrap();
    push(&mut ring, cancel(10, 1));
    // Nothing for op 2 to complete with: its cancel wins even so.
    push(&mut ring, cancel(11, 2));
    let mut got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    got.sort_unstable();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[0], got[1], got[3]), ((1, 5), (2, -libc::ECANCELED), (11, 0)));
    assert_eq!(got[2].0, 10);
    assert!([-libc::EALREADY, -libc::ENOENT].contains(&got[2].1), "{got:?}");
    assert_eq!(kernel.injected().cancel_races, 1);
    assert_eq!(&buf.into_inner()[..5], b"raced");
}

#[test]
fn a_pending_op_keeps_its_closed_end_alive_until_it_ends() {
    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let buf = kernel.lend(vec![0u8; 8]);
    let raw = a.as_raw_fd();
    push(&mut ring, sqe(abi::IORING_OP_RECV, raw, buf.addr(), 8, 1));
    assert!(enter(&mut ring).is_empty());
    // The fd goes, the request keeps the socket: the peer sees no end of file.
    kernel.close(a);
    assert_eq!(
        kernel.stream_read(&b, 8).unwrap_err().raw_os_error(),
        Some(libc::EAGAIN)
    );
    kernel.stream_write(&b, b"late").unwrap();
    assert_eq!(enter(&mut ring)[0].res, 4);
    assert_eq!(kernel.stream_read(&b, 8).unwrap(), b"");
}

#[test]
fn cancel_by_fd_ends_every_op_on_that_end() {
    let kernel = SimKernel::new();
    let (a, _b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let buf = kernel.lend(vec![0u8; 8]);
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 4, 1),
    );
    push(
        &mut ring,
        sqe(abi::IORING_OP_RECV, a.as_raw_fd(), buf.addr(), 4, 2),
    );
    let mut by_fd = cancel(10, 0);
    by_fd.fd = a.as_raw_fd();
    by_fd.op_flags = abi::IORING_ASYNC_CANCEL_FD | abi::IORING_ASYNC_CANCEL_ALL;
    push(&mut ring, by_fd);
    let mut got: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    got.sort_unstable();
    assert_eq!(got, [(1, -libc::ECANCELED), (2, -libc::ECANCELED), (10, 2)]);
}

/// A multishot receive selecting from a provided-buffer ring
/// (`IORING_REGISTER_PBUF_RING`, simulated): each CQE names a buffer, which
/// is claimed, read and recycled; an empty ring ends the receive with
/// `-ENOBUFS`, and recycled buffers are selected again.
#[test]
#[cfg_attr(miri, ignore)] // the ring's memory is mmapped, with madvise, which Miri lacks
fn a_multishot_receive_selects_from_a_buffer_ring() {
    use spargio_sys::bufring::BufRing;

    let kernel = SimKernel::new();
    let (a, b) = kernel.socket_pair().unwrap();
    let mut ring = ring(&kernel);
    let mut bufs = BufRing::new(&ring, 5, 2, 4).unwrap();
    let mut recv = sqe(abi::IORING_OP_RECV, a.as_raw_fd(), 0, 0, 1);
    recv.flags = abi::IOSQE_BUFFER_SELECT;
    recv.ioprio = abi::IORING_RECV_MULTISHOT;
    recv.buf_index_or_group = 5;
    push(&mut ring, recv);
    assert!(enter(&mut ring).is_empty());
    kernel.stream_write(&b, b"abcdefghij").unwrap();
    let got = enter(&mut ring);
    let shots: Vec<(i32, Option<u16>, bool)> =
        got.iter().map(|c| (c.res, c.buffer_id(), c.has_more())).collect();
    assert_eq!(
        shots,
        [
            (4, Some(0), true),
            (4, Some(1), true),
            (-libc::ENOBUFS, None, false)
        ]
    );
    let mut data = Vec::new();
    for cqe in &got[..2] {
        let bid = cqe.buffer_id().unwrap();
        // SAFETY: the CQE came from the kernel for an op selecting from this
        // group, and is claimed once.
        assert!(unsafe { bufs.claim(bid) });
        data.extend_from_slice(bufs.buffer(bid, cqe.res as usize).unwrap());
        bufs.recycle(bid).unwrap();
    }
    assert_eq!(data, b"abcdefgh");
    // Re-armed, it gets the rest from a recycled buffer.
    push(&mut ring, recv);
    let got = enter(&mut ring);
    assert_eq!((got[0].res, got[0].buffer_id()), (2, Some(0)));
    // SAFETY: as above.
    assert!(unsafe { bufs.claim(0) });
    assert_eq!(bufs.buffer(0, 2).unwrap(), b"ij");
    // The receive is still armed: end it before the buffers go.
    push(&mut ring, cancel(10, 1));
    let mut ends: Vec<(u64, i32)> = enter(&mut ring).iter().map(|c| (c.user_data, c.res)).collect();
    ends.sort_unstable();
    assert_eq!(ends, [(1, -libc::ECANCELED), (10, 0)]);
    // SAFETY: no op selecting from the group is in flight any more.
    unsafe { bufs.release() };
}
