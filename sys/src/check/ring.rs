//! Invariants: ring.
//!
//! The SQ/CQ protocol of [`Ring`] against the simulated kernel of
//! [`crate::sim`]: index arithmetic, capacity edges, a byte-driven model
//! comparison, and "no completion is ever lost" under injected faults. Each
//! function panics with a message naming the broken invariant.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use crate::abi;
use crate::cqe::Cqe;
use crate::ring::{PushError, Ring, RingConfig, index};
use crate::sim::{Faults, SimKernel};
use crate::sqe::Sqe;

/// Index arithmetic of a ring with `entries` slots, head `head`, tail `tail`
/// (any values: they may have wrapped past `u32::MAX`).
///
/// Checks that the length is the wrapping distance, that free space and
/// length add up to the capacity (space saturates at zero for inconsistent
/// indices), that full and empty hold exactly at `entries` and 0, and that
/// the live indices address distinct slots that stay inside the ring.
///
/// # Panics
///
/// When an invariant breaks.
pub fn index_math(head: u32, tail: u32, entries: u32) {
    let len = index::len(head, tail);
    assert_eq!(
        head.wrapping_add(len),
        tail,
        "len({head}, {tail}) = {len} does not lead from head to tail"
    );
    let space = index::space(head, tail, entries);
    if len <= entries {
        assert_eq!(
            space + len,
            entries,
            "space {space} + len {len} != entries {entries}"
        );
        assert_eq!(
            space == 0,
            len == entries,
            "full must mean len == entries ({len}/{entries})"
        );
    } else {
        assert_eq!(
            space, 0,
            "inconsistent indices (len {len} > entries {entries}) must leave no space"
        );
    }
    assert_eq!(len == 0, head == tail, "empty must mean head == tail");
    if !index::valid_entries(entries) {
        return;
    }
    let mask = entries - 1;
    let live = len.min(entries);
    let mut used = vec![false; entries.min(1 << 16) as usize];
    for i in 0..live.min(1 << 16) {
        let slot = index::slot(head.wrapping_add(i), mask);
        assert!(slot < entries, "slot {slot} outside a ring of {entries}");
        if let Some(u) = used.get_mut(slot as usize) {
            assert!(
                !*u,
                "two live indices share slot {slot} (head {head}, {len} entries of {entries})"
            );
            *u = true;
        }
    }
    // The slot after the last live one is the one the producer writes next.
    if len < entries {
        let next = index::slot(tail, mask);
        if let Some(u) = used.get(next as usize) {
            assert!(!*u, "the producer's next slot {next} is still live");
        }
    }
}

