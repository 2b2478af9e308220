//! Whole-configuration operations: export, diff and apply.
//!
//! Apply matches entities by name. It loads the current state inside its
//! write transaction, plans the steps that turn it into the desired state,
//! and runs them in an order that never breaks a constraint: creations and
//! updates (services, then routes, then policies) before deletions (policies,
//! then routes, then services), so a route moving off a service that is
//! being deleted is moved before the cascade could take it. JWT issuers and
//! plans are matched by name too. Nothing in the configuration references
//! them in the database, but subscriptions reference plans: deleting a plan
//! that is subscribed to fails the whole apply with `Conflict`.

use std::collections::HashMap;
use std::fmt;

use tollgate_core::config::{
    Config, JwtIssuerSpec, PlanSpec, PolicySpec, Route, RouteSpec, Service, ServiceSpec,
};
use tollgate_core::ids::{PolicyId, RouteId, ServiceId};

use crate::db::{Conn, Pool};
use crate::sql::{self, PolicyRow, RouteRow, ServiceRow, now_millis};
use crate::{Change, ChangeSet, Kind, Op, PolicyScope, StoreError};

/// Reads everything in one snapshot and assembles the declarative config.
pub(crate) async fn export(pool: &Pool) -> Result<(i64, Config), StoreError> {
    let mut conn = pool.snapshot().await?;
    let revision = sql::revision(&mut conn).await?;
    let services = sql::all_services(&mut conn).await?;
    let routes = sql::all_routes(&mut conn).await?;
    let policies = sql::all_policies(&mut conn).await?;
    let issuers = sql::JWT_ISSUERS.all(&mut conn).await?;
    let plans = sql::PLANS.all(&mut conn).await?;
    conn.commit().await?;
    Ok((
        revision,
        assemble(services, routes, policies, issuers, plans)?,
    ))
}

/// Nests routes under services and policies under their scopes, everything
/// ordered by name in byte order.
fn assemble(
    services: Vec<ServiceRow>,
    routes: Vec<RouteRow>,
    policies: Vec<PolicyRow>,
    issuers: Vec<sql::NamedRow>,
    plans: Vec<sql::NamedRow>,
) -> Result<Config, StoreError> {
    let mut global = Vec::new();
    let mut by_service: HashMap<ServiceId, Vec<PolicySpec>> = HashMap::new();
    let mut by_route: HashMap<RouteId, Vec<PolicySpec>> = HashMap::new();
    for row in policies {
        let record = row.into_record()?;
        match record.scope {
            PolicyScope::Global => global.push(record.spec),
            PolicyScope::Service(id) => by_service.entry(id).or_default().push(record.spec),
            PolicyScope::Route(id) => by_route.entry(id).or_default().push(record.spec),
        }
    }
    let sorted_policies = |mut list: Vec<PolicySpec>| {
        list.sort_by(|a, b| a.name().cmp(b.name()));
        list
    };

    let mut routes_of: HashMap<ServiceId, Vec<Route>> = HashMap::new();
    for row in routes {
        let record = row.into_record()?;
        let policies = sorted_policies(by_route.remove(&record.id).unwrap_or_default());
        routes_of
            .entry(record.service_id)
            .or_default()
            .push(Route::from_parts(record.spec, policies));
    }

    let mut out = Vec::with_capacity(services.len());
    for row in services {
        let record = row.into_record()?;
        let mut routes = routes_of.remove(&record.id).unwrap_or_default();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        let policies = sorted_policies(by_service.remove(&record.id).unwrap_or_default());
        out.push(Service::from_parts(record.spec, routes, policies));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));

    let mut jwt_issuers = issuers
        .iter()
        .map(|r| sql::JWT_ISSUERS.spec(r))
        .collect::<Result<Vec<_>, _>>()?;
    jwt_issuers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut plans = plans
        .iter()
        .map(|r| sql::PLANS.spec(r))
        .collect::<Result<Vec<_>, _>>()?;
    plans.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(Config {
        format_version: 1,
        services: out,
        policies: sorted_policies(global),
        jwt_issuers,
        plans,
    })
}

