//! `/audit`: the audit log of the admin API. Every write (POST, PUT, PATCH,
//! DELETE) to a protected route is recorded by [`record`] after it is
//! answered: who, what, which resource, the status, the resource before and
//! after (secrets redacted by the store), the client's address and the
//! request id. The log is append-only: these routes only read it, as a page
//! (`GET /audit`) or as JSON lines for a SIEM (`GET /audit/export`).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tollgate_core::ids::OrgId;
use tollgate_core::problem::{FieldError, Problem};
use tollgate_store::{AuditEntry, AuditFilter, Listed, Page, Store};

use crate::AdminState;
use crate::error::ApiError;
use crate::extract::Query;

mod record;

pub use record::{AuditMetrics, MAX_RECORDED_BODY, Recorder, Target, classify, record};

/// The content type of `GET /audit/export`: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";

/// Entries the export reads from the store at a time.
pub const EXPORT_PAGE: u32 = 500;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/export", get(export))
}

/// The filters of `GET /audit` and `GET /audit/export`, and their paging.
/// Every filter that is given must match. Unknown parameters are refused,
/// so a misspelt filter cannot silently widen the answer.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Who wrote, such as `admin_token:0123456789ab`.
    pub actor: Option<String>,
    /// Such as `service.create` or `key.revoke`.
    pub action: Option<String>,
    /// Such as `service`, `key` or `config`.
    pub resource_type: Option<String>,
    /// The resource's id (or name, for JWT issuers and plans).
    pub resource_id: Option<String>,
    /// The organization the resource belongs to.
    pub org: Option<OrgId>,
    /// Entries recorded at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Entries recorded before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// The HTTP status of the write's answer.
    pub status: Option<u16>,
    /// `GET /audit`: entries per page, 1 to 1000 (default 100).
    /// `GET /audit/export`: the most entries to export (default: all).
    pub limit: Option<u32>,
    /// Entries after this id: the `next` of the previous page, or the last
    /// id a SIEM has read.
    pub after: Option<String>,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        AuditFilter {
            actor: self.actor.clone(),
            action: self.action.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            org: self.org.clone(),
            from: self.from,
            to: self.to,
            status: self.status,
        }
    }

    fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(Page::DEFAULT_LIMIT);
        if limit == 0 || limit > Page::MAX_LIMIT {
            return Err(invalid("limit", "must be between 1 and 1000"));
        }
        Ok(Page {
            limit,
            after: self.after.clone(),
        })
    }
}

fn invalid(path: &str, reason: &str) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        path: path.into(),
        reason: reason.into(),
    }])
}

/// Lists recorded writes that match the filters, oldest first.
#[utoipa::path(get, operation_id = "list_audit", path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Listed<AuditEntry>), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    State(s): State<AdminState>,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<Listed<AuditEntry>>, ApiError> {
    let page = q.page()?;
    Ok(axum::Json(s.store.list_audit(&q.filter(), page).await?))
}

/// Exports recorded writes that match the filters, oldest first, as JSON
/// lines (one entry per line), for a SIEM. The answer is streamed as the
/// store is read, page by page; a store failure after the first page cuts
/// the stream short (the last line is then incomplete or missing).
#[utoipa::path(get, operation_id = "export_audit", path = "/audit/export", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "One `AuditEntry` as JSON per line", content_type = "application/x-ndjson", body = AuditEntry),
        (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn export(
    State(s): State<AdminState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    if q.limit == Some(0) {
        return Err(invalid("limit", "must be at least 1"));
    }
    let mut export = Export {
        store: s.store.clone(),
        filter: q.filter(),
        next: None,
        remaining: q.limit.map(u64::from),
        done: false,
    };
    // The first page is read before answering, so a store that is down
    // gets a problem answer rather than an empty 200.
    let first = export.fetch(q.after.clone()).await?;
    let chunk = export.lines(first);
    let rest = futures_util::stream::unfold(export, Export::step);
    let body = futures_util::StreamExt::chain(futures_util::stream::once(async { chunk }), rest);
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        Body::from_stream(body),
    )
        .into_response())
}

/// The state of a streamed export between pages.
struct Export {
    store: Store,
    filter: AuditFilter,
    /// Where the next page starts; `None` when there is none.
    next: Option<String>,
    /// How many more entries may be sent, when limited.
    remaining: Option<u64>,
    done: bool,
}

impl Export {
    async fn fetch(
        &self,
        after: Option<String>,
    ) -> Result<Listed<AuditEntry>, tollgate_store::StoreError> {
        let limit = self
            .remaining
            .map_or(EXPORT_PAGE, |r| u32::try_from(r).unwrap_or(u32::MAX))
            .clamp(1, EXPORT_PAGE);
        self.store
            .list_audit(&self.filter, Page { limit, after })
            .await
    }

    /// The page as JSON lines; remembers where the next page starts.
    fn lines(&mut self, page: Listed<AuditEntry>) -> Result<Bytes, axum::BoxError> {
        let mut out = Vec::new();
        for entry in &page.items {
            serde_json::to_writer(&mut out, entry)?;
            out.push(b'\n');
        }
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(page.items.len() as u64);
        }
        self.next = page.next.filter(|_| self.remaining != Some(0));
        Ok(Bytes::from(out))
    }

    async fn step(mut self) -> Option<(Result<Bytes, axum::BoxError>, Export)> {
        if self.done {
            return None;
        }
        let after = self.next.take()?;
        match self.fetch(Some(after)).await {
            Ok(page) => {
                let chunk = self.lines(page);
                Some((chunk, self))
            }
            Err(e) => {
                tracing::error!(error = %e, "the audit export stopped: the store failed");
                self.done = true;
                Some((Err(e.into()), self))
            }
        }
    }
}
