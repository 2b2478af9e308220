//! Shared helpers for the Redis tests: the shared test server (skipped when
//! absent, required when `CI=true`), private `redis-server` processes that a
//! test may kill and restart, unique key subjects and a seeded generator.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_limits::Limiter;
use tollgate_limits::redis::{Redis, RedisOptions};
pub use tollgate_limits::testing::*;

/// Options for a backend at `url` that gives up on one decision after `timeout`.
pub fn options(url: &str, timeout: Duration) -> RedisOptions {
    RedisOptions {
        url: url.to_owned(),
        timeout,
    }
}

/// A backend on the server's clock, with a timeout generous enough for CI.
pub fn redis(url: &str) -> Redis {
    Redis::new(&options(url, Duration::from_secs(5))).expect("a valid Redis URL")
}

/// A limiter ("node") on Redis, on the server's clock.
pub fn node(url: &str) -> Limiter {
    Limiter::redis(redis(url))
}

/// A limiter on Redis that decides at the `now_us` it is given.
pub fn fixed_clock_node(url: &str) -> Limiter {
    Limiter::redis(redis(url).with_fixed_clock())
}

/// A subject no other test (or earlier run) uses, so tests never share
/// counters and can run in parallel against one server.
pub fn subject(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let a = random_u64();
    let b = random_u64() ^ SEQ.fetch_add(1, Ordering::Relaxed);
    format!("test-{tag}-{a:016x}{b:016x}")
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((SystemTime::now(), std::thread::current().id()))
}

/// The wall clock in µs since the epoch (what a node passes to `decide`).
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as i64
}

/// A small seeded generator (splitmix64), so a failing sequence can be
/// replayed from the seed printed by the test.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> (Rng, u64) {
        let seed = std::env::var("TOLLGATE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(random_u64);
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Skips the test (returns) when the shared Redis is unreachable outside CI.
#[macro_export]
macro_rules! require_redis {
    () => {
        match common::shared_redis().await {
            Some(url) => url,
            None => return,
        }
    };
}
