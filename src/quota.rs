//! Quotas: a [`Limit`] is *N requests per window W*; a [`Quota`] is several limits that all hold at
//! once (the Fabraix API enforces a per-minute and a per-hour limit on every key).
//!
//! The meaning this crate gives a limit is the strictest one a server may use: **never more than N
//! calls in any window of length W** (a sliding window). A client that keeps this is accepted by
//! fixed-window, sliding-log and token-bucket servers alike.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// The longest window a [`Limit`] may have: 366 days. Longer windows are almost certainly a typo.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// The shortest window a [`Limit`] may have: 1 millisecond.
pub const MIN_WINDOW: Duration = Duration::from_millis(1);

/// At most N requests in any window of length W.
///
/// Bounds: `1 <= N <= u32::MAX`, `1 ms <= W <= 366 days`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    count: NonZeroU32,
    window: Duration,
}

impl Limit {
    /// At most `count` requests in any window of length `window`.
    ///
    /// ```
    /// use fabraix_scheduler::Limit;
    /// use std::time::Duration;
    /// let limit = Limit::new(60, Duration::from_secs(60)).unwrap();
    /// assert_eq!(limit.count(), 60);
    /// assert_eq!(limit.window(), Duration::from_secs(60));
    /// assert!(Limit::new(0, Duration::from_secs(60)).is_err());
    /// ```
    pub fn new(count: u32, window: Duration) -> Result<Self, QuotaError> {
        let count = NonZeroU32::new(count).ok_or(QuotaError::ZeroCount)?;
        if window < MIN_WINDOW {
            return Err(QuotaError::WindowTooShort(window));
        }
        if window > MAX_WINDOW {
            return Err(QuotaError::WindowTooLong(window));
        }
        Ok(Self { count, window })
    }

    /// `count` requests per minute.
    ///
    /// ```
    /// use fabraix_scheduler::Limit;
    /// assert_eq!(Limit::per_minute(60).unwrap().window().as_secs(), 60);
    /// ```
    pub fn per_minute(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    ///
    /// ```
    /// use fabraix_scheduler::Limit;
    /// assert_eq!(Limit::per_hour(1_000).unwrap().window().as_secs(), 3_600);
    /// ```
    pub fn per_hour(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(3600))
    }

    /// N: the most requests allowed in one window.
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// W: the window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The long-run rate this limit allows, in requests per second (N / W).
    pub fn rate_per_second(&self) -> f64 {
        f64::from(self.count.get()) / self.window.as_secs_f64()
    }

    /// The same limit with its window divided by `factor` (for time-scaled demos and mock servers).
    /// The window is clamped to [`MIN_WINDOW`, `MAX_WINDOW`]; a non-finite or non-positive factor
    /// leaves the limit unchanged.
    pub fn time_scaled(&self, factor: f64) -> Self {
        if !(factor.is_finite() && factor > 0.0) {
            return *self;
        }
        let secs = (self.window.as_secs_f64() / factor)
            .clamp(MIN_WINDOW.as_secs_f64(), MAX_WINDOW.as_secs_f64());
        Self {
            count: self.count,
            window: Duration::from_secs_f64(secs),
        }
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Limit({self})")
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, format_window(self.window))
    }
}

/// Formats a window the way [`Quota`] strings spell it: `1h`, `1m`, `2s`, `250ms`.
pub(crate) fn format_window(window: Duration) -> String {
    let ms = window.as_millis();
    if !window.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}us", window.as_micros());
    }
    if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The published key tiers of the Fabraix API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// 60 per minute and 1,000 per hour.
    Development,
    /// 600 per minute and 10,000 per hour.
    Production,
}

impl Tier {
    /// The quota the Fabraix documentation publishes for this tier.
    pub fn quota(self) -> Quota {
        match self {
            Tier::Development => Quota::development(),
            Tier::Production => Quota::production(),
        }
    }
}

impl FromStr for Tier {
    type Err = QuotaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Tier::Development),
            "production" | "prod" => Ok(Tier::Production),
            other => Err(QuotaError::UnknownTier(other.to_string())),
        }
    }
}

/// Several [`Limit`]s that all hold at once. Kept sorted by window, shortest first; no two limits
/// share a window. May be empty: an unlimited quota (useful for tests and benchmarks).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Quota {
    limits: Vec<Limit>,
}

