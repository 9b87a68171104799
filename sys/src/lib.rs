//! `spargio-sys`: the kernel interface of spargio, written by hand against the
//! Linux io_uring ABI: no liburing, no bindgen.
//!
//! This crate is the only place in spargio that contains `unsafe` code. Each
//! module that needs it opts in with `#![allow(unsafe_code)]`, so
//! `grep -rn 'allow(unsafe_code)' sys/src` lists the whole unsafe surface, and
//! every `unsafe` block carries a `// SAFETY:` comment naming the invariant it
//! relies on (checked by `scripts/unsafe-audit.sh`).
//!
//! # The safe API is sound
//!
//! A safe `pub fn` here is sound for every argument value and every call
//! order. Anything that would make this crate or the kernel trust a raw fd
//! number, a raw address or length, or a completion the caller supplied is
//! an `unsafe fn` with a `# Safety` section ([`Ring::push_unchecked`],
//! [`op::Op::complete`], [`bufring::BufRing::claim`], …) or takes a value only
//! this crate can make: a [`cqe::RingCqe`] (only [`Ring::reap`] makes one),
//! a [`ring::RingFd`] (only a [`Ring`] hands one out), an [`op::OpEvent`]
//! (only the op table makes one). Ops record their own results, so nothing
//! that gives back a buffer or an fd takes a count or an fd number. What the
//! kernel may still write is never freed: a dropped op table leaks it.
//! `docs/ARCHITECTURE.md` ("Soundness of the safe API") lists each boundary.
//!
//! | module | holds |
//! |---|---|
//! | [`abi`] | kernel structures and constants, layouts pinned at compile time |
//! | [`syscall`] | `io_uring_setup` / `io_uring_enter` / `io_uring_register` as typed functions |
//! | [`epoll`] | `epoll` and `eventfd`: readiness for the Queue backend where io_uring is refused |
//! | [`mmap`] | RAII memory mappings of the rings |
//! | [`os`] | safe wrappers for affinity, CPU time, fd counts and credentials |
//! | [`ring`] | [`Ring`]: the SQ and CQ, submit and wait, on the kernel or on [`sim`] |
//! | [`sqe`] | safe, pure SQE encoders and a decoder back to a typed op |
//! | [`buf`] | owned buffers the kernel may read or write ([`IoBuf`](buf::IoBuf), [`IoBufMut`](buf::IoBufMut)) |
//! | [`op`] | the safe submission API: ops that own their resources until the final CQE |
//! | [`cqe`] | the completion type |
//! | [`msg`] | the runtime's `user_data` tag layout and `MSG_RING` payloads |
//! | [`signal`] | `signalfd` and the signal masks and forwarding handler it needs |
//! | [`process`] | child processes by pidfd: open, signal, reap |
//! | [`probe`] | what the running kernel supports, as one [`Features`](probe::Features) value |
//! | [`register`] | `io_uring_register` operations: files, buffers, buffer rings, ring fds |
//! | [`bufring`] | provided-buffer rings |
//! | [`sim`] | a simulated kernel over plain memory, for Miri, proptest and fuzzing |
//! | [`check`] | invariants shared by the property tests and the fuzz targets |

#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod abi;
pub mod buf;
pub mod bufring;
pub mod check;
pub mod cqe;
pub mod epoll;
pub mod mmap;
pub mod msg;
pub mod op;
pub mod os;
pub mod probe;
pub mod process;
pub mod register;
pub mod ring;
pub mod signal;
pub mod sim;
pub mod sqe;
pub mod syscall;

pub use cqe::Cqe;
pub use ring::Ring;
pub use sqe::Sqe;
