//! Shard-to-shard messages in batches: one `MSG_RING` per batch, not one per
//! message.
//!
//! # Protocol
//!
//! A message a shard sends to another shard of its runtime is first put in the
//! sender's *outbox* for that target: thread-local, no atomics, no syscall.
//! When the sending task's poll returns (and on every turn of the loop), each
//! non-empty outbox is handed over; so is one that reaches
//! [`HANDOVER_BATCH`] messages in the middle of a poll:
//!
//! 1. **A lone message to an idle pair** (no doorbell of this sender to this
//!    target is outstanding: queued, in flight, or posted and not yet reaped)
//!    travels by itself: one `MSG_RING` whose CQE in the target carries
//!    `(from, tag)` in `user_data` and the value in `res`. A round trip costs
//!    what it did before batching.
//! 2. **Anything else** is appended to the pair's *mailbox*, kept at the
//!    target (one per sender shard, under a lock taken once per batch). If no
//!    doorbell is outstanding, one `MSG_RING` doorbell tagged with the sender
//!    is posted to the target and counted in the mailbox (`bells`). A ticket
//!    (`send_raw`, `flush`) always posts a counted doorbell of its own.
//! 3. **The target**, reaping one of those doorbells, uncounts it and takes
//!    the whole mailbox under the same lock, then delivers the batch in order.
//!    A doorbell that finds the mailbox empty (an earlier one took its batch)
//!    delivers nothing.
//!
//! A burst of N one-way sends in one poll thus costs one `MSG_RING` and one
//! CQE instead of N of each.
//!
//! # Why the guarantees of `msg.rs` still hold
//!
//! - **FIFO per (sender, target).** Within a path order is kept: the outbox
//!   and the mailbox are queues, and `MSG_RING`s from one ring post in
//!   submission order. Between paths: a lone message goes direct only when no
//!   doorbell is outstanding, so the target has reaped every earlier doorbell
//!   and taken every earlier batch (the last reaped doorbell takes the whole
//!   queue). A later batch is taken by a doorbell posted after that direct
//!   message, so the target reaps the message first. (Counting doorbells, not
//!   a flag, matters: a surplus ticket doorbell still in flight would take a
//!   batch appended after a direct message, ahead of it.)
//! - **Exactly once.** The mailbox is taken whole under its lock; a doorbell
//!   that finds it empty (its batch was taken with an earlier one) delivers
//!   nothing. A doorbell the kernel refuses to queue or to post is retried on
//!   the sender's next turn, so a batch is never stranded.
//! - **Backpressure.** The sender counts what it sent to each target
//!   (`sent`); the target counts what its tasks took from each sender
//!   ([`Mailbox::taken`], written by the target only). The difference is the
//!   pair's undelivered messages; the sender re-reads `taken` only when its
//!   cached copy says the pair is full, so the hot path shares no cache line.
//!
//! Senders outside the runtime, and the Queue backend, keep the one-message
//! path of `msg.rs`.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::SendError;
use crate::msg::{Event, TicketShared};
use crate::shard::Local;
use crate::wire;

/// A raw message: `(tag, value)`.
pub(crate) type Msg = (u16, u32);

/// Messages a poll may queue for one target before they are handed over
/// without waiting for the poll to end, so that the target works through a
/// long burst while the sender is still producing it. The doorbell of such a
/// mid-poll hand-over is submitted at once; while the target is still busy
/// with an earlier batch there is no doorbell, only an append under the
/// mailbox lock.
pub(crate) const HANDOVER_BATCH: usize = 256;

/// What one sender shard handed to one target and the target has not taken.
#[derive(Default)]
pub(crate) struct Mailbox {
    inner: Mutex<MailboxInner>,
    /// Messages from this sender the target's tasks have taken (its credit).
    /// Written by the target shard only.
    taken: AtomicU64,
}

