//! In-process upstreams: an echo server with knobs, and a closer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Body, BoxError, empty, find, full, pattern, within};

/// What an upstream has seen.
#[derive(Debug)]
pub struct Stats {
    requests: watch::Sender<usize>,
    connections: AtomicUsize,
    paths: Mutex<Vec<String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: watch::Sender::new(0),
            connections: AtomicUsize::new(0),
            paths: Mutex::new(Vec::new()),
        }
    }
}

impl Stats {
    /// Requests received (counted when the head arrives).
    pub fn requests(&self) -> usize {
        *self.requests.borrow()
    }
    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    /// Requests received for exactly `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.paths
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| *p == path)
            .count()
    }
    /// Requests received, excluding health probes.
    pub fn traffic(&self) -> usize {
        self.paths
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| !p.starts_with("/health"))
            .count()
    }
    /// Waits until at least `n` requests arrived.
    pub async fn wait_requests(&self, n: usize) {
        let mut rx = self.requests.subscribe();
        within(
            &format!("upstream to receive {n} requests"),
            rx.wait_for(|c| *c >= n),
        )
        .await
        .expect("stats sender lives");
    }
    fn record(&self, path: &str) {
        self.paths.lock().expect("lock").push(path.to_owned());
        self.requests.send_modify(|n| *n += 1);
    }
}

/// Knobs of a running upstream.
#[derive(Debug)]
pub struct Control {
    /// Status of ordinary answers (200 unless changed).
    pub status: AtomicU16,
    /// Status of `/health...` answers (200 unless changed).
    pub health: AtomicU16,
    /// Delay before answering, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Extra headers on every ordinary answer.
    pub response_headers: Mutex<Vec<(String, String)>>,
    gate: watch::Sender<bool>,
}

impl Control {
    /// Lets every request to `/hold...` (waiting or future) answer.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
    pub fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::SeqCst);
    }
    pub fn set_health(&self, s: u16) {
        self.health.store(s, Ordering::SeqCst);
    }
}

struct Shared {
    id: String,
    stats: Arc<Stats>,
    control: Arc<Control>,
}

/// An in-process HTTP/1.1 upstream on 127.0.0.1:0.
///
/// Every request is counted. Requests to `/hold...` wait until
/// [`Control::open_gate`]; `/health...` answers with [`Control::health`];
/// `/download/N` streams N bytes; `/ws...` with an upgrade is a WebSocket
/// echo that greets first. Everything else is read to the end and answered
/// with [`Control::status`] and a JSON echo of the request (method, path,
/// query, version, every header, body length and checksum). Every answer
/// carries `x-upstream: <id>`.
pub struct Upstream {
    pub id: String,
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    pub control: Arc<Control>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// An echo upstream.
    pub async fn echo(id: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Stats::default());
        let control = Arc::new(Control {
            status: AtomicU16::new(200),
            health: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            response_headers: Mutex::new(Vec::new()),
            gate: watch::Sender::new(false),
        });
        let shared = Arc::new(Shared {
            id: id.to_owned(),
            stats: stats.clone(),
            control: control.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                shared.stats.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, shared).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            id: id.to_owned(),
            addr,
            stats,
            control,
            task,
        }
    }

    /// An upstream that answers every ordinary request with `status`.
    pub async fn status(id: &str, status: u16) -> Upstream {
        let up = Upstream::echo(id).await;
        up.control.set_status(status);
        up
    }

    /// An upstream that waits `delay` (tokio time) before answering.
    pub async fn slow(id: &str, delay: Duration) -> Upstream {
        let up = Upstream::echo(id).await;
        up.control
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        up
    }

    /// `host:port`, as a service target.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// `http://host:port`, as a service URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn answer(mut req: Request<Incoming>, up: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    up.stats.record(&path);
    if path.starts_with("/hold") {
        let mut gate = up.control.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
    }
    let delay = up.control.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if path.starts_with("/ws") && req.headers().contains_key(header::UPGRADE) {
        return websocket(&mut req, up.id.clone());
    }
    if let Some(n) = path.strip_prefix("/download/") {
        return download(n.parse().unwrap_or(0), &up.id);
    }
    let status = if path.starts_with("/health") {
        &up.control.health
    } else {
        &up.control.status
    };
    let status = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let echo_head = json!({
        "id": up.id,
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let mut body = req.into_body();
    let (mut len, mut sum, mut body_error) = (0u64, 0u64, None);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    len += d.len() as u64;
                    sum = d.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    let mut echo = echo_head;
    echo["body_len"] = json!(len);
    echo["body_sum"] = json!(sum);
    echo["body_error"] = json!(body_error);
    let mut res = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-upstream", &up.id);
    for (k, v) in up.control.response_headers.lock().expect("lock").iter() {
        res = res.header(k.as_str(), v.as_str());
    }
    res.body(full(echo.to_string())).expect("response")
}

fn download(len: u64, id: &str) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = pattern(CHUNK as usize);
    let frames = futures_util::stream::unfold(len, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK);
            Some((
                Ok::<_, BoxError>(Frame::data(chunk.slice(..n as usize))),
                left - n,
            ))
        }
    });
    Response::builder()
        .header("x-upstream", id)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("response")
}

fn websocket(req: &mut Request<Incoming>, id: String) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(req);
    let greeting = format!("hello from {id}");
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws.send(Message::text(greeting)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                return;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .header("x-upstream", id)
        .body(empty())
        .expect("response")
}

/// An upstream that reads each request (head and `Content-Length` body) and
/// then closes the connection without answering: a failure after the request
/// reached the upstream.
pub struct Closer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Closer {
    pub async fn start() -> Closer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind closer");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Stats::default());
        let s = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.len() > 64 * 1024 {
                            return;
                        }
                    };
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut req = httparse::Request::new(&mut headers);
                    let _ = req.parse(&buf[..head_end]);
                    let path = req.path.unwrap_or("").to_owned();
                    let len: usize = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    s.record(&path);
                    drop(stream);
                });
            }
        });
        Closer { addr, stats, task }
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}