/// Replaces the stored configuration with `config` in one transaction.
pub(crate) async fn apply(pool: &Pool, config: &Config) -> Result<ChangeSet, StoreError> {
    config.validate().map_err(StoreError::Invalid)?;
    let mut conn = pool.write().await?;
    // First, as in every write: this also locks out other writers (see sql::bump_revision).
    sql::bump_revision(&mut conn).await?;
    let plan = plan(Current::load(&mut conn).await?, config);
    if plan.changes.is_empty() {
        // Nothing to do: roll back, so the revision does not move.
        conn.rollback().await?;
        return Ok(ChangeSet::default());
    }
    let now = now_millis();
    for step in &plan.steps {
        step.run(&mut conn, now).await?;
    }
    conn.commit().await?;
    tracing::info!(
        changes = plan.changes.changes.len(),
        "configuration applied"
    );
    Ok(plan.changes)
}

/// What [`apply`] would do, computed from one consistent snapshot.
pub(crate) async fn diff(pool: &Pool, config: &Config) -> Result<ChangeSet, StoreError> {
    config.validate().map_err(StoreError::Invalid)?;
    let mut conn = pool.snapshot().await?;
    let current = Current::load(&mut conn).await?;
    conn.commit().await?;
    Ok(plan(current, config).changes)
}

/// A policy's scope by name, as changes report it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ScopeName {
    Global,
    Service(String),
    Route(String),
}

impl fmt::Display for ScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeName::Global => f.write_str("global"),
            ScopeName::Service(name) => write!(f, "service:{name}"),
            ScopeName::Route(name) => write!(f, "route:{name}"),
        }
    }
}

impl ScopeName {
    /// Completes "a `cors` policy is already attached ...".
    fn label(&self) -> String {
        match self {
            ScopeName::Global => "globally".to_owned(),
            ScopeName::Service(name) => format!("to service `{name}`"),
            ScopeName::Route(name) => format!("to route `{name}`"),
        }
    }
}

/// The stored state, keyed by name. A spec that no longer parses is `None`
/// and is rewritten by apply, which repairs it.
struct Current {
    services: HashMap<String, (ServiceId, Option<ServiceSpec>)>,
    routes: HashMap<String, (RouteId, ServiceId, Option<RouteSpec>)>,
    policies: HashMap<(ScopeName, String), (PolicyId, Option<PolicySpec>)>,
    /// JWT issuers by name: (id, spec).
    issuers: HashMap<String, (String, Option<JwtIssuerSpec>)>,
    /// Plans by name: (id, spec).
    plans: HashMap<String, (String, Option<PlanSpec>)>,
}

fn corrupt_id(what: &str, raw: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} id `{raw}` is not valid"))
}

