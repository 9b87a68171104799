//! The per-shard timer structure: a hierarchical timing wheel over a slab.
//!
//! # Shape
//!
//! Time is counted in **ticks** of one microsecond since the wheel's
//! `origin`. A deadline is rounded *up* to a tick, and "now" *down*, so a timer
//! never fires before its deadline. The wheel has [`LEVELS`] levels of 64 slots;
//! slot `s` of level `L` holds the timers whose tick agrees with `elapsed` (the
//! last tick the wheel processed) in every bit above `6 (L + 1)` and whose
//! level-`L` digit (bits `6L .. 6L + 6`) is `s`. Eleven levels cover all 64
//! bits of a tick, so every deadline has a slot: no overflow list, no clamp.
//!
//! Two consequences make the wheel cheap:
//!
//! - Every timer at level `L` is due before every timer at level `L + 1`, and
//!   inside a level the occupied slots all lie after `elapsed`'s digit. The
//!   earliest slot is therefore "lowest non-empty level, lowest occupied
//!   slot": two `trailing_zeros` over 64-bit occupancy masks.
//! - A slot is a doubly linked list threaded through one slab of entries, so
//!   insert and cancel are O(1) (unlink by index), and a cancelled timer is
//!   gone at once, waker included.
//!
//! # Processing
//!
//! [`Timers::take_due`] repeatedly takes the earliest slot whose start tick has
//! come, moves `elapsed` to that start, and empties it: entries that are due
//! fire, the others are re-inserted relative to the new `elapsed`, which puts
//! them on a lower level (a *cascade*). A timer cascades at most once per
//! level on its way down, and only if it is still armed; most timers (request
//! timeouts) are cancelled long before.
//!
//! # Waking up at the right time
//!
//! [`Timers::next_deadline`] is the timeout of the shard's `io_uring_enter`
//! wait. For a slot on level 0 it is the slot's tick. For a higher slot it is
//! the larger of the slot's start and the smallest deadline ever inserted in
//! the slot (a lower bound, kept per slot), so the shard sleeps until a timer
//! can actually be due instead of waking at every cascade point. A bound left
//! stale by a cancel costs at most one early wake-up, after which the slot is
//! processed and the bound recomputed.
//!
//! # Other threads
//!
//! Only the owning shard touches a `Timers`. A [`Sleep`](super::Sleep)
//! dropped or reset on another thread posts the operation to the wheel's
//! [`TimerSite`], which the shard applies at its next turn (before firing
//! anything, so a cancelled timer never wakes its task).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::runtime::Shared;

/// Bits of a tick each level resolves.
const LEVEL_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << LEVEL_BITS;
/// Levels: `11 * 6 = 66 >= 64` bits, so every `u64` tick has a slot.
const LEVELS: usize = 11;
/// "No entry" in slab links.
const NIL: u32 = u32::MAX;
/// The list of entries that were already due when inserted.
const EXPIRED: u8 = u8::MAX;
/// Pending remote operations past which a remote cancel wakes the owner, so
/// a sleeping shard cannot accumulate cancelled timers without bound.
const REMOTE_BACKLOG_WAKE: usize = 4096;
/// Once empty, a slab larger than this is released (ids are never reused, so
/// releasing cannot make an old key match a new entry).
const SHRINK_ABOVE: usize = 4096;

/// Identifies one armed timer: its slab index plus a wheel-unique id, so a key
/// whose timer fired (and whose slot was reused) never matches again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    index: u32,
    id: u64,
}

/// One slab entry: an armed timer, or a free cell (`id == 0`).
struct Entry {
    /// Wheel-unique id; 0 marks a free cell.
    id: u64,
    /// Deadline in ticks (rounded up).
    tick: u64,
    waker: Option<Waker>,
    /// List links (`next` doubles as the free-list link).
    prev: u32,
    next: u32,
    /// Which list: `level`/`slot`, or `level == EXPIRED`.
    level: u8,
    slot: u8,
}

/// One level: occupancy mask, list heads, and per-slot deadline lower bounds.
struct Level {
    occupied: u64,
    heads: [u32; SLOTS],
    min_tick: [u64; SLOTS],
}

impl Level {
    fn new() -> Self {
        Level {
            occupied: 0,
            heads: [NIL; SLOTS],
            min_tick: [u64::MAX; SLOTS],
        }
    }
}

