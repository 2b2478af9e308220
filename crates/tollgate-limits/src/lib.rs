//! Tollgate's traffic control: counting requests against limits.
//!
//! - [`algo`]: the rules (GCRA, sliding-window counter, calendar quota,
//!   concurrency) as pure functions.
//! - [`Limiter`]: one decision over several limits at once, all-or-nothing,
//!   in this process ([`local::Local`], the default), on Redis
//!   ([`redis::Redis`], for a cluster: an atomic script on the server's
//!   clock, queued decisions sent together in one call), or in process and reconciled with Redis in
//!   batches ([`synced::Synced`]: rates decided without a round trip; a
//!   cluster can go over a limit by about one sync interval's traffic per
//!   node). It tracks backend incidents
//!   (logged once each) and counts decisions for `/metrics`.
//! - [`catalog`]: plans (from configuration) and subscriptions (from the
//!   store's change feed) in memory, and which subscription a caller uses
//!   for an API.

pub mod algo;
pub mod calendar;
pub mod catalog;
pub mod local;
pub mod redis;
mod resp;
pub mod synced;
pub mod testing;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

pub use algo::{Rule, Status};
pub use catalog::{Catalog, SubscriptionEntry};

/// One limit to apply to a request: a counter key and its rule.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    /// The counter's key: `tg:{<subject>}:<limit>` (see [`key`]).
    pub key: Cow<'a, str>,
    pub rule: Rule,
}

/// A counter key. The subject is in braces, a Redis Cluster hash tag.
pub fn key(subject: &str, limit: &str) -> String {
    format!("tg:{{{subject}}}:{limit}")
}

/// The statuses of one decision: up to four without an allocation (a
/// route's limits and a plan's rates fit).
pub type Statuses = smallvec::SmallVec<[Status; 4]>;

/// The answer to one request over all its limits.
#[derive(Debug)]
pub struct Decision {
    /// Whether every limit let the request pass (and so counted it).
    pub allowed: bool,
    /// Each limit's status, in the order of the checks.
    pub statuses: Statuses,
    /// Concurrency slots held for this request; dropping it gives them back.
    pub permit: Option<Permit>,
}

/// Concurrency slots held by a request in flight.
#[derive(Debug)]
pub struct Permit(PermitInner);

enum PermitInner {
    Local(Arc<local::Shards>, Vec<String>),
    Redis(Option<redis::Slots>),
}

impl std::fmt::Debug for PermitInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PermitInner::Local(_, k) => f.debug_tuple("Local").field(k).finish(),
            PermitInner::Redis(_) => f.write_str("Redis"),
        }
    }
}

impl Permit {
    pub(crate) fn local(shards: Arc<local::Shards>, keys: Vec<String>) -> Permit {
        Permit(PermitInner::Local(shards, keys))
    }
    pub(crate) fn redis(slots: redis::Slots) -> Permit {
        Permit(PermitInner::Redis(Some(slots)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        match &mut self.0 {
            PermitInner::Local(shards, keys) => shards.release(keys),
            PermitInner::Redis(held) => {
                if let Some(slots) = held.take() {
                    redis::release(slots);
                }
            }
        }
    }
}

/// The counter store could not decide.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the rate-limit backend is unavailable: {0}")]
pub struct Unavailable(pub String);

enum Backend {
    Local(local::Local),
    Redis(Box<redis::Redis>),
    Synced(Box<synced::Synced>),
}

/// After a failure, other decisions fail at once (per the route's failure
/// mode) until this much time has passed; then one tries Redis again.
const RETRY_AFTER_FAILURE_US: i64 = 500_000;

/// Decides requests against limits, in process or on Redis.
pub struct Limiter {
    backend: Backend,
    failing: AtomicBool,
    retry_at_us: AtomicI64,
    counters: Counters,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shared", &self.is_shared())
            .finish_non_exhaustive()
    }
}

/// What the limiter has counted since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    pub backend_errors: AtomicU64,
    pub failed_open: AtomicU64,
    pub failed_closed: AtomicU64,
}

/// Metric names (Prometheus text format), in one place.
pub mod metrics {
    pub use tollgate_core::metrics::{
        RATELIMIT_BACKEND_ERRORS as BACKEND_ERRORS, RATELIMIT_BACKEND_FAILURES as BACKEND_FAILURES,
        RATELIMIT_BACKEND_UP as BACKEND_UP, RATELIMIT_DECISIONS as DECISIONS,
    };
}

impl tollgate_core::metrics::MetricsSource for Limiter {
    fn render(&self, out: &mut String) {
        self.render_metrics(out);
    }
}

impl Limiter {
    /// Counters in this process.
    pub fn local() -> Limiter {
        Limiter::with(Backend::Local(local::Local::new()))
    }

    /// Counters on Redis.
    pub fn redis(r: redis::Redis) -> Limiter {
        Limiter::with(Backend::Redis(Box::new(r)))
    }

    /// Counters in process, reconciled with Redis by [`Limiter::sync`].
    pub fn synced(s: synced::Synced) -> Limiter {
        Limiter::with(Backend::Synced(Box::new(s)))
    }

    fn with(backend: Backend) -> Limiter {
        Limiter {
            backend,
            failing: AtomicBool::new(false),
            retry_at_us: AtomicI64::new(0),
            counters: Counters::default(),
        }
    }

    /// Whether counters are shared between nodes (Redis, exact or synced).
    pub fn is_shared(&self) -> bool {
        !matches!(self.backend, Backend::Local(_))
    }

    /// How often [`Limiter::sync`] should run; `None` when it has nothing to do.
    pub fn sync_every(&self) -> Option<std::time::Duration> {
        match &self.backend {
            Backend::Synced(s) => Some(s.every()),
            _ => None,
        }
    }

