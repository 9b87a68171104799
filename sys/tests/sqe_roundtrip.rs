//! Property tests of the SQE encoders and the decoder (`spargio_sys::sqe`).
//!
//! One strategy per encoder type builds ops through the public `new` and
//! setters with arbitrary field values; every property is a
//! `spargio_sys::check::sqe` function, shared with the `sqe_roundtrip` fuzz
//! target.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::ptr;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm};

use spargio_sys::check;
use spargio_sys::sqe::{
    Accept, AsyncCancel, Bind, CancelKey, Close, CloseTarget, Connect, DirectTarget, Fadvise, Fallocate,
    FixedSlot, Fsync, Ftruncate, LinkAt, LinkTimeout, Listen, MkdirAt, MsgRingData, MsgRingSendFd, Nop,
    OP_KINDS, Op, OpenAt, PollAdd, PollRemove, ProvideBuffers, Read, ReadFixed, ReadMulti, Readv, Recv,
    RecvMsg, RemoveBuffers, RenameAt, SQE_SIZE, Send, SendMsg, SendZc, Shutdown, Socket, Splice, SqeFlags,
    Statx, SymlinkAt, SyncFileRange, Tee, Timeout, TimeoutRemove, UnlinkAt, Write, WriteFixed, Writev,
};

/// Moderate case counts, far fewer under Miri; no failure files under Miri's isolation.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 });
    if cfg!(miri) {
        config.failure_persistence = None;
        config.rng_algorithm = RngAlgorithm::XorShift;
    }
    config
}

// === field strategies ===

/// Values near the edges of `u64` as often as anywhere else.
fn u64_edgy() -> impl Strategy<Value = u64> {
    prop_oneof![0..4u64, (u64::MAX - 3)..=u64::MAX, any::<u64>()]
}

fn u32_edgy() -> impl Strategy<Value = u32> {
    prop_oneof![0..4u32, (u32::MAX - 3)..=u32::MAX, any::<u32>()]
}

fn u16_edgy() -> impl Strategy<Value = u16> {
    prop_oneof![0..4u16, (u16::MAX - 3)..=u16::MAX, any::<u16>()]
}

fn i32_edgy() -> impl Strategy<Value = i32> {
    prop_oneof![
        -1..=3i32,
        Just(libc::AT_FDCWD),
        Just(i32::MIN),
        Just(i32::MAX),
        any::<i32>()
    ]
}

fn fd() -> impl Strategy<Value = i32> {
    i32_edgy()
}

fn ptr_addr() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(usize::MAX), any::<usize>()]
}

fn ptr_const<T>() -> impl Strategy<Value = *const T> {
    ptr_addr().prop_map(ptr::without_provenance)
}

fn ptr_mut<T>() -> impl Strategy<Value = *mut T> {
    ptr_addr().prop_map(ptr::without_provenance_mut)
}

fn opt_u16() -> impl Strategy<Value = Option<u16>> {
    proptest::option::of(u16_edgy())
}

fn fixed_slot() -> impl Strategy<Value = FixedSlot> {
    prop_oneof![0..4u32, (FixedSlot::MAX - 3)..=FixedSlot::MAX, 0..=FixedSlot::MAX]
        .prop_map(|index| FixedSlot::new(index).expect("index within FixedSlot::MAX"))
}

fn direct() -> impl Strategy<Value = DirectTarget> {
    prop_oneof![
        Just(DirectTarget::Alloc),
        fixed_slot().prop_map(DirectTarget::Slot)
    ]
}

fn opt_direct() -> impl Strategy<Value = Option<DirectTarget>> {
    proptest::option::of(direct())
}

/// SQE flags (unknown bit 7 included), personality and `user_data`.
fn common() -> impl Strategy<Value = (u8, u16, u64)> {
    (any::<u8>(), u16_edgy(), u64_edgy())
}

// === one strategy per encoder type ===

fn nop() -> impl Strategy<Value = Op> {
    Just(Nop::new().into())
}

fn readv() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_const(),
        u32_edgy(),
        u64_edgy(),
        any::<u16>(),
        any::<i32>(),
    )
        .prop_map(|(fd, iovec, len, offset, ioprio, rw_flags)| {
            Readv::new(fd, iovec, len)
                .offset(offset)
                .ioprio(ioprio)
                .rw_flags(rw_flags)
                .into()
        })
}

