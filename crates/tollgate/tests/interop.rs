//! Tollgate's identity features against real third-party clients: runs
//! `tests/interop/test_identity.py` (Authlib, PyJWT, cryptography, requests)
//! against the real binary and an in-test echo upstream.
//!
//! The interpreter is `TOLLGATE_TEST_PYTHON`, else
//! `~/.cache/tollgate-py/bin/python3` (see `tests/interop/requirements.txt`).
//! Without a usable one the test is skipped, except when `CI=true`, where it
//! fails.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tollgate_store::testing::TempDirGuard;

/// The longest the script may run before it is killed and the test fails.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

/// What the script imports; an interpreter without them is not usable.
const IMPORTS: &str = "import authlib, jwt, requests, cryptography; \
                       from authlib.integrations.requests_client import OAuth2Session; \
                       from jwt.algorithms import RSAAlgorithm";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/test_identity.py")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The interpreter to use, or why there is none.
fn python() -> Result<PathBuf, String> {
    let candidate = match std::env::var_os("TOLLGATE_TEST_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let home =
                std::env::var_os("HOME").ok_or("TOLLGATE_TEST_PYTHON is unset and so is HOME")?;
            let venv = PathBuf::from(home).join(".cache/tollgate-py/bin/python3");
            if !venv.exists() {
                return Err(format!(
                    "TOLLGATE_TEST_PYTHON is unset and {} does not exist; create it with \
                     `python3 -m venv ~/.cache/tollgate-py && \
                     ~/.cache/tollgate-py/bin/pip install -r tests/interop/requirements.txt`",
                    venv.display()
                ));
            }
            venv
        }
    };
    let out = std::process::Command::new(&candidate)
        .args(["-c", IMPORTS])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", candidate.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import the interop dependencies (install tests/interop/requirements.txt): {}",
            candidate.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(candidate)
}

/// A port on 127.0.0.1 that was free a moment ago. The OAuth issuer URL must
/// name the proxy's port before the proxy starts, so it cannot be port 0.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
    l.local_addr().expect("probe address").port()
}

/// An upstream on 127.0.0.1:0 that answers every request with 200 and a
/// JSON document of what it received: `{"method", "path", "headers"}`
/// (header names in lower case, repeated headers joined with `, `).
struct Echo {
    url: String,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the echo upstream");
        let addr = listener.local_addr().expect("echo address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let mut headers = serde_json::Map::new();
                        for name in req.headers().keys() {
                            let values: Vec<String> = req
                                .headers()
                                .get_all(name)
                                .iter()
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .collect();
                            headers.insert(name.as_str().to_owned(), values.join(", ").into());
                        }
                        let doc = serde_json::json!({
                            "method": req.method().as_str(),
                            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                            "headers": headers,
                        });
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .header("x-upstream", "echo")
                                .body(Full::new(Bytes::from(doc.to_string())))
                                .expect("echo response"),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Echo {
            url: format!("http://{addr}"),
            task,
        }
    }
}

/// Copies a child's output into `sink`, line by line.
fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().expect("output").push(line);
        }
    })
}

#[tokio::test]
async fn identity_features_work_with_authlib_and_pyjwt() {
    let python = match python() {
        Ok(p) => p,
        Err(why) if in_ci() => panic!("the interop test cannot run in CI: {why}"),
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };

    let dir = TempDirGuard::new().expect("temp dir");
    let echo = Echo::start().await;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let issuer = format!("http://127.0.0.1:{port}");
    let node = Serve::start(
        dir.path(),
        &["--proxy-listen", &listen, "--oauth-issuer", &issuer],
        &[("TOLLGATE_ADMIN_TOKEN", TOKEN), ("HS256_SECRET", &secret)],
    )
    .await;
    assert_eq!(
        node.proxy.port(),
        port,
        "the proxy listens where the issuer URL says"
    );

    let mut cmd = tokio::process::Command::new(&python);
    for (key, _) in std::env::vars_os() {
        let drop = key.to_str().is_some_and(|k| {
            k.starts_with("TOLLGATE_") || k.to_ascii_lowercase().ends_with("_proxy")
        });
        if drop {
            cmd.env_remove(key);
        }
    }
    cmd.arg(script())
        .env("TOLLGATE_PROXY_URL", &issuer)
        .env("TOLLGATE_ADMIN_URL", format!("http://{}", node.admin))
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("ECHO_URL", &echo.url)
        .env("HS256_SECRET", &secret)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start the interop script");
    let output = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        collect(child.stdout.take().expect("piped stdout"), output.clone()),
        collect(child.stderr.take().expect("piped stderr"), output.clone()),
    ];
    let status = match tokio::time::timeout(SCRIPT_LIMIT, child.wait()).await {
        Ok(status) => Some(status.expect("wait for the interop script")),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    for r in readers {
        let _ = within("the script's output to close", r).await;
    }
    let text = output.lock().expect("output").join("\n");
    node.stop().await;
    match status {
        Some(s) if s.success() => println!("{text}"),
        Some(s) => panic!("the interop script failed ({s}):\n{text}"),
        None => {
            panic!("the interop script did not finish within {SCRIPT_LIMIT:?}; killed it:\n{text}")
        }
    }
}
