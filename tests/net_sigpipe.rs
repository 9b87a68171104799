//! Sends to a closed or reset peer fail with `EPIPE`/`ECONNRESET` and never
//! raise `SIGPIPE`, on both backends. Its own test binary, because it restores
//! the default `SIGPIPE` disposition (terminate), which the Rust runtime sets
//! to "ignore": a send without `MSG_NOSIGNAL` would kill this process.
#![forbid(unsafe_code)]

use std::io::ErrorKind;

use spargio::net::{TcpListener, UnixStream};
use spargio::{Backend, RuntimeBuilder};

#[test]
fn sends_to_a_gone_peer_are_errors_not_signals() {
    spargio::sys::os::set_sigpipe_default().unwrap();
    for backend in [Backend::IoUring, Backend::Queue] {
        let rt = RuntimeBuilder::new()
            .shards(2)
            .backend(backend)
            .fallback_to_queue(false)
            .build()
            .unwrap();
        rt.block_on(async move {
            // Unix stream: the peer is closed.
            let (a, b) = UnixStream::pair().unwrap();
            drop(b);
            let e = a.send(b"x".to_vec()).await.0.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
            let e = a.write_all(vec![1u8; 100_000]).await.0.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");

            // TCP: the peer resets (it closes with unread data).
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().await.unwrap();
            server.write_all(b"never read".to_vec()).await.0.unwrap();
            drop(peer);
            let mut failures = 0;
            for _ in 0..1000 {
                match server.send(vec![0u8; 1024]).await.0 {
                    Ok(_) => std::thread::yield_now(),
                    Err(e) => {
                        assert!(
                            matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                            "{e}"
                        );
                        failures += 1;
                        if failures == 3 {
                            break;
                        }
                    }
                }
            }
            assert_eq!(failures, 3, "sends to a reset peer kept succeeding");
        })
        .unwrap();
    }
}
