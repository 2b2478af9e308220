//! The Redis backend against a real server.
//!
//! - Parity: the script (`decide.lua`) answers exactly as `algo.rs` does in
//!   process, step for step, on the same clock.
//! - Exactness: several nodes sharing counters never admit more than the
//!   limit, whatever their clocks say.
//! - All-or-nothing, month boundaries in a zone, `Retry-After` honesty and
//!   concurrency slots, on Redis.
//! - Incidents: Redis going away, coming back, freezing, and a node that
//!   starts while it is down.
//!
//! The shared server is `TOLLGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`); each test counts under its own random
//! subjects. Incident tests run a private `redis-server` they can kill.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;
use common::*;
use tollgate_limits::algo::{Rule, SECOND_US, Status};
use tollgate_limits::local::Local;
use tollgate_limits::redis::Redis;
use tollgate_limits::{Check, Decision, Limiter, calendar, key};

const MINUTE: i64 = 60 * SECOND_US;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn check(key: &str, rule: Rule) -> Check<'static> {
    Check {
        key: key.to_owned().into(),
        rule,
    }
}

fn new_york() -> Tz {
    "America/New_York".parse().unwrap()
}

fn outcome(d: &Decision) -> (bool, Vec<Status>) {
    (d.allowed, d.statuses.to_vec())
}

// ---------------------------------------------------------------------------
// Parity: the same clock through `Local` and the script gives the same answers.
// ---------------------------------------------------------------------------