/// A simulated ring of `1 << sq_log2` SQ slots (`sq_log2` taken mod 5) and a
/// CQ `2 << (cq_shift & 1)` times larger, its indices starting at `initial`:
/// checks that the SQ is empty, fills exactly at capacity, and that the CQ
/// holds exactly its capacity before the next CQE overflows, is flushed by a
/// `GETEVENTS` enter once there is room, and arrives in order.
///
/// # Panics
///
/// When an invariant breaks.
pub fn capacity_edges(initial: u32, sq_log2: u8, cq_shift: u8) {
    let sq_entries = 1u32 << (sq_log2 % 5);
    let cq_entries = sq_entries << (1 + (cq_shift & 1));
    let kernel = SimKernel::new();
    kernel.set_initial_index(initial);
    let config = RingConfig {
        sq_entries,
        cq_entries,
        ..RingConfig::default()
    };
    let mut ring = Ring::sim(&kernel, &config).expect("sim ring setup");
    assert_eq!((ring.sq_entries(), ring.cq_entries()), (sq_entries, cq_entries));
    assert_eq!(
        (ring.sq_len(), ring.sq_space(), ring.cq_len()),
        (0, sq_entries, 0),
        "a new ring is empty"
    );

    let mut next = 0u64;
    for i in 0..sq_entries {
        ring.push(&Sqe::nop().user_data(next)).expect("room in the SQ");
        next += 1;
        assert_eq!(ring.sq_len(), i + 1);
        assert_eq!(ring.sq_space(), sq_entries - i - 1);
    }
    assert_eq!(ring.sq_space(), 0, "SQ full exactly at {sq_entries}");
    assert_eq!(ring.cq_len(), 0, "nothing submitted yet");
    assert_eq!(ring.submit().expect("submit"), sq_entries);
    assert_eq!((ring.sq_len(), ring.cq_len()), (0, sq_entries));

    while next < u64::from(cq_entries) {
        ring.push(&Sqe::nop().user_data(next)).expect("room in the SQ");
        next += 1;
        ring.submit().expect("submit");
    }
    assert_eq!(ring.cq_len(), cq_entries, "CQ full exactly at {cq_entries}");
    assert!(
        !ring.cq_overflow_pending(),
        "a CQ filled exactly to capacity has not overflowed"
    );
    assert_eq!(overflowed(&ring), 0);

    ring.push(&Sqe::nop().user_data(next)).expect("room in the SQ");
    next += 1;
    ring.submit().expect("submit");
    assert_eq!(ring.cq_len(), cq_entries);
    assert!(
        ring.cq_overflow_pending(),
        "one CQE past capacity sets IORING_SQ_CQ_OVERFLOW"
    );
    assert_eq!(overflowed(&ring), 1);

    assert_eq!(
        ring.pop_cqe().map(|c| c.user_data),
        Some(0),
        "CQEs arrive in order"
    );
    ring.submit_and_flush().expect("flush");
    assert_eq!(ring.cq_len(), cq_entries, "the flush filled the freed slot");
    assert!(!ring.cq_overflow_pending(), "the flush emptied the overflow list");
    let rest: Vec<u64> = std::iter::from_fn(|| ring.pop_cqe())
        .map(|c| c.user_data)
        .collect();
    assert_eq!(
        rest,
        (1..next).collect::<Vec<_>>(),
        "CQEs arrive in order, none lost or repeated"
    );
    assert_eq!(ring.cq_len(), 0);
}

/// CQEs on the simulated kernel's overflow list for `ring`.
fn overflowed(ring: &Ring) -> usize {
    ring.sim_ring().expect("a simulated ring").overflowed()
}

/// An SQE the model tracks from push to completion.
#[derive(Clone, Copy, Debug)]
enum Queued {
    Nop { user_data: u64 },
    Timeout { user_data: u64, after: Duration },
    Cancel { user_data: u64, target: u64 },
}

/// The expected state of one simulated ring with no faults: what the SQ, the
/// CQ, the kernel's overflow list and its pending timeouts hold.
struct Model {
    sq_entries: usize,
    cq_entries: usize,
    sq: VecDeque<Queued>,
    cq: VecDeque<Cqe>,
    overflow: VecDeque<Cqe>,
    /// Pending timeouts: (user_data, deadline, submission order).
    timeouts: Vec<(u64, Duration, u64)>,
    now: Duration,
    seq: u64,
}

impl Model {
    fn post(&mut self, cqe: Cqe) {
        if !self.overflow.is_empty() || self.cq.len() == self.cq_entries {
            self.overflow.push_back(cqe);
        } else {
            self.cq.push_back(cqe);
        }
    }

    fn flush(&mut self) {
        while self.cq.len() < self.cq_entries {
            let Some(c) = self.overflow.pop_front() else {
                return;
            };
            self.cq.push_back(c);
        }
    }

    fn fire_expired(&mut self) {
        while let Some(i) = (0..self.timeouts.len())
            .filter(|&i| self.timeouts[i].1 <= self.now)
            .min_by_key(|&i| (self.timeouts[i].1, self.timeouts[i].2))
        {
            let (user_data, _, _) = self.timeouts.remove(i);
            self.post(Cqe {
                user_data,
                res: -libc::ETIME,
                flags: 0,
            });
        }
    }

    /// What an enter that submits the whole SQ does.
    fn submit(&mut self) {
        if self.sq.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        while let Some(q) = self.sq.pop_front() {
            match q {
                Queued::Nop { user_data } => batch.push(Cqe {
                    user_data,
                    res: 0,
                    flags: 0,
                }),
                Queued::Timeout { user_data, after } => {
                    self.timeouts.push((user_data, self.now + after, self.seq));
                    self.seq += 1;
                }
                Queued::Cancel { user_data, target } => {
                    match self.timeouts.iter().position(|t| t.0 == target) {
                        Some(i) => {
                            self.timeouts.remove(i);
                            batch.push(Cqe {
                                user_data: target,
                                res: -libc::ECANCELED,
                                flags: 0,
                            });
                            batch.push(Cqe {
                                user_data,
                                res: 0,
                                flags: 0,
                            });
                        }
                        None => batch.push(Cqe {
                            user_data,
                            res: -libc::ENOENT,
                            flags: 0,
                        }),
                    }
                }
            }
        }
        for c in batch {
            self.post(c);
        }
        self.fire_expired();
    }

