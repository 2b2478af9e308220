//! A DDSketch (Masson, Rim and Lee, VLDB 2019) for latencies: quantiles
//! within 1% relative error, and two sketches merge into exactly the sketch
//! of the combined values. That is what lets minute roll-ups become hours
//! and days without the percentiles drifting, which averaging p99s would do.
//!
//! Written here rather than taken from a crate because the encoding is
//! persisted in the store: it must stay readable across releases, and a
//! sparse text form of `index:count` pairs is about a tenth the size of a
//! serde dump of a dense store.

use std::fmt::Write;

/// Relative accuracy of every quantile.
pub const RELATIVE_ACCURACY: f64 = 0.01;
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
/// Values below this (in the sketch's unit, microseconds here) count as zero.
const MIN_VALUE: f64 = 1.0;
/// The encoding's version tag.
const VERSION: &str = "dd1";

/// Errors reading an encoded sketch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid latency sketch: {0}")]
pub struct SketchError(&'static str);

/// A mergeable quantile sketch of non-negative values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// Counts of bins `offset`, `offset + 1`, ...
    bins: Vec<u64>,
    offset: i32,
    zero: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

fn ln_gamma() -> f64 {
    GAMMA.ln()
}

fn index_of(v: f64) -> i32 {
    (v.ln() / ln_gamma()).ceil() as i32
}

/// The value a bin stands for: the point of least relative error in it.
fn value_of(index: i32) -> f64 {
    2.0 * GAMMA.powi(index) / (GAMMA + 1.0)
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch::default()
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the values added (exact).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// The smallest and largest values added (exact), when any were.
    pub fn min_max(&self) -> Option<(f64, f64)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// Adds one value.
    pub fn add(&mut self, v: f64) {
        let v = if v.is_finite() && v > 0.0 { v } else { 0.0 };
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
        if v < MIN_VALUE {
            self.zero += 1;
        } else {
            self.add_to_bin(index_of(v), 1);
        }
    }

    fn add_to_bin(&mut self, index: i32, n: u64) {
        if self.bins.is_empty() {
            self.offset = index;
            self.bins.push(n);
            return;
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.bins.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.bins.len() {
            self.bins.resize(at + 1, 0);
        }
        self.bins[at] += n;
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
        self.sum += other.sum;
        self.zero += other.zero;
        for (i, &n) in other.bins.iter().enumerate() {
            if n > 0 {
                self.add_to_bin(other.offset + i as i32, n);
            }
        }
    }

    /// The value at quantile `q` (0 ≤ q ≤ 1), within the relative accuracy,
    /// and never outside the exact minimum and maximum. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank < self.zero {
            return Some(self.min.max(0.0));
        }
        let mut seen = self.zero;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += n;
            if seen > rank {
                let v = value_of(self.offset + i as i32);
                return Some(v.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The persisted form: `dd1;count;sum;min;max;zero;i:c,i:c,...` with
    /// only the non-empty bins.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(32 + self.bins.len() * 6);
        let _ = write!(
            s,
            "{VERSION};{};{};{};{};{};",
            self.count, self.sum, self.min, self.max, self.zero
        );
        let mut first = true;
        for (i, &n) in self.bins.iter().enumerate() {
            if n > 0 {
                if !first {
                    s.push(',');
                }
                first = false;
                let _ = write!(s, "{}:{n}", self.offset + i as i32);
            }
        }
        s
    }

    /// Reads [`Sketch::encode`]'s form.
    pub fn decode(s: &str) -> Result<Sketch, SketchError> {
        let mut parts = s.split(';');
        if parts.next() != Some(VERSION) {
            return Err(SketchError("unknown version"));
        }
        let mut field = |what| parts.next().ok_or(SketchError(what));
        let count: u64 = field("count")?.parse().map_err(|_| SketchError("count"))?;
        let sum: f64 = field("sum")?.parse().map_err(|_| SketchError("sum"))?;
        let min: f64 = field("min")?.parse().map_err(|_| SketchError("min"))?;
        let max: f64 = field("max")?.parse().map_err(|_| SketchError("max"))?;
        let zero: u64 = field("zero")?.parse().map_err(|_| SketchError("zero"))?;
        let bins = field("bins")?;
        let mut sk = Sketch {
            count,
            sum,
            min,
            max,
            zero,
            ..Sketch::default()
        };
        let mut total = zero;
        for pair in bins.split(',').filter(|p| !p.is_empty()) {
            let (i, n) = pair.split_once(':').ok_or(SketchError("bin"))?;
            let i: i32 = i.parse().map_err(|_| SketchError("bin index"))?;
            let n: u64 = n.parse().map_err(|_| SketchError("bin count"))?;
            if !(-10_000..=10_000).contains(&i) {
                return Err(SketchError("bin index out of range"));
            }
            sk.add_to_bin(i, n);
            total = total.saturating_add(n);
        }
        if total != count {
            return Err(SketchError("bin counts do not add up to the count"));
        }
        Ok(sk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        values[(q * (values.len() - 1) as f64).floor() as usize]
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want * RELATIVE_ACCURACY * 1.0001
    }

    #[test]
    fn quantiles_are_within_the_relative_accuracy() {
        // A skewed, wide distribution: 50 µs to ~5 s.
        let mut values: Vec<f64> = (0..20_000u64)
            .map(|i| 50.0 * (1.0005f64).powi((i * 7919 % 20_000) as i32 / 2))
            .collect();
        let mut sk = Sketch::new();
        for v in &values {
            sk.add(*v);
        }
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&mut values, q);
            let got = sk.quantile(q).unwrap();
            assert!(close(got, want), "q={q}: got {got}, want {want}");
        }
    }

    #[test]
    fn merged_sketches_equal_the_sketch_of_all_values() {
        let mut a = Sketch::new();
        let mut b = Sketch::new();
        let mut all = Sketch::new();
        for i in 0..5_000u32 {
            let v = f64::from(i % 977) * 13.0;
            if i % 3 == 0 { &mut a } else { &mut b }.add(v);
            all.add(v);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.count(), all.count());
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(merged.quantile(q), all.quantile(q), "q={q}");
        }
        // Merging in the other order gives the same sketch.
        let mut other = b.clone();
        other.merge(&a);
        assert_eq!(other.encode(), merged.encode());
    }

    #[test]
    fn the_encoding_round_trips_and_rejects_garbage() {
        let mut sk = Sketch::new();
        for v in [0.0, 0.5, 3.0, 250.0, 250.0, 1e7] {
            sk.add(v);
        }
        let text = sk.encode();
        let back = Sketch::decode(&text).unwrap();
        assert_eq!(back, sk);
        assert_eq!(Sketch::decode(&Sketch::new().encode()).unwrap().count(), 0);
        for bad in [
            "",
            "dd9;1;1;1;1;0;1:1",
            "dd1;2;1;1;1;0;5:1",
            "dd1;1;1;1;1;0;x:1",
            "dd1;1;1;1;1;0;99999:1",
            "dd1;1;1",
        ] {
            assert!(Sketch::decode(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_empty_sketch_has_no_quantiles_and_one_value_is_exact() {
        assert_eq!(Sketch::new().quantile(0.5), None);
        let mut sk = Sketch::new();
        sk.add(1234.0);
        assert_eq!(sk.quantile(0.99), Some(1234.0));
    }
}