impl Current {
    async fn load(conn: &mut Conn) -> Result<Current, StoreError> {
        let service_rows = sql::all_services(conn).await?;
        let route_rows = sql::all_routes(conn).await?;
        let policy_rows = sql::all_policies(conn).await?;
        let issuer_rows = sql::JWT_ISSUERS.all(conn).await?;
        let plan_rows = sql::PLANS.all(conn).await?;

        let mut service_names = HashMap::new();
        let mut services = HashMap::new();
        for row in service_rows {
            let id: ServiceId = row.id.parse().map_err(|_| corrupt_id("service", &row.id))?;
            service_names.insert(row.id, row.name.clone());
            services.insert(row.name, (id, serde_json::from_str(&row.spec).ok()));
        }
        let mut route_names = HashMap::new();
        let mut routes = HashMap::new();
        for row in route_rows {
            let id: RouteId = row.id.parse().map_err(|_| corrupt_id("route", &row.id))?;
            let service_id: ServiceId = row
                .service_id
                .parse()
                .map_err(|_| corrupt_id("service", &row.service_id))?;
            route_names.insert(row.id, row.name.clone());
            routes.insert(
                row.name,
                (id, service_id, serde_json::from_str(&row.spec).ok()),
            );
        }
        let mut policies = HashMap::new();
        for row in policy_rows {
            let id: PolicyId = row.id.parse().map_err(|_| corrupt_id("policy", &row.id))?;
            let scope = match (&row.service_id, &row.route_id) {
                (None, None) => Some(ScopeName::Global),
                (Some(s), None) => service_names.get(s).cloned().map(ScopeName::Service),
                (None, Some(r)) => route_names.get(r).cloned().map(ScopeName::Route),
                (Some(_), Some(_)) => None,
            }
            .ok_or_else(|| StoreError::Corrupt(format!("policy {}: bad scope", row.id)))?;
            policies.insert(
                (scope, row.name),
                (id, serde_json::from_str(&row.config).ok()),
            );
        }
        let issuers = issuer_rows
            .into_iter()
            .map(|row| {
                let spec = sql::JWT_ISSUERS.spec(&row).ok();
                (row.name, (row.id, spec))
            })
            .collect();
        let plans = plan_rows
            .into_iter()
            .map(|row| {
                let spec = sql::PLANS.spec(&row).ok();
                (row.name, (row.id, spec))
            })
            .collect();
        Ok(Current {
            services,
            routes,
            policies,
            issuers,
            plans,
        })
    }
}

/// One write of an apply.
enum Step {
    CreateService(ServiceId, ServiceSpec),
    UpdateService(ServiceId, ServiceSpec),
    CreateRoute(RouteId, ServiceId, RouteSpec),
    UpdateRoute(RouteId, ServiceId, RouteSpec),
    CreatePolicy(PolicyId, PolicyScope, PolicySpec, ScopeName),
    UpdatePolicy(PolicyId, PolicySpec),
    DeletePolicy(PolicyId),
    DeleteRoute(RouteId),
    DeleteService(ServiceId),
    CreateIssuer(String, JwtIssuerSpec),
    UpdateIssuer(String, JwtIssuerSpec),
    DeleteIssuer(String),
    CreatePlan(String, PlanSpec),
    UpdatePlan(String, PlanSpec),
    /// (id, name).
    DeletePlan(String, String),
}

impl Step {
    async fn run(&self, conn: &mut Conn, now: i64) -> Result<(), StoreError> {
        match self {
            Step::CreateService(id, spec) => sql::insert_service(conn, id, spec, now).await,
            Step::UpdateService(id, spec) => sql::update_service(conn, id, spec, now)
                .await?
                .map(drop)
                .ok_or_else(|| StoreError::not_found("service", id)),
            Step::CreateRoute(id, service_id, spec) => {
                sql::insert_route(conn, id, service_id, spec, now).await
            }
            Step::UpdateRoute(id, service_id, spec) => {
                sql::update_route(conn, id, Some(service_id), spec, now)
                    .await?
                    .map(drop)
                    .ok_or_else(|| StoreError::not_found("route", id))
            }
            Step::CreatePolicy(id, scope, spec, scope_name) => {
                sql::insert_policy(conn, id, scope, spec, &scope_name.label(), now).await
            }
            Step::UpdatePolicy(id, spec) => sql::update_policy(conn, id, spec, now)
                .await?
                .map(drop)
                .ok_or_else(|| StoreError::not_found("policy", id)),
            // Deletions may find the row already gone through a cascade.
            Step::DeletePolicy(id) => sql::delete_policy(conn, id).await.map(drop),
            Step::DeleteRoute(id) => sql::delete_route(conn, id).await.map(drop),
            Step::DeleteService(id) => sql::delete_service(conn, id).await.map(drop),
            Step::CreateIssuer(id, spec) => sql::JWT_ISSUERS.insert(conn, id, spec, now).await,
            Step::UpdateIssuer(id, spec) => sql::JWT_ISSUERS
                .update(conn, id, spec, now)
                .await?
                .then_some(())
                .ok_or_else(|| StoreError::not_found("jwt_issuer", &spec.name)),
            Step::DeleteIssuer(id) => sql::JWT_ISSUERS.delete(conn, id, id).await.map(drop),
            Step::CreatePlan(id, spec) => sql::PLANS.insert(conn, id, spec, now).await,
            Step::UpdatePlan(id, spec) => sql::PLANS
                .update(conn, id, spec, now)
                .await?
                .then_some(())
                .ok_or_else(|| StoreError::not_found("plan", &spec.name)),
            Step::DeletePlan(id, name) => {
                sql::ensure_plan_unused(conn, name).await?;
                sql::PLANS.delete(conn, id, name).await.map(drop)
            }
        }
    }
}

