//! Times as the index stores them (nanoseconds since the Unix epoch, signed) and as commands and
//! the status file print them. The one place that converts between `SystemTime` and those forms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as nanoseconds since the epoch (negative before it), saturating at `i64`'s range.
pub fn to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

/// The time `ns` nanoseconds after (or, negative, before) the epoch.
pub fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    to_ns(SystemTime::now())
}

/// A time (nanoseconds since the Unix epoch) as RFC 3339 text, to the second.
pub fn fmt_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    ::time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_round_trip_both_sides_of_the_epoch() {
        for ns in [0i64, 1, -1, 1_700_000_000_123_456_789, -86_400_000_000_000] {
            assert_eq!(to_ns(from_ns(ns)), ns);
        }
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(-1), "1969-12-31T23:59:59Z");
    }
}
