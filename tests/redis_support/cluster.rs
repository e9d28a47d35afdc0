//! A real Redis Cluster for the tests: three redis-server primaries on free loopback ports, the
//! 16,384 slots split between them, joined with `CLUSTER MEET`, killed (and their cluster files
//! removed) when dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{free_port, RedisServer};

/// The nodes of a running cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts three primaries and waits (at most 20 s) until every node sees all slots served.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fabraix-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster's files");
        let mut buses = Vec::new();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port();
                let bus = free_port();
                buses.push(bus);
                let args = [
                    "--cluster-enabled".to_string(),
                    "yes".to_string(),
                    "--cluster-config-file".to_string(),
                    dir.join(format!("nodes-{port}.conf"))
                        .to_str()
                        .expect("UTF-8")
                        .to_string(),
                    "--cluster-node-timeout".to_string(),
                    "5000".to_string(),
                    // Its own free port for the cluster bus (by default the port + 10,000, which
                    // Redis refuses above 65,535 and which may be taken).
                    "--cluster-port".to_string(),
                    bus.to_string(),
                ];
                RedisServer::start_with(port, None, &args)
            })
            .collect();
        let per = 16_384 / nodes.len() as u32;
        for (i, node) in nodes.iter().enumerate() {
            let first = i as u32 * per;
            let last = if i + 1 == nodes.len() {
                16_383
            } else {
                first + per - 1
            };
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut node.conn())
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        for (other, bus) in nodes.iter().zip(&buses).skip(1) {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(other.port)
                .arg(*bus)
                .query(&mut nodes[0].conn())
                .expect("CLUSTER MEET");
        }
        let cluster = Self { nodes, dir };
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self.nodes.iter().all(|node| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.conn())
                    .unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test cluster did not come up within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node that serves `key`'s slot.
    pub fn node_of(&self, key: &str) -> &RedisServer {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].conn())
            .expect("CLUSTER KEYSLOT");
        let per = 16_384 / self.nodes.len() as i64;
        let i = usize::try_from(slot / per)
            .unwrap_or(0)
            .min(self.nodes.len() - 1);
        &self.nodes[i]
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
