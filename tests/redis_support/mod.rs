//! A real redis-server for the tests, on a free loopback port, started by the test itself and
//! killed when dropped. A missing binary is a clear failure that names the fix, never a skip.
#![allow(dead_code)]

pub mod cluster;
pub mod pki;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the redis-server binary (default: `redis-server` on PATH).
pub const SERVER_ENV: &str = "FABRAIX_REDIS_SERVER";

/// A redis-server child process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// The port it speaks TLS on, if started with [`start_tls`](Self::start_tls).
    pub tls_port: Option<u16>,
}

/// The redis-server to run: `FABRAIX_REDIS_SERVER`, else `redis-server` on PATH or in Debian's
/// place. On a fresh machine without one, `cargo test` installs Debian's package itself when it
/// runs as root with apt-get (once per test process), so the README's one test command is the
/// whole set-up; anywhere else a missing binary is a clear failure that names the fix.
fn binary() -> String {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(find_or_install).clone()
}

fn find_or_install() -> String {
    if let Ok(path) = std::env::var(SERVER_ENV) {
        return path;
    }
    let found = || {
        [
            "redis-server",
            "/usr/bin/redis-server",
            "/usr/sbin/redis-server",
        ]
        .into_iter()
        .find(|bin| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    };
    if let Some(bin) = found() {
        return bin.to_string();
    }
    install_from_debian();
    found().unwrap_or("redis-server").to_string()
}

/// `apt-get install redis-server`, when this process may (root, apt-get present). Its output goes
/// to the test's stderr; a failure is left to the start below, which names the fix.
fn install_from_debian() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || Command::new("apt-get").arg("--version").output().is_err() {
        return;
    }
    eprintln!("redis-server not found: installing Debian's package (apt-get install redis-server)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    let _ = apt(&["update", "-qq"]);
    let _ = apt(&["install", "-y", "-qq", "redis-server"]);
}

pub(crate) fn free_port() -> u16 {
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
        Self::start_with(port, None, &[])
    }

    /// Starts a server that also speaks TLS, on a free port of its own, with these files (PEM:
    /// its certificate, its key, the CA that signed it); it asks no certificate of clients.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Self {
        let tls_port = free_port();
        let path = |p: &std::path::Path| p.to_str().expect("a UTF-8 path").to_string();
        let args = [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".to_string(),
            path(cert),
            "--tls-key-file".to_string(),
            path(key),
            "--tls-ca-cert-file".to_string(),
            path(ca),
            "--tls-auth-clients".to_string(),
            "no".to_string(),
        ];
        Self::start_with(free_port(), Some(tls_port), &args)
    }

    pub(crate) fn start_with(port: u16, tls_port: Option<u16>, extra: &[String]) -> Self {
        let bin = binary();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
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
            tls_port,
        };
        server.wait_for_ping();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The `rediss://` URL of its TLS port (started with [`start_tls`](Self::start_tls)).
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}/",
            self.tls_port.expect("a TLS server")
        )
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
