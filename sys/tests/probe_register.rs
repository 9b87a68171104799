//! `probe`, `register`, `bufring` and `msg` against the running kernel.
//!
//! Every test skips, with a printed reason, only when io_uring itself is
//! unavailable here (ENOSYS, EPERM, …); any other failure fails the test.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use spargio_sys::bufring::BufRing;
use spargio_sys::msg::{self, Event, Message, UserData};
use spargio_sys::probe::Features;
use spargio_sys::ring::{Ring, RingConfig};
use spargio_sys::sqe::{DirectTarget, FixedSlot, MsgRingSendFd, Recv};
use spargio_sys::{Cqe, Sqe, abi, register};

/// A default kernel ring, or `None` (with the reason printed) where io_uring is unavailable.
fn kernel_ring() -> Option<Ring> {
    match Ring::with_config(&RingConfig::with_entries(16)) {
        Ok(r) => Some(r),
        Err(e) if e.io_uring_unavailable() => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn wait_one(ring: &mut Ring) -> Cqe {
    if let Some(c) = ring.pop_cqe() {
        return c;
    }
    ring.submit_and_wait(1, Some(Duration::from_secs(5))).unwrap();
    ring.pop_cqe().expect("a completion within 5 s")
}

/// The running kernel's (major, minor) version, from /proc.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
#[cfg_attr(miri, ignore)]
fn probe_reports_the_basic_ops() {
    let Some(ring) = kernel_ring() else { return };
    let ops = ring.probe().unwrap();
    eprintln!("{ops:?}");
    for op in [abi::IORING_OP_NOP, abi::IORING_OP_READ, abi::IORING_OP_MSG_RING] {
        assert!(ops.supports(op), "opcode {op} not supported: {ops:?}");
    }
    assert!(ops.last_op() >= 40, "last_op {}", ops.last_op());
    assert!(ops.count() > 40);
    assert!(!ops.supports(u8::MAX));
    assert_eq!(register::probe(ring.kernel_fd().unwrap()).unwrap(), ops);
}

#[test]
#[cfg_attr(miri, ignore)]
fn detected_features_match_the_kernel_version() {
    let Some(ring) = kernel_ring() else { return };
    let features = Features::detect().unwrap();
    eprintln!("{features}");
    assert!(
        std::ptr::eq(features, Features::detect().unwrap()),
        "detection is cached"
    );
    assert_eq!(features.ring.bits(), ring.features());
    assert_eq!(features.setup_flags, ring.setup_flags());
    assert!(features.supports(abi::IORING_OP_NOP));

    // The flags a default ring got agree with the one-by-one setup checks.
    let c = features.checked;
    let got = |flag| features.setup_flags & flag != 0;
    assert_eq!(got(abi::IORING_SETUP_SINGLE_ISSUER), c.setup_single_issuer);
    assert_eq!(got(abi::IORING_SETUP_DEFER_TASKRUN), c.setup_defer_taskrun);
    assert_eq!(got(abi::IORING_SETUP_NO_SQARRAY), c.setup_no_sqarray);
    assert_eq!(got(abi::IORING_SETUP_SUBMIT_ALL), c.setup_submit_all);

    // No false negatives on a kernel that has the feature.
    let v = kernel_version();
    let since = |major, minor| v >= (major, minor);
    assert_eq!(c.setup_submit_all, since(5, 18));
    assert_eq!(c.setup_coop_taskrun, since(5, 19));
    assert_eq!(c.pbuf_ring, since(5, 19));
    assert_eq!(c.setup_single_issuer, since(6, 0));
    assert_eq!(c.recv_multishot, since(6, 0));
    assert_eq!(c.setup_defer_taskrun, since(6, 1));
    assert_eq!(c.msg_ring_cqe_skip, since(6, 2));
    assert_eq!(c.msg_ring_flags_pass, since(6, 3));
    assert_eq!(c.setup_no_sqarray, since(6, 6));
    assert_eq!(c.register_send_msg_ring, since(6, 13));
    assert_eq!(features.ring.ext_arg(), since(5, 11));
    assert_eq!(features.ring.cqe_skip(), since(5, 17));
}

/// Queues an entry that names raw fds (what these kernel tests are about).
fn push_raw(ring: &mut Ring, sqe: &Sqe) {
    // Buffer-select receives take provided buffers the test keeps registered
    // until their completions are reaped; no op table tracks these rings.
    // SAFETY: the entries point at no memory of their own and name only fds
    // the test owns.
    unsafe { ring.push_unchecked(sqe) }.unwrap();
}

/// A `MSG_RING` that passes fixed file `src_slot` of the sending ring into
/// slot 0 of `target`.
fn send_fixed_file(target: RawFd, src_slot: u32, user_data: u64) -> Sqe {
    let slot = DirectTarget::Slot(FixedSlot::new(0).unwrap());
    MsgRingSendFd::new(target, src_slot, slot, 0xf11e)
        .build()
        .user_data(user_data)
}

#[test]
#[cfg_attr(miri, ignore)]
fn register_update_and_unregister_files() {
    let Some(mut ring) = kernel_ring() else { return };
    let Some(mut target) = kernel_ring() else { return };
    let (a, b) = UnixStream::pair().unwrap();
    ring.register_files(&[Some(a.as_fd()), None]).unwrap();
    assert_eq!(
        ring.register_files(&[Some(a.as_fd())])
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EBUSY)
    );
    target.register_files_sparse(1).unwrap();

    // Slot 1 is empty: there is nothing to pass.
    push_raw(&mut ring, &send_fixed_file(target.as_raw_fd(), 1, 1));
    assert_eq!(wait_one(&mut ring).res, -libc::EBADF);

    // Fill it; now passing it works and the target hears about it.
    assert_eq!(ring.update_files(1, &[Some(b.as_fd())]).unwrap(), 1);
    push_raw(&mut ring, &send_fixed_file(target.as_raw_fd(), 1, 2));
    let sent = wait_one(&mut ring);
    assert_eq!((sent.user_data, sent.res), (2, 0), "{sent:?}");
    let got = wait_one(&mut target);
    assert_eq!((got.user_data, got.res), (0xf11e, 0), "{got:?}");

    // Empty it again; slots past the end are refused.
    assert_eq!(ring.update_files(1, &[None]).unwrap(), 1);
    push_raw(&mut ring, &send_fixed_file(target.as_raw_fd(), 1, 3));
    assert_eq!(wait_one(&mut ring).res, -libc::EBADF);
    assert_eq!(
        ring.update_files(2, &[Some(b.as_fd())])
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );

    ring.unregister_files().unwrap();
    assert_eq!(
        ring.unregister_files().unwrap_err().raw_os_error(),
        Some(libc::ENXIO)
    );
    assert_eq!(
        ring.update_files(0, &[None]).unwrap_err().raw_os_error(),
        Some(libc::ENXIO)
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn register_ring_fd_and_eventfd() {
    let Some(ring) = kernel_ring() else { return };
    let fd = ring.kernel_fd().unwrap();
    let index = register::register_ring_fd(fd).unwrap();
    assert!(index < 16, "index {index}");
    register::unregister_ring_fd(fd, index).unwrap();

    let (a, _b) = UnixStream::pair().unwrap();
    let not_eventfd = a.as_fd();
    assert!(register::register_eventfd(fd, not_eventfd).is_err());
    assert_eq!(
        register::unregister_eventfd(fd).unwrap_err().raw_os_error(),
        Some(libc::ENXIO)
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn simulated_rings_refuse_registration_but_simulate_buffer_rings() {
    let mut ring = Ring::sim(&spargio_sys::sim::SimKernel::new(), &RingConfig::default()).unwrap();
    assert_eq!(
        ring.register_files(&[None]).unwrap_err().kind(),
        std::io::ErrorKind::Unsupported
    );
    // Buffer rings are simulated: a group id is taken once.
    let bufs = BufRing::new(&ring, 0, 4, 16).unwrap();
    assert_eq!(
        BufRing::new(&ring, 0, 4, 16).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    drop(bufs);
    BufRing::new(&ring, 0, 4, 16).expect("the group id is free again");
}

#[test]
#[cfg_attr(miri, ignore)]
fn buf_ring_feeds_a_recv_with_buffer_select() {
    let Some(mut ring) = kernel_ring() else { return };
    let mut bufs = BufRing::new(&ring, 7, 4, 32).unwrap();
    assert_eq!(
        BufRing::new(&ring, 7, 4, 32).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(
        BufRing::new(&ring, 8, 3, 32).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    let (mut tx, rx) = UnixStream::pair().unwrap();

    let recv = |user_data: u64| {
        Recv::new(rx.as_raw_fd(), std::ptr::null_mut(), 0)
            .buf_group(Some(7))
            .build()
            .user_data(user_data)
    };
    // Six receives through four buffers: the last two only work if recycling does.
    let mut seen = Vec::new();
    for i in 0..6u8 {
        let payload = [b'a' + i; 5];
        tx.write_all(&payload[..=usize::from(i % 5)]).unwrap();
        push_raw(&mut ring, &recv(u64::from(i)));
        let c = wait_one(&mut ring);
        assert_eq!(
            (c.user_data, c.res),
            (u64::from(i), i32::from(i % 5) + 1),
            "{c:?}"
        );
        let bid = c.buffer_id().expect("a buffer was selected");
        assert!(bid < 4);
        assert!(!bufs.is_claimed(bid));
        assert_eq!(bufs.buffer(bid, 1), None, "unclaimed buffers are not readable");
        // SAFETY: `bid` comes from this CQE of a receive that selected from group 7.
        assert!(unsafe { bufs.claim(bid) });
        assert_eq!(
            bufs.buffer(bid, c.res as usize).unwrap(),
            &payload[..=usize::from(i % 5)]
        );
        assert_eq!(bufs.buffer(bid, 33), None);
        seen.push(bid);
        bufs.recycle(bid).unwrap();
        assert!(bufs.recycle(bid).is_err(), "a buffer cannot be recycled twice");
    }
    // The kernel takes buffers in ring order; recycled ones go to the back.
    assert_eq!(seen, [0, 1, 2, 3, 0, 1]);

    // With every buffer claimed, a receive finds none.
    for n in 0..4u64 {
        tx.write_all(b"z").unwrap();
        push_raw(&mut ring, &recv(10 + n));
        let c = wait_one(&mut ring);
        // SAFETY: `bid` comes from this CQE of a receive that selected from group 7.
        assert!(unsafe { bufs.claim(c.buffer_id().unwrap()) });
    }
    push_raw(&mut ring, &recv(20));
    assert_eq!(wait_one(&mut ring).res, -libc::ENOBUFS);
    // Every buffer is claimed, so dropping frees them; the group is gone.
    drop(bufs);
    assert_eq!(
        register::unregister_pbuf_ring(ring.kernel_fd().unwrap(), 7)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn send_msg_ring_without_ring_posts_into_a_ring() {
    let Some(mut ring) = kernel_ring() else { return };
    let Ok(features) = Features::detect() else {
        panic!("detection failed")
    };
    if !features.checked.register_send_msg_ring {
        eprintln!("skipping: this kernel has no IORING_REGISTER_SEND_MSG_RING");
        return;
    }
    let target = ring.ring_fd();
    let posted = UserData::internal(7, 0x1234);
    register::send_msg_ring_without_ring(&target, posted, 0xffff_fffe, None).unwrap();
    assert_eq!(
        wait_one(&mut ring),
        Cqe {
            user_data: posted.get(),
            res: -2,
            flags: 0
        }
    );

    // From a thread that has no ring, as a foreign thread would.
    let m = Message {
        from_shard: 9,
        tag: 3,
        value: 0x8000_0000,
        extra: Some(0xdead_0000),
    };
    std::thread::scope(|s| {
        s.spawn(|| register::send_message_without_ring(&target, &m).unwrap());
    });
    let c = wait_one(&mut ring);
    assert_eq!(
        msg::decode_cqe(&c),
        Event::Message {
            from_shard: 9,
            tag: 3,
            value: 0x8000_0000,
            extra: m.extra
        }
    );

    // A message never carries an op's tag, so it cannot complete an op.
    let op_tag = UserData::op(msg::OpId::new(0, 0));
    let err = register::send_msg_ring_without_ring(&target, op_tag, 1, None).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
#[cfg_attr(miri, ignore)]
fn messages_and_doorbells_decode_after_the_kernel_posts_them() {
    let Some(mut a) = kernel_ring() else { return };
    let Some(mut b) = kernel_ring() else { return };
    let flags_pass = Features::detect().unwrap().checked.msg_ring_flags_pass;
    let sent = UserData::internal(msg::internal::MSG_RING_SENT, 1);
    let mut messages = vec![
        Message {
            from_shard: 0,
            tag: 0,
            value: 0,
            extra: None,
        },
        Message {
            from_shard: u16::MAX,
            tag: u16::MAX,
            value: u32::MAX,
            extra: None,
        },
        Message {
            from_shard: 1,
            tag: 2,
            value: 0x8000_0000,
            extra: None,
        },
    ];
    if flags_pass {
        messages.push(Message {
            from_shard: 4,
            tag: 5,
            value: 6,
            extra: Some(u32::MAX),
        });
    }
    for m in &messages {
        a.push_msg_ring(&b.ring_fd(), m.target_cqe(), m.extra.is_some(), sent, false)
            .unwrap();
        let c = wait_one(&mut a);
        assert_eq!((c.user_data, c.res), (sent.get(), 0));
        let got = wait_one(&mut b);
        assert_eq!(got, m.target_cqe());
        assert_eq!(
            msg::posted_by(&msg::message_sqe(b.as_raw_fd(), m, sent)),
            Some(got)
        );
        let want = Event::Message {
            from_shard: m.from_shard,
            tag: m.tag,
            value: m.value,
            extra: m.extra,
        };
        assert_eq!(msg::decode_cqe(&got), want);
    }

    // A doorbell costs the sender no completion.
    push_raw(&mut a, &msg::doorbell_sqe(b.as_raw_fd(), 3, sent));
    a.submit().unwrap();
    assert_eq!(
        msg::decode_cqe(&wait_one(&mut b)),
        Event::Doorbell { from_shard: 3 }
    );
    a.submit_and_flush().unwrap();
    assert_eq!(a.pop_cqe(), None);

    // A failed doorbell reports itself, tagged as asked.
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    push_raw(&mut a, &msg::doorbell_sqe(file.as_raw_fd(), 3, sent));
    let c = wait_one(&mut a);
    assert_eq!(
        msg::decode_cqe(&c),
        Event::Internal {
            kind: msg::internal::MSG_RING_SENT,
            data: 1,
            res: -libc::EBADFD,
            flags: 0
        }
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn released_buf_ring_unregisters_its_group() {
    let Some(ring) = kernel_ring() else { return };
    let bufs = BufRing::new(&ring, 3, 8, 16).unwrap();
    assert_eq!((bufs.bgid(), bufs.entries(), bufs.buf_len()), (3, 8, 16));
    // SAFETY: no op has ever selected from group 3.
    unsafe { bufs.release() };
    let again = BufRing::new(&ring, 3, 8, 16).expect("the group id is free again");
    // SAFETY: as above.
    unsafe { again.release() };
    let fd = ring.kernel_fd().unwrap();
    assert_eq!(
        register::unregister_pbuf_ring(fd, 3).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
}
