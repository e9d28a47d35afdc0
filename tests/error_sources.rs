//! Every public error that wraps another keeps it: `Error::source` returns it (downcastable
//! through [`Cause::get_ref`]) instead of only its text. Real sockets, files and commands.

use std::error::Error;
use std::io::ErrorKind;

use fabraix_scheduler::{
    ApiKey, ApiKeyError, Cause, ClientError, Endpoint, FabraixClient, Job, JobError, KeyConfig,
    KeyId, KeyProvider, KeyProviderError, Quota, RetryPolicy, Scheduler, StoreError,
    TransportError, TransportErrorKind,
};

/// The error a `source()` returns, as the type `T` it holds: directly, or inside a [`Cause`].
fn held<'a, T: Error + 'static>(source: Option<&'a (dyn Error + 'static)>) -> &'a T {
    let source = source.expect("a source");
    if let Some(t) = source.downcast_ref::<T>() {
        return t;
    }
    let cause = source.downcast_ref::<Cause>().unwrap_or_else(|| {
        panic!(
            "neither {} nor a Cause: {source:?}",
            std::any::type_name::<T>()
        )
    });
    cause
        .get_ref()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("a Cause of another type: {cause:?}"))
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fbx-sources-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_transient_failure_keeps_the_transport_error_and_the_http_clients() {
    let policy = RetryPolicy::default().max_transient_retries(0);
    let scheduler = Scheduler::builder()
        .retry_policy(policy)
        .seed(3)
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{}/v1", closed_port());
    let key = ApiKey::new("secret-of-sources").unwrap();
    scheduler
        .add_key(KeyConfig::new("k", key, &base, "10/1s".parse().unwrap()).unwrap())
        .await
        .unwrap();
    let ticket = scheduler
        .submit(&KeyId::new("k"), Job::new(http::Method::GET, "/status"))
        .await
        .unwrap();
    let err = ticket.await.unwrap_err();
    assert!(matches!(err, JobError::Transient { .. }), "{err:?}");
    let transport: &TransportError = held(err.source());
    assert_eq!(transport.kind, TransportErrorKind::Connect);
    let client: &reqwest::Error = held(transport.source());
    assert!(client.is_connect(), "{client:?}");
    // The chain goes on below reqwest's error (hyper's, the OS's), never naming the key.
    let mut depth = 0;
    let mut next: Option<&(dyn Error + 'static)> = Some(&err);
    while let Some(e) = next {
        assert!(!e.to_string().contains("secret-of-sources"), "{e}");
        depth += 1;
        next = e.source();
    }
    assert!(
        depth >= 3,
        "job, transport and client errors at least: {depth}"
    );
}

#[tokio::test]
async fn a_journal_that_cannot_be_opened_keeps_the_io_error_through_the_client() {
    let dir = temp_dir("journal");
    let path = dir.join("missing-directory").join("calls.journal");
    let config = || {
        KeyConfig::new(
            "k",
            ApiKey::new("secret-of-journal").unwrap(),
            "http://127.0.0.1:9/v1",
            Quota::development(),
        )
        .unwrap()
        .call_journal(&path)
    };
    let scheduler = Scheduler::builder().build().unwrap();
    let err = scheduler.add_key(config()).await.unwrap_err();
    assert!(matches!(err, StoreError::Journal { .. }), "{err:?}");
    let io: &std::io::Error = held(err.source());
    assert_eq!(io.kind(), ErrorKind::NotFound);

    let err = FabraixClient::new(config()).await.unwrap_err();
    assert!(matches!(err, ClientError::Setup(_)), "{err:?}");
    let store: &StoreError = held(err.source());
    let io: &std::io::Error = held(store.source());
    assert_eq!(io.kind(), ErrorKind::NotFound);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_store_failure_is_the_jobs_source() {
    let store = StoreError::UnknownKey(KeyId::new("k"));
    let err = JobError::Store(store.clone());
    assert_eq!(held::<StoreError>(err.source()), &store);
}

#[tokio::test]
async fn key_providers_keep_the_io_error_and_the_key_error() {
    let dir = temp_dir("provider");
    let missing = KeyProvider::File(dir.join("no-such-key"));
    let err = missing.read().await.unwrap_err();
    assert!(matches!(err, KeyProviderError::File { .. }), "{err:?}");
    assert_eq!(
        held::<std::io::Error>(err.source()).kind(),
        ErrorKind::NotFound
    );

    let empty = dir.join("empty-key");
    std::fs::write(&empty, "  \n").unwrap();
    let err = KeyProvider::File(empty).read().await.unwrap_err();
    assert!(matches!(err, KeyProviderError::FileKey { .. }), "{err:?}");
    assert_eq!(held::<ApiKeyError>(err.source()), &ApiKeyError::Empty);

    let command = KeyProvider::command("printf ''");
    let err = command.read().await.unwrap_err();
    assert!(
        matches!(err, KeyProviderError::CommandKey { .. }),
        "{err:?}"
    );
    assert_eq!(held::<ApiKeyError>(err.source()), &ApiKeyError::Empty);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_base_url_that_does_not_parse_keeps_the_parsers_error() {
    let err = Endpoint::new("http://[::1/v1", false).unwrap_err();
    assert!(err.message().contains("does not parse"), "{err}");
    let parse: &url::ParseError = held(err.source());
    assert_eq!(*parse, url::ParseError::InvalidIpv6Address);
    let err = KeyConfig::new(
        "k",
        ApiKey::new("s").unwrap(),
        "ftp://api.example/v1",
        Quota::development(),
    )
    .unwrap_err();
    assert!(
        err.source().is_none(),
        "a refused scheme has no underlying error"
    );
}
