//! Safe, pure SQE encoders and a decoder back to a typed op.
//!
//! Each io_uring operation has one type here: its required fields are the
//! arguments of `new`, its optional fields have builder setters, and `build`
//! encodes it into an [`Sqe`]. Building is plain data and always safe; handing
//! an entry that points at memory to the kernel is the unsafe step
//! ([`crate::ring::Ring::push_unchecked`]). Pointers are therefore taken as raw
//! pointers and stored as numbers; nothing here dereferences them.
//!
//! [`decode`] is the inverse of `build`: it reads an entry back into an [`Op`]
//! and fails, naming the field, when any byte the opcode does not use is
//! nonzero or a field holds a value no encoder produces. So
//! `decode(&x.build()) == Ok(Op::X(x))` for every encoder value, and an entry
//! that decodes re-encodes to the same 64 bytes (with its SQE flags, personality
//! and `user_data`, which every opcode carries). Both directions are checked by
//! `check::sqe` from proptest and cargo-fuzz.
//!
//! Field placements follow the kernel's `*_prep` functions (`io_uring/*.c`);
//! the kernel version in each banner is the first one that knows the opcode.
//! Whether the running kernel supports an opcode or flag is for
//! [`crate::probe`] to say.
//!
//! # Example
//!
//! ```
//! use spargio_sys::sqe::{self, MsgRingData, Op, SqeFlags};
//!
//! let sqe = MsgRingData::new(7, 42, 0xfeed).build().flags(SqeFlags::SKIP_SUCCESS).user_data(1);
//! assert_eq!(sqe.as_raw().fd, 7);
//! assert_eq!(sqe.as_raw().len, 42);
//! assert_eq!(sqe.as_raw().off_or_addr2, 0xfeed);
//! assert_eq!(sqe::decode(&sqe), Ok(Op::MsgRingData(MsgRingData::new(7, 42, 0xfeed))));
//! ```

use core::fmt;
use core::ptr;

use crate::abi;

/// One submission queue entry: plain data. Building one is safe; handing one that
/// points at memory to the kernel is the unsafe step (see [`crate::ring::Ring::push`]).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sqe(pub(crate) abi::io_uring_sqe);

/// Size of one entry in bytes.
pub const SQE_SIZE: usize = 64;

impl Sqe {
    /// The kernel layout of this entry.
    pub const fn as_raw(&self) -> &abi::io_uring_sqe {
        &self.0
    }

    /// Wraps a raw kernel entry (e.g. one read back from a ring).
    pub const fn from_raw(raw: abi::io_uring_sqe) -> Self {
        Sqe(raw)
    }

    /// Sets `user_data`, returned unchanged in every CQE of this entry.
    #[must_use]
    pub const fn user_data(mut self, user_data: u64) -> Self {
        self.0.user_data = user_data;
        self
    }

    /// Adds SQE flags (`IOSQE_*`) to those already set.
    ///
    /// Flags are or-ed in, never cleared, so the [`SqeFlags::BUFFER_SELECT`] an
    /// encoder sets for a buffer group survives.
    ///
    /// ```
    /// use spargio_sys::sqe::{Nop, SqeFlags};
    ///
    /// let sqe = Nop::new().build().flags(SqeFlags::LINK).flags(SqeFlags::ASYNC);
    /// assert_eq!(sqe.sqe_flags(), SqeFlags::LINK | SqeFlags::ASYNC);
    /// ```
    #[must_use]
    pub const fn flags(mut self, flags: SqeFlags) -> Self {
        self.0.flags |= flags.bits();
        self
    }

    /// Sets the credentials personality (an id from `IORING_REGISTER_PERSONALITY`).
    #[must_use]
    pub const fn personality(mut self, personality: u16) -> Self {
        self.0.personality = personality;
        self
    }

    /// The opcode (`IORING_OP_*`).
    pub const fn opcode(&self) -> u8 {
        self.0.opcode
    }

    /// The SQE flags set on this entry.
    pub const fn sqe_flags(&self) -> SqeFlags {
        SqeFlags::from_bits_retain(self.0.flags)
    }

    /// A no-op; the same entry as `Nop::new().build()`.
    pub const fn nop() -> Self {
        let mut raw = zeroed();
        raw.opcode = abi::IORING_OP_NOP;
        Sqe(raw)
    }

    /// Decodes this entry; see [`decode`].
    ///
    /// # Errors
    ///
    /// As [`decode`].
    pub fn decode(&self) -> Result<Op, DecodeError> {
        decode(self)
    }

    /// The entry as the kernel sees it: 64 bytes in native byte order.
    pub fn to_bytes(&self) -> [u8; SQE_SIZE] {
        let s = &self.0;
        let mut out = [0u8; SQE_SIZE];
        out[0] = s.opcode;
        out[1] = s.flags;
        out[2..4].copy_from_slice(&s.ioprio.to_ne_bytes());
        out[4..8].copy_from_slice(&s.fd.to_ne_bytes());
        out[8..16].copy_from_slice(&s.off_or_addr2.to_ne_bytes());
        out[16..24].copy_from_slice(&s.addr_or_splice_off_in.to_ne_bytes());
        out[24..28].copy_from_slice(&s.len.to_ne_bytes());
        out[28..32].copy_from_slice(&s.op_flags.to_ne_bytes());
        out[32..40].copy_from_slice(&s.user_data.to_ne_bytes());
        out[40..42].copy_from_slice(&s.buf_index_or_group.to_ne_bytes());
        out[42..44].copy_from_slice(&s.personality.to_ne_bytes());
        out[44..48].copy_from_slice(&s.splice_fd_in_or_file_index.to_ne_bytes());
        out[48..56].copy_from_slice(&s.addr3.to_ne_bytes());
        out[56..64].copy_from_slice(&s.pad2.to_ne_bytes());
        out
    }

    /// Reads an entry from 64 bytes in native byte order; the inverse of [`Sqe::to_bytes`].
    pub fn from_bytes(bytes: &[u8; SQE_SIZE]) -> Self {
        Sqe(abi::io_uring_sqe {
            opcode: bytes[0],
            flags: bytes[1],
            ioprio: u16::from_ne_bytes(field(bytes, 2)),
            fd: i32::from_ne_bytes(field(bytes, 4)),
            off_or_addr2: u64::from_ne_bytes(field(bytes, 8)),
            addr_or_splice_off_in: u64::from_ne_bytes(field(bytes, 16)),
            len: u32::from_ne_bytes(field(bytes, 24)),
            op_flags: u32::from_ne_bytes(field(bytes, 28)),
            user_data: u64::from_ne_bytes(field(bytes, 32)),
            buf_index_or_group: u16::from_ne_bytes(field(bytes, 40)),
            personality: u16::from_ne_bytes(field(bytes, 42)),
            splice_fd_in_or_file_index: u32::from_ne_bytes(field(bytes, 44)),
            addr3: u64::from_ne_bytes(field(bytes, 48)),
            pad2: u64::from_ne_bytes(field(bytes, 56)),
        })
    }

    /// True for the entries the safe [`Ring::push`](crate::ring::Ring::push)
    /// accepts: those the kernel runs without trusting the caller about
    /// memory or fds. An entry that names an fd (CLOSE, MSG_RING, a read or a
    /// splice of a raw fd number) would let safe code act on a file it does
    /// not own, so only these opcodes qualify, whatever their other fields hold:
    ///
    /// - NOP (it can name a file only to look it up, and writes nothing);
    /// - ASYNC_CANCEL and POLL_REMOVE (they only end other requests, which
    ///   then complete as the kernel posts them);
    /// - TIMEOUT_REMOVE without `IORING_TIMEOUT_UPDATE` /
    ///   `IORING_LINK_TIMEOUT_UPDATE` (an update reads a timespec).
    ///
    /// ```
    /// use spargio_sys::{abi, Sqe};
    ///
    /// assert!(Sqe::nop().is_safe_to_push());
    /// let close = Sqe::from_raw(abi::io_uring_sqe { opcode: abi::IORING_OP_CLOSE, fd: 0, ..Default::default() });
    /// assert!(!close.is_safe_to_push());
    /// ```
    pub fn is_safe_to_push(&self) -> bool {
        let s = &self.0;
        match s.opcode {
            abi::IORING_OP_NOP | abi::IORING_OP_ASYNC_CANCEL | abi::IORING_OP_POLL_REMOVE => true,
            abi::IORING_OP_TIMEOUT_REMOVE => s.op_flags & TIMEOUT_UPDATE_MASK == 0,
            _ => false,
        }
    }

    /// True unless the kernel runs this entry without checking anyone's
    /// credentials. Only these qualify, and only when not linked to another
    /// entry (`IOSQE_IO_LINK` / `IOSQE_IO_HARDLINK`):
    ///
    /// - NOP;
    /// - MSG_RING (it posts into, or installs a file in, a ring the sender
    ///   already holds);
    /// - ASYNC_CANCEL, POLL_REMOVE and TIMEOUT_REMOVE (they only act on this
    ///   ring's own requests).
    ///
    /// An SQPOLL ring refuses every other entry once the submitter's
    /// credentials changed since setup (see [`Ring`](crate::ring::Ring)).
    ///
    /// ```
    /// use spargio_sys::{abi, Sqe};
    ///
    /// assert!(!Sqe::nop().uses_credentials());
    /// let open = Sqe::from_raw(abi::io_uring_sqe { opcode: abi::IORING_OP_OPENAT, ..Default::default() });
    /// assert!(open.uses_credentials());
    /// ```
    pub fn uses_credentials(&self) -> bool {
        let s = &self.0;
        if s.flags & (abi::IOSQE_IO_LINK | abi::IOSQE_IO_HARDLINK) != 0 {
            return true;
        }
        !matches!(
            s.opcode,
            abi::IORING_OP_NOP
                | abi::IORING_OP_MSG_RING
                | abi::IORING_OP_ASYNC_CANCEL
                | abi::IORING_OP_POLL_REMOVE
                | abi::IORING_OP_TIMEOUT_REMOVE
        )
    }

    /// True when this entry's completion would carry an op's tag
    /// ([`msg::Tag::Op`](crate::msg::Tag::Op)): its `user_data`, or for a
    /// `MSG_RING` data message also the `user_data` it posts into the target.
    /// Only the op table puts such entries in flight.
    pub fn carries_op_tag(&self) -> bool {
        use crate::msg::{Tag, decode};
        let s = &self.0;
        matches!(decode(s.user_data), Tag::Op(_))
            || (s.opcode == abi::IORING_OP_MSG_RING && matches!(decode(s.off_or_addr2), Tag::Op(_)))
    }

    /// True unless this entry is known to carry no pointer the kernel dereferences.
    ///
    /// It errs on the side of `true`: only the opcodes listed below answer
    /// `false`, whatever their other fields hold. (What the safe push accepts
    /// is the narrower [`Sqe::is_safe_to_push`].)
    ///
    /// - NOP, MSG_RING (data and send-fd), FSYNC, POLL_ADD, POLL_REMOVE,
    ///   ASYNC_CANCEL, CLOSE, FALLOCATE, FTRUNCATE, SHUTDOWN, SOCKET,
    ///   SYNC_FILE_RANGE, FADVISE, TEE, SPLICE (its offsets are values), LISTEN;
    /// - TIMEOUT_REMOVE without `IORING_TIMEOUT_UPDATE` / `IORING_LINK_TIMEOUT_UPDATE`
    ///   (an update reads a timespec);
    /// - READ, RECV and READ_MULTISHOT with [`SqeFlags::BUFFER_SELECT`] and a zero
    ///   address: the buffer comes from a provided-buffer ring, whose owner keeps
    ///   it alive.
    ///
    /// ```
    /// use spargio_sys::sqe::{Read, Recv};
    ///
    /// let mut buf = [0u8; 16];
    /// assert!(Read::new(0, buf.as_mut_ptr(), 16).build().references_user_memory());
    /// let selected = Recv::new(3, std::ptr::null_mut(), 0).buf_group(Some(1)).build();
    /// assert!(!selected.references_user_memory());
    /// ```
    pub fn references_user_memory(&self) -> bool {
        let s = &self.0;
        match s.opcode {
            abi::IORING_OP_NOP
            | abi::IORING_OP_MSG_RING
            | abi::IORING_OP_FSYNC
            | abi::IORING_OP_POLL_ADD
            | abi::IORING_OP_POLL_REMOVE
            | abi::IORING_OP_ASYNC_CANCEL
            | abi::IORING_OP_CLOSE
            | abi::IORING_OP_FALLOCATE
            | abi::IORING_OP_FTRUNCATE
            | abi::IORING_OP_SHUTDOWN
            | abi::IORING_OP_SOCKET
            | abi::IORING_OP_SYNC_FILE_RANGE
            | abi::IORING_OP_FADVISE
            | abi::IORING_OP_TEE
            | abi::IORING_OP_SPLICE
            | abi::IORING_OP_LISTEN => false,
            abi::IORING_OP_TIMEOUT_REMOVE => s.op_flags & TIMEOUT_UPDATE_MASK != 0,
            abi::IORING_OP_READ | abi::IORING_OP_RECV | abi::IORING_OP_READ_MULTISHOT => {
                s.flags & abi::IOSQE_BUFFER_SELECT == 0 || s.addr_or_splice_off_in != 0
            }
            _ => true,
        }
    }
}

