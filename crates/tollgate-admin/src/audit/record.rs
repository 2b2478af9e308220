//! Recording writes: the middleware on the protected router, the mapping
//! from a matched route to an action and a resource, the bounded capture of
//! bodies, and the failure counter.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_core::ids::{AuditId, OrgId};
use tollgate_core::request_id::{X_REQUEST_ID, request_id};
use tollgate_store::{AuditEntry, Store};
use tower::ServiceExt;

use crate::auth::Actor;
use crate::error::ApiError;
use crate::metrics::{AUDIT_WRITE_FAILURES, MetricsSource};

/// The largest body kept as `before` or `after`: larger ones are recorded
/// as `{"truncated": true}` (and still answered whole).
pub const MAX_RECORDED_BODY: usize = 1024 * 1024;

/// Records every write that passes through it; see [`record`].
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    /// The same resources without this middleware or authentication, to
    /// read a resource's state before it is written.
    reader: Router,
    metrics: Arc<AuditMetrics>,
}

impl Recorder {
    pub fn new(store: Store, reader: Router, metrics: Arc<AuditMetrics>) -> Recorder {
        Recorder {
            store,
            reader,
            metrics,
        }
    }

    /// The JSON at `path` (a GET through the un-audited router), when it
    /// answers 200.
    async fn read(&self, path: &str) -> Option<Value> {
        let req = Request::get(path).body(Body::empty()).ok()?;
        let res = match self.reader.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        if res.status() != StatusCode::OK {
            return None;
        }
        match axum::body::to_bytes(res.into_body(), MAX_RECORDED_BODY).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(_) => Some(truncated()),
        }
    }
}

/// What the audit log has counted since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    /// Writes answered whose entry could not be stored.
    pub write_failures: AtomicU64,
}

impl MetricsSource for AuditMetrics {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP {n} Admin API writes whose audit entry could not be stored.\n\
             # TYPE {n} counter\n{n} {}\n",
            self.write_failures.load(Ordering::Relaxed),
            n = AUDIT_WRITE_FAILURES,
        );
    }
}

/// The middleware: gives every request an `X-Request-Id` (kept when the
/// client sent a plain one of up to 128 characters) and records every
/// POST, PUT, PATCH and DELETE to a route, after it is answered, with its
/// actor, action, resource, status, the resource's state before (read just
/// before the write) and after (the answer's body), the client's address
/// and the request id. Reads are not recorded.
///
/// The write and its recording run in their own task, so a client that
/// hangs up cannot cancel a write half-way or keep it out of the log. When
/// the entry cannot be stored the answer is returned anyway; the failure is
/// logged and counted in `tollgate_audit_write_failures_total`.
pub async fn record(State(rec): State<Recorder>, mut req: Request, next: Next) -> Response {
    let request_id = request_id(req.headers());
    req.headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    let target = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| classify(req.method(), m.as_str(), req.uri().path()));
    let Some(target) = target else {
        let mut res = next.run(req).await;
        res.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        return res;
    };
    let task = tokio::spawn(async move {
        let mut res = rec.write(target, req, next, &request_id).await;
        res.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        res
    });
    match task.await {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => ApiError::Internal(format!("an admin write was cancelled: {e}")).into_response(),
    }
}

impl Recorder {
    async fn write(
        &self,
        target: Target,
        req: Request,
        next: Next,
        request_id: &HeaderValue,
    ) -> Response {
        let method = req.method().clone();
        let actor = req
            .extensions()
            .get::<Actor>()
            .map_or_else(|| "unknown".to_owned(), |a| a.0.clone());
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let before = match &target.before_path {
            Some(path) => self.read(path).await,
            None => None,
        };

        let res = next.run(req).await;
        let status = res.status();
        let (parts, body) = res.into_parts();
        let (captured, body) = capture(body, MAX_RECORDED_BODY).await;
        let res = Response::from_parts(parts, body);

        let after = if status.is_success() && method != Method::DELETE {
            captured.json()
        } else {
            None
        };
        let mut action = target.action;
        if method == Method::PUT && status == StatusCode::CREATED {
            action = "create";
        }
        let resource_id = target
            .resource_id
            .or_else(|| created_id(status, res.headers(), after.as_ref()));
        let org_id = target.org_id.or_else(|| {
            (target.resource_type == "org")
                .then(|| resource_id.as_deref()?.parse::<OrgId>().ok())
                .flatten()
        });
        let entry = AuditEntry {
            id: AuditId::new(),
            at: chrono::Utc::now(),
            actor,
            action: format!("{}.{action}", target.resource_type),
            resource_type: target.resource_type.to_owned(),
            resource_id,
            org_id,
            status: status.as_u16(),
            before,
            after,
            ip,
            request_id: request_id.to_str().unwrap_or_default().to_owned(),
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            self.metrics.write_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                error = %e,
                action = %entry.action,
                resource_id = entry.resource_id.as_deref().unwrap_or(""),
                status = entry.status,
                request_id = %entry.request_id,
                "cannot record an admin write in the audit log"
            );
        }
        res
    }
}

