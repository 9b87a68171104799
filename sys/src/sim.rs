//! A simulated kernel: rings over ordinary memory, with the kernel's layout
//! and protocol, driven by the same [`Ring`](crate::ring::Ring) code.
//!
//! The simulator runs the kernel's side of each ring inside `io_uring_enter`:
//! it consumes SQEs, executes the operations it knows, posts CQEs (to its own
//! ring, or to another simulated ring for `MSG_RING`) and blocks waiters on a
//! condition variable. It exists so that ring logic and the runtime above it
//! can run under Miri, proptest and cargo-fuzz, and so that faults a real
//! kernel produces rarely can be produced on demand ([`Faults`]).
//!
//! # What it executes
//!
//! | opcode | behaviour |
//! |---|---|
//! | `NOP` | completes with 0 |
//! | `MSG_RING` | `IORING_MSG_DATA` to another simulated ring (or itself), with `FLAGS_PASS`; `-EBADFD` for a file fd, `-EBADF` for an unknown one |
//! | `TIMEOUT` | relative or `ABS` timespec on the virtual clock ([`SimKernel::advance`]): `-ETIME` when it passes, 0 after `off` other completions; `MULTISHOT` repeats |
//! | `TIMEOUT_REMOVE` | by `user_data`: the timeout completes `-ECANCELED` and the remove 0 (`-ENOENT` if none); `IORING_TIMEOUT_UPDATE` re-arms |
//! | `ASYNC_CANCEL` | pending ops (timeouts, stream ops) by `user_data`, `ANY`, `ALL`, `OP`, `FD` (stream ops) |
//! | `READ`, `WRITE` | in-memory files ([`SimKernel::create_file`]) at `off`, or at the file position when `off` is `u64::MAX`; pipes and sockets (below) |
//! | `RECV` | an in-memory file as a byte stream (from and advancing its position); a socket, once or `IORING_RECV_MULTISHOT` |
//! | `SEND`, `ACCEPT` | simulated sockets and listeners ([`SimKernel::socket_pair`], [`SimKernel::listener`]); `ACCEPT` once or `IORING_ACCEPT_MULTISHOT` |
//! | `PROVIDE_BUFFERS`, `REMOVE_BUFFERS` | classic provided buffers, used by `READ`/`RECV` with `IOSQE_BUFFER_SELECT`; so are provided-buffer rings, which [`BufRing`](crate::bufring::BufRing) registers with the simulator (`IORING_REGISTER_PBUF_RING`) |
//! | `SEND_ZC` | appends to an in-memory file: the count at once (`IORING_CQE_F_MORE`), and at a later enter the bytes, read from the buffer only then, with the `IORING_CQE_F_NOTIF` notification |
//! | anything else | `-EINVAL` |
//!
//! Ops complete within the `enter` that submits them, except timeouts, which
//! stay pending until the clock, a count, or a cancel ends them, stream ops
//! (pipes, sockets, listeners: see [Streams](#streams)), which wait
//! for data, room or a connection, and the
//! notification of a zero-copy send, which comes with the next enter of its
//! ring (or before that enter blocks) and after its send's own completion: a
//! send's buffer is read when its notification is posted, as a network card
//! may read it until then, so a buffer freed between the two CQEs is a
//! use-after-free that Miri reports. Links and
//! drains (`IOSQE_IO_LINK`, `IOSQE_IO_HARDLINK`, `IOSQE_IO_DRAIN`) are not
//! simulated: such entries complete with `-EINVAL` rather than run unordered.
//! There are no registered files: `IOSQE_FIXED_FILE` gives `-EBADF`.
//!
//! # Streams
//!
//! [`SimKernel::pipe`], [`SimKernel::socket_pair`], [`SimKernel::listener`]
//! and [`SimKernel::connect`] make byte streams whose ops wait like the
//! kernel's: a receive on an empty stream stays pending until the peer
//! writes or closes, a multishot receive posts one CQE per arrival, an
//! accept waits for a connection. Each end is numbered by a real
//! placeholder fd that the caller owns (one end of a pipe or socket pair
//! whose other end the simulator keeps, to see it close), so closing or dropping it as
//! an `OwnedFd` is sound and closes the simulated end. The outside world
//! writes and reads with [`SimKernel::stream_write`] and
//! [`SimKernel::stream_read`]. Buffers hold [`STREAM_CAPACITY`] bytes.
//! The module `sim::stream` documents every behaviour.
//!
//! # User memory
//!
//! Like the kernel, the simulator reads and writes the buffers, timespecs and
//! provided buffers that SQEs point at, trusting the promise of
//! [`Ring::push_unchecked`](crate::ring::Ring::push_unchecked)'s caller. SQEs
//! carry addresses as integers; memory lent with [`SimKernel::lend`] (and
//! friends) is reached through a pointer derived from the loan, so tests run
//! under `-Zmiri-strict-provenance`, and accesses past a loan's end fail with
//! `EFAULT`. Addresses outside every loan are reached through their exposed
//! provenance (natively and under plain Miri only).
//!
//! Lent memory is owned by the kernel until [`Lent::into_inner`] takes it
//! back (or the [`Lent`] drops, freeing it). A loan never borrows the
//! caller's memory: a borrow could end while the loan stays registered (a
//! `Lent` passed to `mem::forget`), and the simulator would then write
//! through a pointer to memory that safe code has freed or reused.
//!
//! # Locking
//!
//! One mutex guards the whole simulated kernel (every ring's kernel-side
//! state, the files, the clock, the fault generator), so cross-ring work such
//! as `MSG_RING` needs no lock ordering. Each ring has its own condition
//! variable, used with that mutex, on which its `GETEVENTS` waiters sleep.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::abi;
use crate::cqe::Cqe;
use crate::ring::{RingConfig, index};
use crate::syscall::EnterWait;

mod stream;

pub use stream::STREAM_CAPACITY;

/// Fake fd numbers start here, far above what a test process opens.
const FIRST_SIM_FD: RawFd = 1 << 24;

// Layout of the simulated ring region (one region, like IORING_FEAT_SINGLE_MMAP).
const SQ_HEAD: u32 = 0;
const SQ_TAIL: u32 = 4;
const SQ_MASK: u32 = 8;
const SQ_ENTRIES: u32 = 12;
const SQ_FLAGS: u32 = 16;
const SQ_DROPPED: u32 = 20;
const CQ_HEAD: u32 = 64;
const CQ_TAIL: u32 = 68;
const CQ_MASK: u32 = 72;
const CQ_ENTRIES: u32 = 76;
const CQ_OVERFLOW: u32 = 80;
const CQ_FLAGS: u32 = 84;
const CQES: u32 = 128;

/// Largest size a write may grow a simulated file to (keeps fuzzed offsets
/// from exhausting memory); beyond it a write fails with `EFBIG`.
const MAX_FILE_LEN: u64 = 1 << 30;

/// Provided-buffer ids are 16 bits.
const MAX_BUFFERS: u64 = 1 << 16;

/// Faults the simulated kernel injects, set with [`SimKernel::set_faults`].
///
/// Every fault is deterministic: "every n-th" faults count their own kind of
/// event since the faults were last set, and the random choices (reordering,
/// delays, short-read lengths, the result of a lost cancel race) come from a
/// small generator seeded with [`Faults::seed`]. The same faults, seed and
/// sequence of calls give the same run. [`Faults::default`] injects nothing.
///
/// # Example
///
/// ```
/// use spargio_sys::ring::{Ring, RingConfig};
/// use spargio_sys::sim::{Faults, SimKernel};
/// use spargio_sys::Sqe;
///
/// let kernel = SimKernel::new();
/// kernel.set_faults(Faults { enter_eintr_every: Some(2), ..Faults::default() });
/// let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
/// for i in 0..3 {
///     ring.push(&Sqe::nop().user_data(i)).unwrap();
///     // Every second waiting enter fails with EINTR; submit_and_wait retries it.
///     ring.submit_and_wait(1, None).unwrap();
///     assert_eq!(ring.pop_cqe().unwrap().user_data, i);
/// }
/// assert_eq!(kernel.injected().eintr, 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Seed of the generator behind the random choices.
    pub seed: u64,
    /// Every n-th `io_uring_enter` with `GETEVENTS` fails with `EINTR` before
    /// doing anything (nothing submitted, nothing flushed), as a signal would.
    pub enter_eintr_every: Option<u32>,
    /// Every n-th `io_uring_enter` fails with `EBUSY` before doing anything.
    pub enter_ebusy_every: Option<u32>,
    /// The first n `io_uring_enter`s after the faults are set fail with
    /// `EBUSY` before doing anything: a refusal that passes.
    pub enter_ebusy_first: u32,
    /// An enter with SQEs to submit fails with `EBUSY` while overflowed CQEs
    /// cannot all be flushed into the CQ (what kernels without the newer
    /// overflow handling do): the caller must reap, then retry.
    pub ebusy_while_overflowed: bool,
    /// Every n-th CQE goes to the overflow list even though the CQ has room,
    /// setting `IORING_SQ_CQ_OVERFLOW` (later CQEs queue behind it, in order).
    pub overflow_every: Option<u32>,
    /// Shuffle the CQEs of the ops submitted in one enter before posting them.
    pub reorder: bool,
    /// When non-zero, each CQE of a submitted op is, with probability 1/2,
    /// held back for 1 to `delay_cqes` later enters on its ring. Held CQEs are
    /// all released when a `GETEVENTS` enter would otherwise block or time
    /// out, so a waiter always sees them.
    pub delay_cqes: u32,
    /// Each `READ`/`RECV` transfers at most a random 1 to n bytes.
    pub short_read_max: Option<u32>,
    /// Every n-th `READ`, `WRITE` or `RECV` (and `SEND` on a simulated
    /// socket) completes with `-EAGAIN`, doing nothing.
    pub eagain_every: Option<u32>,
    /// Every n-th `READ`/`RECV` with `IOSQE_BUFFER_SELECT` completes with
    /// `-ENOBUFS` even when a buffer is available (none is consumed).
    pub enobufs_every: Option<u32>,
    /// Every n-th cancel (`ASYNC_CANCEL`, `TIMEOUT_REMOVE`) that finds its
    /// target loses the race: the target completes as if it had just finished
    /// (a timeout with `-ETIME`) and the cancel gets `-EALREADY` or `-ENOENT`.
    pub cancel_race_every: Option<u32>,
}

