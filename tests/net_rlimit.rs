//! `RLIMIT_NOFILE` exhaustion during an accept storm, on both backends: each
//! accept that finds no free fd fails with `EMFILE`, the listener stays
//! usable, and the accept loop recovers once fds are closed. Its own test
//! binary, because it lowers a process-wide limit.
#![forbid(unsafe_code)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{RestoreLimit, limit_leaving};
use spargio::net::{TcpListener, TcpStream};
use spargio::sys::os::{nofile_limit, set_nofile_limit};
use spargio::{Backend, RuntimeBuilder};

const CLIENTS: usize = 40;
/// Free fd numbers left under the lowered limit.
const HEADROOM: u64 = 6;

fn is_emfile(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMFILE)
}

#[test]
fn accept_storm_past_rlimit_nofile_gives_emfile_per_accept_and_recovers() {
    let (soft, _hard) = nofile_limit().unwrap();
    for backend in [Backend::IoUring, Backend::Queue] {
        let rt = RuntimeBuilder::new()
            .shards(2)
            .backend(backend)
            .fallback_to_queue(false)
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        // The storm: every client connects first and waits in the backlog.
        let clients: Vec<std::net::TcpStream> = (0..CLIENTS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();

        let restore = RestoreLimit(soft);
        set_nofile_limit(limit_leaving(HEADROOM)).unwrap();
        let (emfiles, accepted) = rt
            .block_on(async move {
                let mut held = Vec::new();
                let (mut emfiles, mut accepted) = (0usize, 0usize);
                // Half with single accepts, half with a multishot accept.
                while accepted < CLIENTS / 2 {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            held.push(stream);
                            accepted += 1;
                        }
                        Err(e) if is_emfile(&e) => {
                            emfiles += 1;
                            held.clear(); // recover: close what we hold, accept again
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                let mut incoming = listener.incoming();
                while accepted < CLIENTS {
                    match incoming.next().await {
                        Ok(stream) => {
                            held.push(stream);
                            accepted += 1;
                        }
                        Err(e) if is_emfile(&e) => {
                            emfiles += 1;
                            held.clear();
                        }
                        Err(e) => panic!("incoming: {e}"),
                    }
                }
                (emfiles, accepted)
            })
            .unwrap();
        drop(restore);
        assert_eq!(accepted, CLIENTS, "{backend:?}");
        // Both the single and the multishot accept ran out at least once.
        assert!(
            emfiles >= 2,
            "{backend:?}: expected EMFILE with only {HEADROOM} free fds, got {emfiles}"
        );

        // The runtime is healthy afterwards.
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.block_on(async move {
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            client.write_all(b"alive".to_vec()).await.0.unwrap();
            let (res, buf) = server.read_exact(vec![0u8; 5]).await;
            res.unwrap();
            assert_eq!(buf, b"alive");
        })
        .unwrap();
        drop(clients);
        drop(rt);
        std::thread::sleep(Duration::from_millis(10));
    }
}
