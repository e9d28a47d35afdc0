//! What a hostile server's huge answer costs: a loopback server answers every call with a chunked
//! 200 of SIZE MiB (default 2048), and the scheduler sends CALLS calls (default 1) at once. Prints
//! each outcome; measure the memory with `/usr/bin/time -v` (maximum resident set size):
//!
//! ```text
//! cargo build --example hostile_body
//! /usr/bin/time -v target/debug/examples/hostile_body 2048 1
//! /usr/bin/time -v target/debug/examples/hostile_body 512 4
//! ```
//!
//! With the transport's response limit (1 MiB by default) each call fails as soon as its body
//! passes it, so memory stays near the limit times the calls on the wire, whatever SIZE is.

use std::time::Instant;

use fabraix_scheduler::{ApiKey, Job, KeyConfig, KeyId, Quota, Scheduler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(mut socket: TcpStream, size_mib: u64) {
    let mut buf = [0u8; 4096];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let start = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if socket.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b'x'; 1 << 20];
    let frame = [b"100000\r\n".to_vec(), chunk, b"\r\n".to_vec()].concat();
    for _ in 0..size_mib {
        if socket.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let size_mib: u64 = args
        .next()
        .map_or(2048, |a| a.parse().expect("SIZE in MiB"));
    let calls: usize = args.next().map_or(1, |a| a.parse().expect("CALLS"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, size_mib));
        }
    });
    let scheduler = Scheduler::builder().build().expect("scheduler");
    let key = KeyId::new("hostile");
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new("hostile-body-key").expect("key"),
        &format!("http://{addr}"),
        "1000/1s".parse::<Quota>().expect("quota"),
    )
    .expect("config");
    scheduler.add_key(config).await.expect("add key");
    let started = Instant::now();
    let mut tickets = Vec::new();
    for i in 0..calls {
        let job = Job::new(http::Method::GET, format!("/huge/{i}"));
        tickets.push(scheduler.submit(&key, job).await.expect("submit"));
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        match ticket.await {
            Ok(response) => println!(
                "call {i}: {} with {} bytes",
                response.status,
                response.body.len()
            ),
            Err(e) => println!("call {i}: {} ({e})", e.kind()),
        }
    }
    println!(
        "{calls} calls of {size_mib} MiB in {:.1?}",
        started.elapsed()
    );
}
