//! The mock server: its builder, its handle, and the HTTP plumbing.
//!
//! Connections are served by hyper directly (not `axum::serve`) so that a call can be answered by
//! closing its connection without any response; routing and bodies are axum's.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::bodies;
use super::faults::{FaultInjector, FaultOutcome, Faults};
use super::headers::{retry_after_secs, set_rate_limit, set_retry_after, RetryAfterHeader};
use super::keys::{key_fingerprint, test_keys, KeyAccess, KeyProfile};
use super::model::{KeyLimiter, RateInfo, ServerModel};
use super::record::{verify_arrivals, AcceptedCall, MockKeyStats, WindowViolation};
use super::script::{ScriptedResponse, Scripts};
use super::validate::{validate, Endpoint, Invalid};
use crate::clock::{nanos_since, Clock, Instant, TokioClock};
use crate::quota::Quota;

/// The largest request body the server reads (larger ones answer 413).
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The default fault seed.
const DEFAULT_SEED: u64 = 0x5eed_fab7;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Configures and starts a [`MockServer`]. Every option has a default; see each method.
pub struct MockServerBuilder {
    keys: Vec<(String, KeyProfile)>,
    model: ServerModel,
    count_refused: bool,
    retry_after_header: RetryAfterHeader,
    retry_after_in_body: bool,
    ratelimit_headers: bool,
    faults: Faults,
    seed: u64,
    time_scale: f64,
    clock: Option<Arc<dyn Clock>>,
    bind: SocketAddr,
    scripts: Vec<(String, Vec<ScriptedResponse>)>,
}

impl fmt::Debug for MockServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(secret, p)| p.label.clone().unwrap_or_else(|| key_fingerprint(secret)))
            .collect();
        f.debug_struct("MockServerBuilder")
            .field("keys", &keys)
            .field("model", &self.model)
            .field("count_refused", &self.count_refused)
            .field("retry_after_header", &self.retry_after_header)
            .field("retry_after_in_body", &self.retry_after_in_body)
            .field("ratelimit_headers", &self.ratelimit_headers)
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .field("time_scale", &self.time_scale)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl Default for MockServerBuilder {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            model: ServerModel::default(),
            count_refused: false,
            retry_after_header: RetryAfterHeader::None,
            retry_after_in_body: true,
            ratelimit_headers: false,
            faults: Faults::none(),
            seed: DEFAULT_SEED,
            time_scale: 1.0,
            clock: None,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            scripts: Vec::new(),
        }
    }
}

impl MockServerBuilder {
    /// Registers a key. `profile` may be a [`KeyProfile`], a [`Quota`] or a [`Tier`](crate::Tier).
    /// Registering a secret twice keeps the last profile.
    pub fn key(mut self, secret: &str, profile: impl Into<KeyProfile>) -> Self {
        self.keys.push((secret.to_string(), profile.into()));
        self
    }

    /// Registers the four well-known test keys: [`TEST_DEV_KEY`](super::TEST_DEV_KEY) (Development
    /// quota), [`TEST_PROD_KEY`](super::TEST_PROD_KEY) (Production quota),
    /// [`TEST_RESTRICTED_KEY`](super::TEST_RESTRICTED_KEY) (Development quota; `/event` only, 403 on
    /// `/check` and `/register-agent-run`) and [`TEST_REVOKED_KEY`](super::TEST_REVOKED_KEY)
    /// (always 401).
    pub fn with_test_keys(mut self) -> Self {
        for (secret, profile) in test_keys() {
            self.keys.push((secret.to_string(), profile));
        }
        self
    }

    /// How calls are counted against each limit. Default [`ServerModel::SlidingLog`].
    pub fn model(mut self, model: ServerModel) -> Self {
        self.model = model;
        self
    }

    /// Whether refused (429) calls count against the quota too, as on many real servers (then a
    /// client that keeps retrying early stays locked out). Default false.
    pub fn count_refused(mut self, yes: bool) -> Self {
        self.count_refused = yes;
        self
    }