fn writev() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_const(),
        u32_edgy(),
        u64_edgy(),
        any::<u16>(),
        any::<i32>(),
    )
        .prop_map(|(fd, iovec, len, offset, ioprio, rw_flags)| {
            Writev::new(fd, iovec, len)
                .offset(offset)
                .ioprio(ioprio)
                .rw_flags(rw_flags)
                .into()
        })
}

fn fsync() -> impl Strategy<Value = Op> {
    (fd(), any::<bool>(), u64_edgy(), u32_edgy()).prop_map(|(fd, datasync, offset, len)| {
        Fsync::new(fd).datasync(datasync).offset(offset).len(len).into()
    })
}

fn read_fixed() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_mut(),
        u32_edgy(),
        u16_edgy(),
        u64_edgy(),
        any::<u16>(),
        any::<i32>(),
    )
        .prop_map(|(fd, buf, len, buf_index, offset, ioprio, rw_flags)| {
            ReadFixed::new(fd, buf, len, buf_index)
                .offset(offset)
                .ioprio(ioprio)
                .rw_flags(rw_flags)
                .into()
        })
}

fn write_fixed() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_const(),
        u32_edgy(),
        u16_edgy(),
        u64_edgy(),
        any::<u16>(),
        any::<i32>(),
    )
        .prop_map(|(fd, buf, len, buf_index, offset, ioprio, rw_flags)| {
            WriteFixed::new(fd, buf, len, buf_index)
                .offset(offset)
                .ioprio(ioprio)
                .rw_flags(rw_flags)
                .into()
        })
}

fn poll_add() -> impl Strategy<Value = Op> {
    (fd(), u32_edgy(), any::<bool>())
        .prop_map(|(fd, events, multishot)| PollAdd::new(fd, events).multishot(multishot).into())
}

fn poll_remove() -> impl Strategy<Value = Op> {
    u64_edgy().prop_map(|user_data| PollRemove::new(user_data).into())
}

fn sync_file_range() -> impl Strategy<Value = Op> {
    (fd(), u64_edgy(), u32_edgy(), any::<u32>()).prop_map(|(fd, offset, len, flags)| {
        SyncFileRange::new(fd).offset(offset).len(len).flags(flags).into()
    })
}

fn send_msg() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), any::<i32>())
        .prop_map(|(fd, msg, msg_flags)| SendMsg::new(fd, msg).msg_flags(msg_flags).into())
}

fn recv_msg() -> impl Strategy<Value = Op> {
    (fd(), ptr_mut(), any::<i32>(), opt_u16(), any::<bool>()).prop_map(
        |(fd, msg, msg_flags, buf_group, multishot)| {
            RecvMsg::new(fd, msg)
                .msg_flags(msg_flags)
                .buf_group(buf_group)
                .multishot(multishot)
                .into()
        },
    )
}

fn timeout() -> impl Strategy<Value = Op> {
    (ptr_const(), u32_edgy(), any::<u32>())
        .prop_map(|(ts, count, flags)| Timeout::new(ts).count(count).flags(flags).into())
}

fn timeout_remove() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![
        Just(0u32),
        Just(spargio_sys::abi::IORING_TIMEOUT_UPDATE),
        Just(spargio_sys::abi::IORING_LINK_TIMEOUT_UPDATE),
        any::<u32>(),
    ];
    (u64_edgy(), ptr_const(), flags)
        .prop_map(|(user_data, ts, flags)| TimeoutRemove::new(user_data).timespec(ts).flags(flags).into())
}

fn accept() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_mut(),
        ptr_mut(),
        any::<i32>(),
        any::<bool>(),
        opt_direct(),
    )
        .prop_map(|(fd, addr, addrlen, flags, multishot, direct)| {
            Accept::new(fd, addr, addrlen)
                .flags(flags)
                .multishot(multishot)
                .direct(direct)
                .into()
        })
}

fn async_cancel() -> impl Strategy<Value = Op> {
    let key = prop_oneof![
        u64_edgy().prop_map(CancelKey::UserData),
        (fd(), any::<bool>()).prop_map(|(fd, fixed)| CancelKey::Fd { fd, fixed }),
        Just(CancelKey::Any),
    ];
    (key, any::<bool>()).prop_map(|(key, all)| AsyncCancel::new(key).all(all).into())
}

fn link_timeout() -> impl Strategy<Value = Op> {
    (ptr_const(), any::<u32>()).prop_map(|(ts, flags)| LinkTimeout::new(ts).flags(flags).into())
}