/// Copies `N` bytes of an entry starting at `at`.
fn field<const N: usize>(bytes: &[u8; SQE_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

const fn zeroed() -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode: 0,
        flags: 0,
        ioprio: 0,
        fd: 0,
        off_or_addr2: 0,
        addr_or_splice_off_in: 0,
        len: 0,
        op_flags: 0,
        user_data: 0,
        buf_index_or_group: 0,
        personality: 0,
        splice_fd_in_or_file_index: 0,
        addr3: 0,
        pad2: 0,
    }
}

/// Both `TIMEOUT_REMOVE` update flags; either makes the kernel read `addr2` as a timespec.
const TIMEOUT_UPDATE_MASK: u32 = abi::IORING_TIMEOUT_UPDATE | abi::IORING_LINK_TIMEOUT_UPDATE;

// === SQE flags ===

/// The `IOSQE_*` flags of an entry: a small bit set over one byte.
///
/// ```
/// use spargio_sys::sqe::SqeFlags;
///
/// let flags = SqeFlags::LINK | SqeFlags::SKIP_SUCCESS;
/// assert!(flags.contains(SqeFlags::LINK));
/// assert!(!flags.contains(SqeFlags::DRAIN));
/// assert_eq!(format!("{flags:?}"), "SqeFlags(LINK | SKIP_SUCCESS)");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SqeFlags(u8);

impl SqeFlags {
    /// `IOSQE_FIXED_FILE`: `fd` is an index into the registered file table.
    pub const FIXED_FILE: Self = Self(abi::IOSQE_FIXED_FILE);
    /// `IOSQE_IO_DRAIN`: start only after every earlier entry has completed.
    pub const DRAIN: Self = Self(abi::IOSQE_IO_DRAIN);
    /// `IOSQE_IO_LINK`: the next entry starts after this one succeeds.
    pub const LINK: Self = Self(abi::IOSQE_IO_LINK);
    /// `IOSQE_IO_HARDLINK`: the next entry starts after this one, whatever its result.
    pub const HARDLINK: Self = Self(abi::IOSQE_IO_HARDLINK);
    /// `IOSQE_ASYNC`: skip the non-blocking attempt and go to an io-wq worker.
    pub const ASYNC: Self = Self(abi::IOSQE_ASYNC);
    /// `IOSQE_BUFFER_SELECT`: take the buffer from the group in `buf_group`.
    ///
    /// Encoders that take a buffer group set it themselves; setting it by hand
    /// on such an op makes [`decode`] report buffer group `buf_index_or_group`.
    pub const BUFFER_SELECT: Self = Self(abi::IOSQE_BUFFER_SELECT);
    /// `IOSQE_CQE_SKIP_SUCCESS`: post no CQE when the entry succeeds.
    pub const SKIP_SUCCESS: Self = Self(abi::IOSQE_CQE_SKIP_SUCCESS);

    const NAMES: [(Self, &'static str); 7] = [
        (Self::FIXED_FILE, "FIXED_FILE"),
        (Self::DRAIN, "DRAIN"),
        (Self::LINK, "LINK"),
        (Self::HARDLINK, "HARDLINK"),
        (Self::ASYNC, "ASYNC"),
        (Self::BUFFER_SELECT, "BUFFER_SELECT"),
        (Self::SKIP_SUCCESS, "SKIP_SUCCESS"),
    ];

    /// No flags.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The raw flag byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The flags in `bits`, or `None` if a bit is not a known `IOSQE_*` flag.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::all().0 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The flags in `bits`, unknown bits included.
    pub const fn from_bits_retain(bits: u8) -> Self {
        Self(bits)
    }

    /// Every known flag.
    pub const fn all() -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < Self::NAMES.len() {
            bits |= Self::NAMES[i].0.0;
            i += 1;
        }
        Self(bits)
    }

    /// True when no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags set in either.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The flags of `self` that are not in `other`.
    #[must_use]
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl core::ops::BitOr for SqeFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl core::ops::BitOrAssign for SqeFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for SqeFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SqeFlags(")?;
        let mut first = true;
        let mut rest = self.0;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{rest:#04x}")?;
        } else if first {
            f.write_str("empty")?;
        }
        f.write_str(")")
    }
}

// === registered-file slots ===

/// An index into the ring's registered file table (a "direct descriptor").
///
/// SQEs name a slot as `index + 1` and reserve `u32::MAX` for "allocate one",
/// so the largest usable index is [`FixedSlot::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FixedSlot(u32);

impl FixedSlot {
    /// The largest index an SQE can name.
    pub const MAX: u32 = u32::MAX - 2;

    /// The slot at `index`, or `None` above [`FixedSlot::MAX`].
    pub const fn new(index: u32) -> Option<Self> {
        if index <= Self::MAX {
            Some(Self(index))
        } else {
            None
        }
    }

    /// The table index.
    pub const fn index(self) -> u32 {
        self.0
    }

    /// The `file_index` encoding: `index + 1` (never 0, never `u32::MAX`).
    const fn encoded(self) -> u32 {
        self.0 + 1
    }

    /// Inverse of [`FixedSlot::encoded`].
    const fn from_encoded(file_index: u32) -> Option<Self> {
        match file_index {
            0 | u32::MAX => None,
            n => Some(Self(n - 1)),
        }
    }
}

/// Where an op that creates a file (accept, openat, socket, MSG_RING send-fd)
/// installs it in the registered file table instead of the process fd table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirectTarget {
    /// This slot, replacing whatever it held.
    Slot(FixedSlot),
    /// A free slot the kernel picks (`IORING_FILE_INDEX_ALLOC`); the CQE's `res` names it.
    Alloc,
}

impl DirectTarget {
    const fn encoded(self) -> u32 {
        match self {
            DirectTarget::Slot(slot) => slot.encoded(),
            DirectTarget::Alloc => abi::IORING_FILE_INDEX_ALLOC,
        }
    }

    /// `None` for 0, the "not direct" value.
    const fn from_encoded(file_index: u32) -> Option<Self> {
        if file_index == abi::IORING_FILE_INDEX_ALLOC {
            return Some(DirectTarget::Alloc);
        }
        match FixedSlot::from_encoded(file_index) {
            Some(slot) => Some(DirectTarget::Slot(slot)),
            None => None,
        }
    }
}

/// What a [`Close`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseTarget {
    /// A process file descriptor.
    Fd(i32),
    /// A registered-file slot.
    Fixed(FixedSlot),
}

/// Which requests an [`AsyncCancel`] matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelKey {
    /// Requests with this `user_data`.
    UserData(u64),
    /// Requests on this file (`IORING_ASYNC_CANCEL_FD`, kernel 5.19).
    Fd {
        /// The descriptor, or a registered-file index when `fixed`.
        fd: i32,
        /// `IORING_ASYNC_CANCEL_FD_FIXED`: `fd` is a registered-file index.
        fixed: bool,
    },
    /// Any request (`IORING_ASYNC_CANCEL_ANY`, kernel 5.19).
    Any,
}

// === encoder types ===

/// Declares one encoder type: its struct, `CODE`, `new`, setters and `build`.
/// The type itself supplies `encode` (fill the fields) and `decode` (read them back).
macro_rules! op {
    (
        $(#[$meta:meta])*
        $name:ident = $code:path;
        required { $( $(#[$rmeta:meta])* $rname:ident : $rty:ty ),* $(,)? }
        optional { $( $(#[$ometa:meta])* $oname:ident : $oty:ty = $odefault:expr ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $name {
            $( $(#[$rmeta])* pub $rname: $rty, )*
            $( $(#[$ometa])* pub $oname: $oty, )*
        }

        impl $name {
            /// The opcode this type encodes.
            pub const CODE: u8 = $code;

            /// The op with its required fields; optional fields take their defaults.
            pub const fn new($( $rname: $rty ),*) -> Self {
                Self { $( $rname, )* $( $oname: $odefault, )* }
            }

            $(
                $(#[$ometa])*
                #[must_use]
                pub const fn $oname(mut self, $oname: $oty) -> Self {
                    self.$oname = $oname;
                    self
                }
            )*

            /// Encodes the op; every byte it does not use is zero.
            #[must_use]
            pub fn build(self) -> Sqe {
                let mut raw = zeroed();
                raw.opcode = Self::CODE;
                self.encode(&mut raw);
                Sqe(raw)
            }
        }

        impl From<$name> for Op {
            fn from(op: $name) -> Op {
                Op::$name(op)
            }
        }
    };
}

/// The address of a pointer, as the kernel reads it.
///
/// Its provenance is exposed: the kernel is outside the program, but the
/// simulated kernel ([`crate::sim`]) is inside it and reaches memory outside
/// its loans through the address's exposed provenance, so an address taken
/// with `addr()` alone would leave it nothing to reach (Miri reports the
/// simulator's access as one through a pointer without provenance).
fn addr<T>(p: *const T) -> u64 {
    p.expose_provenance() as u64
}

/// `poll32_events` is stored with its 16-bit halves swapped on big-endian machines.
const fn poll32_events(events: u32) -> u32 {
    if cfg!(target_endian = "big") {
        events.rotate_left(16)
    } else {
        events
    }
}

/// The `splice_fd_in_or_file_index` word holding `addr_len` (u16 at byte 44) and
/// a zero pad (byte 46).
const fn addr_len_word(addr_len: u16) -> u32 {
    let b = addr_len.to_ne_bytes();
    u32::from_ne_bytes([b[0], b[1], 0, 0])
}

/// Inverse of [`addr_len_word`]: `(addr_len, pad)`.
const fn split_addr_len_word(word: u32) -> (u16, u16) {
    let b = word.to_ne_bytes();
    (u16::from_ne_bytes([b[0], b[1]]), u16::from_ne_bytes([b[2], b[3]]))
}

const fn flag_if(set: bool, flag: u32) -> u32 {
    if set { flag } else { 0 }
}

const fn flag16_if(set: bool, flag: u16) -> u16 {
    if set { flag } else { 0 }
}

/// Sets `IOSQE_BUFFER_SELECT` and the group when `group` is `Some`.
fn encode_buf_group(raw: &mut abi::io_uring_sqe, group: Option<u16>) {
    if let Some(group) = group {
        raw.flags |= abi::IOSQE_BUFFER_SELECT;
        raw.buf_index_or_group = group;
    }
}

// === kernel 5.1 ===

op! {
    /// `IORING_OP_NOP`: completes with `res` 0 and touches nothing.
    #[derive(Default)]
    Nop = abi::IORING_OP_NOP;
    required {}
    optional {}
}

impl Nop {
    fn encode(&self, _raw: &mut abi::io_uring_sqe) {}
    fn decode(_r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {})
    }
}

op! {
    /// `IORING_OP_READV`: `preadv2(2)` into `len` iovecs.
    Readv = abi::IORING_OP_READV;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// The iovec array.
        iovec: *const libc::iovec,
        /// Number of iovecs.
        len: u32,
    }
    optional {
        /// File offset; `u64::MAX` (-1) uses and advances the file position.
        offset: u64 = 0,
        /// I/O priority (`ioprio_set(2)` encoding).
        ioprio: u16 = 0,
        /// `RWF_*` flags.
        rw_flags: i32 = 0,
    }
}

impl Readv {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.iovec);
        raw.len = self.len;
        raw.off_or_addr2 = self.offset;
        raw.ioprio = self.ioprio;
        raw.op_flags = self.rw_flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            iovec: r.addr_ptr()?,
            len: r.len(),
            offset: r.off(),
            ioprio: r.ioprio(),
            rw_flags: r.op_flags() as i32,
        })
    }
}

op! {
    /// `IORING_OP_WRITEV`: `pwritev2(2)` from `len` iovecs.
    Writev = abi::IORING_OP_WRITEV;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// The iovec array.
        iovec: *const libc::iovec,
        /// Number of iovecs.
        len: u32,
    }
    optional {
        /// File offset; `u64::MAX` (-1) uses and advances the file position.
        offset: u64 = 0,
        /// I/O priority (`ioprio_set(2)` encoding).
        ioprio: u16 = 0,
        /// `RWF_*` flags.
        rw_flags: i32 = 0,
    }
}

impl Writev {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.iovec);
        raw.len = self.len;
        raw.off_or_addr2 = self.offset;
        raw.ioprio = self.ioprio;
        raw.op_flags = self.rw_flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            iovec: r.addr_ptr()?,
            len: r.len(),
            offset: r.off(),
            ioprio: r.ioprio(),
            rw_flags: r.op_flags() as i32,
        })
    }
}

