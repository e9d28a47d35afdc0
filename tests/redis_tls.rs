//! `RedisLedgerStore` over TLS (`rediss://`, rustls) to a real redis-server whose certificate a
//! CA made by the test signed: reservations go through it, and a server whose certificate the
//! client cannot check is refused.

mod redis_support;

use std::time::Duration;

use fabraix_scheduler::{
    Instant, KeyId, LedgerConfig, LedgerStore, Quota, RedisLedgerStore, RedisStoreConfig,
    StoreError,
};
use redis_support::pki::TestPki;

#[tokio::test(flavor = "current_thread")]
async fn reservations_go_through_tls_to_a_server_the_given_ca_signed() {
    let pki = TestPki::make("redis-tls");
    let server = pki.server();
    let store = RedisLedgerStore::connect_with_ca(
        &server.tls_url(),
        pki.ca_pem.as_bytes(),
        RedisStoreConfig::default(),
    )
    .await
    .expect("connects over TLS");
    let key = KeyId::new("k");
    let quota: Quota = "2/10s".parse().unwrap();
    let t0 = Instant::now();
    store
        .register(&key, &quota, LedgerConfig::default(), t0)
        .await
        .unwrap();
    let first = store.reserve(&key, t0).await.unwrap();
    let second = store.reserve(&key, t0).await.unwrap();
    let third = store.reserve(&key, t0).await.unwrap();
    assert!(second < t0 + Duration::from_secs(1), "{:?}", second - t0);
    assert!(
        third >= first + Duration::from_secs(10),
        "{:?}",
        third - first
    );
    // The state is the server's (read over its plain port): the TLS port is the same Redis.
    let prefix = store.redis_prefix(&key);
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}:h"))
        .query(&mut server.conn())
        .unwrap();
    assert!(exists);
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_whose_certificate_cannot_be_checked_is_refused() {
    let pki = TestPki::make("redis-tls-refused");
    let server = pki.server();
    let config = || {
        let mut c = RedisStoreConfig::default();
        c.response_timeout = Duration::from_millis(300);
        c
    };
    // The system's roots do not hold the test's CA.
    let err = RedisLedgerStore::connect_with(&server.tls_url(), config())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // Nor does another CA.
    let other = TestPki::make("redis-tls-other");
    let err =
        RedisLedgerStore::connect_with_ca(&server.tls_url(), other.ca_pem.as_bytes(), config())
            .await
            .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // Not checking the certificate is not an option, and a CA is only for TLS.
    let insecure = format!("{}#insecure", server.tls_url());
    let err = RedisLedgerStore::connect_with(&insecure, config())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidConfig(_)), "{err:?}");
    let err = RedisLedgerStore::connect_with_ca(&server.url(), pki.ca_pem.as_bytes(), config())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidConfig(_)), "{err:?}");
    assert!(format!("{err}").contains("rediss://"), "{err}");
    // A URL the client cannot read is the caller's to fix, not an outage to wait out.
    for url in [
        "redis://127.0.0.1:notaport",
        "http://127.0.0.1:6379",
        "redis//",
    ] {
        let err = RedisLedgerStore::connect_with(url, config())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidConfig(_)),
            "{url}: {err:?}"
        );
    }
}
