//! A real redis-server for the tests, on a free loopback port, started by the test itself and
//! killed when dropped. A missing binary is a clear failure that names the fix, never a skip.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the redis-server binary (default: `redis-server` on PATH).
pub const SERVER_ENV: &str = "FABRAIX_REDIS_SERVER";

/// A redis-server child process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

fn binary() -> String {
    std::env::var(SERVER_ENV).unwrap_or_else(|_| "redis-server".to_string())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (a restarted server on the same port: empty, no persistence).
    pub fn start_on(port: u16) -> Self {
        let bin = binary();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{bin}` ({e}): install redis-server (apt-get install redis-server) or set {SERVER_ENV}=/path"
                )
            });
        let server = Self {
            child: Some(child),
            port,
        };
        server.wait_for_ping();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn wait_for_ping(&self) {
        let client = redis::Client::open(self.url()).expect("url");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A blocking connection for test commands (MEMORY USAGE, SCRIPT FLUSH, CLIENT PAUSE...).
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection()
            .expect("connect")
    }

    /// Kills the server (SIGKILL: no goodbye) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
