//! Upstream pools: targets with health state, load balancing, the retry
//! budget and the circuit breaker.
//!
//! Health and breaker state is keyed by service name and target and lives in
//! a [`Registry`] that outlives snapshots, so a configuration reload neither
//! forgets that a target is down nor resets a breaker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use http::uri::Authority;
use tollgate_core::config::{CircuitBreaker, LoadBalancing, PassiveHealthCheck, RetryBudget};

/// Milliseconds since the process started; cheap to compare across threads.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] for an instant already read.
pub fn ms_at(t: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    t.saturating_duration_since(*START.get_or_init(Instant::now))
        .as_millis() as u64
}

/// One upstream target and its health.
#[derive(Debug)]
pub struct TargetState {
    pub addr: Arc<str>,
    /// `Host` for requests to this target, made once.
    pub host_header: http::HeaderValue,
    pub weight: AtomicU32,
    pub in_flight: AtomicUsize,
    /// Set by the active checker; true until a probe says otherwise.
    pub active_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl TargetState {
    fn new(addr: &str, authority: Authority, weight: u32) -> Self {
        let host_header = http::HeaderValue::from_str(authority.as_str())
            .unwrap_or(http::HeaderValue::from_static("localhost"));
        TargetState {
            addr: Arc::from(addr),
            host_header,
            weight: AtomicU32::new(weight),
            in_flight: AtomicUsize::new(0),
            active_healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    pub fn healthy(&self, now: u64) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now
    }

    /// Records the outcome of a real request for passive health checking.
    pub fn record(&self, success: bool, passive: Option<&PassiveHealthCheck>) {
        if success {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let Some(p) = passive else { return };
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= p.unhealthy_threshold {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(
                now_ms() + p.cooldown.get().as_millis() as u64,
                Ordering::Relaxed,
            );
            tracing::warn!(target = %self.addr, failures = n, cooldown = %p.cooldown, "target ejected by passive health check");
        }
    }
}

/// Decrements a target's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight(pub Arc<TargetState>);

impl InFlight {
    pub fn new(t: Arc<TargetState>) -> Self {
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(t)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Service-wide state that survives reloads.
#[derive(Debug, Default)]
pub struct ServiceState {
    pub breaker: BreakerState,
    pub budget: BudgetState,
}

/// Shared, reload-surviving state for all services.
#[derive(Debug, Default)]
pub struct Registry {
    targets: Mutex<HashMap<(String, String), Arc<TargetState>>>,
    services: Mutex<HashMap<String, Arc<ServiceState>>>,
}

impl Registry {
    /// The state for `service`'s target `addr`, created on first use.
    pub fn target(
        &self,
        service: &str,
        addr: &str,
        authority: Authority,
        weight: u32,
    ) -> Arc<TargetState> {
        let mut map = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let t = map
            .entry((service.to_owned(), addr.to_owned()))
            .or_insert_with(|| Arc::new(TargetState::new(addr, authority, weight)))
            .clone();
        t.weight.store(weight, Ordering::Relaxed);
        t
    }

    pub fn service(&self, service: &str) -> Arc<ServiceState> {
        let mut map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(service.to_owned()).or_default().clone()
    }

    /// Every target with its service's name, sorted.
    pub fn targets(&self) -> Vec<(String, Arc<TargetState>)> {
        let map = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = map
            .iter()
            .map(|((s, _), t)| (s.clone(), t.clone()))
            .collect();
        all.sort_by(|a, b| (a.0.as_str(), &*a.1.addr).cmp(&(b.0.as_str(), &*b.1.addr)));
        all
    }

    /// Forgets services and targets no longer configured.
    pub fn retain(&self, live: &std::collections::HashSet<(String, String)>) {
        let mut map = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| live.contains(k));
        let names: std::collections::HashSet<&str> = live.iter().map(|(s, _)| s.as_str()).collect();
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| names.contains(k.as_str()));
    }
}

/// A load balancer over a service's targets.
#[derive(Debug)]
pub struct Balancer {
    pub targets: Vec<Arc<TargetState>>,
    /// Weighted round-robin order, precomputed (smooth weighted round robin).
    schedule: Vec<u16>,
    cursor: AtomicUsize,
    mode: LoadBalancing,
}

impl Balancer {
    pub fn new(targets: Vec<Arc<TargetState>>, mode: LoadBalancing) -> Self {
        let weights: Vec<u32> = targets
            .iter()
            .map(|t| t.weight.load(Ordering::Relaxed))
            .collect();
        Balancer {
            schedule: smooth_schedule(&weights),
            targets,
            cursor: AtomicUsize::new(0),
            mode,
        }
    }

    /// Picks a healthy target not in `exclude`. `None` when none is left.
    pub fn pick(&self, exclude: &[usize]) -> Option<usize> {
        self.pick_at(exclude, now_ms())
    }

    /// [`Balancer::pick`] at `now` ([`now_ms`]).
    pub fn pick_at(&self, exclude: &[usize], now: u64) -> Option<usize> {
        let usable = |i: usize| {
            let t = &self.targets[i];
            !exclude.contains(&i) && t.weight.load(Ordering::Relaxed) > 0 && t.healthy(now)
        };
        match self.mode {
            LoadBalancing::RoundRobin => {
                let n = self.schedule.len();
                if n == 0 {
                    return None;
                }
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| self.schedule[(start + k) % n] as usize)
                    .find(|i| usable(*i))
            }
            LoadBalancing::LeastConnections => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                let n = self.targets.len();
                let mut best: Option<(usize, u64)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !usable(i) {
                        continue;
                    }
                    let t = &self.targets[i];
                    // Compare in_flight / weight without division: scale by the largest weight.
                    let load = (t.in_flight.load(Ordering::Relaxed) as u64 + 1) * 65_536
                        / u64::from(t.weight.load(Ordering::Relaxed).max(1));
                    if best.is_none_or(|(_, b)| load < b) {
                        best = Some((i, load));
                    }
                }
                best.map(|(i, _)| i)
            }
        }
    }
}

