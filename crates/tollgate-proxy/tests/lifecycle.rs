//! Lifecycle: live reloads under traffic and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn route_to(service: &str, url: &str) -> Value {
    json!({"services": [{"name": service, "url": url, "routes": [{"name": "v", "paths": ["/v"]}]}]})
}

#[tokio::test]
async fn reload_changes_routing_and_lets_in_flight_requests_finish() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let gw = TestGateway::start(&route_to("one", &a.url())).await;
    assert_eq!(gw.gw.revision(), 1);
    let in_flight = spawn_get(gw.url("/v/hold"));
    a.stats.wait_requests(1).await;

    // The new configuration drops the service the request is using.
    gw.install(&route_to("two", &b.url()), 2);
    assert_eq!(gw.gw.revision(), 2);
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(&gw.url("/v/x")).await.upstream(), "b");
    }
    a.control.open_gate();
    let r = within("in-flight request", in_flight).await.expect("task");
    assert_eq!((r.status.as_u16(), r.upstream()), (200, "a"));
    assert_eq!(r.echo().path(), "/hold");
    assert_eq!(a.stats.requests(), 1);

    // Routes can disappear too.
    gw.install(&json!({"services": [{"name": "two", "url": b.url(), "routes": [{"name": "w", "paths": ["/w"]}]}]}), 3);
    assert_eq!(c.get(&gw.url("/v/x")).await.problem(404), "no_route");
    assert_eq!(c.get(&gw.url("/w")).await.upstream(), "b");
}

#[tokio::test]
async fn keep_alive_connection_opened_before_a_reload_keeps_working() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let gw = TestGateway::start(&route_to("one", &a.url())).await;
    let mut raw = Raw::connect(gw.addr).await;
    let local = raw.stream.local_addr().expect("local addr");
    raw.send("GET /v/1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(raw.response().await.echo().id(), "a");
    gw.install(&route_to("two", &b.url()), 2);
    // Same TCP connection, new routing.
    for i in 2..5 {
        raw.send(format!("GET /v/{i} HTTP/1.1\r\nHost: t\r\n\r\n"))
            .await;
        let e = raw.response().await.echo();
        assert_eq!((e.id(), e.path()), ("b", format!("/{i}").as_str()));
    }
    assert_eq!(raw.stream.local_addr().expect("local addr"), local);
    assert_eq!(a.stats.requests() + b.stats.requests(), 4);
}

#[tokio::test]
async fn reload_without_active_checks_clears_their_verdicts() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    b.control.set_health(500);
    let targets = json!([{"target": a.target()}, {"target": b.target()}]);
    let routes = json!([{"name": "all", "paths": ["/"]}]);
    let active = json!({"path": "/health", "interval": "20ms", "timeout": "500ms", "unhealthy_threshold": 1});
    let checked = json!({"services": [{"name": "s", "targets": targets, "health_checks": {"active": active}, "routes": routes}]});
    let gw = TestGateway::start(&checked).await;
    eventually("b marked unhealthy", || async {
        !gw.target_healthy(&b.target())
    })
    .await;

    // The same service without active checks: nothing is left to say b is down.
    gw.install(
        &json!({"services": [{"name": "s", "targets": targets, "routes": routes}]}),
        2,
    );
    let probes = b.stats.hits("/health");
    let c = client();
    let mut to_b = 0;
    for _ in 0..10 {
        if c.get(&gw.url("/x")).await.upstream() == "b" {
            to_b += 1;
        }
    }
    assert_eq!(to_b, 5);
    assert!(
        b.stats.hits("/health") <= probes + 1,
        "the old checker stopped"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let up = Upstream::echo("up").await;
    let mut gw = TestGateway::start(&route_to("one", &up.url())).await;
    let in_flight = spawn_get(gw.url("/v/hold"));
    up.stats.wait_requests(1).await;

    gw.stop.cancel();
    let addr = gw.addr;
    eventually("the listener closes", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;

    up.control.open_gate();
    let r = within("in-flight request", in_flight).await.expect("task");
    assert_eq!((r.status.as_u16(), r.upstream()), (200, "up"));
    let served = gw.served.take().expect("serve task");
    within("serve to return", served).await.expect("serve task");
}

#[tokio::test]
async fn shutdown_grace_bounds_how_long_serve_waits() {
    let up = Upstream::echo("up").await;
    let mut s = settings();
    s.shutdown_grace = Duration::from_millis(200);
    let mut gw = TestGateway::start_with(s, &route_to("one", &up.url())).await;
    let in_flight = spawn_get(gw.url("/v/hold"));
    up.stats.wait_requests(1).await;
    gw.stop.cancel();
    let served = gw.served.take().expect("serve task");
    within("serve to return after the grace period", served)
        .await
        .expect("serve task");
    in_flight.abort();
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::echo("up").await;
    let mut s = settings();
    // Far past the test's own deadline: only the shutdown can close them.
    s.header_read_timeout = Duration::from_secs(60);
    let mut gw = TestGateway::start_with(s, &route_to("one", &up.url())).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        c.write_all(b"GET /v/a HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = within("the response", c.read(&mut chunk))
                .await
                .expect("read");
            assert!(n > 0, "closed before the response");
            head.extend_from_slice(&chunk[..n]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
        idle.push(c);
    }
    gw.stop.cancel();
    for mut c in idle {
        // The rest of the echoed body may still be there; then the close.
        let mut rest = Vec::new();
        within("the idle connection to close", c.read_to_end(&mut rest))
            .await
            .expect("read to the close");
    }
    let served = gw.served.take().expect("serve task");
    within("serve to return", served).await.expect("serve task");
}
