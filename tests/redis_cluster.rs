//! `RedisLedgerStore` on a real Redis Cluster (three redis-server primaries on loopback, started
//! by the test): a fleet sharing one key through it gets no 429, each key's state sits on the one
//! node of its hash tag, a pause is heard through any node, and a flushed script is loaded again
//! on every primary.

mod common;
mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use fabraix_scheduler::mock::{MockServer, ServerModel};
use fabraix_scheduler::{
    ApiKey, KeyConfig, KeyId, LedgerConfig, LedgerStore, Quota, RedisLedgerStore, RedisStoreConfig,
    Scheduler, StoreError, TokioClock,
};
use redis_support::cluster::RedisCluster;

const SECRET: &str = "cluster-secret-1";

async fn store_via(nodes: &[String]) -> RedisLedgerStore {
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    RedisLedgerStore::connect_cluster(&nodes, RedisStoreConfig::default())
        .await
        .expect("connects to the cluster")
}

/// A store with `SECRET`'s ledger registered as `id`.
async fn registered(nodes: &[String], quota: &Quota, id: &str) -> (RedisLedgerStore, KeyId) {
    let store = store_via(nodes).await;
    let key = KeyId::new(id);
    store.bind_fingerprint(&key, ApiKey::new(SECRET).unwrap().fingerprint());
    let now = tokio::time::Instant::now();
    store
        .register(&key, quota, LedgerConfig::default(), now)
        .await
        .expect("registers on the cluster");
    (store, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_a_key_through_a_cluster_gets_no_429() {
    let cluster = RedisCluster::start();
    let quota: Quota = "20/1s".parse().unwrap();
    let server = MockServer::builder()
        .key(SECRET, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let urls = cluster.urls();
    let mut members = Vec::new();
    for (i, seed) in urls.iter().enumerate() {
        // Each member knows one node only: the cluster tells it the others.
        let clock = Arc::new(TokioClock::new());
        let store = store_via(std::slice::from_ref(seed))
            .await
            .with_clock(clock.clone());
        let scheduler = Scheduler::builder()
            .clock(clock)
            .transport_config(common::patient_transport())
            .store(store)
            .build()
            .unwrap();
        let id = format!("member-{i}");
        let config = KeyConfig::new(
            KeyId::new(&id),
            ApiKey::new(SECRET).unwrap(),
            &server.base_url(),
            quota.clone(),
        )
        .unwrap()
        .guard(Duration::from_millis(100));
        scheduler.add_key(config).await.unwrap();
        members.push((scheduler, id));
    }
    let mut tickets = Vec::new();
    for (scheduler, id) in &members {
        for i in 0..20 {
            tickets.push(
                scheduler
                    .submit(&KeyId::new(id), common::event(i))
                    .await
                    .unwrap(),
            );
        }
    }
    for t in tickets {
        t.await.expect("every job succeeds");
    }
    assert_eq!(server.record().len(), 60);
    assert_eq!(server.refused(), 0, "no call refused");
    server.verify().expect("no window of the quota broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_state_sits_on_the_node_of_its_hash_tag() {
    let cluster = RedisCluster::start();
    let quota: Quota = "600/1m,10000/1h".parse().unwrap();
    let (store, key) = registered(&cluster.urls(), &quota, "tagged").await;
    let at = tokio::time::Instant::now();
    for _ in 0..5 {
        store
            .reserve(&key, at)
            .await
            .expect("reserves on the cluster");
    }
    let prefix = store.redis_prefix(&key);
    let home = cluster.node_of(&format!("{prefix}:h"));
    let mut held = Vec::new();
    for node in &cluster.nodes {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("fx:*")
            .query(&mut node.conn())
            .unwrap();
        if node.port == home.port {
            held = keys;
        } else {
            assert!(keys.is_empty(), "a key off its slot's node: {keys:?}");
        }
    }
    assert_eq!(held.len(), 3, "the hash and a log per limit: {held:?}");
    assert!(held.iter().all(|k| k.starts_with(&prefix)), "{held:?}");
    assert!(held.iter().all(|k| !k.contains(SECRET)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_raised_on_the_keys_node_is_heard_through_another_node() {
    let cluster = RedisCluster::start();
    let quota: Quota = "3/1s".parse().unwrap();
    // The node that holds the key's state: the slot of its hash tag, the API key's fingerprint.
    let api_key = ApiKey::new(SECRET).unwrap();
    let fingerprint = api_key.fingerprint();
    let tag = fingerprint.trim_start_matches("key#");
    let home = cluster.node_of(&format!("fx:v1:{{{tag}}}:h"));
    // Each store subscribes through the first node it is given: the probe, which raises the
    // pause, through the key's node; the listener through another.
    let mut home_first = vec![home.url()];
    let mut others: Vec<String> = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.port != home.port) {
        home_first.push(node.url());
        others.push(node.url());
    }
    others.push(home.url());
    let (probe, key) = registered(&home_first, &quota, "probe").await;
    let (listener, listener_key) = registered(&others, &quota, "listener").await;
    let subscribed = |node: &redis_support::RedisServer| {
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{}:blocks", probe.redis_prefix(&key)))
            .query(&mut node.conn())
            .unwrap();
        counts.first().map_or(0, |c| c.1)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = cluster.nodes.iter().find(|n| n.url() == others[0]).unwrap();
    while subscribed(first) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while subscribed(home) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(subscribed(home), 1, "the probe alone on the key's node");
    assert_eq!(subscribed(first), 1, "the listener alone on its node");
    let now = tokio::time::Instant::now();
    probe
        .block_until(&key, now + Duration::from_secs(5))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listener.shared_block(&listener_key).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pause was not heard"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let until = listener.shared_block(&listener_key).unwrap().until();
    assert!(until >= now + Duration::from_secs(4), "{:?}", until - now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_flushed_from_every_node_is_loaded_again() {
    let cluster = RedisCluster::start();
    let quota: Quota = "3/1s".parse().unwrap();
    let (store, key) = registered(&cluster.urls(), &quota, "flushed").await;
    let at = tokio::time::Instant::now();
    store.reserve(&key, at).await.unwrap();
    for node in &cluster.nodes {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut node.conn())
            .unwrap();
    }
    store
        .reserve(&key, at)
        .await
        .expect("reserves after SCRIPT FLUSH");
    // Both counted: of the next two calls, the second waits for the window.
    let plan = store.plan(&key, at, 2).await.unwrap();
    assert!(plan[1] >= at + Duration::from_secs(1), "{plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_or_an_unreachable_cluster_is_a_clear_error() {
    let none = RedisLedgerStore::connect_cluster(&[], RedisStoreConfig::default()).await;
    assert!(
        matches!(none, Err(StoreError::InvalidConfig(_))),
        "{none:?}"
    );
    let port = redis_support::free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/");
    let gone =
        RedisLedgerStore::connect_cluster(&[url.as_str()], RedisStoreConfig::default()).await;
    let Err(e) = gone else {
        panic!("connected to nothing")
    };
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
