//! Tollgate's own HTTP/1 server connection (`h1.rs`) on the wire: a real
//! gateway on loopback, a raw client that writes exact bytes, and either the
//! echo upstream or a hand-written one that answers with exact bytes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A chunked answer without a length (nor a `Date`).
const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
/// The same with a trailer field after the last chunk.
const CHUNKED_TRAILER: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An upstream on 127.0.0.1:0 that answers every request head it reads
/// (bodiless requests only) with the same exact bytes, keeping the
/// connection for the next.
struct Scripted {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(reply: &'static [u8]) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(i) = find(&buf, b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            if stream.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Scripted { addr, task }
    }

    /// A gateway whose catch-all route forwards to this upstream.
    async fn gateway(&self) -> TestGateway {
        let routes = json!([{"name": "all", "paths": ["/"], "strip_path": false}]);
        TestGateway::start(&one_service(&format!("http://{}", self.addr), routes)).await
    }
}

/// A gateway whose only route allows GET alone, in front of an echo upstream.
async fn get_only_gateway() -> (TestGateway, Upstream) {
    let up = Upstream::echo("up").await;
    let routes = json!([{"name": "r", "paths": ["/"], "methods": ["GET"]}]);
    let gw = TestGateway::start(&one_service(&up.url(), routes)).await;
    (gw, up)
}

/// Asserts that the response has a `date` that parses as an HTTP date.
fn assert_dated(res: &RawResponse, what: &str) {
    let date = res
        .header("date")
        .unwrap_or_else(|| panic!("{what}: no date header in {:?}", res.headers));
    assert!(
        httpdate::parse_http_date(date).is_ok(),
        "{what}: date {date:?} is not an HTTP date"
    );
}

/// A head `httparse` refuses is answered 400 `bad_request` by the connection
/// itself, which then closes; nothing reaches the upstream.
#[tokio::test]
async fn unparsable_head_is_400_and_closes() {
    let (gw, up) = echo_gateway(settings()).await;
    let request = "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n";
    assert_eq!(answered_then_closed(&gw, request, 400).await, "bad_request");
    assert_eq!(up.stats.requests(), 0);
}

/// Sends `request` on a new connection and returns the problem code of its
/// answer, after checking the status, `connection: close` and that the
/// connection then closes.
async fn answered_then_closed(gw: &TestGateway, request: &str, status: u16) -> String {
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(request).await;
    let res = raw.response().await;
    let code = res.problem(status);
    assert_eq!(res.header("connection"), Some("close"));
    raw.closed().await;
    code
}

/// A head far beyond `max_header_bytes` (past the slack the connection reads
/// to let the service answer) still gets a 431 problem document, not a bare
/// status, and the connection closes.
#[tokio::test]
async fn head_far_over_the_limit_is_431_problem_and_closes() {
    let mut s = settings();
    s.max_header_bytes = 16 * 1024;
    let (gw, up) = echo_gateway(s).await;
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    assert_eq!(
        answered_then_closed(&gw, &request, 431).await,
        "headers_too_large"
    );
    assert_eq!(up.stats.requests(), 0);
}

/// `Expect: 100-continue` is answered with an interim 100 once the body is
/// wanted; the client then sends it and gets the final answer.
#[tokio::test]
async fn expect_continue_gets_100_before_the_body_is_sent() {
    let (gw, _up) = echo_gateway(settings()).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = raw.response().await;
    assert_eq!(interim.status, 100, "interim response first");
    assert!(interim.body.is_empty());
    raw.send("hello").await;
    let e = raw.response().await.echo();
    assert_eq!((e.method(), e.path(), e.body_len()), ("POST", "/x", 5));
    assert_eq!(e.body_sum(), checksum(b"hello"));
}

/// A request refused before its body is read (413 on the declared length)
/// gets the refusal straight away, without a 100 that would make the
/// client send the body.
#[tokio::test]
async fn expect_continue_refused_on_length_gets_413_without_100() {
    let mut s = settings();
    s.max_body_bytes = Some(4);
    let (gw, up) = echo_gateway(s).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let first = raw.response().await;
    assert_eq!(first.problem(413), "payload_too_large");
    raw.closed().await;
    assert_eq!(up.stats.requests(), 0);
}

