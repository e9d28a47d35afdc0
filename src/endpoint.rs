//! Where a key's calls go: one origin, checked once, so the key is never sent anywhere else.

use std::net::IpAddr;

use reqwest::Url;

/// The Fabraix API's production base URL.
pub const FABRAIX_BASE_URL: &str = "https://api.fabraix.com/v1";

/// A base URL (`https://api.fabraix.com/v1`) that every job's path is joined to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    base: Url,
}

impl Endpoint {
    /// Checks a base URL: `https`, or plain `http` only to a loopback host (127.0.0.0/8, ::1,
    /// localhost) unless `allow_insecure_http` is set. No credentials, query or fragment.
    ///
    /// ```
    /// use fabraix_scheduler::Endpoint;
    /// assert!(Endpoint::new("https://api.fabraix.com/v1", false).is_ok());
    /// assert!(Endpoint::new("http://127.0.0.1:8080/v1", false).is_ok());
    /// assert!(Endpoint::new("http://api.example.com/v1", false).is_err());
    /// assert!(Endpoint::new("http://api.example.com/v1", true).is_ok());
    /// ```
    pub fn new(base_url: &str, allow_insecure_http: bool) -> Result<Self, EndpointError> {
        let base = Url::parse(base_url.trim()).map_err(|e| EndpointError {
            message: format!("base URL {base_url:?} does not parse: {e}"),
            source: Some(e),
        })?;
        match base.scheme() {
            "https" => {}
            "http" if allow_insecure_http || is_loopback(&base) => {}
            "http" => {
                return Err(EndpointError::new(format!(
                    "refusing to send the API key over plain http to {} (not a loopback host); use https, or allow insecure http explicitly",
                    base.host_str().unwrap_or("?")
                )))
            }
            other => {
                return Err(EndpointError::new(format!(
                    "base URL scheme {other:?} is not http or https"
                )))
            }
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(EndpointError::new("base URL has no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(EndpointError::new("base URL must not carry credentials"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(EndpointError::new(
                "base URL must not have a query or fragment",
            ));
        }
        Ok(Self { base })
    }

    /// The base URL as given (normalised).
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The absolute URI of `path` (`/event`, or `event`; a query string is allowed), built once
    /// when a job is submitted. Errors if the path could leave the base's origin or path: a scheme
    /// or authority, `..` segments, backslashes, a fragment, or characters a URI cannot carry.
    ///
    /// ```
    /// use fabraix_scheduler::Endpoint;
    /// let e = Endpoint::new("https://api.fabraix.com/v1", false).unwrap();
    /// assert_eq!(e.uri_for("/event").unwrap(), "https://api.fabraix.com/v1/event");
    /// assert!(e.uri_for("https://elsewhere.example/x").is_err());
    /// ```
    pub fn uri_for(&self, path: &str) -> Result<http::Uri, String> {
        if path.contains("://") || path.starts_with("//") || path.contains(['\\', '#']) {
            return Err(format!("path {path:?} must be relative to the base URL"));
        }
        if path.split(['/', '?']).any(|seg| seg == "..") {
            return Err(format!("path {path:?} must not contain '..'"));
        }
        let base = self.base.as_str().trim_end_matches('/');
        let joined = format!("{base}/{}", path.trim_start_matches('/'));
        // The base's scheme and authority come first, so no suffix can change them.
        http::Uri::try_from(joined).map_err(|e| format!("path {path:?} does not form a URI: {e}"))
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// A base URL that cannot be used: [`message`](Self::message) says what is wrong, and
/// [`source`](std::error::Error::source) is the URL parser's error when it did not parse.
///
/// ```
/// use std::error::Error;
/// use fabraix_scheduler::Endpoint;
///
/// let e = Endpoint::new("not a url", false).unwrap_err();
/// assert!(e.message().contains("does not parse"));
/// assert!(e.source().is_some());
/// let e = Endpoint::new("https://user:pw@api.example/v1", false).unwrap_err();
/// assert!(e.source().is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EndpointError {
    message: String,
    #[source]
    source: Option<url::ParseError>,
}

impl EndpointError {
    fn new(message: impl Into<String>) -> Self {
        EndpointError {
            message: message.into(),
            source: None,
        }
    }

    /// What is wrong with the base URL.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_on_the_origin() {
        let e = Endpoint::new("https://api.fabraix.com/v1/", false).unwrap();
        assert_eq!(
            e.uri_for("/event").unwrap(),
            "https://api.fabraix.com/v1/event"
        );
        assert_eq!(
            e.uri_for("check?x=1").unwrap(),
            "https://api.fabraix.com/v1/check?x=1"
        );
        assert!(e.uri_for("https://evil.example/x").is_err());
        assert!(e.uri_for("//evil.example/x").is_err());
        assert!(e.uri_for("/../admin").is_err());
        assert!(e.uri_for("/a#frag").is_err());
        assert!(e.uri_for("/a b").is_err());
        for path in ["@evil.example/x", ":443@evil/x", "%2F%2Fevil/x"] {
            let uri = e.uri_for(path).unwrap();
            assert_eq!(uri.host(), Some("api.fabraix.com"), "{path}");
        }
        assert!(Endpoint::new("ftp://x/v1", false).is_err());
        assert!(Endpoint::new("https://user:pw@x/v1", false).is_err());
        assert!(Endpoint::new("http://[::1]:80/v1", false).is_ok());
        assert!(Endpoint::new("http://localhost:80/v1", false).is_ok());
        assert!(Endpoint::new("http://10.0.0.1/v1", false).is_err());
    }
}
