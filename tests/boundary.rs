//! `spargio::boundary` on every kernel: calls from Tokio tasks and plain
//! threads into spargio servers (and the reverse), overload, deadlines,
//! cancellation, and either side going away at every stage.
#![forbid(unsafe_code)]

mod common;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::{Kernel, build, builder, join, wait};
use spargio::Runtime;
use spargio::boundary::{self, BoundaryError, BoundaryServer, BoundaryTicket};

const SHARDS: usize = 2;
const LONG: Duration = Duration::from_secs(120);

fn runtime(kernel: Kernel) -> Option<Runtime> {
    builder(kernel, SHARDS).map(|b| build(kernel, b))
}

/// Serves `req * 2` from a spargio task on `shard` until the clients are gone.
fn serve_doubling(
    rt: &Runtime,
    shard: usize,
    server: BoundaryServer<u64, u64>,
) -> spargio::JoinHandle<usize> {
    rt.handle()
        .spawn_pinned(shard, async move {
            let mut served = 0;
            while let Ok(req) = server.recv().await {
                let v = *req.request();
                if req.respond(v * 2).is_ok() {
                    served += 1;
                }
            }
            served
        })
        .unwrap()
}

/// Polls a ticket once (so it queues or registers), without waiting.
fn poll_once<T>(ticket: &mut BoundaryTicket<T>) -> Poll<Result<T, BoundaryError>> {
    Pin::new(ticket).poll(&mut Context::from_waker(Waker::noop()))
}

fn calls_from_tokio_tasks_and_plain_threads(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let (client, server) = boundary::channel::<u64, u64>(16);
    let servers = [
        serve_doubling(&rt, 0, server.clone()),
        serve_doubling(&rt, 1, server),
    ];
    let per = common::scaled(2_000, 300) as u64;

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tokio_calls: Vec<_> = (0..8u64)
        .map(|t| {
            let client = client.clone();
            tokio.spawn(async move {
                for i in 0..per {
                    let v = t * 1_000_000 + i;
                    assert_eq!(client.call(v).unwrap().await, Ok(v * 2));
                }
            })
        })
        .collect();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let v = (100 + t) * 1_000_000 + i;
                    assert_eq!(client.call(v).unwrap().wait_timeout(LONG), Ok(v * 2));
                }
            })
        })
        .collect();
    tokio.block_on(async {
        for c in tokio_calls {
            c.await.unwrap();
        }
    });
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(client);
    let served: usize = servers.into_iter().map(|s| join("server", s)).sum();
    assert_eq!(served as u64, per * 10);

    // The reverse: spargio tasks call a server on a plain thread.
    let (client, server) = boundary::channel::<u64, u64>(4);
    let server_thread = std::thread::spawn(move || {
        let mut n = 0;
        while let Ok(req) = server.blocking_recv() {
            let v = *req.request();
            req.respond(v + 1).unwrap();
            n += 1;
        }
        n
    });
    let callers: Vec<_> = (0..4u64)
        .map(|t| {
            let client = client.clone();
            rt.handle()
                .spawn_stealable(async move {
                    for i in 0..per {
                        assert_eq!(client.call(t + i).unwrap().await, Ok(t + i + 1));
                    }
                })
                .unwrap()
        })
        .collect();
    drop(client);
    callers.into_iter().for_each(|c| join("caller", c));
    assert_eq!(server_thread.join().unwrap(), per * 4);
}

