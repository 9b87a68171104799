//! Blocking waits for foreign threads: run a future on the calling thread,
//! parking it until the future's waker unparks it (no polling loop).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::shard;

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static THREAD_WAKER: Waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
}

/// Panics if the calling thread is a spargio shard: blocking it would stall
/// every task on that shard (and deadlock if the other side runs there).
pub(crate) fn assert_not_on_shard(what: &str) {
    assert!(
        shard::with_local(|_| ()).is_none(),
        "{what} blocks the calling thread and cannot be used on a spargio shard; await the async variant instead"
    );
}

/// Runs `fut` on this thread until it completes or `deadline` passes (`None`).
pub(crate) fn block_on<F: Future>(what: &str, fut: F, deadline: Option<Instant>) -> Option<F::Output> {
    assert_not_on_shard(what);
    THREAD_WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        let mut fut = pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return Some(v);
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    })
}
