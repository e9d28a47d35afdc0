//! A pause one process raises reaches the others sharing the key through Redis: a 429 seen by one
//! member stops the slot another already holds, and the message that tells the fleet is checked
//! (forged or malformed ones change nothing beyond the cap) and heard again after its connection
//! is lost. Real redis-server and mock servers on loopback.

mod common;
mod hostile;
mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use fabraix_scheduler::mock::{MockServer, ServerModel};
use fabraix_scheduler::{
    ApiKey, KeyConfig, KeyId, LedgerConfig, LedgerStore, Quota, RedisLedgerStore, RedisStoreConfig,
    Scheduler, TokioClock,
};
use redis_support::RedisServer;

const SECRET: &str = "fleet-pause-secret-1";
const GUARD: Duration = Duration::from_millis(100);

async fn member(
    redis_url: &str,
    base_url: &str,
    quota: &Quota,
    id: &str,
) -> Scheduler<RedisLedgerStore> {
    let clock = Arc::new(TokioClock::new());
    let store = RedisLedgerStore::connect_with(redis_url, RedisStoreConfig::default())
        .await
        .expect("connects")
        .with_clock(clock.clone());
    let scheduler = Scheduler::builder()
        .clock(clock)
        .transport_config(common::patient_transport())
        .store(store)
        .build()
        .unwrap();
    let config = KeyConfig::new(
        KeyId::new(id),
        ApiKey::new(SECRET).unwrap(),
        base_url,
        quota.clone(),
    )
    .unwrap()
    .guard(GUARD);
    scheduler.add_key(config).await.unwrap();
    scheduler
}

/// Polls `ready` every millisecond for at most `most`; panics with `what` if it never holds.
async fn wait_for(most: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + most;
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_seen_by_one_member_stops_the_slot_another_member_already_holds() {
    let redis = RedisServer::start();
    let quota: Quota = "3/1s".parse().unwrap();
    let retry_after = Duration::from_secs(2);
    // Member A's server answers its first call, after 500 ms, with a 429 and Retry-After: 2;
    // it notes when the call arrived.
    let slow = Duration::from_millis(500);
    let arrived = Arc::new(std::sync::Mutex::new(None));
    let noted = Arc::clone(&arrived);
    let a_server = hostile::Hostile::start(move |request, mut socket| {
        let noted = Arc::clone(&noted);
        async move {
            if request.n == 0 {
                *noted.lock().unwrap() = Some(tokio::time::Instant::now());
                tokio::time::sleep(slow).await;
                let body = br#"{"error":{"code":"rate_limited","retry_after":2}}"#;
                let headers = [
                    "retry-after: 2".to_string(),
                    "content-type: application/json".to_string(),
                ];
                hostile::respond(&mut socket, 429, &headers, body).await;
            } else {
                hostile::ok(&mut socket).await;
            }
        }
    })
    .await;
    // Member B's server counts every call, refused ones too, in a strict sliding log.
    let b_server = MockServer::builder()
        .key(SECRET, quota.clone())
        .model(ServerModel::SlidingLog)
        .count_refused(true)
        .start()
        .await
        .unwrap();
    let a = member(&redis.url(), &a_server.base_url(), &quota, "member-a").await;
    let b = member(&redis.url(), &b_server.base_url(), &quota, "member-b").await;
    let refused = a
        .submit(&KeyId::new("member-a"), common::event(0))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "A's call never reached its server",
        || a_server.requests() >= 1,
    )
    .await;
    // A's call is at its server (its slot counted), its 429 on the way back: B sends two now and
    // holds the third's slot for when the window has room again, a second on.
    let b_key = KeyId::new("member-b");
    let mut tickets = Vec::new();
    for i in 0..3 {
        tickets.push(b.submit(&b_key, common::event(i)).await.unwrap());
    }
    for t in tickets {
        t.await.expect("every job of B succeeds");
    }
    refused
        .await
        .expect("A's refused call is sent again and succeeds");
    let mut arrivals: Vec<_> = b_server.record().iter().map(|c| c.arrival).collect();
    arrivals.sort_unstable();
    assert_eq!(arrivals.len(), 3);
    let a_arrived = arrived.lock().unwrap().expect("A's call arrived");
    assert!(
        arrivals[1] < a_arrived + slow,
        "B's first two went before the 429: {:?}",
        arrivals[1] - a_arrived
    );
    // The 429 left A's server `slow` after A's call arrived: the pause ends `retry_after` after
    // A read it, no sooner. B's held slot, a second on, would have gone into it; it waits it out.
    let pause_end = a_arrived + slow + retry_after;
    assert!(
        arrivals[2] >= pause_end,
        "B's held call went {:?} into A's pause",
        pause_end - arrivals[2]
    );
    assert_eq!(b_server.refused(), 0);
    b_server.verify().expect("no window of the quota broken");
}

