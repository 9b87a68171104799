//! Property tests of the ring protocol on the simulated kernel.
//!
//! Each property is a `spargio_sys::check::ring` function, the same one the
//! `ring_model` fuzz target calls. Ring indices start near `u32::MAX` so that
//! wrap-around is exercised. Case counts shrink under Miri.

use proptest::prelude::*;

use spargio_sys::check::ring as check;
use spargio_sys::sim::Faults;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 });
    if cfg!(miri) {
        // Miri's isolation forbids the file access that failure persistence needs.
        config.failure_persistence = None;
    }
    config
}

/// An index within 64 steps of wrapping past `u32::MAX`.
fn near_wrap() -> impl Strategy<Value = u32> {
    (0u32..64).prop_map(|d| u32::MAX - d)
}

/// NOP counts: well past the 8-entry CQ, smaller under Miri.
fn nop_count() -> impl Strategy<Value = u32> {
    if cfg!(miri) { 1u32..40 } else { 1u32..300 }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn index_math_near_wrap(head in near_wrap(), len in 0u32..=64, log2 in 0u32..if cfg!(miri) { 8 } else { 16 }) {
        let entries = 1u32 << log2;
        check::index_math(head, head.wrapping_add(len), entries);
    }

    #[test]
    fn index_math_any_values(head: u32, tail: u32, entries: u32) {
        check::index_math(head, tail, entries);
    }

    #[test]
    fn full_and_empty_exactly_at_capacity(initial in near_wrap(), sq_log2 in 0u8..5, cq_shift in 0u8..2) {
        check::capacity_edges(initial, sq_log2, cq_shift);
    }

    #[test]
    fn ring_matches_model(ops in proptest::collection::vec(any::<u8>(), 0..if cfg!(miri) { 48 } else { 300 })) {
        check::model_ops(&ops);
    }

    #[test]
    fn no_lost_completions_under_overflow(seed: u64, n in nop_count()) {
        check::no_lost_completions(seed, n, &Faults::default());
    }

    #[test]
    fn no_lost_completions_under_injected_faults(seed: u64, bits: u64, n in nop_count()) {
        check::no_lost_completions(seed, n, &check::faults_from_bits(bits));
    }
}

/// Every ring-level fault at once, with a fixed seed: the hardest mix.
#[test]
fn no_lost_completions_with_every_fault() {
    let faults = Faults {
        seed: 7,
        enter_eintr_every: Some(2),
        enter_ebusy_every: Some(3),
        ebusy_while_overflowed: true,
        overflow_every: Some(2),
        reorder: true,
        delay_cqes: 3,
        ..Faults::default()
    };
    for seed in 0..if cfg!(miri) { 2 } else { 32 } {
        check::no_lost_completions(seed, if cfg!(miri) { 40 } else { 500 }, &faults);
    }
}

/// Index arithmetic at the exact edges: empty, full, and wrapped.
#[test]
fn index_math_edges() {
    for entries in [1u32, 2, 8, if cfg!(miri) { 64 } else { 1 << 15 }] {
        for head in [0, u32::MAX, u32::MAX - entries + 1, u32::MAX - entries] {
            check::index_math(head, head, entries);
            check::index_math(head, head.wrapping_add(entries), entries);
            check::index_math(head, head.wrapping_add(entries - 1), entries);
            check::index_math(head, head.wrapping_add(entries + 1), entries);
        }
    }
}