/// How many faults of each kind the simulated kernel has injected since its
/// faults were last set ([`SimKernel::injected`]): lets a test prove that the
/// fault it asked for actually happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Enters failed with `EINTR`.
    pub eintr: u64,
    /// Enters failed with `EBUSY` (either kind).
    pub ebusy: u64,
    /// CQEs forced onto the overflow list by [`Faults::overflow_every`].
    pub overflowed: u64,
    /// Batches whose CQEs were posted in a different order than submitted.
    pub reordered_batches: u64,
    /// CQEs held back by [`Faults::delay_cqes`].
    pub delayed_cqes: u64,
    /// Reads cut short by [`Faults::short_read_max`].
    pub short_reads: u64,
    /// Ops completed with `-EAGAIN`.
    pub eagain: u64,
    /// Buffer-select ops completed with an injected `-ENOBUFS`.
    pub enobufs: u64,
    /// Cancels that lost the race with their target.
    pub cancel_races: u64,
}

/// A small xorshift64* generator: enough to make fault choices reproducible.
struct XorShift(u64);

impl XorShift {
    const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new(seed: u64) -> XorShift {
        let state = seed ^ Self::MIX;
        XorShift(if state == 0 { Self::MIX } else { state })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Counts the events one "every n-th" fault applies to.
#[derive(Default)]
struct Every(u64);

impl Every {
    /// Counts one event; true when it is the n-th, 2n-th, … since the faults were set.
    fn tick(&mut self, every: Option<u32>) -> bool {
        match every {
            Some(n) if n > 0 => {
                self.0 += 1;
                self.0.is_multiple_of(u64::from(n))
            }
            _ => false,
        }
    }
}

/// The fault configuration and the state that makes it deterministic.
struct FaultState {
    faults: Faults,
    rng: XorShift,
    eintr: Every,
    ebusy: Every,
    overflow: Every,
    eagain: Every,
    enobufs: Every,
    cancel_race: Every,
    injected: Injected,
}

impl FaultState {
    fn new(faults: Faults) -> FaultState {
        FaultState {
            rng: XorShift::new(faults.seed),
            faults,
            eintr: Every::default(),
            ebusy: Every::default(),
            overflow: Every::default(),
            eagain: Every::default(),
            enobufs: Every::default(),
            cancel_race: Every::default(),
            injected: Injected::default(),
        }
    }

    /// The result a cancel gets when its target won the race: the kernel
    /// answers `EALREADY` if it saw the target finishing, `ENOENT` if it was gone.
    fn lost_race_result(&mut self) -> i32 {
        if self.rng.below(2) == 0 {
            -libc::EALREADY
        } else {
            -libc::ENOENT
        }
    }
}

/// A simulated kernel: a namespace of simulated rings that can message each
/// other, in-memory files, a virtual clock and a fault injector.
///
/// Cloning gives another handle to the same kernel.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use spargio_sys::ring::{Ring, RingConfig};
/// use spargio_sys::sim::SimKernel;
/// use spargio_sys::{abi, Sqe};
///
/// let kernel = SimKernel::new();
/// let lent = kernel.lend_value(abi::kernel_timespec { tv_sec: 1, tv_nsec: 0 });
/// let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
/// let timeout = Sqe::from_raw(abi::io_uring_sqe {
///     opcode: abi::IORING_OP_TIMEOUT,
///     addr_or_splice_off_in: lent.addr(),
///     len: 1,
///     user_data: 7,
///     ..Default::default()
/// });
/// // SAFETY: the timespec stays lent (to the end) while the timeout is pending.
/// unsafe { ring.push_unchecked(&timeout) }.unwrap();
/// ring.submit().unwrap();
/// assert!(ring.pop_cqe().is_none());
/// kernel.advance(Duration::from_secs(1));
/// let cqe = ring.pop_cqe().unwrap();
/// assert_eq!((cqe.user_data, cqe.res), (7, -libc::ETIME));
/// ```
#[derive(Clone, Default)]
pub struct SimKernel {
    inner: Arc<Mutex<KernelState>>,
}

impl std::fmt::Debug for SimKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimKernel").finish_non_exhaustive()
    }
}

impl SimKernel {
    /// A new, empty simulated kernel, injecting no faults, its clock at zero.
    pub fn new() -> SimKernel {
        SimKernel::default()
    }

    fn lock(&self) -> MutexGuard<'_, KernelState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unregisters provided-buffer ring `bgid` of simulated ring `ring`
    /// (`IORING_UNREGISTER_PBUF_RING`): no later op selects from it.
    ///
    /// # Errors
    ///
    /// `ENOENT` when no such group is registered (or the ring is gone).
    pub(crate) fn unregister_pbuf_ring(&self, ring: RawFd, bgid: u16) -> io::Result<()> {
        let mut k = self.lock();
        let removed = k.rings.get_mut(&ring).and_then(|r| r.pbuf_rings.remove(&bgid));
        match removed {
            Some(_) => Ok(()),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    /// Replaces the faults to inject, restarting their counters, their
    /// generator (from `faults.seed`) and the [`injected`](Self::injected) tally.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = FaultState::new(faults);
    }

    /// The faults being injected.
    pub fn faults(&self) -> Faults {
        self.lock().faults.faults.clone()
    }

    /// How many faults of each kind were injected since the faults were last set.
    pub fn injected(&self) -> Injected {
        self.lock().faults.injected
    }

    /// Simulated rings set up on this kernel and not yet dropped.
    #[cfg(test)]
    pub(crate) fn ring_count(&self) -> usize {
        self.lock().rings.len()
    }

    /// Makes rings set up from now on start their SQ and CQ heads and tails at
    /// `index` instead of 0, so tests can put wrap-around of the `u32`
    /// indices within a few operations (`u32::MAX - 2`, say).
    pub fn set_initial_index(&self, index: u32) {
        self.lock().initial_index = index;
    }

    /// The virtual clock: time since the kernel was created, as moved by
    /// [`advance`](Self::advance) (and by waits under
    /// [`set_auto_advance`](Self::set_auto_advance)).
    pub fn now(&self) -> Duration {
        self.lock().now
    }

    /// Moves the virtual clock forward by `by`, firing every timeout whose
    /// deadline it reaches, in deadline order, on every ring.
    pub fn advance(&self, by: Duration) {
        let mut k = self.lock();
        let to = k.now.saturating_add(by);
        k.advance_to(to);
    }

    /// When on, a `GETEVENTS` enter that would block while timeouts are
    /// pending first jumps the virtual clock to the earliest deadline (like a
    /// paused test clock that skips idle time). Off by default.
    pub fn set_auto_advance(&self, on: bool) {
        self.lock().auto_advance = on;
    }

    /// Creates an in-memory file holding `contents`, at position 0, and
    /// returns its (fake) fd for `READ`/`WRITE`/`RECV` SQEs on this kernel's rings.
    pub fn create_file(&self, contents: Vec<u8>) -> RawFd {
        let mut k = self.lock();
        let fd = k.allocate_fd();
        k.files.insert(
            fd,
            SimFile {
                data: contents,
                pos: 0,
            },
        );
        fd
    }

    /// The current contents of the in-memory file `fd`, or `None` if this
    /// kernel has no such file.
    pub fn file_contents(&self, fd: RawFd) -> Option<Vec<u8>> {
        self.lock().files.get(&fd).map(|f| f.data.clone())
    }

    /// Removes the in-memory file `fd`; later ops on it fail with `EBADF`.
    /// Returns whether it existed.
    pub fn remove_file(&self, fd: RawFd) -> bool {
        self.lock().files.remove(&fd).is_some()
    }

    /// Lends `memory` to this kernel for reading and writing; put
    /// [`Lent::addr`] in the SQEs that use it, and take the memory back with
    /// [`Lent::into_inner`] once their CQEs are reaped.
    ///
    /// The kernel owns lent memory until it is taken back: dropping the
    /// [`Lent`] frees it, and a `Lent` that is leaked (`mem::forget`) leaves it
    /// with the kernel, which frees it when the kernel itself goes. So an
    /// address inside a loan always points at live memory that nothing else
    /// uses, whatever the caller does with the `Lent`.
    ///
    /// SQEs carry addresses as integers. Inside a loan the simulator derives
    /// its pointers from the loan itself, so it never turns an integer into a
    /// pointer: that is what lets a test run under
    /// `-Zmiri-strict-provenance`. An access that runs past the end of a loan
    /// fails with `EFAULT`. (Addresses outside every loan still work,
    /// natively and under plain Miri, through their exposed provenance.)
    /// Lending does not replace the contract of
    /// [`Ring::push_unchecked`](crate::ring::Ring::push_unchecked): the memory
    /// must stay lent until every SQE that points into it has completed.
    ///
    /// # Example
    ///
    /// ```
    /// use spargio_sys::ring::{Ring, RingConfig};
    /// use spargio_sys::sim::SimKernel;
    /// use spargio_sys::{abi, Sqe};
    ///
    /// let kernel = SimKernel::new();
    /// let file = kernel.create_file(b"hello".to_vec());
    /// let lent = kernel.lend([0u8; 5]);
    /// let mut ring = Ring::sim(&kernel, &RingConfig::with_entries(4)).unwrap();
    /// let read = Sqe::from_raw(abi::io_uring_sqe {
    ///     opcode: abi::IORING_OP_READ,
    ///     fd: file,
    ///     addr_or_splice_off_in: lent.addr(),
    ///     len: lent.len() as u32,
    ///     ..Default::default()
    /// });
    /// // SAFETY: the buffer stays lent until the CQE is reaped below.
    /// unsafe { ring.push_unchecked(&read) }.unwrap();
    /// ring.submit_and_wait(1, None).unwrap();
    /// assert_eq!(ring.pop_cqe().unwrap().res, 5);
    /// assert_eq!(lent.into_inner(), b"hello");
    /// ```
    pub fn lend(&self, memory: impl Into<Vec<u8>>) -> Lent<'_> {
        self.add_loan(memory.into(), true)
    }

