//! Invariants of the SQE encoders and the decoder ([`crate::sqe`]).
//!
//! Called by the proptest suite `sys/tests/sqe_roundtrip.rs` and by the
//! `sqe_roundtrip` fuzz target.
//!
//! - [`roundtrip_op`]: an encoded op decodes back to itself, carries its
//!   `user_data`, personality and SQE flags bit-exact, and is classified by
//!   [`Sqe::references_user_memory`] as its type says;
//! - [`decode_arbitrary`]: decoding any 64 bytes never panics, and whatever
//!   decodes re-encodes to the same 64 bytes (so every byte an op leaves unused
//!   must be zero for it to decode);
//! - [`roundtrip_bytes`]: [`roundtrip_op`] on an op read from fuzz bytes by
//!   [`op_from_bytes`].

use core::ptr;

use crate::abi;
use crate::sqe::{
    self, Accept, AsyncCancel, Bind, CancelKey, Close, CloseTarget, Connect, DecodeError, DirectTarget,
    Fadvise, Fallocate, FixedSlot, Fsync, Ftruncate, LinkAt, LinkTimeout, Listen, MkdirAt, MsgRingData,
    MsgRingSendFd, Nop, OP_KINDS, Op, OpenAt, PollAdd, PollRemove, ProvideBuffers, Read, ReadFixed,
    ReadMulti, Readv, Recv, RecvMsg, RemoveBuffers, RenameAt, SQE_SIZE, Send, SendMsg, SendZc, Shutdown,
    Socket, Splice, Sqe, SqeField, SqeFlags, Statx, SymlinkAt, SyncFileRange, Tee, Timeout, TimeoutRemove,
    UnlinkAt, Write, WriteFixed, Writev,
};

/// Byte ranges of the fields every opcode carries: `flags`, `user_data`, `personality`.
const COMMON_BYTES: [core::ops::Range<usize>; 3] = [1..2, 32..40, 42..44];

/// Byte ranges of the opcode and of every field an op may use (each [`SqeField`] but `flags`).
const FIELD_BYTES: [core::ops::Range<usize>; 11] = [
    0..1, // opcode
    2..4,
    4..8,
    8..16,
    16..24,
    24..28,
    28..32,
    40..42,
    44..48,
    48..56,
    56..64,
];

/// Encodes `op`, adds the common fields, and checks that:
///
/// - the entry decodes back to `op`;
/// - `user_data` and `personality` are bit-exact, and the SQE flags are
///   `flags` plus the [`SqeFlags::BUFFER_SELECT`] the op sets for a buffer
///   group (the only flag an encoder sets);
/// - the common fields change no other byte, and bytes round-trip through
///   [`Sqe::to_bytes`] / [`Sqe::from_bytes`];
/// - [`Sqe::references_user_memory`] agrees with the op's type;
/// - [`decode_arbitrary`] holds for the entry and for copies with one byte of
///   any field flipped, so a byte the op leaves unused cannot be nonzero and
///   still decode.
///
/// `BUFFER_SELECT` is removed from `flags` first: for ops that take a buffer
/// group it belongs to the op, not to the caller.
///
/// # Panics
///
/// When an invariant breaks.
pub fn roundtrip_op(op: &Op, flags: SqeFlags, personality: u16, user_data: u64) {
    let flags = flags.difference(SqeFlags::BUFFER_SELECT);
    let bare = op.build();
    let sqe = bare.flags(flags).personality(personality).user_data(user_data);
    let name = op.name();

    assert_eq!(sqe.opcode(), op.opcode(), "{name}: opcode");
    assert_eq!(sqe.as_raw().user_data, user_data, "{name}: user_data");
    assert_eq!(sqe.as_raw().personality, personality, "{name}: personality");
    assert_eq!(
        bare.sqe_flags().difference(SqeFlags::BUFFER_SELECT),
        SqeFlags::empty(),
        "{name}: encoders set no SQE flag but BUFFER_SELECT"
    );
    assert_eq!(sqe.sqe_flags(), bare.sqe_flags() | flags, "{name}: SQE flags");
    assert_eq!(
        (bare.as_raw().user_data, bare.as_raw().personality),
        (0, 0),
        "{name}: encoders leave user_data and personality to the caller"
    );

    match sqe::decode(&sqe) {
        Ok(decoded) => assert_eq!(decoded, *op, "{name}: decode(build(op)) != op"),
        Err(e) => panic!("{name}: {op:?} encodes to an entry that does not decode: {e}"),
    }

    let bytes = sqe.to_bytes();
    let bare_bytes = bare.to_bytes();
    for (i, (a, b)) in bare_bytes.iter().zip(&bytes).enumerate() {
        if !COMMON_BYTES.iter().any(|r| r.contains(&i)) {
            assert_eq!(a, b, "{name}: setting the common fields changed byte {i}");
        }
    }
    assert_eq!(Sqe::from_bytes(&bytes), sqe, "{name}: bytes round trip");

    assert_eq!(
        sqe.references_user_memory(),
        expected_references_user_memory(op),
        "{name}: references_user_memory for {op:?}"
    );

    decode_arbitrary(&bytes);
    // Flip the low and high bit of each field's first and last byte; under
    // Miri one flip per field keeps the suite affordable.
    for range in FIELD_BYTES {
        let positions = [range.start, range.end - 1];
        let flips: &[u8] = if cfg!(miri) { &[0x01] } else { &[0x01, 0x80] };
        for &i in if cfg!(miri) {
            &positions[..1]
        } else {
            &positions[..]
        } {
            for &flip in flips {
                let mut perturbed = bytes;
                perturbed[i] ^= flip;
                decode_arbitrary(&perturbed);
            }
        }
    }
}

