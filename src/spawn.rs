//! Spawning on the current runtime: [`spawn`], [`spawn_blocking`] and their
//! `try_` forms, for code that runs inside a runtime and has no
//! [`RuntimeHandle`] at hand.
//!
//! "The current runtime" is the runtime whose shard thread runs the caller
//! (any spargio task, or code those tasks call), or, inside a closure given
//! to [`spawn_blocking`] or [`RuntimeHandle::spawn_blocking`], the runtime
//! whose pool runs it. Other threads (the `main` thread outside
//! [`Runtime::block_on`](crate::Runtime::block_on), threads you start
//! yourself) have none; there the `try_` forms return
//! [`RuntimeError::NoCurrentRuntime`] and the plain forms panic. With a
//! [`RuntimeHandle`] you can spawn from any thread.

use std::future::Future;

use crate::blocking::BlockingHandle;
use crate::error::RuntimeError;
use crate::runtime::{RuntimeHandle, TaskPlacement};
use crate::task::JoinHandle;

/// Spawns `fut` on the current runtime, on the calling shard's stealable
/// queue (an idle shard may take it), and returns its [`JoinHandle`].
///
/// ```
/// # spargio::RuntimeBuilder::new().shards(2).build().unwrap().block_on(async {
/// let task = spargio::spawn(async { 6 * 7 });
/// assert_eq!(task.await.unwrap(), 42);
/// # }).unwrap();
/// ```
///
/// # Panics
///
/// Outside a runtime (see the [`try_spawn`] errors) and when the runtime is
/// shutting down or the shard's stealable queue is full, with a message
/// naming the error.
#[track_caller]
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match try_spawn(fut) {
        Ok(handle) => handle,
        Err(e) => panic!("spargio::spawn: {e}"),
    }
}

/// Spawns `fut` like [`spawn`], returning the error instead of panicking.
///
/// ```
/// // Not inside a runtime here:
/// let err = spargio::try_spawn(async {}).unwrap_err();
/// assert!(matches!(err, spargio::RuntimeError::NoCurrentRuntime));
/// ```
///
/// # Errors
///
/// [`RuntimeError::NoCurrentRuntime`] when the caller is not on a shard
/// thread or in a blocking closure of a runtime; [`RuntimeError::Closed`]
/// after shutdown began; [`RuntimeError::Overloaded`] when the shard's stealable queue is full.
pub fn try_spawn<F>(fut: F) -> Result<JoinHandle<F::Output>, RuntimeError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    current()?.spawn_with_placement(TaskPlacement::Stealable, fut)
}

/// Runs the blocking closure `f` on the current runtime's blocking pool and
/// returns a handle that gives its result when awaited.
///
/// ```
/// # spargio::RuntimeBuilder::new().shards(1).build().unwrap().block_on(async {
/// let sum = spargio::spawn_blocking(|| (1..=10u32).sum::<u32>());
/// assert_eq!(sum.await.unwrap(), 55);
/// # }).unwrap();
/// ```
///
/// # Panics
///
/// Outside a runtime and after shutdown began (see [`try_spawn_blocking`]).
#[track_caller]
pub fn spawn_blocking<F, T>(f: F) -> BlockingHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match try_spawn_blocking(f) {
        Ok(handle) => handle,
        Err(e) => panic!("spargio::spawn_blocking: {e}"),
    }
}

/// Runs `f` like [`spawn_blocking`], returning the error instead of panicking.
///
/// # Errors
///
/// [`RuntimeError::NoCurrentRuntime`] when the caller is not on a shard
/// thread or in a blocking closure of a runtime; [`RuntimeError::Closed`]
/// after shutdown began; the error of
/// starting a pool thread.
pub fn try_spawn_blocking<F, T>(f: F) -> Result<BlockingHandle<T>, RuntimeError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    current()?.spawn_blocking(f)
}

fn current() -> Result<RuntimeHandle, RuntimeError> {
    if let Some(handle) = RuntimeHandle::current() {
        return Ok(handle);
    }
    match crate::runtime::blocking_context() {
        // The job outlived its runtime.
        Some(weak) => weak
            .upgrade()
            .map(|shared| RuntimeHandle { shared })
            .ok_or(RuntimeError::Closed),
        None => Err(RuntimeError::NoCurrentRuntime),
    }
}
