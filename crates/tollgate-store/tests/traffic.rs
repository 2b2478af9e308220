//! Traffic control on both backends: plans as configuration (CRUD, the
//! revision, export/apply/diff), subscriptions as tenant data (CRUD,
//! validation, uniqueness, isolation, the change feed and the snapshot),
//! organizations' time zones, and the usage counters gateways persist.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Map, json};
use tollgate_core::config::{PlanLimits, PlanSpec};
use tollgate_core::identity::KeyEnvironment;
use tollgate_core::ids::{AppId, KeyId, OrgId, SubscriptionId};
use tollgate_store::{
    ChangeEntity, Kind, NewApiKey, NewSubscription, Op, OrgUpdate, Page, Store, StoreError,
    SubscriptionUpdate, UsageDelta, backend_tests,
};

const PLANS: &str = r#"
services:
  - name: orders
    url: http://127.0.0.1:9000
  - name: billing
    url: http://127.0.0.1:9001
plans:
  - name: pro
    title: Pro
    limits: {per_second: 10, burst: 20, monthly_quota: 100000}
    apis: [orders]
    scopes: [orders:read]
    pricing: {currency: USD, monthly_fee: 4900, included_requests: 100000, overage_per_1000: 5}
  - name: free
    limits: {per_minute: 60, monthly_quota: 1000}
"#;

fn new_key(name: &str) -> NewApiKey {
    let mut key_hash = [0u8; 32];
    key_hash[..16].copy_from_slice(&ulid::Ulid::new().0.to_be_bytes());
    key_hash[16..].copy_from_slice(&ulid::Ulid::new().0.to_be_bytes());
    NewApiKey {
        name: name.into(),
        environment: KeyEnvironment::Live,
        key_hash,
        display_prefix: "tg_live_AbCd".into(),
        scopes: vec![],
        metadata: Map::new(),
        expires_at: None,
    }
}

fn plan(json: serde_json::Value) -> PlanSpec {
    serde_json::from_value(json).unwrap()
}

fn limits(json: serde_json::Value) -> PlanLimits {
    serde_json::from_value(json).unwrap()
}

