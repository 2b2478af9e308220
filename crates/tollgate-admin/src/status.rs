//! `/healthz` (the process is up) and `/readyz` (it has a configuration and
//! can reach its store).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tollgate_core::problem::{ErrorCode, Problem};

use crate::AdminState;
use crate::error::problem_response;

/// What this node knows about itself; written by the config watcher.
#[derive(Debug)]
pub struct NodeStatus {
    store_ok: AtomicBool,
    revision: AtomicI64,
    last_error: Mutex<Option<String>>,
}

impl Default for NodeStatus {
    fn default() -> Self {
        NodeStatus {
            store_ok: AtomicBool::new(true),
            revision: AtomicI64::new(-1),
            last_error: Mutex::new(None),
        }
    }
}

impl NodeStatus {
    /// Records a successful store round trip and the revision now live.
    pub fn store_reachable(&self, revision: i64) {
        self.revision.store(revision, Ordering::Release);
        self.store_ok.store(true, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Records a failed store round trip. Returns true when this starts an
    /// incident (the store was fine before), so callers log once.
    pub fn store_unreachable(&self, error: String) -> bool {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.store_ok.swap(false, Ordering::AcqRel)
    }

    pub fn is_store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Acquire)
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }
}

/// The body of a successful `/healthz` or `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// The configuration revision this node serves.
    pub config_revision: i64,
    /// Whether the configuration store answered the last poll.
    pub store: &'static str,
}

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Liveness: the process answers.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "status", security(()), responses((status = 200, body = Health)))]
pub async fn healthz(State(s): State<AdminState>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        config_revision: s.status.revision(),
        store: if s.status.is_store_ok() {
            "ok"
        } else {
            "unreachable"
        },
    })
}

/// Readiness: a configuration is loaded and the store is reachable. While the
/// store is down the node keeps serving its last good configuration, and this
/// answers 503 with the reason.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "status", security(()), responses(
    (status = 200, body = Health),
    (status = 503, body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(s): State<AdminState>) -> Response {
    let rev = s.status.revision();
    if rev < 0 {
        return problem_response(
            &Problem::new(ErrorCode::StoreUnavailable).detail("no configuration loaded yet"),
        );
    }
    if !s.status.is_store_ok() {
        let why = s
            .status
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        return problem_response(&Problem::new(ErrorCode::StoreUnavailable).detail(format!(
            "configuration store unreachable ({why}); serving the last good configuration, revision {rev}"
        )));
    }
    axum::Json(Health {
        status: "ready",
        config_revision: rev,
        store: "ok",
    })
    .into_response()
}
