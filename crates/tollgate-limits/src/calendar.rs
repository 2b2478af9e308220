//! Calendar months in a time zone, as instants.

use chrono::{Datelike, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Parses an IANA zone name; `None` or an unknown name gives UTC.
pub fn zone(name: Option<&str>) -> Tz {
    name.and_then(|n| n.parse().ok()).unwrap_or(Tz::UTC)
}

/// The instant (µs since the epoch) at which the month `year`/`month`
/// starts in `tz`: local midnight of its first day, or the first instant
/// after it when a clock change skips midnight.
fn month_start(tz: Tz, year: i32, month: u32) -> i64 {
    let date = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    for hour in 0..24 {
        let naive = date.and_hms_opt(hour, 0, 0).unwrap_or_default();
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => return t.timestamp_micros(),
            LocalResult::Ambiguous(a, _) => return a.timestamp_micros(),
            LocalResult::None => continue,
        }
    }
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
        .timestamp_micros()
}

fn shift(year: i32, month: u32, by: i32) -> (i32, u32) {
    let m = (year * 12 + month as i32 - 1) + by;
    (m.div_euclid(12), m.rem_euclid(12) as u32 + 1)
}

/// Starts of the previous, current, next and following months around `now`
/// (µs), in `tz`. The Redis script picks its period from these by the
/// server's clock, so a node whose clock is off by less than a month still
/// counts in the right month in one round trip (and one further off in two).
pub fn month_bounds(now_us: i64, tz: Tz) -> [i64; 4] {
    let local = tz.timestamp_micros(now_us).single().unwrap_or_else(|| {
        Utc.timestamp_micros(now_us)
            .single()
            .unwrap_or_default()
            .with_timezone(&tz)
    });
    let (y, m) = (local.year(), local.month());
    [-1, 0, 1, 2].map(|by| {
        let (y, m) = shift(y, m, by);
        month_start(tz, y, m)
    })
}

/// The month containing `now_us`: `(start, end)` in µs.
pub fn month_of(now_us: i64, tz: Tz) -> (i64, i64) {
    let b = month_bounds(now_us, tz);
    if now_us < b[1] {
        (b[0], b[1])
    } else if now_us < b[2] {
        (b[1], b[2])
    } else {
        (b[2], b[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn utc_months() {
        let (s, e) = month_of(at("2026-12-02T14:00:00Z"), Tz::UTC);
        assert_eq!(s, at("2026-12-01T00:00:00Z"));
        assert_eq!(e, at("2027-01-01T00:00:00Z"));
        let b = month_bounds(at("2026-01-31T23:59:59Z"), Tz::UTC);
        assert_eq!(b[0], at("2025-12-01T00:00:00Z"));
        assert_eq!(b[3], at("2026-03-01T00:00:00Z"));
    }

    #[test]
    fn zoned_months_start_at_local_midnight() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // 03:00 UTC on 1 March is still February in New York.
        let (s, e) = month_of(at("2026-03-01T03:00:00Z"), tz);
        assert_eq!(s, at("2026-02-01T00:00:00-05:00"));
        assert_eq!(e, at("2026-03-01T00:00:00-05:00"));
        let tz: Tz = "Asia/Tokyo".parse().unwrap();
        let (s, _) = month_of(at("2026-02-28T15:00:00Z"), tz);
        assert_eq!(s, at("2026-03-01T00:00:00+09:00"));
    }

    #[test]
    fn every_month_starts_on_its_first_day_locally() {
        for name in [
            "America/Santiago",
            "Asia/Beirut",
            "Pacific/Apia",
            "Europe/London",
        ] {
            let tz: Tz = name.parse().unwrap();
            for month in 1..=12 {
                let local = tz.timestamp_micros(month_start(tz, 2026, month)).unwrap();
                assert_eq!((local.day(), local.month()), (1, month), "{name}");
            }
        }
    }

    #[test]
    fn zone_falls_back_to_utc() {
        assert_eq!(zone(None), Tz::UTC);
        assert_eq!(zone(Some("nowhere")), Tz::UTC);
        assert_eq!(zone(Some("Europe/Berlin")), chrono_tz::Europe::Berlin);
    }
}
