//! Error types of the runtime.

use std::any::Any;
use std::fmt;

/// Errors from building or using a runtime.
#[derive(Debug)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The builder was given a configuration that cannot work.
    InvalidConfig(String),
    /// The stealable queue of the chosen shard is full; retry later or spawn pinned.
    Overloaded,
    /// The runtime is shutting down or has shut down.
    Closed,
    /// The runtime was built by another process: this one is a child that
    /// process forked without exec, where the runtime's threads and rings
    /// do not exist. Build a new runtime in the child.
    ForkedChild,
    /// A shard index out of range.
    NoSuchShard(usize),
    /// Setting up a shard failed (ring setup, thread spawn).
    Io(std::io::Error),
    /// A function that uses the current runtime ([`spawn`](crate::spawn),
    /// [`spawn_blocking`](crate::spawn_blocking)) was called on a thread that
    /// is not one of a runtime's shards.
    NoCurrentRuntime,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::InvalidConfig(msg) => write!(f, "invalid runtime configuration: {msg}"),
            RuntimeError::Overloaded => f.write_str("stealable queue is full (backpressure)"),
            RuntimeError::Closed => f.write_str("runtime is shut down"),
            RuntimeError::ForkedChild => f.write_str(
                "runtime belongs to the parent process (this is a fork child; build a new runtime here)",
            ),
            RuntimeError::NoSuchShard(s) => write!(f, "no shard {s} in this runtime"),
            RuntimeError::Io(e) => write!(f, "runtime I/O error: {e}"),
            RuntimeError::NoCurrentRuntime => f.write_str(
                "not inside a spargio runtime (call this from a spargio task, or use a RuntimeHandle)",
            ),
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for RuntimeError {
    fn from(e: std::io::Error) -> Self {
        RuntimeError::Io(e)
    }
}

/// [`RuntimeError::Io`] gives back its `io::Error`; every other variant
/// becomes an `io::Error` that carries it (reach it with
/// [`io::Error::get_ref`](std::io::Error::get_ref) and `downcast_ref`), of
/// kind `InvalidInput` for [`RuntimeError::InvalidConfig`] and
/// [`RuntimeError::NoSuchShard`], `Other` for the rest.
///
/// ```
/// let e = std::io::Error::from(spargio::RuntimeError::Closed);
/// assert!(e.to_string().contains("shut down"));
/// assert!(matches!(
///     e.get_ref().and_then(|inner| inner.downcast_ref::<spargio::RuntimeError>()),
///     Some(spargio::RuntimeError::Closed)
/// ));
/// ```
impl From<RuntimeError> for std::io::Error {
    fn from(e: RuntimeError) -> Self {
        use std::io::ErrorKind;
        let kind = match e {
            RuntimeError::Io(e) => return e,
            RuntimeError::InvalidConfig(_) | RuntimeError::NoSuchShard(_) => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Why a task did not produce its output.
pub enum JoinError {
    /// The task was aborted (or the runtime shut down) before it finished.
    Cancelled,
    /// The task panicked; the payload is the panic's.
    Panicked(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    /// True for [`JoinError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// True for [`JoinError::Panicked`].
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// The panic payload, if the task panicked.
    ///
    /// # Errors
    ///
    /// Gives `self` back when the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self {
            JoinError::Panicked(p) => Ok(p),
            other => Err(other),
        }
    }

    /// The panic message, when the payload is a string.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked(p) => p
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str)),
            JoinError::Cancelled => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("JoinError::Cancelled"),
            JoinError::Panicked(_) => write!(
                f,
                "JoinError::Panicked({:?})",
                self.panic_message().unwrap_or("..")
            ),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("task was cancelled"),
            JoinError::Panicked(_) => write!(
                f,
                "task panicked: {}",
                self.panic_message().unwrap_or("<non-string payload>")
            ),
        }
    }
}

impl std::error::Error for JoinError {}

/// An `io::Error` of kind `Other` whose message is the [`JoinError`]'s
/// (`task was cancelled`, or `task panicked: <message>`), so `?` works on a
/// joined task inside a function returning `io::Result`. A panic's payload is
/// not `Sync`, so it is not kept: only its message is.
///
/// ```
/// spargio::RuntimeBuilder::new().shards(1).build().unwrap().block_on(async {
///     let task = spargio::spawn(async { panic!("boom") });
///     let e = std::io::Error::from(task.await.unwrap_err());
///     assert_eq!(e.to_string(), "task panicked: boom");
/// }).unwrap();
/// ```
impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// Why a cross-shard message was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The target already holds `msg_queue_capacity` undelivered messages from this sender.
    Backpressure,
    /// The runtime is shut down.
    Closed,
    /// The runtime belongs to the parent of this fork child (see
    /// [`RuntimeError::ForkedChild`]).
    ForkedChild,
    /// The target shard does not exist.
    NoSuchShard(usize),
    /// The kernel refused the message (the errno).
    Os(i32),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Backpressure => f.write_str("target shard's message queue is full for this sender"),
            SendError::Closed => f.write_str("runtime is shut down"),
            SendError::ForkedChild => {
                f.write_str("runtime belongs to the parent process (this is a fork child)")
            }
            SendError::NoSuchShard(s) => write!(f, "no shard {s}"),
            SendError::Os(e) => write!(f, "MSG_RING failed: {}", std::io::Error::from_raw_os_error(*e)),
        }
    }
}

impl std::error::Error for SendError {}
