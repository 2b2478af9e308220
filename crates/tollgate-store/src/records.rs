//! The store's public value types: records, scopes, pages and change sets.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::config::{PolicySpec, RouteSpec, ServiceSpec};
use tollgate_core::ids::PolicyId;
use tollgate_core::ids::{RouteId, ServiceId};

/// Which database a [`crate::Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A stored service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceRecord {
    pub id: ServiceId,
    pub spec: ServiceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored route, attached to one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteRecord {
    pub id: RouteId,
    pub service_id: ServiceId,
    pub spec: RouteSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored policy. In JSON the scope is flattened into the record:
/// `{"id": "pol_...", "scope": "service", "service_id": "svc_...", "spec": {...}, ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyRecord {
    pub id: PolicyId,
    #[serde(flatten)]
    pub scope: PolicyScope,
    pub spec: PolicySpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a policy is attached. At most one policy of a given name exists per scope.
///
/// JSON: `{"scope": "global"}`, `{"scope": "service", "service_id": "svc_..."}`
/// or `{"scope": "route", "route_id": "rt_..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "ScopeRepr", try_from = "ScopeRepr")]
pub enum PolicyScope {
    /// Every route.
    Global,
    /// Every route of one service.
    Service(ServiceId),
    /// One route.
    Route(RouteId),
}

impl PolicyScope {
    /// The value of the `scope_key` column: `global`, or the service or route id.
    pub(crate) fn key(&self) -> &str {
        match self {
            PolicyScope::Global => "global",
            PolicyScope::Service(id) => id.as_str(),
            PolicyScope::Route(id) => id.as_str(),
        }
    }
}

/// The wire form of [`PolicyScope`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyScope)]
struct ScopeRepr {
    /// `global`, `service` or `route`.
    scope: ScopeKind,
    /// The service, when `scope` is `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_id: Option<ServiceId>,
    /// The route, when `scope` is `route`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route_id: Option<RouteId>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ScopeKind {
    Global,
    Service,
    Route,
}

impl From<PolicyScope> for ScopeRepr {
    fn from(scope: PolicyScope) -> Self {
        match scope {
            PolicyScope::Global => ScopeRepr {
                scope: ScopeKind::Global,
                service_id: None,
                route_id: None,
            },
            PolicyScope::Service(id) => ScopeRepr {
                scope: ScopeKind::Service,
                service_id: Some(id),
                route_id: None,
            },
            PolicyScope::Route(id) => ScopeRepr {
                scope: ScopeKind::Route,
                service_id: None,
                route_id: Some(id),
            },
        }
    }
}

impl TryFrom<ScopeRepr> for PolicyScope {
    type Error = String;
    fn try_from(r: ScopeRepr) -> Result<Self, String> {
        match (r.scope, r.service_id, r.route_id) {
            (ScopeKind::Global, None, None) => Ok(PolicyScope::Global),
            (ScopeKind::Service, Some(id), None) => Ok(PolicyScope::Service(id)),
            (ScopeKind::Route, None, Some(id)) => Ok(PolicyScope::Route(id)),
            (ScopeKind::Global, _, _) => {
                Err("scope `global` takes neither `service_id` nor `route_id`".into())
            }
            (ScopeKind::Service, _, _) => {
                Err("scope `service` needs `service_id` and no `route_id`".into())
            }
            (ScopeKind::Route, _, _) => {
                Err("scope `route` needs `route_id` and no `service_id`".into())
            }
        }
    }
}

impl utoipa::PartialSchema for PolicyScope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <ScopeRepr as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for PolicyScope {}

impl fmt::Display for PolicyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyScope::Global => f.write_str("global"),
            PolicyScope::Service(id) => write!(f, "service {id}"),
            PolicyScope::Route(id) => write!(f, "route {id}"),
        }
    }
}

/// One page request for a list: keyset pagination on the (time-ordered) id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Items per page, clamped to 1..=1000.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Return items whose id sorts after this one (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

