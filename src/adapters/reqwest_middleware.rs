//! [`QuotaMiddleware`]: a reqwest-middleware [`Middleware`] that sends each request of a
//! `ClientWithMiddleware` when its key's quota allows (feature `reqwest-middleware`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tokio::sync::Semaphore;

use super::job_of_request::job_of_request;
use super::relay::{relay, run};
use super::{AdapterError, DEFAULT_MAX_BODY_BYTES};
use crate::job::Priority;
use crate::key_id::KeyId;
use crate::ledger::{LedgerStore, MemoryLedgerStore};
use crate::scheduler::{KeyHandle, Scheduler};
use crate::transport::{transport_error, HttpRequest, HttpResponse, TransportError};
use crate::transport::{TransportErrorKind, DEFAULT_MAX_RESPONSE_BYTES};

/// Chooses a request's key; `None` is the middleware's default key.
type KeyOf = dyn Fn(&reqwest::Request) -> Option<KeyId> + Send + Sync;

/// A [`Middleware`] that plans every request of a `reqwest_middleware::ClientWithMiddleware`
/// with a [`Scheduler`], as [`QuotaLayer`](crate::QuotaLayer) does for a tower service: the
/// request waits for a slot of its key's quota, each attempt is sent by the rest of the chain,
/// and 429s and transient failures are retried as the scheduler retries any job. The response is
/// the server's last answer, whatever its status (its `url()` is not kept: it reads
/// `http://no.url.provided.local`); an error when there was none: the chain's own error if the
/// last attempt failed on it, else [`AdapterError`] inside `reqwest_middleware::Error::Middleware`.
///
/// The request must go under its key's base URL, its body must be in memory (not a stream) and
/// at most 16 MiB ([`max_body_bytes`](Self::max_body_bytes)); its `x-api-key` is replaced by the
/// key's. At most [`max_pending`](Self::max_pending) requests (default: the default key's queue
/// capacity) are pending at once; more wait for room before they are submitted. A `Priority` in
/// the request's extensions chooses its lane. Put it after middleware that should see the
/// request once (tracing) and before none that retries.
///
/// ```
/// use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY};
/// use fabraix_scheduler::{ApiKey, KeyConfig, KeyId, Quota, QuotaMiddleware, Scheduler};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let quota: Quota = "5/1s".parse().unwrap();
/// let mock = MockServer::builder().key(TEST_DEV_KEY, quota.clone()).start().await.unwrap();
/// let base = mock.base_url();
/// let scheduler = Scheduler::builder().build().unwrap();
/// let key = ApiKey::new(TEST_DEV_KEY).unwrap();
/// scheduler.add_key(KeyConfig::new("k", key, &base, quota).unwrap()).await.unwrap();
///
/// let planned = QuotaMiddleware::new(&scheduler, &KeyId::new("k")).unwrap();
/// let http = reqwest::Client::builder().no_proxy().build().unwrap();
/// let client = reqwest_middleware::ClientBuilder::new(http).with(planned).build();
/// let body = r#"{"event_type":"action_check","trace_id":"t","timestamp":0,"content":"ls","schema":"{}"}"#;
/// let response = client.post(format!("{base}/check")).body(body).send().await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
pub struct QuotaMiddleware<S: LedgerStore = MemoryLedgerStore> {
    scheduler: Scheduler<S>,
    default_key: KeyHandle<S>,
    key_of: Option<Arc<KeyOf>>,
    permits: Arc<Semaphore>,
    max_body_bytes: usize,
    max_response_bytes: usize,
    priority: Priority,
}

impl<S: LedgerStore> QuotaMiddleware<S> {
    /// A middleware sending every request with `key` of `scheduler` (added already).
    pub fn new(scheduler: &Scheduler<S>, key: &KeyId) -> Result<Self, AdapterError> {
        let default_key = scheduler
            .key(key)
            .ok_or_else(|| AdapterError::UnknownKey(key.clone()))?;
        Ok(Self {
            scheduler: scheduler.clone(),
            permits: Arc::new(Semaphore::new(default_key.capacity())),
            default_key,
            key_of: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            priority: Priority::Normal,
        })
    }

    /// Chooses each request's key (`None`: the default key).
    pub fn key_by<F>(mut self, key_of: F) -> Self
    where
        F: Fn(&reqwest::Request) -> Option<KeyId> + Send + Sync + 'static,
    {
        self.key_of = Some(Arc::new(key_of));
        self
    }