    /// Whether a 429 carries a `Retry-After` header, and in which form. Default
    /// [`RetryAfterHeader::None`].
    pub fn retry_after_header(mut self, form: RetryAfterHeader) -> Self {
        self.retry_after_header = form;
        self
    }

    /// Whether a 429 body carries `"retry_after": N` (whole seconds, rounded up, at least 1: the
    /// time until every refusing limit would accept one more call). Default true.
    pub fn retry_after_in_body(mut self, yes: bool) -> Self {
        self.retry_after_in_body = yes;
        self
    }

    /// Whether every response to a known key (200, 400, 403, 422, 429, 500) carries
    /// `X-RateLimit-Limit` (N of the tightest limit: the one with the fewest calls left),
    /// `X-RateLimit-Remaining` (calls it would accept now, after this one) and
    /// `X-RateLimit-Reset` (whole seconds, rounded up, until it frees one more slot; 0 when it is
    /// full). Default false: the Fabraix docs mention no such headers.
    pub fn ratelimit_headers(mut self, yes: bool) -> Self {
        self.ratelimit_headers = yes;
        self
    }

    /// Faults to inject. Default none.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The seed of the fault choices and generated ids, so a run repeats exactly (for calls that
    /// arrive in the same order). Default a fixed constant.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Divides every quota window by `factor` (60: an hour of quota passes in a minute). Waits in
    /// `retry_after` and headers stay in real seconds. A non-finite or non-positive factor is
    /// ignored. Default 1.
    pub fn time_scale(mut self, factor: f64) -> Self {
        self.time_scale = factor;
        self
    }