/// The id of what a create made: the last segment of its `Location`, else
/// the body's `id`.
fn created_id(status: StatusCode, headers: &HeaderMap, body: Option<&Value>) -> Option<String> {
    if !status.is_success() {
        return None;
    }
    let from_location = headers
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.rsplit('/').next())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    from_location.or_else(|| body?.get("id")?.as_str().map(str::to_owned))
}

fn truncated() -> Value {
    json!({"truncated": true})
}

// ---------------------------------------------------------------- targets

/// What a write is about, read from its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The verb: `create`, `update`, `delete`, `apply`, `revoke`...
    pub action: &'static str,
    pub resource_type: &'static str,
    /// From the path; a create's comes from its answer.
    pub resource_id: Option<String>,
    pub org_id: Option<OrgId>,
    /// Where the resource's current state is read before the write.
    pub before_path: Option<String>,
}

/// Path segments that name a collection, and the resource type of its items.
const COLLECTIONS: &[(&str, &str)] = &[
    ("services", "service"),
    ("routes", "route"),
    ("policies", "policy"),
    ("config", "config"),
    ("orgs", "org"),
    ("users", "user"),
    ("members", "member"),
    ("apps", "app"),
    ("keys", "key"),
    ("oauth-clients", "oauth_client"),
    ("jwt-issuers", "jwt_issuer"),
    ("signing-keys", "signing_key"),
    ("plans", "plan"),
    ("subscriptions", "subscription"),
    ("usage", "usage"),
    ("audit", "audit"),
];

/// Path segments after a resource that name an operation on it.
const VERBS: &[(&str, &str)] = &[
    ("revoke", "revoke"),
    ("rotate", "rotate"),
    ("secret", "reset_secret"),
    ("diff", "diff"),
];

/// Writes by method that change nothing, so are not recorded.
const READ_ONLY: &[(&str, &str)] = &[("POST", "/config/diff")];

/// What a request to the route `template` (axum's matched path, like
/// `/orgs/{org}/apps/{app}/keys/{key}/revoke`) at `path` writes; `None` for
/// reads (GET, HEAD, OPTIONS and [`READ_ONLY`] routes). The last collection
/// in the path is the resource type; a parameter right after it is the
/// resource's id; a verb after that names the action, else the method does
/// (POST: create, PUT: update (create when answered 201; `apply` for the
/// configuration), PATCH: update, DELETE: delete). `{org}` under `/orgs`
/// is the organization.
pub fn classify(method: &Method, template: &str, path: &str) -> Option<Target> {
    let writes = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    if !writes.contains(method)
        || READ_ONLY
            .iter()
            .any(|(m, t)| method.as_str() == *m && template == *t)
    {
        return None;
    }
    let tpl: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let raw: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if tpl.len() != raw.len() {
        return None;
    }
    let mut resource_type = None;
    let mut id: Option<(&str, usize)> = None;
    let mut verb = None;
    let mut org_id = None;
    for (i, (t, r)) in tpl.iter().zip(&raw).enumerate() {
        if t.starts_with('{') {
            if resource_type == Some("org") {
                org_id = r.parse::<OrgId>().ok();
            }
            id = Some((*r, i + 1));
        } else if let Some((_, kind)) = COLLECTIONS.iter().find(|(c, _)| c == t) {
            resource_type = Some(*kind);
            id = None;
            verb = None;
        } else {
            verb = Some(
                VERBS
                    .iter()
                    .find(|(v, _)| v == t)
                    .map_or("unknown", |v| v.1),
            );
        }
    }
    let resource_type = resource_type?;
    let action = match (verb, method.as_str()) {
        (Some(v), _) => v,
        (None, "PUT") if resource_type == "config" => "apply",
        (None, "PUT" | "PATCH") => "update",
        (None, "DELETE") => "delete",
        (None, _) => "create",
    };
    let before_path = match id {
        Some((_, end)) => Some(format!("/{}", raw[..end].join("/"))),
        None if *method == Method::PUT => Some(path.to_owned()),
        None => None,
    };
    Some(Target {
        action,
        resource_type,
        resource_id: id.map(|(id, _)| id.to_owned()),
        org_id,
        before_path,
    })
}

