//! `GET /metrics`: the node's metrics in the Prometheus text format
//! (version 0.0.4). What is measured lives with the component that measures
//! it; this endpoint only collects their output.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AdminState;

pub use tollgate_core::metrics::{AUDIT_WRITE_FAILURES, MetricsSource};

pub fn router() -> Router<AdminState> {
    Router::new().route("/metrics", get(metrics))
}

/// The node's metrics, for a Prometheus scraper. Needs no token, like
/// `/healthz`: the admin listener is on loopback unless configured otherwise.
#[utoipa::path(get, operation_id = "get_metrics", path = "/metrics", tag = "status",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut out = String::new();
    for m in &s.metrics {
        m.render(&mut out);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// Sources of metrics for [`AdminState`].
pub type Sources = Vec<Arc<dyn MetricsSource>>;
