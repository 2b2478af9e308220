//! An in-process OTLP/HTTP collector for tests, here and in the crates that
//! wire tracing in: it records every POSTed body, answers with scripted
//! statuses, and can hold its answers to stall the exporter. Not used by
//! the gateway itself.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long [`Collector::next_export`] waits.
pub const WAIT: Duration = Duration::from_secs(10);

/// One POST the collector received.
#[derive(Debug, Clone)]
pub struct Export {
    /// The request path, normally `/v1/traces`.
    pub path: String,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
    /// The status the collector answered.
    pub status: u16,
}

/// One span from an export, with the fields tests look at.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// `traceId`, hex.
    pub trace_id: String,
    /// `spanId`, hex.
    pub span_id: String,
    /// `parentSpanId`, hex; `None` when absent or empty.
    pub parent_span_id: Option<String>,
    /// `name`.
    pub name: String,
    /// `kind` (1 internal, 2 server, 3 client).
    pub kind: i64,
    /// `startTimeUnixNano`.
    pub start_unix_nano: u64,
    /// `endTimeUnixNano`.
    pub end_unix_nano: u64,
    /// `status.code` (0 when absent).
    pub status_code: i64,
    /// `attributes` as `(key, value)` with the `AnyValue` object as value.
    pub attributes: Vec<(String, Value)>,
}

impl ExportedSpan {
    /// The `AnyValue` of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// A `stringValue` attribute.
    pub fn str_attribute(&self, key: &str) -> Option<&str> {
        self.attribute(key)?.get("stringValue")?.as_str()
    }

    /// An `intValue` attribute, written as a string or a number.
    pub fn int_attribute(&self, key: &str) -> Option<i64> {
        let v = self.attribute(key)?.get("intValue")?;
        v.as_i64().or_else(|| v.as_str()?.parse().ok())
    }

    /// A `boolValue` attribute.
    pub fn bool_attribute(&self, key: &str) -> Option<bool> {
        self.attribute(key)?.get("boolValue")?.as_bool()
    }
}

fn u64_field(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str()?.parse().ok())
        .unwrap_or_default()
}

impl Export {
    /// Every span in the body, in order.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let mut out = Vec::new();
        let empty = Vec::new();
        let arr = |v: &Value, k: &str| v.get(k).and_then(Value::as_array).unwrap_or(&empty).clone();
        for rs in arr(&self.body, "resourceSpans") {
            let service_name = rs
                .get("resource")
                .map(|r| arr(r, "attributes"))
                .unwrap_or_default()
                .iter()
                .find(|kv| kv["key"] == "service.name")
                .and_then(|kv| kv["value"]["stringValue"].as_str().map(str::to_owned));
            for ss in arr(&rs, "scopeSpans") {
                for s in arr(&ss, "spans") {
                    let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_owned);
                    out.push(ExportedSpan {
                        service_name: service_name.clone(),
                        trace_id: text("traceId").unwrap_or_default(),
                        span_id: text("spanId").unwrap_or_default(),
                        parent_span_id: text("parentSpanId").filter(|p| !p.is_empty()),
                        name: text("name").unwrap_or_default(),
                        kind: s.get("kind").and_then(Value::as_i64).unwrap_or_default(),
                        start_unix_nano: s.get("startTimeUnixNano").map(u64_field).unwrap_or(0),
                        end_unix_nano: s.get("endTimeUnixNano").map(u64_field).unwrap_or(0),
                        status_code: s
                            .get("status")
                            .and_then(|st| st.get("code"))
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        attributes: arr(&s, "attributes")
                            .iter()
                            .filter_map(|kv| {
                                Some((
                                    kv.get("key")?.as_str()?.to_owned(),
                                    kv.get("value")?.clone(),
                                ))
                            })
                            .collect(),
                    });
                }
            }
        }
        out
    }
}

struct Shared {
    script: Mutex<VecDeque<u16>>,
    open: watch::Sender<bool>,
}

/// A collector listening on `127.0.0.1` on a free port. Stops when dropped.
pub struct Collector {
    addr: SocketAddr,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Export>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Collector({})", self.addr)
    }
}

impl Collector {
    /// Starts a collector that answers every export with 200 and `{}`.
    pub async fn start() -> std::io::Result<Collector> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (open, _) = watch::channel(true);
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            open,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), tx));
        Ok(Collector {
            addr,
            shared,
            rx,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its traces endpoint, `http://127.0.0.1:PORT/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Answers the next exports with `statuses`, in order, then 200 again.
    pub fn respond_with(&self, statuses: impl IntoIterator<Item = u16>) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(statuses);
    }

    /// Holds every answer from now on until [`release`](Self::release):
    /// exports are still recorded when they arrive.
    pub fn hold(&self) {
        self.shared.open.send_replace(false);
    }

    /// Answers held exports and stops holding.
    pub fn release(&self) {
        self.shared.open.send_replace(true);
    }

    /// The next export received, waiting up to [`WAIT`].
    pub async fn next_export(&mut self) -> Option<Export> {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// An export already received, without waiting.
    pub fn try_next(&mut self) -> Option<Export> {
        self.rx.try_recv().ok()
    }

    /// Every export already received.
    pub fn drain(&mut self) -> Vec<Export> {
        std::iter::from_fn(|| self.try_next()).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An endpoint where nothing listens: connections are refused.
pub fn dead_endpoint() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}/v1/traces"))
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, tx: mpsc::UnboundedSender<Export>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let shared = Arc::clone(&shared);
        let tx = tx.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(req, Arc::clone(&shared), tx.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Export>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let status = shared
        .script
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front()
        .unwrap_or(200);
    let mut open = shared.open.subscribe();
    let _ = tx.send(Export {
        path,
        content_type,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    });
    let _ = open.wait_for(|open| *open).await;
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
