//! Whole-configuration operations on both backends: apply, diff and export.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tollgate_store::{
    Backend, Change, Kind, Op, Page, PolicyScope, Store, StoreError, backend_tests,
};

/// Deliberately out of order: export sorts by name.
const V1: &str = r#"
services:
  - name: users
    url: http://127.0.0.1:9001
    routes:
      - name: users-get
        paths: ["/users/{id}"]
        methods: [GET]
  - name: orders
    targets:
      - {target: "127.0.0.1:9000", weight: 50}
      - {target: "127.0.0.1:9002"}
    path: /api
    retries: 3
    health_checks:
      passive: {unhealthy_threshold: 2}
    policies:
      - name: request_size_limit
        config: {max_bytes: 2048}
      - name: cors
        config: {origins: ["https://app.example.com"], credentials: true}
    routes:
      - name: orders-list
        paths: [/orders]
        hosts: [api.example.com]
        headers: {x-version: ["2"]}
        policies:
          - name: ip_restriction
            config: {allow: [10.0.0.0/8]}
      - name: orders-create
        paths: ["=/orders"]
        methods: [POST]
policies:
  - name: response_transformer
    config: {set: {x-gateway: tollgate}}
  - name: cors
    config: {origins: ["*"]}
"#;

/// V1 with: `users` deleted; `orders-list` moved to the new `billing` service
/// (its route policy changed); `orders-create` changed; the service `cors` on
/// `orders` removed; a global policy added.
const V2: &str = r#"
services:
  - name: orders
    targets:
      - {target: "127.0.0.1:9000", weight: 50}
      - {target: "127.0.0.1:9002"}
    path: /api
    retries: 3
    health_checks:
      passive: {unhealthy_threshold: 2}
    policies:
      - name: request_size_limit
        config: {max_bytes: 2048}
    routes:
      - name: orders-create
        paths: ["=/orders"]
        methods: [POST, PUT]
  - name: billing
    url: http://127.0.0.1:9100
    routes:
      - name: orders-list
        paths: [/orders]
        hosts: [api.example.com]
        headers: {x-version: ["2"]}
        policies:
          - name: ip_restriction
            config: {allow: [10.0.0.0/8, 192.168.0.0/16]}
policies:
  - name: response_transformer
    config: {set: {x-gateway: tollgate}}
  - name: cors
    config: {origins: ["*"]}
  - name: request_size_limit
    config: {max_bytes: 1000000}
"#;

fn change(kind: Kind, name: &str, op: Op) -> Change {
    Change {
        kind,
        name: name.into(),
        op,
    }
}

fn v1_to_v2() -> Vec<Change> {
    vec![
        change(Kind::Service, "billing", Op::Create),
        change(Kind::Service, "users", Op::Delete),
        change(Kind::Route, "orders-create", Op::Update),
        change(Kind::Route, "orders-list", Op::Update),
        change(Kind::Route, "users-get", Op::Delete),
        change(Kind::Policy, "global/request_size_limit", Op::Create),
        change(Kind::Policy, "route:orders-list/ip_restriction", Op::Update),
        change(Kind::Policy, "service:orders/cors", Op::Delete),
    ]
}

/// Makes inserting a route named `boom` fail inside the database.
async fn install_failing_trigger(store: &Store) {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "CREATE TRIGGER boom BEFORE INSERT ON routes WHEN NEW.name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.name = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER boom BEFORE INSERT ON routes FOR EACH ROW EXECUTE FUNCTION boom();"
        }
    };
    tollgate_store::testing::execute_sql(store, sql)
        .await
        .unwrap();
}

