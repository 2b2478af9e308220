//! `/orgs/{org}/subscriptions`: an organization's subscriptions to plans.
//! A subscription binds the organization, one of its apps, or one of that
//! app's keys to a plan, for one API (a service name) or every API, with
//! optional overrides of the plan's limits. Gateways resolve the most
//! specific one for each request (key, then app, then organization; at
//! each level an API-specific one before an all-APIs one) and apply a
//! change at once.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tollgate_core::config::PlanLimits;
use tollgate_core::ids::{AppId, KeyId, OrgId, SubscriptionId};
use tollgate_core::problem::Problem;
use tollgate_store::{Listed, NewSubscription, Subscription, SubscriptionUpdate};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::{Json, PageQuery, Query};
use crate::orgs::OrgPath;
use crate::services::created;
use crate::tenancy::{PathIds, tenant};

/// The body of `POST /orgs/{org}/subscriptions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionIn {
    /// The plan's name.
    pub plan: String,
    /// The API (service name) the subscription is for; every API when
    /// absent. Must be one the plan includes.
    #[serde(default)]
    pub api: Option<String>,
    /// Subscribe one app of the organization instead of all of it.
    #[serde(default)]
    pub app_id: Option<AppId>,
    /// Subscribe one key of `app_id` (which is then required).
    #[serde(default)]
    pub key_id: Option<KeyId>,
    /// Limits that replace the plan's (only the fields given).
    #[serde(default)]
    pub overrides: PlanLimits,
}

/// The body of `PATCH /orgs/{org}/subscriptions/{id}`: the fields to
/// change. `overrides` replaces the whole set of overrides.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPatch {
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub overrides: Option<PlanLimits>,
}

/// A subscription as the API returns it.
pub type SubscriptionOut = Subscription;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/orgs/{org}/subscriptions", get(list).post(create))
        .route(
            "/orgs/{org}/subscriptions/{id}",
            get(read).patch(patch).delete(remove),
        )
}

/// `/orgs/{org}/subscriptions/{id}`.
#[derive(Debug)]
pub struct SubscriptionPath {
    pub org: OrgId,
    pub id: SubscriptionId,
}

impl<S: Send + Sync> FromRequestParts<S> for SubscriptionPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, state).await?;
        Ok(SubscriptionPath {
            org: ids.get("org")?,
            id: ids.get("id")?,
        })
    }
}

/// Lists the organization's subscriptions (its apps' and keys' included),
/// oldest first.
#[utoipa::path(get, operation_id = "list_subscriptions", path = "/orgs/{org}/subscriptions", tag = "subscriptions",
    params(("org" = OrgId, Path), PageQuery),
    responses((status = 200, body = Listed<Subscription>), (status = 404, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Listed<SubscriptionOut>>, ApiError> {
    let page = q.page()?;
    Ok(axum::Json(
        tenant(&s, &org).await?.list_subscriptions(page).await?,
    ))
}

/// Subscribes the organization, an app or a key to a plan. 404 when the
/// app or key is not the organization's; 409 when the same target already
/// has a subscription for this API; 422 when the plan or API does not
/// exist, the plan does not include the API, the overrides are not valid
/// limits, or the key is given without its app or is not that app's.
#[utoipa::path(post, operation_id = "create_subscription", path = "/orgs/{org}/subscriptions", tag = "subscriptions",
    params(("org" = OrgId, Path)), request_body = SubscriptionIn,
    responses((status = 201, body = Subscription), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(s): State<AdminState>,
    OrgPath { org }: OrgPath,
    Json(input): Json<SubscriptionIn>,
) -> Result<Response, ApiError> {
    let new = NewSubscription {
        plan: input.plan,
        api: input.api,
        app_id: input.app_id,
        key_id: input.key_id,
        overrides: input.overrides,
    };
    let sub = tenant(&s, &org).await?.create_subscription(new).await?;
    Ok(created(
        format!("/orgs/{org}/subscriptions/{}", sub.id),
        &sub,
    ))
}

/// Reads a subscription.
#[utoipa::path(get, operation_id = "get_subscription", path = "/orgs/{org}/subscriptions/{id}", tag = "subscriptions",
    params(("org" = OrgId, Path), ("id" = SubscriptionId, Path)),
    responses((status = 200, body = Subscription), (status = 404, body = Problem)))]
pub async fn read(
    State(s): State<AdminState>,
    SubscriptionPath { org, id }: SubscriptionPath,
) -> Result<axum::Json<SubscriptionOut>, ApiError> {
    Ok(axum::Json(
        tenant(&s, &org).await?.get_subscription(&id).await?,
    ))
}

/// Moves a subscription to another plan and/or replaces its overrides.
/// Gateways apply the change at once.
#[utoipa::path(patch, operation_id = "patch_subscription", path = "/orgs/{org}/subscriptions/{id}", tag = "subscriptions",
    params(("org" = OrgId, Path), ("id" = SubscriptionId, Path)), request_body = SubscriptionPatch,
    responses((status = 200, body = Subscription), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(s): State<AdminState>,
    SubscriptionPath { org, id }: SubscriptionPath,
    Json(p): Json<SubscriptionPatch>,
) -> Result<axum::Json<SubscriptionOut>, ApiError> {
    let update = SubscriptionUpdate {
        plan: p.plan,
        overrides: p.overrides,
    };
    Ok(axum::Json(
        tenant(&s, &org)
            .await?
            .update_subscription(&id, update)
            .await?,
    ))
}

/// Ends a subscription.
#[utoipa::path(delete, operation_id = "delete_subscription", path = "/orgs/{org}/subscriptions/{id}", tag = "subscriptions",
    params(("org" = OrgId, Path), ("id" = SubscriptionId, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn remove(
    State(s): State<AdminState>,
    SubscriptionPath { org, id }: SubscriptionPath,
) -> Result<StatusCode, ApiError> {
    tenant(&s, &org).await?.delete_subscription(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
