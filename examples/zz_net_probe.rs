#![forbid(unsafe_code)]
use std::io::{Read, Write};
use std::time::{Duration, Instant};
fn main() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let mut c = c.unwrap();
            c.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut b = vec![0u8; 65536];
                loop { match c.read(&mut b) { Ok(0) | Err(_) => return, Ok(n) => c.write_all(&b[..n]).unwrap() } }
            });
        }
    });
    const N: u32 = 5000;
    for spin in [0u64, 50, 200] {
        for shards in [1usize, 2] {
        let rt = spargio::RuntimeBuilder::new().shards(shards).spin_before_park(Duration::from_micros(spin)).build().unwrap();
        let h = rt.handle().clone();
        let (d, stats0) = rt.block_on(async move {
            let s = spargio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 256];
            let mut msg = vec![1u8; 256];
            let st = h.stats_snapshot();
            let t = Instant::now();
            for _ in 0..N {
                let (r, m) = s.write_all(msg).await; r.unwrap(); msg = m;
                let (r, b) = s.read_exact(buf).await; r.unwrap(); buf = b;
            }
            (t.elapsed(), st)
        }).unwrap();
        let st = rt.handle().stats_snapshot();
        let parks = st.total(|s| s.parks) - stats0.total(|s| s.parks);
        println!("spargio shards {shards} spin {spin}us: {:.1} us/rtt, parks/rtt {:.2}", d.as_secs_f64() * 1e6 / N as f64, parks as f64 / N as f64);
        }
    }
    let trt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let d = trt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 256];
        let t = Instant::now();
        for _ in 0..N { s.write_all(&[1u8; 256]).await.unwrap(); s.read_exact(&mut buf).await.unwrap(); }
        t.elapsed()
    });
    println!("tokio: {:.1} us/rtt", d.as_secs_f64() * 1e6 / N as f64);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 256];
    let t = Instant::now();
    for _ in 0..N { s.write_all(&[1u8; 256]).unwrap(); s.read_exact(&mut buf).unwrap(); }
    println!("std blocking: {:.1} us/rtt", t.elapsed().as_secs_f64() * 1e6 / N as f64);
}