    /// Lends `memory` to this kernel for reading only (a write's source). An
    /// op that would write into it fails with `EFAULT`. See [`lend`](Self::lend).
    pub fn lend_readonly(&self, memory: impl Into<Vec<u8>>) -> Lent<'_> {
        self.add_loan(memory.into(), false)
    }

    /// Lends the kernel structure `value` (a `kernel_timespec`, an array of
    /// them, an iovec) to this kernel for reading only. `Copy` keeps out
    /// types that own their memory elsewhere (lending a `Vec` would lend its
    /// header, not its bytes). The simulator reads lent memory as plain
    /// bytes, so an SQE may point only at a `T` without padding (every
    /// kernel structure is). See [`lend`](Self::lend).
    pub fn lend_value<T: Copy + Send + 'static>(&self, value: T) -> Lent<'_, T> {
        self.add_loan(vec![value], false)
    }

    fn add_loan<T: Send + 'static>(&self, mut memory: Vec<T>, writable: bool) -> Lent<'_, T> {
        // The loan's pointer comes from the Vec's heap buffer, which neither the
        // moves of the Vec below nor those of the Box that keeps it touch.
        let ptr = NonNull::new(memory.as_mut_ptr())
            .expect("a Vec's pointer is never null")
            .cast::<u8>();
        let len = size_of_val(memory.as_slice());
        let mut k = self.lock();
        let key = (ptr.as_ptr().addr(), k.loans.next_id);
        k.loans.next_id += 1;
        k.loans.by_start.insert(
            key,
            Loan {
                ptr,
                len,
                writable,
                _memory: Box::new(memory),
            },
        );
        Lent {
            kernel: self,
            key,
            len,
            _memory: PhantomData,
        }
    }
}

/// Memory lent to a [`SimKernel`] ([`SimKernel::lend`]): a handle to it, for
/// the SQEs that use it and to take it back.
///
/// The memory belongs to the kernel while lent. [`Lent::into_inner`] ends the
/// loan and gives the memory back; dropping the `Lent` ends the loan and frees
/// the memory; forgetting it leaves the memory with the kernel, which frees
/// it when its last handle (a [`SimKernel`] clone or a simulated ring) goes.
/// The `Lent` borrows the `SimKernel` handle it came from, and `T` is `u8`
/// for buffers, the value's type for [`SimKernel::lend_value`].
#[must_use = "the loan ends, and its memory is freed, when this value drops"]
pub struct Lent<'k, T: 'static = u8> {
    /// Borrowed, not cloned: a leaked `Lent` must not keep the kernel (and
    /// the memory it owns) alive forever.
    kernel: &'k SimKernel,
    key: (usize, u64),
    len: usize,
    _memory: PhantomData<Vec<T>>,
}

impl<T: 'static> Lent<'_, T> {
    /// The user address of the lent memory, for an SQE's address field.
    pub fn addr(&self) -> u64 {
        self.key.0 as u64
    }

    /// Length of the lent memory in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a loan of zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ends the loan and gives the memory back: the buffer for
    /// [`lend`](SimKernel::lend) and [`lend_readonly`](SimKernel::lend_readonly),
    /// a one-element `Vec` for [`lend_value`](SimKernel::lend_value).
    pub fn into_inner(self) -> Vec<T> {
        let loan = self.kernel.lock().loans.by_start.remove(&self.key);
        let memory = loan
            .expect("a loan stays registered while its Lent lives")
            ._memory;
        *memory.downcast::<Vec<T>>().expect("a Lent<T> holds a Vec<T>")
    }
}

impl<T: 'static> std::fmt::Debug for Lent<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent")
            .field("addr", &format_args!("{:#x}", self.key.0))
            .field("len", &self.len)
            .finish()
    }
}

impl<T: 'static> Drop for Lent<'_, T> {
    fn drop(&mut self) {
        // Taken out under the lock (the guard is a temporary of this statement),
        // freed after it. Already gone after `into_inner`.
        let loan = self.kernel.lock().loans.by_start.remove(&self.key);
        drop(loan);
    }
}

/// The whole simulated kernel's state, behind one mutex.
struct KernelState {
    next_fd: RawFd,
    rings: HashMap<RawFd, RingState>,
    files: HashMap<RawFd, SimFile>,
    now: Duration,
    auto_advance: bool,
    initial_index: u32,
    faults: FaultState,
    loans: Loans,
    /// Submission order of pending ops: breaks ties between equal deadlines.
    next_seq: u64,
    /// Pipes, sockets, listeners and the ops pending on them.
    streams: stream::Streams,
}

impl Default for KernelState {
    fn default() -> Self {
        KernelState {
            next_fd: FIRST_SIM_FD,
            rings: HashMap::new(),
            files: HashMap::new(),
            now: Duration::ZERO,
            auto_advance: false,
            initial_index: 0,
            faults: FaultState::new(Faults::default()),
            loans: Loans::default(),
            next_seq: 0,
            streams: stream::Streams::default(),
        }
    }
}

/// An in-memory file.
struct SimFile {
    data: Vec<u8>,
    /// The position used by `RECV` and by reads/writes at offset `-1`.
    pos: u64,
}

/// One classic provided buffer (`IORING_OP_PROVIDE_BUFFERS`).
#[derive(Clone, Copy)]
struct ProvidedBuf {
    addr: u64,
    len: u32,
    bid: u16,
}

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): entries in user
/// memory, the tail published by the owner, the head ours.
struct PbufRing {
    /// User address of the entries (the tail overlays entry 0's `resv`).
    addr: u64,
    entries: u16,
    head: u16,
}

/// A CQE held back by [`Faults::delay_cqes`].
struct Delayed {
    cqe: Cqe,
    counted: bool,
    enters_left: u32,
}

enum TimeoutKind {
    /// Fires once: at the deadline, or with 0 once the ring has posted
    /// `count_target` counted completions.
    Once { count_target: Option<u64> },
    /// Fires every `interval`; `remaining` shots (`None`: until cancelled).
    Multishot {
        interval: Duration,
        remaining: Option<u32>,
    },
}

/// A pending `IORING_OP_TIMEOUT`.
struct Timeout {
    user_data: u64,
    seq: u64,
    sqe_flags: u8,
    deadline: Duration,
    kind: TimeoutKind,
}

/// The kernel's private state of one simulated ring.
struct RingState {
    shared: Arc<RingShared>,
    /// CQEs that did not fit in the CQ, in order (the kernel's overflow list).
    overflow: VecDeque<Cqe>,
    delayed: Vec<Delayed>,
    timeouts: Vec<Timeout>,
    /// Completions posted that count for `TIMEOUT` with a count (all but timeouts').
    counted: u64,
    buffers: HashMap<u16, VecDeque<ProvidedBuf>>,
    /// Provided-buffer rings, by group id.
    pbuf_rings: HashMap<u16, PbufRing>,
    /// Zero-copy sends whose notification is still to come, in submission order.
    zc_sends: Vec<ZcSend>,
}

/// A `SEND_ZC` whose bytes the simulated network card has not read yet.
struct ZcSend {
    user_data: u64,
    file: RawFd,
    addr: u64,
    len: u32,
}

/// CQEs produced by the SQEs of one enter, posted together at its end: the
/// ops' own completions (the flag says whether each counts for count-based
/// timeouts), which faults may shuffle or hold back, and the messages the
/// ring sent itself, which are posted first and in order.
#[derive(Default)]
struct Batch(Vec<(Cqe, bool)>, Vec<Cqe>);

impl Batch {
    /// The completion of `sqe` itself (suppressed on success with `CQE_SKIP_SUCCESS`).
    fn complete(&mut self, sqe: &abi::io_uring_sqe, res: i32, flags: u32) {
        if res >= 0 && sqe.flags & abi::IOSQE_CQE_SKIP_SUCCESS != 0 {
            return;
        }
        self.0.push((
            Cqe {
                user_data: sqe.user_data,
                res,
                flags,
            },
            true,
        ));
    }

    /// A timeout's completion, which count-based timeouts do not count.
    fn timeout(&mut self, user_data: u64, res: i32) {
        self.0.push((
            Cqe {
                user_data,
                res,
                flags: 0,
            },
            false,
        ));
    }
}

