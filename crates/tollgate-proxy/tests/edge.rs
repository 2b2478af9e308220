//! Edge correctness: header hygiene, forwarding headers, request ids and
//! trace context, request smuggling, size limits and client deadlines.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::time::Instant;

#[tokio::test]
async fn hop_by_hop_request_headers_are_stripped() {
    let (gw, _up) = echo_gateway(settings()).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(
        "GET /edge HTTP/1.1\r\nHost: t\r\nConnection: X-Foo, close\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
         Upgrade: h2c\r\nProxy-Connection: keep-alive\r\nTrailer: x-checksum\r\nX-Foo: secret\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    let e = raw.response().await.echo();
    for name in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "trailer",
        "x-foo",
        "transfer-encoding",
    ] {
        assert_eq!(e.header(name), None, "{name} reached the upstream");
    }
    assert_eq!(e.header("x-kept").as_deref(), Some("yes"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let (gw, up) = echo_gateway(settings()).await;
    *up.control.response_headers.lock().expect("lock") = [
        ("connection", "x-up-secret"),
        ("x-up-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("trailer", "x-checksum"),
        ("upgrade", "h2c"),
        ("x-up-kept", "1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let r = get(&gw.url("/x")).await;
    assert_eq!(r.status, 200);
    for name in [
        "connection",
        "x-up-secret",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(r.header(name), None, "{name} reached the client");
    }
    assert_eq!(r.header("x-up-kept"), Some("1"));
}

const SPOOFED: [(&str, &str); 5] = [
    ("host", "api.test"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=6.6.6.6;proto=https"),
];

#[tokio::test]
async fn forwarding_headers_from_untrusted_clients_are_replaced() {
    let (gw, _up) = echo_gateway(settings()).await;
    let e = client()
        .request("GET", &gw.url("/x"), &SPOOFED, empty())
        .await
        .echo();
    assert_eq!(e.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(e.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(e.header("x-forwarded-host").as_deref(), Some("api.test"));
    assert_eq!(
        e.header("forwarded").as_deref(),
        Some("for=127.0.0.1;proto=http;host=\"api.test\"")
    );
}

#[tokio::test]
async fn forwarding_headers_from_trusted_proxies_are_extended() {
    let mut s = settings();
    s.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    let (gw, _up) = echo_gateway(s).await;
    let e = client()
        .request("GET", &gw.url("/x"), &SPOOFED, empty())
        .await
        .echo();
    assert_eq!(
        e.header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(e.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        e.header("x-forwarded-host").as_deref(),
        Some("evil.example")
    );
    assert_eq!(
        e.header("forwarded").as_deref(),
        Some("for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host=\"api.test\"")
    );
    // Without earlier hops the trusted peer starts the chain.
    let e = client().get(&gw.url("/x")).await.echo();
    assert_eq!(e.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(e.header("x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test]
async fn request_id_is_generated_propagated_and_returned() {
    let (gw, _up) = echo_gateway(settings()).await;
    let c = client();
    // Absent: a ULID is made, sent upstream and returned.
    let r = c.get(&gw.url("/x")).await;
    let id = r.header("x-request-id").expect("request id").to_owned();
    assert_eq!(id.len(), 26);
    assert!(ulid::Ulid::from_string(&id).is_ok(), "{id} is not a ULID");
    assert_eq!(r.echo().header("x-request-id"), Some(id.clone()));
    let again = c.get(&gw.url("/x")).await;
    assert_ne!(
        again.header("x-request-id"),
        Some(id.as_str()),
        "ids are per request"
    );
    // Valid: propagated both ways.
    let r = c
        .request(
            "GET",
            &gw.url("/x"),
            &[("x-request-id", "client-id_1.2:3")],
            empty(),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("client-id_1.2:3"));
    assert_eq!(
        r.echo().header("x-request-id").as_deref(),
        Some("client-id_1.2:3")
    );
    // Unsafe or oversized: replaced.
    let long = "a".repeat(200);
    for bad in ["has spaces in it", "semi;colon", long.as_str()] {
        let r = c
            .request("GET", &gw.url("/x"), &[("x-request-id", bad)], empty())
            .await;
        let id = r.header("x-request-id").expect("request id").to_owned();
        assert_eq!(id.len(), 26, "{bad:?} should have been replaced");
        assert_eq!(r.echo().header("x-request-id"), Some(id));
    }
    // Gateway errors carry the id too.
    let r = c
        .request(
            "GET",
            &gw.url("/../x"),
            &[("x-request-id", "err-1")],
            empty(),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("err-1"));
}

#[tokio::test]
async fn traceparent_is_propagated_when_valid_and_dropped_when_malformed() {
    let (gw, _up) = echo_gateway(settings()).await;
    let c = client();
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let e = c
        .request(
            "GET",
            &gw.url("/x"),
            &[("traceparent", valid), ("tracestate", "vendor=1")],
            empty(),
        )
        .await
        .echo();
    assert_eq!(e.header("traceparent").as_deref(), Some(valid));
    assert_eq!(e.header("tracestate").as_deref(), Some("vendor=1"));
    for bad in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "garbage",
    ] {
        let e = c
            .request(
                "GET",
                &gw.url("/x"),
                &[("traceparent", bad), ("tracestate", "vendor=1")],
                empty(),
            )
            .await
            .echo();
        assert_eq!(e.header("traceparent"), None, "{bad}");
        assert_eq!(e.header("tracestate"), None, "{bad}");
    }
}

async fn refused_and_closed(gw: &TestGateway, request: &str) -> u16 {
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(request).await;
    let res = raw.response().await;
    raw.closed().await;
    if res.header("content-type") == Some("application/problem+json") {
        assert_eq!(res.json()["code"], "request_smuggling", "{request:?}");
    }
    res.status
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let (gw, up) = echo_gateway(settings()).await;
    for request in [
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let mut raw = Raw::connect(gw.addr).await;
        raw.send(request).await;
        let res = raw.response().await;
        assert_eq!(res.problem(400), "request_smuggling", "{request:?}");
        assert_eq!(res.header("connection"), Some("close"));
        raw.closed().await;
    }
    // Differing lengths too.
    assert_eq!(
        refused_and_closed(
            &gw,
            "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        )
        .await,
        400
    );
    assert_eq!(up.stats.requests(), 0);
    // A smuggled request behind a good one on the same connection is refused too.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(
        "GET /first HTTP/1.1\r\nHost: t\r\n\r\nPOST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw.response().await.echo().path(), "/first");
    assert_eq!(raw.response().await.problem(400), "request_smuggling");
    raw.closed().await;
    assert_eq!(up.stats.requests(), 1);
}

#[tokio::test]
async fn pipelined_keep_alive_requests_are_answered_in_order() {
    let (gw, up) = echo_gateway(settings()).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(
        "GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
         POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
         POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         GET /d HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = raw.response().await.echo();
        seen.push((e.path().to_owned(), e.body_len()));
    }
    assert_eq!(
        seen,
        [
            ("/a".to_owned(), 0),
            ("/b".to_owned(), 5),
            ("/c".to_owned(), 3),
            ("/d".to_owned(), 0)
        ]
    );
    // The connection is still usable.
    raw.send("GET /e HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(raw.response().await.echo().path(), "/e");
    assert_eq!(up.stats.requests(), 5);
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_431() {
    let mut s = settings();
    s.max_header_bytes = 16 * 1024;
    s.max_headers = 20;
    let (gw, up) = echo_gateway(s).await;
    let big = |n: usize| {
        format!(
            "GET /x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(n)
        )
    };
    let many = |n: usize| {
        let fields: String = (0..n).map(|i| format!("X-H{i}: {i}\r\n")).collect();
        format!("GET /x HTTP/1.1\r\nHost: t\r\n{fields}Connection: close\r\n\r\n")
    };
    let send = |req: String| {
        let addr = gw.addr;
        async move {
            let mut raw = Raw::connect(addr).await;
            raw.send(req).await;
            raw.response().await
        }
    };
    assert_eq!(send(big(8 * 1024)).await.status, 200);
    // Over the limit: a problem document, like every other gateway error.
    assert_eq!(send(big(20 * 1024)).await.problem(431), "headers_too_large");
    assert_eq!(send(many(10)).await.status, 200);
    assert_eq!(send(many(30)).await.problem(431), "headers_too_large");
    // Far over the limit, the connection answers before reading it all.
    assert_eq!(
        send(big(200 * 1024)).await.problem(431),
        "headers_too_large"
    );
    assert_eq!(up.stats.requests(), 2);
}

#[tokio::test]
async fn declared_body_over_max_body_bytes_is_413() {
    let mut s = settings();
    s.max_body_bytes = Some(1024);
    let (gw, up) = echo_gateway(s).await;
    // Only the head is sent: the gateway refuses on the declared length alone.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n")
        .await;
    let res = raw.response().await;
    assert_eq!(res.problem(413), "payload_too_large");
    raw.closed().await;
    assert_eq!(up.stats.requests(), 0);
    let e = client()
        .request("POST", &gw.url("/x"), &[], full(vec![b'x'; 1024]))
        .await
        .echo();
    assert_eq!(e.body_len(), 1024);
}

#[tokio::test]
async fn chunked_body_over_max_body_bytes_is_413() {
    let mut s = settings();
    s.max_body_bytes = Some(1024);
    let (gw, _up) = echo_gateway(s).await;
    let chunk = format!("3e8\r\n{}\r\n", "x".repeat(1000));
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(format!("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n")).await;
    assert_eq!(raw.response().await.problem(413), "payload_too_large");
    raw.closed().await;
    // Under the limit, chunked is fine.
    let r = client()
        .request("POST", &gw.url("/x"), &[], streamed(pattern(500), 2))
        .await;
    assert_eq!(r.echo().body_len(), 1000);
}

#[tokio::test]
async fn stalled_body_is_408_request_timeout() {
    let mut s = settings();
    s.body_read_timeout = Duration::from_millis(300);
    let (gw, _up) = echo_gateway(s).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let started = Instant::now();
    let res = raw.response().await;
    assert_eq!(res.problem(408), "request_timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "answered after {:?}",
        started.elapsed()
    );
    raw.closed().await;
}

async fn disconnected_after(gw: &TestGateway, first_bytes: &str) -> Duration {
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(first_bytes).await;
    let started = Instant::now();
    raw.closed().await;
    started.elapsed()
}

#[tokio::test]
async fn partial_request_head_is_answered_408_after_header_read_timeout() {
    let mut s = settings();
    s.header_read_timeout = Duration::from_millis(300);
    let (gw, up) = echo_gateway(s).await;
    for partial in ["GET /x HT", "GET /x HTTP/1.1\r\nHost: t\r\nX-Slow: 1"] {
        let mut raw = Raw::connect(gw.addr).await;
        raw.send(partial).await;
        let started = Instant::now();
        let res = raw.response().await;
        assert_eq!(res.problem(408), "request_timeout", "{partial:?}");
        raw.closed().await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{partial:?}: closed after {took:?}"
        );
    }
    assert_eq!(up.stats.requests(), 0);
}

/// A client that uploads slowly (but never stalls longer than the body
/// deadline) is not blamed on the upstream: `read_timeout` counts from the
/// end of the upload.
#[tokio::test]
async fn slow_upload_is_not_an_upstream_timeout() {
    let mut s = settings();
    s.body_read_timeout = Duration::from_secs(2);
    let up = Upstream::echo("up").await;
    let mut cfg = one_service(&up.url(), json!([{"name": "all", "paths": ["/"]}]));
    cfg["services"][0]["read_timeout"] = json!("300ms");
    let gw = TestGateway::start_with(s, &cfg).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for _ in 0..5 {
        // The client's pace is the behaviour under test.
        tokio::time::sleep(Duration::from_millis(150)).await;
        raw.send("5\r\nhello\r\n").await;
    }
    raw.send("0\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!(
        res.status, 200,
        "an upload of 750ms with read_timeout 300ms"
    );
    assert_eq!(up.stats.requests(), 1);
}

#[tokio::test]
async fn silent_connection_is_disconnected_after_header_read_timeout() {
    let mut s = settings();
    s.header_read_timeout = Duration::from_millis(300);
    let (gw, _up) = echo_gateway(s).await;
    // Nothing at all, and a stalled HTTP/2 preface: the protocol is never known.
    for first in ["", "PRI * HTTP/2.0\r\n"] {
        let took = disconnected_after(&gw, first).await;
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{first:?}: closed after {took:?}"
        );
    }
}

/// After a request, a keep-alive connection that stays silent is closed at
/// the header deadline plus a second of slack (kept on the coarse timer),
/// not held open for ever.
#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_header_deadline() {
    let mut s = settings();
    s.header_read_timeout = Duration::from_millis(300);
    let (gw, _up) = echo_gateway(s).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(raw.response().await.status, 200);
    let started = Instant::now();
    raw.closed().await;
    let took = started.elapsed();
    // 300 ms + 1 s, give or take a tick of the coarse timer (250 ms).
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn connection_cap_holds_extra_connections_until_one_closes() {
    let mut s = settings();
    s.max_connections = 2;
    let (gw, _up) = echo_gateway(s).await;
    let request = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut first = Raw::connect(gw.addr).await;
    first.send(request).await;
    assert_eq!(first.response().await.status, 200);
    let mut second = Raw::connect(gw.addr).await;
    second.send(request).await;
    assert_eq!(second.response().await.status, 200);

    let mut third = Raw::connect(gw.addr).await;
    third.send(request).await;
    assert!(
        third
            .response_within(Duration::from_millis(300))
            .await
            .is_none(),
        "a third connection was served"
    );
    drop(first);
    assert_eq!(third.response().await.status, 200);
    // The remaining held connection still works.
    second.send(request).await;
    assert_eq!(second.response().await.status, 200);
}
