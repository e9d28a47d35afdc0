//! A job: one API call as submitted, before a key and an origin are attached.

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::Serialize;

use crate::retry::Delivery;

/// Dispatch order inside one key: a higher lane always goes first; FIFO within a lane.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background traffic (bulk telemetry backfill).
    Bulk = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// A caller is waiting (an agent's blocking `/check`): takes the key's next free slot.
    Interactive = 2,
}

impl Priority {
    /// All lanes, highest first.
    pub const ALL_HIGHEST_FIRST: [Priority; 3] =
        [Priority::Interactive, Priority::Normal, Priority::Bulk];

    pub(crate) fn lane(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "interactive" => Ok(Priority::Interactive),
            "normal" => Ok(Priority::Normal),
            "bulk" => Ok(Priority::Bulk),
            other => Err(format!(
                "unknown priority {other:?} (use interactive, normal or bulk)"
            )),
        }
    }
}

/// One API call: method, a path relative to the key's base URL, a body, extra headers.
#[derive(Clone, Debug)]
pub struct Job {
    pub(crate) method: Method,
    pub(crate) path: Box<str>,
    pub(crate) body: Bytes,
    /// The job's own headers; `None` when it has none (most jobs). Boxed because a job is moved
    /// several times on its way to the wire, and an empty `HeaderMap` inline is 96 bytes.
    pub(crate) headers: Option<Box<HeaderMap>>,
    pub(crate) priority: Priority,
    pub(crate) delivery: Option<Delivery>,
}

impl Job {
    /// A call with no body. `path` is relative to the key's base URL (`/event`).
    ///
    /// ```
    /// use fabraix_scheduler::{Job, Priority};
    /// let job = Job::new(http::Method::GET, "/status").with_priority(Priority::Interactive);
    /// assert_eq!(job.path(), "/status");
    /// ```
    #[inline]
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into().into_boxed_str(),
            body: Bytes::new(),
            headers: None,
            priority: Priority::Normal,
            delivery: None,
        }
    }

    /// A POST with a JSON body.
    ///
    /// ```
    /// use fabraix_scheduler::Job;
    /// let job = Job::post_json("/event", &serde_json::json!({"event_type": "user"})).unwrap();
    /// assert_eq!(job.method(), &http::Method::POST);
    /// ```
    pub fn post_json<T: Serialize + ?Sized>(
        path: impl Into<String>,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_vec(body)?;
        Ok(Self::new(Method::POST, path).with_body(body).with_header(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        ))
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the lane.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets this job's delivery semantics (otherwise the scheduler's default).
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// Adds a header. `x-api-key` is refused here: the scheduler attaches the key itself.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        if name.as_str() != "x-api-key" {
            self.headers
                .get_or_insert_with(Default::default)
                .insert(name, value);
        }
        self
    }

    /// Adds these headers (each value of a repeated header kept, after any set before).
    /// `x-api-key` is dropped here: the scheduler attaches the key itself.
    ///
    /// ```
    /// use fabraix_scheduler::Job;
    /// let mut h = http::HeaderMap::new();
    /// h.append("x-trace", "a".parse().unwrap());
    /// h.append("x-trace", "b".parse().unwrap());
    /// h.append("x-api-key", "forged".parse().unwrap());
    /// let job = Job::new(http::Method::GET, "/status").with_headers(h);
    /// assert_eq!(job.headers().unwrap().get_all("x-trace").iter().count(), 2);
    /// assert!(job.headers().unwrap().get("x-api-key").is_none());
    /// ```
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        let own = self.headers.get_or_insert_with(Default::default);
        for (name, value) in &headers {
            if name.as_str() != "x-api-key" {
                own.append(name.clone(), value.clone());
            }
        }
        self
    }

    /// The job's own headers, if it has any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_deref()
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, relative to the key's base URL.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The lane.
    pub fn priority(&self) -> Priority {
        self.priority
    }
}