op! {
    /// `IORING_OP_FSYNC`: `fsync(2)` / `fdatasync(2)`, optionally of a byte range.
    Fsync = abi::IORING_OP_FSYNC;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
    }
    optional {
        /// `IORING_FSYNC_DATASYNC`: sync data only, like `fdatasync(2)`.
        datasync: bool = false,
        /// Start of the range.
        offset: u64 = 0,
        /// Length of the range; 0 means to the end of the file.
        len: u32 = 0,
    }
}

impl Fsync {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.op_flags = flag_if(self.datasync, abi::IORING_FSYNC_DATASYNC);
        raw.off_or_addr2 = self.offset;
        raw.len = self.len;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let flags = r.op_flags();
        if flags & !abi::IORING_FSYNC_DATASYNC != 0 {
            return Err(r.invalid(SqeField::OpFlags));
        }
        Ok(Self {
            fd: r.fd(),
            datasync: flags != 0,
            offset: r.off(),
            len: r.len(),
        })
    }
}

op! {
    /// `IORING_OP_READ_FIXED`: read into a registered buffer.
    ReadFixed = abi::IORING_OP_READ_FIXED;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Destination: an address inside registered buffer `buf_index`.
        buf: *mut u8,
        /// Bytes to read.
        len: u32,
        /// Index of the registered buffer.
        buf_index: u16,
    }
    optional {
        /// File offset; `u64::MAX` (-1) uses and advances the file position.
        offset: u64 = 0,
        /// I/O priority (`ioprio_set(2)` encoding).
        ioprio: u16 = 0,
        /// `RWF_*` flags.
        rw_flags: i32 = 0,
    }
}

impl ReadFixed {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.buf);
        raw.len = self.len;
        raw.buf_index_or_group = self.buf_index;
        raw.off_or_addr2 = self.offset;
        raw.ioprio = self.ioprio;
        raw.op_flags = self.rw_flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            buf: r.addr_ptr_mut()?,
            len: r.len(),
            buf_index: r.buf_index(),
            offset: r.off(),
            ioprio: r.ioprio(),
            rw_flags: r.op_flags() as i32,
        })
    }
}

op! {
    /// `IORING_OP_WRITE_FIXED`: write from a registered buffer.
    WriteFixed = abi::IORING_OP_WRITE_FIXED;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Source: an address inside registered buffer `buf_index`.
        buf: *const u8,
        /// Bytes to write.
        len: u32,
        /// Index of the registered buffer.
        buf_index: u16,
    }
    optional {
        /// File offset; `u64::MAX` (-1) uses and advances the file position.
        offset: u64 = 0,
        /// I/O priority (`ioprio_set(2)` encoding).
        ioprio: u16 = 0,
        /// `RWF_*` flags.
        rw_flags: i32 = 0,
    }
}

impl WriteFixed {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.buf);
        raw.len = self.len;
        raw.buf_index_or_group = self.buf_index;
        raw.off_or_addr2 = self.offset;
        raw.ioprio = self.ioprio;
        raw.op_flags = self.rw_flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            buf: r.addr_ptr()?,
            len: r.len(),
            buf_index: r.buf_index(),
            offset: r.off(),
            ioprio: r.ioprio(),
            rw_flags: r.op_flags() as i32,
        })
    }
}

op! {
    /// `IORING_OP_POLL_ADD`: wait for poll events on a file.
    PollAdd = abi::IORING_OP_POLL_ADD;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// `POLL*` event mask (all 32 bits, as `poll32_events`).
        events: u32,
    }
    optional {
        /// `IORING_POLL_ADD_MULTI` (kernel 5.13): post a CQE for every event,
        /// with `IORING_CQE_F_MORE`, until cancelled.
        multishot: bool = false,
    }
}

impl PollAdd {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.op_flags = poll32_events(self.events);
        raw.len = flag_if(self.multishot, abi::IORING_POLL_ADD_MULTI);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let flags = r.len();
        if flags & !abi::IORING_POLL_ADD_MULTI != 0 {
            return Err(r.invalid(SqeField::Len));
        }
        Ok(Self {
            fd: r.fd(),
            events: poll32_events(r.op_flags()),
            multishot: flags != 0,
        })
    }
}

op! {
    /// `IORING_OP_POLL_REMOVE`: cancel the poll request with this `user_data`.
    PollRemove = abi::IORING_OP_POLL_REMOVE;
    required {
        /// `user_data` of the poll request to remove.
        user_data: u64,
    }
    optional {}
}

impl PollRemove {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.addr_or_splice_off_in = self.user_data;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self { user_data: r.addr() })
    }
}

// === kernel 5.2 ===

op! {
    /// `IORING_OP_SYNC_FILE_RANGE`: `sync_file_range(2)`.
    SyncFileRange = abi::IORING_OP_SYNC_FILE_RANGE;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
    }
    optional {
        /// Start of the range.
        offset: u64 = 0,
        /// Length of the range; 0 means to the end of the file.
        len: u32 = 0,
        /// `SYNC_FILE_RANGE_*` flags.
        flags: u32 = 0,
    }
}

impl SyncFileRange {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.off_or_addr2 = self.offset;
        raw.len = self.len;
        raw.op_flags = self.flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            offset: r.off(),
            len: r.len(),
            flags: r.op_flags(),
        })
    }
}

// === kernel 5.3 ===

op! {
    /// `IORING_OP_SENDMSG`: `sendmsg(2)`.
    SendMsg = abi::IORING_OP_SENDMSG;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// The message header.
        msg: *const libc::msghdr,
    }
    optional {
        /// `MSG_*` flags.
        msg_flags: i32 = 0,
    }
}

impl SendMsg {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.msg);
        raw.op_flags = self.msg_flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            msg: r.addr_ptr()?,
            msg_flags: r.op_flags() as i32,
        })
    }
}

op! {
    /// `IORING_OP_RECVMSG`: `recvmsg(2)`, optionally into provided buffers.
    RecvMsg = abi::IORING_OP_RECVMSG;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// The message header.
        msg: *mut libc::msghdr,
    }
    optional {
        /// `MSG_*` flags.
        msg_flags: i32 = 0,
        /// Provided-buffer group to receive into (sets [`SqeFlags::BUFFER_SELECT`]).
        buf_group: Option<u16> = None,
        /// `IORING_RECV_MULTISHOT` (kernel 6.0): keep receiving into provided
        /// buffers; requires `buf_group`.
        multishot: bool = false,
    }
}

impl RecvMsg {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.msg);
        raw.op_flags = self.msg_flags as u32;
        raw.ioprio = flag16_if(self.multishot, abi::IORING_RECV_MULTISHOT);
        encode_buf_group(raw, self.buf_group);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            msg: r.addr_ptr_mut()?,
            msg_flags: r.op_flags() as i32,
            buf_group: r.buf_group(),
            multishot: r.ioprio_flag(abi::IORING_RECV_MULTISHOT)?,
        })
    }
}

// === kernel 5.4 ===

op! {
    /// `IORING_OP_TIMEOUT`: complete after a time, or after `count` other completions.
    Timeout = abi::IORING_OP_TIMEOUT;
    required {
        /// The timeout (relative unless `IORING_TIMEOUT_ABS`).
        timespec: *const abi::kernel_timespec,
    }
    optional {
        /// Complete early once this many other CQEs have been posted (0: time only).
        count: u32 = 0,
        /// `IORING_TIMEOUT_*` flags (`ABS`, `BOOTTIME`, `REALTIME`, `ETIME_SUCCESS`, `MULTISHOT`).
        flags: u32 = 0,
    }
}

impl Timeout {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.addr_or_splice_off_in = addr(self.timespec);
        raw.len = 1;
        raw.off_or_addr2 = u64::from(self.count);
        raw.op_flags = self.flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.len() != 1 {
            return Err(r.invalid(SqeField::Len));
        }
        Ok(Self {
            timespec: r.addr_ptr()?,
            count: r.off_u32()?,
            flags: r.op_flags(),
        })
    }
}

// === kernel 5.5 ===

op! {
    /// `IORING_OP_TIMEOUT_REMOVE`: cancel, or with an update flag re-arm, a timeout.
    TimeoutRemove = abi::IORING_OP_TIMEOUT_REMOVE;
    required {
        /// `user_data` of the timeout.
        user_data: u64,
    }
    optional {
        /// New timeout, read when `flags` has `IORING_TIMEOUT_UPDATE` (kernel 5.11)
        /// or `IORING_LINK_TIMEOUT_UPDATE` (kernel 5.15).
        timespec: *const abi::kernel_timespec = ptr::null(),
        /// `IORING_TIMEOUT_*` flags; 0 for a plain removal.
        flags: u32 = 0,
    }
}

impl TimeoutRemove {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.addr_or_splice_off_in = self.user_data;
        raw.off_or_addr2 = addr(self.timespec);
        raw.op_flags = self.flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            user_data: r.addr(),
            timespec: r.off_ptr()?,
            flags: r.op_flags(),
        })
    }
}

op! {
    /// `IORING_OP_ACCEPT`: `accept4(2)`, once or (multishot) for every connection.
    Accept = abi::IORING_OP_ACCEPT;
    required {
        /// Listening socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Peer address out-parameter, or null.
        addr: *mut libc::sockaddr,
        /// In/out length of `addr`, or null.
        addrlen: *mut libc::socklen_t,
    }
    optional {
        /// `accept4(2)` flags (`SOCK_CLOEXEC`, `SOCK_NONBLOCK`).
        flags: i32 = 0,
        /// `IORING_ACCEPT_MULTISHOT` (kernel 5.19): one CQE per connection until cancelled.
        multishot: bool = false,
        /// Install the socket as a direct descriptor (kernel 5.15; multishot needs `Alloc`).
        direct: Option<DirectTarget> = None,
    }
}