    fn push(&mut self, q: Queued) {
        if self.sq.len() == self.sq_entries {
            self.submit();
        }
        self.sq.push_back(q);
    }
}

fn timeout_sqe(user_data: u64, ts_addr: u64) -> Sqe {
    Sqe::from_raw(abi::io_uring_sqe {
        opcode: abi::IORING_OP_TIMEOUT,
        addr_or_splice_off_in: ts_addr,
        len: 1,
        user_data,
        ..Default::default()
    })
}

fn cancel_sqe(user_data: u64, target: u64) -> Sqe {
    Sqe::from_raw(abi::io_uring_sqe {
        opcode: abi::IORING_OP_ASYNC_CANCEL,
        fd: -1,
        addr_or_splice_off_in: target,
        user_data,
        ..Default::default()
    })
}

/// Interprets `ops` as commands on a simulated ring and compares every step
/// with a plain model of the SQ, CQ, overflow list and pending timeouts.
///
/// Byte 0 puts the ring's indices within 255 of `u32::MAX` (so they wrap),
/// byte 1 picks the sizes (SQ 1–8, CQ 2× or 4×) and whether the SQ has an
/// index array. Each later byte is a command in its low 3 bits with a
/// parameter `p` in the high 5: push a NOP; push a TIMEOUT of `p` ms; push an
/// ASYNC_CANCEL of the `p`-th timeout pushed so far (or of nothing); submit;
/// submit and flush; pop one CQE; advance the clock `p` ms; drain the CQ.
/// At the end everything is flushed, the clock runs out, and the ring and the
/// model must both be empty.
///
/// # Panics
///
/// When the ring and the model disagree.
pub fn model_ops(ops: &[u8]) {
    let mut bytes = ops.iter().copied();
    let (Some(wrap), Some(shape)) = (bytes.next(), bytes.next()) else {
        return;
    };
    let sq_entries = 1u32 << (shape & 3);
    let cq_entries = sq_entries << (1 + ((shape >> 2) & 1));
    let no_sqarray = shape & 8 != 0;

    // One timespec per possible parameter, lent before the ring is made so they
    // outlive every SQE that points at them.
    let timespecs: [abi::kernel_timespec; 32] = std::array::from_fn(|ms| abi::kernel_timespec {
        tv_sec: 0,
        tv_nsec: ms as i64 * 1_000_000,
    });
    let kernel = SimKernel::new();
    let lent = kernel.lend_value(timespecs);
    kernel.set_initial_index(u32::MAX - u32::from(wrap));
    let config = RingConfig {
        sq_entries,
        cq_entries,
        no_sqarray,
        ..RingConfig::default()
    };
    let mut ring = Ring::sim(&kernel, &config).expect("sim ring setup");
    let mut model = Model {
        sq_entries: sq_entries as usize,
        cq_entries: cq_entries as usize,
        sq: VecDeque::new(),
        cq: VecDeque::new(),
        overflow: VecDeque::new(),
        timeouts: Vec::new(),
        now: Duration::ZERO,
        seq: 0,
    };
    let mut next_user_data = 0u64;
    let mut timeout_ids: Vec<u64> = Vec::new();

    for (step, byte) in bytes.enumerate() {
        let p = byte >> 3;
        match byte & 7 {
            0 => {
                let user_data = next_user_data;
                next_user_data += 1;
                model.push(Queued::Nop { user_data });
                ring.push(&Sqe::nop().user_data(user_data))
                    .expect("push never fails without faults");
            }
            1 => {
                let user_data = next_user_data;
                next_user_data += 1;
                let after = Duration::from_millis(u64::from(p));
                let ts_addr = lent.addr() + u64::from(p) * size_of::<abi::kernel_timespec>() as u64;
                let sqe = timeout_sqe(user_data, ts_addr);
                timeout_ids.push(user_data);
                model.push(Queued::Timeout { user_data, after });
                // SAFETY: `timespecs` is lent (read-only) before the ring is made and
                // stays lent until after the ring is gone, past the timeout's final CQE.
                unsafe { ring.push_unchecked(&sqe) }.expect("push never fails without faults");
            }
            2 => {
                let user_data = next_user_data;
                next_user_data += 1;
                // Past the end of `timeout_ids`: a user_data no op has (ENOENT).
                let target = timeout_ids.get(usize::from(p)).copied().unwrap_or(u64::MAX);
                model.push(Queued::Cancel { user_data, target });
                // SAFETY: a cancel's `addr` is a user_data, not a pointer: no memory is lent.
                unsafe { ring.push_unchecked(&cancel_sqe(user_data, target)) }
                    .expect("push never fails without faults");
            }
            3 => {
                model.submit();
                ring.submit().expect("submit never fails without faults");
            }
            4 => {
                model.submit();
                model.flush();
                ring.submit_and_flush().expect("flush never fails without faults");
            }
            5 => {
                assert_eq!(ring.pop_cqe(), model.cq.pop_front(), "step {step}: popped CQE");
            }
            6 => {
                let by = Duration::from_millis(u64::from(p));
                model.now += by;
                model.fire_expired();
                kernel.advance(by);
            }
            _ => {
                let mut got = Vec::new();
                ring.drain_cqes(&mut got);
                let want: Vec<Cqe> = model.cq.drain(..).collect();
                assert_eq!(got, want, "step {step}: drained CQEs");
            }
        }
        assert_matches_model(&ring, &model, step);
    }

    // Run everything out: submit, fire every timeout, flush and drain until empty.
    model.submit();
    ring.submit().expect("submit never fails without faults");
    let far = Duration::from_secs(3600);
    model.now += far;
    model.fire_expired();
    kernel.advance(far);
    loop {
        model.flush();
        ring.submit_and_flush().expect("flush never fails without faults");
        let mut got = Vec::new();
        ring.drain_cqes(&mut got);
        let want: Vec<Cqe> = model.cq.drain(..).collect();
        assert_eq!(got, want, "final drain");
        if model.overflow.is_empty() {
            break;
        }
    }
    assert_matches_model(&ring, &model, usize::MAX);
    assert_eq!(
        ring.sim_ring().map(|s| s.pending_ops()),
        Some(0),
        "timeouts left pending after the clock ran out"
    );
}