// ---------------------------------------------------------------- bodies

/// What [`capture`] kept of a body.
enum Captured {
    Whole(Bytes),
    TooLarge,
    Failed,
}

impl Captured {
    /// The body as JSON: `None` when empty, not JSON or unreadable;
    /// `{"truncated": true}` when too large.
    fn json(&self) -> Option<Value> {
        match self {
            Captured::Whole(b) if b.is_empty() => None,
            Captured::Whole(b) => serde_json::from_slice(b).ok(),
            Captured::TooLarge => Some(truncated()),
            Captured::Failed => None,
        }
    }
}

/// Reads `body` up to `limit` bytes and returns what it kept with a body
/// that replays every frame read and then the rest, so the client gets
/// the whole answer whatever its size.
async fn capture(mut body: Body, limit: usize) -> (Captured, Body) {
    let mut frames = VecDeque::new();
    let mut data = BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                let replay = Replay::new(frames, None, None);
                return (Captured::Whole(data.freeze()), Body::new(replay));
            }
            Some(Err(e)) => {
                let replay = Replay::new(frames, None, Some(e));
                return (Captured::Failed, Body::new(replay));
            }
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                }
                frames.push_back(frame);
                if data.len() > limit {
                    let replay = Replay::new(frames, Some(body), None);
                    return (Captured::TooLarge, Body::new(replay));
                }
            }
        }
    }
}

/// Frames already read, then an error or the rest of the body.
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    buffered: u64,
    rest: Option<Body>,
    error: Option<axum::Error>,
}

impl Replay {
    fn new(frames: VecDeque<Frame<Bytes>>, rest: Option<Body>, error: Option<axum::Error>) -> Self {
        let buffered = frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        Replay {
            frames,
            buffered,
            rest,
            error,
        }
    }
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.frames.pop_front() {
            if let Some(d) = frame.data_ref() {
                this.buffered -= d.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.rest, &self.error) {
            (None, None) => SizeHint::with_exact(self.buffered),
            (Some(rest), None) => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(self.buffered + r.lower());
                if let Some(upper) = r.upper() {
                    hint.set_upper(self.buffered + upper);
                }
                hint
            }
            (_, Some(_)) => SizeHint::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, template: &str, path: &str) -> Option<Target> {
        classify(&method, template, path)
    }