/// An HTTP/1.0 request is answered with `connection: close` and the
/// connection closed; with `Connection: keep-alive` it is answered with
/// `connection: keep-alive` and the connection carries another request.
#[tokio::test]
async fn http10_closes_unless_keep_alive_is_asked_for() {
    let (gw, up) = echo_gateway(settings()).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!(res.echo().path(), "/x");
    assert_eq!(res.header("connection"), Some("close"));
    raw.closed().await;

    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let res = raw.response().await;
    assert_eq!(res.echo().path(), "/x");
    assert_eq!(res.header("connection"), Some("keep-alive"));
    raw.send("GET /y HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let res = raw.response().await;
    assert_eq!(res.echo().path(), "/y");
    assert_eq!(res.header("connection"), Some("keep-alive"));
    assert_eq!(up.stats.requests(), 3);
}

/// A response body without a known length goes chunked to an HTTP/1.1
/// client (which keeps its connection) and, since an HTTP/1.0 client cannot
/// read chunks, unframed to an HTTP/1.0 client, ended by closing.
#[tokio::test]
async fn unknown_length_is_chunked_for_http11_and_close_delimited_for_http10() {
    let up = Scripted::start(CHUNKED).await;
    let gw = up.gateway().await;

    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert_eq!(res.body, b"hello");
    assert_ne!(res.header("connection"), Some("close"));
    raw.send("GET /y HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!((res.status, res.body.as_slice()), (200, &b"hello"[..]));

    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await;
    // Without a length, `response` reads the body to the close: it returns
    // only if the gateway closes.
    let res = raw.response().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("transfer-encoding"), None);
    assert_eq!(res.header("content-length"), None);
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.body, b"hello");
}

