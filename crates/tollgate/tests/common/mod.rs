//! Builders shared by the binary's end-to-end tests: in-process upstreams on
//! 127.0.0.1:0, a small HTTP client, the real `tollgate` binary run as a child
//! process (its stderr read line by line), and nodes started in-process.
//!
//! Every wait is bounded; nothing sleeps to wait for an event it can await.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate::{Cli, Command, Running};

/// The longest any single step of a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// An admin token the tests hand to nodes they start.
pub const TOKEN: &str = "e2e-admin-token-0123456789abcdef";

/// The key pepper in-process nodes share, as a cluster's nodes must.
pub const PEPPER: &str = "e2e-key-pepper-0123456789abcdef-0123456789";

/// How long an upstream holds requests to `/slow...`.
pub const SLOW: Duration = Duration::from_millis(1500);

/// Awaits `fut`, failing the test after `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Awaits `fut`, failing the test after [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(DEADLINE, what, fut).await
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
/// Only for states that cannot be awaited (a poller in another node, a
/// listener closing in another process).
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "not true within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- HTTP client

/// A response, read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `code` of a problem+json answer (asserting the content type).
    pub fn problem_code(&self) -> String {
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{} {}",
            self.status,
            self.text
        );
        self.json()["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code: {}", self.text))
            .to_owned()
    }

    /// Which in-test upstream answered.
    pub fn upstream(&self) -> Option<&str> {
        self.headers.get("x-upstream").and_then(|v| v.to_str().ok())
    }
}

/// A fresh HTTP/1.1 client (its own connection pool).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request on a fresh client and reads the answer, bounded by
/// [`DEADLINE`]. Panics when no answer arrives.
pub async fn call(method: Method, url: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
    match try_call(method.clone(), url, token, body).await {
        Ok(r) => r,
        Err(e) => panic!("{method} {url} failed: {e}"),
    }
}

/// Like [`call`], but returns transport errors.
pub async fn try_call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Reply, String> {
    let mut b = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        b = b.header("authorization", format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = b.body(Full::new(bytes)).map_err(|e| e.to_string())?;
    let fut = async {
        let res = client().request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = res.status();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    within("an HTTP answer", fut).await
}

pub async fn get(url: &str) -> Reply {
    call(Method::GET, url, None, None).await
}

/// Sends `req` on a fresh client and reads the answer, bounded by [`DEADLINE`].
pub async fn send(req: Request<Full<Bytes>>) -> Reply {
    let what = format!("{} {}", req.method(), req.uri());
    let fut = async {
        let res = client()
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let status = res.status();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    within("an HTTP answer", fut).await
}

/// A GET with extra headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).expect("request")).await
}

/// A POST of an `application/x-www-form-urlencoded` body.
pub async fn post_form(url: &str, form: &str) -> Reply {
    let req = Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.to_owned())))
        .expect("request");
    send(req).await
}

/// Whether the proxy at `proxy` routes `path`: true when an in-test upstream
/// answered 200, false when the proxy answered 404 `no_route`. Anything else
/// fails the test.
pub async fn routed(proxy: SocketAddr, path: &str) -> bool {
    let r = get(&format!("http://{proxy}{path}")).await;
    match r.status {
        StatusCode::OK if r.upstream().is_some() => true,
        StatusCode::NOT_FOUND => {
            assert_eq!(r.problem_code(), "no_route", "{}", r.text);
            false
        }
        other => panic!(
            "unexpected answer from the proxy for {path}: {other} {}",
            r.text
        ),
    }
}

// ---------------------------------------------------------------- upstreams

/// An in-process HTTP/1.1 upstream on 127.0.0.1:0. Every answer is 200 with
/// `x-upstream: <name>` and the body `<name> <path>`; requests to `/slow...`
/// are answered after [`SLOW`]. `received` counts requests as their heads
/// arrive.
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an upstream");
        let addr = listener.local_addr().expect("upstream address");
        let (tx, received) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        async move {
                            tx.send_modify(|n| *n += 1);
                            let path = req.uri().path().to_owned();
                            let _ = req.into_body().collect().await;
                            if path.starts_with("/slow") {
                                // The upstream's own latency: what the test holds in flight.
                                tokio::time::sleep(SLOW).await;
                            }
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header("x-upstream", name)
                                    .body(Full::new(Bytes::from(format!("{name} {path}"))))
                                    .expect("upstream response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_received(&self, n: usize) {
        let mut rx = self.received.clone();
        within(
            &format!("the upstream to receive {n} requests"),
            rx.wait_for(|c| *c >= n),
        )
        .await
        .expect("upstream alive");
    }
}

/// A configuration file's text: one service `name` at `url` with one route
/// `name` on `path` (forwarded unchanged: `strip_path: false`).
pub fn one_route_yaml(name: &str, url: &str, path: &str) -> String {
    format!(
        "services:\n  - name: {name}\n    url: {url}\n    routes:\n      - name: {name}\n        paths: [{path}]\n        strip_path: false\n"
    )
}

// ---------------------------------------------------------------- the binary

/// The `tollgate` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Removes every `TOLLGATE_*` (and `RUST_LOG`) variable the test runner may
/// have, so only what a test sets reaches the child.
fn clean_env(cmd: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("TOLLGATE_") || k == "RUST_LOG")
        {
            cmd.env_remove(key);
        }
    }
}

