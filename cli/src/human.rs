//! Numbers and durations the way people read them: `1,000`, `16 min 40 s`, `250 ms`.

use std::time::Duration;

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` and the noun that fits it: `1 call`, `2 calls`, `1,000 calls`.
pub fn count_of(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// A duration in the two largest units that matter: `4 h 16 min`, `16 min 40 s`, `12.5 s`,
/// `250 ms`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 {
        format!("{} d {} h", secs / 86_400, (secs % 86_400) / 3_600)
    } else if secs >= 3_600 {
        format!("{} h {} min", secs / 3_600, (secs % 3_600) / 60)
    } else if secs >= 60 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else if secs >= 10 {
        format!("{secs} s")
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A window as a noun: `minute`, `hour`, `second`, `day`, else `2 s`, `20 min`.
pub fn window(w: Duration) -> String {
    match w.as_millis() {
        1_000 => "second".into(),
        60_000 => "minute".into(),
        3_600_000 => "hour".into(),
        86_400_000 => "day".into(),
        _ => duration(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(10_000_000), "10,000,000");
        assert_eq!(count_of(1, "call", "calls"), "1 call");
        assert_eq!(count_of(0, "call", "calls"), "0 calls");
        assert_eq!(count_of(1_001, "retry", "retries"), "1,001 retries");
        assert_eq!(duration(Duration::from_secs(1_000)), "16 min 40 s");
        assert_eq!(
            duration(Duration::from_secs(4 * 3600 + 16 * 60 + 5)),
            "4 h 16 min"
        );
        assert_eq!(duration(Duration::from_millis(12_500)), "12 s");
        assert_eq!(duration(Duration::from_millis(2_500)), "2.5 s");
        assert_eq!(duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(duration(Duration::from_secs(90_000)), "1 d 1 h");
        assert_eq!(window(Duration::from_secs(60)), "minute");
        assert_eq!(window(Duration::from_secs(2)), "2.0 s");
    }
}
