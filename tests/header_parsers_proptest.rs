//! Properties of the parsers of what a server sends, over arbitrary strings and bytes: the
//! rate-limit headers, the 429's waits (`Retry-After` and the body's `retry_after`), the error
//! bodies, and the one conversion of network seconds they share. None panics; no wait is ever
//! beyond the cap it is given; no error text is unbounded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fabraix_scheduler::retry::{
    parse_rate_limit_headers, parse_retry_after, seconds_to_duration, RetryAfter,
    MAX_NETWORK_SECONDS,
};
use fabraix_scheduler::ApiError;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// Text a server might put where a number of seconds belongs: numbers of every size and form,
/// timestamps, dates, and plain garbage.
fn seconds_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..400).prop_map(|e| format!("1e{e}")),
        (0u32..400).prop_map(|e| format!("-1e{e}")),
        Just("inf".to_string()),
        Just("NaN".to_string()),
        Just("Tue, 14 Nov 2023 22:14:00 GMT".to_string()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_string()),
        "[ -~\t]{0,40}",
        any::<String>(),
    ]
}

fn header_map(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_float_is_a_bounded_duration_or_an_error(secs in any::<f64>()) {
        if let Ok(d) = seconds_to_duration(secs) {
            prop_assert!(d.as_secs_f64() <= MAX_NETWORK_SECONDS);
        }
    }

    #[test]
    fn rate_limit_headers_never_panic_nor_exceed_the_cap(
        remaining in seconds_text(),
        reset in seconds_text(),
        combined in seconds_text(),
        cap_s in 0u64..100_000,
        spelling in 0usize..3,
    ) {
        let cap = Duration::from_secs(cap_s);
        let headers = match spelling {
            0 => header_map(&[("ratelimit-remaining", remaining), ("ratelimit-reset", reset)]),
            1 => header_map(&[("x-ratelimit-remaining", remaining), ("x-ratelimit-reset", reset)]),
            _ => header_map(&[("ratelimit", format!("remaining={remaining}, reset={combined}"))]),
        };
        if let Some(w) = parse_rate_limit_headers(&headers, wall, cap) {
            prop_assert!(w.reset_in <= cap);
            if let Some(announced) = w.clamped_from {
                prop_assert!(announced > cap);
                prop_assert_eq!(w.reset_in, cap);
            }
        }
    }

    #[test]
    fn retry_after_never_panics_nor_exceeds_the_cap(
        header in seconds_text(),
        body_value in seconds_text(),
        raw_body in proptest::collection::vec(any::<u8>(), 0..200),
        shape in 0usize..4,
        cap_s in 0u64..100_000,
    ) {
        let cap = Duration::from_secs(cap_s);
        let headers = header_map(&[("retry-after", header)]);
        let body = match shape {
            0 => format!(r#"{{"error":{{"retry_after":{body_value}}}}}"#).into_bytes(),
            1 => format!(r#"{{"retry_after":"{}"}}"#, body_value.escape_default()).into_bytes(),
            2 => serde_json::json!({"error": {"retry_after": body_value}}).to_string().into_bytes(),
            _ => raw_body,
        };
        let (wait, _problems) = parse_retry_after(&headers, &body, wall(), cap);
        if let RetryAfter::Wait { wait, clamped_from } = wait {
            prop_assert!(wait <= cap);
            if let Some(asked) = clamped_from {
                prop_assert!(asked > cap);
            }
        }
    }

    #[test]
    fn error_bodies_never_panic_and_stay_bounded(
        status in 100u16..1000,
        raw in proptest::collection::vec(any::<u8>(), 0..2000),
        message in any::<String>(),
        long in 0usize..20_000,
        shape in 0usize..4,
    ) {
        let body = match shape {
            0 => raw,
            1 => serde_json::json!({"error": {"message": message, "type": message, "code": message}})
                .to_string()
                .into_bytes(),
            2 => serde_json::json!({"detail": [{"loc": [message, 1], "msg": "x".repeat(long)}]})
                .to_string()
                .into_bytes(),
            // Nested deeper than any parser should follow.
            _ => format!("{}{}", "[".repeat(long), "]".repeat(long)).into_bytes(),
        };
        let e = ApiError::from_body(status, &body);
        prop_assert_eq!(e.status, status);
        prop_assert!(e.message.chars().count() <= 1001);
        prop_assert!(e.kind.as_ref().is_none_or(|k| k.chars().count() <= 101));
        prop_assert!(e.code.as_ref().is_none_or(|c| c.chars().count() <= 101));
        prop_assert!(!e.to_string().is_empty());
    }
}
