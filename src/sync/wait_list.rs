//! A FIFO of waiting tasks with O(1) cancel, shared by the sync primitives.
//!
//! Each waiter is a slab cell on a doubly linked list. Notifying a waiter
//! takes it off the list but keeps its cell, marked `Notified(tag)`, until the
//! waiter's future sees it (on its next poll) or is dropped: so a future that
//! was handed something (a permit, a slot, a wake-up) and is dropped before it
//! could use it can tell, and pass it on.

use std::task::Waker;

const NIL: u32 = u32::MAX;

/// Names one waiter; ids are never reused, so a stale key matches nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaitKey {
    index: u32,
    id: u64,
}

/// Where a waiter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitState {
    /// Still on the list.
    Queued,
    /// Taken off the list by a notification carrying this tag.
    Notified(u8),
    /// No such waiter (already finished).
    Gone,
}

#[derive(Debug)]
struct Cell {
    /// 0 marks a free cell.
    id: u64,
    waker: Option<Waker>,
    /// What the waiter asks for (the semaphore's permit count).
    want: usize,
    /// `None` while queued, `Some(tag)` once notified.
    notified: Option<u8>,
    prev: u32,
    next: u32,
}

/// A FIFO of wakers with O(1) push, cancel and notify.
#[derive(Debug)]
pub(crate) struct WaitList {
    cells: Vec<Cell>,
    head: u32,
    tail: u32,
    free: u32,
    queued: usize,
    /// Cells in use (queued or notified).
    live: usize,
    next_id: u64,
}

impl Default for WaitList {
    fn default() -> Self {
        WaitList {
            cells: Vec::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            queued: 0,
            live: 0,
            next_id: 1,
        }
    }
}

impl WaitList {
    /// Waiters on the list (not counting notified ones).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues a waiter at the back.
    pub(crate) fn push(&mut self, waker: Waker, want: usize) -> WaitKey {
        let id = self.next_id;
        self.next_id += 1;
        let cell = Cell {
            id,
            waker: Some(waker),
            want,
            notified: None,
            prev: self.tail,
            next: NIL,
        };
        let index = match self.free {
            NIL => {
                let i = u32::try_from(self.cells.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("too many waiters");
                self.cells.push(cell);
                i
            }
            i => {
                self.free = self.cells[i as usize].next;
                self.cells[i as usize] = cell;
                i
            }
        };
        match self.tail {
            NIL => self.head = index,
            t => self.cells[t as usize].next = index,
        }
        self.tail = index;
        self.queued += 1;
        self.live += 1;
        WaitKey { index, id }
    }

    fn cell_mut(&mut self, key: WaitKey) -> Option<&mut Cell> {
        self.cells.get_mut(key.index as usize).filter(|c| c.id == key.id)
    }

    /// A waiter's poll: refreshes its waker if it is still queued; frees its
    /// cell if it was notified. Returns the replaced waker (to drop outside
    /// the lock) with the state.
    pub(crate) fn poll(&mut self, key: WaitKey, waker: &Waker) -> (WaitState, Option<Waker>) {
        let Some(cell) = self.cell_mut(key) else {
            return (WaitState::Gone, None);
        };
        match cell.notified {
            None => {
                let old = match &cell.waker {
                    Some(w) if w.will_wake(waker) => None,
                    _ => cell.waker.replace(waker.clone()),
                };
                (WaitState::Queued, old)
            }
            Some(tag) => {
                let old = self.release(key.index);
                (WaitState::Notified(tag), old)
            }
        }
    }

    /// A waiter gives up (its future is dropped). Returns where it stood, so
    /// a notified waiter can pass on what it was given.
    pub(crate) fn cancel(&mut self, key: WaitKey) -> (WaitState, Option<Waker>) {
        let Some(cell) = self.cell_mut(key) else {
            return (WaitState::Gone, None);
        };
        let state = match cell.notified {
            None => {
                self.unlink(key.index);
                WaitState::Queued
            }
            Some(tag) => WaitState::Notified(tag),
        };
        let old = self.release(key.index);
        (state, old)
    }

    /// What the first queued waiter wants.
    pub(crate) fn front_want(&self) -> Option<usize> {
        (self.head != NIL).then(|| self.cells[self.head as usize].want)
    }

    /// Notifies the first queued waiter with `tag`; returns its waker to wake
    /// outside the lock.
    pub(crate) fn notify_one(&mut self, tag: u8) -> Option<Waker> {
        let i = self.head;
        if i == NIL {
            return None;
        }
        self.unlink(i);
        let cell = &mut self.cells[i as usize];
        cell.notified = Some(tag);
        cell.waker.take()
    }

    /// Notifies every queued waiter with `tag`; returns their wakers.
    pub(crate) fn notify_all(&mut self, tag: u8) -> Vec<Waker> {
        let mut wakers = Vec::with_capacity(self.queued);
        while self.head != NIL {
            wakers.extend(self.notify_one(tag));
        }
        wakers
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let c = &self.cells[i as usize];
            (c.prev, c.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.cells[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.cells[n as usize].prev = prev,
        }
        self.queued -= 1;
    }

    /// Frees an unlinked cell; returns its waker, if any.
    fn release(&mut self, i: u32) -> Option<Waker> {
        let c = &mut self.cells[i as usize];
        c.id = 0;
        c.notified = None;
        c.prev = NIL;
        c.next = self.free;
        self.free = i;
        let w = c.waker.take();
        self.live -= 1;
        if self.live == 0 && self.cells.len() > 1024 {
            self.cells = Vec::new();
            self.free = NIL;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn fifo_cancel_and_notified_states() {
        let mut l = WaitList::default();
        let a = l.push(noop(), 1);
        let b = l.push(noop(), 2);
        let c = l.push(noop(), 3);
        assert_eq!(l.len(), 3);
        assert_eq!(l.cancel(b).0, WaitState::Queued);
        assert_eq!(l.front_want(), Some(1));
        assert!(l.notify_one(7).is_some());
        assert_eq!(l.front_want(), Some(3));
        assert_eq!(l.poll(a, &noop()).0, WaitState::Notified(7));
        assert_eq!(l.poll(a, &noop()).0, WaitState::Gone);
        assert_eq!(l.notify_all(9).len(), 1);
        assert_eq!(l.cancel(c).0, WaitState::Notified(9));
        assert!(l.is_empty());
        // Reused cells do not answer to old keys.
        let d = l.push(noop(), 4);
        assert_eq!(l.cancel(a).0, WaitState::Gone);
        assert_eq!(l.poll(d, &noop()).0, WaitState::Queued);
    }
}
