//! spargio: a work-stealing, sharded async runtime built directly on Linux io_uring.
#![forbid(unsafe_code)]

pub use spargio_sys as sys;
