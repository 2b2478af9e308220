//! Plans and subscriptions in memory.
//!
//! Plans come with each configuration snapshot ([`Catalog::install_plans`]);
//! subscriptions come from the store's change feed. A plan change or a
//! subscription's new plan applies to the next request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use chrono_tz::Tz;
use tollgate_core::config::{PlanLimits, PlanSpec};
use tollgate_core::ids::{AppId, KeyId, OrgId, SubscriptionId};

/// A subscription as the gateway uses it.
#[derive(Debug, Clone)]
pub struct SubscriptionEntry {
    pub id: SubscriptionId,
    pub org: OrgId,
    pub app: Option<AppId>,
    pub key: Option<KeyId>,
    pub plan: String,
    /// The API (service name) it is for; `None` for every API.
    pub api: Option<String>,
    /// Limits that replace the plan's for this subscriber.
    pub overrides: PlanLimits,
    /// The organization's time zone, for the monthly quota.
    pub timezone: Tz,
}

impl SubscriptionEntry {
    /// The counter key of one of this subscription's plan limits. Counters
    /// follow the subscription, so a plan change keeps the month's count.
    pub fn counter(&self, limit: &str) -> String {
        crate::key(self.id.as_str(), limit)
    }

    fn owner(&self) -> &str {
        match (&self.key, &self.app) {
            (Some(k), _) => k.as_str(),
            (None, Some(a)) => a.as_str(),
            (None, None) => self.org.as_str(),
        }
    }
}

/// The counter name of a subscription's monthly quota.
pub const MONTHLY_QUOTA: &str = "plan-month";

#[derive(Debug, Default)]
struct Subscriptions {
    by_id: HashMap<SubscriptionId, Arc<SubscriptionEntry>>,
    /// By the id of what is subscribed: a key, an app or an organization.
    by_owner: HashMap<String, Vec<Arc<SubscriptionEntry>>>,
}

impl Subscriptions {
    fn insert(&mut self, e: Arc<SubscriptionEntry>) {
        self.remove(&e.id);
        self.by_owner
            .entry(e.owner().to_owned())
            .or_default()
            .push(e.clone());
        self.by_id.insert(e.id.clone(), e);
    }

    fn remove(&mut self, id: &SubscriptionId) {
        if let Some(old) = self.by_id.remove(id) {
            let owner = old.owner().to_owned();
            if let Some(list) = self.by_owner.get_mut(&owner) {
                list.retain(|e| e.id != *id);
                if list.is_empty() {
                    self.by_owner.remove(&owner);
                }
            }
        }
    }
}

/// Plans and subscriptions.
#[derive(Debug, Default)]
pub struct Catalog {
    plans: ArcSwap<HashMap<String, Arc<PlanSpec>>>,
    subs: RwLock<Subscriptions>,
}

/// A caller's subscription for an API, with its plan.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub subscription: Arc<SubscriptionEntry>,
    pub plan: Arc<PlanSpec>,
    /// The plan's limits with the subscription's overrides applied.
    pub limits: PlanLimits,
}

impl Catalog {
    pub fn new() -> Arc<Catalog> {
        Arc::new(Catalog::default())
    }

    /// Makes `plans` the current plans.
    pub fn install_plans(&self, plans: &[PlanSpec]) {
        self.plans.store(Arc::new(
            plans
                .iter()
                .map(|p| (p.name.clone(), Arc::new(p.clone())))
                .collect(),
        ));
    }

    pub fn plan(&self, name: &str) -> Option<Arc<PlanSpec>> {
        self.plans.load().get(name).cloned()
    }

    /// Replaces every subscription.
    pub fn replace_subscriptions(&self, all: impl IntoIterator<Item = SubscriptionEntry>) {
        let mut next = Subscriptions::default();
        for e in all {
            next.insert(Arc::new(e));
        }
        *self.subs.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    pub fn upsert_subscription(&self, e: SubscriptionEntry) {
        self.subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Arc::new(e));
    }

