//! `RateLimit-Remaining` / `RateLimit-Reset` (and the `X-RateLimit-*` spellings, and the combined
//! `RateLimit: remaining=…, reset=…` field): what the server says is left, when present; with
//! `RateLimit-Limit` and `RateLimit-Policy` (`10;w=1, 1000;w=3600`), the limit it is for.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use super::network_time::reset_to_duration;

/// What the server announced: `remaining` calls before `reset_in` from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerWindow {
    /// Calls left in the server's current window.
    pub remaining: u32,
    /// The count of the limit the figures are for (`RateLimit-Limit`, `X-RateLimit-Limit` or the
    /// combined field's `limit`; its leading number), if given.
    pub limit: Option<u32>,
    /// The window of that limit, from the policy the server names with the same count
    /// (`RateLimit-Policy: 10;w=1, 1000;w=3600`, or the same items after the count in
    /// `RateLimit-Limit`), in whole seconds from 1 s to [`MAX_POLICY_WINDOW`]; `None` if no such
    /// policy is given, or several of that count with different windows.
    pub window: Option<Duration>,
    /// Time until that window resets, at most the cap given to [`parse_rate_limit_headers`].
    pub reset_in: Duration,
    /// `Some(announced)` if the server announced a longer reset than the cap and was clamped
    /// (the caller logs it, as it does a clamped `retry_after`).
    pub clamped_from: Option<Duration>,
}

/// The longest header value read, in bytes: a longer one is not a count or a time.
const MAX_VALUE_LEN: usize = 256;

/// The most policy items read from `RateLimit-Policy` and `RateLimit-Limit` together; later ones
/// are ignored.
const MAX_POLICY_ITEMS: usize = 16;

/// The longest policy window read (`w=`): 366 days. A longer one is taken as no window.
pub const MAX_POLICY_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// The server's window, if the response carries both a remaining count and a reset time that parse.
/// Anything malformed is ignored (the ledger's own accounting still holds). The reset is read through
/// the one checked path for network times (seconds, or a Unix timestamp when at least 10^9), and
/// bounded by `cap` (as a 429's `retry_after` is): a window can never hold a key longer.
/// `wall_now` is called only for a reset given as a Unix timestamp, so the common response costs no
/// clock read.
///
/// ```
/// use fabraix_scheduler::retry::parse_rate_limit_headers;
/// use http::{HeaderMap, HeaderValue};
/// use std::time::{Duration, UNIX_EPOCH};
/// let mut h = HeaderMap::new();
/// h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
/// h.insert("ratelimit-reset", HeaderValue::from_static("86400"));
/// let wall_now = || UNIX_EPOCH + Duration::from_secs(1_700_000_000); // the clock's wall time
/// let w = parse_rate_limit_headers(&h, wall_now, Duration::from_secs(3660)).unwrap();
/// assert_eq!(w.reset_in, Duration::from_secs(3660));
/// assert_eq!(w.clamped_from, Some(Duration::from_secs(86400)));
/// ```
pub fn parse_rate_limit_headers(
    headers: &HeaderMap,
    wall_now: impl FnOnce() -> SystemTime,
    cap: Duration,
) -> Option<ServerWindow> {
    if headers.is_empty() {
        return None;
    }
    let get = |names: &[HeaderName]| -> Option<&str> {
        names
            .iter()
            .find_map(|n| headers.get(n))
            .filter(|v| v.len() <= MAX_VALUE_LEN)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let mut remaining = get(&[
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-remaining"),
    ]);
    let mut reset = get(&[
        HeaderName::from_static("ratelimit-reset"),
        HeaderName::from_static("x-ratelimit-reset"),
    ]);
    let mut limit = get(&[
        HeaderName::from_static("ratelimit-limit"),
        HeaderName::from_static("x-ratelimit-limit"),
    ]);
    if remaining.is_none() || reset.is_none() || limit.is_none() {
        if let Some(combined) = get(&[HeaderName::from_static("ratelimit")]) {
            for part in combined.split([',', ';']) {
                if let Some((k, v)) = part.split_once('=') {
                    match k.trim() {
                        "remaining" | "r" => remaining = Some(v.trim()),
                        "reset" | "t" => reset = Some(v.trim()),
                        "limit" | "l" if limit.is_none() => limit = Some(v.trim()),
                        _ => {}
                    }
                }
            }
        }
    }
    let remaining: u32 = remaining?.parse().ok()?;
    let announced = reset_to_duration(reset?, wall_now).ok()?;
    let (reset_in, clamped_from) = if announced > cap {
        (cap, Some(announced))
    } else {
        (announced, None)
    };
    // A policy may follow the count (`10, 10;w=1`): the leading number is the count.
    // (The leading item may carry its own policy: `10;w=1`.)
    let mut limit_items = limit.map(|l| l.split(',')).into_iter().flatten();
    let first = limit_items.next();
    let count: Option<u32> = first
        .and_then(|l| l.split(';').next())
        .and_then(|l| digits(l.trim()));
    let limit_items = first.into_iter().chain(limit_items);
    let policy = get(&[
        HeaderName::from_static("ratelimit-policy"),
        HeaderName::from_static("x-ratelimit-policy"),
    ]);
    let items = limit_items
        .chain(policy.map(|p| p.split(',')).into_iter().flatten())
        .take(MAX_POLICY_ITEMS)
        .filter_map(policy_item);
    let (limit, window) = limit_and_window(count, items);
    Some(ServerWindow {
        remaining,
        limit,
        window,
        reset_in,
        clamped_from,
    })
}

/// One policy item, `count;w=seconds` or `"name";q=count;w=seconds`: its count and window, if
/// both parse and the window is within bounds.
fn policy_item(item: &str) -> Option<(u32, Duration)> {
    let mut parts = item.split(';').map(str::trim);
    let mut count: Option<u32> = parts.next().and_then(digits);
    let mut window = None;
    for part in parts {
        match part.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("q", v)) => count = digits(v),
            Some(("w", v)) => {
                window = digits::<u64>(v)
                    .filter(|&s| s >= 1)
                    .map(Duration::from_secs)
                    .filter(|&w| w <= MAX_POLICY_WINDOW);
            }
            _ => {}
        }
    }
    Some((count?, window?))
}