fn overload_and_waiting_for_room(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let (client, server) = boundary::channel::<u32, u32>(2);
    let a = client.try_call(1).unwrap();
    let b = client.try_call(2).unwrap();
    assert_eq!(client.try_call(3).unwrap_err(), BoundaryError::Overloaded);
    assert_eq!(client.len(), 2);
    // `call` on a full queue waits (in order) for room instead of failing.
    let mut c = client.call(3).unwrap();
    let mut d = client.call(4).unwrap();
    assert!(poll_once(&mut c).is_pending());
    assert!(poll_once(&mut d).is_pending());
    assert_eq!(
        client.try_call(5).unwrap_err(),
        BoundaryError::Overloaded,
        "waiting calls come first"
    );
    let server_task = rt
        .handle()
        .spawn_pinned(1, async move {
            let mut order = Vec::new();
            for _ in 0..4 {
                let req = server.recv().await.unwrap();
                order.push(*req.request());
                let v = *req.request();
                req.respond(v * 10).unwrap();
            }
            order
        })
        .unwrap();
    // A Tokio task awaits one of the waiting calls.
    let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(tokio.block_on(c), Ok(30));
    assert_eq!(wait("d", d), Ok(40));
    assert_eq!(a.wait_timeout(LONG), Ok(10));
    assert_eq!(b.wait_timeout(LONG), Ok(20));
    assert_eq!(join("server", server_task), vec![1, 2, 3, 4]);
}

fn deadlines_time_out_on_both_sides(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let (client, server) = boundary::channel::<u32, u32>(4);
    // Nobody answers: the ticket times out by itself, never early.
    let start = Instant::now();
    let t = client.call_with_timeout(1, Duration::from_millis(20)).unwrap();
    let deadline = t.deadline().unwrap();
    assert_eq!(wait("timed-out call", t), Err(BoundaryError::Timeout));
    assert!(Instant::now() >= deadline && start.elapsed() >= Duration::from_millis(20));
    // The abandoned request is skipped by the server.
    let srv = server.clone();
    let r = join(
        "skip abandoned",
        rt.handle()
            .spawn_pinned(0, async move {
                srv.recv_timeout(Duration::from_millis(20))
                    .await
                    .map(|r| *r.request())
            })
            .unwrap(),
    );
    assert_eq!(r, Err(BoundaryError::Timeout));
    // The server takes a request but answers after its deadline: both sides
    // see Timeout.
    let t = client.call_with_timeout(2, Duration::from_millis(20)).unwrap();
    let srv = server.clone();
    let late = rt
        .handle()
        .spawn_pinned(1, async move {
            let req = srv.recv().await.unwrap();
            assert!(req.deadline().is_some());
            spargio::time::sleep_until(req.deadline().unwrap() + Duration::from_millis(5)).await;
            assert!(req.is_canceled());
            req.respond(0)
        })
        .unwrap();
    assert_eq!(t.wait_timeout(LONG), Err(BoundaryError::Timeout));
    assert_eq!(join("late respond", late), Err(BoundaryError::Timeout));
    // The waiting side's own limit: wait_timeout gives up, the late response
    // is refused with Timeout.
    let t = client.call(3).unwrap();
    assert_eq!(
        t.wait_timeout(Duration::from_millis(10)),
        Err(BoundaryError::Timeout)
    );
    let req = server.blocking_recv_timeout(Duration::from_millis(50));
    // It was abandoned before the server looked: skipped, so the receive times out.
    assert_eq!(req.map(|r| *r.request()).unwrap_err(), BoundaryError::Timeout);
    // Taken first, then abandoned.
    let t = client.call(4).unwrap();
    let req = server.blocking_recv_timeout(LONG).unwrap();
    assert_eq!(
        t.wait_timeout(Duration::from_millis(5)),
        Err(BoundaryError::Timeout)
    );
    assert_eq!(req.respond(40), Err(BoundaryError::Timeout));
    // A call waiting for room also honours its deadline.
    let (client, _server) = boundary::channel::<u32, u32>(1);
    let _full = client.try_call(0).unwrap();
    let t = client.call_with_timeout(1, Duration::from_millis(10)).unwrap();
    assert_eq!(wait("admission timeout", t), Err(BoundaryError::Timeout));
}