    /// Reconciles in-process counts with Redis (synced backend; otherwise
    /// nothing). A failure is counted and logged once per incident, like a
    /// failed decision; decisions go on in process meanwhile.
    pub async fn sync(&self, node_now_us: impl Fn() -> i64) {
        let Backend::Synced(s) = &self.backend else {
            return;
        };
        match s.sync(&node_now_us).await {
            Ok(_) => self.backend_answered(),
            Err(e) => self.backend_failed(
                node_now_us(),
                &e.0,
                "rates are counted per node until it is back",
            ),
        }
    }

    /// Redis answered: ends an incident, if one was on.
    fn backend_answered(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("rate-limit backend (Redis) reachable again");
        }
    }

    /// Redis failed: counted, the next attempt put off, and the start of an
    /// incident logged once, with what happens meanwhile.
    fn backend_failed(&self, now_us: i64, error: &str, meanwhile: &str) {
        self.counters.backend_errors.fetch_add(1, Ordering::Relaxed);
        self.retry_at_us
            .store(now_us + RETRY_AFTER_FAILURE_US, Ordering::Release);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %error, "rate-limit backend (Redis) unreachable; {meanwhile}");
        }
    }

    /// The in-process backend, when that is the one in use (the synced
    /// backend's counters are Redis's; its monthly quotas are on Redis).
    pub fn as_local(&self) -> Option<&local::Local> {
        match &self.backend {
            Backend::Local(l) => Some(l),
            Backend::Redis(_) | Backend::Synced(_) => None,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether the backend answered its last decision.
    pub fn is_up(&self) -> bool {
        !self.failing.load(Ordering::Acquire)
    }

    /// Decides a request against `checks` at the node's time `now_us`.
    ///
    /// The round trip to Redis is boxed: its future is large, and inline it
    /// would make every caller's future, and every request's copies of it,
    /// that much larger, in-process decisions included. Next to a network
    /// round trip, the allocation is nothing.
    pub async fn decide(&self, checks: &[Check<'_>], now_us: i64) -> Result<Decision, Unavailable> {
        let d = match &self.backend {
            Backend::Local(l) => l.decide(checks, now_us),
            Backend::Redis(r) => Box::pin(self.on_redis(r, checks, now_us)).await?,
            Backend::Synced(s) => match s.decide_here(checks, now_us) {
                Some(d) => d,
                None => Box::pin(self.on_redis(s.redis(), checks, now_us)).await?,
            },
        };
        let c = if d.allowed {
            &self.counters.allowed
        } else {
            &self.counters.refused
        };
        c.fetch_add(1, Ordering::Relaxed);
        Ok(d)
    }

    /// One decision on Redis, or a fast failure while it is away.
    async fn on_redis(
        &self,
        r: &redis::Redis,
        checks: &[Check<'_>],
        now_us: i64,
    ) -> Result<Decision, Unavailable> {
        if self.failing.load(Ordering::Acquire) && !self.claim_probe(now_us) {
            self.counters.backend_errors.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable("Redis is down; retrying shortly".into()));
        }
        match r.decide(checks, now_us).await {
            Ok(d) => {
                self.backend_answered();
                Ok(d)
            }
            Err(e) => {
                self.backend_failed(
                    now_us,
                    &e.0,
                    "routes follow their on_backend_error mode until it is back",
                );
                Err(Unavailable(e.0))
            }
        }
    }

    /// While the backend is failing: whether this decision is the one that
    /// asks it again. Once the back-off has passed, the first decision to
    /// claim the probe moves the next attempt on; the others still fail at
    /// once instead of all waiting on a server that may still be down.
    fn claim_probe(&self, now_us: i64) -> bool {
        let at = self.retry_at_us.load(Ordering::Acquire);
        now_us >= at
            && self
                .retry_at_us
                .compare_exchange(
                    at,
                    now_us + RETRY_AFTER_FAILURE_US,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// The count of `key`'s monthly quota for the month starting at `start_us`.
    pub async fn quota_used(&self, key: &str, start_us: i64) -> Result<u64, Unavailable> {
        match &self.backend {
            Backend::Local(l) => Ok(l.quota_used(key, start_us)),
            Backend::Redis(r) => r
                .quota_used(key, start_us)
                .await
                .map_err(|e| Unavailable(e.0)),
            Backend::Synced(s) => s
                .redis()
                .quota_used(key, start_us)
                .await
                .map_err(|e| Unavailable(e.0)),
        }
    }

    /// Appends this limiter's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let backend = if self.is_shared() { "redis" } else { "local" };
        let _ = write!(
            out,
            "# HELP {d} Rate-limit decisions by outcome.\n# TYPE {d} counter\n\
             {d}{{outcome=\"allowed\"}} {}\n{d}{{outcome=\"refused\"}} {}\n\
             # HELP {e} Decisions the rate-limit backend could not make.\n# TYPE {e} counter\n\
             {e}{{backend=\"{backend}\"}} {}\n\
             # HELP {f} Requests let through or refused because the backend was down.\n# TYPE {f} counter\n\
             {f}{{mode=\"open\"}} {}\n{f}{{mode=\"closed\"}} {}\n\
             # HELP {u} Whether the rate-limit backend answered its last decision.\n# TYPE {u} gauge\n\
             {u}{{backend=\"{backend}\"}} {}\n",
            n(&c.allowed),
            n(&c.refused),
            n(&c.backend_errors),
            n(&c.failed_open),
            n(&c.failed_closed),
            self.is_up() as u8,
            d = metrics::DECISIONS,
            e = metrics::BACKEND_ERRORS,
            f = metrics::BACKEND_FAILURES,
            u = metrics::BACKEND_UP,
        );
    }
}