impl RingState {
    /// Selects a buffer of `group` for a buffer-select op: the next entry of
    /// its buffer ring, or the first of its classic provided buffers.
    fn select_buffer(&mut self, loans: &Loans, group: u16) -> Option<ProvidedBuf> {
        let Some(pr) = self.pbuf_rings.get_mut(&group) else {
            return self.buffers.get_mut(&group).and_then(VecDeque::pop_front);
        };
        let tail_at = pr.addr + abi::BUF_RING_TAIL_OFFSET as u64;
        let tail_ptr = loans.pointer(tail_at, 2, false).ok()?;
        // SAFETY: the ring's memory stays valid while registered (the contract
        // of `SimRing::register_pbuf_ring`); the tail is 2-byte aligned (the
        // ring is page aligned) and only accessed atomically.
        let tail = unsafe { std::sync::atomic::AtomicU16::from_ptr(tail_ptr.cast()) };
        // Acquire pairs with the owner's release store of the tail: the entries
        // it covers are written.
        if tail.load(Ordering::Acquire) == pr.head {
            return None;
        }
        let slot = u64::from(pr.head & (pr.entries - 1));
        let entry_at = pr.addr + slot * size_of::<abi::io_uring_buf>() as u64;
        // Bytes 0..14 of the entry: address, length, id (not the tail bytes).
        let entry_ptr = loans.pointer(entry_at, abi::BUF_RING_TAIL_OFFSET, false).ok()?;
        // SAFETY: as above, the entry lies in the registered ring memory; the
        // owner does not write slots in [head, tail) (the buffer ring
        // protocol); reads are unaligned-tolerant.
        let (addr, len, bid) = unsafe {
            (
                entry_ptr.cast::<u64>().read_unaligned(),
                entry_ptr.add(8).cast::<u32>().read_unaligned(),
                entry_ptr.add(12).cast::<u16>().read_unaligned(),
            )
        };
        pr.head = pr.head.wrapping_add(1);
        Some(ProvidedBuf { addr, len, bid })
    }

    /// Puts back a buffer [`RingState::select_buffer`] just took (its op
    /// failed before using it).
    fn unselect_buffer(&mut self, group: u16, buf: ProvidedBuf) {
        match self.pbuf_rings.get_mut(&group) {
            Some(pr) => pr.head = pr.head.wrapping_sub(1),
            None => self.buffers.entry(group).or_default().push_front(buf),
        }
    }

    /// Posts a CQE now; a counted one may complete count-based timeouts.
    fn post(&mut self, faults: &mut FaultState, cqe: Cqe, counted: bool) {
        self.post_one(faults, cqe);
        if !counted {
            return;
        }
        self.counted += 1;
        while let Some(i) = self.timeouts.iter().position(
            |t| matches!(t.kind, TimeoutKind::Once { count_target: Some(target) } if target <= self.counted),
        ) {
            let t = self.timeouts.remove(i);
            if t.sqe_flags & abi::IOSQE_CQE_SKIP_SUCCESS == 0 {
                self.post_one(
                    faults,
                    Cqe {
                        user_data: t.user_data,
                        res: 0,
                        flags: 0,
                    },
                );
            }
        }
    }

    /// Writes a CQE into the CQ, or queues it on the overflow list when the CQ
    /// is full, the list is not empty (order is kept), or the fault says so.
    fn post_one(&mut self, faults: &mut FaultState, cqe: Cqe) {
        let forced = faults.overflow.tick(faults.faults.overflow_every);
        if forced {
            faults.injected.overflowed += 1;
        }
        if forced || !self.overflow.is_empty() || !self.shared.try_write_cqe(cqe) {
            self.overflow.push_back(cqe);
            // Relaxed: advisory; the Ring acts on it through an enter, which takes our lock.
            self.shared
                .ring
                .word(SQ_FLAGS)
                .fetch_or(abi::IORING_SQ_CQ_OVERFLOW, Ordering::Relaxed);
        }
        self.shared.posted.notify_all();
    }

    /// Moves overflowed CQEs into the CQ while room allows.
    fn flush_overflow(&mut self) {
        while let Some(&cqe) = self.overflow.front() {
            if !self.shared.try_write_cqe(cqe) {
                return;
            }
            self.overflow.pop_front();
        }
        self.shared
            .ring
            .word(SQ_FLAGS)
            .fetch_and(!abi::IORING_SQ_CQ_OVERFLOW, Ordering::Relaxed);
    }

    /// Counts one enter against the held-back CQEs and posts those that are
    /// due (all of them with `all`). Returns whether it posted any.
    fn release_delayed(&mut self, faults: &mut FaultState, all: bool) -> bool {
        if self.delayed.is_empty() {
            return false;
        }
        let mut due = Vec::new();
        self.delayed.retain_mut(|d| {
            d.enters_left = d.enters_left.saturating_sub(1);
            if all || d.enters_left == 0 {
                due.push((d.cqe, d.counted));
                false
            } else {
                true
            }
        });
        let any = !due.is_empty();
        for (cqe, counted) in due {
            self.post(faults, cqe, counted);
        }
        any
    }

    /// Fires, in deadline order, every timeout whose deadline is at or before `now`.
    fn fire_expired(&mut self, faults: &mut FaultState, now: Duration) {
        loop {
            let next = self
                .timeouts
                .iter()
                .enumerate()
                .filter(|(_, t)| t.deadline <= now)
                .min_by_key(|(_, t)| (t.deadline, t.seq))
                .map(|(i, _)| i);
            let Some(i) = next else { return };
            let t = &mut self.timeouts[i];
            let user_data = t.user_data;
            let more = match &mut t.kind {
                TimeoutKind::Once { .. } => false,
                TimeoutKind::Multishot {
                    remaining: Some(1), ..
                } => false,
                TimeoutKind::Multishot { interval, remaining } => {
                    if let Some(r) = remaining {
                        *r -= 1;
                    }
                    t.deadline = t.deadline.saturating_add(*interval);
                    true
                }
            };
            if !more {
                self.timeouts.remove(i);
            }
            let flags = if more { abi::IORING_CQE_F_MORE } else { 0 };
            self.post(
                faults,
                Cqe {
                    user_data,
                    res: -libc::ETIME,
                    flags,
                },
                false,
            );
        }
    }

    /// Posts the CQEs of one enter, after shuffling or holding some back as
    /// the faults ask.
    fn post_batch(&mut self, faults: &mut FaultState, mut batch: Batch) {
        for message in std::mem::take(&mut batch.1) {
            self.post(faults, message, true);
        }
        if faults.faults.reorder && batch.0.len() > 1 {
            let before: Vec<u64> = batch.0.iter().map(|(c, _)| c.user_data).collect();
            for i in (1..batch.0.len()).rev() {
                let j = faults.rng.below(i as u64 + 1) as usize;
                batch.0.swap(i, j);
            }
            if batch.0.iter().map(|(c, _)| c.user_data).ne(before) {
                faults.injected.reordered_batches += 1;
            }
        }
        let max_delay = faults.faults.delay_cqes;
        for (cqe, counted) in batch.0 {
            if max_delay > 0 && faults.rng.below(2) == 0 {
                let enters_left = 1 + faults.rng.below(u64::from(max_delay)) as u32;
                self.delayed.push(Delayed {
                    cqe,
                    counted,
                    enters_left,
                });
                faults.injected.delayed_cqes += 1;
            } else {
                self.post(faults, cqe, counted);
            }
        }
    }
}

impl KernelState {
    fn allocate_fd(&mut self) -> RawFd {
        let fd = self.next_fd;
        self.next_fd += 1;
        fd
    }

    fn ring(&mut self, fd: RawFd) -> &mut RingState {
        self.rings
            .get_mut(&fd)
            .expect("a live SimRing is registered with its kernel")
    }

    /// Moves the clock to `to` (never backwards) and fires what expired.
    fn advance_to(&mut self, to: Duration) {
        self.now = self.now.max(to);
        let now = self.now;
        for ring in self.rings.values_mut() {
            ring.fire_expired(&mut self.faults, now);
        }
    }

    /// The earliest deadline of any pending timeout on any ring.
    fn next_deadline(&self) -> Option<Duration> {
        self.rings
            .values()
            .flat_map(|r| r.timeouts.iter().map(|t| t.deadline))
            .min()
    }

    /// Consumes up to `to_submit` SQEs of ring `fd` and executes them. Returns how many.
    fn submit(&mut self, fd: RawFd, to_submit: u32) -> u32 {
        let shared = self.ring(fd).shared.clone();
        // Acquire pairs with the Ring's release of the SQ tail: the SQEs are written.
        let tail = shared.ring.word(SQ_TAIL).load(Ordering::Acquire);
        let head = shared.ring.word(SQ_HEAD).load(Ordering::Relaxed);
        let n = index::len(head, tail).min(to_submit);
        let mut batch = Batch::default();
        let mut executed = 0;
        for i in 0..n {
            match shared.read_sqe(head.wrapping_add(i)) {
                Some(sqe) => {
                    self.execute(fd, &sqe, &mut batch);
                    executed += 1;
                }
                // Relaxed: a statistic the Ring only reads.
                None => _ = shared.ring.word(SQ_DROPPED).fetch_add(1, Ordering::Relaxed),
            }
            // Release pairs with the Ring's acquire of the SQ head: the SQE was
            // read before its slot is handed back.
            shared
                .ring
                .word(SQ_HEAD)
                .store(head.wrapping_add(i + 1), Ordering::Release);
        }
        let now = self.now;
        let ring = self
            .rings
            .get_mut(&fd)
            .expect("a live SimRing is registered with its kernel");
        ring.post_batch(&mut self.faults, batch);
        // Timeouts armed (or re-armed) at or before now fire as soon as the batch is in.
        ring.fire_expired(&mut self.faults, now);
        executed
    }