fn assert_matches_model(ring: &Ring, model: &Model, step: usize) {
    let sim = ring.sim_ring().expect("a simulated ring");
    assert_eq!(ring.sq_len() as usize, model.sq.len(), "step {step}: SQ length");
    assert_eq!(
        ring.sq_space() as usize,
        model.sq_entries - model.sq.len(),
        "step {step}: SQ space"
    );
    assert_eq!(ring.cq_len() as usize, model.cq.len(), "step {step}: CQ length");
    assert_eq!(
        sim.overflowed(),
        model.overflow.len(),
        "step {step}: overflow list"
    );
    assert_eq!(
        ring.cq_overflow_pending(),
        !model.overflow.is_empty(),
        "step {step}: IORING_SQ_CQ_OVERFLOW"
    );
    assert_eq!(
        sim.pending_ops(),
        model.timeouts.len(),
        "step {step}: pending timeouts"
    );
}

/// Derives a mix of the ring-level faults from `bits` (and seeds them with
/// it): `EINTR` and `EBUSY` from enter, `EBUSY` while overflowed, forced CQ
/// overflow, reordering and delays. The same bits give the same faults.
pub fn faults_from_bits(bits: u64) -> Faults {
    let every = |on: u64, shift: u32| (bits & on != 0).then(|| 2 + ((bits >> shift) % 5) as u32);
    Faults {
        seed: bits,
        enter_eintr_every: every(1, 8),
        enter_ebusy_every: every(2, 12),
        ebusy_while_overflowed: bits & 4 != 0,
        overflow_every: (bits & 8 != 0).then(|| 1 + ((bits >> 16) % 4) as u32),
        reorder: bits & 16 != 0,
        delay_cqes: if bits & 32 != 0 {
            1 + ((bits >> 20) % 4) as u32
        } else {
            0
        },
        ..Faults::default()
    }
}

