//! The in-process backend: counters in sharded maps. One decision locks the
//! shards of its keys in a fixed order, checks every limit, and writes only
//! when all of them pass, so several limits apply together atomically.
//!
//! Quota counts also remember what has not been written to the store yet;
//! the node flushes them ([`Local::take_quota_deltas`]) and loads them back
//! at start ([`Local::seed_quota`]), so a restart does not forget a month.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::algo::{self, Rule, Status, WindowState};
use crate::calendar;
use crate::{Check, Decision, Permit, Statuses};

/// A month's `(start, end)` in µs.
type Period = (i64, i64);

const SHARDS: usize = 64;
/// A shard is swept for idle entries at most this often, once it holds more
/// than [`SWEEP_MIN`] entries.
const SWEEP_EVERY_US: i64 = 10 * algo::SECOND_US;
const SWEEP_MIN: usize = 1024;
/// A month's count stays readable this long after the month ended.
const QUOTA_KEEP_US: i64 = 40 * 24 * 3600 * algo::SECOND_US;

#[derive(Debug, Clone, Copy)]
enum Cell {
    Gcra {
        tat: i64,
    },
    Window {
        state: WindowState,
        window_us: i64,
    },
    Quota {
        count: u64,
        unflushed: u64,
        start_us: i64,
        end_us: i64,
    },
    Concurrency {
        in_flight: u64,
    },
}

