//! The audit log on both backends: entries round-trip whole, secrets are
//! redacted on the way in, appending leaves the configuration revision
//! alone, every filter selects what it names, and pages walk in id order.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Duration, Utc};
use common::walk;
use serde_json::json;
use tollgate_core::ids::{AuditId, OrgId};
use tollgate_store::{AuditEntry, AuditFilter, Page, REDACTED, Store, StoreError, backend_tests};

fn entry(action: &str) -> AuditEntry {
    let resource_type = action.split('.').next().unwrap().to_owned();
    AuditEntry {
        id: AuditId::new(),
        at: Utc::now(),
        actor: "admin_token:0123456789ab".into(),
        action: action.into(),
        resource_type,
        resource_id: Some("svc_01jd5m3x9q7k2v8r4t6y0w1zab".into()),
        org_id: None,
        status: 200,
        before: None,
        after: Some(json!({"name": "orders"})),
        ip: Some("127.0.0.1".into()),
        request_id: "req-1".into(),
    }
}

/// Millisecond precision, as stored.
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

async fn all(store: &Store, filter: AuditFilter) -> Vec<AuditEntry> {
    store
        .list_audit(&filter, Page::first(1000))
        .await
        .unwrap()
        .items
}

fn actions(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.action.as_str()).collect()
}

backend_tests! {
    async fn entries_round_trip_without_bumping_the_revision(store) {
        let revision = store.revision().await.unwrap();
        let org = OrgId::new();
        let mut full = entry("key.revoke");
        full.at = ms(full.at);
        full.org_id = Some(org.clone());
        full.resource_id = Some("key_01jd5m3x9q7k2v8r4t6y0w1zab".into());
        full.before = Some(json!({"revoked_at": null, "scopes": ["a"]}));
        full.after = Some(json!({"revoked_at": "2025-01-01T00:00:00Z", "scopes": ["a"]}));
        full.ip = Some("2001:db8::1".into());
        store.append_audit(&full).await.unwrap();

        let mut sparse = entry("signing_key.rotate");
        sparse.at = ms(sparse.at);
        sparse.resource_id = None;
        sparse.before = None;
        sparse.after = None;
        sparse.ip = None;
        sparse.status = 503;
        store.append_audit(&sparse).await.unwrap();

        assert_eq!(all(&store, AuditFilter::default()).await, vec![full.clone(), sparse]);
        assert_eq!(store.revision().await.unwrap(), revision, "audit writes are not configuration");

        match store.append_audit(&full).await {
            Err(StoreError::Conflict(m)) => assert!(m.contains(full.id.as_str()), "{m}"),
            other => panic!("expected Conflict, got {other:?}"),
        }
    }

    async fn secrets_never_reach_the_table(store) {
        let secret = "tg_live_3kPz81QeVbN0sXy7LmA2cD4f1Hq9Zr";
        let mut e = entry("key.create");
        e.after = Some(json!({
            "key": {"id": "key_1", "display_prefix": "tg_live_3kPz", "metadata": {"copy": secret}},
            "secret": secret,
        }));
        e.before = Some(json!({"client_secret": "hunter2", "nested": [{"private_key": "pem"}]}));
        store.append_audit(&e).await.unwrap();
        let stored = all(&store, AuditFilter::default()).await.remove(0);
        let text = serde_json::to_string(&stored).unwrap();
        for s in [secret, "hunter2", "pem"] {
            assert!(!text.contains(s), "`{s}` was stored: {text}");
        }
        let after = stored.after.unwrap();
        assert_eq!(after["secret"], REDACTED);
        assert_eq!(after["key"]["metadata"]["copy"], REDACTED);
        assert_eq!(after["key"]["display_prefix"], "tg_live_3kPz");
        assert_eq!(stored.before.unwrap()["nested"][0]["private_key"], REDACTED);
    }

    async fn every_filter_selects_what_it_names(store) {
        let base = ms(Utc::now()) - Duration::hours(1);
        let org_a = OrgId::new();
        let org_b = OrgId::new();
        let specs = [
            ("service.create", "admin_token:aaaaaaaaaaaa", Some("svc_1"), None, 201, 0),
            ("service.update", "admin_token:aaaaaaaaaaaa", Some("svc_1"), None, 200, 1),
            ("service.update", "admin_token:bbbbbbbbbbbb", Some("svc_2"), None, 422, 2),
            ("app.create", "admin_token:bbbbbbbbbbbb", Some("app_1"), Some(&org_a), 201, 3),
            ("key.revoke", "admin_token:aaaaaaaaaaaa", Some("key_1"), Some(&org_a), 200, 4),
            ("app.delete", "admin_token:aaaaaaaaaaaa", Some("app_2"), Some(&org_b), 204, 5),
        ];
        for (action, actor, resource, org, status, minute) in specs {
            let mut e = entry(action);
            e.actor = actor.into();
            e.resource_id = resource.map(String::from);
            e.org_id = org.cloned();
            e.status = status;
            e.at = base + Duration::minutes(minute);
            store.append_audit(&e).await.unwrap();
        }
        let f = |edit: fn(&mut AuditFilter)| {
            let mut filter = AuditFilter::default();
            edit(&mut filter);
            filter
        };
        let cases: Vec<(AuditFilter, Vec<&str>)> = vec![
            (f(|f| f.actor = Some("admin_token:bbbbbbbbbbbb".into())), vec!["service.update", "app.create"]),
            (f(|f| f.action = Some("service.update".into())), vec!["service.update", "service.update"]),
            (f(|f| f.resource_type = Some("app".into())), vec!["app.create", "app.delete"]),
            (
                f(|f| {
                    f.resource_type = Some("service".into());
                    f.resource_id = Some("svc_1".into());
                }),
                vec!["service.create", "service.update"],
            ),
            (f(|f| f.status = Some(422)), vec!["service.update"]),
            (
                AuditFilter { org: Some(org_a.clone()), ..AuditFilter::default() },
                vec!["app.create", "key.revoke"],
            ),
            // `from` is inclusive, `to` exclusive.
            (
                AuditFilter {
                    from: Some(base + Duration::minutes(1)),
                    to: Some(base + Duration::minutes(3)),
                    ..AuditFilter::default()
                },
                vec!["service.update", "service.update"],
            ),
            (
                AuditFilter {
                    from: Some(base + Duration::minutes(4)),
                    actor: Some("admin_token:aaaaaaaaaaaa".into()),
                    ..AuditFilter::default()
                },
                vec!["key.revoke", "app.delete"],
            ),
            (f(|f| f.actor = Some("nobody".into())), vec![]),
        ];
        for (filter, expected) in cases {
            assert_eq!(actions(&all(&store, filter.clone()).await), expected, "{filter:?}");
        }
    }

    async fn pages_walk_in_id_order_under_a_filter(store) {
        let mut expected = Vec::new();
        for i in 0..7 {
            let e = entry(if i % 2 == 0 { "service.update" } else { "route.update" });
            store.append_audit(&e).await.unwrap();
            if i % 2 == 0 {
                expected.push(e.id.to_string());
            }
        }
        let filter = AuditFilter { action: Some("service.update".into()), ..AuditFilter::default() };
        let (sizes, ids) = walk(3, |e: &AuditEntry| e.id.to_string(), |page| store.list_audit(&filter, page)).await;
        assert_eq!(sizes, [3, 1]);
        assert_eq!(ids, expected);
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
