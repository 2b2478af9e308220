//! Single-resource operations on both backends: CRUD, pagination, conflicts,
//! cascades, validation, revisions and admin tokens.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tollgate_core::ids::{RouteId, ServiceId};
use tollgate_store::{Page, PolicyScope, StoreError, backend_tests};

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

backend_tests! {
    async fn services_crud_and_pagination(store) {
        let mut created = Vec::new();
        for i in 0..5 {
            let rec = store.create_service(service(&format!("svc{i}"))).await.unwrap();
            assert!(rec.id.as_str().starts_with("svc_"));
            assert_eq!(rec.created_at, rec.updated_at);
            created.push(rec.id.to_string());
        }
        let (sizes, ids) = walk(2, |r: &tollgate_store::ServiceRecord| r.id.to_string(), |p| {
            store.list_services(p)
        })
        .await;
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(ids, sorted(created.clone()), "every service once, in id order");

        let all = store.list_services(Page::default()).await.unwrap();
        assert_eq!(all.items.len(), 5);
        assert_eq!(all.next, None);

        let id: ServiceId = created[2].parse().unwrap();
        let got = store.get_service(&id).await.unwrap();
        assert_eq!(got.spec.name, "svc2");
        assert_eq!(store.get_service_by_name("svc2").await.unwrap().id, id);

        let mut spec = service("renamed");
        spec.url = Some("http://127.0.0.1:9999".into());
        let updated = store.update_service(&id, spec.clone()).await.unwrap();
        assert_eq!(updated.spec, spec);
        assert_eq!(updated.created_at, got.created_at);
        assert!(updated.updated_at >= got.updated_at);
        assert_eq!(store.get_service(&id).await.unwrap().spec, spec);
        assert!(matches!(
            store.get_service_by_name("svc2").await,
            Err(StoreError::NotFound { kind: "service", .. })
        ));

        store.delete_service(&id).await.unwrap();
        assert!(matches!(
            store.get_service(&id).await,
            Err(StoreError::NotFound { kind: "service", .. })
        ));
        assert!(matches!(
            store.delete_service(&id).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.update_service(&id, service("x")).await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.list_services(Page::default()).await.unwrap().items.len(), 4);
    }

    async fn routes_crud_and_pagination(store) {
        let a = store.create_service(service("a")).await.unwrap().id;
        let b = store.create_service(service("b")).await.unwrap().id;
        let mut on_a = Vec::new();
        for i in 0..5 {
            let rec = store.create_route(&a, route(&format!("r{i}"), "/x")).await.unwrap();
            assert_eq!(rec.service_id, a);
            on_a.push(rec.id.to_string());
        }
        let other = store.create_route(&b, route("other", "/y")).await.unwrap();

        let (sizes, ids) = walk(2, |r: &tollgate_store::RouteRecord| r.id.to_string(), |p| {
            store.list_routes(p, Some(&a))
        })
        .await;
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(ids, sorted(on_a.clone()));
        let (_, all) = walk(4, |r: &tollgate_store::RouteRecord| r.id.to_string(), |p| {
            store.list_routes(p, None)
        })
        .await;
        assert_eq!(all.len(), 6);
        let only_b = store.list_routes(Page::default(), Some(&b)).await.unwrap();
        assert_eq!(only_b.items, vec![other.clone()]);

        let updated = store.update_route(&other.id, route("other2", "/z")).await.unwrap();
        assert_eq!(updated.spec.paths, ["/z"]);
        assert_eq!(updated.service_id, b, "an update keeps the route's service");
        assert_eq!(store.get_route(&other.id).await.unwrap().spec.name, "other2");

        store.delete_route(&other.id).await.unwrap();
        assert!(matches!(
            store.get_route(&other.id).await,
            Err(StoreError::NotFound { kind: "route", .. })
        ));
        assert!(matches!(
            store.delete_route(&other.id).await,
            Err(StoreError::NotFound { kind: "route", .. })
        ));

        let missing = ServiceId::new();
        match store.create_route(&missing, route("orphan", "/o")).await {
            Err(StoreError::NotFound { kind: "service", id }) => assert_eq!(id, missing.as_str()),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    async fn policies_crud_and_pagination(store) {
        let svc = store.create_service(service("orders")).await.unwrap().id;
        let rt = store.create_route(&svc, route("orders", "/orders")).await.unwrap().id;
        let names = ["cors", "ip_restriction", "request_size_limit", "request_transformer", "response_transformer"];
        let mut global = Vec::new();
        for name in names {
            let rec = store.create_policy(PolicyScope::Global, policy(name)).await.unwrap();
            assert!(rec.id.as_str().starts_with("pol_"));
            global.push(rec.id.to_string());
        }
        let on_svc = store
            .create_policy(PolicyScope::Service(svc.clone()), policy("cors"))
            .await
            .unwrap();
        let on_rt = store
            .create_policy(PolicyScope::Route(rt.clone()), policy("cors"))
            .await
            .unwrap();
        assert_eq!(on_rt.scope, PolicyScope::Route(rt.clone()));

        let (sizes, ids) = walk(2, |r: &tollgate_store::PolicyRecord| r.id.to_string(), |p| {
            store.list_policies(p, Some(&PolicyScope::Global))
        })
        .await;
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(ids, sorted(global));
        let (_, all) = walk(3, |r: &tollgate_store::PolicyRecord| r.id.to_string(), |p| {
            store.list_policies(p, None)
        })
        .await;
        assert_eq!(all.len(), 7);
        let svc_only = store
            .list_policies(Page::default(), Some(&PolicyScope::Service(svc.clone())))
            .await
            .unwrap();
        assert_eq!(svc_only.items, vec![on_svc.clone()]);

        let got = store.get_policy(&on_svc.id).await.unwrap();
        assert_eq!(got, on_svc);
        let mut changed = policy("cors");
        if let tollgate_core::config::PolicySpec::Cors(c) = &mut changed {
            c.credentials = true;
        }
        let updated = store.update_policy(&on_svc.id, changed.clone()).await.unwrap();
        assert_eq!(updated.spec, changed);
        assert_eq!(updated.scope, PolicyScope::Service(svc.clone()));
        let paths = invalid_paths(store.update_policy(&on_svc.id, policy("ip_restriction")).await);
        assert_eq!(paths, ["name"], "a policy cannot change type");

        store.delete_policy(&on_svc.id).await.unwrap();
        assert!(matches!(
            store.get_policy(&on_svc.id).await,
            Err(StoreError::NotFound { kind: "policy", .. })
        ));
        assert!(matches!(
            store.delete_policy(&on_svc.id).await,
            Err(StoreError::NotFound { kind: "policy", .. })
        ));

        assert!(matches!(
            store.create_policy(PolicyScope::Service(ServiceId::new()), policy("cors")).await,
            Err(StoreError::NotFound { kind: "service", .. })
        ));
        assert!(matches!(
            store.create_policy(PolicyScope::Route(RouteId::new()), policy("cors")).await,
            Err(StoreError::NotFound { kind: "route", .. })
        ));
    }

    async fn name_conflicts(store) {
        let orders = store.create_service(service("orders")).await.unwrap();
        let users = store.create_service(service("users")).await.unwrap();
        let before = store.revision().await.unwrap();
        match store.create_service(service("orders")).await {
            Err(StoreError::Conflict(msg)) => {
                assert_eq!(msg, "a service named `orders` already exists")
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert!(matches!(
            store.update_service(&users.id, service("orders")).await,
            Err(StoreError::Conflict(_))
        ));
        store.create_route(&orders.id, route("list", "/orders")).await.unwrap();
        let before_route = store.revision().await.unwrap();
        match store.create_route(&users.id, route("list", "/users")).await {
            Err(StoreError::Conflict(msg)) => {
                assert_eq!(msg, "a route named `list` already exists", "route names are global")
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(store.revision().await.unwrap(), before_route, "a failed write does not bump");
        assert_eq!(before + 1, before_route);
    }

    async fn policy_unique_per_scope(store) {
        let svc = store.create_service(service("orders")).await.unwrap().id;
        let rt = store.create_route(&svc, route("orders", "/orders")).await.unwrap().id;
        store.create_policy(PolicyScope::Global, policy("cors")).await.unwrap();
        store.create_policy(PolicyScope::Service(svc.clone()), policy("cors")).await.unwrap();
        store.create_policy(PolicyScope::Route(rt.clone()), policy("cors")).await.unwrap();
        store.create_policy(PolicyScope::Route(rt.clone()), policy("ip_restriction")).await.unwrap();
        for (scope, expected) in [
            (PolicyScope::Global, "a `cors` policy is already attached globally"),
            (PolicyScope::Service(svc), "a `cors` policy is already attached to service `orders`"),
            (PolicyScope::Route(rt), "a `cors` policy is already attached to route `orders`"),
        ] {
            match store.create_policy(scope, policy("cors")).await {
                Err(StoreError::Conflict(msg)) => assert_eq!(msg, expected),
                other => panic!("expected Conflict, got {other:?}"),
            }
        }
    }

    async fn deleting_a_service_cascades(store) {
        let svc = store.create_service(service("orders")).await.unwrap().id;
        let keep = store.create_service(service("users")).await.unwrap().id;
        let r1 = store.create_route(&svc, route("r1", "/a")).await.unwrap().id;
        let r2 = store.create_route(&svc, route("r2", "/b")).await.unwrap().id;
        let r3 = store.create_route(&keep, route("r3", "/c")).await.unwrap().id;
        store.create_policy(PolicyScope::Service(svc.clone()), policy("cors")).await.unwrap();
        store.create_policy(PolicyScope::Route(r1.clone()), policy("cors")).await.unwrap();
        store.create_policy(PolicyScope::Route(r3.clone()), policy("cors")).await.unwrap();
        let global = store.create_policy(PolicyScope::Global, policy("cors")).await.unwrap();

        store.delete_service(&svc).await.unwrap();
        for r in [&r1, &r2] {
            assert!(matches!(store.get_route(r).await, Err(StoreError::NotFound { .. })));
        }
        let routes = store.list_routes(Page::default(), None).await.unwrap();
        assert_eq!(routes.items.iter().map(|r| &r.id).collect::<Vec<_>>(), [&r3]);
        let left = store.list_policies(Page::default(), None).await.unwrap();
        let mut scopes: Vec<_> = left.items.iter().map(|p| p.scope.clone()).collect();
        scopes.sort_by_key(|s| s.to_string());
        assert_eq!(scopes, [PolicyScope::Global, PolicyScope::Route(r3.clone())]);
        assert!(store.get_policy(&global.id).await.is_ok());

        // Deleting a route takes its policies with it.
        store.delete_route(&r3).await.unwrap();
        let left = store.list_policies(Page::default(), None).await.unwrap();
        assert_eq!(left.items.len(), 1);
    }

    async fn invalid_specs_are_rejected_with_paths(store) {
        let mut bad = service("bad name!");
        bad.url = Some("ftp://x".into());
        let paths = invalid_paths(store.create_service(bad).await);
        assert_eq!(paths, ["name", "url"]);

        let svc = store.create_service(service("ok")).await.unwrap().id;
        let mut r = route("r", "no-slash");
        r.methods = vec!["get".into()];
        let paths = invalid_paths(store.create_route(&svc, r).await);
        assert_eq!(paths, ["paths[0]", "methods[0]"]);

        let cors: tollgate_core::config::PolicySpec =
            serde_json::from_value(serde_json::json!({"name": "cors", "config": {"origins": []}}))
                .unwrap();
        let paths = invalid_paths(store.create_policy(PolicyScope::Global, cors).await);
        assert_eq!(paths.len(), 1);
        assert!(paths[0].ends_with("config.origins"), "{paths:?}");

        let rt = store.create_route(&svc, route("r", "/r")).await.unwrap().id;
        let paths = invalid_paths(store.update_route(&rt, route("r", "bad")).await);
        assert_eq!(paths, ["paths[0]"]);
        assert_eq!(store.revision().await.unwrap(), 2, "invalid writes do not bump");
    }

    async fn every_write_bumps_the_revision(store) {
        assert_eq!(store.revision().await.unwrap(), 0);
        let svc = store.create_service(service("a")).await.unwrap().id;
        assert_eq!(store.revision().await.unwrap(), 1);
        store.update_service(&svc, service("a")).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 2);
        let rt = store.create_route(&svc, route("r", "/r")).await.unwrap().id;
        assert_eq!(store.revision().await.unwrap(), 3);
        store.update_route(&rt, route("r", "/s")).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 4);
        let pol = store.create_policy(PolicyScope::Route(rt.clone()), policy("cors")).await.unwrap().id;
        assert_eq!(store.revision().await.unwrap(), 5);
        store.update_policy(&pol, policy("cors")).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 6);
        store.delete_policy(&pol).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 7);
        store.delete_route(&rt).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 8);
        store.delete_service(&svc).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 9);
        // Failed writes leave it alone.
        assert!(store.delete_service(&svc).await.is_err());
        assert_eq!(store.revision().await.unwrap(), 9);
    }

    async fn admin_tokens(store) {
        assert_eq!(store.admin_token_count().await.unwrap(), 0);
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let id = store.add_admin_token(hash, "bootstrap").await.unwrap();
        assert!(id.as_str().starts_with("atk_"));
        assert!(store.admin_token_exists(hash).await.unwrap());
        assert!(!store.admin_token_exists("00").await.unwrap());
        assert_eq!(store.admin_token_count().await.unwrap(), 1);
        assert!(matches!(
            store.add_admin_token(hash, "again").await,
            Err(StoreError::Conflict(_))
        ));
        store.add_admin_token("abcd", "second").await.unwrap();
        assert_eq!(store.admin_token_count().await.unwrap(), 2);
        assert_eq!(store.revision().await.unwrap(), 0, "tokens are not configuration");
    }

    async fn concurrent_creates_all_land(store) {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.create_service(service(&format!("c{i}"))).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.revision().await.unwrap(), 12);
        assert_eq!(store.list_services(Page::default()).await.unwrap().items.len(), 12);
    }
}