/// A wheel operation posted by another thread.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RemoteOp {
    /// The timer's future was dropped elsewhere.
    Cancel(TimerKey),
    /// The timer's future was reset elsewhere to a new deadline.
    Reschedule(TimerKey, Instant),
}

/// The cross-thread face of one wheel: where other threads post operations on
/// its timers, and how they wake its shard when the operation is urgent.
pub(crate) struct TimerSite {
    ops: Mutex<Vec<RemoteOp>>,
    /// Set (SeqCst) after an op is queued; the owner swaps it to false before
    /// draining. SeqCst pairs with the shard's park protocol: the shard stores
    /// `parked = true` and then reads this flag (through `next_deadline`), the
    /// poster stores the flag and then swaps `parked`; one of them sees the other.
    pending: AtomicBool,
    /// The shard that owns the wheel, set on first use from that shard.
    owner: OnceLock<(Weak<Shared>, usize)>,
}

impl std::fmt::Debug for TimerSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerSite")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TimerSite {
    fn new() -> Self {
        TimerSite {
            ops: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            owner: OnceLock::new(),
        }
    }

    /// Records which shard owns this site (first call wins).
    pub(crate) fn set_owner(&self, shared: &Arc<Shared>, shard: usize) {
        if self.owner.get().is_none() {
            let _ = self.owner.set((Arc::downgrade(shared), shard));
        }
    }

    /// Queues `op` for the owning shard. A reschedule, or a backlog of
    /// cancels, also wakes the shard if it sleeps, so the new deadline is
    /// honoured (and memory reclaimed) without waiting for its next timer.
    pub(crate) fn post(&self, op: RemoteOp) {
        let backlog = {
            let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
            ops.push(op);
            ops.len()
        };
        self.pending.store(true, Ordering::SeqCst);
        if (matches!(op, RemoteOp::Reschedule(..)) || backlog >= REMOTE_BACKLOG_WAKE)
            && let Some((shared, shard)) = self.owner.get()
            && let Some(shared) = shared.upgrade()
        {
            shared.unpark(*shard);
        }
    }

    fn take_ops(&self) -> Vec<RemoteOp> {
        // SeqCst: see `pending`.
        if !self.pending.swap(false, Ordering::SeqCst) {
            return Vec::new();
        }
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A shard's timers (also the structure behind the timer thread that serves
/// sleeps outside the runtime).
pub(crate) struct Timers {
    origin: Instant,
    /// The last tick processed; never decreases.
    elapsed: u64,
    levels: Box<[Level]>,
    /// Entries that were already due when inserted (fire at the next turn).
    expired_head: u32,
    entries: Vec<Entry>,
    free_head: u32,
    live: usize,
    next_id: u64,
    /// A lower bound on the start tick of the earliest slot (fast path of
    /// `take_due`); exact after each `take_due`, lowered by inserts.
    next_start: u64,
    site: Arc<TimerSite>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers::new(Instant::now())
    }
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("live", &self.live)
            .field("elapsed", &self.elapsed)
            .finish_non_exhaustive()
    }
}

