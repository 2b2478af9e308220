//! Builders shared by the proxy's integration tests: in-process upstreams on
//! 127.0.0.1:0, a real gateway on port 0, HTTP clients and a raw TCP client.
//!
//! Every wait is bounded by [`DEADLINE`]; nothing sleeps to wait for an event
//! it can await.
#![allow(dead_code)]

mod raw;
mod upstream;

#[allow(unused_imports)]
pub use raw::*;
pub use upstream::*;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_core::config::Config;
use tollgate_proxy::{Gateway, Listener, ProxySettings, serve};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// The longest any single step of a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A body of `chunks` copies of `chunk`, streamed (so sent chunked).
pub const MIB: usize = 1024 * 1024;

/// Streams `chunks` MiB through the gateway as a chunked POST and checks
/// that the upstream received every byte, in order.
pub async fn upload(gw: &TestGateway, chunks: usize) -> Echo {
    let chunk = pattern(MIB);
    let req = Request::post(gw.url("/upload"))
        .body(streamed(chunk.clone(), chunks))
        .expect("request");
    // The answer comes after the whole body: allow 50 ms per MiB (20 MiB/s,
    // a debug build on a loaded machine) on top of the usual deadline.
    let deadline = DEADLINE + Duration::from_millis(50) * chunks as u32;
    let r = client().send_within(req, deadline).await;
    let e = r.echo();
    assert_eq!(
        e.body_len(),
        (chunks * MIB) as u64,
        "bytes received upstream"
    );
    assert_eq!(
        e.body_sum(),
        checksum(&chunk).wrapping_mul(chunks as u64),
        "checksum"
    );
    assert_eq!(e.header("transfer-encoding").as_deref(), Some("chunked"));
    e
}

pub fn streamed(chunk: Bytes, chunks: usize) -> Body {
    let frames = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
    );
    BodyExt::boxed(StreamBody::new(frames))
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `len` bytes of a fixed non-trivial pattern.
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The checksum upstreams report for a body: the wrapping sum of its bytes.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |s, b| s.wrapping_add(u64::from(*b)))
}

/// Awaits `fut`, failing the test after [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?}: {what}"),
    }
}

/// Polls `check` every 20ms until it holds, failing after [`DEADLINE`]. Only
/// for states that cannot be awaited (health flags, timers inside the proxy).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < end, "not true within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- config

/// Parses a configuration written as JSON (YAML's subset) the way files are read.
pub fn config(v: &Value) -> Config {
    match Config::from_yaml(&v.to_string(), "test") {
        Ok(c) => c,
        Err(e) => panic!("invalid test configuration: {e}\n{v:#}"),
    }
}

/// A configuration with one service at `url` and the given routes.
pub fn one_service(url: &str, routes: Value) -> Value {
    json!({"services": [{"name": "svc", "url": url, "routes": routes}]})
}

/// A gateway with these settings and one echo upstream behind a catch-all
/// route that forwards the path unchanged.
pub async fn echo_gateway(settings: ProxySettings) -> (TestGateway, Upstream) {
    let up = Upstream::echo("up").await;
    let routes = json!([{"name": "all", "paths": ["/"], "strip_path": false}]);
    let gw = TestGateway::start_with(settings, &one_service(&up.url(), routes)).await;
    (gw, up)
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------- gateway

/// Settings for a test gateway: 127.0.0.1:0 and the defaults otherwise.
pub fn settings() -> ProxySettings {
    ProxySettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    }
}

/// A real gateway (listener, snapshot, serve loop) on 127.0.0.1:0.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gw: Arc<Gateway>,
    pub stop: CancellationToken,
    /// The `serve` task; `None` once a test took it to await shutdown.
    pub served: Option<JoinHandle<()>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop.cancel();
        self.gw.stop();
    }
}

impl TestGateway {
    pub async fn start(cfg: &Value) -> TestGateway {
        TestGateway::start_with(settings(), cfg).await
    }

    pub async fn start_with(settings: ProxySettings, cfg: &Value) -> TestGateway {
        TestGateway::start_gateway(Gateway::new(settings), cfg).await
    }