#[derive(Default)]
struct MailboxInner {
    queue: Vec<Msg>,
    /// Doorbells for this mailbox posted (or owed) and not yet reaped.
    bells: u32,
}

impl Mailbox {
    /// Target side, on reaping one doorbell: uncounts it and swaps the whole
    /// queue into `into` (empty on entry).
    fn take_into(&self, into: &mut Vec<Msg>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.bells = g.bells.saturating_sub(1);
        std::mem::swap(&mut g.queue, into);
    }

    /// Target side: one message from this sender was taken by a task.
    pub(crate) fn count_taken(&self) {
        // Single writer: a load and a store, no read-modify-write.
        let n = self.taken.load(Ordering::Relaxed);
        self.taken.store(n + 1, Ordering::Release);
    }

    /// No doorbell outstanding (and so, nothing queued).
    fn is_idle(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bells == 0
    }

    /// Sender side: appends `batch` (drained). True when a doorbell must be
    /// posted (none is outstanding, or `force`); it is counted here.
    fn append(&self, batch: &mut Vec<Msg>, force: bool) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.queue.append(batch);
        let bell = force || g.bells == 0;
        if bell {
            g.bells += 1;
        }
        bell
    }
}

/// A shard's outgoing messages, per target, until they are handed over.
pub(crate) struct Outbox {
    pending: RefCell<Vec<Vec<Msg>>>,
    /// Some outbox is non-empty, or a doorbell is owed.
    dirty: Cell<bool>,
    /// Messages accepted per target.
    sent: Box<[Cell<u64>]>,
    /// The last `Mailbox::taken` read per target.
    taken_seen: Box<[Cell<u64>]>,
    /// Doorbells the kernel refused (to queue or to post), retried each turn;
    /// with the ticket that waits for one, if any.
    owed: RefCell<Vec<(usize, Option<Arc<TicketShared>>)>>,
    /// Spare buffer for taking mailboxes (keeps its allocation).
    spare: RefCell<Vec<Msg>>,
}

impl Outbox {
    pub(crate) fn new(shards: usize) -> Outbox {
        Outbox {
            pending: RefCell::new((0..shards).map(|_| Vec::new()).collect()),
            dirty: Cell::new(false),
            sent: (0..shards).map(|_| Cell::new(0)).collect(),
            taken_seen: (0..shards).map(|_| Cell::new(0)).collect(),
            owed: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
        }
    }

    /// True when a hand-over is due.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.get()
    }

    /// Gives back the credit of a message the kernel refused to post.
    pub(crate) fn refund(&self, target: usize) {
        if let Some(s) = self.sent.get(target) {
            s.set(s.get().saturating_sub(1));
        }
    }
}

/// What a ticket's `MSG_RING` carried, for when the kernel refuses it.
pub(crate) enum TicketFor {
    /// A lone message to this target: refused means not delivered.
    Message(usize),
    /// A doorbell to this target: its mailbox still holds the messages, so
    /// the doorbell is retried.
    Doorbell(usize),
}

/// How a hand-over is confirmed.
enum Confirm {
    /// Not at all: the sender-side CQE is skipped unless the kernel refuses.
    Silent,
    /// By this ticket, resolved by the sender-side CQE.
    Ticket(Arc<TicketShared>),
}

impl Local {
    /// Accepts `(tag, val)` for `target`, a shard of this runtime; it leaves
    /// when the poll ends (or with the rest of a long burst, see
    /// [`HANDOVER_BATCH`]). The hot path of every one-way send: no atomics,
    /// no syscall, a small return value.
    #[inline]
    pub(crate) fn send_nowait(&self, target: usize, tag: u16, val: u32) -> Result<(), SendError> {
        if !self.has_credit(target) {
            return Err(SendError::Backpressure);
        }
        if self.accept(target, tag, val) >= HANDOVER_BATCH && target != self.shard {
            // A long burst: let the target start on it while we go on.
            self.hand_over(target, Confirm::Silent);
            self.submit_now_if_queued();
        }
        Ok(())
    }