    fn execute(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe, batch: &mut Batch) {
        const NOT_SIMULATED: u8 = abi::IOSQE_IO_DRAIN | abi::IOSQE_IO_LINK | abi::IOSQE_IO_HARDLINK | 0x80;
        let reads = matches!(sqe.opcode, abi::IORING_OP_READ | abi::IORING_OP_RECV);
        if sqe.flags & NOT_SIMULATED != 0 || (sqe.flags & abi::IOSQE_BUFFER_SELECT != 0 && !reads) {
            return batch.complete(sqe, -libc::EINVAL, 0);
        }
        let stream_op = matches!(
            sqe.opcode,
            abi::IORING_OP_READ
                | abi::IORING_OP_RECV
                | abi::IORING_OP_WRITE
                | abi::IORING_OP_SEND
                | abi::IORING_OP_ACCEPT
        );
        if stream_op && self.streams.contains(sqe.fd) {
            return self.stream_submit(fd, sqe, batch);
        }
        let (res, flags) = match sqe.opcode {
            abi::IORING_OP_NOP => (0, 0),
            abi::IORING_OP_SEND | abi::IORING_OP_ACCEPT if self.files.contains_key(&sqe.fd) => {
                (-libc::ENOTSOCK, 0)
            }
            abi::IORING_OP_SEND | abi::IORING_OP_ACCEPT => (-libc::EBADF, 0),
            abi::IORING_OP_MSG_RING => (self.msg_ring(fd, sqe, batch), 0),
            abi::IORING_OP_TIMEOUT => match self.timeout(fd, sqe) {
                Ok(()) => return,
                Err(res) => (res, 0),
            },
            abi::IORING_OP_TIMEOUT_REMOVE => (self.timeout_remove(fd, sqe, batch), 0),
            abi::IORING_OP_ASYNC_CANCEL => (self.async_cancel(fd, sqe, batch), 0),
            abi::IORING_OP_READ | abi::IORING_OP_RECV => self.read(fd, sqe),
            abi::IORING_OP_WRITE => (self.write(sqe), 0),
            abi::IORING_OP_PROVIDE_BUFFERS => (self.provide_buffers(fd, sqe), 0),
            abi::IORING_OP_REMOVE_BUFFERS => (self.remove_buffers(fd, sqe), 0),
            abi::IORING_OP_SEND_ZC => match self.send_zc(fd, sqe) {
                Ok(n) => (n, abi::IORING_CQE_F_MORE),
                Err(res) => (res, 0),
            },
            _ => (-libc::EINVAL, 0),
        };
        batch.complete(sqe, res, flags);
    }

    fn msg_ring(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe, batch: &mut Batch) -> i32 {
        if sqe.flags & abi::IOSQE_FIXED_FILE != 0 {
            return -libc::EBADF;
        }
        // Passing fds needs registered file tables, which the simulator lacks.
        if sqe.addr_or_splice_off_in != abi::IORING_MSG_DATA {
            return -libc::EINVAL;
        }
        // CQE_SKIP applies to fd passing only; data messages refuse it, as the kernel does.
        if sqe.op_flags & !abi::IORING_MSG_RING_FLAGS_PASS != 0 || sqe.addr3 != 0 {
            return -libc::EINVAL;
        }
        let flags = if sqe.op_flags & abi::IORING_MSG_RING_FLAGS_PASS != 0 {
            sqe.splice_fd_in_or_file_index
        } else {
            0
        };
        let message = Cqe {
            user_data: sqe.off_or_addr2,
            res: sqe.len as i32,
            flags,
        };
        if sqe.fd == fd {
            // A message lands as its MSG_RING runs, in submission order, like
            // one to another ring: posted ahead of the batch, never shuffled
            // or held back.
            batch.1.push(message);
            return 0;
        }
        match self.rings.get_mut(&sqe.fd) {
            Some(target) => {
                target.post(&mut self.faults, message, true);
                0
            }
            None if self.files.contains_key(&sqe.fd) => -libc::EBADFD,
            None => -libc::EBADF,
        }
    }

    /// Arms a timeout; `Err(res)` completes the SQE at once with `res`.
    fn timeout(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe) -> Result<(), i32> {
        const KNOWN: u32 = abi::IORING_TIMEOUT_ABS
            | abi::IORING_TIMEOUT_BOOTTIME
            | abi::IORING_TIMEOUT_REALTIME
            | abi::IORING_TIMEOUT_ETIME_SUCCESS
            | abi::IORING_TIMEOUT_MULTISHOT;
        let flags = sqe.op_flags;
        let both_clocks = abi::IORING_TIMEOUT_BOOTTIME | abi::IORING_TIMEOUT_REALTIME;
        if sqe.len != 1 || flags & !KNOWN != 0 || flags & both_clocks == both_clocks {
            return Err(-libc::EINVAL);
        }
        let ts = read_timespec(&self.loans, sqe.addr_or_splice_off_in)?;
        let absolute = flags & abi::IORING_TIMEOUT_ABS != 0;
        let ring = self
            .rings
            .get_mut(&fd)
            .expect("a live SimRing is registered with its kernel");
        let kind = if flags & abi::IORING_TIMEOUT_MULTISHOT != 0 {
            if absolute || ts.is_zero() {
                return Err(-libc::EINVAL);
            }
            let remaining = match sqe.off_or_addr2 {
                0 => None,
                n => Some(u32::try_from(n).map_err(|_| -libc::EINVAL)?),
            };
            TimeoutKind::Multishot {
                interval: ts,
                remaining,
            }
        } else {
            let count = sqe.off_or_addr2;
            TimeoutKind::Once {
                count_target: (count != 0).then(|| ring.counted.saturating_add(count)),
            }
        };
        let deadline = if absolute { ts } else { self.now.saturating_add(ts) };
        let seq = self.next_seq;
        self.next_seq += 1;
        ring.timeouts.push(Timeout {
            user_data: sqe.user_data,
            seq,
            sqe_flags: sqe.flags,
            deadline,
            kind,
        });
        Ok(())
    }

    fn timeout_remove(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe, batch: &mut Batch) -> i32 {
        let target = sqe.addr_or_splice_off_in;
        let flags = sqe.op_flags;
        if flags & abi::IORING_TIMEOUT_UPDATE != 0 {
            let known = abi::IORING_TIMEOUT_UPDATE
                | abi::IORING_TIMEOUT_ABS
                | abi::IORING_TIMEOUT_BOOTTIME
                | abi::IORING_TIMEOUT_REALTIME;
            if flags & !known != 0 {
                return -libc::EINVAL;
            }
            let ts = match read_timespec(&self.loans, sqe.off_or_addr2) {
                Ok(ts) => ts,
                Err(res) => return res,
            };
            let deadline = if flags & abi::IORING_TIMEOUT_ABS != 0 {
                ts
            } else {
                self.now.saturating_add(ts)
            };
            let Some(t) = self.ring(fd).timeouts.iter_mut().find(|t| t.user_data == target) else {
                return -libc::ENOENT;
            };
            t.deadline = deadline;
            return 0;
        }
        if flags != 0 {
            return -libc::EINVAL;
        }
        let Some(i) = self.ring(fd).timeouts.iter().position(|t| t.user_data == target) else {
            return -libc::ENOENT;
        };
        let lost = self.faults.cancel_race.tick(self.faults.faults.cancel_race_every);
        match self.cancel_pending(fd, vec![i], lost, batch) {
            Ok(_) => 0,
            Err(lost) => lost,
        }
    }