/// Reads 64 bytes as an entry and checks that decoding it never panics, that
/// whatever decodes re-encodes (with the entry's SQE flags, personality and
/// `user_data`) to the same bytes, and that an error names a field that is in
/// fact nonzero or the entry's own opcode.
///
/// # Panics
///
/// When an invariant breaks.
pub fn decode_arbitrary(bytes: &[u8; SQE_SIZE]) {
    let sqe = Sqe::from_bytes(bytes);
    assert_eq!(sqe.to_bytes(), *bytes, "from_bytes/to_bytes");
    let raw = *sqe.as_raw();
    let references_memory = sqe.references_user_memory();
    match sqe::decode(&sqe) {
        Ok(op) => {
            assert_eq!(op.opcode(), raw.opcode, "{op:?}: opcode");
            let again = op
                .build()
                .flags(sqe.sqe_flags())
                .personality(raw.personality)
                .user_data(raw.user_data);
            assert_eq!(again.to_bytes(), *bytes, "{op:?} re-encodes to different bytes");
            assert_eq!(references_memory, expected_references_user_memory(&op), "{op:?}");
        }
        Err(e) => {
            if !cfg!(miri) {
                assert!(!e.to_string().is_empty());
            }
            match e {
                DecodeError::UnsupportedOpcode(opcode) => assert_eq!(opcode, raw.opcode),
                DecodeError::UnusedFieldSet { opcode, field } => {
                    assert_eq!(opcode, raw.opcode);
                    assert!(field_is_nonzero(&raw, field), "{e} but the field is zero");
                }
                DecodeError::InvalidValue { opcode, .. } => assert_eq!(opcode, raw.opcode),
            }
        }
    }
}

/// Reads an op and the common fields from fuzz bytes (see [`op_from_bytes`])
/// and checks [`roundtrip_op`].
///
/// # Panics
///
/// When an invariant breaks.
pub fn roundtrip_bytes(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = input.u8();
    let flags = SqeFlags::from_bits_retain(input.u8());
    let personality = input.u16();
    let user_data = input.u64();
    let op = op_from_input(kind, &mut input);
    roundtrip_op(&op, flags, personality, user_data);
}

/// The op that fuzz bytes describe: the first byte picks one of the
/// [`sqe::OP_KINDS`] encoder types, the rest fill its fields in native byte
/// order (missing bytes read as zero).
pub fn op_from_bytes(data: &[u8]) -> Op {
    let mut input = Input::new(data);
    let kind = input.u8();
    op_from_input(kind, &mut input)
}

/// Whether an op's type and fields say it carries a pointer the kernel
/// dereferences: the specification [`Sqe::references_user_memory`] must meet,
/// written per type rather than per opcode.
fn expected_references_user_memory(op: &Op) -> bool {
    match op {
        Op::Nop(_)
        | Op::MsgRingData(_)
        | Op::MsgRingSendFd(_)
        | Op::Fsync(_)
        | Op::PollAdd(_)
        | Op::PollRemove(_)
        | Op::AsyncCancel(_)
        | Op::Close(_)
        | Op::Fallocate(_)
        | Op::Ftruncate(_)
        | Op::Shutdown(_)
        | Op::Socket(_)
        | Op::SyncFileRange(_)
        | Op::Fadvise(_)
        | Op::Tee(_)
        | Op::Splice(_)
        | Op::Listen(_)
        | Op::ReadMulti(_) => false,
        Op::TimeoutRemove(t) => t.flags & (abi::IORING_TIMEOUT_UPDATE | abi::IORING_LINK_TIMEOUT_UPDATE) != 0,
        Op::Read(r) => !(r.buf_group.is_some() && r.buf.is_null()),
        Op::Recv(r) => !(r.buf_group.is_some() && r.buf.is_null()),
        _ => true,
    }
}

