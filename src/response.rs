//! A successful job's outcome.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// The server's answer to a job that succeeded.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status (2xx).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// How many times the call was sent (1 if the first try succeeded).
    pub attempts: u32,
    /// When the successful attempt went on the wire (the scheduler's clock).
    pub sent_at: crate::clock::Instant,
}

impl Response {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}