fn canceled_calls(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let (client, server) = boundary::channel::<u32, u32>(2);
    // Dropped before the server took it: skipped.
    drop(client.call(1).unwrap());
    let live = client.call(2).unwrap();
    let req = server.blocking_recv_timeout(LONG).unwrap();
    assert_eq!(*req.request(), 2);
    // Dropped after the server took it: respond reports Canceled.
    drop(live);
    assert!(req.is_canceled());
    assert_eq!(req.respond(20), Err(BoundaryError::Canceled));
    // The server drops a request unanswered: the caller gets Canceled.
    let t = client.call(3).unwrap();
    let srv = server.clone();
    rt.handle()
        .spawn_pinned(0, async move { drop(srv.recv().await.unwrap()) })
        .unwrap();
    assert_eq!(t.wait_timeout(LONG), Err(BoundaryError::Canceled));
    // A responder split off and dropped also cancels.
    let t = client.call(4).unwrap();
    let (value, responder) = server.blocking_recv_timeout(LONG).unwrap().into_parts();
    assert_eq!(value, 4);
    drop(responder);
    assert_eq!(t.wait_timeout(LONG), Err(BoundaryError::Canceled));
    // A call waiting for room that is dropped passes its turn on.
    let a = client.try_call(5).unwrap();
    let b = client.try_call(6).unwrap();
    let mut waiting = client.call(7).unwrap();
    let mut next = client.call(8).unwrap();
    assert!(poll_once(&mut waiting).is_pending());
    assert!(poll_once(&mut next).is_pending());
    let r5 = server.blocking_recv_timeout(LONG).unwrap(); // frees a slot for `waiting`
    drop(waiting); // ...which hands it to `next`
    // A call that was given room enters the queue when its ticket is polled
    // (its owner is woken for that; here the test polls it).
    assert!(poll_once(&mut next).is_pending());
    let r6 = server.blocking_recv_timeout(LONG).unwrap();
    let r8 = server.blocking_recv_timeout(LONG).unwrap();
    assert_eq!((*r5.request(), *r6.request(), *r8.request()), (5, 6, 8));
    for r in [r5, r6, r8] {
        let v = *r.request();
        r.respond(v).unwrap();
    }
    assert_eq!(a.wait_timeout(LONG), Ok(5));
    assert_eq!(b.wait_timeout(LONG), Ok(6));
    assert_eq!(wait("next", next), Ok(8));
}

