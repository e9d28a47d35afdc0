//! [`QuotaLayer`]: a tower layer that sends each request of the service below it when its key's
//! quota allows (feature `tower`).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::cause::Cause;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::job_of_request::{absolute_url, job_of_request};
use super::relay::{relay, run};
use super::{AdapterError, DEFAULT_MAX_BODY_BYTES};
use crate::job::Priority;
use crate::key_id::KeyId;
use crate::ledger::{LedgerStore, MemoryLedgerStore};
use crate::scheduler::{KeyHandle, Scheduler};
use crate::transport::{call_service, BoxError, DEFAULT_MAX_RESPONSE_BYTES};

/// Chooses a request's key from its head; `None` is the layer's default key.
type KeyOf = dyn Fn(&http::request::Parts) -> Option<KeyId> + Send + Sync;

/// A tower [`Layer`] that plans every request of the service below it with a [`Scheduler`]: the
/// request waits in its key's queue for a slot of the key's quota, is sent through the inner
/// service, and a 429 or a transient failure is retried as the scheduler retries any job (the
/// key paused for the server's `retry_after`, full-jitter backoff under the retry budget). The
/// response is the server's last answer, whatever its status; [`AdapterError`] when there was none.
///
/// - **Key.** One key by default; [`key_by`](Self::key_by) chooses one per request. The request
///   must go under the key's base URL (an origin-form URI is taken on it); its `x-api-key` header
///   is replaced by the key's, so the layer can only send the key where the key's config allows.
/// - **Back-pressure.** `poll_ready` is ready while fewer than [`max_pending`](Self::max_pending)
///   requests of this layer are waiting or on the wire (default: the default key's queue
///   capacity), so a caller that waits for readiness never overfills the queue. Several services
///   made by one layer (and their clones) share this bound.
/// - **Bodies.** The request body is read whole (at most [`max_body_bytes`](Self::max_body_bytes),
///   16 MiB by default) to be sent again by retries; so is the response body
///   ([`max_response_bytes`](Self::max_response_bytes), 1 MiB by default).
/// - **Lane.** A `Priority` in the request's extensions, else the layer's
///   [`priority`](Self::priority) (default [`Priority::Normal`]).
/// - **Stacking.** A `tower::timeout` *above* the layer bounds the whole wait (the job is
///   cancelled if not sent yet); one *below* bounds each attempt (a time-out is a transient
///   failure, retried under the policy). Retries of other layers below it repeat calls the quota
///   did not plan: disable them. The inner service must not follow redirects to another origin.
///
/// ```
/// use bytes::Bytes;
/// use fabraix_scheduler::mock::{MockServer, TEST_DEV_KEY};
/// use fabraix_scheduler::{ApiKey, KeyConfig, KeyId, Quota, QuotaLayer, Scheduler};
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::{ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let quota: Quota = "5/1s".parse().unwrap();
/// let mock = MockServer::builder().key(TEST_DEV_KEY, quota.clone()).start().await.unwrap();
/// let base = mock.base_url();
/// let scheduler = Scheduler::builder().build().unwrap();
/// let key = ApiKey::new(TEST_DEV_KEY).unwrap();
/// scheduler.add_key(KeyConfig::new("k", key, &base, quota).unwrap()).await.unwrap();
///
/// // hyper's client, planned by the scheduler for key "k".
/// let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let client = ServiceBuilder::new()
///     .layer(QuotaLayer::new(&scheduler, &KeyId::new("k")).unwrap())
///     .service(hyper);
/// let body = r#"{"event_type":"action_check","trace_id":"t","timestamp":0,"content":"ls","schema":"{}"}"#;
/// let request = http::Request::post(format!("{base}/check")).body(Full::new(Bytes::from(body))).unwrap();
/// let response = client.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
pub struct QuotaLayer<S: LedgerStore = MemoryLedgerStore> {
    scheduler: Scheduler<S>,
    default_key: KeyHandle<S>,
    key_of: Option<Arc<KeyOf>>,
    permits: Arc<Semaphore>,
    max_body_bytes: usize,
    max_response_bytes: usize,
    priority: Priority,
}

impl<S: LedgerStore> QuotaLayer<S> {
    /// A layer sending every request with `key` of `scheduler` (added already), at most that key's
    /// queue capacity of them pending at once.
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

    /// Chooses each request's key from its head (`None`: the default key). A key not in the
    /// scheduler fails the request with [`AdapterError::UnknownKey`].
    pub fn key_by<F>(mut self, key_of: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<KeyId> + Send + Sync + 'static,
    {
        self.key_of = Some(Arc::new(key_of));
        self
    }

    /// Requests of this layer pending at once (waiting for their slot or on the wire), at most
    /// (1 ..): past it, `poll_ready` is pending.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.permits = Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        self
    }

    /// Request bodies longer than `bytes` are refused ([`AdapterError::Body`](AdapterError::Body)).
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

    fn shared(&self) -> Arc<Shared<S>> {
        Arc::new(Shared {
            scheduler: self.scheduler.clone(),
            default_key: self.default_key.clone(),
            key_of: self.key_of.clone(),
            permits: Arc::clone(&self.permits),
            max_body_bytes: self.max_body_bytes,
            max_response_bytes: self.max_response_bytes,
            priority: self.priority,
        })
    }
}

impl<S: LedgerStore> Clone for QuotaLayer<S> {
    fn clone(&self) -> Self {
        Self {
            scheduler: self.scheduler.clone(),
            default_key: self.default_key.clone(),
            key_of: self.key_of.clone(),
            permits: Arc::clone(&self.permits),
            max_body_bytes: self.max_body_bytes,
            max_response_bytes: self.max_response_bytes,
            priority: self.priority,
        }
    }
}

impl<S: LedgerStore> fmt::Debug for QuotaLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaLayer")
            .field("default_key", self.default_key.id())
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl<T, S: LedgerStore> Layer<T> for QuotaLayer<S> {
    type Service = QuotaService<T, Full<Bytes>, S>;

    fn layer(&self, inner: T) -> Self::Service {
        QuotaService {
            inner,
            shared: self.shared(),
            permit: None,
            acquiring: None,
            body: PhantomData,
        }
    }
}

/// What the services of one layer share.
struct Shared<S: LedgerStore> {
    scheduler: Scheduler<S>,
    default_key: KeyHandle<S>,
    key_of: Option<Arc<KeyOf>>,
    permits: Arc<Semaphore>,
    max_body_bytes: usize,
    max_response_bytes: usize,
    priority: Priority,
}

impl<S: LedgerStore> Shared<S> {
    fn key_for(&self, parts: &http::request::Parts) -> Result<KeyHandle<S>, AdapterError> {
        match self.key_of.as_ref().and_then(|key_of| key_of(parts)) {
            None => Ok(self.default_key.clone()),
            Some(id) => self.scheduler.key(&id).ok_or(AdapterError::UnknownKey(id)),
        }
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// The service a [`QuotaLayer`] makes of `T`; `RB` is the request body `T` takes (built from the
/// whole body of each attempt; `Full<Bytes>` by default, as hyper's client takes).
pub struct QuotaService<T, RB = Full<Bytes>, S: LedgerStore = MemoryLedgerStore> {
    inner: T,
    shared: Arc<Shared<S>>,
    /// Taken by `poll_ready`, given to the next `call`.
    permit: Option<OwnedSemaphorePermit>,
    acquiring: Option<Acquiring>,
    body: PhantomData<fn() -> RB>,
}

impl<T: Clone, RB, S: LedgerStore> Clone for QuotaService<T, RB, S> {
    /// A clone shares the layer's bound but not this service's readiness.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            permit: None,
            acquiring: None,
            body: PhantomData,
        }
    }
}

impl<T, RB, S: LedgerStore> fmt::Debug for QuotaService<T, RB, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaService")
            .field("default_key", self.shared.default_key.id())
            .field("ready", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<T, RB, S, B, ResBody> Service<http::Request<B>> for QuotaService<T, RB, S>
where
    T: Service<http::Request<RB>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    T::Future: Send,
    T::Error: Into<BoxError>,
    RB: From<Bytes> + Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
    S: LedgerStore,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Full<Bytes>>;
    type Error = AdapterError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, AdapterError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), AdapterError>> {
        if self.permit.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Ok(permit) = Arc::clone(&self.shared.permits).try_acquire_owned() {
            self.permit = Some(permit);
            return Poll::Ready(Ok(()));
        }
        let permits = &self.shared.permits;
        let acquiring = self
            .acquiring
            .get_or_insert_with(|| Box::pin(Arc::clone(permits).acquire_owned()));
        match acquiring.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(permit) => {
                self.acquiring = None;
                // The semaphore is never closed.
                self.permit = permit.ok();
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(permit) = self.permit.take() else {
            return Box::pin(async { Err(AdapterError::NotReady) });
        };
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let answer = planned_call::<T, RB, S, B, ResBody>(inner, &shared, request).await;
            drop(permit);
            answer
        })
    }
}

