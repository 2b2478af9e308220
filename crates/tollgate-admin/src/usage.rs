//! `/orgs/{org}/usage`: for each subscription of an organization, the
//! limits in force and this month's quota use. The counts come from a
//! [`UsageReader`] that the node wires to its live rate limiter, so the
//! number shown is the very counter the gateway enforces (and billing
//! reads).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tollgate_core::config::PlanLimits;
use tollgate_core::ids::{AppId, KeyId, OrgId, SubscriptionId};
use tollgate_core::problem::Problem;
use tollgate_store::Listed;

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{PageQuery, Query};
use crate::orgs::OrgPath;

/// One subscription's monthly quota use, as the limiter counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The start of the current period (the month in the organization's
    /// time zone), unix milliseconds.
    pub period_start_ms: i64,
    /// The end of the current period (exclusive), unix milliseconds.
    pub period_end_ms: i64,
    /// Requests counted in the period.
    pub used: u64,
}

/// Reads quota use from the live rate limiter. The `tollgate` binary
/// implements it; tests give known numbers.
pub trait UsageReader: Send + Sync + 'static {
    /// The current monthly quota period of `subscription`, whose
    /// organization is in `timezone` (an IANA name; `None`: UTC), and what
    /// it has used. An error means the limiter cannot answer now.
    fn quota_usage<'a>(
        &'a self,
        subscription: &'a SubscriptionId,
        timezone: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<QuotaUsage, String>> + Send + 'a>>;
}

/// One subscription with its limits in force and its quota use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionUsage {
    pub subscription_id: SubscriptionId,
    pub plan: String,
    /// The API (service name); null: every API.
    pub api: Option<String>,
    pub app_id: Option<AppId>,
    pub key_id: Option<KeyId>,
    /// The plan's limits with the subscription's overrides applied.
    pub limits: PlanLimits,
    /// This month's quota; null when the limits have no `monthly_quota`.
    pub quota: Option<QuotaOut>,
}

/// A monthly quota's current period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaOut {
    /// Midnight on the 1st in `timezone`.
    pub period_start: DateTime<Utc>,
    /// When the next period starts.
    pub period_end: DateTime<Utc>,
    /// The organization's time zone, which the period follows.
    pub timezone: String,
    pub limit: u64,
    pub used: u64,
    /// `limit - used`, never below zero.
    pub remaining: u64,
}

pub fn router() -> Router<AdminState> {
    Router::new().route("/orgs/{org}/usage", get(read))
}

fn time(ms: i64) -> Result<DateTime<Utc>, ApiError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| ApiError::Internal(format!("quota period bound {ms} is out of range")))
}

/// The organization's subscriptions (one page, oldest first) with their
/// limits in force and this month's quota use. 503 `limiter_unavailable`
/// when a subscription has a quota and the rate limiter cannot report it.
#[utoipa::path(get, operation_id = "get_org_usage", path = "/orgs/{org}/usage", tag = "subscriptions",
    params(("org" = OrgId, Path), PageQuery),
    responses((status = 200, body = Listed<SubscriptionUsage>), (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<SubscriptionUsage>>, ApiError> {
    let page = q.page()?;
    // 404 for an organization that does not exist, and its time zone.
    let timezone = s.store.get_org(&org).await?.timezone;
    let subs = s.store.tenant(&org).list_subscriptions(page).await?;
    let plans: HashMap<String, PlanLimits> = s
        .store
        .list_plans()
        .await?
        .into_iter()
        .map(|p| (p.name, p.limits))
        .collect();
    let mut items = Vec::with_capacity(subs.items.len());
    for sub in subs.items {
        let limits = plans
            .get(&sub.plan)
            .cloned()
            .unwrap_or_default()
            .overridden(&sub.overrides);
        let quota = match limits.monthly_quota {
            None => None,
            Some(limit) => {
                let reader = s.usage.as_ref().ok_or_else(|| {
                    ApiError::LimiterUnavailable("no rate limiter on this node".into())
                })?;
                let q = reader
                    .quota_usage(&sub.id, timezone.as_deref())
                    .await
                    .map_err(ApiError::LimiterUnavailable)?;
                Some(QuotaOut {
                    period_start: time(q.period_start_ms)?,
                    period_end: time(q.period_end_ms)?,
                    timezone: timezone.clone().unwrap_or_else(|| "UTC".to_owned()),
                    limit,
                    used: q.used,
                    remaining: limit.saturating_sub(q.used),
                })
            }
        };
        items.push(SubscriptionUsage {
            subscription_id: sub.id,
            plan: sub.plan,
            api: sub.api,
            app_id: sub.app_id,
            key_id: sub.key_id,
            limits,
            quota,
        });
    }
    Ok(axum::Json(Listed {
        items,
        next: subs.next,
    }))
}