impl Quota {
    /// A quota from limits. Errors if two limits share a window.
    ///
    /// ```
    /// use fabraix_scheduler::{Limit, Quota};
    /// let q = Quota::new([Limit::per_minute(60).unwrap(), Limit::per_hour(1000).unwrap()]).unwrap();
    /// assert_eq!(q.to_string(), "60/1m,1000/1h");
    /// ```
    pub fn new(limits: impl IntoIterator<Item = Limit>) -> Result<Self, QuotaError> {
        let mut limits: Vec<Limit> = limits.into_iter().collect();
        limits.sort_by_key(|l| (l.window, l.count));
        for pair in limits.windows(2) {
            if pair[0].window == pair[1].window {
                return Err(QuotaError::DuplicateWindow(format_window(pair[0].window)));
            }
        }
        Ok(Self { limits })
    }

    /// No limit at all: every call may go at once.
    ///
    /// ```
    /// use fabraix_scheduler::Quota;
    /// assert!(Quota::unlimited().limits().is_empty());
    /// ```
    pub fn unlimited() -> Self {
        Self { limits: Vec::new() }
    }

    /// Development keys: 60 per minute and 1,000 per hour.
    ///
    /// ```
    /// use fabraix_scheduler::Quota;
    /// assert_eq!(Quota::development().to_string(), "60/1m,1000/1h");
    /// ```
    pub fn development() -> Self {
        Self::parse_known("60/1m,1000/1h")
    }

    /// Production keys: 600 per minute and 10,000 per hour.
    ///
    /// ```
    /// use fabraix_scheduler::Quota;
    /// assert_eq!(Quota::production().to_string(), "600/1m,10000/1h");
    /// ```
    pub fn production() -> Self {
        Self::parse_known("600/1m,10000/1h")
    }

    fn parse_known(spec: &str) -> Self {
        match spec.parse() {
            Ok(q) => q,
            Err(_) => Self::unlimited(), // unreachable: the presets are valid literals (tested)
        }
    }

    /// The limits, shortest window first.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The longest window of any limit (zero for an unlimited quota).
    pub fn longest_window(&self) -> Duration {
        self.limits.last().map_or(Duration::ZERO, |l| l.window)
    }

    /// The long-run rate the whole quota allows, in requests per second: the smallest N / W.
    /// `f64::INFINITY` for an unlimited quota.
    pub fn rate_per_second(&self) -> f64 {
        self.limits
            .iter()
            .map(Limit::rate_per_second)
            .fold(f64::INFINITY, f64::min)
    }

    /// Every window divided by `factor`: an hour-long quota passes in seconds (demos, mock servers).
    ///
    /// ```
    /// use fabraix_scheduler::Quota;
    /// assert_eq!(Quota::development().time_scaled(60.0).to_string(), "60/1s,1000/1m");
    /// ```
    pub fn time_scaled(&self, factor: f64) -> Self {
        let mut limits: Vec<Limit> = self.limits.iter().map(|l| l.time_scaled(factor)).collect();
        limits.dedup_by_key(|l| l.window);
        Self { limits }
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quota({self})")
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.limits.is_empty() {
            return f.write_str("unlimited");
        }
        for (i, l) in self.limits.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

impl From<Tier> for Quota {
    fn from(t: Tier) -> Self {
        t.quota()
    }
}

/// Parses `"60/1m,1000/1h"`: comma-separated `COUNT/WINDOW` items; a window is an optional whole
/// number (default 1) and a unit `ms`, `s`, `m`, `h` or `d` (`sec`, `min`, `hour`, `day` too).
/// `"unlimited"` is the empty quota.
impl FromStr for Quota {
    type Err = QuotaError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let trimmed = spec.trim();
        if trimmed.is_empty() {
            return Err(QuotaError::Empty);
        }
        if trimmed.eq_ignore_ascii_case("unlimited") {
            return Ok(Self::unlimited());
        }
        let mut limits = Vec::new();
        for (index, item) in trimmed.split(',').enumerate() {
            let position = index + 1;
            let item = item.trim();
            let at = |reason: String| QuotaError::Item {
                position,
                item: item.to_string(),
                reason,
                source: None,
            };
            if item.is_empty() {
                return Err(at(
                    "empty item (two commas in a row, or a trailing comma?)".into()
                ));
            }
            let (count, window) = item
                .split_once('/')
                .ok_or_else(|| at("expected COUNT/WINDOW, for example 60/1m".into()))?;
            let count = count.trim();
            let count: u32 = count.parse().map_err(|_| {
                if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) {
                    at(format!("count {count} is larger than {}", u32::MAX))
                } else {
                    at(format!("count {count:?} is not a whole number"))
                }
            })?;
            let window = parse_window(window.trim()).map_err(at)?;
            let limit = Limit::new(count, window).map_err(|e| QuotaError::Item {
                position,
                item: item.to_string(),
                reason: e.to_string(),
                source: Some(Box::new(e)),
            })?;
            limits.push(limit);
        }
        let mut seen: Vec<Duration> = Vec::new();
        for l in &limits {
            if seen.contains(&l.window) {
                return Err(QuotaError::DuplicateWindow(format_window(l.window)));
            }
            seen.push(l.window);
        }
        Self::new(limits)
    }
}