    /// The clock for arrivals, windows and latency. Default a [`TokioClock`], which follows
    /// tokio's paused clock in tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The address to listen on. Default `127.0.0.1:0` (a free port on loopback).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Queues canned responses for `path` (an endpoint path such as `/event`; `/v1/event` is the
    /// same queue; any other path works too). They are served, one per request and for any method,
    /// before authentication and quota; see [`ScriptedResponse`].
    pub fn script(
        mut self,
        path: &str,
        responses: impl IntoIterator<Item = ScriptedResponse>,
    ) -> Self {
        self.scripts
            .push((path.to_string(), responses.into_iter().collect()));
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(self) -> std::io::Result<MockServer> {
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(TokioClock::new()) as Arc<dyn Clock>);
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let origin = clock.now();
        let time_scale = if self.time_scale.is_finite() && self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        };
        let state = Arc::new(ServerState {
            clock,
            origin,
            model: self.model,
            count_refused: self.count_refused,
            retry_after_header: self.retry_after_header,
            retry_after_in_body: self.retry_after_in_body,
            ratelimit_headers: self.ratelimit_headers,
            time_scale,
            keys: Mutex::new(HashMap::new()),
            faults: FaultInjector::new(self.faults, self.seed),
            ids: Mutex::new(fastrand::Rng::with_seed(self.seed ^ 0x1d5_1d5)),
            scripts: Scripts::default(),
            record: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            scripted: AtomicU64::new(0),
        });
        for (secret, profile) in self.keys {
            state.add_key(&secret, profile);
        }
        for (path, responses) in self.scripts {
            state.scripts.push(&path, responses);
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, state.clone(), stop_rx));
        tracing::info!(%addr, model = %state.model, "mock: Fabraix mock server listening");
        Ok(MockServer {
            inner: Arc::new(Inner {
                state,
                addr,
                stop,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

/// A running mock server. Clones share the server; it stops when [`shutdown`](Self::shutdown) is
/// called or the last clone is dropped.
///
/// It serves `POST /v1/register-agent-run`, `/v1/event` and `/v1/check`, in this order:
/// scripted responses (if any are queued for the path); authentication (401 for a missing,
/// unknown or revoked key, 403 for a restricted key outside `/event`; neither counts against the
/// quota); the quota (429); body validation (400 for a body that is not a JSON object or misses
/// fields, 422 for a field of the wrong type: these DO count against the quota, as the call was
/// accepted); then faults (dropped connection, 500). Unknown paths answer 404 `{"detail":"Not Found"}`
/// and other methods 405, before authentication.
#[derive(Clone)]
pub struct MockServer {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<ServerState>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.inner.addr)
            .field("model", &self.inner.state.model)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// A builder with every default.
    pub fn builder() -> MockServerBuilder {
        MockServerBuilder::default()
    }

    /// The API base URL, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.inner.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// When the server started, on its clock. Fixed and counter windows are aligned to it.
    pub fn origin(&self) -> Instant {
        self.inner.state.origin
    }

    /// The server model.
    pub fn model(&self) -> ServerModel {
        self.inner.state.model
    }

    /// Every call accepted under the quota so far, in the order decided.
    pub fn record(&self) -> Vec<AcceptedCall> {
        lock(&self.inner.state.record).clone()
    }

    /// The arrivals of the accepted calls of the key labelled `label`.
    pub fn arrivals(&self, label: &str) -> Vec<Instant> {
        lock(&self.inner.state.record)
            .iter()
            .filter(|c| c.key == label)
            .map(|c| c.arrival)
            .collect()
    }

    /// How many calls were refused with 429, over all keys.
    pub fn refused(&self) -> u64 {
        self.inner.state.refused.load(Ordering::Relaxed)
    }

    /// How many calls were refused with 401 (missing, unknown or revoked key).
    pub fn unauthorized(&self) -> u64 {
        self.inner.state.unauthorized.load(Ordering::Relaxed)
    }

    /// How many scripted responses were served (dropped connections included).
    pub fn scripted_served(&self) -> u64 {
        self.inner.state.scripted.load(Ordering::Relaxed)
    }

    /// The counters of the key labelled `label`.
    pub fn key_stats(&self, label: &str) -> Option<MockKeyStats> {
        lock(&self.inner.state.keys)
            .values()
            .find(|e| e.stats.label == label)
            .map(|e| e.stats.clone())
    }

    /// The counters of every key, by label.
    pub fn stats(&self) -> Vec<MockKeyStats> {
        let mut all: Vec<MockKeyStats> = lock(&self.inner.state.keys)
            .values()
            .map(|e| e.stats.clone())
            .collect();
        all.sort_by(|a, b| a.label.cmp(&b.label));
        all
    }

    /// Checks every key's accepted calls against the quota the server enforced for it (after time
    /// scaling): `Err` with the worst window if any key had more than N calls accepted in some
    /// window of length W. A sound server model never fails this except
    /// [`ServerModel::FixedWindow`], [`ServerModel::TokenBucket`] (which admit bursts) and
    /// [`ServerModel::SlidingWindowCounter`] (an estimate).
    pub fn verify(&self) -> Result<(), WindowViolation> {
        let quotas: HashMap<String, Quota> = lock(&self.inner.state.keys)
            .values()
            .map(|e| (e.stats.label.clone(), e.stats.quota.clone()))
            .collect();
        let mut by_key: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
        for call in lock(&self.inner.state.record).iter() {
            by_key
                .entry(call.key.clone())
                .or_default()
                .push(call.arrival);
        }
        for (key, arrivals) in by_key {
            let quota = quotas.get(&key).cloned().unwrap_or_default();
            if let Err(mut v) = verify_arrivals(&arrivals, &quota) {
                v.key = key;
                return Err(v);
            }
        }
        Ok(())
    }

    /// Registers a key while running (a rotated-in key), with fresh counters. Replaces any key
    /// with the same secret.
    pub fn add_key(&self, secret: &str, profile: impl Into<KeyProfile>) {
        self.inner.state.add_key(secret, profile.into());
    }

    /// Revokes a key while running: from now on it answers 401. Returns false if the key is not
    /// registered.
    pub fn revoke_key(&self, secret: &str) -> bool {
        let mut keys = lock(&self.inner.state.keys);
        match keys.get_mut(secret) {
            Some(entry) => {
                entry.access = KeyAccess::Revoked;
                tracing::info!(key = %entry.stats.label, "mock: key revoked");
                true
            }
            None => false,
        }
    }

    /// Queues canned responses for `path` while running; see [`MockServerBuilder::script`].
    pub fn script(&self, path: &str, responses: impl IntoIterator<Item = ScriptedResponse>) {
        self.inner.state.scripts.push(path, responses);
    }

    /// Stops accepting connections, lets requests in flight finish, and waits for every connection
    /// to close. Later calls return at once.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// A registered key.
#[derive(Debug)]
struct KeyEntry {
    access: KeyAccess,
    limiter: KeyLimiter,
    stats: MockKeyStats,
}

/// Everything the handlers share. Deliberately not `Debug`: `keys` is indexed by the secrets.
struct ServerState {
    clock: Arc<dyn Clock>,
    origin: Instant,
    model: ServerModel,
    count_refused: bool,
    retry_after_header: RetryAfterHeader,
    retry_after_in_body: bool,
    ratelimit_headers: bool,
    time_scale: f64,
    /// By secret. Only ever held briefly, never across an await.
    keys: Mutex<HashMap<String, KeyEntry>>,
    faults: FaultInjector,
    ids: Mutex<fastrand::Rng>,
    scripts: Scripts,
    record: Mutex<Vec<AcceptedCall>>,
    refused: AtomicU64,
    unauthorized: AtomicU64,
    scripted: AtomicU64,
}

/// Marks a response that must be replaced by closing the connection.
#[derive(Clone, Copy, Debug)]
struct DropConnection;

/// The error that makes hyper close a connection without responding.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock: connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

impl ServerState {
    fn add_key(&self, secret: &str, profile: KeyProfile) {
        let quota = profile.quota.time_scaled(self.time_scale);
        let label = profile.label.unwrap_or_else(|| key_fingerprint(secret));
        let entry = KeyEntry {
            access: profile.access,
            limiter: KeyLimiter::new(self.model, &quota),
            stats: MockKeyStats {
                label,
                quota,
                ..MockKeyStats::default()
            },
        };
        lock(&self.keys).insert(secret.to_string(), entry);
    }

    fn rate_headers(&self, response: &mut Response, info: Option<RateInfo>) {
        if let (true, Some(info)) = (self.ratelimit_headers, info) {
            set_rate_limit(response.headers_mut(), &info);
        }
    }

    /// Decides and builds the response to one call (everything but the latency).
    fn respond(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: &[u8],
        arrival: Instant,
    ) -> Response {
        let path = endpoint.path();
        let t = nanos_since(self.origin, arrival);
        let secret = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let mut keys = lock(&self.keys);
        let Some(entry) = secret.and_then(|s| keys.get_mut(s)) else {
            self.unauthorized.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(path, "mock: 401, missing or unknown key");
            return bodies::invalid_api_key();
        };
        match entry.access {
            KeyAccess::Revoked => {
                entry.stats.revoked += 1;
                self.unauthorized.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key = %entry.stats.label, path, "mock: 401, revoked key");
                return bodies::invalid_api_key();
            }
            KeyAccess::Restricted if endpoint != Endpoint::Event => {
                entry.stats.forbidden += 1;
                tracing::debug!(key = %entry.stats.label, path, "mock: 403, restricted key");
                let mut response = bodies::insufficient_permissions();
                let info = entry.limiter.peek(t);
                self.rate_headers(&mut response, info);
                return response;
            }
            KeyAccess::Full | KeyAccess::Restricted => {}
        }
        let decision = entry.limiter.decide(t, self.count_refused);
        if !decision.accepted {
            entry.stats.refused += 1;
            self.refused.fetch_add(1, Ordering::Relaxed);
            let wait = decision.retry_after.unwrap_or_default();
            tracing::debug!(
                key = %entry.stats.label,
                path,
                wait_ms = wait.as_millis() as u64,
                "mock: 429"
            );
            let mut response =
                bodies::rate_limited(self.retry_after_in_body.then(|| retry_after_secs(wait)));
            set_retry_after(
                response.headers_mut(),
                self.retry_after_header,
                wait,
                self.clock.wall_now(),
            );
            self.rate_headers(&mut response, decision.rate);
            return response;
        }
        entry.stats.accepted += 1;
        let label = entry.stats.label.clone();
        drop(keys);

        let mut response = match validate(endpoint, body) {
            Err(Invalid::BadRequest(message)) => bodies::invalid_body(&message),
            Err(Invalid::Unprocessable(details)) => bodies::unprocessable(details),
            Ok(fields) => match self.faults.outcome() {
                FaultOutcome::Pass => {
                    let wall = self.clock.wall_now();
                    let body = bodies::success(endpoint, &fields, wall, &mut lock(&self.ids));
                    bodies::json_response(StatusCode::OK, &body)
                }
                FaultOutcome::ServerError => bodies::internal_error(),
                FaultOutcome::Drop => {
                    let mut r = Response::new(Body::empty());
                    r.extensions_mut().insert(DropConnection);
                    r
                }
            },
        };
        let dropped = response.extensions().get::<DropConnection>().is_some();
        let status = (!dropped).then(|| response.status().as_u16());
        tracing::debug!(key = %label, path, status, "mock: accepted");
        lock(&self.record).push(AcceptedCall {
            key: label,
            path: path.to_string(),
            arrival,
            status,
        });
        self.rate_headers(&mut response, decision.rate);
        response
    }
}

/// One endpoint call: decide at arrival, then wait out the injected latency.
async fn handle(
    state: Arc<ServerState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = state.clock.now();
    let response = state.respond(endpoint, &headers, &body, arrival);
    let delay = state.faults.delay();
    if !delay.is_zero() {
        state.clock.sleep_until(arrival + delay).await;
    }
    response
}

fn router(state: Arc<ServerState>) -> Router {
    let route = |endpoint: Endpoint| {
        post(
            move |State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes| {
                handle(state, endpoint, headers, body)
            },
        )
    };
    Router::new()
        .route(
            Endpoint::RegisterAgentRun.path(),
            route(Endpoint::RegisterAgentRun),
        )
        .route(Endpoint::Event.path(), route(Endpoint::Event))
        .route(Endpoint::Check.path(), route(Endpoint::Check))
        .fallback(|| async { bodies::not_found() })
        .method_not_allowed_fallback(|| async { bodies::method_not_allowed() })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Scripted responses first, then the router; a response marked [`DropConnection`] becomes an
/// error, which makes hyper close the connection without answering.
async fn dispatch(
    state: Arc<ServerState>,
    router: TowerToHyperService<Router>,
    request: Request<Incoming>,
) -> Result<Response, Dropped> {
    if let Some(scripted) = state.scripts.next(request.uri().path()) {
        state.scripted.fetch_add(1, Ordering::Relaxed);
        let _ = axum::body::to_bytes(Body::new(request.into_body()), BODY_LIMIT).await;
        if scripted.drop_connection {
            return Err(Dropped);
        }
        return Ok(scripted.into_response());
    }
    let response = match router.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.extensions().get::<DropConnection>().is_some() {
        Err(Dropped)
    } else {
        Ok(response)
    }
}

/// Completes when the server is told to stop (or its last handle is dropped).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<ServerState>,
    mut stop: watch::Receiver<bool>,
) {
    let router = router(state.clone());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _peer)) => {
                connections.spawn(serve_connection(
                    stream,
                    state.clone(),
                    router.clone(),
                    stop.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "mock: accept failed");
                let pause = state.clock.now() + Duration::from_millis(20);
                state.clock.sleep_until(pause).await;
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    tracing::info!("mock: Fabraix mock server stopped");
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<ServerState>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        dispatch(state.clone(), tower.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
