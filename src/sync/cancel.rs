//! `CancellationToken`: a cancellation signal with child tokens.
//!
//! # Structure
//!
//! Each token value is a handle on a node; clones share the node. A child
//! node is kept in its parent's `children` map (strongly) and points back at
//! its parent (strongly), so cancelling a parent can walk down to every live
//! descendant. The cycle is broken when a node *detaches*: once its last
//! handle is gone and it has no children left, it removes itself from its
//! parent (and the parent, if it is in the same state, follows). A node whose
//! handles are gone but whose children live stays as a relay, so cancelling
//! the grandparent still reaches the grandchildren. Cancelling takes a node's
//! children out of its map, which also breaks the cycles below it.
//!
//! Locks are taken parent before child, never the other way round.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::wait_list::{WaitKey, WaitList, WaitState};

struct Node {
    parent: Option<Arc<Node>>,
    /// Mirrors `Inner::cancelled` for lock-free reads. Release on set, Acquire
    /// on read: what the canceller wrote before cancelling is visible to a
    /// task that sees the flag.
    cancelled: AtomicBool,
    /// Live `CancellationToken` values on this node.
    handles: AtomicUsize,
    inner: Mutex<Inner>,
}

struct Inner {
    cancelled: bool,
    /// Keyed by the child's address (stable while it is in the map).
    children: HashMap<usize, Arc<Node>>,
    waiters: WaitList,
}