    /// Serves `gw` (built by the test) with `cfg` installed.
    pub async fn start_gateway(gw: Arc<Gateway>, cfg: &Value) -> TestGateway {
        gw.install(&config(cfg), 1);
        let listener = Listener::bind(&gw.settings).await.expect("bind gateway");
        let addr = listener.local_addr().expect("gateway addr");
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve(listener, gw.clone(), stop.clone()));
        TestGateway {
            addr,
            gw,
            stop,
            served: Some(served),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Installs a new configuration while serving.
    pub fn install(&self, cfg: &Value, revision: i64) {
        self.gw.install(&config(cfg), revision);
    }

    /// Whether the active health flag of `target` in the first service is up.
    pub fn target_healthy(&self, target: &str) -> bool {
        let snap = self.gw.snapshot();
        let t = snap.services[0]
            .balancer
            .targets
            .iter()
            .find(|t| &*t.addr == target)
            .expect("target in snapshot");
        t.active_healthy.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------- keys

/// An API key in a test gateway's ring, with its ids.
pub struct Caller {
    pub secret: String,
    pub org: tollgate_core::ids::OrgId,
    pub app: tollgate_core::ids::AppId,
    pub key: tollgate_core::ids::KeyId,
}

/// Adds a live key with `scopes` to the gateway's ring.
pub fn add_key(gw: &TestGateway, scopes: &[&str]) -> Caller {
    let secret = tollgate_identity::apikey::generate(tollgate_core::identity::KeyEnvironment::Live)
        .expect("rng")
        .secret;
    let (org, app, key) = (
        tollgate_core::ids::OrgId::new(),
        tollgate_core::ids::AppId::new(),
        tollgate_core::ids::KeyId::new(),
    );
    let ring = gw.gw.authenticator().keys();
    ring.upsert(
        ring.pepper().hash(&secret),
        tollgate_identity::keyring::KeyEntry::new(
            key.clone(),
            org.clone(),
            app.clone(),
            tollgate_core::identity::KeyEnvironment::Live,
            scopes.iter().map(|s| s.to_string()).collect(),
            None,
        ),
    );
    Caller {
        secret,
        org,
        app,
        key,
    }
}

// ---------------------------------------------------------------- HTTP clients

/// A response, read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(res: Response<Incoming>) -> Reply {
        let (parts, body) = res.into_parts();
        let body = within("response body", body.collect())
            .await
            .expect("response body")
            .to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Which upstream answered (`x-upstream`).
    pub fn upstream(&self) -> &str {
        self.header("x-upstream").unwrap_or_else(|| {
            panic!(
                "no x-upstream: {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// What the echo upstream saw.
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected an echo, got {}: {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        Echo(self.json())
    }

    /// Asserts a problem+json answer with `status` and returns its `code`.
    pub fn problem(&self, status: u16) -> String {
        assert_problem(
            self.status.as_u16(),
            self.header("content-type"),
            &self.body,
            status,
        )
    }
}

/// Asserts a problem+json answer with `status` and returns its `code`.
pub fn assert_problem(got: u16, content_type: Option<&str>, body: &[u8], status: u16) -> String {
    let text = String::from_utf8_lossy(body);
    assert_eq!(got, status, "body: {text:?}");
    assert_eq!(
        content_type,
        Some("application/problem+json"),
        "body: {text:?}"
    );
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(v["status"], status);
    v["code"].as_str().expect("code").to_owned()
}

/// The request as an echo upstream saw it.
#[derive(Debug)]
pub struct Echo(pub Value);

impl Echo {
    pub fn id(&self) -> &str {
        self.0["id"].as_str().expect("id")
    }
    pub fn method(&self) -> &str {
        self.0["method"].as_str().expect("method")
    }
    pub fn path(&self) -> &str {
        self.0["path"].as_str().expect("path")
    }
    pub fn query(&self) -> Option<&str> {
        self.0["query"].as_str()
    }
    pub fn version(&self) -> &str {
        self.0["version"].as_str().expect("version")
    }
    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        match self.0["headers"].get(name) {
            Some(Value::Array(vs)) => vs
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
    /// The header's single value; fails when it was sent more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.into_iter().next()
    }
    pub fn body_len(&self) -> u64 {
        self.0["body_len"].as_u64().expect("body_len")
    }
    pub fn body_sum(&self) -> u64 {
        self.0["body_sum"].as_u64().expect("body_sum")
    }
}

/// An HTTP/1.1 client with keep-alive.
#[derive(Clone)]
pub struct Client(pub LegacyClient<HttpConnector, Body>);

pub fn client() -> Client {
    Client(LegacyClient::builder(TokioExecutor::new()).build_http())
}

impl Client {
    pub async fn send(&self, req: Request<Body>) -> Reply {
        self.send_within(req, DEADLINE).await
    }

    /// [`Client::send`] with a deadline for the response head other than
    /// [`DEADLINE`] (an upload's head comes after its whole body).
    pub async fn send_within(&self, req: Request<Body>, deadline: Duration) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        let res = match tokio::time::timeout(deadline, self.0.request(req)).await {
            Ok(res) => res.unwrap_or_else(|e| panic!("{what}: {e:?}")),
            Err(_) => panic!("timed out after {deadline:?}: {what}"),
        };
        Reply::read(res).await
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(empty()).expect("request"))
            .await
    }

    /// A request with extra headers and a body.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body).expect("request")).await
    }
}

/// One request on a fresh client.
pub async fn get(url: &str) -> Reply {
    client().get(url).await
}

/// One request on a fresh client, in the background.
pub fn spawn_get(url: String) -> JoinHandle<Reply> {
    tokio::spawn(async move { get(&url).await })
}

/// An h2c (prior knowledge) connection.
pub async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    h2c_connection(addr).await.0
}

/// An h2c connection and the task that drives it, which ends when the
/// connection does.
pub async fn h2c_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    JoinHandle<hyper::Result<()>>,
) {
    let stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let (send, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("h2 handshake");
    (send, tokio::spawn(conn))
}

// ---------------------------------------------------------------- files

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-proxy-test-{}-{tag}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