struct Plan {
    steps: Vec<Step>,
    changes: ChangeSet,
}

/// Works out the steps that turn `current` into `config`.
fn plan(mut current: Current, config: &Config) -> Plan {
    let mut upserts = Vec::new();
    let mut policy_upserts = Vec::new();
    let mut changes = Vec::new();
    let mut change = |kind, name: String, op| changes.push(Change { kind, name, op });

    // Desired policies, collected while walking services and routes.
    let mut desired_policies: Vec<(ScopeName, PolicyScope, &PolicySpec)> = Vec::new();
    for policy in &config.policies {
        desired_policies.push((ScopeName::Global, PolicyScope::Global, policy));
    }

    // Services, then routes: two passes, so that every route's target
    // service exists (created or updated) before routes are written.
    let mut route_steps = Vec::new();
    for service in &config.services {
        let (spec, _, _) = service.clone().into_parts();
        let name = spec.name.clone();
        let service_id = match current.services.remove(&name) {
            Some((id, old)) => {
                if old.as_ref() != Some(&spec) {
                    change(Kind::Service, name.clone(), Op::Update);
                    upserts.push(Step::UpdateService(id.clone(), spec));
                }
                id
            }
            None => {
                let id = ServiceId::new();
                change(Kind::Service, name.clone(), Op::Create);
                upserts.push(Step::CreateService(id.clone(), spec));
                id
            }
        };
        for policy in &service.policies {
            desired_policies.push((
                ScopeName::Service(name.clone()),
                PolicyScope::Service(service_id.clone()),
                policy,
            ));
        }
        for route in &service.routes {
            let (rspec, _) = route.clone().into_parts();
            let rname = rspec.name.clone();
            let route_id = match current.routes.remove(&rname) {
                Some((id, old_service, old)) => {
                    if old_service != service_id || old.as_ref() != Some(&rspec) {
                        change(Kind::Route, rname.clone(), Op::Update);
                        route_steps.push(Step::UpdateRoute(id.clone(), service_id.clone(), rspec));
                    }
                    id
                }
                None => {
                    let id = RouteId::new();
                    change(Kind::Route, rname.clone(), Op::Create);
                    route_steps.push(Step::CreateRoute(id.clone(), service_id.clone(), rspec));
                    id
                }
            };
            for policy in &route.policies {
                desired_policies.push((
                    ScopeName::Route(rname.clone()),
                    PolicyScope::Route(route_id.clone()),
                    policy,
                ));
            }
        }
    }
    upserts.extend(route_steps);

    for (scope_name, scope, spec) in desired_policies {
        let key = (scope_name, spec.name().to_owned());
        let display = format!("{}/{}", key.0, key.1);
        match current.policies.remove(&key) {
            Some((id, old)) => {
                if old.as_ref() != Some(spec) {
                    change(Kind::Policy, display, Op::Update);
                    policy_upserts.push(Step::UpdatePolicy(id, spec.clone()));
                }
            }
            None => {
                change(Kind::Policy, display, Op::Create);
                policy_upserts.push(Step::CreatePolicy(
                    PolicyId::new(),
                    scope,
                    spec.clone(),
                    key.0,
                ));
            }
        }
    }

    for spec in &config.jwt_issuers {
        match current.issuers.remove(&spec.name) {
            Some((id, old)) => {
                if old.as_ref() != Some(spec) {
                    change(Kind::JwtIssuer, spec.name.clone(), Op::Update);
                    policy_upserts.push(Step::UpdateIssuer(id, spec.clone()));
                }
            }
            None => {
                change(Kind::JwtIssuer, spec.name.clone(), Op::Create);
                policy_upserts.push(Step::CreateIssuer(sql::JWT_ISSUERS.new_id(), spec.clone()));
            }
        }
    }

    for spec in &config.plans {
        match current.plans.remove(&spec.name) {
            Some((id, old)) => {
                if old.as_ref() != Some(spec) {
                    change(Kind::Plan, spec.name.clone(), Op::Update);
                    policy_upserts.push(Step::UpdatePlan(id, spec.clone()));
                }
            }
            None => {
                change(Kind::Plan, spec.name.clone(), Op::Create);
                policy_upserts.push(Step::CreatePlan(sql::PLANS.new_id(), spec.clone()));
            }
        }
    }

    // Whatever is left is not in the desired config.
    let mut steps = upserts;
    steps.extend(policy_upserts);
    for (name, (id, _)) in current.issuers {
        change(Kind::JwtIssuer, name, Op::Delete);
        steps.push(Step::DeleteIssuer(id));
    }
    for (name, (id, _)) in current.plans {
        change(Kind::Plan, name.clone(), Op::Delete);
        steps.push(Step::DeletePlan(id, name));
    }
    for ((scope_name, name), (id, _)) in current.policies {
        change(Kind::Policy, format!("{scope_name}/{name}"), Op::Delete);
        steps.push(Step::DeletePolicy(id));
    }
    for (name, (id, _, _)) in current.routes {
        change(Kind::Route, name, Op::Delete);
        steps.push(Step::DeleteRoute(id));
    }
    for (name, (id, _)) in current.services {
        change(Kind::Service, name, Op::Delete);
        steps.push(Step::DeleteService(id));
    }

    changes.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Plan {
        steps,
        changes: ChangeSet { changes },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "test.yaml").expect("valid config")
    }

    fn empty() -> Current {
        Current {
            services: HashMap::new(),
            routes: HashMap::new(),
            policies: HashMap::new(),
            issuers: HashMap::new(),
            plans: HashMap::new(),
        }
    }

    #[test]
    fn plan_from_empty_creates_in_dependency_order() {
        let cfg = config(
            r#"
services:
  - name: orders
    url: http://127.0.0.1:9000
    policies: [{name: cors, config: {origins: ["*"]}}]
    routes:
      - name: orders
        paths: [/orders]
        policies: [{name: request_size_limit, config: {max_bytes: 10}}]
policies: [{name: cors, config: {origins: ["*"]}}]
"#,
        );
        let plan = plan(empty(), &cfg);
        let names: Vec<String> = plan.changes.changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            names,
            [
                "+ service orders",
                "+ route orders",
                "+ policy global/cors",
                "+ policy route:orders/request_size_limit",
                "+ policy service:orders/cors",
            ]
        );
        assert!(matches!(plan.steps[0], Step::CreateService(..)));
        assert!(matches!(plan.steps[1], Step::CreateRoute(..)));
        assert!(
            plan.steps[2..]
                .iter()
                .all(|s| matches!(s, Step::CreatePolicy(..)))
        );
    }

    #[test]
    fn unparsable_stored_spec_is_rewritten() {
        let cfg = config("services: [{name: a, url: 'http://127.0.0.1:1'}]\n");
        let mut current = empty();
        current
            .services
            .insert("a".into(), (ServiceId::new(), None));
        let plan = plan(current, &cfg);
        assert_eq!(plan.changes.changes[0].op, Op::Update);
    }
}