impl Node {
    fn new(parent: Option<Arc<Node>>, cancelled: bool) -> Arc<Node> {
        Arc::new(Node {
            parent,
            cancelled: AtomicBool::new(cancelled),
            handles: AtomicUsize::new(1),
            inner: Mutex::new(Inner {
                cancelled,
                children: HashMap::new(),
                waiters: WaitList::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(node: &Arc<Node>) -> usize {
        Arc::as_ptr(node) as usize
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Release the ancestors one by one: dropping a long chain of nodes
        // whose last reference is the child's `parent` must not recurse.
        let mut parent = self.parent.take();
        while let Some(p) = parent {
            parent = match Arc::try_unwrap(p) {
                Ok(mut node) => node.parent.take(),
                Err(_) => None,
            };
        }
    }
}

/// Cancels `root` and every descendant, waking everything that waits on them.
fn cancel_tree(root: &Arc<Node>) {
    // A work list, not recursion: a long chain of child tokens must not
    // overflow the stack.
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        let (wakers, children) = {
            let mut inner = node.lock();
            if inner.cancelled {
                continue;
            }
            inner.cancelled = true;
            node.cancelled.store(true, Ordering::Release);
            (inner.waiters.notify_all(0), std::mem::take(&mut inner.children))
        };
        wakers.into_iter().for_each(Waker::wake);
        stack.extend(children.into_values());
    }
}

/// Removes `node` from its parent if it has no handles and no children left,
/// then tries the parent the same way.
fn try_detach(node: Arc<Node>) {
    let mut node = node;
    loop {
        let Some(parent) = node.parent.clone() else { return };
        let removed = {
            let mut p = parent.lock();
            let n = node.lock();
            // Acquire: pairs with the Release decrement of the last handle.
            if node.handles.load(Ordering::Acquire) != 0 || !n.children.is_empty() {
                return;
            }
            drop(n);
            p.children.remove(&Node::key(&node))
        };
        // Only a removal can leave the parent childless: otherwise stop here
        // (so dropping a long, already cancelled chain is not quadratic).
        if removed.is_none() || parent.handles.load(Ordering::Acquire) != 0 {
            return;
        }
        drop(removed);
        node = parent;
    }
}

/// A signal that asks tasks, on any shard or thread, to stop.
///
/// Clones share one signal. [`child_token`](CancellationToken::child_token)
/// makes a token that is cancelled with its parent (and its parent's
/// ancestors) but can also be cancelled alone. Cancelling wakes every task
/// waiting in [`cancelled`](CancellationToken::cancelled) through its waker,
/// which schedules it on its own shard.
///
/// ```
/// use spargio::sync::CancellationToken;
///
/// spargio::run(|handle| async move {
///     let root = CancellationToken::new();
///     let child = root.child_token();
///     let worker = handle
///         .spawn_stealable(async move {
///             child.cancelled().await;
///             "stopped"
///         })
///         .unwrap();
///     root.cancel();
///     assert_eq!(worker.await.unwrap(), "stopped");
/// })
/// .unwrap();
/// ```
pub struct CancellationToken {
    node: Arc<Node>,
}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationToken")
            .field("is_cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Default for CancellationToken {
    fn default() -> Self {
        CancellationToken::new()
    }
}

impl Clone for CancellationToken {
    fn clone(&self) -> Self {
        self.node.handles.fetch_add(1, Ordering::Relaxed);
        CancellationToken {
            node: self.node.clone(),
        }
    }
}

impl Drop for CancellationToken {
    fn drop(&mut self) {
        // Release: orders this handle's use before a detacher's Acquire load.
        if self.node.handles.fetch_sub(1, Ordering::Release) == 1 {
            try_detach(self.node.clone());
        }
    }
}

impl CancellationToken {
    /// A new root token, not cancelled.
    pub fn new() -> CancellationToken {
        CancellationToken {
            node: Node::new(None, false),
        }
    }

    /// A token cancelled when this one is (and cancellable on its own without
    /// affecting this one). A child of a cancelled token starts cancelled.
    pub fn child_token(&self) -> CancellationToken {
        let mut inner = self.node.lock();
        if inner.cancelled {
            return CancellationToken {
                node: Node::new(None, true),
            };
        }
        let child = Node::new(Some(self.node.clone()), false);
        inner.children.insert(Node::key(&child), child.clone());
        CancellationToken { node: child }
    }

    /// Cancels this token and all its descendants. Idempotent.
    pub fn cancel(&self) {
        cancel_tree(&self.node);
    }

    /// True once this token (or an ancestor) was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.node.cancelled.load(Ordering::Acquire)
    }

    /// Completes when the token is cancelled (at once if it already is).
    pub fn cancelled(&self) -> WaitForCancellation<'_> {
        WaitForCancellation {
            node: &self.node,
            key: None,
        }
    }

    /// As [`cancelled`](CancellationToken::cancelled), owning a clone of the
    /// token, so the future is `'static`.
    pub fn cancelled_owned(self) -> WaitForCancellationOwned {
        WaitForCancellationOwned {
            token: self,
            key: None,
        }
    }

    /// Runs `fut` until it completes (`Some(output)`) or the token is
    /// cancelled (`None`, and `fut` is dropped). Cancellation is checked first.
    ///
    /// ```
    /// use spargio::sync::CancellationToken;
    ///
    /// spargio::run(|_| async {
    ///     let token = CancellationToken::new();
    ///     assert_eq!(token.run_until_cancelled(async { 1 }).await, Some(1));
    ///     token.cancel();
    ///     assert_eq!(token.run_until_cancelled(async { 2 }).await, None);
    /// })
    /// .unwrap();
    /// ```
    pub async fn run_until_cancelled<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut cancelled = self.cancelled();
        poll_fn(|cx| {
            if Pin::new(&mut cancelled).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            fut.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// A guard that cancels the token when dropped (unless
    /// [`disarm`](DropGuard::disarm)ed): ties cancellation to a scope.
    ///
    /// ```
    /// use spargio::sync::CancellationToken;
    ///
    /// let token = CancellationToken::new();
    /// {
    ///     let _guard = token.clone().drop_guard();
    /// }
    /// assert!(token.is_cancelled());
    /// ```
    pub fn drop_guard(self) -> DropGuard {
        DropGuard { token: Some(self) }
    }
}

fn poll_cancelled(node: &Node, key: &mut Option<WaitKey>, cx: &mut Context<'_>) -> Poll<()> {
    if node.cancelled.load(Ordering::Acquire) {
        return Poll::Ready(());
    }
    let mut inner = node.lock();
    if let Some(k) = *key {
        let (state, old) = inner.waiters.poll(k, cx.waker());
        drop(inner);
        drop(old);
        if state == WaitState::Queued {
            return Poll::Pending;
        }
        *key = None;
        return Poll::Ready(());
    }
    if inner.cancelled {
        return Poll::Ready(());
    }
    *key = Some(inner.waiters.push(cx.waker().clone(), 0));
    Poll::Pending
}

fn drop_waiter(node: &Node, key: &mut Option<WaitKey>) {
    if let Some(k) = key.take() {
        let old = node.lock().waiters.cancel(k).1;
        drop(old);
    }
}

/// Future of [`CancellationToken::cancelled`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitForCancellation<'a> {
    node: &'a Arc<Node>,
    key: Option<WaitKey>,
}

impl fmt::Debug for WaitForCancellation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForCancellation").finish_non_exhaustive()
    }
}

impl Future for WaitForCancellation<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        poll_cancelled(this.node, &mut this.key, cx)
    }
}

