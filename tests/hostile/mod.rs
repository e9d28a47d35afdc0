//! A hostile HTTP server for the tests: a tokio `TcpListener` on loopback whose behaviour, per
//! connection, is a closure given the request (read raw) and the socket, to write whatever it
//! likes: absurd headers, huge chunked bodies, a byte a second, nothing at all, 429 storms. Every
//! answer closes its connection, so each call of the client is one connection and one request.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fabraix_scheduler::{ApiKey, KeyConfig, KeyId, Quota, RetryPolicy, Scheduler, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the client sent it.
#[derive(Debug, Clone)]
pub struct Request {
    /// 0 for the first request the server received, 1 for the next, ...
    pub n: usize,
    /// The request line and headers, as sent.
    pub head: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The request's path (and query).
    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A running hostile server.
pub struct Hostile {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    /// Serves every connection with `behaviour(request, socket)`.
    pub async fn start<F, Fut>(behaviour: F) -> Self
    where
        F: Fn(Request, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the hostile server");
        let addr = listener.local_addr().expect("its address");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let counter = Arc::clone(&counter);
                let behaviour = Arc::clone(&behaviour);
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    behaviour(Request { n, head, body }, socket).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// The base URL to give a key.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request: head up to the blank line, then `content-length` bytes of body.
async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        received.extend_from_slice(&buf[..n]);
        if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while received.len() < head_end + length {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        received.extend_from_slice(&buf[..n]);
    }
    Some((head, received[head_end..].to_vec()))
}

/// Writes a whole response: `status`, the extra `headers` (`"name: value"` each), `body`.
pub async fn respond(socket: &mut TcpStream, status: u16, headers: &[String], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body).await;
    let _ = socket.flush().await;
}

/// A 200 with a small JSON body.
pub async fn ok(socket: &mut TcpStream) {
    respond(socket, 200, &[], br#"{"ok":true}"#).await;
}

/// Keeps the connection open without writing, for `hold` (the client gives up first).
pub async fn hold(socket: TcpStream, hold: Duration) {
    tokio::time::sleep(hold).await;
    drop(socket);
}

/// A scheduler with one key `k` (secret `secret`, quota `quota`) on the hostile server, one
/// dispatch task, a fixed seed.
pub async fn scheduler(
    server: &Hostile,
    secret: &str,
    quota: &str,
    policy: RetryPolicy,
    transport: TransportConfig,
) -> (Scheduler, KeyId) {
    let scheduler = Scheduler::builder()
        .transport_config(transport)
        .retry_policy(policy)
        .dispatch_tasks(1)
        .seed(42)
        .build()
        .expect("scheduler builds");
    let key = KeyId::new("k");
    add_key(&scheduler, &key, server, secret, quota).await;
    (scheduler, key)
}

/// Adds key `key` on the hostile server to `scheduler`.
pub async fn add_key(
    scheduler: &Scheduler,
    key: &KeyId,
    server: &Hostile,
    secret: &str,
    quota: &str,
) {
    let config = KeyConfig::new(
        key.clone(),
        ApiKey::new(secret).expect("key"),
        &server.base_url(),
        quota.parse::<Quota>().expect("quota"),
    )
    .expect("key config");
    scheduler.add_key(config).await.expect("key added");
}

/// Timeouts longer than any test: for tests on tokio's paused clock, where a transport timeout
/// would fire as soon as every task waits for loopback I/O.
pub fn patient() -> TransportConfig {
    let day = Duration::from_secs(24 * 3600);
    TransportConfig::default()
        .connect_timeout(day)
        .request_timeout(day)
        .read_timeout(day)
}

/// A job for the hostile server: a GET of `path`.
pub fn get(path: &str) -> fabraix_scheduler::Job {
    fabraix_scheduler::Job::new(http::Method::GET, path)
}