/// The tick count of `d`, rounded down (saturating).
fn ticks_floor(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// The tick count of `d`, rounded up (saturating).
fn ticks_ceil(d: Duration) -> u64 {
    let floor = ticks_floor(d);
    if d.subsec_nanos().is_multiple_of(1_000) {
        floor
    } else {
        floor.saturating_add(1)
    }
}

/// Mask of the tick bits below level `level`'s range end (`6 (level + 1)` bits).
fn below_mask(level: usize) -> u64 {
    let bits = LEVEL_BITS * (level as u32 + 1);
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// The level a timer due at `tick` belongs to when the wheel is at `elapsed`
/// (`tick > elapsed`).
fn level_for(elapsed: u64, tick: u64) -> usize {
    let masked = (elapsed ^ tick) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros();
    (significant / LEVEL_BITS) as usize
}

fn slot_for(tick: u64, level: usize) -> usize {
    ((tick >> (LEVEL_BITS * level as u32)) & (SLOTS as u64 - 1)) as usize
}

/// First tick of slot `slot` of `level` when the wheel is at `elapsed`.
fn slot_start(elapsed: u64, level: usize, slot: usize) -> u64 {
    (elapsed & !below_mask(level)) | ((slot as u64) << (LEVEL_BITS * level as u32))
}

impl Timers {
    /// An empty wheel whose tick 0 is `origin`.
    pub(crate) fn new(origin: Instant) -> Self {
        Timers {
            origin,
            elapsed: 0,
            levels: (0..LEVELS).map(|_| Level::new()).collect(),
            expired_head: NIL,
            entries: Vec::new(),
            free_head: NIL,
            live: 0,
            next_id: 1,
            next_start: u64::MAX,
            site: Arc::new(TimerSite::new()),
        }
    }

    /// The cross-thread face of this wheel.
    pub(crate) fn site(&self) -> &Arc<TimerSite> {
        &self.site
    }

    /// Armed timers.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    fn tick_of(&self, deadline: Instant) -> u64 {
        ticks_ceil(deadline.saturating_duration_since(self.origin))
    }

    fn now_tick(&self, now: Instant) -> u64 {
        ticks_floor(now.saturating_duration_since(self.origin))
    }

    fn instant_of(&self, tick: u64) -> Option<Instant> {
        self.origin.checked_add(Duration::from_micros(tick))
    }

    /// Arms a timer for `deadline`; returns its key. O(1).
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        let tick = self.tick_of(deadline);
        let id = self.next_id;
        self.next_id += 1;
        let entry = Entry {
            id,
            tick,
            waker: Some(waker),
            prev: NIL,
            next: NIL,
            level: 0,
            slot: 0,
        };
        let index = match self.free_head {
            NIL => {
                let i =
                    u32::try_from(self.entries.len()).expect("more than 4 billion armed timers on one shard");
                assert!(i != NIL, "more than 4 billion armed timers on one shard");
                self.entries.push(entry);
                i
            }
            i => {
                self.free_head = self.entries[i as usize].next;
                self.entries[i as usize] = entry;
                i
            }
        };
        self.live += 1;
        self.link(index);
        TimerKey { index, id }
    }

    /// The entry `key` names, if that timer is still armed.
    fn entry_mut(&mut self, key: TimerKey) -> Option<&mut Entry> {
        self.entries
            .get_mut(key.index as usize)
            .filter(|e| e.id == key.id)
    }

    /// Replaces an armed timer's waker. Returns false if the timer is gone
    /// (fired or cancelled); the caller must then insert a new one. The
    /// replaced waker is handed back so it is dropped outside any borrow.
    pub(crate) fn update(&mut self, key: TimerKey, waker: &Waker) -> (bool, Option<Waker>) {
        match self.entry_mut(key) {
            None => (false, None),
            Some(e) => match &e.waker {
                Some(w) if w.will_wake(waker) => (true, None),
                _ => (true, e.waker.replace(waker.clone())),
            },
        }
    }

    /// Cancels an armed timer (no-op if it is gone); returns its waker. O(1).
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<Waker> {
        self.entry_mut(key)?;
        self.unlink(key.index);
        self.free(key.index)
    }

    /// Moves an armed timer to a new deadline, keeping its waker. Returns false
    /// if the timer is gone. O(1).
    pub(crate) fn reschedule(&mut self, key: TimerKey, deadline: Instant) -> bool {
        let tick = self.tick_of(deadline);
        let Some(e) = self.entry_mut(key) else {
            return false;
        };
        e.tick = tick;
        self.unlink(key.index);
        self.link(key.index);
        true
    }

    /// The earliest time a timer may be due: the timeout of the shard's wait.
    /// `None` when no timer is armed. O(1) (at most 11 mask tests).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.site.pending.load(Ordering::SeqCst) || self.expired_head != NIL {
            // Work to do now: a remote op to apply, or timers already due.
            return Some(self.origin);
        }
        let (level, slot, start) = self.first_slot()?;
        let tick = if level == 0 {
            start
        } else {
            start.max(self.levels[level].min_tick[slot])
        };
        // A deadline past what `Instant` can represent never comes.
        self.instant_of(tick)
    }

    /// The earliest non-empty slot: `(level, slot, start tick)`.
    fn first_slot(&self) -> Option<(usize, usize, u64)> {
        let level = self.levels.iter().position(|l| l.occupied != 0)?;
        let slot = self.levels[level].occupied.trailing_zeros() as usize;
        Some((level, slot, slot_start(self.elapsed, level, slot)))
    }

    /// Applies the operations other threads posted; the wakers of cancelled
    /// timers go to `graveyard`.
    fn apply_remote_ops(&mut self, graveyard: &mut Vec<Waker>) {
        for op in self.site.take_ops() {
            match op {
                RemoteOp::Cancel(key) => graveyard.extend(self.remove(key)),
                RemoteOp::Reschedule(key, at) => {
                    self.reschedule(key, at);
                }
            }
        }
    }

    /// Applies the operations other threads posted. Returns the wakers of
    /// cancelled timers, for the caller to drop once its borrow ends.
    pub(crate) fn apply_pending(&mut self) -> Vec<Waker> {
        let mut graveyard = Vec::new();
        self.apply_remote_ops(&mut graveyard);
        graveyard
    }

    /// Removes every timer due at `now` and returns their wakers (after first
    /// applying the operations other threads posted). Amortised O(1) per timer
    /// per level it cascades through.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        // Wakers of remotely cancelled timers: dropped, never woken. (Dropping
        // one may drop a `Sleep`; its destructor falls back to posting a remote
        // op when this wheel is borrowed, so that is safe here.)
        let mut graveyard = Vec::new();
        self.apply_remote_ops(&mut graveyard);
        let now_tick = self.now_tick(now);
        if self.expired_head == NIL && now_tick < self.next_start {
            drop(graveyard);
            return due;
        }
        // Timers that were due when inserted.
        while self.expired_head != NIL {
            let i = self.expired_head;
            self.unlink(i);
            due.extend(self.free(i));
        }
        while let Some((level, slot, start)) = self.first_slot() {
            if start > now_tick {
                break;
            }
            self.elapsed = self.elapsed.max(start);
            let lv = &mut self.levels[level];
            let mut i = lv.heads[slot];
            lv.heads[slot] = NIL;
            lv.occupied &= !(1u64 << slot);
            lv.min_tick[slot] = u64::MAX;
            while i != NIL {
                let next = self.entries[i as usize].next;
                if self.entries[i as usize].tick <= now_tick {
                    due.extend(self.free(i));
                } else {
                    // Still armed: cascade to a lower level.
                    self.link(i);
                }
                i = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
        self.next_start = self.first_slot().map_or(u64::MAX, |(_, _, start)| start);
        if self.live == 0 && self.entries.len() > SHRINK_ABOVE {
            self.entries = Vec::new();
            self.free_head = NIL;
        }
        drop(graveyard);
        due
    }

    /// Puts entry `i` (unlinked, with its tick set) on the list it belongs to.
    fn link(&mut self, i: u32) {
        let tick = self.entries[i as usize].tick;
        let head = if tick <= self.elapsed {
            self.entries[i as usize].level = EXPIRED;
            &mut self.expired_head
        } else {
            let level = level_for(self.elapsed, tick);
            let slot = slot_for(tick, level);
            self.next_start = self.next_start.min(slot_start(self.elapsed, level, slot));
            let e = &mut self.entries[i as usize];
            e.level = level as u8;
            e.slot = slot as u8;
            let lv = &mut self.levels[level];
            lv.occupied |= 1u64 << slot;
            lv.min_tick[slot] = lv.min_tick[slot].min(tick);
            &mut lv.heads[slot]
        };
        let old = std::mem::replace(head, i);
        let e = &mut self.entries[i as usize];
        e.prev = NIL;
        e.next = old;
        if old != NIL {
            self.entries[old as usize].prev = i;
        }
    }

    /// Takes entry `i` off its list.
    fn unlink(&mut self, i: u32) {
        let (prev, next, level, slot) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next, e.level, e.slot as usize)
        };
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        if prev != NIL {
            self.entries[prev as usize].next = next;
        } else if level == EXPIRED {
            self.expired_head = next;
        } else {
            let lv = &mut self.levels[level as usize];
            lv.heads[slot] = next;
            if next == NIL {
                lv.occupied &= !(1u64 << slot);
                lv.min_tick[slot] = u64::MAX;
            }
        }
    }

    /// Frees unlinked entry `i`; returns its waker.
    fn free(&mut self, i: u32) -> Option<Waker> {
        let e = &mut self.entries[i as usize];
        e.id = 0;
        e.next = self.free_head;
        e.prev = NIL;
        self.free_head = i;
        self.live -= 1;
        e.waker.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountWaker(AtomicUsize);
    impl Wake for CountWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> Waker {
        Waker::from(Arc::new(CountWaker(AtomicUsize::new(0))))
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn fires_in_order_never_early_across_every_level() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        // Deadlines spread over every level (powers of 64 and neighbours).
        let mut ticks: Vec<u64> = Vec::new();
        for level in 0..10u32 {
            let base = 1u64 << (6 * level);
            ticks.extend([base, base + 1, base * 3 + 7, base * 63]);
        }
        ticks.sort_unstable();
        ticks.dedup();
        let mut keys = Vec::new();
        for &tk in &ticks {
            keys.push((tk, t.insert(origin + us(tk), waker())));
        }
        assert_eq!(t.len(), ticks.len());
        let mut fired = 0;
        for &tk in &ticks {
            // Just before the deadline nothing for it fires.
            let before = t.take_due(origin + us(tk) - Duration::from_nanos(1));
            fired += before.len();
            assert_eq!(
                fired,
                ticks.iter().filter(|&&x| x < tk).count(),
                "fired early before tick {tk}"
            );
            let next = t.next_deadline().unwrap();
            assert!(
                next <= origin + us(tk),
                "next_deadline {next:?} later than pending tick {tk}"
            );
            assert!(
                next >= origin + us(tk) - us(1),
                "next_deadline earlier than needed for tick {tk}"
            );
            fired += t.take_due(origin + us(tk)).len();
            assert_eq!(
                fired,
                ticks.iter().filter(|&&x| x <= tk).count(),
                "tick {tk} did not fire"
            );
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn cancel_is_immediate_and_keys_never_alias() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        let a = t.insert(origin + Duration::from_secs(5), waker());
        assert!(t.remove(a).is_some());
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_deadline(), None);
        let b = t.insert(origin + Duration::from_secs(5), waker());
        assert_eq!(a.index, b.index, "slab cell reused");
        assert!(t.remove(a).is_none(), "a stale key must not cancel the new timer");
        assert!(!t.update(a, &waker()).0);
        assert_eq!(t.len(), 1);
        assert!(t.remove(b).is_some());
    }

    #[test]
    fn reschedule_moves_the_deadline_both_ways() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        let k = t.insert(origin + Duration::from_secs(10), waker());
        assert!(t.reschedule(k, origin + Duration::from_millis(2)));
        assert_eq!(t.take_due(origin + Duration::from_millis(1)).len(), 0);
        assert!(t.reschedule(k, origin + Duration::from_secs(20)));
        assert_eq!(t.take_due(origin + Duration::from_secs(19)).len(), 0);
        assert_eq!(t.take_due(origin + Duration::from_secs(20)).len(), 1);
        assert!(!t.reschedule(k, origin));
    }

    #[test]
    fn past_and_far_deadlines() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        t.take_due(origin + Duration::from_secs(1));
        t.insert(origin, waker()); // already due
        assert!(t.next_deadline().unwrap() <= origin + Duration::from_secs(1));
        assert_eq!(t.take_due(origin + Duration::from_secs(1)).len(), 1);
        let far = origin + Duration::from_secs(60 * 60 * 24 * 365 * 100);
        t.insert(far, waker());
        let next = t.next_deadline().unwrap();
        assert!(next <= far && next > origin + Duration::from_secs(60 * 60 * 24 * 365 * 99));
        // Processing up to shortly before it fires nothing and loops no more
        // than once per level.
        assert_eq!(t.take_due(far - Duration::from_secs(1)).len(), 0);
        assert_eq!(t.take_due(far).len(), 1);
    }

    #[test]
    fn many_timers_same_instant_half_cancelled() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        let at = origin + Duration::from_millis(100);
        let keys: Vec<_> = (0..10_000).map(|_| t.insert(at, waker())).collect();
        for k in keys.iter().step_by(2) {
            t.remove(*k);
        }
        assert_eq!(t.len(), 5_000);
        assert_eq!(t.take_due(at).len(), 5_000);
        assert_eq!(t.len(), 0);
        assert!(
            t.entries.is_empty(),
            "an empty slab above the threshold is released"
        );
    }

    #[test]
    fn remote_ops_apply_before_firing() {
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        let k = t.insert(origin + us(10), waker());
        let k2 = t.insert(origin + us(10), waker());
        t.site().post(RemoteOp::Cancel(k));
        t.site()
            .post(RemoteOp::Reschedule(k2, origin + Duration::from_secs(1)));
        assert!(
            t.next_deadline().unwrap() <= origin,
            "pending ops make the shard turn at once"
        );
        assert_eq!(t.take_due(origin + us(20)).len(), 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_due(origin + Duration::from_secs(1)).len(), 1);
    }

    /// Random inserts, cancels, reschedules and clock jumps against a plain
    /// map: exactly the due timers fire, none early, and after each turn the
    /// next deadline lies ahead (no busy loop) yet no later than the earliest
    /// armed timer.
    #[test]
    fn matches_a_simple_model() {
        struct IdWaker(u64, Arc<std::sync::Mutex<Vec<u64>>>);
        impl Wake for IdWaker {
            fn wake(self: Arc<Self>) {
                self.1.lock().unwrap().push(self.0);
            }
        }
        let fired = Arc::new(std::sync::Mutex::new(Vec::new()));
        let origin = Instant::now();
        let mut t = Timers::new(origin);
        let mut model: std::collections::BTreeMap<u64, (TimerKey, u64)> = Default::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut now_ns: u64 = 0;
        let ceil_tick = |ns: u64| ns.div_ceil(1_000);
        for id in 0..20_000u64 {
            match next() % 8 {
                0..=3 => {
                    let r = next();
                    let delta_ns = match r % 10 {
                        0 => 0,
                        1..=4 => r % 100_000,
                        5..=7 => r % 50_000_000,
                        8 => r % 30_000_000_000,
                        _ => r % (1 << 50),
                    };
                    let at = now_ns + delta_ns;
                    let key = t.insert(
                        origin + Duration::from_nanos(at),
                        Waker::from(Arc::new(IdWaker(id, fired.clone()))),
                    );
                    model.insert(id, (key, ceil_tick(at)));
                }
                4 => {
                    if let Some((&victim, &(key, _))) =
                        model.iter().nth((next() % (model.len() as u64 + 1)) as usize)
                    {
                        assert!(t.remove(key).is_some());
                        model.remove(&victim);
                    }
                }
                5 => {
                    if let Some((&victim, &(key, _))) =
                        model.iter().nth((next() % (model.len() as u64 + 1)) as usize)
                    {
                        let at = now_ns + next() % 20_000_000;
                        assert!(t.reschedule(key, origin + Duration::from_nanos(at)));
                        model.insert(victim, (key, ceil_tick(at)));
                    }
                }
                _ => {
                    now_ns += match next() % 4 {
                        0 => next() % 2_000,
                        1 => next() % 200_000,
                        2 => next() % 20_000_000,
                        _ => next() % 2_000_000_000,
                    };
                    let now = origin + Duration::from_nanos(now_ns);
                    let now_tick = now_ns / 1_000;
                    for w in t.take_due(now) {
                        w.wake();
                    }
                    let mut got = std::mem::take(&mut *fired.lock().unwrap());
                    got.sort_unstable();
                    let want: Vec<u64> = model
                        .iter()
                        .filter(|(_, (_, tk))| *tk <= now_tick)
                        .map(|(&id, _)| id)
                        .collect();
                    assert_eq!(got, want, "fired set at {now_ns} ns");
                    model.retain(|_, (_, tk)| *tk > now_tick);
                    assert_eq!(t.len(), model.len());
                    match model.values().map(|(_, tk)| *tk).min() {
                        None => assert_eq!(t.next_deadline(), None),
                        Some(earliest) => {
                            let nd = t.next_deadline().unwrap();
                            assert!(nd > now, "next deadline not ahead after a turn");
                            assert!(
                                nd <= origin + Duration::from_micros(earliest),
                                "next deadline after the earliest timer"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn level_math() {
        assert_eq!(level_for(0, 1), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(0, u64::MAX), 10);
        assert_eq!(slot_start(0, 10, 15), 15u64 << 60);
        assert_eq!(ticks_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(ticks_ceil(Duration::from_nanos(1000)), 1);
        assert_eq!(ticks_floor(Duration::MAX), u64::MAX);
    }
}
