//! Active health checking: an HTTP probe per target on an interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;
use tollgate_core::config::ActiveHealthCheck;

use crate::body::UpstreamBody;
use crate::client::RequestHead;
use crate::snapshot::ServiceRt;

/// Starts one probe loop per target of `svc`, until `stop` is cancelled.
pub(crate) fn spawn(svc: Arc<ServiceRt>, cfg: ActiveHealthCheck, stop: CancellationToken) {
    for target in svc.balancer.targets.clone() {
        let svc = svc.clone();
        let cfg = cfg.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut successes = 0u32;
            let mut failures = 0u32;
            if !crate::client::clean_target(&cfg.path) {
                tracing::warn!(service = %svc.name, path = %cfg.path, "health-check path cannot be sent; not probing");
                return;
            }
            let mut probe_headers = HeaderMap::new();
            probe_headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static("tollgate-health-check"),
            );
            let no_fields = tollgate_core::fields::UpstreamFields::default();
            let mut tick = tokio::time::interval(cfg.interval.get());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let head = RequestHead {
                    method: &Method::GET,
                    target: &cfg.path,
                    host: &target.host_header,
                    headers: &probe_headers,
                    added: &no_fields,
                };
                let mut body = UpstreamBody::empty();
                // Each probe makes its own connection (closed after it), so
                // a probe also tests that the target accepts connections.
                let probe = crate::pool::probe(&target.addr, svc.connect_timeout, &head, &mut body);
                let ok = match tokio::time::timeout(cfg.timeout.get(), probe).await {
                    Ok(Ok(res)) => res.status().is_success() || res.status().is_redirection(),
                    _ => false,
                };
                // A probe that finished after a reload must not overwrite the
                // state the new configuration set.
                if stop.is_cancelled() {
                    return;
                }
                let was = target.active_healthy.load(Ordering::Relaxed);
                if ok {
                    failures = 0;
                    successes = successes.saturating_add(1);
                    if !was && successes >= cfg.healthy_threshold {
                        target.active_healthy.store(true, Ordering::Relaxed);
                        tracing::info!(service = %svc.name, target = %target.addr, "target healthy again");
                    }
                } else {
                    successes = 0;
                    failures = failures.saturating_add(1);
                    if was && failures >= cfg.unhealthy_threshold {
                        target.active_healthy.store(false, Ordering::Relaxed);
                        tracing::warn!(service = %svc.name, target = %target.addr, "target marked unhealthy by active health check");
                    }
                }
            }
        });
    }
}