impl Drop for WaitForCancellation<'_> {
    fn drop(&mut self) {
        drop_waiter(self.node, &mut self.key);
    }
}

/// Future of [`CancellationToken::cancelled_owned`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitForCancellationOwned {
    token: CancellationToken,
    key: Option<WaitKey>,
}

impl fmt::Debug for WaitForCancellationOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForCancellationOwned").finish_non_exhaustive()
    }
}

impl Future for WaitForCancellationOwned {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        poll_cancelled(&this.token.node, &mut this.key, cx)
    }
}

impl Drop for WaitForCancellationOwned {
    fn drop(&mut self) {
        drop_waiter(&self.token.node, &mut self.key);
    }
}

/// Cancels its token when dropped; from [`CancellationToken::drop_guard`].
#[must_use = "the token is cancelled as soon as the guard is dropped"]
pub struct DropGuard {
    token: Option<CancellationToken>,
}

impl fmt::Debug for DropGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropGuard")
            .field("armed", &self.token.is_some())
            .finish()
    }
}

impl DropGuard {
    /// Returns the token without cancelling it.
    pub fn disarm(mut self) -> CancellationToken {
        self.token
            .take()
            .expect("a DropGuard holds its token until dropped or disarmed")
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            token.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn children(t: &CancellationToken) -> usize {
        t.node.lock().children.len()
    }

    #[test]
    fn dropped_children_detach_and_relays_keep_grandchildren_reachable() {
        let root = CancellationToken::new();
        for _ in 0..100 {
            let c = root.child_token();
            let _gc = c.child_token();
        }
        assert_eq!(children(&root), 0, "dropped subtrees are removed from the parent");
        let child = root.child_token();
        let grandchild = child.child_token();
        drop(child); // relay: grandchild still lives
        assert_eq!(children(&root), 1);
        root.cancel();
        assert!(grandchild.is_cancelled());
        drop(grandchild);
        assert_eq!(children(&root), 0);
    }

    #[test]
    fn child_of_cancelled_is_cancelled_and_cancel_does_not_go_up() {
        let root = CancellationToken::new();
        let child = root.child_token();
        child.cancel();
        assert!(!root.is_cancelled());
        root.cancel();
        assert!(root.child_token().is_cancelled());
    }

    #[test]
    fn long_chain_cancels_without_recursion() {
        let root = CancellationToken::new();
        let mut chain = vec![root.child_token()];
        for _ in 0..100_000 {
            let next = chain.last().unwrap().child_token();
            chain.push(next);
        }
        root.cancel();
        assert!(chain.last().unwrap().is_cancelled());
        // Dropping from the root end leaves each node referenced only by its
        // child: the leaf's drop then frees the whole chain, iteratively.
        chain.reverse();
        while let Some(t) = chain.pop() {
            drop(t);
        }
        assert_eq!(children(&root), 0);
    }

    #[test]
    fn long_uncancelled_chain_dropped_root_first_detaches_iteratively() {
        let root = CancellationToken::new();
        let mut chain = vec![root.child_token()];
        for _ in 0..100_000 {
            let next = chain.last().unwrap().child_token();
            chain.push(next);
        }
        chain.reverse();
        while let Some(t) = chain.pop() {
            drop(t);
        }
        assert_eq!(children(&root), 0);
    }
}
