//! One classification of every response and transport failure, made in one place.

use http::StatusCode;

/// What a response (or its absence) means for the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 2xx, and only 2xx: the job's outcome.
    Success,
    /// 429: pause the key, put the job back at the front of its lane.
    RateLimited,
    /// 5xx, 408, timeouts, connection errors: back off and retry under the budget.
    Transient,
    /// 401: the key is invalid or revoked; every queued job of the key fails at once.
    Unauthorized,
    /// 403: this call is not allowed for this key; that job fails.
    Forbidden,
    /// 400, 404, 422 and other 4xx: the request is wrong; retrying cannot help. Also every status
    /// outside 2xx, 4xx and 5xx (a 1xx or 3xx a transport handed through, or a non-standard 600 to
    /// 999): not a success, and nothing says a retry would fare better, so the job fails at once
    /// with the status and the body's excerpt.
    Fatal,
}

/// The class of an HTTP status.
///
/// ```
/// use fabraix_scheduler::retry::{classify_status, Class};
/// use http::StatusCode;
/// assert_eq!(classify_status(StatusCode::TOO_MANY_REQUESTS), Class::RateLimited);
/// assert_eq!(classify_status(StatusCode::BAD_GATEWAY), Class::Transient);
/// assert_eq!(classify_status(StatusCode::UNPROCESSABLE_ENTITY), Class::Fatal);
/// assert_eq!(classify_status(StatusCode::from_u16(999).unwrap()), Class::Fatal);
/// ```
pub fn classify_status(status: StatusCode) -> Class {
    match status.as_u16() {
        429 => Class::RateLimited,
        401 => Class::Unauthorized,
        403 => Class::Forbidden,
        408 => Class::Transient,
        500..=599 => Class::Transient,
        200..=299 => Class::Success,
        _ => Class::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_class() {
        let c = |s: u16| classify_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(c(200), Class::Success);
        assert_eq!(c(204), Class::Success);
        assert_eq!(c(400), Class::Fatal);
        assert_eq!(c(401), Class::Unauthorized);
        assert_eq!(c(403), Class::Forbidden);
        assert_eq!(c(404), Class::Fatal);
        assert_eq!(c(408), Class::Transient);
        assert_eq!(c(409), Class::Fatal);
        assert_eq!(c(422), Class::Fatal);
        assert_eq!(c(429), Class::RateLimited);
        assert_eq!(c(500), Class::Transient);
        assert_eq!(c(503), Class::Transient);
        for not_success in [100, 199, 300, 304, 399, 600, 700, 999] {
            assert_eq!(c(not_success), Class::Fatal, "{not_success}");
        }
        assert_eq!(c(299), Class::Success);
    }
}