/// A store with one key registered, its channel and the state's epoch (read from Redis).
async fn registered(
    redis: &RedisServer,
    quota: &Quota,
) -> (RedisLedgerStore, KeyId, String, String) {
    let store = RedisLedgerStore::connect_with(&redis.url(), RedisStoreConfig::default())
        .await
        .expect("connects");
    let key = KeyId::new("pause-key");
    store.bind_fingerprint(&key, ApiKey::new(SECRET).unwrap().fingerprint());
    let now = tokio::time::Instant::now();
    store
        .register(&key, quota, LedgerConfig::default(), now)
        .await
        .unwrap();
    let prefix = store.redis_prefix(&key);
    let epoch: String = redis::cmd("HGET")
        .arg(format!("{prefix}:h"))
        .arg("ep")
        .query(&mut redis.conn())
        .unwrap();
    let channel = format!("{prefix}:blocks");
    wait_for(
        Duration::from_secs(10),
        "the store never subscribed",
        || subscribers(redis, &channel) == 1,
    )
    .await;
    (store, key, channel, epoch)
}

fn subscribers(redis: &RedisServer, channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(&mut redis.conn())
        .unwrap();
    counts.first().map_or(0, |c| c.1)
}

fn publish(redis: &RedisServer, channel: &str, message: &[u8]) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query(&mut redis.conn())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_messages_change_nothing_beyond_the_cap() {
    let redis = RedisServer::start();
    let quota: Quota = "3/1s".parse().unwrap();
    let (store, key, channel, epoch) = registered(&redis, &quota).await;
    assert_eq!(store.shared_block(&key), None, "no pause yet");
    let long = 10u64.pow(18).to_string();
    for bad in [
        &b""[..],
        b"not a message",
        b"0123 -5",
        b"0123 1e9",
        &[b'9'; 200][..],
        b"\xff\xff 5",
        format!("{epoch} 99999999999999999999999").as_bytes(),
        // Of another epoch: ignored, however long.
        format!("{epoch}0 {long}").as_bytes(),
    ] {
        publish(&redis, &channel, bad);
    }
    let sent = tokio::time::Instant::now();
    publish(&redis, &channel, format!("{epoch} 1000000000").as_bytes());
    wait_for(
        Duration::from_secs(10),
        "the valid message never arrived",
        || store.shared_block(&key).is_some(),
    )
    .await;
    let until = store.shared_block(&key).unwrap().until();
    assert!(until >= sent + Duration::from_secs(1), "{:?}", until - sent);
    assert!(
        until < sent + Duration::from_secs(3),
        "no message before it counted: {:?}",
        until - sent
    );
    // A delay of 31 years, in the key's own epoch: capped at the longest window and a minute.
    publish(&redis, &channel, format!("{epoch} {long}").as_bytes());
    let cap = Duration::from_secs(61);
    wait_for(
        Duration::from_secs(10),
        "the long message never arrived",
        || store.shared_block(&key).is_some_and(|b| b.until() > until),
    )
    .await;
    let capped = store.shared_block(&key).unwrap().until();
    let now = tokio::time::Instant::now();
    assert!(capped <= now + cap, "{:?}", capped - now);
    assert!(
        capped + Duration::from_secs(5) >= now + cap,
        "{:?}",
        capped - now
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_killed_is_made_again_and_hears_the_next_pause() {
    let redis = RedisServer::start();
    let quota: Quota = "3/1s".parse().unwrap();
    let (store, key, channel, epoch) = registered(&redis, &quota).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(killed, 1, "the store's one subscriber connection");
    wait_for(
        Duration::from_secs(10),
        "the subscription was not made again",
        || subscribers(&redis, &channel) == 1,
    )
    .await;
    let sent = tokio::time::Instant::now();
    publish(&redis, &channel, format!("{epoch} 5000000000").as_bytes());
    wait_for(
        Duration::from_secs(10),
        "the pause after the reconnection was not heard",
        || store.shared_block(&key).is_some(),
    )
    .await;
    let until = store.shared_block(&key).unwrap().until();
    assert!(until >= sent + Duration::from_secs(5), "{:?}", until - sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_without_the_channels_still_pauses_and_re_seeds_the_key() {
    let redis = RedisServer::start();
    // A user that may run the script on the fleet's keys, and use no channel at all.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("fleet")
        .arg("on")
        .arg(">fleet-pw")
        .arg("~fx:*")
        .arg("resetchannels")
        .arg("+@all")
        .query(&mut redis.conn())
        .unwrap();
    let url = format!("redis://fleet:fleet-pw@127.0.0.1:{}/", redis.port);
    let store = RedisLedgerStore::connect_with(&url, RedisStoreConfig::default())
        .await
        .expect("connects as the ACL user");
    let quota: Quota = "3/1s".parse().unwrap();
    let key = KeyId::new("acl-key");
    store.bind_fingerprint(&key, ApiKey::new(SECRET).unwrap().fingerprint());
    let now = tokio::time::Instant::now();
    store
        .register(&key, &quota, LedgerConfig::default(), now)
        .await
        .unwrap();
    let until = now + Duration::from_secs(5);
    store
        .block_until(&key, until)
        .await
        .expect("the pause is stored though it cannot be published");
    let next = store.nth_slot(&key, now, 1).await.unwrap();
    assert!(next >= until, "{:?}", next.checked_duration_since(now));
    // Redis loses the state: the new one is made (and settles) without a channel either.
    let prefix = store.redis_prefix(&key);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut redis.conn())
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query(&mut redis.conn())
        .unwrap();
    let later = tokio::time::Instant::now();
    let slot = store
        .reserve(&key, later)
        .await
        .expect("re-seeded and reserved");
    assert!(slot >= later);
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}:w1"))
        .query(&mut redis.conn())
        .unwrap();
    assert!(exists, "the new state is whole");
}