backend_tests! {
    async fn apply_creates_everything_and_export_round_trips(store) {
        let changes = store.apply(&config(V1)).await.unwrap();
        assert_eq!(changes.count(Op::Create), changes.changes.len());
        assert_eq!(changes.changes.len(), 2 + 3 + 5);
        assert_eq!(store.revision().await.unwrap(), 1, "one apply, one revision");

        let (rev, exported) = store.export().await.unwrap();
        assert_eq!(rev, 1);
        let names: Vec<_> = exported.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["orders", "users"], "services sorted by name");
        let routes: Vec<_> = exported.services[0].routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(routes, ["orders-create", "orders-list"], "routes sorted by name");
        let global: Vec<_> = exported.policies.iter().map(|p| p.name()).collect();
        assert_eq!(global, ["cors", "response_transformer"], "policies sorted by name");
        // Semantically the same configuration as the input.
        let mut input = config(V1);
        input.services.sort_by(|a, b| a.name.cmp(&b.name));
        for s in &mut input.services {
            s.routes.sort_by(|a, b| a.name.cmp(&b.name));
            s.policies.sort_by(|a, b| a.name().cmp(b.name()));
        }
        input.policies.sort_by(|a, b| a.name().cmp(b.name()));
        assert_eq!(exported, input);

        // export -> apply -> export is byte-identical and writes nothing.
        let yaml = exported.to_yaml();
        let again = store.apply(&config(&yaml)).await.unwrap();
        assert!(again.is_empty(), "{again}");
        assert_eq!(store.revision().await.unwrap(), 1, "a no-op apply does not bump");
        let (rev2, exported2) = store.export().await.unwrap();
        assert_eq!(rev2, 1);
        assert_eq!(exported2.to_yaml(), yaml);
    }

    async fn apply_matches_by_name_and_keeps_ids(store) {
        store.apply(&config(V1)).await.unwrap();
        let orders = store.get_service_by_name("orders").await.unwrap();
        let routes = store.list_routes(Page::default(), None).await.unwrap().items;
        let list = routes.iter().find(|r| r.spec.name == "orders-list").unwrap().clone();
        let create = routes.iter().find(|r| r.spec.name == "orders-create").unwrap().clone();
        let list_policy = store
            .list_policies(Page::default(), Some(&PolicyScope::Route(list.id.clone())))
            .await
            .unwrap()
            .items[0]
            .clone();
        let global_before = store
            .list_policies(Page::default(), Some(&PolicyScope::Global))
            .await
            .unwrap()
            .items;

        let changes = store.apply(&config(V2)).await.unwrap();
        assert_eq!(changes.changes, v1_to_v2());
        assert_eq!(store.revision().await.unwrap(), 2);

        let billing = store.get_service_by_name("billing").await.unwrap();
        let orders2 = store.get_service_by_name("orders").await.unwrap();
        assert_eq!(orders2.id, orders.id, "unchanged service keeps its id");
        assert_eq!(orders2.updated_at, orders.updated_at, "and is not rewritten");
        let moved = store.get_route(&list.id).await.unwrap();
        assert_eq!(moved.service_id, billing.id, "a moved route keeps its id");
        assert_eq!(moved.created_at, list.created_at);
        assert_eq!(store.get_route(&create.id).await.unwrap().spec.methods, ["POST", "PUT"]);
        let list_policy2 = store.get_policy(&list_policy.id).await.unwrap();
        assert_eq!(list_policy2.scope, PolicyScope::Route(list.id.clone()));
        assert_ne!(list_policy2.spec, list_policy.spec, "updated in place");
        for p in &global_before {
            assert_eq!(store.get_policy(&p.id).await.unwrap().spec, p.spec);
        }
        assert!(matches!(
            store.get_service_by_name("users").await,
            Err(StoreError::NotFound { .. })
        ));

        // And the stored state is exactly V2.
        let (_, exported) = store.export().await.unwrap();
        assert!(store.diff(&config(V2)).await.unwrap().is_empty());
        assert!(store.diff(&exported).await.unwrap().is_empty());
    }

    async fn diff_reports_without_writing(store) {
        assert_eq!(store.diff(&config(V1)).await.unwrap().count(Op::Create), 10);
        assert_eq!(store.revision().await.unwrap(), 0);
        assert!(store.export().await.unwrap().1.services.is_empty());

        store.apply(&config(V1)).await.unwrap();
        let (rev, before) = store.export().await.unwrap();
        let diff = store.diff(&config(V2)).await.unwrap();
        assert_eq!(diff.changes, v1_to_v2());
        assert!(store.diff(&config(V1)).await.unwrap().is_empty());
        let (rev_after, after) = store.export().await.unwrap();
        assert_eq!((rev_after, after), (rev, before), "diff writes nothing");

        // Diff then apply agree.
        assert_eq!(store.apply(&config(V2)).await.unwrap(), diff);

        // An empty configuration deletes everything.
        // (`Config::default()` has format_version 0, which does not validate.)
        let empty = config("{}");
        let wipe = store.diff(&empty).await.unwrap();
        assert_eq!(wipe.count(Op::Delete), wipe.changes.len());
        store.apply(&empty).await.unwrap();
        assert_eq!(store.export().await.unwrap().1, empty);
        assert_eq!(store.list_policies(Page::default(), None).await.unwrap().items.len(), 0);
    }

    async fn invalid_apply_changes_nothing(store) {
        store.apply(&config(V1)).await.unwrap();
        let before = store.export().await.unwrap();
        let mut bad = config(V2);
        bad.services[1].routes[0].paths = vec!["no-slash".into()];
        bad.services[0].name = "has space".into();
        let paths = invalid_paths(store.apply(&bad).await);
        assert_eq!(paths, ["services[0].name", "services[1].routes[0].paths[0]"]);
        let paths = invalid_paths(store.diff(&bad).await);
        assert_eq!(paths.len(), 2);
        assert_eq!(store.export().await.unwrap(), before);
    }

    async fn a_database_failure_midway_rolls_back_everything(store) {
        store.apply(&config(V1)).await.unwrap();
        let before = store.export().await.unwrap();
        install_failing_trigger(&store).await;
        // Many changes, and one of the route inserts fails inside the database.
        let mut doomed = config(V2);
        let mut boom = doomed.services[0].routes[0].clone();
        boom.name = "boom".into();
        boom.policies.clear();
        doomed.services[0].routes.push(boom);
        let err = store.apply(&doomed).await.unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
        assert_eq!(store.export().await.unwrap(), before, "nothing of the apply remains");
        // The store still works afterwards.
        store.apply(&config(V2)).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 2);
    }

    async fn crud_and_apply_see_the_same_state(store) {
        store.apply(&config(V1)).await.unwrap();
        let orders = store.get_service_by_name("orders").await.unwrap();
        let route = store.create_route(&orders.id, route("extra", "/extra")).await.unwrap();
        store
            .create_policy(PolicyScope::Route(route.id.clone()), size_limit(10))
            .await
            .unwrap();
        let diff = store.diff(&config(V1)).await.unwrap();
        assert_eq!(
            diff.changes,
            vec![
                change(Kind::Route, "extra", Op::Delete),
                change(Kind::Policy, "route:extra/request_size_limit", Op::Delete),
            ]
        );
        let (_, exported) = store.export().await.unwrap();
        let extra = exported.services[0].routes.iter().find(|r| r.name == "extra").unwrap();
        assert_eq!(extra.policies, vec![size_limit(10)]);
    }
}