fn default_limit() -> u32 {
    Page::DEFAULT_LIMIT
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: Page::DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Page { limit, after: None }
    }

    /// The page after the item with id `after`.
    pub fn after(limit: u32, after: impl Into<String>) -> Self {
        Page {
            limit,
            after: Some(after.into()),
        }
    }

    pub(crate) fn clamped_limit(&self) -> u32 {
        self.limit.clamp(1, Page::MAX_LIMIT)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Listed<T> {
    pub items: Vec<T>,
    /// The id to pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl<T> Listed<T> {
    /// Builds a page from up to `limit + 1` items fetched in id order.
    pub(crate) fn from_fetched(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> Self {
        let limit = limit as usize;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| id(t).to_owned())
        } else {
            None
        };
        Listed { items, next }
    }
}

/// What [`crate::Store::apply`] changed, or [`crate::Store::diff`] would change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeSet {
    /// Changes ordered by kind (services, routes, policies, JWT issuers,
    /// plans), then name.
    pub changes: Vec<Change>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes have this operation.
    pub fn count(&self, op: Op) -> usize {
        self.changes.iter().filter(|c| c.op == op).count()
    }
}

impl fmt::Display for ChangeSet {
    /// One line per change, as `tollgate diff` prints it; `no changes` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("no changes");
        }
        for (i, c) in self.changes.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// One entity created, updated or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub kind: Kind,
    /// The entity's name. For policies `<scope>/<policy name>`: `global/cors`,
    /// `service:orders/cors` or `route:orders-list/cors`.
    pub name: String,
    pub op: Op,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.op {
            Op::Create => '+',
            Op::Update => '~',
            Op::Delete => '-',
        };
        write!(f, "{sign} {} {}", self.kind, self.name)
    }
}

/// The kind of entity a [`Change`] is about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Service,
    Route,
    Policy,
    /// A trusted external JWT issuer (`jwt_issuers`); the name is its name.
    JwtIssuer,
    /// A plan (`plans`); the name is its name.
    Plan,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Policy => "policy",
            Kind::JwtIssuer => "jwt_issuer",
            Kind::Plan => "plan",
        })
    }
}

/// What happens to the entity.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_json_shapes() {
        let id = ServiceId::new();
        let v = serde_json::to_value(PolicyScope::Service(id.clone())).expect("ser");
        assert_eq!(
            v,
            serde_json::json!({"scope": "service", "service_id": id.as_str()})
        );
        let g = serde_json::to_value(PolicyScope::Global).expect("ser");
        assert_eq!(g, serde_json::json!({"scope": "global"}));
        let back: PolicyScope = serde_json::from_value(v).expect("de");
        assert_eq!(back, PolicyScope::Service(id));
        let bad = serde_json::json!({"scope": "route", "service_id": ServiceId::new().as_str()});
        assert!(serde_json::from_value::<PolicyScope>(bad).is_err());
    }

    #[test]
    fn page_limit_is_clamped() {
        assert_eq!(Page::first(0).clamped_limit(), 1);
        assert_eq!(Page::first(5000).clamped_limit(), 1000);
        assert_eq!(Page::default().clamped_limit(), 100);
        let p: Page = serde_json::from_str("{}").expect("de");
        assert_eq!(p, Page::default());
    }

    #[test]
    fn listed_sets_next_only_when_more_exist() {
        let l = Listed::from_fetched(vec!["a".to_owned(), "b".into(), "c".into()], 2, |s| s);
        assert_eq!(l.items, ["a", "b"]);
        assert_eq!(l.next.as_deref(), Some("b"));
        let l = Listed::from_fetched(vec!["a".to_owned(), "b".into()], 2, |s| s);
        assert_eq!(l.next, None);
    }

    #[test]
    fn change_set_renders_one_line_per_change() {
        let cs = ChangeSet {
            changes: vec![
                Change {
                    kind: Kind::Service,
                    name: "orders".into(),
                    op: Op::Create,
                },
                Change {
                    kind: Kind::Policy,
                    name: "global/cors".into(),
                    op: Op::Delete,
                },
            ],
        };
        assert_eq!(cs.to_string(), "+ service orders\n- policy global/cors");
        let v = serde_json::to_value(&cs).expect("ser");
        assert_eq!(v["changes"][0]["op"], "create");
        assert_eq!(v["changes"][1]["kind"], "policy");
    }
}