impl Accept {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.addr);
        raw.off_or_addr2 = addr(self.addrlen);
        raw.op_flags = self.flags as u32;
        raw.ioprio = flag16_if(self.multishot, abi::IORING_ACCEPT_MULTISHOT);
        raw.splice_fd_in_or_file_index = encode_direct(self.direct);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            addr: r.addr_ptr_mut()?,
            addrlen: r.off_ptr_mut()?,
            flags: r.op_flags() as i32,
            multishot: r.ioprio_flag(abi::IORING_ACCEPT_MULTISHOT)?,
            direct: r.direct()?,
        })
    }
}

const fn encode_direct(direct: Option<DirectTarget>) -> u32 {
    match direct {
        Some(target) => target.encoded(),
        None => 0,
    }
}

op! {
    /// `IORING_OP_ASYNC_CANCEL`: cancel in-flight requests matching a key.
    AsyncCancel = abi::IORING_OP_ASYNC_CANCEL;
    required {
        /// Which requests to match.
        key: CancelKey,
    }
    optional {
        /// `IORING_ASYNC_CANCEL_ALL` (kernel 5.19): cancel every match, not just the first;
        /// `res` is the number cancelled.
        all: bool = false,
    }
}

/// The cancel flags this module encodes.
const CANCEL_FLAGS: u32 = abi::IORING_ASYNC_CANCEL_ALL
    | abi::IORING_ASYNC_CANCEL_FD
    | abi::IORING_ASYNC_CANCEL_ANY
    | abi::IORING_ASYNC_CANCEL_FD_FIXED;

impl AsyncCancel {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        let mut flags = flag_if(self.all, abi::IORING_ASYNC_CANCEL_ALL);
        match self.key {
            CancelKey::UserData(user_data) => raw.addr_or_splice_off_in = user_data,
            CancelKey::Fd { fd, fixed } => {
                raw.fd = fd;
                flags |= abi::IORING_ASYNC_CANCEL_FD;
                flags |= flag_if(fixed, abi::IORING_ASYNC_CANCEL_FD_FIXED);
            }
            CancelKey::Any => flags |= abi::IORING_ASYNC_CANCEL_ANY,
        }
        raw.op_flags = flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let flags = r.op_flags();
        let by_fd = flags & abi::IORING_ASYNC_CANCEL_FD != 0;
        let any = flags & abi::IORING_ASYNC_CANCEL_ANY != 0;
        let fixed = flags & abi::IORING_ASYNC_CANCEL_FD_FIXED != 0;
        if flags & !CANCEL_FLAGS != 0 || (by_fd && any) || (fixed && !by_fd) {
            return Err(r.invalid(SqeField::OpFlags));
        }
        let key = if by_fd {
            CancelKey::Fd { fd: r.fd(), fixed }
        } else if any {
            CancelKey::Any
        } else {
            CancelKey::UserData(r.addr())
        };
        Ok(Self {
            key,
            all: flags & abi::IORING_ASYNC_CANCEL_ALL != 0,
        })
    }
}

op! {
    /// `IORING_OP_LINK_TIMEOUT`: a timeout for the entry this one is linked after.
    LinkTimeout = abi::IORING_OP_LINK_TIMEOUT;
    required {
        /// The timeout (relative unless `IORING_TIMEOUT_ABS`).
        timespec: *const abi::kernel_timespec,
    }
    optional {
        /// `IORING_TIMEOUT_*` flags.
        flags: u32 = 0,
    }
}

impl LinkTimeout {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.addr_or_splice_off_in = addr(self.timespec);
        raw.len = 1;
        raw.op_flags = self.flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.len() != 1 {
            return Err(r.invalid(SqeField::Len));
        }
        Ok(Self {
            timespec: r.addr_ptr()?,
            flags: r.op_flags(),
        })
    }
}

op! {
    /// `IORING_OP_CONNECT`: `connect(2)`.
    Connect = abi::IORING_OP_CONNECT;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Peer address.
        addr: *const libc::sockaddr,
        /// Length of `addr` (a value, not a pointer).
        addrlen: libc::socklen_t,
    }
    optional {}
}

impl Connect {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.addr);
        raw.off_or_addr2 = u64::from(self.addrlen);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            addr: r.addr_ptr()?,
            addrlen: r.off_u32()?,
        })
    }
}

// === kernel 5.6 ===

op! {
    /// `IORING_OP_FALLOCATE`: `fallocate(2)`. The length travels in `addr`.
    Fallocate = abi::IORING_OP_FALLOCATE;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Length of the range.
        len: u64,
    }
    optional {
        /// Start of the range.
        offset: u64 = 0,
        /// `FALLOC_FL_*` mode.
        mode: i32 = 0,
    }
}

impl Fallocate {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = self.len;
        raw.off_or_addr2 = self.offset;
        raw.len = self.mode as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            len: r.addr(),
            offset: r.off(),
            mode: r.len() as i32,
        })
    }
}

op! {
    /// `IORING_OP_OPENAT`: `openat(2)`.
    OpenAt = abi::IORING_OP_OPENAT;
    required {
        /// Directory for a relative path (`AT_FDCWD` for the working directory).
        dirfd: i32,
        /// NUL-terminated path.
        path: *const libc::c_char,
    }
    optional {
        /// `O_*` flags.
        flags: i32 = 0,
        /// Mode for a created file.
        mode: u32 = 0,
        /// Install the file as a direct descriptor (kernel 5.15; not with `O_CLOEXEC`).
        direct: Option<DirectTarget> = None,
    }
}

impl OpenAt {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.dirfd;
        raw.addr_or_splice_off_in = addr(self.path);
        raw.op_flags = self.flags as u32;
        raw.len = self.mode;
        raw.splice_fd_in_or_file_index = encode_direct(self.direct);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            dirfd: r.fd(),
            path: r.addr_ptr()?,
            flags: r.op_flags() as i32,
            mode: r.len(),
            direct: r.direct()?,
        })
    }
}

op! {
    /// `IORING_OP_CLOSE`: close a file descriptor or (kernel 5.15) a registered-file slot.
    Close = abi::IORING_OP_CLOSE;
    required {
        /// What to close.
        target: CloseTarget,
    }
    optional {}
}

impl Close {
    /// Closes a process file descriptor.
    pub const fn fd(fd: i32) -> Self {
        Self::new(CloseTarget::Fd(fd))
    }

    /// Closes a registered-file slot.
    pub const fn fixed(slot: FixedSlot) -> Self {
        Self::new(CloseTarget::Fixed(slot))
    }

    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        match self.target {
            CloseTarget::Fd(fd) => raw.fd = fd,
            CloseTarget::Fixed(slot) => raw.splice_fd_in_or_file_index = slot.encoded(),
        }
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let file_index = r.file_index();
        let target = if file_index == 0 {
            CloseTarget::Fd(r.fd())
        } else {
            match FixedSlot::from_encoded(file_index) {
                Some(slot) => CloseTarget::Fixed(slot),
                None => return Err(r.invalid(SqeField::SpliceFdInOrFileIndex)),
            }
        };
        Ok(Self { target })
    }
}

op! {
    /// `IORING_OP_STATX`: `statx(2)`.
    Statx = abi::IORING_OP_STATX;
    required {
        /// Directory for a relative path (`AT_FDCWD` for the working directory).
        dirfd: i32,
        /// NUL-terminated path.
        path: *const libc::c_char,
        /// Where the result goes.
        statx: *mut libc::statx,
    }
    optional {
        /// `AT_*` flags.
        flags: i32 = 0,
        /// `STATX_*` mask of wanted fields.
        mask: u32 = 0,
    }
}

impl Statx {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.dirfd;
        raw.addr_or_splice_off_in = addr(self.path);
        raw.off_or_addr2 = addr(self.statx);
        raw.op_flags = self.flags as u32;
        raw.len = self.mask;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            dirfd: r.fd(),
            path: r.addr_ptr()?,
            statx: r.off_ptr_mut()?,
            flags: r.op_flags() as i32,
            mask: r.len(),
        })
    }
}

op! {
    /// `IORING_OP_READ`: `pread(2)`, or a read into a provided buffer.
    Read = abi::IORING_OP_READ;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Destination; null when `buf_group` selects the buffer.
        buf: *mut u8,
        /// Bytes to read (with `buf_group`: at most this many, 0 for the whole buffer).
        len: u32,
    }
    optional {
        /// File offset; `u64::MAX` (-1) uses and advances the file position.
        offset: u64 = 0,
        /// I/O priority (`ioprio_set(2)` encoding).
        ioprio: u16 = 0,
        /// `RWF_*` flags.
        rw_flags: i32 = 0,
        /// Provided-buffer group to read into (sets [`SqeFlags::BUFFER_SELECT`]).
        buf_group: Option<u16> = None,
    }
}

impl Read {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.buf);
        raw.len = self.len;
        raw.off_or_addr2 = self.offset;
        raw.ioprio = self.ioprio;
        raw.op_flags = self.rw_flags as u32;
        encode_buf_group(raw, self.buf_group);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            buf: r.addr_ptr_mut()?,
            len: r.len(),
            offset: r.off(),
            ioprio: r.ioprio(),
            rw_flags: r.op_flags() as i32,
            buf_group: r.buf_group(),
        })
    }
}

op! {
    /// `IORING_OP_WRITE`: `pwrite(2)`.
    Write = abi::IORING_OP_WRITE;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Source.
        buf: *const u8,
        /// Bytes to write.
        len: u32,
    }
    optional {
        /// File offset; `u64::MAX` (-1) uses and advances the file position.
        offset: u64 = 0,
        /// I/O priority (`ioprio_set(2)` encoding).
        ioprio: u16 = 0,
        /// `RWF_*` flags.
        rw_flags: i32 = 0,
    }
}

impl Write {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.buf);
        raw.len = self.len;
        raw.off_or_addr2 = self.offset;
        raw.ioprio = self.ioprio;
        raw.op_flags = self.rw_flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            buf: r.addr_ptr()?,
            len: r.len(),
            offset: r.off(),
            ioprio: r.ioprio(),
            rw_flags: r.op_flags() as i32,
        })
    }
}

op! {
    /// `IORING_OP_FADVISE`: `posix_fadvise(2)`.
    Fadvise = abi::IORING_OP_FADVISE;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Start of the range.
        offset: u64,
        /// Length of the range; 0 means to the end of the file.
        len: u32,
        /// `POSIX_FADV_*` advice.
        advice: i32,
    }
    optional {}
}

impl Fadvise {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.off_or_addr2 = self.offset;
        raw.len = self.len;
        raw.op_flags = self.advice as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            offset: r.off(),
            len: r.len(),
            advice: r.op_flags() as i32,
        })
    }
}

op! {
    /// `IORING_OP_SEND`: `send(2)`, optionally from provided buffers.
    Send = abi::IORING_OP_SEND;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Source; null when `buf_group` selects the buffer.
        buf: *const u8,
        /// Bytes to send (with `buf_group`: 0 for the whole buffer).
        len: u32,
    }
    optional {
        /// `MSG_*` flags.
        msg_flags: i32 = 0,
        /// Provided-buffer group to send from (sets [`SqeFlags::BUFFER_SELECT`];
        /// kernel 6.10, gate it on the probe).
        buf_group: Option<u16> = None,
    }
}

impl Send {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.buf);
        raw.len = self.len;
        raw.op_flags = self.msg_flags as u32;
        encode_buf_group(raw, self.buf_group);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            buf: r.addr_ptr()?,
            len: r.len(),
            msg_flags: r.op_flags() as i32,
            buf_group: r.buf_group(),
        })
    }
}

op! {
    /// `IORING_OP_RECV`: `recv(2)`, optionally into provided buffers and multishot.
    Recv = abi::IORING_OP_RECV;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Destination; null when `buf_group` selects the buffer.
        buf: *mut u8,
        /// Bytes to receive (with `buf_group`: at most this many, 0 for the whole
        /// buffer; keep 0 for multishot, which some kernels require).
        len: u32,
    }
    optional {
        /// `MSG_*` flags.
        msg_flags: i32 = 0,
        /// Provided-buffer group to receive into (sets [`SqeFlags::BUFFER_SELECT`]).
        buf_group: Option<u16> = None,
        /// `IORING_RECV_MULTISHOT` (kernel 6.0): keep receiving into provided
        /// buffers; requires `buf_group`.
        multishot: bool = false,
    }
}

