//! Safe, pure SQE encoders and a decoder back to a typed op.

use crate::abi;

/// One submission queue entry: plain data. Building one is safe; handing one that
/// points at memory to the kernel is the unsafe step (see [`crate::ring::Ring::push`]).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sqe(pub(crate) abi::io_uring_sqe);

impl Sqe {
    /// The kernel layout of this entry.
    pub const fn as_raw(&self) -> &abi::io_uring_sqe {
        &self.0
    }
    /// Wraps a raw kernel entry (e.g. one read back from a ring).
    pub const fn from_raw(raw: abi::io_uring_sqe) -> Self {
        Sqe(raw)
    }
    /// Sets `user_data`.
    pub const fn user_data(mut self, user_data: u64) -> Self {
        self.0.user_data = user_data;
        self
    }
    /// A no-op.
    pub const fn nop() -> Self {
        let mut raw = abi::io_uring_sqe { opcode: abi::IORING_OP_NOP, ..zeroed() };
        raw.fd = -1;
        Sqe(raw)
    }
    /// True unless this entry is known to carry no pointer into user memory.
    pub fn references_user_memory(&self) -> bool {
        !matches!(self.0.opcode, abi::IORING_OP_NOP | abi::IORING_OP_MSG_RING)
    }
}

const fn zeroed() -> abi::io_uring_sqe {
    abi::io_uring_sqe {
        opcode: 0, flags: 0, ioprio: 0, fd: 0, off_or_addr2: 0, addr_or_splice_off_in: 0, len: 0,
        op_flags: 0, user_data: 0, buf_index_or_group: 0, personality: 0,
        splice_fd_in_or_file_index: 0, addr3: 0, pad2: 0,
    }
}