fn field_is_nonzero(raw: &abi::io_uring_sqe, field: SqeField) -> bool {
    match field {
        SqeField::Flags => raw.flags != 0,
        SqeField::Ioprio => raw.ioprio != 0,
        SqeField::Fd => raw.fd != 0,
        SqeField::OffOrAddr2 => raw.off_or_addr2 != 0,
        SqeField::AddrOrSpliceOffIn => raw.addr_or_splice_off_in != 0,
        SqeField::Len => raw.len != 0,
        SqeField::OpFlags => raw.op_flags != 0,
        SqeField::BufIndexOrGroup => raw.buf_index_or_group != 0,
        SqeField::SpliceFdInOrFileIndex => raw.splice_fd_in_or_file_index != 0,
        SqeField::Addr3 => raw.addr3 != 0,
        SqeField::Pad2 => raw.pad2 != 0,
    }
}

/// Fuzz bytes read front to back; past the end every read is zero.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.rest.len());
        out[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.bytes())
    }

    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.bytes())
    }

    fn i32(&mut self) -> i32 {
        i32::from_ne_bytes(self.bytes())
    }

    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.bytes())
    }

    fn i64(&mut self) -> i64 {
        i64::from_ne_bytes(self.bytes())
    }

    fn addr(&mut self) -> usize {
        usize::from_ne_bytes(self.bytes())
    }

    fn ptr<T>(&mut self) -> *const T {
        ptr::without_provenance(self.addr())
    }

    fn ptr_mut<T>(&mut self) -> *mut T {
        ptr::without_provenance_mut(self.addr())
    }

    fn option_u16(&mut self) -> Option<u16> {
        let some = self.bool();
        let value = self.u16();
        some.then_some(value)
    }

    fn option_u32(&mut self) -> Option<u32> {
        let some = self.bool();
        let value = self.u32();
        some.then_some(value)
    }

    fn slot(&mut self) -> FixedSlot {
        let index = self.u32() % (FixedSlot::MAX + 1);
        FixedSlot::new(index).expect("index reduced to at most FixedSlot::MAX")
    }

    fn direct(&mut self) -> DirectTarget {
        if self.bool() {
            DirectTarget::Alloc
        } else {
            DirectTarget::Slot(self.slot())
        }
    }

    fn option_direct(&mut self) -> Option<DirectTarget> {
        if self.bool() { Some(self.direct()) } else { None }
    }
}