    fn async_cancel(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe, batch: &mut Batch) -> i32 {
        const KNOWN: u32 = abi::IORING_ASYNC_CANCEL_ALL
            | abi::IORING_ASYNC_CANCEL_FD
            | abi::IORING_ASYNC_CANCEL_ANY
            | abi::IORING_ASYNC_CANCEL_FD_FIXED
            | abi::IORING_ASYNC_CANCEL_USERDATA
            | abi::IORING_ASYNC_CANCEL_OP;
        let flags = sqe.op_flags;
        if flags & !KNOWN != 0 {
            return -libc::EINVAL;
        }
        if flags & abi::IORING_ASYNC_CANCEL_FD_FIXED != 0 {
            return -libc::EBADF; // no registered files
        }
        let any = flags & abi::IORING_ASYNC_CANCEL_ANY != 0;
        let by_fd = flags & abi::IORING_ASYNC_CANCEL_FD != 0;
        let by_op = flags & abi::IORING_ASYNC_CANCEL_OP != 0;
        let by_data = flags & abi::IORING_ASYNC_CANCEL_USERDATA != 0 || !(by_fd || by_op);
        let (data, opcode) = (sqe.addr_or_splice_off_in, sqe.len);
        let mut hits: Vec<usize> = self
            .ring(fd)
            .timeouts
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                // Timeouts hold no file.
                any || (!by_fd
                    && (!by_op || opcode == u32::from(abi::IORING_OP_TIMEOUT))
                    && (!by_data || t.user_data == data))
            })
            .map(|(i, _)| i)
            .collect();
        let target_fd = sqe.fd;
        let mut stream_hits = self.stream_cancel_hits(fd, |user_data, op_fd, op| {
            any || ((!by_fd || op_fd == target_fd)
                && (!by_op || opcode == u32::from(op))
                && (!by_data || user_data == data))
        });
        if hits.is_empty() && stream_hits.is_empty() {
            return -libc::ENOENT;
        }
        let all = flags & (abi::IORING_ASYNC_CANCEL_ALL | abi::IORING_ASYNC_CANCEL_ANY) != 0;
        if !all {
            if hits.is_empty() {
                stream_hits.truncate(1);
            } else {
                hits.truncate(1);
                stream_hits.clear();
            }
        }
        let lost = self.faults.cancel_race.tick(self.faults.faults.cancel_race_every);
        let mut cancelled = 0;
        let mut lost_any = false;
        if !hits.is_empty() {
            match self.cancel_pending(fd, hits, lost, batch) {
                Ok(n) => cancelled += n,
                Err(_) => lost_any = true,
            }
        }
        let mut raced = false;
        for seq in stream_hits {
            match self.stream_cancel(seq, lost, batch) {
                Some(true) => {
                    raced = true;
                    lost_any = true;
                }
                Some(false) => {
                    raced = true;
                    cancelled += 1;
                }
                None => cancelled += 1,
            }
        }
        if raced {
            self.faults.injected.cancel_races += 1;
        }
        match (lost_any, cancelled) {
            (_, n) if all && n > 0 => i32::try_from(n).unwrap_or(i32::MAX),
            // With ALL the kernel reports how many it cancelled: none.
            (true, _) if all => -libc::ENOENT,
            (true, _) => self.faults.lost_race_result(),
            (false, _) => 0,
        }
    }

    /// Ends the pending timeouts at `indices` of ring `fd` with `-ECANCELED`,
    /// or, if `lost` (the cancel-race fault fired), lets them complete
    /// normally and returns `Err(the cancel's result)`.
    fn cancel_pending(
        &mut self,
        fd: RawFd,
        mut indices: Vec<usize>,
        lost: bool,
        batch: &mut Batch,
    ) -> Result<usize, i32> {
        indices.sort_unstable();
        let ring = self
            .rings
            .get_mut(&fd)
            .expect("a live SimRing is registered with its kernel");
        let mut ended: Vec<Timeout> = indices.iter().rev().map(|&i| ring.timeouts.remove(i)).collect();
        ended.sort_by_key(|t| t.seq);
        let res = if lost { -libc::ETIME } else { -libc::ECANCELED };
        for t in &ended {
            batch.timeout(t.user_data, res);
        }
        if lost {
            self.faults.injected.cancel_races += 1;
            return Err(self.faults.lost_race_result());
        }
        Ok(ended.len())
    }

    /// `READ` and `RECV`: returns `(res, cqe flags)`.
    fn read(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe) -> (i32, u32) {
        let recv = sqe.opcode == abi::IORING_OP_RECV;
        if sqe.flags & abi::IOSQE_FIXED_FILE != 0 {
            return (-libc::EBADF, 0);
        }
        // Multishot, bundles and fixed buffers are not simulated.
        if recv && sqe.ioprio & !abi::IORING_RECVSEND_POLL_FIRST != 0 {
            return (-libc::EINVAL, 0);
        }
        let KernelState {
            files,
            rings,
            faults,
            loans,
            ..
        } = self;
        let Some(file) = files.get_mut(&sqe.fd) else {
            return (-libc::EBADF, 0);
        };
        if faults.eagain.tick(faults.faults.eagain_every) {
            faults.injected.eagain += 1;
            return (-libc::EAGAIN, 0);
        }
        let (dest, cap, flags) = if sqe.flags & abi::IOSQE_BUFFER_SELECT != 0 {
            if faults.enobufs.tick(faults.faults.enobufs_every) {
                faults.injected.enobufs += 1;
                return (-libc::ENOBUFS, 0);
            }
            let ring = rings
                .get_mut(&fd)
                .expect("a live SimRing is registered with its kernel");
            let group = sqe.buf_index_or_group;
            let Some(buf) = ring.select_buffer(loans, group) else {
                return (-libc::ENOBUFS, 0);
            };
            let cap = if sqe.len == 0 {
                buf.len
            } else {
                sqe.len.min(buf.len)
            };
            (
                buf.addr,
                cap,
                abi::IORING_CQE_F_BUFFER | u32::from(buf.bid) << abi::IORING_CQE_BUFFER_SHIFT,
            )
        } else {
            if sqe.addr_or_splice_off_in == 0 && sqe.len > 0 {
                return (-libc::EFAULT, 0);
            }
            (sqe.addr_or_splice_off_in, sqe.len, 0)
        };
        let at_position = recv || sqe.off_or_addr2 == u64::MAX;
        let offset = if at_position { file.pos } else { sqe.off_or_addr2 };
        let available = (file.data.len() as u64).saturating_sub(offset);
        let mut n = u64::from(cap).min(available).min(i32::MAX as u64);
        if let Some(max) = faults.faults.short_read_max.filter(|&m| m > 0) {
            let limit = 1 + faults.rng.below(u64::from(max));
            if n > limit {
                n = limit;
                faults.injected.short_reads += 1;
            }
        }
        if n > 0 {
            // `offset < data.len()` here, and `offset + n <= data.len()`, both fit usize.
            let start = offset as usize;
            let src = &file.data[start..start + n as usize];
            // SAFETY: `dest` came in an SQE pushed with `Ring::push_unchecked` (or
            // lent by PROVIDE_BUFFERS through it), whose caller promised `cap >= n`
            // writable bytes there, untouched by anyone else, until the final CQE.
            if let Err(res) = unsafe { copy_to_user(loans, dest, src) } {
                return (res, 0);
            }
        }
        if at_position {
            file.pos = offset + n;
        }
        (n as i32, flags)
    }

    fn write(&mut self, sqe: &abi::io_uring_sqe) -> i32 {
        if sqe.flags & abi::IOSQE_FIXED_FILE != 0 {
            return -libc::EBADF;
        }
        let KernelState {
            files, faults, loans, ..
        } = self;
        let Some(file) = files.get_mut(&sqe.fd) else {
            return -libc::EBADF;
        };
        if faults.eagain.tick(faults.faults.eagain_every) {
            faults.injected.eagain += 1;
            return -libc::EAGAIN;
        }
        let (addr, len) = (sqe.addr_or_splice_off_in, sqe.len);
        if addr == 0 && len > 0 {
            return -libc::EFAULT;
        }
        let at_position = sqe.off_or_addr2 == u64::MAX;
        let offset = if at_position { file.pos } else { sqe.off_or_addr2 };
        let end = offset.saturating_add(u64::from(len));
        if end > MAX_FILE_LEN {
            return -libc::EFBIG;
        }
        let (start, end) = (offset as usize, end as usize);
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        if end > start {
            // SAFETY: `addr` came in an SQE pushed with `Ring::push_unchecked`, whose
            // caller promised `len` readable bytes there until the final CQE.
            if let Err(res) = unsafe { copy_from_user(loans, addr, &mut file.data[start..end]) } {
                return res;
            }
        }
        if at_position {
            file.pos = end as u64;
        }
        len as i32
    }

    /// Accepts a zero-copy send to an in-memory file: its count now, its bytes
    /// and notification later ([`KernelState::release_notifications`]).
    fn send_zc(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe) -> Result<i32, i32> {
        if sqe.flags & abi::IOSQE_FIXED_FILE != 0 {
            return Err(-libc::EBADF);
        }
        if sqe.ioprio & abi::IORING_RECVSEND_FIXED_BUF != 0 {
            return Err(-libc::EINVAL);
        }
        if !self.files.contains_key(&sqe.fd) {
            return Err(-libc::EBADF);
        }
        if self.faults.eagain.tick(self.faults.faults.eagain_every) {
            self.faults.injected.eagain += 1;
            return Err(-libc::EAGAIN);
        }
        let (addr, len) = (sqe.addr_or_splice_off_in, sqe.len.min(i32::MAX as u32));
        if len > 0 {
            // The range must be mapped now (the kernel pins the pages at submission).
            self.loans.pointer(addr, len as usize, false)?;
        }
        self.ring(fd).zc_sends.push(ZcSend {
            user_data: sqe.user_data,
            file: sqe.fd,
            addr,
            len,
        });
        Ok(len as i32)
    }

    /// Reads the buffers of ring `fd`'s pending zero-copy sends into their
    /// files and posts each one's notification, except where the send's own
    /// completion is still held back (a notification never overtakes it).
    /// Returns whether it posted any.
    fn release_notifications(&mut self, fd: RawFd) -> bool {
        let KernelState {
            rings,
            files,
            loans,
            faults,
            ..
        } = self;
        let ring = rings
            .get_mut(&fd)
            .expect("a live SimRing is registered with its kernel");
        let mut posted = false;
        let mut i = 0;
        while i < ring.zc_sends.len() {
            let user_data = ring.zc_sends[i].user_data;
            if ring.delayed.iter().any(|d| d.cqe.user_data == user_data) {
                i += 1;
                continue;
            }
            let send = ring.zc_sends.remove(i);
            let mut bytes = vec![0; send.len as usize];
            // SAFETY: `addr` came in a SEND_ZC SQE pushed with `Ring::push_unchecked`,
            // whose caller promised `len` readable bytes there until the op's final
            // CQE, which is the notification posted below.
            let read = unsafe { copy_from_user(loans, send.addr, &mut bytes) };
            if let (Ok(()), Some(file)) = (read, files.get_mut(&send.file)) {
                let room = (MAX_FILE_LEN as usize).saturating_sub(file.data.len());
                bytes.truncate(room);
                file.data.extend_from_slice(&bytes);
            }
            let notification = Cqe {
                user_data,
                res: 0,
                flags: abi::IORING_CQE_F_NOTIF,
            };
            ring.post(faults, notification, true);
            posted = true;
        }
        posted
    }

    fn provide_buffers(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe) -> i32 {
        let (count, len, first_bid, addr) = (sqe.fd, sqe.len, sqe.off_or_addr2, sqe.addr_or_splice_off_in);
        let Ok(count) = u64::try_from(count) else {
            return -libc::EINVAL;
        };
        if count == 0 || count > MAX_BUFFERS || len == 0 || first_bid.saturating_add(count) > MAX_BUFFERS {
            return -libc::EINVAL;
        }
        if addr == 0 {
            return -libc::EFAULT;
        }
        if addr.checked_add(count * u64::from(len)).is_none() {
            return -libc::EOVERFLOW;
        }
        if self.ring(fd).pbuf_rings.contains_key(&sqe.buf_index_or_group) {
            return -libc::EINVAL;
        }
        let list = self.ring(fd).buffers.entry(sqe.buf_index_or_group).or_default();
        for i in 0..count {
            list.push_back(ProvidedBuf {
                addr: addr + i * u64::from(len),
                len,
                bid: (first_bid + i) as u16,
            });
        }
        0
    }

    fn remove_buffers(&mut self, fd: RawFd, sqe: &abi::io_uring_sqe) -> i32 {
        let Ok(count) = usize::try_from(sqe.fd) else {
            return -libc::EINVAL;
        };
        if count == 0 || count as u64 > MAX_BUFFERS {
            return -libc::EINVAL;
        }
        let Some(list) = self.ring(fd).buffers.get_mut(&sqe.buf_index_or_group) else {
            return -libc::ENOENT;
        };
        let n = count.min(list.len());
        list.drain(..n);
        n as i32
    }
}