    pub fn remove_subscription(&self, id: &SubscriptionId) {
        self.subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn subscription(&self, id: &SubscriptionId) -> Option<Arc<SubscriptionEntry>> {
        self.subs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .cloned()
    }

    /// The subscription that applies to a caller for `api`: the key's, else
    /// the app's, else the organization's; at each level one for this API
    /// before one for every API. `None` when there is none or its plan is
    /// not configured.
    pub fn resolve(
        &self,
        org: Option<&str>,
        app: Option<&str>,
        key: Option<&str>,
        api: &str,
    ) -> Option<Resolved> {
        let found = {
            let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
            [key, app, org].into_iter().flatten().find_map(|owner| {
                let list = subs.by_owner.get(owner)?;
                list.iter()
                    .find(|e| e.api.as_deref() == Some(api))
                    .or_else(|| list.iter().find(|e| e.api.is_none()))
                    .filter(|e| org.is_none_or(|o| e.org.as_str() == o))
                    .cloned()
            })?
        };
        let plan = self.plan(&found.plan)?;
        let limits = plan.limits.overridden(&found.overrides);
        Some(Resolved {
            subscription: found,
            plan,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, per_second: u64) -> PlanSpec {
        PlanSpec {
            name: name.into(),
            title: None,
            description: None,
            limits: PlanLimits {
                per_second: Some(per_second),
                ..Default::default()
            },
            apis: vec![],
            scopes: vec![],
            pricing: None,
        }
    }

    fn sub(org: &OrgId, app: Option<&AppId>, plan: &str, api: Option<&str>) -> SubscriptionEntry {
        SubscriptionEntry {
            id: SubscriptionId::new(),
            org: org.clone(),
            app: app.cloned(),
            key: None,
            plan: plan.into(),
            api: api.map(str::to_owned),
            overrides: PlanLimits::default(),
            timezone: Tz::UTC,
        }
    }

    #[test]
    fn the_most_specific_subscription_wins() {
        let c = Catalog::new();
        c.install_plans(&[plan("free", 1), plan("pro", 10), plan("orders", 50)]);
        let (org, app) = (OrgId::new(), AppId::new());
        c.upsert_subscription(sub(&org, None, "free", None));
        let r = |api| {
            c.resolve(Some(org.as_str()), Some(app.as_str()), None, api)
                .map(|r| r.plan.name.clone())
        };
        assert_eq!(r("any").as_deref(), Some("free"));
        c.upsert_subscription(sub(&org, None, "orders", Some("orders")));
        assert_eq!(r("orders").as_deref(), Some("orders"));
        assert_eq!(r("other").as_deref(), Some("free"));
        let s = sub(&org, Some(&app), "pro", None);
        let id = s.id.clone();
        c.upsert_subscription(s);
        assert_eq!(r("orders").as_deref(), Some("pro"));
        c.remove_subscription(&id);
        assert_eq!(r("orders").as_deref(), Some("orders"));
    }

    #[test]
    fn a_plan_change_applies_at_once_and_overrides_win() {
        let c = Catalog::new();
        c.install_plans(&[plan("free", 1)]);
        let org = OrgId::new();
        let mut s = sub(&org, None, "free", None);
        c.upsert_subscription(s.clone());
        let get = || c.resolve(Some(org.as_str()), None, None, "api").unwrap();
        assert_eq!(get().limits.per_second, Some(1));
        c.install_plans(&[plan("free", 5)]);
        assert_eq!(get().limits.per_second, Some(5));
        s.overrides.per_second = Some(7);
        c.upsert_subscription(s);
        assert_eq!(get().limits.per_second, Some(7));
        // A plan that is no longer configured resolves to nothing.
        c.install_plans(&[]);
        assert!(c.resolve(Some(org.as_str()), None, None, "api").is_none());
    }

    #[test]
    fn another_orgs_subscription_is_never_used() {
        let c = Catalog::new();
        c.install_plans(&[plan("free", 1)]);
        let (a, b, app) = (OrgId::new(), OrgId::new(), AppId::new());
        c.upsert_subscription(sub(&a, Some(&app), "free", None));
        // A token claiming org B with org A's app id gets nothing.
        assert!(
            c.resolve(Some(b.as_str()), Some(app.as_str()), None, "x")
                .is_none()
        );
    }
}