/// The body of [`op_from_bytes`]; `kind` is reduced modulo [`OP_KINDS`].
fn op_from_input(kind: u8, i: &mut Input<'_>) -> Op {
    match usize::from(kind) % OP_KINDS {
        0 => Nop::new().into(),
        1 => Readv::new(i.i32(), i.ptr(), i.u32())
            .offset(i.u64())
            .ioprio(i.u16())
            .rw_flags(i.i32())
            .into(),
        2 => Writev::new(i.i32(), i.ptr(), i.u32())
            .offset(i.u64())
            .ioprio(i.u16())
            .rw_flags(i.i32())
            .into(),
        3 => Fsync::new(i.i32())
            .datasync(i.bool())
            .offset(i.u64())
            .len(i.u32())
            .into(),
        4 => ReadFixed::new(i.i32(), i.ptr_mut(), i.u32(), i.u16())
            .offset(i.u64())
            .ioprio(i.u16())
            .rw_flags(i.i32())
            .into(),
        5 => WriteFixed::new(i.i32(), i.ptr(), i.u32(), i.u16())
            .offset(i.u64())
            .ioprio(i.u16())
            .rw_flags(i.i32())
            .into(),
        6 => PollAdd::new(i.i32(), i.u32()).multishot(i.bool()).into(),
        7 => PollRemove::new(i.u64()).into(),
        8 => SyncFileRange::new(i.i32())
            .offset(i.u64())
            .len(i.u32())
            .flags(i.u32())
            .into(),
        9 => SendMsg::new(i.i32(), i.ptr()).msg_flags(i.i32()).into(),
        10 => RecvMsg::new(i.i32(), i.ptr_mut())
            .msg_flags(i.i32())
            .buf_group(i.option_u16())
            .multishot(i.bool())
            .into(),
        11 => Timeout::new(i.ptr()).count(i.u32()).flags(i.u32()).into(),
        12 => TimeoutRemove::new(i.u64())
            .timespec(i.ptr())
            .flags(i.u32())
            .into(),
        13 => Accept::new(i.i32(), i.ptr_mut(), i.ptr_mut())
            .flags(i.i32())
            .multishot(i.bool())
            .direct(i.option_direct())
            .into(),
        14 => {
            let key = match i.u8() % 3 {
                0 => CancelKey::UserData(i.u64()),
                1 => CancelKey::Fd {
                    fd: i.i32(),
                    fixed: i.bool(),
                },
                _ => CancelKey::Any,
            };
            AsyncCancel::new(key).all(i.bool()).into()
        }
        15 => LinkTimeout::new(i.ptr()).flags(i.u32()).into(),
        16 => Connect::new(i.i32(), i.ptr(), i.u32()).into(),
        17 => Fallocate::new(i.i32(), i.u64())
            .offset(i.u64())
            .mode(i.i32())
            .into(),
        18 => OpenAt::new(i.i32(), i.ptr())
            .flags(i.i32())
            .mode(i.u32())
            .direct(i.option_direct())
            .into(),
        19 => {
            let target = if i.bool() {
                CloseTarget::Fixed(i.slot())
            } else {
                CloseTarget::Fd(i.i32())
            };
            Close::new(target).into()
        }
        20 => Statx::new(i.i32(), i.ptr(), i.ptr_mut())
            .flags(i.i32())
            .mask(i.u32())
            .into(),
        21 => Read::new(i.i32(), i.ptr_mut(), i.u32())
            .offset(i.u64())
            .ioprio(i.u16())
            .rw_flags(i.i32())
            .buf_group(i.option_u16())
            .into(),
        22 => Write::new(i.i32(), i.ptr(), i.u32())
            .offset(i.u64())
            .ioprio(i.u16())
            .rw_flags(i.i32())
            .into(),
        23 => Fadvise::new(i.i32(), i.u64(), i.u32(), i.i32()).into(),
        24 => Send::new(i.i32(), i.ptr(), i.u32())
            .msg_flags(i.i32())
            .buf_group(i.option_u16())
            .into(),
        25 => Recv::new(i.i32(), i.ptr_mut(), i.u32())
            .msg_flags(i.i32())
            .buf_group(i.option_u16())
            .multishot(i.bool())
            .into(),
        26 => Splice::new(i.i32(), i.i64(), i.i32(), i.i64(), i.u32())
            .flags(i.u32())
            .into(),
        27 => ProvideBuffers::new(i.ptr_mut(), i.u32(), i.u32(), i.u16(), i.u16()).into(),
        28 => RemoveBuffers::new(i.u32(), i.u16()).into(),
        29 => Tee::new(i.i32(), i.i32(), i.u32()).flags(i.u32()).into(),
        30 => Shutdown::new(i.i32(), i.i32()).into(),
        31 => RenameAt::new(i.i32(), i.ptr(), i.i32(), i.ptr())
            .flags(i.u32())
            .into(),
        32 => UnlinkAt::new(i.i32(), i.ptr()).flags(i.i32()).into(),
        33 => MkdirAt::new(i.i32(), i.ptr(), i.u32()).into(),
        34 => SymlinkAt::new(i.i32(), i.ptr(), i.ptr()).into(),
        35 => LinkAt::new(i.i32(), i.ptr(), i.i32(), i.ptr())
            .flags(i.i32())
            .into(),
        36 => MsgRingData::new(i.i32(), i.i32(), i.u64())
            .cqe_flags(i.option_u32())
            .into(),
        37 => Socket::new(i.i32(), i.i32(), i.i32())
            .direct(i.option_direct())
            .into(),
        38 => MsgRingSendFd::new(i.i32(), i.u32(), i.direct(), i.u64())
            .skip_cqe(i.bool())
            .into(),
        39 => SendZc::new(i.i32(), i.ptr(), i.u32())
            .msg_flags(i.i32())
            .buf_index(i.option_u16())
            .dest_addr(i.ptr())
            .dest_addr_len(i.u16())
            .report_usage(i.bool())
            .into(),
        40 => ReadMulti::new(i.i32(), i.u16()).offset(i.u64()).into(),
        41 => Ftruncate::new(i.i32(), i.u64()).into(),
        42 => Bind::new(i.i32(), i.ptr(), i.u32()).into(),
        _ => Listen::new(i.i32(), i.i32()).into(),
    }
}
