//! The completion queue entry as the rest of spargio sees it.

use std::io;

use crate::abi;

/// One completion, copied out of the CQ ring.
///
/// `res` is the kernel's result: a byte count, an fd, or `-errno`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cqe {
    /// The `user_data` of the SQE this completes.
    pub user_data: u64,
    /// Result value: non-negative on success, `-errno` on failure.
    pub res: i32,
    /// `IORING_CQE_F_*` flags.
    pub flags: u32,
}

/// Identity of one [`Ring`](crate::Ring), unique in the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RingId(pub(crate) u64);

/// A completion reaped from a [`Ring`](crate::Ring) by [`Ring::reap`](crate::Ring::reap):
/// the one CQE type the op table ([`InFlight`](crate::op::InFlight)) accepts.
///
/// A plain [`Cqe`] is data anyone can write, so nothing that frees a buffer or
/// adopts an fd may trust one. A `RingCqe` can only be made by the ring it was
/// reaped from, remembers that ring, and is neither `Clone` nor `Copy`, so
/// each completion the kernel posted is handed to the table at most once. Its
/// fields are read through [`Deref`](std::ops::Deref) to [`Cqe`].
///
/// ```compile_fail
/// // Safe code cannot forge one:
/// let forged = spargio_sys::cqe::RingCqe { cqe: Default::default(), ring: 0 };
/// ```
///
/// ```compile_fail
/// // Nor copy one, to complete an op twice:
/// fn twice(c: spargio_sys::cqe::RingCqe) -> (spargio_sys::cqe::RingCqe, spargio_sys::cqe::RingCqe) {
///     (c.clone(), c)
/// }
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct RingCqe {
    cqe: Cqe,
    ring: RingId,
}

impl RingCqe {
    pub(crate) const fn new(cqe: Cqe, ring: RingId) -> RingCqe {
        RingCqe { cqe, ring }
    }

    /// The ring this completion was reaped from.
    pub(crate) const fn ring(&self) -> RingId {
        self.ring
    }

    /// The completion as plain data (giving up the proof of where it came from).
    pub const fn into_cqe(self) -> Cqe {
        self.cqe
    }
}

impl std::ops::Deref for RingCqe {
    type Target = Cqe;

    fn deref(&self) -> &Cqe {
        &self.cqe
    }
}

impl Cqe {
    /// Builds a CQE from the kernel's layout.
    pub const fn from_raw(raw: abi::io_uring_cqe) -> Self {
        Cqe {
            user_data: raw.user_data,
            res: raw.res,
            flags: raw.flags,
        }
    }

    /// The kernel's layout of this CQE.
    pub const fn to_raw(self) -> abi::io_uring_cqe {
        abi::io_uring_cqe {
            user_data: self.user_data,
            res: self.res,
            flags: self.flags,
        }
    }

    /// The result as `io::Result`: `Ok(res)` or the `errno` the kernel returned.
    ///
    /// # Errors
    ///
    /// Returns the OS error `-res` when `res` is negative.
    pub fn result(self) -> io::Result<u32> {
        if self.res < 0 {
            Err(io::Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res as u32)
        }
    }

    /// `IORING_CQE_F_MORE`: the op stays armed and more CQEs will follow.
    pub const fn has_more(self) -> bool {
        self.flags & abi::IORING_CQE_F_MORE != 0
    }

    /// `IORING_CQE_F_NOTIF`: this is a zero-copy send's buffer-release notification.
    pub const fn is_notification(self) -> bool {
        self.flags & abi::IORING_CQE_F_NOTIF != 0
    }

    /// The provided-buffer id, when `IORING_CQE_F_BUFFER` is set.
    pub const fn buffer_id(self) -> Option<u16> {
        if self.flags & abi::IORING_CQE_F_BUFFER != 0 {
            Some((self.flags >> abi::IORING_CQE_BUFFER_SHIFT) as u16)
        } else {
            None
        }
    }

    /// `IORING_CQE_F_BUF_MORE`: an incrementally consumed buffer is not yet used up.
    pub const fn buffer_more(self) -> bool {
        self.flags & abi::IORING_CQE_F_BUF_MORE != 0
    }

    /// `IORING_CQE_F_SOCK_NONEMPTY`: the socket still had data after this receive.
    pub const fn socket_nonempty(self) -> bool {
        self.flags & abi::IORING_CQE_F_SOCK_NONEMPTY != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_maps_negative_errno() {
        let c = Cqe {
            user_data: 1,
            res: -libc::EBADF,
            flags: 0,
        };
        assert_eq!(c.result().unwrap_err().raw_os_error(), Some(libc::EBADF));
        let ok = Cqe { res: 7, ..c };
        assert_eq!(ok.result().unwrap(), 7);
    }

    #[test]
    fn buffer_id_is_upper_half() {
        let c = Cqe {
            user_data: 0,
            res: 0,
            flags: abi::IORING_CQE_F_BUFFER | (513 << 16),
        };
        assert_eq!(c.buffer_id(), Some(513));
        assert_eq!(
            Cqe {
                flags: 513 << 16,
                ..c
            }
            .buffer_id(),
            None
        );
    }
}
