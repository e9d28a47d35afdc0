//! What every call of a key shares, made once rather than per call: its headers and the absolute
//! URIs of the paths it sends to.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::key_queue::Queued;
use crate::endpoint::Endpoint;
use crate::transport::HttpRequest;

const USER_AGENT: &str = concat!("fabraix-scheduler/", env!("CARGO_PKG_VERSION"));

/// The key's header, checked once at compile time rather than on every call.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Paths remembered per key. A scan of this many short strings costs less than parsing one URI.
const URI_CACHE_SIZE: usize = 8;

/// The headers of a call: `x-api-key` (the key's value, marked sensitive so that it is never
/// printed) and the user agent. Built fresh for each call, which is cheaper than cloning a map
/// kept per key: a clone reads the kept map's two buffers, which for one of 10,000 keys are
/// rarely in cache; building writes two fresh ones.
pub(crate) fn headers_with_key(api_key: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(X_API_KEY, api_key);
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    );
    headers
}

/// Where one attempt goes and the key it carries, taken under the key's lock. The headers are
/// built from it later, without the lock ([`build_request`]).
#[derive(Debug)]
pub(crate) struct Addressing {
    /// The job's absolute URI.
    pub(crate) uri: http::Uri,
    /// The key's value as a sensitive header value (see [`headers_with_key`]).
    pub(crate) api_key: HeaderValue,
}

/// The request for one attempt of `job`. A job's own headers come first; the key header always
/// wins, the user agent only if the job sets none.
pub(crate) fn build_request(job: &Queued, to: Addressing) -> HttpRequest {
    let Addressing { uri, api_key } = to;
    let headers = headers_with_key(api_key);
    let mut request = http::Request::new(job.job.body.clone());
    *request.method_mut() = job.job.method.clone();
    *request.uri_mut() = uri;
    match job.job.headers.as_deref() {
        None => *request.headers_mut() = headers,
        Some(own) => {
            let all = request.headers_mut();
            all.extend(own.clone());
            for (name, value) in &headers {
                if name == http::header::USER_AGENT && all.contains_key(name) {
                    continue;
                }
                all.insert(name.clone(), value.clone());
            }
        }
    }
    request
}

/// The absolute URIs of the last few distinct paths a key was given, most recent first.
#[derive(Debug, Default)]
pub(crate) struct UriCache {
    entries: Vec<(Box<str>, http::Uri)>,
}

impl UriCache {
    /// The URI of `path` under `endpoint`: remembered, or checked and built (see
    /// [`Endpoint::uri_for`]) and remembered. An invalid path is not remembered.
    pub(crate) fn uri_for(
        &mut self,
        endpoint: &Endpoint,
        path: &str,
    ) -> Result<&http::Uri, String> {
        match self.entries.iter().position(|(p, _)| &**p == path) {
            Some(0) => {}
            Some(i) => {
                let hit = self.entries.remove(i);
                self.entries.insert(0, hit);
            }
            None => {
                let uri = endpoint.uri_for(path)?;
                if self.entries.len() == URI_CACHE_SIZE {
                    self.entries.pop();
                }
                self.entries.insert(0, (path.into(), uri));
            }
        }
        Ok(&self.entries[0].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::ApiKey;

    #[test]
    fn remembers_recent_paths_and_rejects_bad_ones() {
        let endpoint = Endpoint::new("http://127.0.0.1:9/v1", false).unwrap();
        let mut cache = UriCache::default();
        for i in 0..(URI_CACHE_SIZE + 3) {
            let uri = cache.uri_for(&endpoint, &format!("/p{i}")).unwrap().clone();
            assert_eq!(uri.to_string(), format!("http://127.0.0.1:9/v1/p{i}"));
        }
        assert_eq!(cache.entries.len(), URI_CACHE_SIZE);
        assert_eq!(&*cache.entries[0].0, format!("/p{}", URI_CACHE_SIZE + 2));
        // A hit moves to the front and gives the same URI as a fresh build.
        let hit = cache.uri_for(&endpoint, "/p5").unwrap().clone();
        assert_eq!(hit, endpoint.uri_for("/p5").unwrap());
        assert_eq!(&*cache.entries[0].0, "/p5");
        assert!(cache
            .uri_for(&endpoint, "https://elsewhere.example/x")
            .is_err());
        assert!(cache.uri_for(&endpoint, "/a/../b").is_err());
        assert_eq!(cache.entries.len(), URI_CACHE_SIZE);
    }

    fn queued(job: crate::job::Job) -> (Queued, http::Uri) {
        let endpoint = Endpoint::new("http://127.0.0.1:9/v1", false).unwrap();
        let uri = endpoint.uri_for(&job.path).unwrap();
        let queued = Queued {
            id: 1,
            job,
            attempts: 0,
            rate_limited: 0,
            transient_retries: 0,
            outcome: tokio::sync::oneshot::channel().0,
        };
        (queued, uri)
    }

    fn to(uri: http::Uri, key: &ApiKey) -> Addressing {
        Addressing {
            uri,
            api_key: key.header_value(),
        }
    }

    #[test]
    fn a_plain_job_carries_the_key_headers() {
        let key = ApiKey::new("secret-value").unwrap();
        let (job, uri) = queued(crate::job::Job::new(http::Method::POST, "/event").with_body("{}"));
        let request = build_request(&job, to(uri, &key));
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri(), "http://127.0.0.1:9/v1/event");
        assert_eq!(request.body().as_ref(), b"{}");
        assert_eq!(request.headers()["x-api-key"], "secret-value");
        assert!(request.headers()["x-api-key"].is_sensitive());
        assert_eq!(request.headers()[http::header::USER_AGENT], USER_AGENT);
        assert_eq!(request.headers().len(), 2);
    }

    #[test]
    fn the_key_header_wins_and_a_job_user_agent_stays() {
        let key = ApiKey::new("secret-value").unwrap();
        let (job, uri) = queued(
            crate::job::Job::new(http::Method::GET, "/check")
                .with_header(
                    HeaderName::from_static("x-api-key"),
                    HeaderValue::from_static("forged"),
                )
                .with_header(
                    http::header::USER_AGENT,
                    HeaderValue::from_static("agent/1"),
                )
                .with_header(
                    HeaderName::from_static("x-trace"),
                    HeaderValue::from_static("t1"),
                ),
        );
        let request = build_request(&job, to(uri, &key));
        let keys: Vec<_> = request.headers().get_all("x-api-key").iter().collect();
        assert_eq!(keys, ["secret-value"]);
        assert_eq!(request.headers()[http::header::USER_AGENT], "agent/1");
        assert_eq!(request.headers()["x-trace"], "t1");
    }
}