impl Cell {
    fn idle(&self, now: i64) -> bool {
        match *self {
            Cell::Gcra { tat } => tat <= now,
            Cell::Window { state, window_us } => state.index < now.div_euclid(window_us) - 1,
            Cell::Quota {
                unflushed, end_us, ..
            } => unflushed == 0 && end_us + QUOTA_KEEP_US < now,
            Cell::Concurrency { in_flight } => in_flight == 0,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Keyed with foldhash under a per-map random seed: SipHash cost about
    /// 190 instructions per decision on a typical key, foldhash a fifth of
    /// that, and its seed still keeps clients (whose addresses and ids make
    /// the keys) from aiming keys at one bucket.
    map: HashMap<String, Cell, foldhash::fast::RandomState>,
    swept_at: i64,
}

impl Shard {
    fn sweep(&mut self, now: i64) {
        if self.map.len() > SWEEP_MIN && now - self.swept_at > SWEEP_EVERY_US {
            self.map.retain(|_, c| !c.idle(now));
            self.swept_at = now;
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shards {
    shards: Box<[Mutex<Shard>]>,
}

impl Shards {
    /// The shard of `key`: FNV-1a, cheaper than the map's SipHash. A skewed
    /// spread only makes a shard busier; the map inside stays DoS-resistant.
    fn index(&self, key: &str) -> usize {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        ((h ^ (h >> 32)) as usize) % self.shards.len()
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns concurrency slots taken by a decision.
    pub(crate) fn release(&self, keys: &[String]) {
        for key in keys {
            let mut shard = self.lock(self.index(key));
            if let Some(Cell::Concurrency { in_flight }) = shard.map.get_mut(key) {
                *in_flight = in_flight.saturating_sub(1);
            }
        }
    }
}

/// Counters held in this process.
#[derive(Debug, Clone)]
pub struct Local {
    shards: Arc<Shards>,
}

impl Default for Local {
    fn default() -> Self {
        Local::new()
    }
}

/// The map key of a month's count.
fn month_key(key: &str, start_us: i64) -> String {
    format!("{key}@{}", start_us / 1000)
}

impl Local {
    pub fn new() -> Local {
        Local {
            shards: Arc::new(Shards {
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            }),
        }
    }

    /// Decides `checks` at `now_us`; writes nothing unless all pass.
    pub fn decide(&self, checks: &[Check], now_us: i64) -> Decision {
        if let [check] = checks
            && !matches!(check.rule, Rule::Month { .. })
        {
            return self.decide_one(check, now_us);
        }
        // Resolve each check's map key (a month's key names its period).
        let keys: Vec<(Cow<'_, str>, Option<Period>)> = checks
            .iter()
            .map(|c| match c.rule {
                Rule::Month { tz, .. } => {
                    let (start, end) = calendar::month_of(now_us, tz);
                    (Cow::Owned(month_key(&c.key, start)), Some((start, end)))
                }
                _ => (Cow::Borrowed(&*c.key), None),
            })
            .collect();
        let mut order: Vec<usize> = keys.iter().map(|(k, _)| self.shards.index(k)).collect();
        let shard_of = order.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, self.shards.lock(i))).collect();
        let guard = |guards: &mut Vec<(usize, MutexGuard<'_, Shard>)>, i: usize| -> usize {
            guards.iter().position(|(j, _)| *j == i).unwrap_or(0)
        };

        let mut statuses = Statuses::with_capacity(checks.len());
        let mut next = Vec::with_capacity(checks.len());
        for (n, check) in checks.iter().enumerate() {
            let g = guard(&mut guards, shard_of[n]);
            let cell = guards[g].1.map.get(&*keys[n].0).copied();
            let (status, cell) = step(check.rule, cell, now_us, keys[n].1);
            statuses.push(status);
            next.push(cell);
        }
        let allowed = statuses.iter().all(|s| s.allowed);
        let mut held = Vec::new();
        if allowed {
            for (n, cell) in next.into_iter().enumerate() {
                let g = guard(&mut guards, shard_of[n]);
                if matches!(cell, Cell::Concurrency { .. }) {
                    held.push(keys[n].0.to_string());
                }
                let map = &mut guards[g].1.map;
                match map.get_mut(&*keys[n].0) {
                    Some(c) => *c = cell,
                    None => {
                        map.insert(keys[n].0.to_string(), cell);
                    }
                }
            }
        }
        for (_, g) in guards.iter_mut() {
            g.sweep(now_us);
        }
        drop(guards);
        Decision {
            allowed,
            statuses,
            permit: (!held.is_empty()).then(|| Permit::local(self.shards.clone(), held)),
        }
    }

    /// [`Local::decide`] for one limit that is not a month: one lock, no
    /// bookkeeping across shards.
    fn decide_one(&self, check: &Check, now_us: i64) -> Decision {
        let key: &str = &check.key;
        let mut shard = self.shards.lock(self.shards.index(key));
        // One lookup for the read and the write; a new key is hashed again
        // only when it is inserted.
        let status = match shard.map.get_mut(key) {
            Some(c) => {
                let (status, cell) = step(check.rule, Some(*c), now_us, None);
                if status.allowed {
                    *c = cell;
                }
                status
            }
            None => {
                let (status, cell) = step(check.rule, None, now_us, None);
                if status.allowed {
                    shard.map.insert(key.to_owned(), cell);
                }
                status
            }
        };
        shard.sweep(now_us);
        drop(shard);
        let permit = (status.allowed && matches!(check.rule, Rule::Concurrency { .. }))
            .then(|| Permit::local(self.shards.clone(), vec![key.to_owned()]));
        Decision {
            allowed: status.allowed,
            statuses: smallvec::smallvec![status],
            permit,
        }
    }

    /// Sets a GCRA counter's theoretical arrival time (the synced backend
    /// brings in the cluster's count this way).
    pub(crate) fn set_gcra(&self, key: &str, tat: i64) {
        let mut shard = self.shards.lock(self.shards.index(key));
        match shard.map.get_mut(key) {
            Some(c) => *c = Cell::Gcra { tat },
            None => {
                shard.map.insert(key.to_owned(), Cell::Gcra { tat });
            }
        }
    }

    /// The count of `key`'s month containing `now_us`.
    pub fn quota_used(&self, key: &str, start_us: i64) -> u64 {
        let k = month_key(key, start_us);
        match self.shards.lock(self.shards.index(&k)).map.get(&k) {
            Some(Cell::Quota { count, .. }) => *count,
            _ => 0,
        }
    }

    /// Sets a month's count from the store, keeping any higher count this
    /// process already made.
    pub fn seed_quota(&self, key: &str, start_us: i64, end_us: i64, count: u64) {
        let k = month_key(key, start_us);
        let mut shard = self.shards.lock(self.shards.index(&k));
        let cell = shard.map.entry(k).or_insert(Cell::Quota {
            count: 0,
            unflushed: 0,
            start_us,
            end_us,
        });
        if let Cell::Quota {
            count: c,
            unflushed,
            ..
        } = cell
        {
            *c = (*c).max(count + *unflushed);
        }
    }

    /// Takes the quota increments not yet written to the store:
    /// `(key, period start in µs, delta)`.
    pub fn take_quota_deltas(&self) -> Vec<(String, i64, u64)> {
        let mut out = Vec::new();
        for i in 0..self.shards.shards.len() {
            let mut shard = self.shards.lock(i);
            for (k, cell) in shard.map.iter_mut() {
                if let Cell::Quota {
                    unflushed,
                    start_us,
                    ..
                } = cell
                    && *unflushed > 0
                {
                    let base = k.rsplit_once('@').map_or(k.as_str(), |(b, _)| b);
                    out.push((base.to_owned(), *start_us, *unflushed));
                    *unflushed = 0;
                }
            }
        }
        out
    }

    /// Gives back deltas that could not be written, to be retried.
    pub fn restore_quota_deltas(&self, deltas: &[(String, i64, u64)]) {
        for (key, start, delta) in deltas {
            let k = month_key(key, *start);
            let mut shard = self.shards.lock(self.shards.index(&k));
            if let Some(Cell::Quota { unflushed, .. }) = shard.map.get_mut(&k) {
                *unflushed += delta;
            }
        }
    }
}

fn step(rule: Rule, cell: Option<Cell>, now: i64, period: Option<(i64, i64)>) -> (Status, Cell) {
    match rule {
        Rule::Gcra { interval_us, burst } => {
            let tat = match cell {
                Some(Cell::Gcra { tat }) => tat,
                _ => 0,
            };
            let (s, tat) = algo::gcra(tat, now, interval_us, burst, 1);
            (s, Cell::Gcra { tat })
        }
        Rule::Window { window_us, limit } => {
            let state = match cell {
                Some(Cell::Window { state, .. }) => state,
                _ => WindowState::default(),
            };
            let (s, state) = algo::window(state, now, window_us, limit, 1);
            (s, Cell::Window { state, window_us })
        }
        Rule::Month { limit, .. } => {
            let (start_us, end_us) = period.unwrap_or((now, now));
            let (count, unflushed) = match cell {
                Some(Cell::Quota {
                    count, unflushed, ..
                }) => (count, unflushed),
                _ => (0, 0),
            };
            let (s, next) = algo::quota(count, now, end_us, limit, 1);
            let unflushed = unflushed + (next - count);
            (
                s,
                Cell::Quota {
                    count: next,
                    unflushed,
                    start_us,
                    end_us,
                },
            )
        }
        Rule::Concurrency { max } => {
            let in_flight = match cell {
                Some(Cell::Concurrency { in_flight }) => in_flight,
                _ => 0,
            };
            let s = algo::concurrency(in_flight, max);
            (
                s,
                Cell::Concurrency {
                    in_flight: in_flight + s.allowed as u64,
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;

    fn check(key: &str, rule: Rule) -> Check<'_> {
        Check {
            key: key.into(),
            rule,
        }
    }

    #[test]
    fn a_refusal_by_one_limit_consumes_none() {
        let l = Local::new();
        let now = 1_000_000 * algo::SECOND_US;
        let checks = [
            check(
                "a",
                Rule::Month {
                    limit: 100,
                    tz: Tz::UTC,
                },
            ),
            check("b", Rule::gcra(2, algo::SECOND_US, None)),
        ];
        assert!(l.decide(&checks, now).allowed);
        assert!(l.decide(&checks, now).allowed);
        let d = l.decide(&checks, now);
        assert!(!d.allowed);
        assert!(d.statuses[0].allowed && !d.statuses[1].allowed);
        let (start, _) = calendar::month_of(now, Tz::UTC);
        assert_eq!(l.quota_used("a", start), 2);
    }

    #[test]
    fn concurrency_slots_come_back_when_the_permit_drops() {
        let l = Local::new();
        let checks = [check("c", Rule::Concurrency { max: 2 })];
        let a = l.decide(&checks, 0);
        let b = l.decide(&checks, 0);
        assert!(a.allowed && b.allowed);
        assert!(!l.decide(&checks, 0).allowed);
        drop(a);
        assert!(l.decide(&checks, 0).allowed);
        drop(b);
    }

    #[test]
    fn quota_deltas_flush_once_and_seed_back() {
        let l = Local::new();
        let now = 1_700_000_000 * algo::SECOND_US;
        let checks = [check(
            "q",
            Rule::Month {
                limit: 10,
                tz: Tz::UTC,
            },
        )];
        for _ in 0..3 {
            assert!(l.decide(&checks, now).allowed);
        }
        let (start, end) = calendar::month_of(now, Tz::UTC);
        assert_eq!(l.take_quota_deltas(), vec![("q".to_owned(), start, 3)]);
        assert!(l.take_quota_deltas().is_empty());
        // A new process loads the stored count and goes on from it.
        let fresh = Local::new();
        fresh.seed_quota("q", start, end, 3);
        for _ in 0..7 {
            assert!(fresh.decide(&checks, now).allowed);
        }
        assert!(!fresh.decide(&checks, now).allowed);
        assert_eq!(fresh.take_quota_deltas(), vec![("q".to_owned(), start, 7)]);
    }

    #[test]
    fn a_month_boundary_starts_a_new_count() {
        let l = Local::new();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let end_of_nov = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00+01:00")
            .unwrap()
            .timestamp_micros();
        let checks = [check("q", Rule::Month { limit: 2, tz })];
        assert!(l.decide(&checks, end_of_nov - 2).allowed);
        assert!(l.decide(&checks, end_of_nov - 1).allowed);
        let d = l.decide(&checks, end_of_nov - 1);
        assert!(!d.allowed);
        assert_eq!(d.statuses[0].retry_after_us, 1);
        assert!(l.decide(&checks, end_of_nov).allowed);
    }

    #[test]
    fn concurrent_callers_never_exceed_the_limit() {
        let l = Local::new();
        let now = 5_000 * algo::SECOND_US;
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let checks = [check("k", Rule::gcra(100, 3600 * algo::SECOND_US, None))];
                    for _ in 0..50 {
                        if l.decide(&checks, now).allowed {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100);
    }
}
