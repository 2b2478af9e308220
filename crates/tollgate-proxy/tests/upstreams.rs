//! Upstream pools through the real server: load balancing, active and passive
//! health, failures and retries, the circuit breaker and connection reuse.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::time::Instant;

fn service(targets: Value, extra: Value) -> Value {
    let mut svc = json!({"name": "svc", "targets": targets, "routes": [{"name": "all", "paths": ["/"], "strip_path": false}]});
    if let (Some(svc), Some(extra)) = (svc.as_object_mut(), extra.as_object()) {
        svc.extend(extra.clone());
    }
    json!({ "services": [svc] })
}

/// A retry budget that never runs dry, so retry counts are deterministic.
fn generous_budget() -> Value {
    json!({"ratio": 1.0, "min_per_second": 1000})
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let cfg = service(
        json!([{"target": a.target(), "weight": 3}, {"target": b.target(), "weight": 1}]),
        json!({}),
    );
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    let mut counts = (0, 0);
    for _ in 0..40 {
        match c.get(&gw.url("/x")).await.upstream() {
            "a" => counts.0 += 1,
            "b" => counts.1 += 1,
            other => panic!("unexpected upstream {other}"),
        }
    }
    assert_eq!(counts, (30, 10));
    assert_eq!((a.stats.requests(), b.stats.requests()), (30, 10));
}

#[tokio::test]
async fn least_connections_prefers_the_idle_target() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let cfg = service(
        json!([{"target": a.target()}, {"target": b.target()}]),
        json!({"load_balancing": "least_connections"}),
    );
    let gw = TestGateway::start(&cfg).await;
    let held = spawn_get(gw.url("/hold"));
    let busy = tokio::select! {
        _ = a.stats.wait_requests(1) => "a",
        _ = b.stats.wait_requests(1) => "b",
    };
    let idle = if busy == "a" { "b" } else { "a" };
    let c = client();
    for i in 0..6 {
        assert_eq!(
            c.get(&gw.url("/quick")).await.upstream(),
            idle,
            "request {i} should avoid the busy target"
        );
    }
    a.control.open_gate();
    b.control.open_gate();
    let held = within("held request", held).await.expect("task");
    assert_eq!(held.upstream(), busy);
    // Once nothing is in flight, both targets are used again.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(c.get(&gw.url("/quick")).await.upstream().to_owned());
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn active_health_check_takes_a_failing_target_out_and_back() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    b.control.set_health(500);
    let active = json!({"path": "/health", "interval": "50ms", "timeout": "500ms", "healthy_threshold": 1, "unhealthy_threshold": 2});
    let cfg = service(
        json!([{"target": a.target()}, {"target": b.target()}]),
        json!({"health_checks": {"active": active}}),
    );
    let gw = TestGateway::start(&cfg).await;
    eventually("b marked unhealthy", || async {
        !gw.target_healthy(&b.target())
    })
    .await;
    assert!(gw.target_healthy(&a.target()));
    assert!(
        b.stats.hits("/health") >= 2,
        "the probe uses the configured path"
    );
    let c = client();
    for _ in 0..10 {
        assert_eq!(c.get(&gw.url("/x")).await.upstream(), "a");
    }
    assert_eq!(b.stats.traffic(), 0);

    b.control.set_health(200);
    eventually("b healthy again", || async {
        gw.target_healthy(&b.target())
    })
    .await;
    let mut to_b = 0;
    for _ in 0..10 {
        if c.get(&gw.url("/x")).await.upstream() == "b" {
            to_b += 1;
        }
    }
    assert_eq!(to_b, 5, "a recovered target gets its share again");
}

#[tokio::test]
async fn passive_health_ejects_a_failing_target_for_its_cooldown() {
    let (a, b) = (Upstream::echo("a").await, Upstream::status("b", 500).await);
    let passive = json!({"unhealthy_threshold": 2, "cooldown": "1500ms"});
    let cfg = service(
        json!([{"target": a.target()}, {"target": b.target()}]),
        json!({"retries": 0, "health_checks": {"passive": passive}}),
    );
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    let (mut failures, mut ejected_at) = (0, Instant::now());
    for _ in 0..12 {
        if c.get(&gw.url("/x")).await.status == 500 {
            failures += 1;
            ejected_at = Instant::now();
        }
    }
    assert_eq!(
        failures, 2,
        "the upstream's 500s are passed through until the target is ejected"
    );
    assert_eq!((a.stats.requests(), b.stats.requests()), (10, 2));
    // After the cooldown the target is tried again.
    eventually("b back in rotation", || async {
        c.get(&gw.url("/x")).await;
        b.stats.requests() == 3
    })
    .await;
    assert!(
        ejected_at.elapsed() >= Duration::from_millis(1000),
        "b came back after {:?}",
        ejected_at.elapsed()
    );
}