fn sub(plan: &str) -> NewSubscription {
    NewSubscription {
        plan: plan.into(),
        ..NewSubscription::default()
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, kind: &str, id: &str) {
    match result {
        Err(StoreError::NotFound { kind: k, id: i }) => assert_eq!((k, i.as_str()), (kind, id)),
        other => panic!("expected {kind} `{id}` NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(msg)) => msg,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// An organization with two apps, a key of the first, and the plans above.
struct Fixture {
    org: OrgId,
    app: AppId,
    other_app: AppId,
    key: KeyId,
}

async fn fixture(store: &Store, name: &str) -> Fixture {
    if store.get_plan("free").await.is_err() {
        store.apply(&config(PLANS)).await.unwrap();
    }
    let org = store.create_org(name, name).await.unwrap().id;
    let t = store.tenant(&org);
    let app = t.create_app("web", "", Map::new()).await.unwrap().id;
    let other_app = t.create_app("batch", "", Map::new()).await.unwrap().id;
    let key = t.create_key(&app, new_key("main")).await.unwrap().id;
    Fixture {
        org,
        app,
        other_app,
        key,
    }
}

/// The subscription changes after `after`, as ids.
async fn sub_changes(store: &Store, after: i64) -> Vec<String> {
    store
        .identity_changes(after, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.entity == ChangeEntity::Subscription)
        .map(|c| c.entity_id)
        .collect()
}

backend_tests! {
    async fn plans_are_configuration(store) {
        let cfg = config(PLANS);
        let changes = store.apply(&cfg).await.unwrap();
        let lines: Vec<String> = changes.changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(lines, ["+ service billing", "+ service orders", "+ plan free", "+ plan pro"]);
        assert_eq!(changes.changes[2].kind, Kind::Plan);
        assert_eq!(store.revision().await.unwrap(), 1);

        // Export holds them sorted by name, and applies back to nothing.
        let (_, exported) = store.export().await.unwrap();
        assert_eq!(exported.plans, vec![cfg.plans[1].clone(), cfg.plans[0].clone()]);
        assert!(exported.to_yaml().contains("monthly_quota: 100000"));
        assert!(store.apply(&config(&exported.to_yaml())).await.unwrap().is_empty());
        assert_eq!(store.list_plans().await.unwrap(), exported.plans);
        assert_eq!(store.get_plan("pro").await.unwrap(), cfg.plans[0]);
        assert_not_found(store.get_plan("gold").await, "plan", "gold");

        // CRUD; every write bumps the revision, so gateways reload plans.
        let rev = store.revision().await.unwrap();
        let gold = plan(json!({"name": "gold", "limits": {"per_hour": 5000}, "apis": ["orders", "billing"]}));
        assert_eq!(store.create_plan(gold.clone()).await.unwrap(), gold);
        assert!(assert_conflict(store.create_plan(gold.clone()).await).contains("gold"));
        let mut gold2 = gold.clone();
        gold2.limits.per_hour = Some(9000);
        store.update_plan(gold2.clone()).await.unwrap();
        assert_eq!(store.get_plan("gold").await.unwrap(), gold2);
        assert_eq!(store.revision().await.unwrap(), rev + 2);
        assert_not_found(store.update_plan(plan(json!({"name": "nope"}))).await, "plan", "nope");

        // Validation: the plan's own rules, and `apis` must name services.
        assert_eq!(invalid_paths(store.create_plan(plan(json!({"name": "z", "limits": {"per_second": 0}}))).await), ["limits.per_second"]);
        assert_eq!(invalid_paths(store.create_plan(plan(json!({"name": "z", "apis": ["orders", "nowhere"]}))).await), ["apis[1]"]);
        assert_eq!(invalid_paths(store.update_plan(plan(json!({"name": "gold", "limits": {"burst": 5}}))).await), ["limits.burst"]);
        assert_eq!(store.revision().await.unwrap(), rev + 2, "failed writes leave the revision");

        // A service a plan includes can be neither deleted nor renamed.
        let billing = store.get_service_by_name("billing").await.unwrap();
        assert!(assert_conflict(store.delete_service(&billing.id).await).contains("gold"));
        let mut renamed = billing.spec.clone();
        renamed.name = "invoices".into();
        assert!(assert_conflict(store.update_service(&billing.id, renamed).await).contains("gold"));
        let mut retimed = billing.spec.clone();
        retimed.retries = 0;
        store.update_service(&billing.id, retimed).await.unwrap();

        // Declarative: the file is the truth, plans made by the API included.
        assert_eq!(store.diff(&cfg).await.unwrap().to_string(), "~ service billing\n- plan gold");
        let changed = config(&PLANS.replace("per_minute: 60", "per_minute: 120"));
        assert_eq!(store.diff(&changed).await.unwrap().to_string(), "~ service billing\n~ plan free\n- plan gold");
        store.apply(&changed).await.unwrap();
        assert_eq!(store.get_plan("free").await.unwrap().limits.per_minute, Some(120));
        store.delete_plan("pro").await.unwrap();
        assert_not_found(store.delete_plan("pro").await, "plan", "pro");
        assert_eq!(store.diff(&changed).await.unwrap().to_string(), "+ plan pro");
        let wipe = store.apply(&config("{}")).await.unwrap();
        assert!(wipe.changes.iter().any(|c| c.kind == Kind::Plan && c.op == Op::Delete));
        assert!(store.list_plans().await.unwrap().is_empty());
    }

    async fn subscribed_plans_cannot_be_deleted(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let s = t.create_subscription(sub("free")).await.unwrap();
        let rev = store.revision().await.unwrap();
        assert!(assert_conflict(store.delete_plan("free").await).contains("free"));
        // Nor by applying a configuration without it: nothing changes.
        let without = config(&PLANS.replace("  - name: free\n    limits: {per_minute: 60, monthly_quota: 1000}\n", ""));
        assert_eq!(without.plans.len(), 1);
        assert!(assert_conflict(store.apply(&without).await).contains("free"));
        assert_eq!(store.revision().await.unwrap(), rev);
        assert!(store.get_plan("free").await.is_ok());
        // Once the subscription moves, the plan goes.
        t.update_subscription(&s.id, SubscriptionUpdate { plan: Some("pro".into()), ..Default::default() }).await.unwrap();
        store.apply(&without).await.unwrap();
        assert_not_found(store.get_plan("free").await, "plan", "free");
    }

    async fn subscription_crud(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let org_wide = t.create_subscription(sub("free")).await.unwrap();
        assert!(org_wide.id.as_str().starts_with("sub_"));
        assert_eq!((org_wide.app_id.as_ref(), org_wide.key_id.as_ref(), org_wide.api.as_deref()), (None, None, None));
        assert_eq!(org_wide.overrides, PlanLimits::default());
        let app_orders = t.create_subscription(NewSubscription {
            plan: "pro".into(),
            api: Some("orders".into()),
            app_id: Some(f.app.clone()),
            overrides: limits(json!({"monthly_quota": 5})),
            ..NewSubscription::default()
        }).await.unwrap();
        assert_eq!(app_orders.app_id.as_ref(), Some(&f.app));
        assert_eq!(app_orders.overrides.monthly_quota, Some(5));
        let key_level = t.create_subscription(NewSubscription {
            app_id: Some(f.app.clone()),
            key_id: Some(f.key.clone()),
            ..sub("free")
        }).await.unwrap();
        assert_eq!(t.get_subscription(&key_level.id).await.unwrap(), key_level);

        // Keyset pages, oldest first.
        let (sizes, ids) = walk(2, |s: &tollgate_store::Subscription| s.id.to_string(), |p| t.list_subscriptions(p)).await;
        assert_eq!(sizes, [2, 1]);
        assert_eq!(ids, [org_wide.id.to_string(), app_orders.id.to_string(), key_level.id.to_string()]);

        // Change the plan, then the overrides; each leaves the other alone.
        let moved = t.update_subscription(&org_wide.id, SubscriptionUpdate { plan: Some("pro".into()), overrides: None }).await.unwrap();
        assert_eq!((moved.plan.as_str(), moved.created_at), ("pro", org_wide.created_at));
        let over = limits(json!({"per_second": 1, "burst": 2}));
        let tuned = t.update_subscription(&org_wide.id, SubscriptionUpdate { plan: None, overrides: Some(over.clone()) }).await.unwrap();
        assert_eq!((tuned.plan.as_str(), &tuned.overrides), ("pro", &over));
        assert_eq!(t.get_subscription(&org_wide.id).await.unwrap(), tuned);

        t.delete_subscription(&key_level.id).await.unwrap();
        assert_not_found(t.get_subscription(&key_level.id).await, "subscription", key_level.id.as_str());
        assert_not_found(t.delete_subscription(&key_level.id).await, "subscription", key_level.id.as_str());
        assert_eq!(t.list_subscriptions(Page::default()).await.unwrap().items.len(), 2);
        // Subscriptions are not configuration: the revision never moved.
        assert_eq!(store.revision().await.unwrap(), 1);
    }

    async fn subscription_validation(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let bad = |plan: &str, api: Option<&str>, over: serde_json::Value| NewSubscription {
            plan: plan.into(),
            api: api.map(str::to_owned),
            overrides: limits(over),
            ..NewSubscription::default()
        };
        assert_eq!(invalid_paths(t.create_subscription(bad("gold", None, json!({}))).await), ["plan"]);
        assert_eq!(invalid_paths(t.create_subscription(bad("free", Some("nowhere"), json!({}))).await), ["api"]);
        // `pro` includes `orders` only.
        assert_eq!(invalid_paths(t.create_subscription(bad("pro", Some("billing"), json!({}))).await), ["api"]);
        assert_eq!(
            invalid_paths(t.create_subscription(bad("free", None, json!({"monthly_quota": 0, "concurrency": 0}))).await),
            ["overrides.monthly_quota", "overrides.concurrency"],
        );
        // A burst needs a per-second rate: the plan's or the override's.
        assert_eq!(invalid_paths(t.create_subscription(bad("free", None, json!({"burst": 3}))).await), ["overrides.burst"]);
        t.create_subscription(bad("pro", None, json!({"burst": 3}))).await.unwrap();
        assert_eq!(invalid_paths(t.create_subscription(bad("gold", Some("nowhere"), json!({"per_hour": 0}))).await), ["plan", "api", "overrides.per_hour"]);

        // A key needs its app, and must be that app's.
        let keyed = |app: Option<&AppId>, key: &KeyId| NewSubscription {
            app_id: app.cloned(),
            key_id: Some(key.clone()),
            ..sub("free")
        };
        assert_eq!(invalid_paths(t.create_subscription(keyed(None, &f.key)).await), ["key_id"]);
        assert_eq!(invalid_paths(t.create_subscription(keyed(Some(&f.other_app), &f.key)).await), ["key_id"]);
        let missing = KeyId::new();
        assert_not_found(t.create_subscription(keyed(Some(&f.app), &missing)).await, "api_key", missing.as_str());
        let gone = AppId::new();
        assert_not_found(t.create_subscription(NewSubscription { app_id: Some(gone.clone()), ..sub("free") }).await, "app", gone.as_str());
        let nowhere = OrgId::new();
        assert_not_found(store.tenant(&nowhere).create_subscription(sub("free")).await, "organization", nowhere.as_str());

        // Updates are checked the same way against the subscription's API.
        let s = t.create_subscription(bad("pro", Some("orders"), json!({}))).await.unwrap();
        let upd = |plan: &str| SubscriptionUpdate { plan: Some(plan.into()), overrides: None };
        assert_eq!(invalid_paths(t.update_subscription(&s.id, upd("gold")).await), ["plan"]);
        t.update_subscription(&s.id, upd("free")).await.unwrap();
        let zero = SubscriptionUpdate { plan: None, overrides: Some(limits(json!({"per_minute": 0}))) };
        assert_eq!(invalid_paths(t.update_subscription(&s.id, zero).await), ["overrides.per_minute"]);
        assert_eq!(t.get_subscription(&s.id).await.unwrap().plan, "free");
    }

    async fn one_subscription_per_target_and_api(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let target = |app: Option<&AppId>, key: Option<&KeyId>, api: Option<&str>| NewSubscription {
            app_id: app.cloned(),
            key_id: key.cloned(),
            api: api.map(str::to_owned),
            ..sub("free")
        };
        let all = [
            target(None, None, None),
            target(None, None, Some("orders")),
            target(Some(&f.app), None, None),
            target(Some(&f.app), None, Some("orders")),
            target(Some(&f.other_app), None, None),
            target(Some(&f.app), Some(&f.key), None),
            target(Some(&f.app), Some(&f.key), Some("orders")),
        ];
        for new in &all {
            t.create_subscription(new.clone()).await.unwrap();
        }
        for new in all {
            let msg = assert_conflict(t.create_subscription(NewSubscription { plan: "pro".into(), ..new }).await);
            assert!(msg.contains("already exists"), "{msg}");
        }
        // Another organization's identical targets are its own.
        let g = fixture(&store, "globex").await;
        store.tenant(&g.org).create_subscription(sub("free")).await.unwrap();
        assert_eq!(t.list_subscriptions(Page::default()).await.unwrap().items.len(), 7);
    }

    async fn tenants_cannot_reach_each_other(store) {
        let a = fixture(&store, "alpha").await;
        let b = fixture(&store, "beta").await;
        let ta = store.tenant(&a.org);
        let tb = store.tenant(&b.org);
        let s = ta.create_subscription(NewSubscription { app_id: Some(a.app.clone()), ..sub("free") }).await.unwrap();
        let seq = store.identity_seq().await.unwrap();
        let id = s.id.as_str();
        assert_not_found(tb.get_subscription(&s.id).await, "subscription", id);
        assert_not_found(tb.update_subscription(&s.id, SubscriptionUpdate { plan: Some("pro".into()), overrides: None }).await, "subscription", id);
        assert_not_found(tb.delete_subscription(&s.id).await, "subscription", id);
        // Nor subscribe A's app or key.
        assert_not_found(tb.create_subscription(NewSubscription { app_id: Some(a.app.clone()), ..sub("free") }).await, "app", a.app.as_str());
        let foreign_key = NewSubscription { app_id: Some(b.app.clone()), key_id: Some(a.key.clone()), ..sub("free") };
        assert_not_found(tb.create_subscription(foreign_key).await, "api_key", a.key.as_str());
        assert!(tb.list_subscriptions(Page::default()).await.unwrap().items.is_empty());
        assert_eq!(ta.get_subscription(&s.id).await.unwrap(), s);
        assert_eq!(store.identity_seq().await.unwrap(), seq, "nothing reached the feed");
    }

    async fn every_subscription_write_is_in_the_feed(store) {
        let f = fixture(&store, "acme").await;
        let g = fixture(&store, "globex").await;
        let t = store.tenant(&f.org);
        let seq = store.identity_seq().await.unwrap();
        let org_wide = t.create_subscription(sub("free")).await.unwrap();
        let on_app = t.create_subscription(NewSubscription { app_id: Some(f.app.clone()), ..sub("free") }).await.unwrap();
        let on_key = t.create_subscription(NewSubscription { app_id: Some(f.app.clone()), key_id: Some(f.key.clone()), ..sub("free") }).await.unwrap();
        let on_other = t.create_subscription(NewSubscription { app_id: Some(f.other_app.clone()), ..sub("free") }).await.unwrap();
        let elsewhere = store.tenant(&g.org).create_subscription(sub("free")).await.unwrap();
        t.update_subscription(&org_wide.id, SubscriptionUpdate { plan: Some("pro".into()), overrides: None }).await.unwrap();
        t.delete_subscription(&on_other.id).await.unwrap();
        let ids = |subs: &[&tollgate_store::Subscription]| subs.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
        assert_eq!(
            sub_changes(&store, seq).await,
            ids(&[&org_wide, &on_app, &on_key, &on_other, &elsewhere, &org_wide, &on_other]),
        );
        assert_eq!(store.subscription_grant(&on_other.id).await.unwrap(), None);
        let grant = store.subscription_grant(&org_wide.id).await.unwrap().unwrap();
        assert_eq!((grant.plan.as_str(), grant.timezone.as_deref()), ("pro", None));

        // A time zone change re-announces the organization's subscriptions
        // (and no one else's); their grants carry the new zone.
        let seq = store.identity_seq().await.unwrap();
        let tz = |z: Option<&str>| OrgUpdate { display_name: None, timezone: Some(z.map(str::to_owned)) };
        let org = store.patch_org(&f.org, tz(Some("Europe/Berlin"))).await.unwrap();
        assert_eq!(org.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(sub_changes(&store, seq).await, ids(&[&org_wide, &on_app, &on_key]));
        let grant = store.subscription_grant(&on_key.id).await.unwrap().unwrap();
        assert_eq!(grant.timezone.as_deref(), Some("Europe/Berlin"));
        assert_eq!((grant.app_id.as_ref(), grant.key_id.as_ref()), (Some(&f.app), Some(&f.key)));
        // The same zone again, or a display name, announces nothing.
        let seq = store.identity_seq().await.unwrap();
        store.patch_org(&f.org, tz(Some("Europe/Berlin"))).await.unwrap();
        store.update_org(&f.org, "Acme").await.unwrap();
        assert!(sub_changes(&store, seq).await.is_empty());
        assert_eq!(invalid_paths(store.patch_org(&f.org, tz(Some("Mars/Olympus"))).await), ["timezone"]);
        let cleared = store.patch_org(&f.org, tz(None)).await.unwrap();
        assert_eq!((cleared.timezone, cleared.display_name.as_str()), (None, "Acme"));
        assert_eq!(sub_changes(&store, seq).await.len(), 3);

        // Deleting an app removes its subscriptions and its keys', announced.
        let seq = store.identity_seq().await.unwrap();
        t.delete_app(&f.app).await.unwrap();
        assert_eq!(sub_changes(&store, seq).await, ids(&[&on_app, &on_key]));
        assert_eq!(store.subscription_grant(&on_key.id).await.unwrap(), None);
        assert_eq!(t.list_subscriptions(Page::default()).await.unwrap().items.len(), 1);
        // Deleting the organization removes the rest.
        let seq = store.identity_seq().await.unwrap();
        store.delete_org(&f.org).await.unwrap();
        assert_eq!(sub_changes(&store, seq).await, ids(&[&org_wide]));
        assert_eq!(store.subscription_grant(&org_wide.id).await.unwrap(), None);
        assert!(store.subscription_grant(&elsewhere.id).await.unwrap().is_some());
        // Now the plan is free to go.
        store.tenant(&g.org).delete_subscription(&elsewhere.id).await.unwrap();
        store.delete_plan("free").await.unwrap();
    }

    async fn snapshot_holds_subscriptions_with_time_zones(store) {
        let f = fixture(&store, "acme").await;
        let g = store.create_org_with_timezone("globex", "Globex", Some("America/New_York")).await.unwrap();
        assert_eq!(store.get_org(&g.id).await.unwrap().timezone.as_deref(), Some("America/New_York"));
        assert_eq!(invalid_paths(store.create_org_with_timezone("x", "X", Some("Nowhere/Land")).await), ["timezone"]);
        let a = store.tenant(&f.org).create_subscription(NewSubscription {
            app_id: Some(f.app.clone()),
            api: Some("orders".into()),
            overrides: limits(json!({"monthly_quota": 7})),
            ..sub("pro")
        }).await.unwrap();
        let b = store.tenant(&g.id).create_subscription(sub("free")).await.unwrap();
        let snap = store.identity_snapshot().await.unwrap();
        assert_eq!(snap.seq, store.identity_seq().await.unwrap());
        assert_eq!(snap.subscriptions.len(), 2);
        let ga = &snap.subscriptions[0];
        assert_eq!((&ga.id, &ga.org_id, ga.app_id.as_ref(), ga.key_id.as_ref()), (&a.id, &f.org, Some(&f.app), None));
        assert_eq!((ga.plan.as_str(), ga.api.as_deref(), ga.overrides.monthly_quota, ga.timezone.as_deref()), ("pro", Some("orders"), Some(7), None));
        let gb = &snap.subscriptions[1];
        assert_eq!((&gb.id, gb.timezone.as_deref()), (&b.id, Some("America/New_York")));
        assert_eq!(store.subscription_grant(&b.id).await.unwrap().as_ref(), Some(gb));
        assert_eq!(store.subscription_grant(&SubscriptionId::new()).await.unwrap(), None);
    }

    async fn usage_counters_add_up(store) {
        let d = |subject: &str, counter: &str, period_start: i64, delta: i64| UsageDelta {
            subject: subject.into(),
            counter: counter.into(),
            period_start,
            delta,
        };
        assert_eq!(store.usage_counter("sub_a", "month", 1000).await.unwrap(), 0);
        store.add_usage(&[]).await.unwrap();
        store.add_usage(&[d("sub_a", "month", 1000, 5), d("sub_a", "month", 1000, 2), d("sub_b", "month", 1000, 1)]).await.unwrap();
        store.add_usage(&[d("sub_a", "month", 1000, 3), d("sub_a", "month", 2000, 4), d("sub_a", "day", 1000, 0)]).await.unwrap();
        assert_eq!(store.usage_counter("sub_a", "month", 1000).await.unwrap(), 10);
        assert_eq!(store.usage_counter("sub_a", "month", 2000).await.unwrap(), 4);
        assert_eq!(store.usage_counter("sub_b", "month", 1000).await.unwrap(), 1);
        assert_eq!(store.usage_counter("sub_a", "day", 1000).await.unwrap(), 0, "a zero delta writes nothing");

        let rows = store.usage_counters_since(1000).await.unwrap();
        let seen: Vec<(&str, &str, i64, i64)> = rows.iter().map(|r| (r.subject.as_str(), r.counter.as_str(), r.period_start, r.count)).collect();
        assert_eq!(seen, [("sub_a", "month", 1000, 10), ("sub_a", "month", 2000, 4), ("sub_b", "month", 1000, 1)]);
        assert!(rows.iter().all(|r| r.updated_at > 0));
        let later = store.usage_counters_since(1001).await.unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].period_start, 2000);
        // Counters are neither configuration nor identity.
        assert_eq!(store.revision().await.unwrap(), 0);
        assert_eq!(store.identity_seq().await.unwrap(), 0);

        // Concurrent batches from several "nodes" lose nothing.
        let mut tasks = Vec::new();
        for task in 0..8i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50i64 {
                    let batch = [
                        UsageDelta { subject: "sub_c".into(), counter: "month".into(), period_start: 0, delta: 1 + (i % 3) },
                        UsageDelta { subject: format!("sub_t{task}"), counter: "month".into(), period_start: 0, delta: 1 },
                    ];
                    store.add_usage(&batch).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let per_task: i64 = (0..50i64).map(|i| 1 + (i % 3)).sum();
        assert_eq!(store.usage_counter("sub_c", "month", 0).await.unwrap(), 8 * per_task);
        for task in 0..8 {
            assert_eq!(store.usage_counter(&format!("sub_t{task}"), "month", 0).await.unwrap(), 50);
        }
    }
}