/// The sequence smooth weighted round robin (as in nginx) produces over one
/// cycle, computed once so picking is a single atomic increment.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<i64> = weights.iter().map(|x| i64::from(x / g)).collect();
    let mut total: i64 = w.iter().sum();
    // Keep the cycle short: scale down very large weight sums.
    if total > 4096 {
        let f = total as f64 / 4096.0;
        for x in &mut w {
            if *x > 0 {
                *x = ((*x as f64 / f).round() as i64).max(1);
            }
        }
        total = w.iter().sum();
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Circuit-breaker state: closed, open until a time, or half-open with one trial.
#[derive(Debug, Default)]
pub struct BreakerState {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    trial: AtomicBool,
}

/// Whether the breaker let a request through, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Closed,
    Trial,
}

impl BreakerState {
    pub fn admit(&self) -> Option<Admit> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Some(Admit::Closed);
        }
        if now_ms() < until {
            return None;
        }
        // Half-open: one trial at a time.
        self.trial
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Admit::Trial)
    }

    pub fn record(&self, cfg: &CircuitBreaker, admit: Admit, success: bool) {
        if success {
            if admit == Admit::Trial || self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
                self.open_until_ms.store(0, Ordering::Release);
                self.trial.store(false, Ordering::Release);
            }
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if admit == Admit::Trial || n >= cfg.failure_threshold {
            self.open_until_ms.store(
                now_ms() + cfg.open_for.get().as_millis().max(1) as u64,
                Ordering::Release,
            );
            self.trial.store(false, Ordering::Release);
            if admit == Admit::Closed {
                tracing::warn!(failures = n, open_for = %cfg.open_for, "circuit opened");
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }
}

/// Holds a half-open trial until its outcome is recorded. Dropped without
/// [`TrialGuard::settle`] (the client went away and the request future was
/// dropped, or no target was left to try), it frees the trial slot so a later
/// request can be the trial; otherwise the circuit would stay open for ever.
#[derive(Debug)]
pub struct TrialGuard<'a>(Option<&'a BreakerState>);

impl<'a> TrialGuard<'a> {
    pub fn new(state: &'a BreakerState, admit: Admit) -> Self {
        TrialGuard((admit == Admit::Trial).then_some(state))
    }

    /// The outcome was recorded with [`BreakerState::record`].
    pub fn settle(&mut self) {
        self.0 = None;
    }
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            state.trial.store(false, Ordering::Release);
        }
    }
}

/// A retry budget as a token bucket in thousandths of a retry: every request
/// deposits `ratio`, time deposits `min_per_second`, a retry withdraws one.
#[derive(Debug)]
pub struct BudgetState {
    milli_tokens: AtomicI64,
    last_refill_ms: AtomicU64,
}

/// `last_refill_ms` before the first withdrawal.
const NEVER_REFILLED: u64 = u64::MAX;

