//! `/analytics` and `/orgs/{org}/analytics`: request counts, errors, bytes
//! and latency percentiles per time bucket, from the roll-ups every gateway
//! writes. Operators see every organization and may filter by one; the
//! organization-scoped path only ever reads that organization's rows (what
//! a member, and later the portal, sees). The `tollgate analytics` command
//! answers the same query through [`query`].

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_analytics::query::{self, Bucket, RowView};
use tollgate_analytics::{Rollup, Sketch, parse_class};
use tollgate_core::ids::OrgId;
use tollgate_core::problem::{FieldError, Problem};
use tollgate_store::{RollupFilter, Store};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::Query;
use crate::orgs::OrgPath;

/// Default range when `from` is not given: the last day.
const DEFAULT_RANGE_MS: i64 = 24 * 3_600_000;

/// What a query selects.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Start (RFC 3339 or unix milliseconds); default: a day before `to`.
    pub from: Option<String>,
    /// End, exclusive (RFC 3339 or unix milliseconds); default: now.
    pub to: Option<String>,
    /// `minute`, `hour` (default) or `day`; buckets are aligned to UTC.
    pub bucket: Option<String>,
    /// Only this organization (`org_...`). On `/orgs/{org}/analytics` it
    /// is the path's and may not name another.
    pub org: Option<String>,
    /// Only this app (`app_...`).
    pub app: Option<String>,
    /// Only this route (its name).
    pub route: Option<String>,
    /// Only this status class: `2xx`, `4xx`, `5xx`...
    pub status: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// One bucket's figures (or the whole range's, in `totals`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Figures {
    pub requests: u64,
    /// Responses with a 5xx status, from the upstream or the gateway.
    pub errors: u64,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
    /// Request body bytes read from clients.
    pub bytes_in: u64,
    /// Response body bytes sent to clients.
    pub bytes_out: u64,
    /// From the request head to the end of the response; null without requests.
    pub latency_ms: Option<Percentiles>,
    /// Waiting for the upstream's response head; null when no request reached one.
    pub upstream_latency_ms: Option<Percentiles>,
}

/// One time bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BucketOut {
    pub start: DateTime<Utc>,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A time series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SeriesOut {
    /// The bucket-aligned range covered.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: String,
    /// Every bucket of the range, empty ones included.
    pub buckets: Vec<BucketOut>,
    /// The whole range.
    pub totals: Figures,
}

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/analytics", get(operator))
        .route("/orgs/{org}/analytics", get(for_org))
}

/// Traffic across every organization, per time bucket.
#[utoipa::path(get, operation_id = "get_analytics", path = "/analytics", tag = "analytics",
    params(SeriesQuery),
    responses((status = 200, body = SeriesOut), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn operator(
    State(s): State<AdminState>,
    Query(q): Query<SeriesQuery>,
) -> Result<axum::Json<SeriesOut>, ApiError> {
    let org = q.org.as_deref().map(parse_org).transpose()?;
    Ok(axum::Json(query(&s.store, &q, org.as_ref()).await?))
}

/// One organization's traffic, per time bucket.
#[utoipa::path(get, operation_id = "get_org_analytics", path = "/orgs/{org}/analytics", tag = "analytics",
    params(("org" = OrgId, Path), SeriesQuery),
    responses((status = 200, body = SeriesOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn for_org(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Query(q): Query<SeriesQuery>,
) -> Result<axum::Json<SeriesOut>, ApiError> {
    if q.org.as_deref().is_some_and(|o| o != org.as_str()) {
        return Err(invalid("org", "this path reads only its own organization"));
    }
    // 404 for an organization that does not exist.
    s.store.get_org(&org).await?;
    Ok(axum::Json(query(&s.store, &q, Some(&org)).await?))
}

fn invalid(path: &str, reason: impl Into<String>) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        path: path.into(),
        reason: reason.into(),
    }])
}

fn parse_org(s: &str) -> Result<OrgId, ApiError> {
    s.parse()
        .map_err(|e: tollgate_core::ids::IdError| invalid("org", e.to_string()))
}

/// Reads a time: RFC 3339, or unix milliseconds.
pub fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            invalid(
                field,
                "expected an RFC 3339 time (2026-12-01T00:00:00Z) or unix milliseconds",
            )
        })
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn percentiles(s: &Sketch) -> Option<Percentiles> {
    let ms = |q: f64| {
        s.quantile(q)
            .map(|us| (us / 1000.0 * 1000.0).round() / 1000.0)
    };
    Some(Percentiles {
        p50: ms(0.5)?,
        p95: ms(0.95)?,
        p99: ms(0.99)?,
        max: s
            .min_max()
            .map(|(_, max)| (max / 1000.0 * 1000.0).round() / 1000.0)?,
    })
}

fn figures(r: &Rollup) -> Figures {
    Figures {
        requests: r.requests,
        errors: r.errors,
        error_rate: if r.requests == 0 {
            0.0
        } else {
            r.errors as f64 / r.requests as f64
        },
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        latency_ms: percentiles(&r.latency),
        upstream_latency_ms: percentiles(&r.upstream),
    }
}

/// Answers a query from the store. `org`, when given, restricts every row
/// read to that organization whatever the query says.
pub async fn query(
    store: &Store,
    q: &SeriesQuery,
    org: Option<&OrgId>,
) -> Result<SeriesOut, ApiError> {
    let now = Utc::now().timestamp_millis();
    let to =
        q.to.as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?
            .unwrap_or(now);
    let from = q
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?
        .unwrap_or(to - DEFAULT_RANGE_MS);
    let bucket = match q.bucket.as_deref() {
        None => Bucket::Hour,
        Some(b) => Bucket::parse(b)
            .ok_or_else(|| invalid("bucket", "expected `minute`, `hour` or `day`"))?,
    };
    let status_class = q
        .status
        .as_deref()
        .map(|s| {
            parse_class(s).ok_or_else(|| invalid("status", "expected a status class: 1xx to 5xx"))
        })
        .transpose()?;
    let (start, end) =
        query::align(from, to, bucket).map_err(|e| invalid("from", e.to_string()))?;
    let rows = store
        .rollups(&RollupFilter {
            from: start,
            to: end,
            org_id: org.map(|o| o.as_str().to_owned()),
            app_id: q.app.clone(),
            route: q.route.clone(),
            status_class: status_class.map(i16::from),
        })
        .await?;
    let views = rows.iter().map(|r| RowView {
        bucket_start: r.bucket_start,
        requests: r.requests,
        errors: r.errors,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        latency: &r.latency,
        upstream: &r.upstream_latency,
    });
    let (points, bad) =
        query::series(start, end, bucket, views).map_err(|e| invalid("from", e.to_string()))?;
    if bad > 0 {
        tracing::warn!(
            rows = bad,
            "analytics rows with unreadable latency sketches were skipped"
        );
    }
    let mut total = Rollup::default();
    let buckets = points
        .iter()
        .map(|p| {
            total.merge(&p.rollup);
            BucketOut {
                start: time(p.start_ms),
                figures: figures(&p.rollup),
            }
        })
        .collect();
    Ok(SeriesOut {
        from: time(start),
        to: time(end),
        bucket: bucket.as_str().to_owned(),
        buckets,
        totals: figures(&total),
    })
}