    /// Requests pending at once, at most (1 ..); more wait for room.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.permits = Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        self
    }

    /// Request bodies longer than `bytes` are refused ([`AdapterError::Body`]).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Response bodies longer than `bytes` (default 1 MiB) fail the job, not retried.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The lane of requests that carry no `Priority` extension.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    fn key_for(&self, request: &reqwest::Request) -> Result<KeyHandle<S>, AdapterError> {
        match self.key_of.as_ref().and_then(|key_of| key_of(request)) {
            None => Ok(self.default_key.clone()),
            Some(id) => self.scheduler.key(&id).ok_or(AdapterError::UnknownKey(id)),
        }
    }

    /// The request's body, whole.
    fn body_of(&self, request: &reqwest::Request) -> Result<Bytes, AdapterError> {
        let body = match request.body() {
            None => return Ok(Bytes::new()),
            Some(body) => body.as_bytes().ok_or_else(|| AdapterError::Body {
                message: "a streaming body cannot be sent again by a retry".into(),
                source: None,
            })?,
        };
        if body.len() > self.max_body_bytes {
            return Err(AdapterError::Body {
                message: format!(
                    "{} bytes, more than the limit of {}",
                    body.len(),
                    self.max_body_bytes
                ),
                source: None,
            });
        }
        Ok(Bytes::copy_from_slice(body))
    }
}

impl<S: LedgerStore> fmt::Debug for QuotaMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaMiddleware")
            .field("default_key", self.default_key.id())
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

fn middleware_error(e: AdapterError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

#[async_trait::async_trait]
impl<S: LedgerStore> Middleware for QuotaMiddleware<S> {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        // The semaphore is never closed.
        let _permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        let key = self.key_for(&request).map_err(middleware_error)?;
        let body = self.body_of(&request).map_err(middleware_error)?;
        let priority = extensions
            .get::<Priority>()
            .copied()
            .unwrap_or(self.priority);
        let job = job_of_request(
            key.base_url(),
            request.method().clone(),
            request.url(),
            request.headers(),
            body,
            priority,
        )
        .map_err(middleware_error)?;
        let (via, attempts) = relay();
        let ticket = key
            .submit(job.with_via(via))
            .await
            .map_err(|e| middleware_error(AdapterError::Submit(Box::new(e))))?;
        let (timeout, version) = (request.timeout().copied(), request.version());
        let limit = self.max_response_bytes;
        let relayed = run(ticket, attempts, |attempt| {
            let next = next.clone();
            let mut extensions = extensions.clone();
            async move {
                let request = reqwest_request(attempt, timeout, version)?;
                let response = next
                    .run(request, &mut extensions)
                    .await
                    .map_err(|e| (error_for_scheduler(&e), e))?;
                read_whole(response, limit).await
            }
        })
        .await;
        match relayed.into_answer() {
            Ok(response) => Ok(reqwest::Response::from(response)),
            Err((_, Some(chain))) => Err(chain),
            Err((e, None)) => Err(middleware_error(AdapterError::Job(e))),
        }
    }
}

/// The attempt as reqwest's request, with the original's timeout and version.
fn reqwest_request(
    attempt: HttpRequest,
    timeout: Option<std::time::Duration>,
    version: http::Version,
) -> Result<reqwest::Request, (TransportError, reqwest_middleware::Error)> {
    let mut request = reqwest::Request::try_from(attempt).map_err(|e| {
        let error = transport_error(&e);
        (error, reqwest_middleware::Error::Reqwest(e))
    })?;
    *request.timeout_mut() = timeout;
    *request.version_mut() = version;
    Ok(request)
}

fn error_for_scheduler(e: &reqwest_middleware::Error) -> TransportError {
    match e {
        reqwest_middleware::Error::Reqwest(e) => transport_error(e),
        reqwest_middleware::Error::Middleware(e) => {
            TransportError::new(TransportErrorKind::Interrupted, format!("{e:#}"))
        }
    }
}

/// The response with its body read whole (at most `limit` bytes).
async fn read_whole(
    response: reqwest::Response,
    limit: usize,
) -> Result<HttpResponse, (TransportError, reqwest_middleware::Error)> {
    let mut response = response;
    let mut out = http::Response::new(Bytes::new());
    *out.status_mut() = response.status();
    *out.version_mut() = response.version();
    *out.headers_mut() = std::mem::take(response.headers_mut());
    let mut body = bytes::BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(None) => break,
            Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                let error = TransportError::new(
                    TransportErrorKind::ResponseTooLarge,
                    format!("response body longer than {limit} bytes"),
                );
                let chain = reqwest_middleware::Error::middleware(error.clone());
                return Err((error, chain));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Err(e) => return Err((transport_error(&e), reqwest_middleware::Error::Reqwest(e))),
        }
    }
    *out.body_mut() = body.freeze();
    Ok(out)
}
