//! Per-minute roll-ups: events aggregated per (minute, organization, app,
//! route, status class), with request, error and byte counts and latency
//! sketches. Each node keeps the full state of its recent minutes, so a row
//! it writes replaces its earlier write of the same row: writes are
//! idempotent and a failed one is simply written again.

use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};

use crate::event::{Event, is_error, status_class};
use crate::sketch::Sketch;

/// Milliseconds in a roll-up bucket.
pub const MINUTE_MS: i64 = 60_000;
/// Minutes a node keeps a row after its last change, for late events
/// (requests that started in it and finished later).
const KEEP_MINUTES: i64 = 2;

/// The dimensions of a roll-up row. Absent ids are empty strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RollupKey {
    /// Start of the minute, unix milliseconds.
    pub minute_ms: i64,
    pub org: Box<str>,
    pub app: Box<str>,
    pub route: Box<str>,
    /// 1 to 5 for 1xx to 5xx, 0 for anything else.
    pub class: u8,
}

// Hashed field by field exactly like `KeyRef`, so either finds the row.
impl Hash for RollupKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        KeyRef {
            minute_ms: self.minute_ms,
            org: &self.org,
            app: &self.app,
            route: &self.route,
            class: self.class,
        }
        .hash(h)
    }
}

/// A borrowed [`RollupKey`], to find a row without allocating.
#[derive(Debug, Hash)]
struct KeyRef<'a> {
    minute_ms: i64,
    org: &'a str,
    app: &'a str,
    route: &'a str,
    class: u8,
}

impl Equivalent<RollupKey> for KeyRef<'_> {
    fn equivalent(&self, k: &RollupKey) -> bool {
        self.minute_ms == k.minute_ms
            && self.class == k.class
            && self.route == &*k.route
            && self.app == &*k.app
            && self.org == &*k.org
    }
}

/// What a roll-up row counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    pub requests: u64,
    /// Responses that count as errors ([`is_error`]).
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Total latency, microseconds.
    pub latency: Sketch,
    /// Upstream latency (to the response head), microseconds; only requests
    /// that reached an upstream.
    pub upstream: Sketch,
}

impl Rollup {
    /// Adds another row's counts (rows of other nodes or other minutes).
    pub fn merge(&mut self, other: &Rollup) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.latency.merge(&other.latency);
        self.upstream.merge(&other.upstream);
    }
}

#[derive(Debug)]
struct Slot {
    rollup: Rollup,
    dirty: bool,
}

/// The roll-up state of one node.
#[derive(Debug, Default)]
pub struct Aggregator {
    rows: HashMap<RollupKey, Slot>,
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator::default()
    }

    /// Counts one event.
    pub fn add(&mut self, ev: &Event) {
        let key = KeyRef {
            minute_ms: ev.at_ms - ev.at_ms.rem_euclid(MINUTE_MS),
            org: ev.who.org().unwrap_or(""),
            app: ev.who.app().unwrap_or(""),
            route: ev.route.as_deref().unwrap_or(""),
            class: status_class(ev.status),
        };
        let slot = match self.rows.get_mut(&key) {
            Some(slot) => slot,
            None => self
                .rows
                .entry(RollupKey {
                    minute_ms: key.minute_ms,
                    org: key.org.into(),
                    app: key.app.into(),
                    route: key.route.into(),
                    class: key.class,
                })
                .or_insert(Slot {
                    rollup: Rollup::default(),
                    dirty: false,
                }),
        };
        slot.dirty = true;
        let r = &mut slot.rollup;
        r.requests += 1;
        r.errors += u64::from(is_error(ev.status));
        r.bytes_in += ev.bytes_in;
        r.bytes_out += ev.bytes_out;
        r.latency.add(ev.total_us as f64);
        if let Some(us) = ev.upstream_us {
            r.upstream.add(us as f64);
        }
    }

    /// The rows changed since the last call, with their full state, in key
    /// order. Rows of minutes more than a couple of minutes before `now_ms`
    /// that did not change are forgotten.
    pub fn take_changed(&mut self, now_ms: i64) -> Vec<(RollupKey, Rollup)> {
        let horizon = now_ms - now_ms.rem_euclid(MINUTE_MS) - KEEP_MINUTES * MINUTE_MS;
        self.rows
            .retain(|k, slot| slot.dirty || k.minute_ms >= horizon);
        let mut out: Vec<_> = self
            .rows
            .iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(k, s)| {
                s.dirty = false;
                (k.clone(), s.rollup.clone())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Rows held in memory.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