    /// Accepts `(tag, val)` for `target` and hands it over now, returning the
    /// ticket that resolves once it is in the target's ring.
    pub(crate) fn send_ticketed(
        &self,
        target: usize,
        tag: u16,
        val: u32,
    ) -> Result<Arc<TicketShared>, SendError> {
        // The ticket needs room for one SQE now: refuse the message (not
        // accepted) rather than accept one whose ticket could not be queued.
        if !self.has_credit(target) || (target != self.shard && !self.sq_room()) {
            return Err(SendError::Backpressure);
        }
        self.accept(target, tag, val);
        let t = TicketShared::new();
        self.hand_over(target, Confirm::Ticket(t.clone()));
        Ok(t)
    }

    /// True when the (us, `target`) pair holds fewer than `msg_queue_capacity`
    /// undelivered messages; re-reads the target's count only when the
    /// cached one says it is full.
    #[inline]
    fn has_credit(&self, target: usize) -> bool {
        let out = &self.outbox;
        let cap = u64::from(self.shared.config.msg_queue_capacity);
        let sent = out.sent[target].get();
        if sent - out.taken_seen[target].get() < cap {
            return true;
        }
        let mailbox = &self.shared.shards[target].mailboxes[self.shard];
        out.taken_seen[target].set(mailbox.taken.load(Ordering::Acquire));
        sent - out.taken_seen[target].get() < cap
    }

    /// Counts and queues one message for `target`; returns how many are now
    /// pending for it.
    #[inline]
    fn accept(&self, target: usize, tag: u16, val: u32) -> usize {
        let out = &self.outbox;
        let sent = &out.sent[target];
        sent.set(sent.get() + 1);
        out.dirty.set(true);
        let mut pending = out.pending.borrow_mut();
        pending[target].push((tag, val));
        pending[target].len()
    }

    /// `RemoteShard::flush` from this shard: hands over what is pending for
    /// `target` with a ticket that resolves after every earlier message.
    pub(crate) fn flush_to(&self, target: usize) -> Result<Arc<TicketShared>, SendError> {
        if target != self.shard && !self.sq_room() {
            return Err(SendError::Backpressure);
        }
        let t = TicketShared::new();
        self.hand_over(target, Confirm::Ticket(t.clone()));
        Ok(t)
    }

    /// Hands over every pending outbox and retries owed doorbells.
    pub(crate) fn flush_outboxes(&self) {
        let out = &self.outbox;
        if !out.dirty.replace(false) {
            return;
        }
        let owed = std::mem::take(&mut *out.owed.borrow_mut());
        for (target, ticket) in owed {
            let confirm = ticket.map_or(Confirm::Silent, Confirm::Ticket);
            self.ring_mail_doorbell(target, confirm);
        }
        for target in 0..self.shared.shards.len() {
            if !out.pending.borrow()[target].is_empty() {
                self.hand_over(target, Confirm::Silent);
            }
        }
    }

    /// Hands `target`'s outbox over (steps 1 and 2 of the protocol). With a
    /// ticket, always posts one `MSG_RING` (a doorbell if nothing else).
    fn hand_over(&self, target: usize, confirm: Confirm) {
        let out = &self.outbox;
        let mut batch = std::mem::take(&mut out.pending.borrow_mut()[target]);
        let n = batch.len() as u64;
        self.me().counters.msgs_sent.fetch_add(n, Ordering::Relaxed);
        if target == self.shard {
            // To ourselves: straight onto the event queue, in order.
            self.deliver_batch(self.shard, &mut batch);
            // Delivery wakes waiters; a waker may send to us again: keep what
            // it queued, and the emptied buffer only if it queued nothing.
            let mut pending = out.pending.borrow_mut();
            if pending[target].is_empty() {
                pending[target] = batch;
            }
            drop(pending);
            if let Confirm::Ticket(t) = confirm {
                t.complete(Ok(()));
            }
            return;
        }
        let mailbox = &self.shared.shards[target].mailboxes[self.shard];
        if batch.len() == 1 && mailbox.is_idle() {
            let (tag, val) = batch[0];
            if self.post(target, wire::message(self.shard as u16, tag), val, &confirm, true) {
                batch.clear();
                out.pending.borrow_mut()[target] = batch;
                return;
            }
        }
        let bell = mailbox.append(&mut batch, matches!(confirm, Confirm::Ticket(_)));
        out.pending.borrow_mut()[target] = batch;
        if n > 1 {
            self.me().counters.msg_batches.fetch_add(1, Ordering::Relaxed);
        }
        if bell {
            self.ring_mail_doorbell(target, confirm);
        }
    }

