//! Which headers cross the proxy: end-to-end headers do; hop-by-hop headers, the client's
//! credentials and the proxy's own `x-fabraix-*` headers do not.

use http::header::{self, HeaderMap, HeaderName};
use http::HeaderValue;

use fabraix_scheduler::Priority;

/// The header naming a request's lane (`interactive`, `normal`, `bulk`).
pub const PRIORITY_HEADER: &str = "x-fabraix-priority";

/// The prefix of the proxy's own headers, never forwarded.
const PROXY_PREFIX: &str = "x-fabraix-";

/// Hop-by-hop headers (RFC 9110 §7.6.1), and those the proxy sets itself.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// A client's credentials: never forwarded (the proxy's key is the only one that goes).
const CREDENTIALS: [HeaderName; 6] = [
    HeaderName::from_static("x-api-key"),
    header::AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("cookie2"),
    HeaderName::from_static("x-auth-token"),
    HeaderName::from_static("x-access-token"),
];

/// The headers named in `Connection` (hop-by-hop too).
fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// What of a client's request headers goes to the API: not hop-by-hop, not `host` or
/// `content-length` (the transport sets them), not `expect`, not credentials, not `x-fabraix-*`.
pub fn forwarded_request_headers(from: &HeaderMap) -> HeaderMap {
    let dropped = named_by_connection(from);
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let skip = HOP_BY_HOP.contains(name)
            || CREDENTIALS.contains(name)
            || dropped.contains(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            // The body is read whole before the call goes: nothing to wait for.
            || name == header::EXPECT
            || name.as_str().starts_with(PROXY_PREFIX);
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// What of the API's response headers goes back: all but hop-by-hop and `content-length`
/// (set from the body).
pub fn returned_response_headers(from: &HeaderMap) -> HeaderMap {
    let dropped = named_by_connection(from);
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if !(HOP_BY_HOP.contains(name) || dropped.contains(name) || name == header::CONTENT_LENGTH)
        {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The lane of a call to `path` (relative to `/v1`): `/check` is interactive; otherwise the
/// priority header, default normal. An unknown value is an error naming it.
pub fn lane(path: &str, headers: &HeaderMap) -> Result<Priority, String> {
    let bare = path.split('?').next().unwrap_or(path).trim_end_matches('/');
    if bare == "/check" {
        return Ok(Priority::Interactive);
    }
    match headers.get(PRIORITY_HEADER).map(HeaderValue::to_str) {
        None => Ok(Priority::Normal),
        Some(Ok(v)) => v
            .trim()
            .parse::<Priority>()
            .map_err(|e| format!("header {PRIORITY_HEADER}: {e}")),
        Some(Err(_)) => Err(format!("header {PRIORITY_HEADER} is not ASCII")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_hop_by_hop_and_proxy_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("x-api-key", "forged"),
            ("authorization", "Bearer x"),
            ("cookie", "s=1"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("host", "127.0.0.1"),
            ("x-fabraix-priority", "bulk"),
            ("content-type", "application/json"),
            ("x-trace", "t1"),
        ] {
            h.append(n, v.parse().unwrap());
        }
        h.append("x-trace", "t2".parse().unwrap());
        let out = forwarded_request_headers(&h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-trace"]);
        assert_eq!(out.get_all("x-trace").iter().count(), 2);
        let mut r = HeaderMap::new();
        r.insert("transfer-encoding", "chunked".parse().unwrap());
        r.insert("x-request-id", "r1".parse().unwrap());
        let back = returned_response_headers(&r);
        assert_eq!(back.len(), 1);
        assert_eq!(back["x-request-id"], "r1");
    }

    #[test]
    fn check_is_interactive_and_the_header_names_other_lanes() {
        let mut h = HeaderMap::new();
        assert_eq!(lane("/check", &h), Ok(Priority::Interactive));
        assert_eq!(lane("/event", &h), Ok(Priority::Normal));
        h.insert(PRIORITY_HEADER, "bulk".parse().unwrap());
        assert_eq!(lane("/event", &h), Ok(Priority::Bulk));
        assert_eq!(lane("/check?x=1", &h), Ok(Priority::Interactive));
        h.insert(PRIORITY_HEADER, "urgent".parse().unwrap());
        assert!(lane("/event", &h).unwrap_err().contains("urgent"));
    }
}
