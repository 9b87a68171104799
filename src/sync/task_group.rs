//! `TaskGroup`: tasks spawned together, cancelled together, joined together.

use std::fmt;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use super::cancel::CancellationToken;
use crate::error::{JoinError, RuntimeError};
use crate::runtime::{RuntimeHandle, TaskPlacement};
use crate::task::JoinHandle;

/// How one task of a [`TaskGroup`] ended, from [`TaskGroup::join_all`].
#[derive(Debug)]
pub struct TaskExit<T> {
    /// The task's id ([`JoinHandle::id`]).
    pub id: u64,
    /// Its output, or why there is none: [`JoinError::Cancelled`] for a task
    /// the group's cancellation (or an `abort`, or shutdown) stopped.
    pub result: Result<T, JoinError>,
}

impl<T> TaskExit<T> {
    /// True when the task was cancelled before it finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.result, Err(JoinError::Cancelled))
    }
}

/// A set of tasks with one cancellation signal, spawned anywhere in a runtime.
///
/// Each task runs under the group's [`CancellationToken`]: when the group is
/// cancelled (by [`cancel`](TaskGroup::cancel), by cancelling a parent token
/// the group was made from, or by dropping the group) every task, on every
/// shard, is woken and dropped at its next await point, and
/// [`join_all`](TaskGroup::join_all) reports it as cancelled. Tasks that want
/// to finish cleanly instead can watch [`token`](TaskGroup::token) themselves.
///
/// ```
/// use spargio::TaskPlacement;
/// use spargio::sync::TaskGroup;
///
/// spargio::run(|handle| async move {
///     let group = TaskGroup::new(&handle);
///     group.spawn(TaskPlacement::Stealable, async { 1 }).unwrap();
///     group.spawn(TaskPlacement::RoundRobin, async { std::future::pending::<i32>().await }).unwrap();
///     // Let the first finish, then stop the rest.
///     spargio::time::sleep(std::time::Duration::from_millis(10)).await;
///     group.cancel();
///     let exits = group.join_all().await;
///     assert_eq!(exits[0].result.as_ref().ok(), Some(&1));
///     assert!(exits[1].is_cancelled());
/// })
/// .unwrap();
/// ```
pub struct TaskGroup<T = ()> {
    handle: RuntimeHandle,
    token: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<Option<T>>>>,
}

impl<T> fmt::Debug for TaskGroup<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tasks = self.tasks.lock().map_or(0, |t| t.len());
        f.debug_struct("TaskGroup")
            .field("tasks", &tasks)
            .field("cancelled", &self.token.is_cancelled())
            .finish()
    }
}

impl<T: Send + 'static> TaskGroup<T> {
    /// An empty group spawning into `handle`'s runtime.
    pub fn new(handle: &RuntimeHandle) -> TaskGroup<T> {
        TaskGroup::with_token(handle, CancellationToken::new())
    }

    /// An empty group cancelled when `parent` is: its token is a child of
    /// `parent`, so groups nest into a cancellation tree.
    pub fn with_parent(handle: &RuntimeHandle, parent: &CancellationToken) -> TaskGroup<T> {
        TaskGroup::with_token(handle, parent.child_token())
    }

    fn with_token(handle: &RuntimeHandle, token: CancellationToken) -> TaskGroup<T> {
        TaskGroup {
            handle: handle.clone(),
            token,
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<JoinHandle<Option<T>>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `fut` into the group with `placement`; returns the task's id.
    /// A task spawned into a cancelled group is reported cancelled without
    /// being polled.
    ///
    /// # Errors
    ///
    /// As [`RuntimeHandle::spawn_with_placement`].
    pub fn spawn<F>(&self, placement: TaskPlacement, fut: F) -> Result<u64, RuntimeError>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let token = self.token.clone();
        let handle = self
            .handle
            .spawn_with_placement(placement, async move { token.run_until_cancelled(fut).await })?;
        let id = handle.id();
        self.lock().push(handle);
        Ok(id)
    }

    /// A clone of the group's token, for tasks that stop cooperatively.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Cancels every task of the group, on every shard. Idempotent.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// True once the group was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Tasks spawned and not yet joined.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no task waits to be joined.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for every task spawned so far and reports how each ended, in
    /// spawn order. Tasks spawned while this waits are left for the next call.
    pub async fn join_all(&self) -> Vec<TaskExit<T>> {
        let tasks = std::mem::take(&mut *self.lock());
        let mut exits = Vec::with_capacity(tasks.len());
        for task in tasks {
            let id = task.id();
            let result = match task.await {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err(JoinError::Cancelled),
                Err(e) => Err(e),
            };
            exits.push(TaskExit { id, result });
        }
        exits
    }
}

impl<T> Drop for TaskGroup<T> {
    /// Dropping a group cancels its tasks (structured concurrency): join
    /// them first to keep their results.
    fn drop(&mut self) {
        self.token.cancel();
    }
}
