//! Keeps the gateway's snapshot in step with the store: polls the revision,
//! reloads on change, and rides out store outages on the last good snapshot.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tollgate_admin::NodeStatus;
use tollgate_proxy::Gateway;
use tollgate_store::Store;

pub async fn run(
    store: Store,
    gateway: Arc<Gateway>,
    status: Arc<NodeStatus>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let was_ok = status.is_store_ok();
        match sync_once(&store, &gateway).await {
            Ok(revision) => {
                if !was_ok {
                    tracing::info!(revision, "configuration store reachable again");
                }
                status.store_reachable(revision);
            }
            Err(e) => {
                if status.store_unreachable(e.to_string()) {
                    tracing::error!(error = %e, revision = gateway.revision(), "configuration store unreachable; serving the last good configuration");
                }
            }
        }
    }
}

async fn sync_once(store: &Store, gateway: &Gateway) -> Result<i64, tollgate_store::StoreError> {
    let current = gateway.revision();
    let revision = store.revision().await?;
    if revision == current {
        return Ok(current);
    }
    let (revision, config) = store.export().await?;
    gateway.install(&config, revision);
    tracing::info!(
        revision,
        services = config.services.len(),
        "configuration reloaded"
    );
    Ok(revision)
}