/// One request of a [`QuotaService`]: submitted as a job of its key, each attempt sent on `inner`.
async fn planned_call<T, RB, S, B, ResBody>(
    inner: T,
    shared: &Shared<S>,
    request: http::Request<B>,
) -> Result<http::Response<Full<Bytes>>, AdapterError>
where
    T: Service<http::Request<RB>, Response = http::Response<ResBody>> + Clone,
    T::Error: Into<BoxError>,
    RB: From<Bytes>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
    S: LedgerStore,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let key = shared.key_for(&parts)?;
    let body = Limited::new(body, shared.max_body_bytes)
        .collect()
        .await
        .map_err(|e| AdapterError::Body {
            message: e.to_string(),
            source: Some(Cause::from_boxed(e)),
        })?
        .to_bytes();
    let base = key.base_url();
    let url = absolute_url(base, &parts.uri)?;
    let priority = parts
        .extensions
        .get::<Priority>()
        .copied()
        .unwrap_or(shared.priority);
    let job = job_of_request(base, parts.method, &url, &parts.headers, body, priority)?;
    let (via, attempts) = relay();
    let ticket = key
        .submit(job.with_via(via))
        .await
        .map_err(|e| AdapterError::Submit(Box::new(e)))?;
    let (version, extensions) = (parts.version, parts.extensions);
    let limit = shared.max_response_bytes;
    let relayed = run(ticket, attempts, move |attempt| {
        let mut request = attempt.map(RB::from);
        *request.version_mut() = version;
        *request.extensions_mut() = extensions.clone();
        let service = inner.clone();
        async move {
            call_service(service, request, limit)
                .await
                .map_err(|e| (e, ()))
        }
    })
    .await;
    relayed
        .into_answer()
        .map(|response| response.map(Full::new))
        .map_err(|(e, _)| AdapterError::Job(e))
}
