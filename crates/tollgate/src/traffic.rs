//! Wires traffic control into a node: the rate limiter (in process, or on
//! Redis with `TOLLGATE_REDIS_URL`), subscriptions from the store, and the
//! persistence of in-process quota counts, which are loaded at start and
//! written back in batches so a restart does not forget a month.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tollgate_admin::usage::{QuotaUsage, UsageReader};
use tollgate_core::ids::SubscriptionId;
use tollgate_limits::catalog::{MONTHLY_QUOTA, SubscriptionEntry};
use tollgate_limits::redis::{Redis, RedisOptions};
use tollgate_limits::synced::Synced;
use tollgate_limits::{Limiter, calendar};
use tollgate_store::{Store, SubscriptionGrant, UsageDelta};

use crate::ServeArgs;

/// The counter name under which the store keeps monthly quota counts.
const STORE_COUNTER: &str = "month";

/// The limiter these settings ask for.
pub fn limiter(args: &ServeArgs) -> anyhow::Result<Arc<Limiter>> {
    Ok(Arc::new(match &args.redis_url {
        Some(url) => {
            let redis = Redis::new(&RedisOptions {
                url: url.clone(),
                timeout: Duration::from_millis(args.redis_timeout_ms.max(1)),
            })?;
            if args.redis_sync_ms > 0 {
                tracing::info!(
                    redis = %crate::redact(url),
                    sync_ms = args.redis_sync_ms,
                    "rate-limit counters in process, synced with Redis"
                );
                Limiter::synced(Synced::new(
                    redis,
                    Duration::from_millis(args.redis_sync_ms),
                ))
            } else {
                tracing::info!(redis = %crate::redact(url), "rate-limit counters on Redis");
                Limiter::redis(redis)
            }
        }
        None => Limiter::local(),
    }))
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A store subscription as the gateway keeps it.
pub fn entry(g: SubscriptionGrant) -> SubscriptionEntry {
    SubscriptionEntry {
        timezone: calendar::zone(g.timezone.as_deref()),
        id: g.id,
        org: g.org_id,
        app: g.app_id,
        key: g.key_id,
        plan: g.plan,
        api: g.api,
        overrides: g.overrides,
    }
}

/// Loads the stored quota counts of the current and previous month into the
/// in-process limiter.
pub async fn seed_quotas(store: &Store, limiter: &Limiter) -> anyhow::Result<()> {
    let Some(local) = limiter.as_local() else {
        return Ok(());
    };
    // The earliest month start anywhere is at most 14 hours before UTC's.
    let since = calendar::month_bounds(now_us(), chrono_tz::Tz::UTC)[0] / 1000 - 14 * 3_600_000;
    let rows = store.usage_counters_since(since).await?;
    for r in rows.iter().filter(|r| r.counter == STORE_COUNTER) {
        let start = r.period_start * 1000;
        // The end is only used to age the entry out; a month is at most 31 days.
        local.seed_quota(
            &r.subject,
            start,
            start + 31 * 86_400_000_000,
            r.count.max(0) as u64,
        );
    }
    Ok(())
}

/// Reconciles the synced limiter's counts with Redis every `every`, and a
/// last time at shutdown so the cluster keeps what this node admitted.
pub async fn sync_limits(limiter: Arc<Limiter>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => limiter.sync(now_us).await,
            _ = shutdown.cancelled() => {
                limiter.sync(now_us).await;
                return;
            }
        }
    }
}

/// Writes in-process quota counts to the store every `every`, and once
/// more at shutdown. Counts that cannot be written are kept and retried.
pub async fn flush_quotas(
    store: Store,
    limiter: Arc<Limiter>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let Some(local) = limiter.as_local() else {
        return;
    };
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(every) => false,
        };
        let deltas = local.take_quota_deltas();
        if !deltas.is_empty() {
            let batch: Vec<UsageDelta> = deltas
                .iter()
                .map(|(key, start, n)| UsageDelta {
                    subject: key.clone(),
                    counter: STORE_COUNTER.to_owned(),
                    period_start: start / 1000,
                    delta: *n as i64,
                })
                .collect();
            match store.add_usage(&batch).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("quota counts are written to the store again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot write quota counts to the store; will retry");
                        failing = true;
                    }
                    local.restore_quota_deltas(&deltas);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Answers the admin API's usage questions from the live limiter, so the
/// number shown is the number enforced.
pub struct LimiterUsage(pub Arc<Limiter>);

impl UsageReader for LimiterUsage {
    fn quota_usage<'a>(
        &'a self,
        subscription: &'a SubscriptionId,
        timezone: Option<&'a str>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<QuotaUsage, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let tz = calendar::zone(timezone);
            let (start, end) = calendar::month_of(now_us(), tz);
            let key = tollgate_limits::key(subscription.as_str(), MONTHLY_QUOTA);
            let used = self
                .0
                .quota_used(&key, start)
                .await
                .map_err(|e| e.to_string())?;
            Ok(QuotaUsage {
                period_start_ms: start / 1000,
                period_end_ms: end / 1000,
                used,
            })
        })
    }
}