impl Recv {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.buf);
        raw.len = self.len;
        raw.op_flags = self.msg_flags as u32;
        raw.ioprio = flag16_if(self.multishot, abi::IORING_RECV_MULTISHOT);
        encode_buf_group(raw, self.buf_group);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            buf: r.addr_ptr_mut()?,
            len: r.len(),
            msg_flags: r.op_flags() as i32,
            buf_group: r.buf_group(),
            multishot: r.ioprio_flag(abi::IORING_RECV_MULTISHOT)?,
        })
    }
}

// === kernel 5.7 ===

op! {
    /// `IORING_OP_SPLICE`: `splice(2)`. Both offsets are values, not pointers.
    Splice = abi::IORING_OP_SPLICE;
    required {
        /// Source file (a registered-file index with `SPLICE_F_FD_IN_FIXED` in `flags`).
        fd_in: i32,
        /// Offset in `fd_in`; -1 for a pipe or the file position.
        off_in: i64,
        /// Destination file, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd_out: i32,
        /// Offset in `fd_out`; -1 for a pipe or the file position.
        off_out: i64,
        /// Bytes to move.
        len: u32,
    }
    optional {
        /// `SPLICE_F_*` flags.
        flags: u32 = 0,
    }
}

impl Splice {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.splice_fd_in_or_file_index = self.fd_in as u32;
        raw.addr_or_splice_off_in = self.off_in as u64;
        raw.fd = self.fd_out;
        raw.off_or_addr2 = self.off_out as u64;
        raw.len = self.len;
        raw.op_flags = self.flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd_in: r.file_index() as i32,
            off_in: r.addr() as i64,
            fd_out: r.fd(),
            off_out: r.off() as i64,
            len: r.len(),
            flags: r.op_flags(),
        })
    }
}

op! {
    /// `IORING_OP_PROVIDE_BUFFERS`: hand `nbufs` buffers of `len` bytes, laid out
    /// back to back from `addr`, to buffer group `bgid` with ids from `bid`.
    ProvideBuffers = abi::IORING_OP_PROVIDE_BUFFERS;
    required {
        /// Start of the first buffer.
        addr: *mut u8,
        /// Length of each buffer.
        len: u32,
        /// Number of buffers.
        nbufs: u32,
        /// Buffer group id.
        bgid: u16,
        /// Id of the first buffer; the others follow.
        bid: u16,
    }
    optional {}
}

impl ProvideBuffers {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.addr_or_splice_off_in = addr(self.addr);
        raw.len = self.len;
        raw.fd = self.nbufs as i32;
        raw.buf_index_or_group = self.bgid;
        raw.off_or_addr2 = u64::from(self.bid);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let bid = r.off();
        let Ok(bid) = u16::try_from(bid) else {
            return Err(r.invalid(SqeField::OffOrAddr2));
        };
        Ok(Self {
            addr: r.addr_ptr_mut()?,
            len: r.len(),
            nbufs: r.fd() as u32,
            bgid: r.buf_index(),
            bid,
        })
    }
}

op! {
    /// `IORING_OP_REMOVE_BUFFERS`: take up to `nbufs` buffers back from group `bgid`.
    RemoveBuffers = abi::IORING_OP_REMOVE_BUFFERS;
    required {
        /// Most buffers to remove.
        nbufs: u32,
        /// Buffer group id.
        bgid: u16,
    }
    optional {}
}

impl RemoveBuffers {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.nbufs as i32;
        raw.buf_index_or_group = self.bgid;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            nbufs: r.fd() as u32,
            bgid: r.buf_index(),
        })
    }
}

// === kernel 5.8 ===

op! {
    /// `IORING_OP_TEE`: `tee(2)` between two pipes.
    Tee = abi::IORING_OP_TEE;
    required {
        /// Source pipe (a registered-file index with `SPLICE_F_FD_IN_FIXED` in `flags`).
        fd_in: i32,
        /// Destination pipe, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd_out: i32,
        /// Bytes to duplicate.
        len: u32,
    }
    optional {
        /// `SPLICE_F_*` flags.
        flags: u32 = 0,
    }
}

impl Tee {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.splice_fd_in_or_file_index = self.fd_in as u32;
        raw.fd = self.fd_out;
        raw.len = self.len;
        raw.op_flags = self.flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd_in: r.file_index() as i32,
            fd_out: r.fd(),
            len: r.len(),
            flags: r.op_flags(),
        })
    }
}

// === kernel 5.11 ===

op! {
    /// `IORING_OP_SHUTDOWN`: `shutdown(2)`.
    Shutdown = abi::IORING_OP_SHUTDOWN;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
        how: i32,
    }
    optional {}
}

impl Shutdown {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.len = self.how as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            how: r.len() as i32,
        })
    }
}

op! {
    /// `IORING_OP_RENAMEAT`: `renameat2(2)`.
    RenameAt = abi::IORING_OP_RENAMEAT;
    required {
        /// Directory for a relative `oldpath`.
        olddirfd: i32,
        /// NUL-terminated old path.
        oldpath: *const libc::c_char,
        /// Directory for a relative `newpath`.
        newdirfd: i32,
        /// NUL-terminated new path.
        newpath: *const libc::c_char,
    }
    optional {
        /// `RENAME_*` flags.
        flags: u32 = 0,
    }
}

impl RenameAt {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.olddirfd;
        raw.addr_or_splice_off_in = addr(self.oldpath);
        raw.len = self.newdirfd as u32;
        raw.off_or_addr2 = addr(self.newpath);
        raw.op_flags = self.flags;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            olddirfd: r.fd(),
            oldpath: r.addr_ptr()?,
            newdirfd: r.len() as i32,
            newpath: r.off_ptr()?,
            flags: r.op_flags(),
        })
    }
}

op! {
    /// `IORING_OP_UNLINKAT`: `unlinkat(2)`.
    UnlinkAt = abi::IORING_OP_UNLINKAT;
    required {
        /// Directory for a relative path.
        dirfd: i32,
        /// NUL-terminated path.
        path: *const libc::c_char,
    }
    optional {
        /// `AT_REMOVEDIR` or 0.
        flags: i32 = 0,
    }
}

impl UnlinkAt {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.dirfd;
        raw.addr_or_splice_off_in = addr(self.path);
        raw.op_flags = self.flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            dirfd: r.fd(),
            path: r.addr_ptr()?,
            flags: r.op_flags() as i32,
        })
    }
}

// === kernel 5.15 ===

op! {
    /// `IORING_OP_MKDIRAT`: `mkdirat(2)`.
    MkdirAt = abi::IORING_OP_MKDIRAT;
    required {
        /// Directory for a relative path.
        dirfd: i32,
        /// NUL-terminated path.
        path: *const libc::c_char,
        /// Mode of the new directory.
        mode: u32,
    }
    optional {}
}

impl MkdirAt {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.dirfd;
        raw.addr_or_splice_off_in = addr(self.path);
        raw.len = self.mode;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            dirfd: r.fd(),
            path: r.addr_ptr()?,
            mode: r.len(),
        })
    }
}

op! {
    /// `IORING_OP_SYMLINKAT`: `symlinkat(2)`.
    SymlinkAt = abi::IORING_OP_SYMLINKAT;
    required {
        /// Directory for a relative `linkpath`.
        newdirfd: i32,
        /// NUL-terminated contents of the link.
        target: *const libc::c_char,
        /// NUL-terminated path of the new link.
        linkpath: *const libc::c_char,
    }
    optional {}
}

impl SymlinkAt {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.newdirfd;
        raw.addr_or_splice_off_in = addr(self.target);
        raw.off_or_addr2 = addr(self.linkpath);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            newdirfd: r.fd(),
            target: r.addr_ptr()?,
            linkpath: r.off_ptr()?,
        })
    }
}

op! {
    /// `IORING_OP_LINKAT`: `linkat(2)`.
    LinkAt = abi::IORING_OP_LINKAT;
    required {
        /// Directory for a relative `oldpath`.
        olddirfd: i32,
        /// NUL-terminated existing path.
        oldpath: *const libc::c_char,
        /// Directory for a relative `newpath`.
        newdirfd: i32,
        /// NUL-terminated path of the new link.
        newpath: *const libc::c_char,
    }
    optional {
        /// `AT_*` flags.
        flags: i32 = 0,
    }
}

impl LinkAt {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.olddirfd;
        raw.addr_or_splice_off_in = addr(self.oldpath);
        raw.len = self.newdirfd as u32;
        raw.off_or_addr2 = addr(self.newpath);
        raw.op_flags = self.flags as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            olddirfd: r.fd(),
            oldpath: r.addr_ptr()?,
            newdirfd: r.len() as i32,
            newpath: r.off_ptr()?,
            flags: r.op_flags() as i32,
        })
    }
}

// === kernel 5.18 ===

op! {
    /// `IORING_OP_MSG_RING` with `IORING_MSG_DATA`: post a CQE with `res` and
    /// `user_data` on another ring.
    ///
    /// `IORING_MSG_RING_CQE_SKIP` is not offered: the kernel rejects it for data
    /// messages (a data message's only effect is the target CQE).
    MsgRingData = abi::IORING_OP_MSG_RING;
    required {
        /// The target ring's fd, or its registered-file index with [`SqeFlags::FIXED_FILE`].
        ring_fd: i32,
        /// `res` of the posted CQE.
        res: i32,
        /// `user_data` of the posted CQE.
        user_data: u64,
    }
    optional {
        /// `flags` of the posted CQE (`IORING_MSG_RING_FLAGS_PASS`, kernel 6.3);
        /// `None` posts 0.
        cqe_flags: Option<u32> = None,
    }
}

impl MsgRingData {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.ring_fd;
        raw.addr_or_splice_off_in = abi::IORING_MSG_DATA;
        raw.len = self.res as u32;
        raw.off_or_addr2 = self.user_data;
        if let Some(cqe_flags) = self.cqe_flags {
            raw.op_flags = abi::IORING_MSG_RING_FLAGS_PASS;
            raw.splice_fd_in_or_file_index = cqe_flags;
        }
    }
    /// The caller has read `addr` (the command).
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let cqe_flags = match r.op_flags() {
            0 => None,
            abi::IORING_MSG_RING_FLAGS_PASS => Some(r.file_index()),
            _ => return Err(r.invalid(SqeField::OpFlags)),
        };
        Ok(Self {
            ring_fd: r.fd(),
            res: r.len() as i32,
            user_data: r.off(),
            cqe_flags,
        })
    }
}

// === kernel 5.19 ===

op! {
    /// `IORING_OP_SOCKET`: `socket(2)`.
    Socket = abi::IORING_OP_SOCKET;
    required {
        /// `AF_*` domain.
        domain: i32,
        /// `SOCK_*` type, optionally or-ed with `SOCK_CLOEXEC` / `SOCK_NONBLOCK`.
        socket_type: i32,
        /// Protocol, usually 0.
        protocol: i32,
    }
    optional {
        /// Install the socket as a direct descriptor (not with `SOCK_CLOEXEC`).
        direct: Option<DirectTarget> = None,
    }
}

impl Socket {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.domain;
        raw.off_or_addr2 = u64::from(self.socket_type as u32);
        raw.len = self.protocol as u32;
        raw.splice_fd_in_or_file_index = encode_direct(self.direct);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            domain: r.fd(),
            socket_type: r.off_u32()? as i32,
            protocol: r.len() as i32,
            direct: r.direct()?,
        })
    }
}

// === kernel 6.0 ===