/// Drives one pseudo-random sequence of times through the in-process
/// backend and the script (on a fixed clock) and asserts the same decision
/// and the same status of every limit at every step. `next` picks the next
/// time from the current one and the in-process answer. Returns the
/// in-process backend, for the caller to compare what it counted.
async fn assert_parity(
    url: &str,
    checks: &[Check<'_>],
    start: i64,
    steps: usize,
    next: impl FnMut(&mut Rng, i64, &Decision) -> i64,
) -> Local {
    assert_parity_in_batches(url, checks, start, steps, 1, next).await
}

/// As [`assert_parity`], with the script's decisions queued `batch` at a
/// time, so that they share script calls (on a current-thread runtime all
/// of a group queue before the batching task runs): each must still be
/// answered as if it had been alone.
async fn assert_parity_in_batches(
    url: &str,
    checks: &[Check<'_>],
    start: i64,
    steps: usize,
    batch: usize,
    mut next: impl FnMut(&mut Rng, i64, &Decision) -> i64,
) -> Local {
    let (mut rng, seed) = Rng::seeded();
    let local = Local::new();
    let redis = Arc::new(redis(url).with_fixed_clock());
    let owned: Vec<Check<'static>> = checks.iter().map(|c| check(&c.key, c.rule)).collect();
    let mut now = start;
    let mut allowed = 0;
    let mut step = 0;
    while step < steps {
        let mut expected = Vec::new();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..batch.min(steps - step) {
            let l = local.decide(checks, now);
            let (redis, owned) = (redis.clone(), owned.clone());
            set.spawn(async move { (i, now, redis.decide(&owned, now).await.unwrap()) });
            allowed += l.allowed as usize;
            let t = next(&mut rng, now, &l);
            assert!(t >= now, "times only move forward");
            expected.push(l);
            now = t;
        }
        while let Some(r) = set.join_next().await {
            let (i, at, r) = r.unwrap();
            assert_eq!(
                outcome(&r),
                outcome(&expected[i]),
                "step {} at {at} µs (offset {} µs): Redis (left) and in process (right) disagree; \
                 replay with TOLLGATE_TEST_SEED={seed}",
                step + i,
                at - start
            );
        }
        step += expected.len();
    }
    // The sequence must have exercised both answers to prove anything.
    assert!(
        allowed >= steps / 10 && allowed <= steps * 9 / 10,
        "{allowed} of {steps} allowed: the sequence does not exercise both answers (seed {seed})"
    );
    local
}

/// The next time for a rate sequence: `unit` is the time one request
/// needs (GCRA interval, window / limit), `span` the time the whole
/// allowance needs (GCRA interval × burst, the window). Repeats, small and
/// large gaps, gaps spanning several windows, window edges, and the exact
/// instants (and the instants just before) that a refusal named.
fn rate_gap(rng: &mut Rng, now: i64, d: &Decision, unit: i64, span: i64) -> i64 {
    let retry = d
        .statuses
        .iter()
        .map(|s| s.retry_after_us)
        .max()
        .unwrap_or(0);
    let k = (span / unit).max(1) as u64;
    if rng.below(8 * k) == 0 {
        // Idle for windows on end: the allowance is whole again.
        return now + rng.range(span, 3 * span);
    }
    match rng.below(100) {
        0..=34 => now,
        35..=54 => now + rng.range(1, (unit / 4).max(2)),
        55..=69 => now + rng.range(0, 2 * unit),
        70..=77 if retry > 0 => now + retry,
        78..=82 if retry > 0 => now + retry - 1,
        83..=92 => {
            // The next window edge (or just before it), when near.
            let edge = (now.div_euclid(span) + 1) * span;
            if edge - now <= 2 * unit {
                edge - rng.range(0, 2)
            } else {
                now + rng.range(0, unit)
            }
        }
        _ => now + rng.range(1, 1000),
    }
}

#[tokio::test]
async fn parity_gcra() {
    let url = require_redis!();
    // The rates are slow enough (seconds or more between requests) that the
    // real time the keys' TTLs run on never matters during the test.
    for rule in [
        Rule::gcra(10, HOUR, Some(4)),
        Rule::gcra(7, 7 * MINUTE + 3, None),
        Rule::Gcra {
            interval_us: 12_345_678,
            burst: 1,
        },
        Rule::gcra(1000, DAY, Some(25)),
    ] {
        let Rule::Gcra { interval_us, burst } = rule else {
            unreachable!()
        };
        let checks = [check(&key(&subject("parity-gcra"), "rate"), rule)];
        let start = wall_us() + rand_offset();
        assert_parity(&url, &checks, start, 300, |rng, now, d| {
            rate_gap(rng, now, d, interval_us, interval_us * burst as i64)
        })
        .await;
    }
}

#[tokio::test]
async fn parity_sliding_window() {
    let url = require_redis!();
    for (window_us, limit) in [
        (10 * MINUTE, 7),
        // An odd width, so the weighting of the previous window rounds.
        (600_000_007, 13),
        (MINUTE + 1, 1),
        (HOUR, 100),
    ] {
        let rule = Rule::Window { window_us, limit };
        let checks = [check(&key(&subject("parity-window"), "rate"), rule)];
        let start = wall_us() + rand_offset();
        assert_parity(&url, &checks, start, 300, |rng, now, d| {
            rate_gap(rng, now, d, window_us / limit as i64, window_us)
        })
        .await;
    }
}

/// The next time for a month-quota sequence: mostly small steps, and
/// regularly the month's last microsecond, its boundary, or days ahead.
fn month_gap(rng: &mut Rng, now: i64, tz: Tz) -> i64 {
    let (_, end) = calendar::month_of(now, tz);
    match rng.below(100) {
        0..=44 => now,
        45..=74 => now + rng.range(1, 6 * HOUR),
        75..=78 => (end - 1).max(now),
        79..=80 => end,
        81 => end + 1,
        82..=84 => now + rng.range(DAY, 20 * DAY),
        _ => now + rng.range(1, HOUR),
    }
}

#[tokio::test]
async fn parity_month_quota() {
    let url = require_redis!();
    // Zones with DST, a half-hour offset, UTC+13 and UTC itself.
    for name in ["America/New_York", "Asia/Kolkata", "Pacific/Apia", "UTC"] {
        let tz: Tz = name.parse().unwrap();
        let quota_key = key(&subject("parity-month"), "month");
        let checks = [check(&quota_key, Rule::Month { limit: 8, tz })];
        // From now on: the script keeps a month's count until 40 days after
        // the month ends (by the server's clock), so the months visited
        // must not be long over in real time.
        let start = wall_us();
        let mut seen = Vec::new();
        let local = assert_parity(&url, &checks, start, 400, |rng, now, _| {
            let t = month_gap(rng, now, tz);
            seen.push(calendar::month_of(t, tz).0);
            t
        })
        .await;
        seen.dedup();
        assert!(
            seen.len() >= 3,
            "{name}: only {} months visited",
            seen.len()
        );
        // Both backends counted the same in every month visited.
        let redis = redis(&url);
        for month in seen {
            assert_eq!(
                redis.quota_used(&quota_key, month).await.unwrap(),
                local.quota_used(&quota_key, month),
                "{name}: the month starting at {month}"
            );
        }
    }
}

/// A monthly quota of `month_limit` in `tz`, a GCRA rate of 6 per 10 minutes
/// (burst 3) and a sliding window of 4 per 5 minutes, all on `subject`.
fn combined_checks(subject: &str, month_limit: u64, tz: Tz) -> [Check<'static>; 3] {
    [
        check(
            &key(subject, "month"),
            Rule::Month {
                limit: month_limit,
                tz,
            },
        ),
        check(&key(subject, "gcra"), Rule::gcra(6, 10 * MINUTE, Some(3))),
        check(
            &key(subject, "window"),
            Rule::Window {
                window_us: 5 * MINUTE,
                limit: 4,
            },
        ),
    ]
}

#[tokio::test]
async fn parity_of_combined_decisions() {
    let url = require_redis!();
    // Three limits at once: a decision passes only when all three do, and
    // a refusal by one must leave the others as they were, on both sides.
    let tz = new_york();
    let checks = combined_checks(&subject("parity-combined"), 40, tz);
    let start = wall_us() + rand_offset();
    assert_parity(&url, &checks, start, 500, |rng, now, d| {
        if rng.chance(5) {
            month_gap(rng, now, tz)
        } else {
            rate_gap(rng, now, d, MINUTE, 10 * MINUTE)
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn parity_of_combined_decisions_in_batches() {
    let url = require_redis!();
    // Decisions on the same counters share script calls: the script keeps
    // each counter while the batch uses it and writes it once. Each answer
    // and the final counts must be those of one call per decision.
    let tz = new_york();
    for batch in [2, 7, 32] {
        let checks = combined_checks(&subject("parity-batched"), 60, tz);
        let month_key = checks[0].key.to_string();
        let mut months = Vec::new();
        let local =
            assert_parity_in_batches(&url, &checks, wall_us(), 400, batch, |rng, now, d| {
                let t = if rng.chance(3) {
                    month_gap(rng, now, tz)
                } else {
                    rate_gap(rng, now, d, MINUTE, 10 * MINUTE)
                };
                months.push(calendar::month_of(t, tz).0);
                t
            })
            .await;
        months.dedup();
        let r = redis(&url);
        for m in months {
            assert_eq!(
                r.quota_used(&month_key, m).await.unwrap(),
                local.quota_used(&month_key, m),
                "batches of {batch}: the month starting at {m}"
            );
        }
    }
}

/// A random offset of up to a day, in whole and odd microseconds.
fn rand_offset() -> i64 {
    Rng::seeded().0.range(0, DAY)
}

// ---------------------------------------------------------------------------
// Exactness: several nodes, many tasks, never more than the limit.
// ---------------------------------------------------------------------------

/// `tasks` concurrent tasks, alternating between `nodes`, each making
/// `attempts` decisions with its node's clock offset by `skews[node]`.
/// Returns how many were admitted. Every decision must be answered.
async fn hammer(
    nodes: &[Arc<Limiter>],
    skews: &[i64],
    checks: &[Check<'static>],
    tasks: usize,
    attempts: usize,
) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(tasks));
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let node = nodes[t % nodes.len()].clone();
        let skew = skews[t % skews.len()];
        let checks = checks.to_vec();
        let admitted = admitted.clone();
        let start = start.clone();
        set.spawn(async move {
            start.wait().await;
            for _ in 0..attempts {
                let d = node
                    .decide(&checks, wall_us() + skew)
                    .await
                    .expect("Redis answers every decision");
                if d.allowed {
                    admitted.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert!(
                        d.statuses
                            .iter()
                            .any(|s| !s.allowed && s.retry_after_us > 0)
                    );
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

fn two_nodes(url: &str) -> Vec<Arc<Limiter>> {
    vec![Arc::new(node(url)), Arc::new(node(url))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_admit_exactly_the_gcra_limit() {
    let url = require_redis!();
    let nodes = two_nodes(&url);
    // 50 per hour: one more would need 72 s to pass.
    let checks = [check(
        &key(&subject("exact-gcra"), "rate"),
        Rule::gcra(50, HOUR, None),
    )];
    assert_eq!(hammer(&nodes, &[0], &checks, 16, 12).await, 50);
    // Both nodes took part: 8 tasks × 12 decisions each, all answered.
    for n in &nodes {
        let c = n.counters();
        let decided = c.allowed.load(Ordering::Relaxed) + c.refused.load(Ordering::Relaxed);
        assert_eq!(decided, 96);
        assert_eq!(c.backend_errors.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_admit_exactly_the_monthly_quota() {
    let url = require_redis!();
    let nodes = two_nodes(&url);
    let tz = new_york();
    let quota_key = key(&subject("exact-month"), "month");
    let checks = [check(&quota_key, Rule::Month { limit: 37, tz })];
    assert_eq!(hammer(&nodes, &[0], &checks, 16, 8).await, 37);
    let (start, _) = calendar::month_of(wall_us(), tz);
    assert_eq!(nodes[0].quota_used(&quota_key, start).await.unwrap(), 37);
    assert_eq!(nodes[1].quota_used(&quota_key, start).await.unwrap(), 37);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_decisions_of_a_fresh_node_are_all_answered() {
    // A node's first requests arrive together: they must share one
    // connection attempt, not fail ("connecting") and trip the breaker.
    let url = require_redis!();
    let fresh = Arc::new(node(&url));
    let checks = [check(
        &key(&subject("fresh"), "rate"),
        Rule::gcra(1000, HOUR, None),
    )];
    assert_eq!(
        hammer(std::slice::from_ref(&fresh), &[0], &checks, 16, 1).await,
        16
    );
    assert!(fresh.is_up());
    assert_eq!(fresh.counters().backend_errors.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------
// Clock skew: the server's clock decides, so skewed nodes count as one.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skewed_node_clocks_do_not_admit_a_request_twice_gcra() {
    let url = require_redis!();
    let nodes = two_nodes(&url);
    let checks = [check(
        &key(&subject("skew-gcra"), "rate"),
        Rule::gcra(50, HOUR, None),
    )];
    assert_eq!(
        hammer(&nodes, &[2 * HOUR, -2 * HOUR], &checks, 16, 12).await,
        50
    );
}

/// Two nodes whose clocks are off by `skews` share one monthly quota of 23:
/// exactly 23 pass, all counted in the server's current month.
async fn assert_skewed_quota_is_exact(url: &str, skews: [i64; 2]) {
    let nodes = two_nodes(url);
    let tz = new_york();
    let quota_key = key(&subject("skew-month"), "month");
    let checks = [check(&quota_key, Rule::Month { limit: 23, tz })];
    let admitted = hammer(&nodes, &skews, &checks, 16, 6).await;
    assert_eq!(admitted, 23, "node clocks off by {skews:?} µs");
    let (start, _) = calendar::month_of(wall_us(), tz);
    assert_eq!(nodes[0].quota_used(&quota_key, start).await.unwrap(), 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skewed_node_clocks_do_not_admit_a_request_twice_month() {
    let url = require_redis!();
    assert_skewed_quota_is_exact(&url, [2 * HOUR, -2 * HOUR]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_in_the_next_month_counts_in_the_servers_month() {
    let url = require_redis!();
    // 40 days ahead: the next month, or (late in a month) the one after.
    assert_skewed_quota_is_exact(&url, [0, 40 * DAY]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_clocks_months_off_still_count_in_the_servers_month() {
    let url = require_redis!();
    // More than two months either way: neither node's idea of the months
    // around "now" contains the server's month.
    assert_skewed_quota_is_exact(&url, [70 * DAY, -70 * DAY]).await;
}

// ---------------------------------------------------------------------------
// All-or-nothing on Redis.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_refusal_by_one_limit_consumes_none_on_redis() {
    let url = require_redis!();
    let limiter = node(&url);
    let tz = new_york();
    let now = wall_us();
    let (month, _) = calendar::month_of(now, tz);

    // The GCRA refuses: the quota is not counted.
    let s = subject("all-or-nothing");
    let checks = [
        check(&key(&s, "month"), Rule::Month { limit: 100, tz }),
        check(&key(&s, "rate"), Rule::gcra(2, HOUR, None)),
    ];
    for _ in 0..2 {
        assert!(limiter.decide(&checks, now).await.unwrap().allowed);
    }
    for _ in 0..3 {
        let d = limiter.decide(&checks, now).await.unwrap();
        assert!(!d.allowed);
        assert!(d.statuses[0].allowed, "the quota alone would pass");
        assert!(!d.statuses[1].allowed);
        assert_eq!(d.statuses[0].remaining, 97);
    }
    assert_eq!(
        limiter.quota_used(&key(&s, "month"), month).await.unwrap(),
        2
    );

    // The quota refuses: the GCRA is not consumed.
    let s = subject("all-or-nothing");
    let checks = [
        check(&key(&s, "month"), Rule::Month { limit: 1, tz }),
        check(&key(&s, "rate"), Rule::gcra(5, HOUR, None)),
    ];
    let first = limiter.decide(&checks, now).await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.statuses[1].remaining, 4);
    for _ in 0..3 {
        let d = limiter.decide(&checks, now).await.unwrap();
        assert!(!d.allowed && !d.statuses[0].allowed && d.statuses[1].allowed);
    }
    let rate_only = limiter.decide(&checks[1..], now).await.unwrap();
    assert!(rate_only.allowed);
    assert_eq!(
        rate_only.statuses[0].remaining, 3,
        "one earlier request counted, not four"
    );

    // A refused decision takes no concurrency slot.
    let s = subject("all-or-nothing");
    let rate = check(&key(&s, "rate"), Rule::gcra(1, HOUR, None));
    let slot = check(&key(&s, "inflight"), Rule::Concurrency { max: 1 });
    assert!(
        limiter
            .decide(std::slice::from_ref(&rate), now)
            .await
            .unwrap()
            .allowed
    );
    let d = limiter.decide(&[slot.clone(), rate], now).await.unwrap();
    assert!(!d.allowed && d.statuses[0].allowed && d.permit.is_none());
    let held = limiter.decide(&[slot], now).await.unwrap();
    assert!(
        held.allowed && held.permit.is_some(),
        "the slot is still free"
    );
}

// ---------------------------------------------------------------------------
// Month boundaries and Retry-After, on a fixed clock.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_month_turns_at_local_midnight_on_redis() {
    let url = require_redis!();
    let limiter = fixed_clock_node(&url);
    let tz = new_york();
    // The next month's start in New York (05:00 or 04:00 UTC).
    let bounds = calendar::month_bounds(wall_us(), tz);
    let boundary = bounds[2];
    let local = tz.timestamp_micros(boundary).unwrap();
    assert_eq!((local.day(), local.hour(), local.minute()), (1, 0, 0));
    assert_ne!(boundary % DAY, 0, "not a UTC midnight");
    let next_end = bounds[3];

    let quota_key = key(&subject("boundary"), "month");
    let checks = [check(&quota_key, Rule::Month { limit: 3, tz })];
    let decide = |at: i64| {
        let limiter = &limiter;
        let checks = &checks;
        async move { limiter.decide(checks, at).await.unwrap() }
    };
    assert!(decide(boundary - 10 * DAY).await.allowed);
    assert!(decide(boundary - 10 * DAY).await.allowed);
    let last = decide(boundary - 1).await;
    assert!(last.allowed);
    assert_eq!(
        last.statuses[0],
        Status {
            allowed: true,
            remaining: 0,
            reset_us: 1,
            retry_after_us: 0
        }
    );
    // Exhausted 1 µs before the boundary: the wait is exactly that 1 µs.
    let refused = decide(boundary - 1).await;
    assert!(!refused.allowed);
    assert_eq!(
        refused.statuses[0],
        Status {
            allowed: false,
            remaining: 0,
            reset_us: 1,
            retry_after_us: 1
        }
    );
    // At the boundary instant the new month admits.
    let fresh = decide(boundary).await;
    assert!(fresh.allowed);
    assert_eq!(
        fresh.statuses[0],
        Status {
            allowed: true,
            remaining: 2,
            reset_us: next_end - boundary,
            retry_after_us: 0
        }
    );
    assert_eq!(limiter.quota_used(&quota_key, bounds[1]).await.unwrap(), 3);
    assert_eq!(limiter.quota_used(&quota_key, boundary).await.unwrap(), 1);
}

#[tokio::test]
async fn the_month_quota_names_the_exact_time_left() {
    let url = require_redis!();
    let limiter = fixed_clock_node(&url);
    let tz = new_york();
    let boundary = calendar::month_bounds(wall_us(), tz)[2];
    let checks = [check(
        &key(&subject("time-left"), "month"),
        Rule::Month { limit: 1, tz },
    )];
    assert!(
        limiter
            .decide(&checks, boundary - 20 * DAY)
            .await
            .unwrap()
            .allowed
    );
    for left in [10 * DAY + 17, HOUR, 1_234_567, 2, 1] {
        let d = limiter.decide(&checks, boundary - left).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.statuses[0].retry_after_us, left);
        assert_eq!(d.statuses[0].reset_us, left);
    }
    assert!(limiter.decide(&checks, boundary).await.unwrap().allowed);
}

/// Fills the limit at `now`, then checks the refusal's `retry_after_us`
/// against the truth: refused 1 µs before, admitted at it. Returns the
/// instant it passed.
async fn assert_retry_after_is_honest(redis: &Redis, checks: &[Check<'_>], now: i64) -> i64 {
    let mut d = redis.decide(checks, now).await.unwrap();
    let mut n = 0;
    while d.allowed {
        n += 1;
        assert!(n < 10_000, "never refused");
        d = redis.decide(checks, now).await.unwrap();
    }
    let retry = d.statuses[0].retry_after_us;
    assert!(retry > 0);
    let before = redis.decide(checks, now + retry - 1).await.unwrap();
    assert!(
        !before.allowed,
        "passed 1 µs before the promised {retry} µs"
    );
    let at = redis.decide(checks, now + retry).await.unwrap();
    assert!(at.allowed, "refused at the promised {retry} µs");
    now + retry
}

#[tokio::test]
async fn retry_after_is_never_early_gcra() {
    let url = require_redis!();
    let redis = redis(&url).with_fixed_clock();
    let (mut rng, seed) = Rng::seeded();
    for rule in [
        Rule::gcra(10, MINUTE, None),
        Rule::gcra(3, 7 * MINUTE + 1, Some(1)),
        Rule::gcra(100, HOUR, Some(7)),
    ] {
        let checks = [check(&key(&subject("retry-gcra"), "rate"), rule)];
        let mut now = wall_us();
        for i in 0..40 {
            let passed = assert_retry_after_is_honest(&redis, &checks, now).await;
            assert!(passed > now, "step {i}, seed {seed}");
            now = passed + rng.range(0, 3 * MINUTE);
        }
    }
}

#[tokio::test]
async fn retry_after_is_never_early_sliding_window() {
    let url = require_redis!();
    let redis = redis(&url).with_fixed_clock();

    // A state where the closed form of the wait rounds up in doubles
    // (1 - 2/3): 3 requests in one minute, 2 at the start of the next.
    let w = MINUTE;
    let checks = [check(
        &key(&subject("retry-window"), "rate"),
        Rule::Window {
            window_us: w,
            limit: 5,
        },
    )];
    let next_window = (wall_us() / w + 2) * w;
    for at in [
        next_window - w,
        next_window - w,
        next_window - w,
        next_window,
        next_window,
    ] {
        assert!(redis.decide(&checks, at).await.unwrap().allowed);
    }
    let refused = redis.decide(&checks, next_window).await.unwrap();
    assert_eq!(refused.statuses[0].retry_after_us, 20 * SECOND_US);
    assert_eq!(
        assert_retry_after_is_honest(&redis, &checks, next_window).await,
        next_window + 20 * SECOND_US
    );

    let (mut rng, seed) = Rng::seeded();
    for (window_us, limit) in [(MINUTE, 5), (10 * MINUTE + 7, 9), (HOUR, 1)] {
        let checks = [check(
            &key(&subject("retry-window"), "rate"),
            Rule::Window { window_us, limit },
        )];
        let mut now = wall_us();
        for i in 0..40 {
            let passed = assert_retry_after_is_honest(&redis, &checks, now).await;
            assert!(passed > now, "step {i}, seed {seed}");
            // Sometimes stay in the window, sometimes move into the next.
            now = passed + rng.range(0, 2 * window_us);
        }
    }
}

// ---------------------------------------------------------------------------
// Concurrency slots on Redis.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_are_shared_and_come_back_on_redis() {
    let url = require_redis!();
    let (a, b) = (node(&url), node(&url));
    let checks = [check(
        &key(&subject("inflight"), "inflight"),
        Rule::Concurrency { max: 3 },
    )];
    let now = wall_us();
    let mut held = Vec::new();
    for (i, n) in [&a, &b, &a].into_iter().enumerate() {
        let d = n.decide(&checks, now).await.unwrap();
        assert!(d.allowed && d.permit.is_some());
        assert_eq!(d.statuses[0].remaining, 2 - i as u64);
        held.push(d);
    }
    for n in [&a, &b] {
        let d = n.decide(&checks, now).await.unwrap();
        assert!(!d.allowed && d.permit.is_none());
        assert_eq!(d.statuses[0].retry_after_us, SECOND_US);
    }
    // Giving a slot back is sent in the background; wait (bounded) until
    // another node sees it. Refused attempts take nothing.
    drop(held.remove(1));
    let deadline = Instant::now() + Duration::from_secs(2);
    let again = loop {
        let d = a.decide(&checks, wall_us()).await.unwrap();
        if d.allowed {
            break d;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(again.permit.is_some());
    assert!(!b.decide(&checks, wall_us()).await.unwrap().allowed);
    drop(again);
    drop(held);
}

// ---------------------------------------------------------------------------
// Batching: decisions that queue together share one script call, and each
// is still decided on its own.
// ---------------------------------------------------------------------------

/// Calls of `EVALSHA` the server has counted so far.
async fn evalsha_calls(url: &str) -> u64 {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

// A current-thread runtime: every task queues its decision before the
// batching task runs, so the number of script calls is exact.
#[tokio::test(flavor = "current_thread")]
async fn decisions_queued_together_share_script_calls() {
    let Some(mut server) = RedisServer::on_free_port() else {
        return;
    };
    server.start();
    let url = server.url();
    let limiter = Arc::new(node(&url));
    // Four consumers with 50 requests an hour each; 64 attempts each.
    let keys: Vec<String> = (0..4)
        .map(|i| key(&subject(&format!("batch{i}")), "rate"))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for n in 0..256 {
        let limiter = limiter.clone();
        let checks = [check(&keys[n % 4], Rule::gcra(50, HOUR, None))];
        set.spawn(async move { limiter.decide(&checks, wall_us()).await.unwrap().allowed });
    }
    let mut admitted = 0;
    while let Some(r) = set.join_next().await {
        admitted += u64::from(r.unwrap());
    }
    assert_eq!(admitted, 4 * 50);
    // 256 decisions in batches of at most 128: two calls (a third when the
    // first found no script loaded and was sent again).
    let calls = evalsha_calls(&url).await;
    assert!(
        (2..=4).contains(&calls),
        "256 queued decisions took {calls} script calls"
    );
    for k in &keys {
        let d = limiter
            .decide(&[check(k, Rule::gcra(50, HOUR, None))], wall_us())
            .await
            .unwrap();
        assert!(!d.allowed, "{k} admitted beyond its limit");
    }
}

// One worker thread, as a gateway under load runs: the first decision of a
// burst wakes the idle batching task, which runs right after that request
// task (tokio runs a task woken by another next). It yields its turn
// before sending, for as long as that brings more, so the burst's other
// decisions, ready to run, join its batch instead of leaving in small ones
// (3 or 4 calls for this burst without the yield, 2 with a single one).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_burst_of_ready_decisions_leaves_in_one_batch() {
    let Some(mut server) = RedisServer::on_free_port() else {
        return;
    };
    server.start();
    let url = server.url();
    let limiter = Arc::new(node(&url));
    let k = key(&subject("burst"), "rate");
    let rule = Rule::gcra(1000, HOUR, None);
    // Warm up: the script loaded, both batching tasks idle on the queue.
    for _ in 0..4 {
        assert!(
            limiter
                .decide(&[check(&k, rule)], wall_us())
                .await
                .unwrap()
                .allowed
        );
    }
    let before = evalsha_calls(&url).await;
    let burst = {
        let limiter = limiter.clone();
        let k = k.clone();
        // Spawned from the worker thread, so the 32 tasks are all in its
        // run queue before the first of them runs.
        tokio::spawn(async move {
            let tasks: Vec<_> = (0..32)
                .map(|_| {
                    let limiter = limiter.clone();
                    let checks = [check(&k, rule)];
                    tokio::spawn(async move { limiter.decide(&checks, wall_us()).await })
                })
                .collect();
            let mut admitted = 0;
            for t in tasks {
                admitted += u64::from(t.await.unwrap().unwrap().allowed);
            }
            admitted
        })
    };
    assert_eq!(burst.await.unwrap(), 32);
    let calls = evalsha_calls(&url).await - before;
    assert_eq!(calls, 1, "32 ready decisions took {calls} script calls");
}

// The batches' connection logs in as the URL says: a password alone, or an
// ACL user and password; then the URL's database; over TCP or a Unix
// socket. A refused login fails the decision with the server's reason.
#[tokio::test(flavor = "current_thread")]
async fn decisions_log_in_and_count_in_the_urls_database() {
    let Some(server) = RedisServer::on_free_port() else {
        return;
    };
    let socket = std::env::temp_dir().join(format!("tollgate-redis-{}.sock", server.port));
    let socket = socket.to_str().unwrap().to_owned();
    let mut server = server.with_args(&["--requirepass", "s3cret", "--unixsocket", &socket]);
    server.start();
    let at = |auth: &str, db: u8| format!("redis://{auth}@127.0.0.1:{}/{db}", server.port);
    let k = key(&subject("login"), "rate");
    let checks = [check(&k, Rule::gcra(2, HOUR, None))];
    let limiter = node(&at(":s3cret", 3));
    for expected in [true, true, false] {
        let d = limiter.decide(&checks, wall_us()).await.unwrap();
        assert_eq!(d.allowed, expected);
    }
    let exists = |url: String, k: String| async move {
        let client = ::redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("EXISTS")
            .arg(&k)
            .query_async::<bool>(&mut conn)
            .await
            .unwrap()
    };
    assert!(
        exists(at(":s3cret", 3), k.clone()).await,
        "not counted in db 3"
    );
    assert!(
        !exists(at(":s3cret", 0), k.clone()).await,
        "counted in db 0"
    );

    // An ACL user with its own password, in the default database.
    let client = ::redis::Client::open(at(":s3cret", 0).as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("ACL")
        .arg(&["SETUSER", "limiter", "on", ">pw2", "~*", "+@all"])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let user = node(&at("limiter:pw2", 0));
    assert!(user.decide(&checks, wall_us()).await.unwrap().allowed);
    assert!(
        exists(at(":s3cret", 0), k.clone()).await,
        "not counted in db 0"
    );

    // A Unix socket, with the password and database in the query.
    let local = node(&format!("unix://{socket}?pass=s3cret&db=5"));
    assert!(local.decide(&checks, wall_us()).await.unwrap().allowed);
    assert!(
        exists(at(":s3cret", 5), k.clone()).await,
        "not counted in db 5"
    );

    // A user that may not load the script: its decisions fail, and its
    // connection stays in step, until the script is loaded for it.
    ::redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "runner",
            "on",
            ">pw3",
            "~*",
            "+@all",
            "-script|load",
        ])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let runner = redis(&at("runner:pw3", 0));
    for _ in 0..2 {
        let err = runner.decide(&checks, wall_us()).await.unwrap_err();
        assert!(err.0.contains("NOPERM"), "{err}");
    }
    ::redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(include_str!("../src/decide.lua"))
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // The second of db 0's two requests an hour, then a refusal.
    for expected in [true, false] {
        let d = runner.decide(&checks, wall_us()).await.unwrap();
        assert_eq!(d.allowed, expected);
    }

    for refused in [at(":wrong", 0), at("limiter:wrong", 0)] {
        let refused = node(&refused);
        let err = refused.decide(&checks, wall_us()).await.unwrap_err();
        assert!(err.0.contains("WRONGPASS"), "{err}");
    }
    server.stop();
    let _ = std::fs::remove_file(&socket);
}

#[tokio::test(flavor = "current_thread")]
async fn each_decision_in_a_batch_is_decided_on_its_own() {
    let url = require_redis!();
    let limiter = node(&url);
    let tz = new_york();
    let rate = key(&subject("batch-rate"), "rate");
    let quota = key(&subject("batch-quota"), "quota");
    let single = key(&subject("batch-single"), "rate");
    let one_an_hour = Rule::gcra(1, HOUR, None);
    let month = Rule::Month { limit: 10, tz };
    // Use up the rate limit first.
    assert!(
        limiter
            .decide(&[check(&rate, one_an_hour)], wall_us())
            .await
            .unwrap()
            .allowed
    );

    let now = wall_us();
    let refused = [check(&rate, one_an_hour), check(&quota, month)];
    let counted = [check(&quota, month)];
    let first = [check(&single, one_an_hour)];
    // All five queue before the batching task runs: one script call.
    let (refused, here, months_off, a, b) = tokio::join!(
        limiter.decide(&refused, now),
        limiter.decide(&counted, now),
        limiter.decide(&counted, now + 100 * DAY),
        limiter.decide(&first, now),
        limiter.decide(&first, now),
    );
    // Refused by its rate: its quota is not charged.
    let refused = refused.unwrap();
    assert!(!refused.allowed);
    assert!(!refused.statuses[0].allowed && refused.statuses[1].allowed);
    // One in this month, and one from a node whose clock is months off,
    // asked again in the server's month: both count there.
    assert!(here.unwrap().allowed);
    assert!(months_off.unwrap().allowed);
    let (start, _) = calendar::month_of(wall_us(), tz);
    assert_eq!(limiter.quota_used(&quota, start).await.unwrap(), 2);
    // Two on a fresh limit of one: the first in the batch takes it.
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.allowed && !b.allowed, "{a:?} {b:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_counter_of_another_kind_starts_afresh_without_failing_its_batch() {
    let url = require_redis!();
    let limiter = node(&url);
    // A limit's algorithm changed in the config and kept its name: its key
    // holds a GCRA time (a string) where a window (a hash) is now expected,
    // and a hash where a GCRA time is.
    let was_rate = key(&subject("kind-changed"), "limit");
    let was_window = key(&subject("kind-changed"), "limit");
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("SET")
        .arg(&was_rate)
        .arg("1796622713980469")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("HSET")
        .arg(&was_window)
        .arg("i")
        .arg("5")
        .query_async(&mut conn)
        .await
        .unwrap();
    let window = Rule::Window {
        window_us: MINUTE,
        limit: 2,
    };
    let other = key(&subject("kind-neighbour"), "rate");
    let as_window = [check(&was_rate, window)];
    let as_rate = [check(&was_window, Rule::gcra(1, HOUR, None))];
    let neighbour = [check(&other, Rule::gcra(1, HOUR, None))];
    let (w1, g, neighbour) = tokio::join!(
        limiter.decide(&as_window, wall_us()),
        limiter.decide(&as_rate, wall_us()),
        limiter.decide(&neighbour, wall_us()),
    );
    // Each decision is answered, on a fresh counter, and so is the one
    // that shared their script call.
    let w1 = w1.unwrap();
    assert!(w1.allowed && w1.statuses[0].remaining == 1, "{w1:?}");
    assert!(g.unwrap().allowed);
    assert!(neighbour.unwrap().allowed);
    // The counters count on from there.
    let w2 = limiter
        .decide(&[check(&was_rate, window)], wall_us())
        .await
        .unwrap();
    assert!(w2.allowed && w2.statuses[0].remaining == 0, "{w2:?}");
    assert!(
        !limiter
            .decide(&[check(&was_rate, window)], wall_us())
            .await
            .unwrap()
            .allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_taken_for_a_cancelled_decision_comes_back() {
    let url = require_redis!();
    let limiter = node(&url);
    let checks = [check(
        &key(&subject("cancelled-slot"), "inflight"),
        Rule::Concurrency { max: 1 },
    )];
    // Connected already, so the decision is sent at its first poll.
    let warm = [check(
        &key(&subject("warm"), "rate"),
        Rule::gcra(10, HOUR, None),
    )];
    assert!(limiter.decide(&warm, wall_us()).await.unwrap().allowed);
    // The caller goes away after its decision was queued, before the
    // answer (a client that hung up): the slot it took must come back.
    {
        let decision = limiter.decide(&checks, wall_us());
        tokio::pin!(decision);
        tokio::select! {
            biased;
            d = &mut decision => panic!("answered without waiting for Redis: {d:?}"),
            () = std::future::ready(()) => {}
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let d = loop {
        let d = limiter.decide(&checks, wall_us()).await.unwrap();
        if d.allowed {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled decision's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(d.permit.is_some());
}

// ---------------------------------------------------------------------------
// Incidents: Redis away, back, frozen; a node starting while it is down.
// ---------------------------------------------------------------------------

fn errors(l: &Limiter) -> u64 {
    l.counters().backend_errors.load(Ordering::Relaxed)
}

/// Decides until Redis answers again, for at most 10 s (waiting on an
/// external process, so polling is the only way).
async fn await_recovery(limiter: &Limiter, checks: &[Check<'_>]) -> Decision {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match limiter.decide(checks, wall_us()).await {
            Ok(d) => return d,
            Err(e) => {
                assert!(Instant::now() < deadline, "Redis never came back: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_fail_fast_while_redis_is_away_and_recover() {
    let Some(mut server) = RedisServer::on_free_port() else {
        return;
    };
    server.start();
    let limiter =
        Limiter::redis(Redis::new(&options(&server.url(), Duration::from_millis(300))).unwrap());
    let checks = [check(
        &key(&subject("away"), "rate"),
        Rule::gcra(1000, HOUR, None),
    )];
    assert!(limiter.decide(&checks, wall_us()).await.unwrap().allowed);
    assert!(limiter.is_up());
    let before = errors(&limiter);

    server.stop();
    let t = Instant::now();
    let err = limiter.decide(&checks, wall_us()).await;
    assert!(err.is_err(), "decided without Redis: {err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(!limiter.is_up());
    assert_eq!(errors(&limiter), before + 1);
    let mut metrics = String::new();
    limiter.render_metrics(&mut metrics);
    assert!(metrics.contains("tollgate_ratelimit_backend_up{backend=\"redis\"} 0"));

    // Within the back-off, decisions fail without asking Redis.
    let t = Instant::now();
    assert!(limiter.decide(&checks, wall_us()).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(errors(&limiter), before + 2);

    server.start();
    let d = await_recovery(&limiter, &checks).await;
    assert!(d.allowed);
    assert!(limiter.is_up());
    // The restarted server had no script cached; the decision loaded it.
    for _ in 0..3 {
        assert!(limiter.decide(&checks, wall_us()).await.unwrap().allowed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_redis_is_down() {
    let Some(mut server) = RedisServer::on_free_port() else {
        return;
    };
    // Nothing listens on the port yet: construction still succeeds.
    let timeout = Duration::from_millis(200);
    let redis = Redis::new(&options(&server.url(), timeout));
    assert!(redis.is_ok(), "{redis:?}");
    let limiter = Limiter::redis(redis.unwrap());
    let checks = [check(
        &key(&subject("cold-start"), "rate"),
        Rule::gcra(1000, HOUR, None),
    )];
    // The decision fails within about its timeout (not after the client's
    // own reconnection back-off, which starts at one second).
    let t = Instant::now();
    assert!(limiter.decide(&checks, wall_us()).await.is_err());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a decision waited {:?} with a {timeout:?} timeout",
        t.elapsed()
    );
    assert!(!limiter.is_up());
    assert_eq!(errors(&limiter), 1);

    server.start();
    assert!(await_recovery(&limiter, &checks).await.allowed);
    assert!(limiter.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_first_decision_does_not_wedge_the_node() {
    let Some(mut server) = RedisServer::on_free_port() else {
        return;
    };
    server.start();
    let limiter =
        Limiter::redis(Redis::new(&options(&server.url(), Duration::from_secs(5))).unwrap());
    let checks = [check(
        &key(&subject("cancelled"), "rate"),
        Rule::gcra(1000, HOUR, None),
    )];
    // The server stops answering (the connection is accepted by the kernel
    // but its handshake is never answered); the caller gives up on the
    // first decision (a client that went away) while it is connecting.
    server.signal("STOP");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        limiter.decide(&checks, wall_us()),
    )
    .await;
    assert!(gave_up.is_err(), "decided on a frozen server: {gave_up:?}");
    server.signal("CONT");
    // The next decision connects and is answered.
    let d = limiter.decide(&checks, wall_us()).await;
    assert!(d.as_ref().is_ok_and(|d| d.allowed), "{d:?}");
    assert!(limiter.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_back_off_one_decision_probes_and_the_rest_fail_fast() {
    let Some(mut server) = RedisServer::on_free_port() else {
        return;
    };
    server.start();
    let timeout = Duration::from_secs(1);
    let limiter = Arc::new(Limiter::redis(
        Redis::new(&options(&server.url(), timeout)).unwrap(),
    ));
    let checks = [check(
        &key(&subject("probe"), "rate"),
        Rule::gcra(1000, HOUR, None),
    )];
    let t0 = wall_us();
    assert!(limiter.decide(&checks, t0).await.unwrap().allowed);
    // Redis stops answering: the next decision waits for its timeout.
    server.signal("STOP");
    assert!(limiter.decide(&checks, t0).await.is_err());
    assert!(!limiter.is_up());
    // Past the 500 ms back-off (on the nodes' clock, which `decide` is
    // given), eight requests arrive at once. One of them asks Redis (and
    // waits for the timeout); the others must not pile onto a dead server.
    let after = t0 + 600_000;
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (limiter, checks, start) = (limiter.clone(), checks.to_vec(), start.clone());
        set.spawn(async move {
            start.wait().await;
            let t = Instant::now();
            let r = limiter.decide(&checks, after).await;
            (r.is_err(), t.elapsed())
        });
    }
    let mut waited = 0;
    while let Some(r) = set.join_next().await {
        let (failed, took) = r.unwrap();
        assert!(failed);
        // The probe waits for the timeout; a fast failure takes micro-
        // seconds. Half the timeout separates them with room to spare.
        if took >= timeout / 2 {
            waited += 1;
        }
    }
    assert_eq!(waited, 1, "decisions that waited on the frozen server");
    server.signal("CONT");
    // Later (by the nodes' clock) it recovers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut at = after;
    loop {
        at += 600_000;
        if limiter.decide(&checks, at).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limiter.is_up());
}
