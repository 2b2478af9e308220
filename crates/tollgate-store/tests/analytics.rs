//! Analytics roll-up rows on both backends: idempotent rewrites per node,
//! rows of several nodes side by side, filters and retention pruning. None of it moves the configuration revision.
#![allow(clippy::unwrap_used)]

use tollgate_store::{RollupFilter, RollupRow, backend_tests};

fn row(node: &str, minute: i64, org: &str, route: &str, class: i16, requests: i64) -> RollupRow {
    RollupRow {
        node: node.into(),
        bucket_start: minute * 60_000,
        org_id: org.into(),
        app_id: if org.is_empty() {
            String::new()
        } else {
            format!("app_of_{org}")
        },
        route: route.into(),
        status_class: class,
        requests,
        errors: if class == 5 { requests } else { 0 },
        bytes_in: requests * 10,
        bytes_out: requests * 100,
        latency: format!("sketch-{requests}"),
        upstream_latency: String::new(),
    }
}

fn all(from_minute: i64, to_minute: i64) -> RollupFilter {
    RollupFilter {
        from: from_minute * 60_000,
        to: to_minute * 60_000,
        ..RollupFilter::default()
    }
}

backend_tests! {
    async fn a_node_rewrites_its_rows_and_nodes_keep_their_own(store) {
        let before = store.revision().await.unwrap();
        store.upsert_rollups(&[row("n1", 10, "org_a", "orders", 2, 5)]).await.unwrap();
        // The same node's later state of the same row replaces it.
        store.upsert_rollups(&[row("n1", 10, "org_a", "orders", 2, 8)]).await.unwrap();
        // Another node's row of the same minute and dimensions stands beside it.
        store.upsert_rollups(&[row("n2", 10, "org_a", "orders", 2, 3)]).await.unwrap();
        let rows = store.rollups(&all(0, 100)).await.unwrap();
        let mut counts: Vec<(String, i64)> = rows.iter().map(|r| (r.node.clone(), r.requests)).collect();
        counts.sort();
        assert_eq!(counts, [("n1".to_string(), 8), ("n2".to_string(), 3)]);
        assert!(rows[0].latency.starts_with("sketch-"));
        assert_eq!(store.revision().await.unwrap(), before, "roll-ups are not configuration");
        // An empty batch is a no-op.
        store.upsert_rollups(&[]).await.unwrap();
    }

    async fn filters_select_by_time_and_dimension(store) {
        store
            .upsert_rollups(&[
                row("n1", 1, "org_a", "orders", 2, 1),
                row("n1", 2, "org_a", "orders", 5, 2),
                row("n1", 2, "org_b", "billing", 2, 4),
                row("n1", 3, "", "", 4, 8),
                row("n1", 9, "org_a", "orders", 2, 16),
            ])
            .await
            .unwrap();
        let sum = |rows: Vec<RollupRow>| rows.iter().map(|r| r.requests).sum::<i64>();
        assert_eq!(sum(store.rollups(&all(0, 10)).await.unwrap()), 31);
        // `to` is exclusive, `from` inclusive.
        assert_eq!(sum(store.rollups(&all(2, 9)).await.unwrap()), 14);
        let f = |org: Option<&str>, route: Option<&str>, class: Option<i16>| RollupFilter {
            org_id: org.map(Into::into),
            route: route.map(Into::into),
            status_class: class,
            ..all(0, 10)
        };
        assert_eq!(sum(store.rollups(&f(Some("org_a"), None, None)).await.unwrap()), 19);
        assert_eq!(sum(store.rollups(&f(Some("org_a"), None, Some(5))).await.unwrap()), 2);
        assert_eq!(sum(store.rollups(&f(None, Some("billing"), None)).await.unwrap()), 4);
        // '' selects the rows without an organization (anonymous callers).
        assert_eq!(sum(store.rollups(&f(Some(""), None, None)).await.unwrap()), 8);
        let by_app = RollupFilter { app_id: Some("app_of_org_b".into()), ..all(0, 10) };
        assert_eq!(sum(store.rollups(&by_app).await.unwrap()), 4);
        // Rows come back in time order.
        let minutes: Vec<i64> = store.rollups(&all(0, 10)).await.unwrap().iter().map(|r| r.bucket_start / 60_000).collect();
        let mut sorted = minutes.clone();
        sorted.sort();
        assert_eq!(minutes, sorted);
    }

    async fn retention_prunes_old_minutes_only(store) {
        store
            .upsert_rollups(&[row("n1", 1, "org_a", "orders", 2, 1), row("n1", 5, "org_a", "orders", 2, 2)])
            .await
            .unwrap();
        assert_eq!(store.prune_rollups(5 * 60_000).await.unwrap(), 1);
        let rows = store.rollups(&all(0, 10)).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].bucket_start, 5 * 60_000);
    }
}