op! {
    /// `IORING_OP_MSG_RING` with `IORING_MSG_SEND_FD`: install one of this ring's
    /// registered files in another ring's file table.
    MsgRingSendFd = abi::IORING_OP_MSG_RING;
    required {
        /// The target ring's fd, or its registered-file index with [`SqeFlags::FIXED_FILE`].
        ring_fd: i32,
        /// Registered-file index of the file to send, in this ring.
        source_slot: u32,
        /// Where it goes in the target ring.
        target: DirectTarget,
        /// `user_data` of the CQE posted on the target ring.
        user_data: u64,
    }
    optional {
        /// `IORING_MSG_RING_CQE_SKIP` (kernel 6.2): post no CQE on the target ring.
        skip_cqe: bool = false,
    }
}

impl MsgRingSendFd {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.ring_fd;
        raw.addr_or_splice_off_in = abi::IORING_MSG_SEND_FD;
        raw.addr3 = u64::from(self.source_slot);
        raw.splice_fd_in_or_file_index = self.target.encoded();
        raw.off_or_addr2 = self.user_data;
        raw.op_flags = flag_if(self.skip_cqe, abi::IORING_MSG_RING_CQE_SKIP);
    }
    /// The caller has read `addr` (the command).
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let skip_cqe = match r.op_flags() {
            0 => false,
            abi::IORING_MSG_RING_CQE_SKIP => true,
            _ => return Err(r.invalid(SqeField::OpFlags)),
        };
        let Ok(source_slot) = u32::try_from(r.addr3()) else {
            return Err(r.invalid(SqeField::Addr3));
        };
        let Some(target) = DirectTarget::from_encoded(r.file_index()) else {
            return Err(r.invalid(SqeField::SpliceFdInOrFileIndex));
        };
        Ok(Self {
            ring_fd: r.fd(),
            source_slot,
            target,
            user_data: r.off(),
            skip_cqe,
        })
    }
}

op! {
    /// `IORING_OP_SEND_ZC`: zero-copy send; a second CQE (`IORING_CQE_F_NOTIF`)
    /// says when the buffer may be reused.
    SendZc = abi::IORING_OP_SEND_ZC;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Source.
        buf: *const u8,
        /// Bytes to send.
        len: u32,
    }
    optional {
        /// `MSG_*` flags.
        msg_flags: i32 = 0,
        /// Registered buffer holding `buf` (`IORING_RECVSEND_FIXED_BUF`).
        buf_index: Option<u16> = None,
        /// Destination address for an unconnected socket, or null.
        dest_addr: *const libc::sockaddr = ptr::null(),
        /// Length of `dest_addr`.
        dest_addr_len: u16 = 0,
        /// `IORING_SEND_ZC_REPORT_USAGE` (kernel 6.2): the notification says
        /// whether the data was copied after all.
        report_usage: bool = false,
    }
}

impl SendZc {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.buf);
        raw.len = self.len;
        raw.op_flags = self.msg_flags as u32;
        raw.ioprio = flag16_if(self.buf_index.is_some(), abi::IORING_RECVSEND_FIXED_BUF)
            | flag16_if(self.report_usage, abi::IORING_SEND_ZC_REPORT_USAGE);
        if let Some(index) = self.buf_index {
            raw.buf_index_or_group = index;
        }
        raw.off_or_addr2 = addr(self.dest_addr);
        raw.splice_fd_in_or_file_index = addr_len_word(self.dest_addr_len);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let zc_flags = r.ioprio();
        if zc_flags & !(abi::IORING_RECVSEND_FIXED_BUF | abi::IORING_SEND_ZC_REPORT_USAGE) != 0 {
            return Err(r.invalid(SqeField::Ioprio));
        }
        let buf_index = if zc_flags & abi::IORING_RECVSEND_FIXED_BUF != 0 {
            Some(r.buf_index())
        } else {
            None
        };
        let (dest_addr_len, pad) = split_addr_len_word(r.file_index());
        if pad != 0 {
            return Err(r.invalid(SqeField::SpliceFdInOrFileIndex));
        }
        Ok(Self {
            fd: r.fd(),
            buf: r.addr_ptr()?,
            len: r.len(),
            msg_flags: r.op_flags() as i32,
            buf_index,
            dest_addr: r.off_ptr()?,
            dest_addr_len,
            report_usage: zc_flags & abi::IORING_SEND_ZC_REPORT_USAGE != 0,
        })
    }
}

// === kernel 6.7 ===

op! {
    /// `IORING_OP_READ_MULTISHOT`: read into provided buffers, one CQE per buffer
    /// filled, for as long as the (pollable) file has data.
    ///
    /// Sets [`SqeFlags::BUFFER_SELECT`]; address and length are zero (the buffer
    /// decides the size).
    ReadMulti = abi::IORING_OP_READ_MULTISHOT;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Provided-buffer group to read into.
        buf_group: u16,
    }
    optional {
        /// File offset; `u64::MAX` (-1) uses and advances the file position.
        offset: u64 = 0,
    }
}

impl ReadMulti {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.off_or_addr2 = self.offset;
        encode_buf_group(raw, Some(self.buf_group));
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let Some(buf_group) = r.buf_group() else {
            return Err(r.invalid(SqeField::Flags));
        };
        Ok(Self {
            fd: r.fd(),
            buf_group,
            offset: r.off(),
        })
    }
}

// === kernel 6.9 ===

op! {
    /// `IORING_OP_FTRUNCATE`: `ftruncate(2)`.
    Ftruncate = abi::IORING_OP_FTRUNCATE;
    required {
        /// File descriptor, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// New length.
        len: u64,
    }
    optional {}
}

impl Ftruncate {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.off_or_addr2 = self.len;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            len: r.off(),
        })
    }
}

// === kernel 6.11 ===

op! {
    /// `IORING_OP_BIND`: `bind(2)`.
    Bind = abi::IORING_OP_BIND;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Local address.
        addr: *const libc::sockaddr,
        /// Length of `addr` (a value, not a pointer).
        addrlen: libc::socklen_t,
    }
    optional {}
}

impl Bind {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.addr_or_splice_off_in = addr(self.addr);
        raw.off_or_addr2 = u64::from(self.addrlen);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            addr: r.addr_ptr()?,
            addrlen: r.off_u32()?,
        })
    }
}

op! {
    /// `IORING_OP_LISTEN`: `listen(2)`.
    Listen = abi::IORING_OP_LISTEN;
    required {
        /// Socket, or a registered-file index with [`SqeFlags::FIXED_FILE`].
        fd: i32,
        /// Backlog.
        backlog: i32,
    }
    optional {}
}

impl Listen {
    fn encode(&self, raw: &mut abi::io_uring_sqe) {
        raw.fd = self.fd;
        raw.len = self.backlog as u32;
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            fd: r.fd(),
            backlog: r.len() as i32,
        })
    }
}

// === the typed op ===

/// Declares [`Op`] with one variant per encoder type.
macro_rules! ops {
    ($($name:ident),* $(,)?) => {
        /// A decoded entry: one variant per encoder type, holding that type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Op {
            $(
                #[doc = concat!("See [`", stringify!($name), "`].")]
                $name($name),
            )*
        }

        impl Op {
            /// Encodes the op, exactly as the variant's own `build` does.
            #[must_use]
            pub fn build(&self) -> Sqe {
                match *self {
                    $( Op::$name(op) => op.build(), )*
                }
            }

            /// The opcode (`IORING_OP_*`) of the variant.
            pub const fn opcode(&self) -> u8 {
                match self {
                    $( Op::$name(_) => $name::CODE, )*
                }
            }

            /// The variant's type name, e.g. `"MsgRingData"`.
            pub const fn name(&self) -> &'static str {
                match self {
                    $( Op::$name(_) => stringify!($name), )*
                }
            }
        }

        /// Number of [`Op`] variants (encoder types).
        pub const OP_KINDS: usize = [$(stringify!($name)),*].len();
    };
}

ops! {
    Nop, Readv, Writev, Fsync, ReadFixed, WriteFixed, PollAdd, PollRemove,
    SyncFileRange,
    SendMsg, RecvMsg,
    Timeout,
    TimeoutRemove, Accept, AsyncCancel, LinkTimeout, Connect,
    Fallocate, OpenAt, Close, Statx, Read, Write, Fadvise, Send, Recv,
    Splice, ProvideBuffers, RemoveBuffers,
    Tee,
    Shutdown, RenameAt, UnlinkAt,
    MkdirAt, SymlinkAt, LinkAt,
    MsgRingData,
    Socket,
    MsgRingSendFd, SendZc,
    ReadMulti,
    Ftruncate,
    Bind, Listen,
}

// === decoding ===

/// A field of [`abi::io_uring_sqe`] that an op may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqeField {
    /// `flags` (the `IOSQE_*` byte).
    Flags,
    /// `ioprio`.
    Ioprio,
    /// `fd`.
    Fd,
    /// `off_or_addr2`.
    OffOrAddr2,
    /// `addr_or_splice_off_in`.
    AddrOrSpliceOffIn,
    /// `len`.
    Len,
    /// `op_flags`.
    OpFlags,
    /// `buf_index_or_group`.
    BufIndexOrGroup,
    /// `splice_fd_in_or_file_index`.
    SpliceFdInOrFileIndex,
    /// `addr3`.
    Addr3,
    /// `pad2`.
    Pad2,
}