impl Default for BudgetState {
    fn default() -> Self {
        BudgetState {
            milli_tokens: AtomicI64::new(0),
            last_refill_ms: AtomicU64::new(NEVER_REFILLED),
        }
    }
}

impl BudgetState {
    fn cap(cfg: &RetryBudget) -> i64 {
        i64::from(cfg.min_per_second.max(1)) * 10 * 1000
    }

    pub fn deposit(&self, cfg: &RetryBudget) {
        let add = (cfg.ratio * 1000.0) as i64;
        if add > 0 {
            let cap = Self::cap(cfg);
            let _ = self
                .milli_tokens
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some((t + add).min(cap))
                });
        }
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self, cfg: &RetryBudget) -> bool {
        let now = now_ms();
        let last = self.last_refill_ms.swap(now, Ordering::Relaxed);
        // The first withdrawal finds one second of `min_per_second` waiting,
        // so a service that just started can retry at once.
        let elapsed = if last == NEVER_REFILLED {
            1000
        } else {
            now.saturating_sub(last)
        };
        let refill = elapsed as i64 * i64::from(cfg.min_per_second);
        let cap = Self::cap(cfg);
        self.milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                let t = (t + refill).min(cap);
                (t >= 1000).then_some(t - 1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::Duration as CfgDuration;

    fn targets(weights: &[u32]) -> Vec<Arc<TargetState>> {
        let reg = Registry::default();
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr = format!("127.0.0.1:{}", 1000 + i);
                reg.target("s", &addr, addr.parse().expect("authority"), *w)
            })
            .collect()
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let b = Balancer::new(targets(&[5, 1, 1]), LoadBalancing::RoundRobin);
        let picks: Vec<usize> = (0..7).map(|_| b.pick(&[]).expect("pick")).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let b = Balancer::new(targets(&[100, 50, 0]), LoadBalancing::RoundRobin);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[b.pick(&[]).expect("pick")] += 1;
        }
        assert_eq!(counts, [200, 100, 0]);
    }

    #[test]
    fn least_connections_prefers_idle_targets() {
        let ts = targets(&[1, 1, 1]);
        let b = Balancer::new(ts.clone(), LoadBalancing::LeastConnections);
        let _busy = [
            InFlight::new(ts[0].clone()),
            InFlight::new(ts[0].clone()),
            InFlight::new(ts[2].clone()),
        ];
        assert_eq!(b.pick(&[]), Some(1));
        assert_eq!(b.pick(&[1]), Some(2));
    }

    #[test]
    fn passive_ejection_and_exclusion() {
        let ts = targets(&[1, 1]);
        let b = Balancer::new(ts.clone(), LoadBalancing::RoundRobin);
        let cfg = PassiveHealthCheck {
            unhealthy_threshold: 2,
            cooldown: CfgDuration::from_secs(60),
        };
        ts[0].record(false, Some(&cfg));
        assert!(ts[0].healthy(now_ms()));
        ts[0].record(false, Some(&cfg));
        assert!(!ts[0].healthy(now_ms()));
        for _ in 0..4 {
            assert_eq!(b.pick(&[]), Some(1));
        }
        assert_eq!(b.pick(&[1]), None);
    }

    #[test]
    fn breaker_opens_then_allows_one_trial() {
        let s = BreakerState::default();
        let cfg = CircuitBreaker {
            failure_threshold: 2,
            open_for: CfgDuration::from_millis(1),
        };
        s.record(&cfg, Admit::Closed, false);
        assert_eq!(s.admit(), Some(Admit::Closed));
        s.record(&cfg, Admit::Closed, false);
        assert!(s.is_open());
        let until = s.open_until_ms.load(Ordering::Relaxed);
        while now_ms() < until {
            std::thread::yield_now();
        }
        assert_eq!(s.admit(), Some(Admit::Trial));
        assert_eq!(s.admit(), None, "only one trial at a time");
        s.record(&cfg, Admit::Trial, true);
        assert!(!s.is_open());
        assert_eq!(s.admit(), Some(Admit::Closed));
    }

    #[test]
    fn retry_budget_limits_retries() {
        let cfg = RetryBudget {
            ratio: 0.5,
            min_per_second: 0,
        };
        let b = BudgetState::default();
        assert!(!b.withdraw(&cfg), "no traffic, no budget");
        for _ in 0..4 {
            b.deposit(&cfg);
        }
        assert!(b.withdraw(&cfg));
        assert!(b.withdraw(&cfg));
        assert!(!b.withdraw(&cfg));
    }
}