/// One range of user memory lent with [`SimKernel::lend`] (or its
/// siblings), and the memory itself: the pointer user addresses inside it
/// are derived from, so the simulator never turns a bare integer into a
/// pointer.
struct Loan {
    /// Start of the heap buffer of the `Vec` in `_memory`.
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    /// The `Vec<T>` that owns the bytes at `ptr`: freed with the loan, never
    /// before, so `ptr..ptr + len` stays valid while the loan is registered.
    _memory: Box<dyn Any + Send>,
}

// SAFETY: `ptr` points into `_memory`, which is `Send`; it is only dereferenced
// by the simulated kernel with the kernel lock held, from whichever thread
// enters, and nothing else reaches that memory while the loan is registered.
unsafe impl Send for Loan {}

/// Every loan of one kernel, by start address (and a serial number, so the
/// same memory may be lent more than once).
#[derive(Default)]
struct Loans {
    next_id: u64,
    by_start: BTreeMap<(usize, u64), Loan>,
}

impl Loans {
    /// A pointer to `len` bytes at user address `addr`.
    ///
    /// Inside a loan, the pointer carries the loan's provenance (an `EFAULT`
    /// if the range runs past the loan's end, or a write hits read-only
    /// memory). Outside every loan, it is made from the address's exposed
    /// provenance, which works natively and under plain Miri but not under
    /// `-Zmiri-strict-provenance`, where all memory must be lent.
    fn pointer(&self, addr: u64, len: usize, write: bool) -> Result<*mut u8, i32> {
        let addr = usize::try_from(addr).map_err(|_| -libc::EFAULT)?;
        let end = addr.checked_add(len).ok_or(-libc::EFAULT)?;
        if addr == 0 {
            return Err(-libc::EFAULT);
        }
        let mut overrun = false;
        for (&(start, _), loan) in self.by_start.range(..=(addr, u64::MAX)).rev() {
            let loan_end = start + loan.len;
            if end <= loan_end {
                if write && !loan.writable {
                    return Err(-libc::EFAULT);
                }
                return Ok(loan.ptr.as_ptr().with_addr(addr));
            }
            overrun |= addr < loan_end;
        }
        if overrun {
            return Err(-libc::EFAULT);
        }
        Ok(ptr::with_exposed_provenance_mut(addr))
    }
}

