//! Synchronisation that works across shards, runtimes and plain threads.
//!
//! - [`CancellationToken`] (with child tokens and a cancel-on-drop guard) and
//!   [`TaskGroup`]: structured cancellation of tasks on every shard.
//! - [`oneshot`] and [`mpsc`] (bounded and unbounded) channels, with blocking
//!   variants for threads outside the runtime.
//! - [`Notify`] and [`Semaphore`].
//!
//! Everything here is built on `std` mutexes, atomics and [`Waker`]s. A task
//! waiting on a shard is woken through its waker, which queues it on its own
//! shard and rings that shard's doorbell only if it sleeps; a blocked foreign
//! thread is unparked. Nothing polls or spins.
//!
//! [`Waker`]: std::task::Waker

mod block;
mod cancel;
pub mod mpsc;
mod notify;
pub mod oneshot;
mod semaphore;
mod task_group;
mod wait_list;

pub use cancel::{CancellationToken, DropGuard, WaitForCancellation, WaitForCancellationOwned};
pub use notify::{Notified, Notify};
pub use semaphore::{
    Acquire, AcquireError, OwnedSemaphorePermit, Semaphore, SemaphorePermit, TryAcquireError,
};
pub use task_group::{TaskExit, TaskGroup};

pub(crate) use block::block_on;
pub(crate) use wait_list::{WaitKey, WaitList, WaitState};