/// Responses written by the connection code carry a valid `date`, whether
/// proxied from an upstream that sent none or made by the gateway.
#[tokio::test]
async fn responses_carry_an_http_date() {
    let up = Scripted::start(CHUNKED).await;
    let gw = up.gateway().await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!(res.status, 200);
    assert_dated(&res, "proxied without a date upstream");
    raw.send("GET /x HTTP/1.0\r\nHost: t\r\n\r\n").await;
    assert_dated(&raw.response().await, "HTTP/1.0, close-delimited");

    let (gw, _up) = get_only_gateway().await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_dated(&raw.response().await, "proxied from the echo upstream");
    raw.send("DELETE /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!(res.problem(405), "method_not_allowed");
    assert_dated(&res, "gateway error");
}

/// The answers the connection writes itself, before any service runs
/// (400 for a malformed head, 431 for one far too large), carry a `date`
/// like every other response (RFC 9110 section 6.6.1: required on 4xx).
#[tokio::test]
async fn connection_level_answers_carry_an_http_date() {
    let mut s = settings();
    s.max_header_bytes = 16 * 1024;
    let (gw, _up) = echo_gateway(s).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!(res.problem(400), "bad_request");
    assert_dated(&res, "400 for a malformed head");

    let mut raw = Raw::connect(gw.addr).await;
    raw.send(format!(
        "GET /x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    ))
    .await;
    let res = raw.response().await;
    assert_eq!(res.problem(431), "headers_too_large");
    assert_dated(&res, "431 for a head far over the limit");
}

/// A small request body the service never read, already on hand when the
/// answer is written, is skipped: the connection carries the next request.
#[tokio::test]
async fn unread_body_already_received_is_skipped_and_the_connection_kept() {
    let (gw, up) = get_only_gateway().await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let res = raw.response().await;
    assert_eq!(res.problem(405), "method_not_allowed");
    assert_ne!(res.header("connection"), Some("close"));
    raw.send("GET /y HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let res = raw.response().await;
    assert_eq!(res.echo().path(), "/y");
    assert_eq!(up.stats.requests(), 1);
}

/// An unread request body that has not all arrived cannot be skipped: the
/// answer says `connection: close` and the connection closes after it.
#[tokio::test]
async fn unread_body_still_arriving_closes_the_connection() {
    let (gw, up) = get_only_gateway().await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n0123456789")
        .await;
    let res = raw.response().await;
    assert_eq!(res.problem(405), "method_not_allowed");
    assert_eq!(res.header("connection"), Some("close"));
    raw.closed().await;
    assert_eq!(up.stats.requests(), 0);
}

/// Trailer fields of a chunked upstream response are written after the last
/// chunk of the chunked response to an HTTP/1.1 client.
#[tokio::test]
async fn chunked_response_trailers_reach_an_http11_client() {
    let up = Scripted::start(CHUNKED_TRAILER).await;
    let gw = up.gateway().await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n")
        .await;
    // `Raw::response` drops trailers: read the bytes up to the empty line
    // that ends the trailer section after the last chunk.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let (section, end) = loop {
        if let Some(last) = find(&bytes, b"\r\n0\r\n") {
            let section = last + 5;
            let rest = &bytes[section..];
            let end = if rest.starts_with(b"\r\n") {
                Some(section + 2)
            } else {
                find(rest, b"\r\n\r\n").map(|i| section + i + 4)
            };
            if let Some(end) = end {
                break (section, end);
            }
        }
        let n = within("the gateway's response", raw.stream.read(&mut chunk))
            .await
            .expect("read");
        assert!(
            n > 0,
            "closed before the end of the response: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    let head_end = find(&bytes, b"\r\n\r\n").expect("head") + 4;
    assert!(
        text[..head_end].contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text:?}"
    );
    assert!(
        text[head_end..].starts_with("5\r\nhello\r\n0\r\n"),
        "{text:?}"
    );
    assert!(
        text[section..end].contains("x-checksum: abc\r\n"),
        "no trailer after the last chunk: {text:?}"
    );
    assert_eq!(end, bytes.len(), "bytes after the response: {text:?}");
}

/// An HTTP/2 client that finishes its preface and SETTINGS but never opens
/// a stream is disconnected at the header deadline, like an HTTP/1 client
/// that sends no head: it cannot hold a connection slot for ever.
#[tokio::test]
async fn http2_connection_without_a_stream_is_closed_at_the_header_deadline() {
    let mut s = settings();
    s.header_read_timeout = Duration::from_millis(300);
    let (gw, up) = echo_gateway(s).await;
    let mut raw = Raw::connect(gw.addr).await;
    // The preface, then an empty SETTINGS frame (length 0, type 4, stream 0).
    raw.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await;
    let started = Instant::now();
    raw.closed().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(up.stats.requests(), 0);
}

/// Blank lines before a request line are skipped, but they do not put off
/// the idle deadline: a client that trickles `\r\n` is still disconnected.
#[tokio::test]
async fn blank_lines_do_not_keep_an_idle_connection_open() {
    let mut s = settings();
    s.header_read_timeout = Duration::from_millis(300);
    let (gw, _up) = echo_gateway(s).await;
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let trickle = async {
        // The client's pace is the behaviour under test; bounded to 5 s.
        for _ in 0..50 {
            if wr.write_all(b"\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let closed = async {
        let mut b = [0u8; 64];
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = closed => {}
        () = trickle => panic!("still open after 5 s of blank lines"),
    }
    // 300 ms + 1 s of idle slack, and a tick of the coarse timer.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

/// RFC 9112 section 6.1: a transfer coding in an HTTP/1.0 request is
/// faulty framing (an HTTP/1.0 hop in front would not have decoded it).
#[tokio::test]
async fn http10_request_with_transfer_encoding_is_refused() {
    refused_and_closed(&[(
        "POST /x HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /y HTTP/1.0\r\n\r\n",
        400,
        "request_smuggling",
    )])
    .await;
}

/// Sends each request on a connection of its own to a gateway with an echo
/// upstream, and checks that it is answered with this status and problem
/// code, that the connection then closes, and that none of them (nor what
/// was sent behind them) reached the upstream.
async fn refused_and_closed(cases: &[(&str, u16, &str)]) {
    let (gw, up) = echo_gateway(settings()).await;
    for (request, status, code) in cases {
        assert_eq!(
            answered_then_closed(&gw, request, *status).await,
            *code,
            "{request:?}"
        );
    }
    assert_eq!(up.stats.requests(), 0);
}

/// RFC 9112 section 6.1: a transfer coding other than chunked is not
/// implemented (501), and the connection closes, since its body cannot be
/// passed on as it was meant. Chunked applied twice is refused as faulty
/// framing. Neither reaches the upstream, nor does what was sent behind it.
#[tokio::test]
async fn transfer_codings_other_than_chunked_are_501() {
    refused_and_closed(&[
        (
            "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n",
            501,
            "transfer_coding_not_implemented",
        ),
        (
            "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: x-packed,chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
            "transfer_coding_not_implemented",
        ),
        (
            "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
            "request_smuggling",
        ),
    ])
    .await;
}

/// Chunked request bodies are read strictly: a bare LF inside a size line
/// (which a CRLF-only reader in front would frame differently) fails the
/// request, and the connection is not reused.
#[tokio::test]
async fn loosely_chunked_request_body_fails_and_closes() {
    let (gw, _up) = echo_gateway(settings()).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n0\n\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let res = raw.response().await;
    assert!(
        res.status >= 400,
        "a malformed chunked body is not proxied: {}",
        res.status
    );
    raw.closed().await;
}

/// RFC 9112 section 3.2: an HTTP/1.1 request needs exactly one Host.
#[tokio::test]
async fn http11_request_without_or_with_two_hosts_is_400() {
    refused_and_closed(&[
        ("GET /x HTTP/1.1\r\n\r\n", 400, "bad_request"),
        (
            "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "bad_request",
        ),
    ])
    .await;
}

/// RFC 9112 section 3.2.2: with an absolute-form target, the target's
/// authority is the request's host; a different Host field is ignored, so
/// routing and the forwarded host agree.
#[tokio::test]
async fn absolute_form_target_decides_the_host() {
    let (gw, _up) = echo_gateway(settings()).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET http://public.example/x HTTP/1.1\r\nHost: admin.internal\r\n\r\n")
        .await;
    let e = raw.response().await.echo();
    assert_eq!(
        e.header("x-forwarded-host").as_deref(),
        Some("public.example")
    );
}

/// A client that pipelines requests and then closes its sending side still
/// gets every answer.
#[tokio::test]
async fn half_closed_client_gets_its_pipelined_answers() {
    let (gw, _up) = echo_gateway(settings()).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    raw.stream.shutdown().await.expect("half-close");
    assert_eq!(raw.response().await.echo().path(), "/a");
    assert_eq!(raw.response().await.echo().path(), "/b");
}

/// RFC 9110 section 8.6: no Content-Length in a 204, even when the upstream
/// sent one; and the upstream's own reason phrase is passed on.
#[tokio::test]
async fn no_length_in_a_204_and_the_reason_phrase_is_kept() {
    let up = Scripted::start(b"HTTP/1.1 204 Nothing Here\r\nContent-Length: 0\r\n\r\n").await;
    let gw = up.gateway().await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&bytes, b"\r\n\r\n").is_none() {
        let n = within("the gateway's response", raw.stream.read(&mut chunk))
            .await
            .expect("read");
        assert!(n > 0, "closed before the head");
        bytes.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 204 nothing here\r\n"),
        "{text:?}"
    );
    assert!(!text.contains("content-length"), "{text:?}");
    // The connection carries the next request.
    raw.send("GET /y HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(raw.response().await.status, 204);
}

/// A request's trailer section reaches the upstream without fields a
/// trailer must not carry: the gateway's reserved identity fields, framing
/// and routing fields, forwarding fields. Other trailers pass.
#[tokio::test]
async fn request_trailers_are_cleaned_before_the_upstream() {
    // An upstream that keeps what it read of one chunked request.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let upstream = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        // Up to the empty line that ends the trailer section.
        let ended = |b: &[u8]| {
            find(b, b"\r\n0\r\n").is_some_and(|i| find(&b[i + 3..], b"\r\n\r\n").is_some())
        };
        while !ended(&bytes) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        let _ = tx.send(bytes);
    });
    let routes = json!([{"name": "all", "paths": ["/"]}]);
    let gw = TestGateway::start(&one_service(&format!("http://{addr}"), routes)).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\
         x-checksum: abc\r\nx-tollgate-org: forged\r\nhost: evil\r\ncontent-length: 99\r\nx-forwarded-for: 6.6.6.6\r\n\r\n",
    )
    .await;
    assert_eq!(raw.response().await.status, 200);
    let seen = within("the upstream's request", rx).await.expect("request");
    upstream.await.expect("upstream task");
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    let last = find(text.as_bytes(), b"\r\n0\r\n").expect("last chunk") + 5;
    let trailers = &text[last..];
    assert!(trailers.contains("x-checksum: abc\r\n"), "{text:?}");
    for banned in ["x-tollgate-org", "host:", "content-length", "6.6.6.6"] {
        assert!(!trailers.contains(banned), "{banned} in {trailers:?}");
    }
}