/// Reads the `__kernel_timespec` at user address `addr` as a duration.
fn read_timespec(loans: &Loans, addr: u64) -> Result<Duration, i32> {
    let ptr = loans.pointer(addr, size_of::<abi::kernel_timespec>(), false)?;
    // SAFETY: the SQE that carries `addr` was pushed with `Ring::push_unchecked`,
    // whose caller promised the timespec stays valid until the final CQE; it is
    // read once, here at submission, as the kernel does. No alignment is assumed.
    let ts = unsafe { ptr.cast::<abi::kernel_timespec>().read_unaligned() };
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(-libc::EINVAL);
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Copies `src` to user memory at `addr`; `Err(-errno)` for a bad address.
///
/// # Safety
///
/// Unless `addr` lies in a loan that says otherwise, it must point at
/// `src.len()` writable bytes that nothing else accesses during the call (the
/// promise of `Ring::push_unchecked`'s caller).
unsafe fn copy_to_user(loans: &Loans, addr: u64, src: &[u8]) -> Result<(), i32> {
    let dst = loans.pointer(addr, src.len(), true)?;
    // SAFETY: `dst` is valid for `src.len()` bytes by the caller's contract, and
    // cannot overlap `src`, which is the simulator's own memory.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    Ok(())
}

/// Copies user memory at `addr` into `dst`; `Err(-errno)` for a bad address.
///
/// # Safety
///
/// Unless `addr` lies in a loan that says otherwise, it must point at
/// `dst.len()` readable bytes that nothing writes during the call (the promise
/// of `Ring::push_unchecked`'s caller).
unsafe fn copy_from_user(loans: &Loans, addr: u64, dst: &mut [u8]) -> Result<(), i32> {
    let src = loans.pointer(addr, dst.len(), false)?;
    // SAFETY: `src` is valid for `dst.len()` bytes by the caller's contract, and
    // cannot overlap `dst`, which is the simulator's own memory.
    unsafe { ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
    Ok(())
}

/// Heap memory with the alignment of a page, zeroed, freed on drop.
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    fn zeroed(len: usize) -> io::Result<Region> {
        let layout = Layout::from_size_align(len.max(1), 4096)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        NonNull::new(ptr)
            .map(|ptr| Region { ptr, layout })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
    }

    fn word(&self, offset: u32) -> &AtomicU32 {
        debug_assert!(offset as usize + 4 <= self.layout.size() && offset.is_multiple_of(4));
        // SAFETY: offsets are the constants above (4-aligned, inside the region
        // sized in `SimRing::setup`); the region lives as long as `self`, and
        // every access to index words, ours or the Ring's, is atomic.
        unsafe { self.ptr.add(offset as usize).cast::<AtomicU32>().as_ref() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `Region::zeroed` with this layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

// SAFETY: a Region is an owned heap allocation; concurrent access goes through
// atomics (index words) or is ordered by the ring protocol (slots).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// The memory of one simulated ring, shared with the [`Ring`](crate::ring::Ring)
/// that drives it, and the condition variable its waiters sleep on.
struct RingShared {
    fd: RawFd,
    ring: Region,
    sqes: Region,
    sq_entries: u32,
    cq_entries: u32,
    sq_array: Option<u32>,
    /// Signalled on every CQE posted to this ring; used with the kernel mutex.
    posted: Condvar,
}

impl RingShared {
    /// Writes a CQE into the CQ if there is room. Called with the kernel lock
    /// held, so this is the CQ's only producer.
    fn try_write_cqe(&self, cqe: Cqe) -> bool {
        // Acquire pairs with the Ring's release of the CQ head: the consumer has
        // finished reading the slots before head.
        let head = self.ring.word(CQ_HEAD).load(Ordering::Acquire);
        let tail = self.ring.word(CQ_TAIL).load(Ordering::Relaxed);
        if index::space(head, tail, self.cq_entries) == 0 {
            return false;
        }
        let slot = index::slot(tail, self.cq_entries - 1);
        // SAFETY: `slot < cq_entries`, inside the CQE array of the region; the slot
        // is free (tail - head < entries) and only the lock holder writes slots.
        unsafe {
            self.ring
                .ptr
                .add(CQES as usize)
                .cast::<abi::io_uring_cqe>()
                .add(slot as usize)
                .write(cqe.to_raw())
        };
        // Release pairs with the Ring's acquire of the CQ tail: the slot write is
        // visible before the new tail.
        self.ring
            .word(CQ_TAIL)
            .store(tail.wrapping_add(1), Ordering::Release);
        true
    }

    fn cq_ready(&self) -> u32 {
        // Acquire: see `try_write_cqe`; the tail is ours (we hold the lock).
        let head = self.ring.word(CQ_HEAD).load(Ordering::Acquire);
        index::len(head, self.ring.word(CQ_TAIL).load(Ordering::Relaxed))
    }

    /// Reads the SQE at SQ index `idx`, through the index array if there is
    /// one; `None` when the array names a slot out of range (the kernel drops it).
    fn read_sqe(&self, idx: u32) -> Option<abi::io_uring_sqe> {
        let mask = self.sq_entries - 1;
        let slot = match self.sq_array {
            Some(array) => {
                // SAFETY: the array has `sq_entries` u32s at `array`, inside the region;
                // the Ring wrote it before publishing the tail we acquired.
                let v = unsafe {
                    self.ring
                        .ptr
                        .add(array as usize)
                        .cast::<u32>()
                        .add(index::slot(idx, mask) as usize)
                        .read()
                };
                if v >= self.sq_entries {
                    return None;
                }
                v
            }
            None => index::slot(idx, mask),
        };
        // SAFETY: `slot < sq_entries`, inside the SQE region; published by the
        // Ring's release of the SQ tail, which `submit` acquired.
        Some(unsafe {
            self.sqes
                .ptr
                .cast::<abi::io_uring_sqe>()
                .add(slot as usize)
                .read()
        })
    }
}

/// One simulated ring: the kernel side of a [`Ring`](crate::ring::Ring) built
/// with [`Ring::sim`](crate::ring::Ring::sim), reachable through
/// [`Ring::sim_ring`](crate::ring::Ring::sim_ring).
pub struct SimRing {
    kernel: SimKernel,
    shared: Arc<RingShared>,
}

impl std::fmt::Debug for SimRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRing")
            .field("fd", &self.shared.fd)
            .finish_non_exhaustive()
    }
}

impl SimRing {
    /// Allocates ring memory laid out like the kernel's and fills `params`.
    pub(crate) fn setup(
        kernel: &SimKernel,
        config: &RingConfig,
        params: &mut abi::io_uring_params,
    ) -> io::Result<SimRing> {
        if config.sq_entries == 0 || config.sq_entries > 32768 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let sq_entries = config.sq_entries.next_power_of_two();
        let cq_entries = if config.cq_entries == 0 {
            sq_entries * 2
        } else {
            config.cq_entries.next_power_of_two()
        };
        if cq_entries < sq_entries || cq_entries > 65536 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let no_sqarray = config.no_sqarray;
        let array_off = CQES + cq_entries * 16;
        let ring_len = array_off as usize + if no_sqarray { 0 } else { sq_entries as usize * 4 };
        let ring = Region::zeroed(ring_len)?;
        let sqes = Region::zeroed(sq_entries as usize * 64)?;
        ring.word(SQ_MASK).store(sq_entries - 1, Ordering::Relaxed);
        ring.word(SQ_ENTRIES).store(sq_entries, Ordering::Relaxed);
        ring.word(CQ_MASK).store(cq_entries - 1, Ordering::Relaxed);
        ring.word(CQ_ENTRIES).store(cq_entries, Ordering::Relaxed);

        *params = abi::io_uring_params::default();
        params.sq_entries = sq_entries;
        params.cq_entries = cq_entries;
        params.flags = abi::IORING_SETUP_CQSIZE
            | if no_sqarray {
                abi::IORING_SETUP_NO_SQARRAY
            } else {
                0
            };
        params.features = abi::IORING_FEAT_SINGLE_MMAP
            | abi::IORING_FEAT_NODROP
            | abi::IORING_FEAT_EXT_ARG
            | abi::IORING_FEAT_CQE_SKIP
            | abi::IORING_FEAT_RW_CUR_POS;
        params.sq_off = abi::io_sqring_offsets {
            head: SQ_HEAD,
            tail: SQ_TAIL,
            ring_mask: SQ_MASK,
            ring_entries: SQ_ENTRIES,
            flags: SQ_FLAGS,
            dropped: SQ_DROPPED,
            array: if no_sqarray { 0 } else { array_off },
            ..Default::default()
        };
        params.cq_off = abi::io_cqring_offsets {
            head: CQ_HEAD,
            tail: CQ_TAIL,
            ring_mask: CQ_MASK,
            ring_entries: CQ_ENTRIES,
            overflow: CQ_OVERFLOW,
            cqes: CQES,
            flags: CQ_FLAGS,
            ..Default::default()
        };

        let mut k = kernel.lock();
        for word in [SQ_HEAD, SQ_TAIL, CQ_HEAD, CQ_TAIL] {
            ring.word(word).store(k.initial_index, Ordering::Relaxed);
        }
        let fd = k.allocate_fd();
        let shared = Arc::new(RingShared {
            fd,
            ring,
            sqes,
            sq_entries,
            cq_entries,
            sq_array: if no_sqarray { None } else { Some(array_off) },
            posted: Condvar::new(),
        });
        k.rings.insert(
            fd,
            RingState {
                shared: shared.clone(),
                overflow: VecDeque::new(),
                delayed: Vec::new(),
                timeouts: Vec::new(),
                counted: 0,
                buffers: HashMap::new(),
                pbuf_rings: HashMap::new(),
                zc_sends: Vec::new(),
            },
        );
        drop(k);
        Ok(SimRing {
            kernel: kernel.clone(),
            shared,
        })
    }

    /// Base pointers of the SQ ring, CQ ring and SQE regions.
    pub(crate) fn regions(&self) -> (NonNull<u8>, NonNull<u8>, NonNull<abi::io_uring_sqe>) {
        (
            self.shared.ring.ptr,
            self.shared.ring.ptr,
            self.shared.sqes.ptr.cast(),
        )
    }

    /// Bytes of the region that holds both rings (indices, CQEs, SQ index array).
    pub(crate) fn ring_len(&self) -> usize {
        self.shared.ring.layout.size()
    }

    /// Bytes of the SQE region.
    pub(crate) fn sqes_len(&self) -> usize {
        self.shared.sqes.layout.size()
    }

    /// The ring's fake fd number (unique within its [`SimKernel`]).
    pub fn fd(&self) -> RawFd {
        self.shared.fd
    }

    /// The simulated kernel this ring belongs to.
    pub fn kernel(&self) -> &SimKernel {
        &self.kernel
    }

    /// A value that keeps this ring's memory alive while it lives. (The ring
    /// stops being a `MSG_RING` target when its `SimRing` drops.)
    pub(crate) fn keep_alive(&self) -> Arc<dyn Any + Send + Sync> {
        Arc::new(self.shared.clone())
    }

    fn with_state<T>(&self, f: impl FnOnce(&RingState) -> T) -> T {
        let k = self.kernel.lock();
        f(k.rings
            .get(&self.shared.fd)
            .expect("a live SimRing is registered with its kernel"))
    }

    /// Registers a provided-buffer ring with this ring
    /// (`IORING_REGISTER_PBUF_RING`).
    ///
    /// # Errors
    ///
    /// `EINVAL` for flags, or entries that are not a power of two up to
    /// 32768; `EEXIST` when `reg.bgid` is taken.
    ///
    /// # Safety
    ///
    /// `reg.ring_addr` points at `reg.ring_entries` `io_uring_buf` entries,
    /// page aligned, that stay valid until the group is unregistered, which
    /// the caller writes only as the buffer ring protocol allows (slots
    /// outside the kernel's window, the tail atomically); every buffer an
    /// entry names is writable for its length until an op's CQE hands it over.
    pub(crate) unsafe fn register_pbuf_ring(&self, reg: &abi::io_uring_buf_reg) -> io::Result<()> {
        let entries = reg.ring_entries;
        if reg.flags != 0 || !entries.is_power_of_two() || entries > 32768 || reg.ring_addr == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut k = self.kernel.lock();
        let ring = k.ring(self.shared.fd);
        if ring.pbuf_rings.contains_key(&reg.bgid) || ring.buffers.contains_key(&reg.bgid) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        ring.pbuf_rings.insert(
            reg.bgid,
            PbufRing {
                addr: reg.ring_addr,
                entries: entries as u16,
                head: 0,
            },
        );
        Ok(())
    }

    /// CQEs held on the simulated kernel's overflow list.
    pub fn overflowed(&self) -> usize {
        self.with_state(|r| r.overflow.len())
    }

    /// CQEs held back by [`Faults::delay_cqes`], not yet posted.
    pub fn delayed(&self) -> usize {
        self.with_state(|r| r.delayed.len())
    }

    /// Ops the kernel still holds (pending timeouts, zero-copy sends awaiting
    /// their notification, stream ops waiting for data, room or a
    /// connection): each will post at least one more CQE.
    pub fn pending_ops(&self) -> usize {
        let k = self.kernel.lock();
        let r = k
            .rings
            .get(&self.shared.fd)
            .expect("a live SimRing is registered with its kernel");
        r.timeouts.len() + r.zc_sends.len() + k.streams.pending_on(self.shared.fd)
    }

    /// The kernel side of `io_uring_enter`.
    ///
    /// In order: injected `EINTR`/`EBUSY` (before anything else), release of
    /// held-back CQEs that are due, submission of up to `to_submit` SQEs, and
    /// with `GETEVENTS`, a flush of the overflow list and a wait for
    /// `min_complete` ready CQEs.
    pub(crate) fn enter(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        wait: EnterWait,
    ) -> io::Result<(u32, bool)> {
        let fd = self.shared.fd;
        let getevents = flags & abi::IORING_ENTER_GETEVENTS != 0;
        let mut k = self.kernel.lock();
        let state = &mut *k;
        let faults = &mut state.faults;
        if getevents && faults.eintr.tick(faults.faults.enter_eintr_every) {
            faults.injected.eintr += 1;
            return Err(io::Error::from_raw_os_error(libc::EINTR));
        }
        let refuse_first = faults.faults.enter_ebusy_first > 0;
        if refuse_first {
            faults.faults.enter_ebusy_first -= 1;
        }
        if refuse_first || faults.ebusy.tick(faults.faults.enter_ebusy_every) {
            faults.injected.ebusy += 1;
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let ring = state
            .rings
            .get_mut(&fd)
            .expect("a live SimRing is registered with its kernel");
        if to_submit > 0 && faults.faults.ebusy_while_overflowed {
            ring.flush_overflow();
            if !ring.overflow.is_empty() {
                faults.injected.ebusy += 1;
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
        }
        ring.release_delayed(faults, false);
        k.release_notifications(fd);
        // Stream ends whose fds were closed are forgotten before any SQE names
        // a number (which may since name another file).
        k.streams.sync_closed();
        let submitted = k.submit(fd, to_submit);
        // Woken stream ops run after the SQEs (the kernel's task work).
        k.stream_progress();
        if !getevents {
            return Ok((submitted, false));
        }
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            let state = &mut *k;
            state.stream_progress();
            let ring = state
                .rings
                .get_mut(&fd)
                .expect("a live SimRing is registered with its kernel");
            ring.flush_overflow();
            if self.shared.cq_ready() >= min_complete {
                return Ok((submitted, false));
            }
            // About to block: post what is held back first, as the kernel runs
            // pending task work before it sleeps.
            if ring.release_delayed(&mut state.faults, true) || state.release_notifications(fd) {
                continue;
            }
            if state.auto_advance
                && let Some(next) = state.next_deadline()
            {
                state.advance_to(next);
                continue;
            }
            match wait {
                EnterWait::Forever => k = self.shared.posted.wait(k).unwrap_or_else(|p| p.into_inner()),
                EnterWait::Timeout(d) if d.is_zero() => return Ok((submitted, true)),
                EnterWait::Timeout(d) => match *deadline.get_or_insert_with(|| Instant::now().checked_add(d))
                {
                    // Too far to represent: wait without a limit.
                    None => k = self.shared.posted.wait(k).unwrap_or_else(|p| p.into_inner()),
                    Some(at) => {
                        let now = Instant::now();
                        if now >= at {
                            return Ok((submitted, true));
                        }
                        k = self
                            .shared
                            .posted
                            .wait_timeout(k, at - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                },
            }
        }
    }
}

impl Drop for SimRing {
    fn drop(&mut self) {
        // Pending ops and held CQEs of the ring go with it, as on close.
        let mut k = self.kernel.lock();
        k.rings.remove(&self.shared.fd);
        k.streams.drop_ring(self.shared.fd);
    }
}
