//! A request of the user's stack as a job of its key: its path under the key's base URL (or a
//! refusal, if it goes elsewhere), its headers, its whole body, its lane.

use bytes::Bytes;
use http::{header, HeaderMap, Method};
use reqwest::Url;

use super::AdapterError;
use crate::job::{Job, Priority};

/// Headers not carried into the job: the key's (the scheduler attaches it) and the framing of a
/// body that is now whole (the client sets them again).
fn carried(name: &header::HeaderName) -> bool {
    name.as_str() != "x-api-key"
        && name != header::CONTENT_LENGTH
        && name != header::TRANSFER_ENCODING
}

/// The job for a request of `method` to `url` with `headers` and `body`, for a key whose base URL
/// is `base_url`. `url` is absolute; it must be under the base (same origin, path below the
/// base's path), else [`AdapterError::OtherOrigin`].
pub(crate) fn job_of_request(
    base_url: &str,
    method: Method,
    url: &Url,
    headers: &HeaderMap,
    body: Bytes,
    priority: Priority,
) -> Result<Job, AdapterError> {
    let path = path_under(base_url, url)?;
    let mut own = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter().filter(|(name, _)| carried(name)) {
        own.append(name.clone(), value.clone());
    }
    let mut job = Job::new(method, path)
        .with_body(body)
        .with_priority(priority);
    if !own.is_empty() {
        job.headers = Some(Box::new(own));
    }
    Ok(job)
}

/// `url` as a path relative to `base_url` (`/event?x=1` for `https://h/v1/event?x=1` under
/// `https://h/v1`), or [`AdapterError::OtherOrigin`].
fn path_under(base_url: &str, url: &Url) -> Result<String, AdapterError> {
    let other = || AdapterError::OtherOrigin {
        uri: format!("{}{}", url.origin().ascii_serialization(), url.path()),
        base: base_url.to_owned(),
    };
    let base = Url::parse(base_url).map_err(|_| other())?;
    if base.origin() != url.origin() {
        return Err(other());
    }
    let base_path = base.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(base_path).ok_or_else(other)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(other());
    }
    let mut path = if rest.is_empty() {
        String::from("/")
    } else {
        rest.to_owned()
    };
    if let Some(query) = url.query() {
        path.push('?');
        path.push_str(query);
    }
    Ok(path)
}

/// An `http::Uri` as an absolute URL: an origin-form URI (`/v1/event`) is taken on the base's
/// origin.
#[cfg(feature = "tower")]
pub(crate) fn absolute_url(base_url: &str, uri: &http::Uri) -> Result<Url, AdapterError> {
    let parsed = if uri.scheme().is_some() {
        Url::parse(&uri.to_string())
    } else {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        Url::parse(base_url).and_then(|base| base.join(pq))
    };
    parsed.map_err(|_| AdapterError::OtherOrigin {
        uri: uri.path().to_owned(),
        base: base_url.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(base: &str, url: &str) -> Result<String, AdapterError> {
        path_under(base, &Url::parse(url).unwrap())
    }

    #[test]
    fn paths_under_the_base_keep_their_query() {
        let base = "http://127.0.0.1:8080/v1";
        assert_eq!(
            path(base, "http://127.0.0.1:8080/v1/event?x=1").unwrap(),
            "/event?x=1"
        );
        assert_eq!(path(base, "http://127.0.0.1:8080/v1").unwrap(), "/");
        assert_eq!(
            path("https://h.example/", "https://h.example/a").unwrap(),
            "/a"
        );
    }

    #[test]
    fn other_origins_and_paths_beside_the_base_are_refused() {
        let base = "http://127.0.0.1:8080/v1";
        for url in [
            "http://127.0.0.1:8081/v1/event",
            "https://127.0.0.1:8080/v1/event",
            "http://localhost:8080/v1/event",
            "http://127.0.0.1:8080/v10/event",
            "http://127.0.0.1:8080/event",
        ] {
            assert!(
                matches!(path(base, url), Err(AdapterError::OtherOrigin { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn the_key_header_and_the_framing_are_not_carried() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "forged".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "2".parse().unwrap());
        headers.append("x-trace", "t1".parse().unwrap());
        headers.append("x-trace", "t2".parse().unwrap());
        let url = Url::parse("https://h.example/v1/event").unwrap();
        let job = job_of_request(
            "https://h.example/v1",
            Method::POST,
            &url,
            &headers,
            Bytes::from_static(b"{}"),
            Priority::Interactive,
        )
        .unwrap();
        let own = job.headers.as_deref().unwrap();
        assert_eq!(own.len(), 2);
        assert_eq!(own.get_all("x-trace").iter().count(), 2);
        assert_eq!(job.path(), "/event");
        assert_eq!(job.priority(), Priority::Interactive);
    }
}