/// `text` as a number if it is only ASCII digits (a structured-field integer: no sign) and fits.
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The limit named (`count`, or the only policy's if none is) and its window: the one window of
/// the policies of that count, if they agree on one.
fn limit_and_window(
    count: Option<u32>,
    items: impl Iterator<Item = (u32, Duration)>,
) -> (Option<u32>, Option<Duration>) {
    let mut seen: Option<(u32, Duration)> = None;
    let mut agree = true;
    for (c, w) in items {
        if count.is_some_and(|n| n != c) {
            continue;
        }
        match seen {
            None => seen = Some((c, w)),
            Some(first) if first == (c, w) => {}
            Some(_) => agree = false,
        }
    }
    match (count, seen, agree) {
        (_, Some((c, w)), true) => (Some(c), Some(w)),
        (count, _, _) => (count, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    const CAP: Duration = Duration::from_secs(3660);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn each_spelling_parses() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let w = parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "7"), ("x-ratelimit-reset", "12")]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!(
            w,
            ServerWindow {
                remaining: 7,
                limit: None,
                window: None,
                reset_in: Duration::from_secs(12),
                clamped_from: None,
            }
        );
        let w = parse_rate_limit_headers(
            &headers(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "1700000030"),
            ]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!(w.reset_in, Duration::from_secs(30));
        let w = parse_rate_limit_headers(
            &headers(&[("ratelimit", "limit=10, remaining=3, reset=4")]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!((w.remaining, w.limit), (3, Some(10)));
        // The limit's count, alone or with a policy after it.
        for (value, count) in [("60", Some(60)), ("10, 10;w=1", Some(10)), ("many", None)] {
            let w = parse_rate_limit_headers(
                &headers(&[
                    ("x-ratelimit-limit", value),
                    ("x-ratelimit-remaining", "1"),
                    ("x-ratelimit-reset", "1"),
                ]),
                || now,
                CAP,
            )
            .unwrap();
            assert_eq!(w.limit, count, "{value}");
        }
        assert!(parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "x"), ("x-ratelimit-reset", "1")]),
            || now,
            CAP
        )
        .is_none());
        assert!(
            parse_rate_limit_headers(&headers(&[("x-ratelimit-remaining", "1")]), || now, CAP)
                .is_none()
        );
        assert!(parse_rate_limit_headers(
            &headers(&[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", "-3")]),
            || now,
            CAP
        )
        .is_none());
    }

    #[test]
    fn a_policy_names_the_window_of_the_limit_of_its_count() {
        let now = UNIX_EPOCH;
        let parse = |pairs: &[(&'static str, &str)]| {
            let mut all = vec![("ratelimit-remaining", "1"), ("ratelimit-reset", "1")];
            all.extend_from_slice(pairs);
            let w = parse_rate_limit_headers(&headers(&all), || now, CAP).unwrap();
            (w.limit, w.window.map(|w| w.as_secs()))
        };
        let policy = ("ratelimit-policy", "10;w=1, 1000;w=3600");
        assert_eq!(
            parse(&[("ratelimit-limit", "10"), policy]),
            (Some(10), Some(1))
        );
        assert_eq!(
            parse(&[("ratelimit-limit", "1000"), policy]),
            (Some(1000), Some(3600))
        );
        // A count no policy has: no window. Items after the count in the limit's own field.
        assert_eq!(
            parse(&[("ratelimit-limit", "60"), policy]),
            (Some(60), None)
        );
        assert_eq!(
            parse(&[("ratelimit-limit", "10, 10;w=1, 1000;w=3600")]),
            (Some(10), Some(1))
        );
        // The leading item's own policy.
        assert_eq!(
            parse(&[("ratelimit-limit", "10;w=60")]),
            (Some(10), Some(60))
        );
        assert_eq!(parse(&[("ratelimit-limit", "+10")]), (None, None), "a sign");
        // The structured spelling (`q=`), and a lone policy naming the limit too.
        assert_eq!(
            parse(&[("ratelimit-policy", "\"default\";q=100;w=10")]),
            (Some(100), Some(10))
        );
        assert_eq!(parse(&[policy]), (None, None), "two policies, no count");
        // Out of bounds, malformed or disagreeing windows: none.
        for bad in [
            "10;w=0",
            "10;w=31622401",
            "10;w=-1",
            "10;w=1.5",
            "10;w=+1",
            "+10;w=1",
            "10;w=",
            "10;w=99999999999999999999999",
            "10;w=1, 10;w=2",
        ] {
            assert_eq!(
                parse(&[("ratelimit-limit", "10"), ("ratelimit-policy", bad)]),
                (Some(10), None),
                "{bad}"
            );
        }
        // Only the first items are read: the policy of the count in the 17th is not.
        let many = format!("{}, 10;w=5", vec!["1;w=1"; 16].join(", "));
        let mut h = headers(&[
            ("ratelimit-remaining", "1"),
            ("ratelimit-reset", "1"),
            ("ratelimit-limit", "10"),
        ]);
        h.insert("ratelimit-policy", HeaderValue::from_str(&many).unwrap());
        let w = parse_rate_limit_headers(&h, || now, CAP).unwrap();
        assert_eq!((w.limit, w.window), (Some(10), None));
    }

    #[test]
    fn windows_beyond_the_cap_are_clamped_and_absurd_resets_do_not_panic() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for reset in ["86400", "999999999", "1e19", "1e20", "inf", "1e300"] {
            let w = parse_rate_limit_headers(
                &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", reset)]),
                || now,
                CAP,
            )
            .unwrap();
            assert_eq!(w.reset_in, CAP, "{reset}");
            assert!(w.clamped_from.unwrap() > CAP, "{reset}");
        }
        let w = parse_rate_limit_headers(
            &headers(&[("ratelimit", "remaining=0, reset=1e300")]),
            || now,
            CAP,
        )
        .unwrap();
        assert_eq!(w.reset_in, CAP);
        assert!(parse_rate_limit_headers(
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "NaN")]),
            || now,
            CAP
        )
        .is_none());
    }
}
