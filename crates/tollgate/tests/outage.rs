//! The configuration store goes away and comes back. A TCP forwarder sits
//! between a node and PostgreSQL; cutting it closes every live connection and
//! every new one. While it is cut the node keeps routing its last good
//! configuration, `/readyz` says why it is not ready, and admin writes fail
//! with `store_unavailable`; once restored, the node recovers by itself.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tollgate_core::config::Config;
use tollgate_store::testing::postgres_schema;

/// How a cut database looks to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The port is closed: new connections are refused (a stopped server).
    Refuse,
    /// New connections are accepted and closed at once (a dying proxy or pooler).
    Close,
}

#[derive(Default)]
struct ForwarderState {
    cut: bool,
    live: Vec<AbortHandle>,
}

/// Forwards TCP connections from 127.0.0.1:0 to `target`, until cut.
struct Forwarder {
    addr: SocketAddr,
    target: String,
    state: Arc<Mutex<ForwarderState>>,
    accept: Option<JoinHandle<()>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.abort_live();
        if let Some(task) = &self.accept {
            task.abort();
        }
    }
}

impl Forwarder {
    async fn start(target: String) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the forwarder");
        let addr = listener.local_addr().expect("forwarder address");
        let state = Arc::new(Mutex::new(ForwarderState::default()));
        let accept = Some(Forwarder::accept(listener, target.clone(), state.clone()));
        Forwarder {
            addr,
            target,
            state,
            accept,
        }
    }

    fn accept(
        listener: TcpListener,
        target: String,
        state: Arc<Mutex<ForwarderState>>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut state = state.lock().expect("forwarder state");
                if state.cut {
                    // Accepted and closed at once.
                    drop(inbound);
                    continue;
                }
                state.live.retain(|h| !h.is_finished());
                let target = target.clone();
                let copy = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state.live.push(copy.abort_handle());
            }
        })
    }

    fn abort_live(&self) {
        let mut state = self.state.lock().expect("forwarder state");
        state.cut = true;
        for h in state.live.drain(..) {
            h.abort();
        }
    }

    /// Closes every forwarded connection, and refuses or closes every new
    /// one until [`restore`](Self::restore).
    async fn cut(&mut self, how: Cut) {
        self.abort_live();
        if how == Cut::Refuse {
            let task = self.accept.take().expect("the forwarder is listening");
            task.abort();
            // The listener is closed once the task is gone.
            let _ = within("the forwarder to stop listening", task).await;
        }
    }

    /// Forwards again, on the same port.
    async fn restore(&mut self) {
        if self.accept.is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .expect("bind the forwarder's port again");
            self.accept = Some(Forwarder::accept(
                listener,
                self.target.clone(),
                self.state.clone(),
            ));
        }
        self.state.lock().expect("forwarder state").cut = false;
    }
}

/// Where the authority's `host:port` sits in a `postgres://` URL.
fn host_span(url: &str) -> std::ops::Range<usize> {
    let start = url.find("://").expect("a URL") + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let host = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    host..end
}

/// The database's `host:port`.
fn database_addr(url: &str) -> String {
    let host = &url[host_span(url)];
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// `url` with its `host:port` replaced by `addr`.
fn via(url: &str, addr: SocketAddr) -> String {
    let span = host_span(url);
    format!("{}{addr}{}", &url[..span.start], &url[span.end..])
}

#[test]
fn urls_are_rewritten_host_only() {
    let addr: SocketAddr = "127.0.0.1:7".parse().expect("addr");
    assert_eq!(
        via("postgres://u:p@db:5432/x?a=b", addr),
        "postgres://u:p@127.0.0.1:7/x?a=b"
    );
    assert_eq!(via("postgres://db/x", addr), "postgres://127.0.0.1:7/x");
    assert_eq!(database_addr("postgres://u@db/x"), "db:5432");
    assert_eq!(database_addr("postgres://u@db:6543"), "db:6543");
}

fn config(upstream: &Upstream, routes: &[&str]) -> Config {
    let text: String = routes
        .iter()
        .map(|name| one_route_yaml(name, &upstream.url(), &format!("/{name}")))
        .map(|yaml| yaml.trim_start_matches("services:\n").to_owned())
        .collect();
    Config::from_yaml(&format!("services:\n{text}"), "test").expect("a valid test configuration")
}

async fn readyz(node: &tollgate::Running) -> Reply {
    get(&admin_url(node, "/readyz")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_a_refused_store_and_recovers_by_itself() {
    rides_out(Cut::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_a_store_that_drops_connections_and_recovers_by_itself() {
    rides_out(Cut::Close).await;
}

async fn rides_out(how: Cut) {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let began = Instant::now();
    let upstream = Upstream::start("outage-upstream").await;
    let direct = schema
        .connect()
        .await
        .expect("a store straight on PostgreSQL");
    direct
        .apply(&config(&upstream, &["orders"]))
        .await
        .expect("seed the configuration");

    let mut forwarder = Forwarder::start(database_addr(&schema.url)).await;
    let url = via(
        &url_with_schema(&schema.url, &schema.schema),
        forwarder.addr,
    );
    let node = node(&["--database-url", &url]).await;
    let proxy = proxy_of(&node);
    assert!(routed(proxy, "/orders").await);
    assert_eq!(readyz(&node).await.status, StatusCode::OK);
    // The store goes away.
    forwarder.cut(how).await;
    let cut_at = Instant::now();
    let r = eventually(DEADLINE, "/readyz to report the outage", || async {
        let r = readyz(&node).await;
        (r.status != StatusCode::OK).then_some(r)
    })
    .await;
    eprintln!(
        "{how:?}: /readyz reported the outage after {:?}",
        cut_at.elapsed()
    );
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.problem_code(), "store_unavailable");
    let detail = r.json()["detail"].as_str().expect("detail").to_owned();
    assert!(detail.contains("last good configuration"), "{detail}");
    let h = get(&admin_url(&node, "/healthz")).await;
    assert_eq!(h.status, StatusCode::OK, "the process is alive: {}", h.text);
    assert_eq!(h.json()["store"], "unreachable");

    // The proxy keeps serving what it had.
    let r = get(&format!("http://{proxy}/orders")).await;
    assert_eq!(
        (r.status, r.upstream()),
        (StatusCode::OK, Some("outage-upstream")),
        "{}",
        r.text
    );

    // Admin writes fail cleanly.
    let body = json!({"name": "late", "url": upstream.url()});
    let r = call(
        Method::POST,
        &admin_url(&node, "/services"),
        Some(TOKEN),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.problem_code(), "store_unavailable");
    assert!(
        routed(proxy, "/orders").await,
        "still routing after the failed write"
    );

    // The store comes back: the node is ready again without help.
    forwarder.restore().await;
    let restored_at = Instant::now();
    eventually(DEADLINE, "/readyz to recover", || async {
        (readyz(&node).await.status == StatusCode::OK).then_some(())
    })
    .await;
    eprintln!(
        "{how:?}: /readyz recovered after {:?}",
        restored_at.elapsed()
    );
    let (_, stored) = direct.export().await.expect("export");
    assert!(
        stored.services.iter().all(|s| s.name != "late"),
        "the failed write left a trace"
    );

    // A change made in the store afterwards goes live.
    direct
        .apply(&config(&upstream, &["orders", "payments"]))
        .await
        .expect("change the configuration");
    eventually(DEADLINE, "the new route to go live", || async {
        routed(proxy, "/payments").await.then_some(())
    })
    .await;
    assert!(routed(proxy, "/orders").await);

    stop_node(node).await;
    eprintln!("{how:?}: the outage test took {:?}", began.elapsed());
}