/// A small deterministic generator for the driver's choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Enter errors the driver expects under faults: retry later.
fn is_retryable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR | libc::EAGAIN))
}

/// Pushes `n` NOPs through a tiny simulated ring (SQ 4, CQ 8, indices near
/// `u32::MAX`) under `faults`, with submits, waits and reaps interleaved as
/// `seed` chooses (pushing far more than the CQ holds without reaping), and
/// checks that the multiset of completed `user_data` equals the submitted one:
/// nothing lost, nothing duplicated, nothing extra, nothing left in the kernel.
///
/// # Panics
///
/// When a completion is lost, duplicated or wrong, or the ring stops making progress.
pub fn no_lost_completions(seed: u64, n: u32, faults: &Faults) {
    let kernel = SimKernel::new();
    kernel.set_initial_index(u32::MAX - (seed % 64) as u32);
    kernel.set_faults(faults.clone());
    let config = RingConfig {
        sq_entries: 4,
        cq_entries: 8,
        ..RingConfig::default()
    };
    let mut ring = Ring::sim(&kernel, &config).expect("sim ring setup");
    let mut choices = Choices(seed);
    let n = u64::from(n);
    let mut seen = vec![false; n as usize];
    let (mut pushed, mut done) = (0u64, 0u64);

    let mut reap = |ring: &mut Ring, done: &mut u64, all: bool| {
        while let Some(c) = ring.pop_cqe() {
            assert_eq!(c.res, 0, "NOP failed: {c:?}");
            let slot = seen
                .get_mut(c.user_data as usize)
                .unwrap_or_else(|| panic!("unknown CQE {c:?}"));
            assert!(!*slot, "user_data {} completed twice", c.user_data);
            *slot = true;
            *done += 1;
            if !all {
                break;
            }
        }
    };

    let limit = 64 * n + 1000;
    let mut steps = 0u64;
    while done < n {
        steps += 1;
        assert!(
            steps < limit,
            "no progress after {steps} steps: pushed {pushed}, completed {done} of {n}, \
             SQ {}, CQ {}, overflowed {}, delayed {}",
            ring.sq_len(),
            ring.cq_len(),
            ring.sim_ring().map_or(0, |s| s.overflowed()),
            ring.sim_ring().map_or(0, |s| s.delayed()),
        );
        // Mostly pushes while there is something to push: the CQ overflows.
        let choice = if pushed < n {
            choices.next() % 10
        } else {
            6 + choices.next() % 4
        };
        match choice {
            0..=5 => match ring.push(&Sqe::nop().user_data(pushed)) {
                Ok(()) => pushed += 1,
                // The kernel refused the full SQ (EBUSY/EINTR on the submit inside
                // push): reap, as the protocol says, and try again later.
                Err(PushError::Full) => reap(&mut ring, &mut done, true),
                Err(e) => panic!("push: {e}"),
            },
            6 => match ring.submit() {
                Ok(_) => {}
                Err(e) if is_retryable(&e) => reap(&mut ring, &mut done, true),
                Err(e) => panic!("submit: {e}"),
            },
            7 => match ring.submit_and_wait(1, Some(Duration::ZERO)) {
                Ok(_) => {}
                Err(e) if is_retryable(&e) => reap(&mut ring, &mut done, true),
                Err(e) => panic!("submit_and_wait: {e}"),
            },
            8 => reap(&mut ring, &mut done, false),
            _ => reap(&mut ring, &mut done, true),
        }
    }

    // Everything arrived; make sure nothing more is hiding in the kernel.
    for _ in 0..8 {
        match ring.submit_and_flush() {
            Ok(_) => {}
            Err(e) if is_retryable(&e) => {}
            Err(e) => panic!("flush: {e}"),
        }
        reap(&mut ring, &mut done, true);
    }
    assert_eq!(done, n, "extra completions appeared");
    let sim = ring.sim_ring().expect("a simulated ring");
    assert_eq!(
        (ring.sq_len(), ring.cq_len()),
        (0, 0),
        "entries left in the rings"
    );
    assert_eq!(
        (sim.overflowed(), sim.delayed()),
        (0, 0),
        "CQEs left in the kernel"
    );
}