    /// Posts a (counted) doorbell telling `target` to take our mailbox; owed
    /// on refusal (an owed doorbell stays counted).
    fn ring_mail_doorbell(&self, target: usize, confirm: Confirm) {
        if !self.post(target, wire::doorbell(self.shard as u16), 0, &confirm, false) {
            let ticket = match confirm {
                Confirm::Ticket(t) => Some(t),
                Confirm::Silent => None,
            };
            self.owe_doorbell(target, ticket);
        }
    }

    /// Remembers a doorbell to retry on the next turn.
    pub(crate) fn owe_doorbell(&self, target: usize, ticket: Option<Arc<TicketShared>>) {
        self.me()
            .counters
            .doorbell_failures
            .fetch_add(1, Ordering::Relaxed);
        if self.shared.is_closing() {
            if let Some(t) = ticket {
                t.complete(Err(SendError::Closed));
            }
            return;
        }
        self.outbox.owed.borrow_mut().push((target, ticket));
        self.outbox.dirty.set(true);
    }

    /// Queues one `MSG_RING` to `target` posting `(user_data, res)`. False when
    /// the SQ has no room or the target has no ring.
    fn post(&self, target: usize, user_data: u64, res: u32, confirm: &Confirm, message: bool) -> bool {
        let Some(fd) = self.ring_fd_of(target) else {
            return false;
        };
        let (own, skip) = match confirm {
            Confirm::Ticket(t) => {
                let what = if message {
                    TicketFor::Message(target)
                } else {
                    TicketFor::Doorbell(target)
                };
                (wire::ticket(self.new_ticket(t.clone(), what)), false)
            }
            Confirm::Silent if message => (wire::nowait_failed(target as u16), true),
            Confirm::Silent => (wire::mail_doorbell_failed(target as u16), true),
        };
        match self.push_msg_ring(&fd, res, user_data, own, skip) {
            Ok(()) => true,
            Err(_) => {
                if let wire::Tag::Ticket(id) = wire::decode(own) {
                    self.tickets.borrow_mut().remove(&id);
                }
                false
            }
        }
    }

    /// Step 3 of the protocol: `from`'s doorbell was reaped; take its mailbox.
    pub(crate) fn take_mail(&self, from: usize) {
        let Some(mailbox) = self.me().mailboxes.get(from) else {
            return;
        };
        let mut batch = std::mem::take(&mut *self.outbox.spare.borrow_mut());
        mailbox.take_into(&mut batch);
        if !batch.is_empty() {
            self.deliver_batch(from, &mut batch);
        }
        *self.outbox.spare.borrow_mut() = batch;
    }

    /// Puts `batch` (drained) on this shard's event queue and wakes its waiters.
    fn deliver_batch(&self, from: usize, batch: &mut Vec<Msg>) {
        if batch.is_empty() {
            return;
        }
        self.me()
            .counters
            .msgs_received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.events.borrow_mut().extend(
            batch
                .drain(..)
                .map(|(tag, val)| Event::RingMsg { from, tag, val }),
        );
        self.wake_event_waiters();
    }
}
