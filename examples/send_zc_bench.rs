//! Throughput and CPU time of large TCP sends over loopback: zero-copy
//! (`TcpStream::write_all_zc`, `IORING_OP_SEND_ZC`) against plain
//! (`write_all`, `IORING_OP_SEND`), for 64 KiB, 256 KiB and 1 MiB buffers,
//! in the same run. The receiver is a std thread that discards what it
//! reads. Numbers only; nothing is asserted.
//!
//! Loopback is the worst case for zero-copy: the kernel copies the pages
//! when it hands them to the local receiver anyway, and a zero-copy send
//! returns only once the peer acknowledged the bytes (the notification), so
//! expect it to lose here; it pays off towards a real NIC. The CPU figure is
//! the whole process (sender runtime and receiver thread).
//!
//! ```text
//! cargo run --release --example send_zc_bench [mib_per_case]
//! ```
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::time::Instant;

use spargio::net::TcpStream;
use spargio::sys::os::process_cpu_time;
use spargio::{Backend, RuntimeBuilder};

fn sink() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let addr = sink();
    let rt = RuntimeBuilder::new()
        .shards(1)
        .backend(Backend::IoUring)
        .build()
        .expect("a runtime");
    println!(
        "backend: {:?}; {mib} MiB per case over loopback",
        rt.handle().backend()
    );
    println!(
        "{:>8} {:>6} {:>10} {:>12} {:>10}",
        "buffer", "mode", "MiB/s", "CPU s/GiB", "sends"
    );
    for size in [64 << 10, 256 << 10, 1 << 20] {
        for zc in [false, true] {
            let total = mib << 20;
            let (elapsed, cpu, sends) = rt
                .block_on(async move {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    let mut buf = vec![0xa5u8; size];
                    let (cpu0, t0) = (process_cpu_time(), Instant::now());
                    let mut sent = 0;
                    let mut sends = 0u64;
                    while sent < total {
                        let (res, back) = if zc {
                            stream.write_all_zc(buf).await
                        } else {
                            stream.write_all(buf).await
                        };
                        res.unwrap();
                        buf = back;
                        sent += size;
                        sends += 1;
                    }
                    (t0.elapsed(), process_cpu_time() - cpu0, sends)
                })
                .unwrap();
            let mib_s = total as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
            let cpu_per_gib = cpu.as_secs_f64() / (total as f64 / (1u64 << 30) as f64);
            let mode = if zc { "zc" } else { "plain" };
            println!(
                "{:>7}K {mode:>6} {mib_s:>10.0} {cpu_per_gib:>12.3} {sends:>10}",
                size >> 10
            );
        }
    }
}