fn server_and_client_dropped_at_every_stage(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let handle = rt.handle();
    // Server gone before any call.
    let (client, server) = boundary::channel::<u32, u32>(2);
    drop(server);
    assert!(client.is_closed());
    assert_eq!(client.call(1).unwrap_err(), BoundaryError::Closed);
    assert_eq!(client.try_call(1).unwrap_err(), BoundaryError::Closed);

    // Server gone with requests queued and calls waiting for room: all Closed.
    let (client, server) = boundary::channel::<u32, u32>(1);
    let queued = client.call(1).unwrap();
    let mut waiting = client.call(2).unwrap();
    assert!(poll_once(&mut waiting).is_pending());
    let not_polled = client.call(3).unwrap();
    drop(server);
    assert_eq!(queued.wait_timeout(LONG), Err(BoundaryError::Closed));
    assert_eq!(wait("waiting", waiting), Err(BoundaryError::Closed));
    assert_eq!(not_polled.wait_timeout(LONG), Err(BoundaryError::Closed));

    // Server gone after taking a request: the request can still be answered.
    let (client, server) = boundary::channel::<u32, u32>(1);
    let t = client.call(4).unwrap();
    let req = server.blocking_recv_timeout(LONG).unwrap();
    drop(server);
    req.respond(44).unwrap();
    assert_eq!(t.wait_timeout(LONG), Ok(44));

    // Every client gone, queue empty: a waiting receive ends with Closed.
    let (client, server) = boundary::channel::<u32, u32>(1);
    let receiver = handle
        .spawn_pinned(0, async move { server.recv().await.map(|_| ()) })
        .unwrap();
    common::until("receiver waits", || handle.stats_snapshot().shards[0].parks > 0);
    drop(client);
    assert_eq!(join("receiver", receiver), Err(BoundaryError::Closed));

    // Every client gone with requests queued: they are still served, then Closed.
    let (client, server) = boundary::channel::<u32, u32>(4);
    let tickets: Vec<_> = (0..3).map(|i| client.call(i).unwrap()).collect();
    drop(client);
    let served = handle
        .spawn_pinned(1, async move {
            let mut n = 0;
            loop {
                match server.recv().await {
                    Ok(req) => {
                        let v = *req.request();
                        req.respond(v).unwrap();
                        n += 1;
                    }
                    Err(e) => return (n, e),
                }
            }
        })
        .unwrap();
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.wait_timeout(LONG), Ok(i as u32));
    }
    assert_eq!(join("served", served), (3, BoundaryError::Closed));

    // The last client dropped while one of its calls still waits for room:
    // the server does not report Closed until that call is through.
    let (client, server) = boundary::channel::<u32, u32>(1);
    let first = client.call(1).unwrap();
    let second = client.call(2).unwrap(); // waits for room
    drop(client);
    let got = handle
        .spawn_pinned(0, async move {
            let mut got = Vec::new();
            while let Ok(req) = server.recv().await {
                got.push(*req.request());
                let v = *req.request();
                req.respond(v).unwrap();
            }
            got
        })
        .unwrap();
    assert_eq!(first.wait_timeout(LONG), Ok(1));
    assert_eq!(second.wait_timeout(LONG), Ok(2));
    assert_eq!(join("late call served", got), vec![1, 2]);

    // close(): new calls refused, queued ones still delivered.
    let (client, server) = boundary::channel::<u32, u32>(2);
    let t = client.call(5).unwrap();
    server.close();
    assert!(client.is_closed());
    assert_eq!(client.call(6).unwrap_err(), BoundaryError::Closed);
    let req = server.try_recv().unwrap().unwrap();
    req.respond(50).unwrap();
    assert_eq!(t.wait_timeout(LONG), Ok(50));
    assert_eq!(server.try_recv().unwrap_err(), BoundaryError::Closed);

    // Receive timeouts without any traffic.
    let (client, server) = boundary::channel::<u32, u32>(1);
    assert!(matches!(server.try_recv(), Ok(None)));
    assert_eq!(
        server
            .blocking_recv_timeout(Duration::from_millis(5))
            .unwrap_err(),
        BoundaryError::Timeout
    );
    let srv = server.clone();
    let r = join(
        "recv_timeout",
        handle
            .spawn_pinned(1, async move {
                srv.recv_timeout(Duration::from_millis(5)).await.map(|_| ())
            })
            .unwrap(),
    );
    assert_eq!(r, Err(BoundaryError::Timeout));
    drop(client);
}

fn tickets_and_receives_are_cancel_safe(kernel: Kernel) {
    let Some(rt) = runtime(kernel) else { return };
    let (client, server) = boundary::channel::<u32, u32>(8);
    // Two receivers wait; one is dropped after being told of a request: the
    // request goes to the other.
    let s2 = server.clone();
    let (registered_tx, registered_rx) = std::sync::mpsc::channel();
    let t = rt
        .handle()
        .spawn_pinned(0, async move {
            let mut first = s2.recv();
            poll_fn(|cx| {
                assert!(Pin::new(&mut first).poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            let mut second = s2.recv();
            poll_fn(|cx| {
                assert!(Pin::new(&mut second).poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            registered_tx.send(()).unwrap();
            // The request's arrival wakes this task (through `first`, the
            // receiver at the front); then `first` is dropped unused.
            poll_fn(|_| {
                if s2.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            drop(first);
            let req = second.await.unwrap();
            let v = *req.request();
            req.respond(v).unwrap();
        })
        .unwrap();
    common::recv("both receivers wait", &registered_rx);
    let ticket = client.call(9).unwrap();
    assert_eq!(ticket.wait_timeout(LONG), Ok(9));
    join("cancel-safe receive", t);
    drop(server);
}

each_kernel!(
    calls_from_tokio_tasks_and_plain_threads,
    overload_and_waiting_for_room,
    deadlines_time_out_on_both_sides,
    canceled_calls,
    server_and_client_dropped_at_every_stage,
    tickets_and_receives_are_cancel_safe,
);