/// `tollgate <args>` with the data directory `data_dir`, run to completion.
pub fn run(data_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    clean_env(&mut cmd);
    cmd.args(args)
        .env("TOLLGATE_DATA_DIR", data_dir)
        .env("TOLLGATE_LOG", "warn")
        .stdin(Stdio::null());
    cmd.output().expect("run the tollgate binary")
}

/// A `tollgate serve` child process whose stderr is read line by line.
pub struct Serve {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    seen: watch::Receiver<usize>,
    reader: Option<JoinHandle<()>>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Serve {
    /// Starts `tollgate serve <args>` on `data_dir`, with both listeners on
    /// 127.0.0.1:0 and `env` on top, and waits for both "listening" lines.
    pub async fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut std_cmd = std::process::Command::new(BIN);
        clean_env(&mut std_cmd);
        std_cmd
            .arg("serve")
            .args(args)
            .env("TOLLGATE_DATA_DIR", data_dir)
            .env("TOLLGATE_PROXY_LISTEN", "127.0.0.1:0")
            .env("TOLLGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("TOLLGATE_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn tollgate serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, seen) = watch::channel(0usize);
        let sink = lines.clone();
        let reader = tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[tollgate] {line}");
                let n = {
                    let mut v = sink.lock().expect("lines");
                    v.push(line);
                    v.len()
                };
                tx.send_replace(n);
            }
        });
        let mut serve = Serve {
            child,
            lines,
            seen,
            reader: Some(reader),
            proxy: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        serve.proxy = addr_in(
            &serve
                .line("the proxy listening line", |l| {
                    l.starts_with("tollgate: proxy listening on http://")
                })
                .await,
        );
        serve.admin = addr_in(
            &serve
                .line("the admin listening line", |l| {
                    l.starts_with("tollgate: admin API listening on http://")
                })
                .await,
        );
        serve
    }

    /// Waits (bounded) for a stderr line matching `pred` and returns it.
    pub async fn line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let find = |lines: &Mutex<Vec<String>>| {
            lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| pred(l))
                .cloned()
        };
        let lines = self.lines.clone();
        let seen = &mut self.seen;
        within(&format!("stderr to show {what}"), async {
            loop {
                if let Some(l) = find(&lines) {
                    return l;
                }
                if seen.changed().await.is_err() {
                    return find(&lines).unwrap_or_else(|| {
                        panic!(
                            "tollgate closed stderr before {what}:\n{}",
                            lines.lock().expect("lines").join("\n")
                        )
                    });
                }
            }
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the child is running")
    }

    /// Sends SIGTERM (through `kill(1)`: the tests have no libc binding).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits up to `limit` for the process to exit, then for its stderr to
    /// close. Returns the exit status and every stderr line.
    pub async fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let status = within_for(limit, "tollgate to exit", self.child.wait())
            .await
            .expect("wait for tollgate");
        if let Some(reader) = self.reader.take() {
            within("stderr to close", reader)
                .await
                .expect("stderr reader");
        }
        (status, self.lines.lock().expect("lines").clone())
    }

    /// SIGTERM, then a clean exit within [`DEADLINE`]; returns stderr.
    pub async fn stop(mut self) -> Vec<String> {
        self.terminate();
        let (status, lines) = self.wait_exit(DEADLINE).await;
        assert!(
            status.success(),
            "tollgate exited with {status}:\n{}",
            lines.join("\n")
        );
        lines
    }
}

/// The address in a line ending with `http://ADDR` or `http://ADDR/...`.
fn addr_in(line: &str) -> SocketAddr {
    let rest = &line[line.find("http://").expect("a URL in the line") + "http://".len()..];
    let addr = rest.split(['/', ' ']).next().unwrap_or_default();
    addr.parse()
        .unwrap_or_else(|e| panic!("no address in `{line}`: {e}"))
}

// ---------------------------------------------------------------- in-process nodes

/// Starts a node in this process with `tollgate serve <args>` plus listeners
/// on 127.0.0.1:0, a 100 ms store poll and the test admin token.
pub async fn node(args: &[&str]) -> Running {
    let mut argv = vec![
        "tollgate",
        "serve",
        "--proxy-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--poll-interval-ms",
        "100",
        "--admin-token",
        TOKEN,
        "--shutdown-grace-secs",
        "2",
        "--key-pepper",
        PEPPER,
    ];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("bad arguments {argv:?}: {e}"));
    let Command::Serve(serve) = cli.command else {
        panic!("not a serve command")
    };
    within("a node to start", tollgate::start(*serve))
        .await
        .expect("start a node")
}

/// Stops an in-process node and waits (bounded) for it.
pub async fn stop_node(node: Running) {
    node.shutdown.cancel();
    within("a node to stop", node.wait()).await;
}

pub fn proxy_of(node: &Running) -> SocketAddr {
    node.proxy_addr.expect("the node runs the gateway role")
}

pub fn admin_url(node: &Running, path: &str) -> String {
    format!(
        "http://{}{path}",
        node.admin_addr.expect("the node runs the admin role")
    )
}

/// A PostgreSQL URL whose connections use `schema` (through the libpq
/// `options` parameter), for nodes that only take `--database-url`.
pub fn url_with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}