fn connect() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), u32_edgy()).prop_map(|(fd, addr, addrlen)| Connect::new(fd, addr, addrlen).into())
}

fn fallocate() -> impl Strategy<Value = Op> {
    (fd(), u64_edgy(), u64_edgy(), any::<i32>())
        .prop_map(|(fd, len, offset, mode)| Fallocate::new(fd, len).offset(offset).mode(mode).into())
}

fn open_at() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), any::<i32>(), any::<u32>(), opt_direct()).prop_map(
        |(dirfd, path, flags, mode, direct)| {
            OpenAt::new(dirfd, path)
                .flags(flags)
                .mode(mode)
                .direct(direct)
                .into()
        },
    )
}

fn close() -> impl Strategy<Value = Op> {
    prop_oneof![
        fd().prop_map(CloseTarget::Fd),
        fixed_slot().prop_map(CloseTarget::Fixed)
    ]
    .prop_map(|target| Close::new(target).into())
}

fn statx() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), ptr_mut(), any::<i32>(), any::<u32>()).prop_map(
        |(dirfd, path, statx, flags, mask)| Statx::new(dirfd, path, statx).flags(flags).mask(mask).into(),
    )
}

fn read() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_mut(),
        u32_edgy(),
        u64_edgy(),
        any::<u16>(),
        any::<i32>(),
        opt_u16(),
    )
        .prop_map(|(fd, buf, len, offset, ioprio, rw_flags, buf_group)| {
            Read::new(fd, buf, len)
                .offset(offset)
                .ioprio(ioprio)
                .rw_flags(rw_flags)
                .buf_group(buf_group)
                .into()
        })
}

fn write() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_const(),
        u32_edgy(),
        u64_edgy(),
        any::<u16>(),
        any::<i32>(),
    )
        .prop_map(|(fd, buf, len, offset, ioprio, rw_flags)| {
            Write::new(fd, buf, len)
                .offset(offset)
                .ioprio(ioprio)
                .rw_flags(rw_flags)
                .into()
        })
}

fn fadvise() -> impl Strategy<Value = Op> {
    (fd(), u64_edgy(), u32_edgy(), any::<i32>())
        .prop_map(|(fd, offset, len, advice)| Fadvise::new(fd, offset, len, advice).into())
}

fn send() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), u32_edgy(), any::<i32>(), opt_u16()).prop_map(
        |(fd, buf, len, msg_flags, buf_group)| {
            Send::new(fd, buf, len)
                .msg_flags(msg_flags)
                .buf_group(buf_group)
                .into()
        },
    )
}

fn recv() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_mut(),
        u32_edgy(),
        any::<i32>(),
        opt_u16(),
        any::<bool>(),
    )
        .prop_map(|(fd, buf, len, msg_flags, buf_group, multishot)| {
            Recv::new(fd, buf, len)
                .msg_flags(msg_flags)
                .buf_group(buf_group)
                .multishot(multishot)
                .into()
        })
}

fn splice() -> impl Strategy<Value = Op> {
    let off = prop_oneof![Just(-1i64), any::<i64>()];
    (fd(), off.clone(), fd(), off, u32_edgy(), any::<u32>()).prop_map(
        |(fd_in, off_in, fd_out, off_out, len, flags)| {
            Splice::new(fd_in, off_in, fd_out, off_out, len)
                .flags(flags)
                .into()
        },
    )
}

fn provide_buffers() -> impl Strategy<Value = Op> {
    (ptr_mut(), u32_edgy(), u32_edgy(), u16_edgy(), u16_edgy())
        .prop_map(|(addr, len, nbufs, bgid, bid)| ProvideBuffers::new(addr, len, nbufs, bgid, bid).into())
}

fn remove_buffers() -> impl Strategy<Value = Op> {
    (u32_edgy(), u16_edgy()).prop_map(|(nbufs, bgid)| RemoveBuffers::new(nbufs, bgid).into())
}

fn tee() -> impl Strategy<Value = Op> {
    (fd(), fd(), u32_edgy(), any::<u32>())
        .prop_map(|(fd_in, fd_out, len, flags)| Tee::new(fd_in, fd_out, len).flags(flags).into())
}

fn shutdown() -> impl Strategy<Value = Op> {
    (fd(), i32_edgy()).prop_map(|(fd, how)| Shutdown::new(fd, how).into())
}

fn rename_at() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), fd(), ptr_const(), any::<u32>()).prop_map(
        |(olddirfd, oldpath, newdirfd, newpath, flags)| {
            RenameAt::new(olddirfd, oldpath, newdirfd, newpath)
                .flags(flags)
                .into()
        },
    )
}