fn parse_window(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let amount: u64 = if number.is_empty() {
        1
    } else {
        number
            .parse()
            .map_err(|_| format!("window amount {number} is too large"))?
    };
    let unit_ms: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "" => {
            return Err(format!(
                "window {text:?} has no unit (use ms, s, m, h or d)"
            ))
        }
        other => {
            return Err(format!(
                "unknown window unit {other:?} (use ms, s, m, h or d)"
            ))
        }
    };
    if amount == 0 {
        return Err("window must be longer than zero".into());
    }
    let ms = amount
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("window {text:?} overflows"))?;
    Ok(Duration::from_millis(ms))
}

/// What is wrong with a quota, a limit or a tier name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// A limit of zero requests would never let a call go.
    #[error("a limit must allow at least 1 request per window (got 0)")]
    ZeroCount,
    /// The window is shorter than [`MIN_WINDOW`].
    #[error("window {0:?} is shorter than the minimum of 1ms")]
    WindowTooShort(Duration),
    /// The window is longer than [`MAX_WINDOW`].
    #[error("window {0:?} is longer than the maximum of 366 days")]
    WindowTooLong(Duration),
    /// The quota string was empty.
    #[error("quota is empty: expected COUNT/WINDOW items such as 60/1m,1000/1h")]
    Empty,
    /// One item of a quota string is wrong.
    #[error("quota item {position} ({item:?}): {reason}")]
    Item {
        /// 1-based position of the item in the comma-separated list.
        position: usize,
        /// The item's text.
        item: String,
        /// What is wrong with it.
        reason: String,
        /// The limit's own error, when the item parsed but is not a valid limit (a count of 0, a
        /// window out of bounds).
        source: Option<Box<QuotaError>>,
    },
    /// Two limits share one window.
    #[error("two limits share the window {0}: merge them into one")]
    DuplicateWindow(String),
    /// A tier name other than development or production.
    #[error("unknown tier {0:?} (use development or production, or give a custom quota)")]
    UnknownTier(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_print() {
        assert_eq!(Quota::development().limits().len(), 2);
        assert_eq!(Quota::production().limits()[0].count(), 600);
        assert_eq!(Quota::production().limits()[1].count(), 10_000);
        assert_eq!(
            "20/2s, 100/20s".parse::<Quota>().unwrap().to_string(),
            "20/2s,100/20s"
        );
        assert_eq!("5/min".parse::<Quota>().unwrap().to_string(), "5/1m");
        assert_eq!(
            "250/500ms".parse::<Quota>().unwrap().to_string(),
            "250/500ms"
        );
    }

    #[test]
    fn bad_strings_say_what_and_where() {
        let err = |s: &str| s.parse::<Quota>().unwrap_err().to_string();
        assert!(err("").contains("empty"));
        assert!(err("0/1m").contains("item 1") && err("0/1m").contains("at least 1"));
        assert!(err("60/1m,x/1h").contains("item 2"));
        assert!(err("60/1m,10/1y").contains("unknown window unit \"y\""));
        assert!(err("60/1m,10/1m").contains("share the window 1m"));
        assert!(err("99999999999/1m").contains("larger than"));
        assert!(err("1/99999999999999999999h").contains("too large"));
        assert!(err("1/9999999999999999h").contains("overflows"));
        assert!(err("60/0s").contains("longer than zero"));
        assert!(err("60/1m,").contains("item 2"));
        assert!(err("60").contains("COUNT/WINDOW"));
        assert!(err("60/5").contains("no unit"));
        assert!(err("1/400d").contains("366 days"));
    }

    #[test]
    fn an_invalid_limit_is_the_items_source() {
        use std::error::Error;
        let err = "60/1m,0/1h".parse::<Quota>().unwrap_err();
        let QuotaError::Item {
            source: Some(limit),
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(**limit, QuotaError::ZeroCount);
        let source = err.source().expect("the limit's error");
        assert_eq!(source.to_string(), QuotaError::ZeroCount.to_string());
        let err = "x/1m".parse::<Quota>().unwrap_err();
        assert!(
            err.source().is_none(),
            "a count that does not parse has none"
        );
    }

    #[test]
    fn tiers_parse() {
        assert_eq!("Production".parse::<Tier>().unwrap(), Tier::Production);
        assert!("enterprise".parse::<Tier>().is_err());
    }

    #[test]
    fn rate_is_the_tightest_limit() {
        let q = Quota::development();
        assert!((q.rate_per_second() - 1000.0 / 3600.0).abs() < 1e-12);
        assert!(Quota::unlimited().rate_per_second().is_infinite());
    }
}
