//! Time series from stored roll-up rows: rows of any nodes and minutes are
//! merged into buckets of a minute, an hour or a day (UTC), and each bucket
//! reports its counts and latency percentiles from the merged sketches.

use crate::rollup::{MINUTE_MS, Rollup};
use crate::sketch::Sketch;

/// Most buckets one query may ask for.
pub const MAX_BUCKETS: i64 = 10_000;

/// The size of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Bucket {
    pub fn millis(self) -> i64 {
        match self {
            Bucket::Minute => MINUTE_MS,
            Bucket::Hour => 60 * MINUTE_MS,
            Bucket::Day => 24 * 60 * MINUTE_MS,
        }
    }

    pub fn parse(s: &str) -> Option<Bucket> {
        match s {
            "minute" | "1m" => Some(Bucket::Minute),
            "hour" | "1h" => Some(Bucket::Hour),
            "day" | "1d" => Some(Bucket::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }
}

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("`from` must be before `to`")]
    EmptyRange,
    #[error(
        "the range holds {0} buckets; at most {MAX_BUCKETS} fit in one answer (choose a larger bucket or a shorter range)"
    )]
    TooManyBuckets(i64),
}

/// One stored row, as the query reads it.
#[derive(Debug, Clone, Copy)]
pub struct RowView<'a> {
    /// Start of the row's minute, unix milliseconds.
    pub bucket_start: i64,
    pub requests: i64,
    pub errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// Encoded [`Sketch`]es.
    pub latency: &'a str,
    pub upstream: &'a str,
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Start of the bucket, unix milliseconds.
    pub start_ms: i64,
    pub rollup: Rollup,
}

/// The bucket-aligned range `[from, to)` covering the requested one.
pub fn align(from_ms: i64, to_ms: i64, bucket: Bucket) -> Result<(i64, i64), QueryError> {
    if from_ms >= to_ms {
        return Err(QueryError::EmptyRange);
    }
    let size = bucket.millis();
    let start = from_ms - from_ms.rem_euclid(size);
    let end = to_ms + (size - to_ms.rem_euclid(size)) % size;
    let n = (end - start) / size;
    if n > MAX_BUCKETS {
        return Err(QueryError::TooManyBuckets(n));
    }
    Ok((start, end))
}

/// Merges `rows` into every bucket of the aligned range, empty ones included
/// so a chart has no gaps. Rows outside the range, or whose sketches do not
/// decode, are skipped; the second count is returned.
pub fn series<'a>(
    from_ms: i64,
    to_ms: i64,
    bucket: Bucket,
    rows: impl IntoIterator<Item = RowView<'a>>,
) -> Result<(Vec<Point>, usize), QueryError> {
    let (start, end) = align(from_ms, to_ms, bucket)?;
    let size = bucket.millis();
    let mut points: Vec<Point> = (0..(end - start) / size)
        .map(|i| Point {
            start_ms: start + i * size,
            rollup: Rollup::default(),
        })
        .collect();
    let mut bad = 0;
    for row in rows {
        if row.bucket_start < start || row.bucket_start >= end {
            continue;
        }
        let (Ok(latency), Ok(upstream)) =
            (Sketch::decode(row.latency), Sketch::decode(row.upstream))
        else {
            bad += 1;
            continue;
        };
        let idx = ((row.bucket_start - start) / size) as usize;
        if let Some(p) = points.get_mut(idx) {
            p.rollup.merge(&Rollup {
                requests: row.requests.max(0) as u64,
                errors: row.errors.max(0) as u64,
                bytes_in: row.bytes_in.max(0) as u64,
                bytes_out: row.bytes_out.max(0) as u64,
                latency,
                upstream,
            });
        }
    }
    Ok((points, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(values: &[f64]) -> String {
        let mut s = Sketch::new();
        for v in values {
            s.add(*v);
        }
        s.encode()
    }

    #[test]
    fn rows_merge_into_hours_with_exact_counts_and_merged_percentiles() {
        let a = sketch(&[100.0; 90]);
        let b = sketch(&[10_000.0; 10]);
        let hour = 3_600_000;
        let rows = [
            RowView {
                bucket_start: hour + 60_000,
                requests: 90,
                errors: 0,
                bytes_in: 900,
                bytes_out: 9_000,
                latency: &a,
                upstream: &a,
            },
            RowView {
                bucket_start: hour + 59 * 60_000,
                requests: 10,
                errors: 10,
                bytes_in: 100,
                bytes_out: 1_000,
                latency: &b,
                upstream: &b,
            },
            // Outside the range: ignored.
            RowView {
                bucket_start: 5 * hour,
                requests: 7,
                errors: 0,
                bytes_in: 0,
                bytes_out: 0,
                latency: &a,
                upstream: &a,
            },
        ];
        let (points, bad) = series(hour + 1, 3 * hour - 1, Bucket::Hour, rows).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].start_ms, hour);
        let r = &points[0].rollup;
        assert_eq!(
            (r.requests, r.errors, r.bytes_in, r.bytes_out),
            (100, 10, 1000, 10_000)
        );
        let p50 = r.latency.quantile(0.5).unwrap();
        let p99 = r.latency.quantile(0.99).unwrap();
        assert!((p50 - 100.0).abs() <= 1.0, "{p50}");
        assert!((p99 - 10_000.0).abs() <= 100.0, "{p99}");
        assert_eq!(points[1].rollup.requests, 0);
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(align(10, 10, Bucket::Minute), Err(QueryError::EmptyRange));
        assert!(matches!(
            align(0, 365 * 86_400_000, Bucket::Minute),
            Err(QueryError::TooManyBuckets(_))
        ));
        assert_eq!(
            align(61_000, 119_000, Bucket::Minute),
            Ok((60_000, 120_000))
        );
        assert_eq!(
            align(60_000, 120_000, Bucket::Minute),
            Ok((60_000, 120_000))
        );
    }
}