fn unlink_at() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), any::<i32>())
        .prop_map(|(dirfd, path, flags)| UnlinkAt::new(dirfd, path).flags(flags).into())
}

fn mkdir_at() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), any::<u32>()).prop_map(|(dirfd, path, mode)| MkdirAt::new(dirfd, path, mode).into())
}

fn symlink_at() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), ptr_const())
        .prop_map(|(newdirfd, target, linkpath)| SymlinkAt::new(newdirfd, target, linkpath).into())
}

fn link_at() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), fd(), ptr_const(), any::<i32>()).prop_map(
        |(olddirfd, oldpath, newdirfd, newpath, flags)| {
            LinkAt::new(olddirfd, oldpath, newdirfd, newpath)
                .flags(flags)
                .into()
        },
    )
}

fn msg_ring_data() -> impl Strategy<Value = Op> {
    (fd(), i32_edgy(), u64_edgy(), proptest::option::of(u32_edgy())).prop_map(
        |(ring_fd, res, user_data, cqe_flags)| {
            MsgRingData::new(ring_fd, res, user_data)
                .cqe_flags(cqe_flags)
                .into()
        },
    )
}

fn socket() -> impl Strategy<Value = Op> {
    (i32_edgy(), i32_edgy(), i32_edgy(), opt_direct()).prop_map(|(domain, socket_type, protocol, direct)| {
        Socket::new(domain, socket_type, protocol).direct(direct).into()
    })
}

fn msg_ring_send_fd() -> impl Strategy<Value = Op> {
    (fd(), u32_edgy(), direct(), u64_edgy(), any::<bool>()).prop_map(
        |(ring_fd, source_slot, target, user_data, skip_cqe)| {
            MsgRingSendFd::new(ring_fd, source_slot, target, user_data)
                .skip_cqe(skip_cqe)
                .into()
        },
    )
}

fn send_zc() -> impl Strategy<Value = Op> {
    (
        fd(),
        ptr_const(),
        u32_edgy(),
        any::<i32>(),
        opt_u16(),
        ptr_const(),
        u16_edgy(),
        any::<bool>(),
    )
        .prop_map(
            |(fd, buf, len, msg_flags, buf_index, dest_addr, dest_addr_len, report_usage)| {
                SendZc::new(fd, buf, len)
                    .msg_flags(msg_flags)
                    .buf_index(buf_index)
                    .dest_addr(dest_addr)
                    .dest_addr_len(dest_addr_len)
                    .report_usage(report_usage)
                    .into()
            },
        )
}

fn read_multi() -> impl Strategy<Value = Op> {
    (fd(), u16_edgy(), u64_edgy())
        .prop_map(|(fd, buf_group, offset)| ReadMulti::new(fd, buf_group).offset(offset).into())
}

fn ftruncate() -> impl Strategy<Value = Op> {
    (fd(), u64_edgy()).prop_map(|(fd, len)| Ftruncate::new(fd, len).into())
}

fn bind() -> impl Strategy<Value = Op> {
    (fd(), ptr_const(), u32_edgy()).prop_map(|(fd, addr, addrlen)| Bind::new(fd, addr, addrlen).into())
}

fn listen() -> impl Strategy<Value = Op> {
    (fd(), i32_edgy()).prop_map(|(fd, backlog)| Listen::new(fd, backlog).into())
}

// === encode → decode round trips, one test per encoder type ===

macro_rules! roundtrip_tests {
    ($($test:ident => $strategy:ident,)*) => {
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $test(op in $strategy(), (flags, personality, user_data) in common()) {
                    check::sqe::roundtrip_op(
                        &op,
                        SqeFlags::from_bits_retain(flags),
                        personality,
                        user_data,
                    );
                }
            )*
        }

        /// Every encoder type has a round-trip test above.
        const ROUNDTRIP_TESTS: usize = [$(stringify!($test)),*].len();
    };
}