#[tokio::test]
async fn all_targets_down_is_503_no_healthy_target() {
    let b = Upstream::status("b", 500).await;
    let passive = json!({"unhealthy_threshold": 1, "cooldown": "60s"});
    let gw = TestGateway::start(&service(
        json!([{"target": b.target()}]),
        json!({"retries": 0, "health_checks": {"passive": passive}}),
    ))
    .await;
    let c = client();
    assert_eq!(c.get(&gw.url("/x")).await.status, 500);
    assert_eq!(c.get(&gw.url("/x")).await.problem(503), "no_healthy_target");
    assert_eq!(b.stats.requests(), 1);
}

#[tokio::test]
async fn connect_failure_is_502_upstream_unavailable() {
    let port = closed_port();
    let cfg = json!({"services": [
        {"name": "defaults", "url": format!("http://127.0.0.1:{port}"), "routes": [{"name": "d", "paths": ["/d"]}]},
        // Retries allowed and budgeted, but there is no other target: the
        // answer must still be the connect error, not `no_healthy_target`.
        {"name": "retrying", "url": format!("http://127.0.0.1:{port}"), "retries": 3, "retry_budget": generous_budget(),
         "routes": [{"name": "r", "paths": ["/r"]}]},
    ]});
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    assert_eq!(
        c.get(&gw.url("/d")).await.problem(502),
        "upstream_unavailable"
    );
    assert_eq!(
        c.get(&gw.url("/r")).await.problem(502),
        "upstream_unavailable"
    );
    assert_eq!(
        c.request("POST", &gw.url("/r"), &[], full("body"))
            .await
            .problem(502),
        "upstream_unavailable"
    );
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_target() {
    let a = Upstream::echo("a").await;
    let dead = format!("127.0.0.1:{}", closed_port());
    // The default retry budget: a gateway that just started may retry at once.
    let cfg = service(
        json!([{"target": dead}, {"target": a.target()}]),
        json!({"retries": 1}),
    );
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    // Round robin starts every request on the dead target, so each one is retried.
    for _ in 0..3 {
        assert_eq!(c.get(&gw.url("/x")).await.upstream(), "a");
    }
    // Nothing reached the dead target, so even a request with a body is replayed.
    let body = pattern(10_000);
    let r = c
        .request("POST", &gw.url("/post"), &[], full(body.clone()))
        .await;
    let echo = r.echo();
    assert_eq!(
        (echo.id(), echo.body_len(), echo.body_sum()),
        ("a", 10_000, checksum(&body))
    );
    assert_eq!(a.stats.requests(), 4);
}

#[tokio::test]
async fn read_timeout_is_504_upstream_timeout_and_not_retried() {
    let slow = Upstream::slow("slow", Duration::from_secs(3)).await;
    let other = Upstream::slow("other", Duration::from_secs(3)).await;
    let cfg = service(
        json!([{"target": slow.target()}, {"target": other.target()}]),
        json!({"read_timeout": "200ms", "retries": 2, "retry_budget": generous_budget()}),
    );
    let gw = TestGateway::start(&cfg).await;
    let started = Instant::now();
    assert_eq!(get(&gw.url("/x")).await.problem(504), "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        slow.stats.requests() + other.stats.requests(),
        1,
        "a timed-out request is not retried"
    );
}

#[tokio::test]
async fn request_with_a_body_is_not_retried_after_reaching_an_upstream() {
    let (x, y) = (Closer::start().await, Closer::start().await);
    let cfg = service(
        json!([{"target": x.target()}, {"target": y.target()}]),
        json!({"retries": 2, "retry_budget": generous_budget()}),
    );
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    let r = c
        .request("POST", &gw.url("/orders"), &[], full("{\"qty\": 1}"))
        .await;
    assert_eq!(r.problem(502), "upstream_error");
    let r = c
        .request("PUT", &gw.url("/orders/1"), &[], full("{\"qty\": 2}"))
        .await;
    assert_eq!(r.problem(502), "upstream_error");
    assert_eq!(
        x.stats.requests() + y.stats.requests(),
        2,
        "each request reached exactly one upstream"
    );
}

#[tokio::test]
async fn idempotent_request_is_retried_at_most_retries_times() {
    let (x, y) = (Closer::start().await, Closer::start().await);
    let cfg = service(
        json!([{"target": x.target()}, {"target": y.target()}]),
        json!({"retries": 2, "retry_budget": generous_budget()}),
    );
    let gw = TestGateway::start(&cfg).await;
    // The budget holds far more than `retries`: only the retry count stops it.
    assert_eq!(get(&gw.url("/x")).await.problem(502), "upstream_error");
    assert_eq!(
        x.stats.requests() + y.stats.requests(),
        3,
        "one attempt plus two retries"
    );
    assert!(
        x.stats.requests() >= 1 && y.stats.requests() >= 1,
        "retries go to another target first"
    );
}

#[tokio::test]
async fn circuit_breaker_opens_then_lets_one_trial_through() {
    let up = Upstream::status("up", 500).await;
    let cfg = service(
        json!([{"target": up.target()}]),
        json!({"retries": 0, "circuit_breaker": {"failure_threshold": 3, "open_for": "300ms"}}),
    );
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(&gw.url("/x")).await.status, 500);
    }
    let opened = Instant::now();
    assert_eq!(c.get(&gw.url("/x")).await.problem(503), "circuit_open");
    assert_eq!(c.get(&gw.url("/x")).await.problem(503), "circuit_open");
    assert_eq!(
        up.stats.requests(),
        3,
        "an open circuit does not reach the upstream"
    );

    // After open_for, one trial goes through; it fails, so the circuit opens again.
    let trial = loop {
        let r = c.get(&gw.url("/x")).await;
        if !(r.status == 503 && r.json()["code"] == "circuit_open") {
            break r.status;
        }
        assert!(opened.elapsed() < DEADLINE, "no trial within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        opened.elapsed() >= Duration::from_millis(250),
        "the circuit stayed open for {:?}",
        opened.elapsed()
    );
    assert_eq!(trial, 500);
    assert_eq!(up.stats.requests(), 4);
    assert_eq!(c.get(&gw.url("/x")).await.problem(503), "circuit_open");

    // The upstream recovers: the next trial succeeds and closes the circuit.
    up.control.set_status(200);
    eventually("a successful trial", || {
        let c = c.clone();
        let url = gw.url("/x");
        async move { c.get(&url).await.status == 200 }
    })
    .await;
    for _ in 0..5 {
        assert_eq!(c.get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!(up.stats.requests(), 10);
}

#[tokio::test]
async fn abandoned_breaker_trial_does_not_wedge_the_circuit() {
    let up = Upstream::status("up", 500).await;
    let cfg = service(
        json!([{"target": up.target()}]),
        json!({"retries": 0, "circuit_breaker": {"failure_threshold": 1, "open_for": "200ms"}}),
    );
    let gw = TestGateway::start(&cfg).await;
    let c = client();
    assert_eq!(c.get(&gw.url("/x")).await.status, 500);
    assert_eq!(c.get(&gw.url("/x")).await.problem(503), "circuit_open");
    // Let open_for pass (a timer inside the breaker; nothing to await).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The trial request hangs on the upstream and its client goes away.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n").await;
    up.stats.wait_requests(2).await;
    drop(raw);

    // The abandoned trial must not keep the circuit open for ever.
    up.control.set_status(200);
    eventually("circuit closes after a new trial", || {
        let c = c.clone();
        let url = gw.url("/x");
        async move { c.get(&url).await.status == 200 }
    })
    .await;
}

#[tokio::test]
async fn keep_alive_reuses_upstream_connections() {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&service(json!([{"target": up.target()}]), json!({}))).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!(up.stats.requests(), 20);
    assert!(
        up.stats.connections() <= 2,
        "20 sequential requests opened {} upstream connections",
        up.stats.connections()
    );
}

/// An upstream that answers one request per connection and then closes it
/// without saying so (no `Connection: close`), as a server whose keep-alive
/// timeout is shorter than the gateway's does.
async fn one_shot_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (lines, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let _ = lines.send(head.lines().next().unwrap_or("").to_owned());
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, rx, task)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_reused() {
    let (addr, mut lines, task) = one_shot_upstream().await;
    // No retries: a request sent on a dead connection would fail.
    let gw = TestGateway::start(&service(
        json!([{"target": addr.to_string()}]),
        json!({"retries": 0}),
    ))
    .await;
    let c = client();
    for i in 0..20 {
        let r = c.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        assert_eq!(&r.body[..], b"ok");
        // The request target is in origin form, as upstreams expect.
        let line = within("request line", lines.recv())
            .await
            .expect("request line");
        assert_eq!(line, "GET /x HTTP/1.1");
    }
    task.abort();
}