impl SqeField {
    /// The field's name in [`abi::io_uring_sqe`].
    pub const fn name(self) -> &'static str {
        match self {
            SqeField::Flags => "flags",
            SqeField::Ioprio => "ioprio",
            SqeField::Fd => "fd",
            SqeField::OffOrAddr2 => "off_or_addr2",
            SqeField::AddrOrSpliceOffIn => "addr_or_splice_off_in",
            SqeField::Len => "len",
            SqeField::OpFlags => "op_flags",
            SqeField::BufIndexOrGroup => "buf_index_or_group",
            SqeField::SpliceFdInOrFileIndex => "splice_fd_in_or_file_index",
            SqeField::Addr3 => "addr3",
            SqeField::Pad2 => "pad2",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for SqeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why [`decode`] refused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// The opcode has no encoder here.
    UnsupportedOpcode(u8),
    /// A field the opcode does not use is nonzero.
    UnusedFieldSet {
        /// The entry's opcode.
        opcode: u8,
        /// The offending field.
        field: SqeField,
    },
    /// A field holds a value no encoder produces: an unknown flag bit, an
    /// out-of-range number, an unknown `MSG_RING` command, a pointer wider
    /// than this machine's.
    InvalidValue {
        /// The entry's opcode.
        opcode: u8,
        /// The offending field.
        field: SqeField,
    },
}

impl DecodeError {
    /// The field at fault, if the error is about one.
    pub const fn field(&self) -> Option<SqeField> {
        match *self {
            DecodeError::UnsupportedOpcode(_) => None,
            DecodeError::UnusedFieldSet { field, .. } | DecodeError::InvalidValue { field, .. } => {
                Some(field)
            }
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::UnsupportedOpcode(opcode) => write!(f, "SQE opcode {opcode} is not supported"),
            DecodeError::UnusedFieldSet { opcode, field } => {
                write!(f, "SQE opcode {opcode} does not use `{field}`, but it is nonzero")
            }
            DecodeError::InvalidValue { opcode, field } => {
                write!(
                    f,
                    "SQE opcode {opcode}: `{field}` holds a value no encoder produces"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes an entry into the op that encodes to it.
///
/// Succeeds exactly when some encoder value `x` has `x.build()` equal to `sqe`
/// up to the bytes every opcode carries: `user_data`, `personality`, and SQE
/// flags other than a [`SqeFlags::BUFFER_SELECT`] that the op owns. Never panics.
///
/// # Errors
///
/// [`DecodeError::UnsupportedOpcode`] for an opcode without an encoder here;
/// [`DecodeError::UnusedFieldSet`] when a byte the opcode does not use is
/// nonzero; [`DecodeError::InvalidValue`] when a used field holds a value no
/// encoder produces.
///
/// # Example
///
/// ```
/// use spargio_sys::sqe::{self, DecodeError, Op, SqeField, Timeout};
/// use spargio_sys::abi::kernel_timespec;
///
/// let ts = kernel_timespec { tv_sec: 1, tv_nsec: 0 };
/// let op = Timeout::new(&ts).count(3);
/// assert_eq!(sqe::decode(&op.build()), Ok(Op::Timeout(op)));
///
/// let mut raw = *op.build().as_raw();
/// raw.pad2 = 1;
/// let err = sqe::decode(&spargio_sys::Sqe::from_raw(raw)).unwrap_err();
/// assert_eq!(err.field(), Some(SqeField::Pad2));
/// ```
pub fn decode(sqe: &Sqe) -> Result<Op, DecodeError> {
    let mut r = Reader::new(sqe);
    let op = match sqe.0.opcode {
        abi::IORING_OP_NOP => Op::Nop(Nop::decode(&mut r)?),
        abi::IORING_OP_READV => Op::Readv(Readv::decode(&mut r)?),
        abi::IORING_OP_WRITEV => Op::Writev(Writev::decode(&mut r)?),
        abi::IORING_OP_FSYNC => Op::Fsync(Fsync::decode(&mut r)?),
        abi::IORING_OP_READ_FIXED => Op::ReadFixed(ReadFixed::decode(&mut r)?),
        abi::IORING_OP_WRITE_FIXED => Op::WriteFixed(WriteFixed::decode(&mut r)?),
        abi::IORING_OP_POLL_ADD => Op::PollAdd(PollAdd::decode(&mut r)?),
        abi::IORING_OP_POLL_REMOVE => Op::PollRemove(PollRemove::decode(&mut r)?),
        abi::IORING_OP_SYNC_FILE_RANGE => Op::SyncFileRange(SyncFileRange::decode(&mut r)?),
        abi::IORING_OP_SENDMSG => Op::SendMsg(SendMsg::decode(&mut r)?),
        abi::IORING_OP_RECVMSG => Op::RecvMsg(RecvMsg::decode(&mut r)?),
        abi::IORING_OP_TIMEOUT => Op::Timeout(Timeout::decode(&mut r)?),
        abi::IORING_OP_TIMEOUT_REMOVE => Op::TimeoutRemove(TimeoutRemove::decode(&mut r)?),
        abi::IORING_OP_ACCEPT => Op::Accept(Accept::decode(&mut r)?),
        abi::IORING_OP_ASYNC_CANCEL => Op::AsyncCancel(AsyncCancel::decode(&mut r)?),
        abi::IORING_OP_LINK_TIMEOUT => Op::LinkTimeout(LinkTimeout::decode(&mut r)?),
        abi::IORING_OP_CONNECT => Op::Connect(Connect::decode(&mut r)?),
        abi::IORING_OP_FALLOCATE => Op::Fallocate(Fallocate::decode(&mut r)?),
        abi::IORING_OP_OPENAT => Op::OpenAt(OpenAt::decode(&mut r)?),
        abi::IORING_OP_CLOSE => Op::Close(Close::decode(&mut r)?),
        abi::IORING_OP_STATX => Op::Statx(Statx::decode(&mut r)?),
        abi::IORING_OP_READ => Op::Read(Read::decode(&mut r)?),
        abi::IORING_OP_WRITE => Op::Write(Write::decode(&mut r)?),
        abi::IORING_OP_FADVISE => Op::Fadvise(Fadvise::decode(&mut r)?),
        abi::IORING_OP_SEND => Op::Send(Send::decode(&mut r)?),
        abi::IORING_OP_RECV => Op::Recv(Recv::decode(&mut r)?),
        abi::IORING_OP_SPLICE => Op::Splice(Splice::decode(&mut r)?),
        abi::IORING_OP_PROVIDE_BUFFERS => Op::ProvideBuffers(ProvideBuffers::decode(&mut r)?),
        abi::IORING_OP_REMOVE_BUFFERS => Op::RemoveBuffers(RemoveBuffers::decode(&mut r)?),
        abi::IORING_OP_TEE => Op::Tee(Tee::decode(&mut r)?),
        abi::IORING_OP_SHUTDOWN => Op::Shutdown(Shutdown::decode(&mut r)?),
        abi::IORING_OP_RENAMEAT => Op::RenameAt(RenameAt::decode(&mut r)?),
        abi::IORING_OP_UNLINKAT => Op::UnlinkAt(UnlinkAt::decode(&mut r)?),
        abi::IORING_OP_MKDIRAT => Op::MkdirAt(MkdirAt::decode(&mut r)?),
        abi::IORING_OP_SYMLINKAT => Op::SymlinkAt(SymlinkAt::decode(&mut r)?),
        abi::IORING_OP_LINKAT => Op::LinkAt(LinkAt::decode(&mut r)?),
        abi::IORING_OP_MSG_RING => match r.addr() {
            abi::IORING_MSG_DATA => Op::MsgRingData(MsgRingData::decode(&mut r)?),
            abi::IORING_MSG_SEND_FD => Op::MsgRingSendFd(MsgRingSendFd::decode(&mut r)?),
            _ => return Err(r.invalid(SqeField::AddrOrSpliceOffIn)),
        },
        abi::IORING_OP_SOCKET => Op::Socket(Socket::decode(&mut r)?),
        abi::IORING_OP_SEND_ZC => Op::SendZc(SendZc::decode(&mut r)?),
        abi::IORING_OP_READ_MULTISHOT => Op::ReadMulti(ReadMulti::decode(&mut r)?),
        abi::IORING_OP_FTRUNCATE => Op::Ftruncate(Ftruncate::decode(&mut r)?),
        abi::IORING_OP_BIND => Op::Bind(Bind::decode(&mut r)?),
        abi::IORING_OP_LISTEN => Op::Listen(Listen::decode(&mut r)?),
        other => return Err(DecodeError::UnsupportedOpcode(other)),
    };
    r.finish()?;
    Ok(op)
}

/// Reads the fields of an entry, remembering which ones the op used so that
/// [`Reader::finish`] can insist every other one is zero.
struct Reader {
    raw: abi::io_uring_sqe,
    used: u16,
}

impl Reader {
    fn new(sqe: &Sqe) -> Self {
        Self { raw: sqe.0, used: 0 }
    }

    fn mark(&mut self, field: SqeField) {
        self.used |= field.bit();
    }

    fn invalid(&self, field: SqeField) -> DecodeError {
        DecodeError::InvalidValue {
            opcode: self.raw.opcode,
            field,
        }
    }

    fn ioprio(&mut self) -> u16 {
        self.mark(SqeField::Ioprio);
        self.raw.ioprio
    }

    fn fd(&mut self) -> i32 {
        self.mark(SqeField::Fd);
        self.raw.fd
    }

    fn off(&mut self) -> u64 {
        self.mark(SqeField::OffOrAddr2);
        self.raw.off_or_addr2
    }

    fn addr(&mut self) -> u64 {
        self.mark(SqeField::AddrOrSpliceOffIn);
        self.raw.addr_or_splice_off_in
    }

    fn len(&mut self) -> u32 {
        self.mark(SqeField::Len);
        self.raw.len
    }

    fn op_flags(&mut self) -> u32 {
        self.mark(SqeField::OpFlags);
        self.raw.op_flags
    }

    fn buf_index(&mut self) -> u16 {
        self.mark(SqeField::BufIndexOrGroup);
        self.raw.buf_index_or_group
    }

    fn file_index(&mut self) -> u32 {
        self.mark(SqeField::SpliceFdInOrFileIndex);
        self.raw.splice_fd_in_or_file_index
    }

    fn addr3(&mut self) -> u64 {
        self.mark(SqeField::Addr3);
        self.raw.addr3
    }

    /// A pointer-sized value, or an error on a machine whose pointers are narrower.
    fn pointer(&self, field: SqeField, value: u64) -> Result<usize, DecodeError> {
        usize::try_from(value).map_err(|_| self.invalid(field))
    }

    fn addr_ptr<T>(&mut self) -> Result<*const T, DecodeError> {
        let value = self.addr();
        self.pointer(SqeField::AddrOrSpliceOffIn, value)
            .map(ptr::without_provenance)
    }

    fn addr_ptr_mut<T>(&mut self) -> Result<*mut T, DecodeError> {
        let value = self.addr();
        self.pointer(SqeField::AddrOrSpliceOffIn, value)
            .map(ptr::without_provenance_mut)
    }

    fn off_ptr<T>(&mut self) -> Result<*const T, DecodeError> {
        let value = self.off();
        self.pointer(SqeField::OffOrAddr2, value)
            .map(ptr::without_provenance)
    }

    fn off_ptr_mut<T>(&mut self) -> Result<*mut T, DecodeError> {
        let value = self.off();
        self.pointer(SqeField::OffOrAddr2, value)
            .map(ptr::without_provenance_mut)
    }

    /// `off_or_addr2` where the kernel reads only 32 bits.
    fn off_u32(&mut self) -> Result<u32, DecodeError> {
        let value = self.off();
        u32::try_from(value).map_err(|_| self.invalid(SqeField::OffOrAddr2))
    }

    /// `ioprio` as a word holding only `flag`: whether it is set.
    fn ioprio_flag(&mut self, flag: u16) -> Result<bool, DecodeError> {
        match self.ioprio() {
            0 => Ok(false),
            bits if bits == flag => Ok(true),
            _ => Err(self.invalid(SqeField::Ioprio)),
        }
    }

    /// The buffer group, when `IOSQE_BUFFER_SELECT` is set.
    fn buf_group(&mut self) -> Option<u16> {
        if self.raw.flags & abi::IOSQE_BUFFER_SELECT != 0 {
            Some(self.buf_index())
        } else {
            None
        }
    }

    /// `file_index` as an optional direct-descriptor target.
    fn direct(&mut self) -> Result<Option<DirectTarget>, DecodeError> {
        match self.file_index() {
            0 => Ok(None),
            n => match DirectTarget::from_encoded(n) {
                Some(target) => Ok(Some(target)),
                None => Err(self.invalid(SqeField::SpliceFdInOrFileIndex)),
            },
        }
    }

    /// Fails on the first field the op did not use that is nonzero.
    fn finish(&self) -> Result<(), DecodeError> {
        let s = &self.raw;
        let fields = [
            (SqeField::Ioprio, s.ioprio != 0),
            (SqeField::Fd, s.fd != 0),
            (SqeField::OffOrAddr2, s.off_or_addr2 != 0),
            (SqeField::AddrOrSpliceOffIn, s.addr_or_splice_off_in != 0),
            (SqeField::Len, s.len != 0),
            (SqeField::OpFlags, s.op_flags != 0),
            (SqeField::BufIndexOrGroup, s.buf_index_or_group != 0),
            (SqeField::SpliceFdInOrFileIndex, s.splice_fd_in_or_file_index != 0),
            (SqeField::Addr3, s.addr3 != 0),
            (SqeField::Pad2, s.pad2 != 0),
        ];
        for (field, nonzero) in fields {
            if nonzero && self.used & field.bit() == 0 {
                return Err(DecodeError::UnusedFieldSet {
                    opcode: s.opcode,
                    field,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr_ptr<T>(addr: usize) -> *const T {
        ptr::without_provenance(addr)
    }

    fn addr_ptr_mut<T>(addr: usize) -> *mut T {
        ptr::without_provenance_mut(addr)
    }

    #[test]
    fn nop_is_all_zero_and_matches_sqe_nop() {
        assert_eq!(Nop::new().build(), Sqe::nop());
        assert_eq!(Sqe::nop().to_bytes(), [0u8; SQE_SIZE]);
        assert_eq!(decode(&Sqe::nop()), Ok(Op::Nop(Nop::new())));
    }

    #[test]
    fn msg_ring_data_layout() {
        let raw = *MsgRingData::new(7, -3, 0xdead_beef_0000_0001)
            .build()
            .user_data(9)
            .as_raw();
        assert_eq!(raw.opcode, abi::IORING_OP_MSG_RING);
        assert_eq!(raw.fd, 7);
        assert_eq!(raw.addr_or_splice_off_in, abi::IORING_MSG_DATA);
        assert_eq!(raw.len, (-3i32) as u32);
        assert_eq!(raw.off_or_addr2, 0xdead_beef_0000_0001);
        assert_eq!(raw.op_flags, 0);
        assert_eq!(raw.splice_fd_in_or_file_index, 0);
        assert_eq!(raw.user_data, 9);

        let raw = *MsgRingData::new(7, 1, 2)
            .cqe_flags(Some(0x8000_0001))
            .build()
            .as_raw();
        assert_eq!(raw.op_flags, abi::IORING_MSG_RING_FLAGS_PASS);
        assert_eq!(raw.splice_fd_in_or_file_index, 0x8000_0001);
    }

    #[test]
    fn msg_ring_send_fd_layout() {
        let slot = DirectTarget::Slot(FixedSlot::new(4).unwrap());
        let raw = *MsgRingSendFd::new(5, 11, slot, 77)
            .skip_cqe(true)
            .build()
            .as_raw();
        assert_eq!(raw.fd, 5);
        assert_eq!(raw.addr_or_splice_off_in, abi::IORING_MSG_SEND_FD);
        assert_eq!(raw.addr3, 11);
        assert_eq!(
            raw.splice_fd_in_or_file_index, 5,
            "target slot is encoded as index + 1"
        );
        assert_eq!(raw.off_or_addr2, 77);
        assert_eq!(raw.op_flags, abi::IORING_MSG_RING_CQE_SKIP);
        assert_eq!(raw.len, 0);

        let alloc = MsgRingSendFd::new(5, 0, DirectTarget::Alloc, 0).build();
        assert_eq!(
            alloc.as_raw().splice_fd_in_or_file_index,
            abi::IORING_FILE_INDEX_ALLOC
        );
    }

    #[test]
    fn close_fixed_slot_is_index_plus_one_with_zero_fd() {
        let raw = *Close::fixed(FixedSlot::new(0).unwrap()).build().as_raw();
        assert_eq!((raw.fd, raw.splice_fd_in_or_file_index), (0, 1));
        let raw = *Close::fd(9).build().as_raw();
        assert_eq!((raw.fd, raw.splice_fd_in_or_file_index), (9, 0));
        assert_eq!(FixedSlot::new(FixedSlot::MAX + 1), None);
    }

    #[test]
    fn send_zc_addr_len_sits_in_bytes_44_and_45() {
        let sqe = SendZc::new(3, addr_ptr(0x1000), 10)
            .dest_addr(addr_ptr(0x2000))
            .dest_addr_len(0x1234)
            .buf_index(Some(6))
            .build();
        let bytes = sqe.to_bytes();
        assert_eq!(bytes[44..46], 0x1234u16.to_ne_bytes());
        assert_eq!(bytes[46..48], [0, 0]);
        assert_eq!(sqe.as_raw().off_or_addr2, 0x2000);
        assert_eq!(sqe.as_raw().ioprio, abi::IORING_RECVSEND_FIXED_BUF);
        assert_eq!(sqe.as_raw().buf_index_or_group, 6);
    }

    #[test]
    fn fallocate_puts_length_in_addr_and_mode_in_len() {
        let raw = *Fallocate::new(4, 1 << 40).offset(512).mode(3).build().as_raw();
        assert_eq!(raw.addr_or_splice_off_in, 1 << 40);
        assert_eq!(raw.off_or_addr2, 512);
        assert_eq!(raw.len, 3);
    }

    #[test]
    fn timeout_layout() {
        let raw = *Timeout::new(addr_ptr(0x40))
            .count(5)
            .flags(abi::IORING_TIMEOUT_ABS)
            .build()
            .as_raw();
        assert_eq!(raw.addr_or_splice_off_in, 0x40);
        assert_eq!(raw.len, 1);
        assert_eq!(raw.off_or_addr2, 5);
        assert_eq!(raw.op_flags, abi::IORING_TIMEOUT_ABS);
    }

    #[test]
    fn accept_and_recv_multishot_live_in_ioprio() {
        let raw = *Accept::new(3, ptr::null_mut(), ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .multishot(true)
            .build()
            .as_raw();
        assert_eq!(raw.ioprio, abi::IORING_ACCEPT_MULTISHOT);
        assert_eq!(raw.op_flags, libc::SOCK_CLOEXEC as u32);

        let raw = *Recv::new(3, ptr::null_mut(), 0)
            .buf_group(Some(9))
            .multishot(true)
            .build()
            .as_raw();
        assert_eq!(raw.ioprio, abi::IORING_RECV_MULTISHOT);
        assert_eq!(raw.flags, abi::IOSQE_BUFFER_SELECT);
        assert_eq!(raw.buf_index_or_group, 9);
    }

    #[test]
    fn poll_add_events_and_multishot() {
        let raw = *PollAdd::new(3, libc::POLLIN as u32)
            .multishot(true)
            .build()
            .as_raw();
        assert_eq!(raw.len, abi::IORING_POLL_ADD_MULTI);
        if cfg!(target_endian = "little") {
            assert_eq!(raw.op_flags, libc::POLLIN as u32);
        }
    }

    #[test]
    fn cancel_keys() {
        let by_data = *AsyncCancel::new(CancelKey::UserData(42)).build().as_raw();
        assert_eq!((by_data.addr_or_splice_off_in, by_data.op_flags), (42, 0));
        let by_fd = *AsyncCancel::new(CancelKey::Fd { fd: 8, fixed: false })
            .all(true)
            .build()
            .as_raw();
        assert_eq!(by_fd.fd, 8);
        assert_eq!(
            by_fd.op_flags,
            abi::IORING_ASYNC_CANCEL_FD | abi::IORING_ASYNC_CANCEL_ALL
        );
        let any = *AsyncCancel::new(CancelKey::Any).build().as_raw();
        assert_eq!(any.op_flags, abi::IORING_ASYNC_CANCEL_ANY);
    }

    #[test]
    fn splice_offsets_are_values() {
        let raw = *Splice::new(3, -1, 4, 100, 64)
            .flags(abi::SPLICE_F_FD_IN_FIXED)
            .build()
            .as_raw();
        assert_eq!(raw.splice_fd_in_or_file_index, 3);
        assert_eq!(raw.addr_or_splice_off_in, u64::MAX);
        assert_eq!(raw.fd, 4);
        assert_eq!(raw.off_or_addr2, 100);
        assert!(!Sqe(raw).references_user_memory());
    }

    #[test]
    fn provide_buffers_layout() {
        let raw = *ProvideBuffers::new(addr_ptr_mut(0x10_0000), 4096, 8, 3, 100)
            .build()
            .as_raw();
        assert_eq!(raw.fd, 8);
        assert_eq!(raw.addr_or_splice_off_in, 0x10_0000);
        assert_eq!(raw.len, 4096);
        assert_eq!(raw.buf_index_or_group, 3);
        assert_eq!(raw.off_or_addr2, 100);
    }

    #[test]
    fn flags_are_or_ed_in() {
        let sqe = Read::new(0, ptr::null_mut(), 0)
            .buf_group(Some(1))
            .build()
            .flags(SqeFlags::LINK);
        assert_eq!(sqe.sqe_flags(), SqeFlags::LINK | SqeFlags::BUFFER_SELECT);
        assert_eq!(SqeFlags::from_bits(0x80), None);
        assert_eq!(format!("{:?}", SqeFlags::empty()), "SqeFlags(empty)");
        assert_eq!(
            format!("{:?}", SqeFlags::from_bits_retain(0x81)),
            "SqeFlags(FIXED_FILE | 0x80)"
        );
    }

    #[test]
    fn decode_names_the_offending_field() {
        let mut raw = *Nop::new().build().as_raw();
        raw.len = 1;
        assert_eq!(
            decode(&Sqe(raw)),
            Err(DecodeError::UnusedFieldSet {
                opcode: abi::IORING_OP_NOP,
                field: SqeField::Len
            })
        );

        let mut raw = *LinkTimeout::new(ptr::null()).build().as_raw();
        raw.len = 2;
        assert_eq!(decode(&Sqe(raw)).unwrap_err().field(), Some(SqeField::Len));

        let mut raw = *MsgRingData::new(1, 2, 3).build().as_raw();
        raw.addr_or_splice_off_in = 7;
        assert_eq!(
            decode(&Sqe(raw)).unwrap_err().field(),
            Some(SqeField::AddrOrSpliceOffIn)
        );

        let mut raw = *MsgRingData::new(1, 2, 3).build().as_raw();
        raw.op_flags = abi::IORING_MSG_RING_CQE_SKIP;
        assert_eq!(decode(&Sqe(raw)).unwrap_err().field(), Some(SqeField::OpFlags));

        let mut raw = *ReadMulti::new(1, 2).build().as_raw();
        raw.flags = 0;
        assert_eq!(decode(&Sqe(raw)).unwrap_err().field(), Some(SqeField::Flags));

        let raw = abi::io_uring_sqe {
            opcode: abi::IORING_OP_URING_CMD,
            ..zeroed()
        };
        assert_eq!(
            decode(&Sqe(raw)),
            Err(DecodeError::UnsupportedOpcode(abi::IORING_OP_URING_CMD))
        );
        assert!(!decode(&Sqe(raw)).unwrap_err().to_string().is_empty());
    }

    #[test]
    fn bytes_round_trip() {
        let sqe = Statx::new(-100, addr_ptr(0x1111), addr_ptr_mut(0x2222))
            .mask(0x7ff)
            .build()
            .personality(3)
            .user_data(u64::MAX);
        assert_eq!(Sqe::from_bytes(&sqe.to_bytes()), sqe);
    }

    #[test]
    fn memory_classification() {
        let no_memory = [
            Nop::new().build(),
            MsgRingData::new(1, 2, 3).build(),
            MsgRingSendFd::new(1, 2, DirectTarget::Alloc, 3).build(),
            Fsync::new(1).build(),
            PollAdd::new(1, 1).build(),
            PollRemove::new(1).build(),
            AsyncCancel::new(CancelKey::UserData(1)).build(),
            Close::fd(1).build(),
            Fallocate::new(1, 2).build(),
            Ftruncate::new(1, 2).build(),
            Shutdown::new(1, 2).build(),
            Socket::new(2, 1, 0).build(),
            SyncFileRange::new(1).build(),
            Fadvise::new(1, 0, 0, 0).build(),
            Tee::new(1, 2, 3).build(),
            Splice::new(1, 2, 3, 4, 5).build(),
            TimeoutRemove::new(1).build(),
            Listen::new(1, 128).build(),
            Read::new(1, ptr::null_mut(), 0).buf_group(Some(0)).build(),
            Recv::new(1, ptr::null_mut(), 0).buf_group(Some(0)).build(),
            ReadMulti::new(1, 0).build(),
        ];
        for sqe in no_memory {
            assert!(!sqe.references_user_memory(), "{:?}", decode(&sqe));
        }
        let memory = [
            Read::new(1, ptr::null_mut(), 0).build(),
            Read::new(1, addr_ptr_mut(8), 0).buf_group(Some(0)).build(),
            Recv::new(1, addr_ptr_mut(8), 1).build(),
            TimeoutRemove::new(1).flags(abi::IORING_TIMEOUT_UPDATE).build(),
            TimeoutRemove::new(1)
                .flags(abi::IORING_LINK_TIMEOUT_UPDATE)
                .build(),
            Timeout::new(ptr::null()).build(),
            Accept::new(1, ptr::null_mut(), ptr::null_mut()).build(),
            ProvideBuffers::new(addr_ptr_mut(8), 1, 1, 1, 1).build(),
            Write::new(1, ptr::null(), 0).build(),
            Sqe(abi::io_uring_sqe {
                opcode: abi::IORING_OP_URING_CMD,
                ..zeroed()
            }),
        ];
        for sqe in memory {
            assert!(sqe.references_user_memory(), "{:?}", decode(&sqe));
        }
    }

    #[test]
    fn op_kinds_counts_every_variant() {
        assert_eq!(OP_KINDS, 44);
    }
}