roundtrip_tests! {
    nop_roundtrips => nop,
    readv_roundtrips => readv,
    writev_roundtrips => writev,
    fsync_roundtrips => fsync,
    read_fixed_roundtrips => read_fixed,
    write_fixed_roundtrips => write_fixed,
    poll_add_roundtrips => poll_add,
    poll_remove_roundtrips => poll_remove,
    sync_file_range_roundtrips => sync_file_range,
    send_msg_roundtrips => send_msg,
    recv_msg_roundtrips => recv_msg,
    timeout_roundtrips => timeout,
    timeout_remove_roundtrips => timeout_remove,
    accept_roundtrips => accept,
    async_cancel_roundtrips => async_cancel,
    link_timeout_roundtrips => link_timeout,
    connect_roundtrips => connect,
    fallocate_roundtrips => fallocate,
    open_at_roundtrips => open_at,
    close_roundtrips => close,
    statx_roundtrips => statx,
    read_roundtrips => read,
    write_roundtrips => write,
    fadvise_roundtrips => fadvise,
    send_roundtrips => send,
    recv_roundtrips => recv,
    splice_roundtrips => splice,
    provide_buffers_roundtrips => provide_buffers,
    remove_buffers_roundtrips => remove_buffers,
    tee_roundtrips => tee,
    shutdown_roundtrips => shutdown,
    rename_at_roundtrips => rename_at,
    unlink_at_roundtrips => unlink_at,
    mkdir_at_roundtrips => mkdir_at,
    symlink_at_roundtrips => symlink_at,
    link_at_roundtrips => link_at,
    msg_ring_data_roundtrips => msg_ring_data,
    socket_roundtrips => socket,
    msg_ring_send_fd_roundtrips => msg_ring_send_fd,
    send_zc_roundtrips => send_zc,
    read_multi_roundtrips => read_multi,
    ftruncate_roundtrips => ftruncate,
    bind_roundtrips => bind,
    listen_roundtrips => listen,
}

#[test]
fn every_encoder_type_has_a_roundtrip_test() {
    assert_eq!(ROUNDTRIP_TESTS, OP_KINDS);
}

// === arbitrary bytes ===

/// 64 bytes where each field is zero three times in four, so that entries
/// that decode (every unused field zero) come up often; any opcode up to 69.
fn sparse_sqe() -> impl Strategy<Value = [u8; SQE_SIZE]> {
    let field = || proptest::option::weighted(0.25, any::<u64>());
    (
        0u8..70,
        any::<u8>(),
        proptest::collection::vec(field(), 12),
        any::<u64>(),
        any::<u16>(),
    )
        .prop_map(|(opcode, flags, fields, user_data, personality)| {
            // (start, width) of every field an op may use.
            const FIELDS: [(usize, usize); 12] = [
                (2, 2),
                (4, 4),
                (8, 8),
                (16, 8),
                (24, 4),
                (28, 4),
                (40, 2),
                (44, 2),
                (46, 2),
                (48, 4),
                (52, 4),
                (56, 8),
            ];
            let mut bytes = [0u8; SQE_SIZE];
            bytes[0] = opcode;
            bytes[1] = flags;
            bytes[32..40].copy_from_slice(&user_data.to_ne_bytes());
            bytes[42..44].copy_from_slice(&personality.to_ne_bytes());
            for ((start, width), value) in FIELDS.into_iter().zip(fields) {
                let value = value.unwrap_or(0).to_ne_bytes();
                bytes[start..start + width].copy_from_slice(&value[..width]);
            }
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), SQE_SIZE)) {
        let bytes: [u8; SQE_SIZE] = bytes.try_into().expect("SQE_SIZE bytes");
        check::sqe::decode_arbitrary(&bytes);
    }

    #[test]
    fn sparse_bytes_that_decode_reencode_identically(bytes in sparse_sqe()) {
        check::sqe::decode_arbitrary(&bytes);
    }

    #[test]
    fn fuzz_inputs_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..160)) {
        check::sqe::roundtrip_bytes(&data);
    }
}

/// The fuzz input format reaches every encoder type: selector byte `k` picks kind `k`.
#[test]
fn fuzz_inputs_reach_every_encoder_type() {
    let names: BTreeSet<&str> = (0..OP_KINDS)
        .map(|kind| check::sqe::op_from_bytes(&[u8::try_from(kind).unwrap()]).name())
        .collect();
    assert_eq!(names.len(), OP_KINDS, "{names:?}");
    // The per-type proptests above cover the round trips; under Miri they suffice.
    let kinds = if cfg!(miri) { 0 } else { OP_KINDS };
    for kind in 0..kinds {
        let mut data = vec![u8::try_from(kind).unwrap()];
        data.extend((0u8..120).map(|b| b.wrapping_mul(37)));
        check::sqe::roundtrip_bytes(&data);
        data.truncate(1);
        check::sqe::roundtrip_bytes(&data);
    }
}