    #[test]
    fn routes_map_to_actions_and_resources() {
        let org = OrgId::new();
        let o = org.as_str();
        let cases = [
            (
                Method::POST,
                "/services",
                "/services".to_owned(),
                "service",
                "create",
                None,
                None,
            ),
            (
                Method::PUT,
                "/services/{id}",
                "/services/svc_1".to_owned(),
                "service",
                "update",
                Some("svc_1"),
                Some("/services/svc_1".to_owned()),
            ),
            (
                Method::DELETE,
                "/services/{id}",
                "/services/svc_1".to_owned(),
                "service",
                "delete",
                Some("svc_1"),
                Some("/services/svc_1".to_owned()),
            ),
            (
                Method::POST,
                "/services/{id}/routes",
                "/services/svc_1/routes".to_owned(),
                "route",
                "create",
                None,
                None,
            ),
            (
                Method::PUT,
                "/config",
                "/config".to_owned(),
                "config",
                "apply",
                None,
                Some("/config".to_owned()),
            ),
            (
                Method::POST,
                "/orgs/{org}/apps/{app}/keys/{key}/revoke",
                format!("/orgs/{o}/apps/app_1/keys/key_1/revoke"),
                "key",
                "revoke",
                Some("key_1"),
                Some(format!("/orgs/{o}/apps/app_1/keys/key_1")),
            ),
            (
                Method::POST,
                "/orgs/{org}/apps/{app}/oauth-clients/{client}/secret",
                format!("/orgs/{o}/apps/app_1/oauth-clients/cli_1/secret"),
                "oauth_client",
                "reset_secret",
                Some("cli_1"),
                Some(format!("/orgs/{o}/apps/app_1/oauth-clients/cli_1")),
            ),
            (
                Method::POST,
                "/signing-keys/rotate",
                "/signing-keys/rotate".to_owned(),
                "signing_key",
                "rotate",
                None,
                None,
            ),
            (
                Method::PATCH,
                "/orgs/{org}",
                format!("/orgs/{o}"),
                "org",
                "update",
                Some(o),
                Some(format!("/orgs/{o}")),
            ),
        ];
        for (method, template, path, kind, action, id, before) in cases {
            let t = target(method.clone(), template, &path)
                .unwrap_or_else(|| panic!("{method} {template}"));
            assert_eq!(t.resource_type, kind, "{method} {template}");
            assert_eq!(t.action, action, "{method} {template}");
            assert_eq!(t.resource_id.as_deref(), id, "{method} {template}");
            assert_eq!(t.before_path, before, "{method} {template}");
            let under_org = template.starts_with("/orgs/{org}");
            assert_eq!(
                t.org_id.as_ref(),
                under_org.then_some(&org),
                "{method} {template}"
            );
        }
    }

    #[test]
    fn reads_and_dry_runs_are_not_writes() {
        assert_eq!(target(Method::GET, "/services", "/services"), None);
        assert_eq!(target(Method::HEAD, "/services/{id}", "/services/x"), None);
        assert_eq!(target(Method::POST, "/config/diff", "/config/diff"), None);
    }

    /// Every write operation of the API maps to a known resource and verb,
    /// so a new route cannot slip into the log as `unknown`.
    #[test]
    fn every_write_in_the_openapi_document_is_classified() {
        use utoipa::OpenApi;
        let doc = crate::openapi::AdminApi::openapi();
        let mut writes = 0;
        for (template, item) in &doc.paths.paths {
            let path = template.replace(['{', '}'], "");
            let ops = [
                (Method::POST, item.post.is_some()),
                (Method::PUT, item.put.is_some()),
                (Method::PATCH, item.patch.is_some()),
                (Method::DELETE, item.delete.is_some()),
            ];
            for (method, present) in ops {
                if !present {
                    continue;
                }
                let Some(t) = target(method.clone(), template, &path) else {
                    assert_eq!(
                        (method.as_str(), template.as_str()),
                        ("POST", "/config/diff")
                    );
                    continue;
                };
                writes += 1;
                assert_ne!(t.action, "unknown", "{method} {template}");
                assert!(
                    !["usage", "audit"].contains(&t.resource_type),
                    "{method} {template}"
                );
            }
        }
        assert!(writes >= 38, "only {writes} writes found");
    }

    #[tokio::test]
    async fn capture_keeps_small_bodies_and_replays_large_ones_whole() {
        let (captured, body) = capture(Body::from("{\"id\": \"x\"}"), 64).await;
        assert_eq!(captured.json(), Some(json!({"id": "x"})));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(11));
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        assert_eq!(&bytes[..], b"{\"id\": \"x\"}");

        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..10)
            .map(|i| Ok(Bytes::from(vec![b'a' + i; 100])))
            .collect();
        let large = Body::from_stream(futures_util::stream::iter(chunks));
        let (captured, body) = capture(large, 250).await;
        assert_eq!(captured.json(), Some(truncated()));
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        assert_eq!(bytes.len(), 1000);
        assert!(bytes[..100].iter().all(|b| *b == b'a') && bytes[900..].iter().all(|b| *b == b'j'));

        let (captured, _) = capture(Body::empty(), 10).await;
        assert_eq!(captured.json(), None);
    }
}
