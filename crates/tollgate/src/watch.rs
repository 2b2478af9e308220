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
        // A database that stops answering without closing connections must
        // not stall the watcher: a poll that takes too long counts as a failure.
        let outcome = tokio::time::timeout(POLL_DEADLINE, sync_once(&store, &gateway)).await;
        let outcome = outcome.unwrap_or_else(|_| Err(Stalled));
        match outcome {
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

/// Longest a poll (revision check plus reload) may take.
const POLL_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Store(#[from] tollgate_store::StoreError),
    #[error("the store did not answer within {}s", POLL_DEADLINE.as_secs())]
    Stalled,
}
use SyncError::Stalled;

async fn sync_once(store: &Store, gateway: &Gateway) -> Result<i64, SyncError> {
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
