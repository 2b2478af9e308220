//! The inline upstream client (`client.rs`, `pool.rs`) on the wire: a real
//! gateway in front of hand-written upstreams that write exact bytes, so each
//! framing case is the one the test spells out. Every upstream counts the
//! connections it accepts, which is how connection reuse is observed.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// A keep-alive answer with a two-byte body.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request as a hand-written upstream read it off the wire.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection (1, 2, ...) carried it.
    conn: usize,
    method: String,
    target: String,
    /// Names in lower case, in arrival order.
    headers: Vec<(String, String)>,
    /// The body, de-chunked when it came chunked.
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        let mut all = self.headers.iter().filter(|(k, _)| k == name);
        let first = all.next().map(|(_, v)| v.as_str());
        assert!(all.next().is_none(), "{name} sent more than once: {self:?}");
        first
    }
}

/// One connection accepted by a [`RawUpstream`].
struct UpConn {
    id: usize,
    stream: TcpStream,
    buf: Vec<u8>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl UpConn {
    /// Reads more bytes; false on EOF or error.
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads through the next `delim`; `None` when the connection ends first.
    async fn until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, delim) {
                return Some(self.buf.drain(..i + delim.len()).collect());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Reads a request head; `None` when the connection ends first.
    async fn head(&mut self) -> Option<Seen> {
        let raw = self.until(b"\r\n\r\n").await?;
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        req.parse(&raw).expect("a request head from the gateway");
        Some(Seen {
            conn: self.id,
            method: req.method.expect("method").to_owned(),
            target: req.path.expect("target").to_owned(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), value)
                })
                .collect(),
            body: Vec::new(),
        })
    }

    /// Reads the body the head announces: chunked, `Content-Length` or none.
    async fn body(&mut self, req: &mut Seen) -> Option<()> {
        let chunked = req
            .headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().ends_with("chunked"));
        if !chunked {
            let len = req
                .header("content-length")
                .map_or(0, |v| v.trim().parse().expect("content-length"));
            req.body = self.exact(len).await?;
            return Some(());
        }
        loop {
            let line = self.until(b"\r\n").await?;
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).expect("chunk size");
            if size == 0 {
                // Trailer fields up to the empty line.
                while self.until(b"\r\n").await?.len() > 2 {}
                return Some(());
            }
            let data = self.exact(size + 2).await?;
            assert_eq!(&data[size..], b"\r\n", "chunk data ends with CRLF");
            req.body.extend_from_slice(&data[..size]);
        }
    }

    /// Tells the test about a request.
    fn report(&self, req: &Seen) {
        let _ = self.seen.send(req.clone());
    }

    /// Reads a whole request and reports it.
    async fn request(&mut self) -> Option<Seen> {
        let mut req = self.head().await?;
        self.body(&mut req).await?;
        self.report(&req);
        Some(req)
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let _ = self.stream.write_all(bytes.as_ref()).await;
    }

    /// Writes `bytes` a few at a time, letting the gateway read in between,
    /// so its parser meets every boundary.
    async fn send_in_pieces(&mut self, bytes: &[u8], piece: usize) {
        for part in bytes.chunks(piece) {
            self.send(part).await;
            tokio::task::yield_now().await;
        }
    }

    /// Reads and discards until the gateway closes the connection.
    async fn drain(&mut self) {
        while self.fill().await {
            self.buf.clear();
        }
    }
}

/// An upstream on 127.0.0.1:0 that runs `serve` on every connection it
/// accepts, numbering them from 1.
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Connections whose `serve` returned (the gateway closed them, usually).
    ended: mpsc::UnboundedReceiver<usize>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start<F, Fut>(serve: F) -> RawUpstream
    where
        F: Fn(UpConn) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = count.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = stream.set_nodelay(true);
                let conn = UpConn {
                    id,
                    stream,
                    buf: Vec::new(),
                    seen: seen_tx.clone(),
                };
                let served = serve(conn);
                let ended = ended_tx.clone();
                tokio::spawn(async move {
                    served.await;
                    let _ = ended.send(id);
                });
            }
        });
        RawUpstream {
            addr,
            accepted,
            seen,
            ended,
            task,
        }
    }

    /// An upstream that reads each request and writes `reply(&request)`,
    /// keeping the connection open for the next.
    async fn answering(reply: fn(&Seen) -> &'static [u8]) -> RawUpstream {
        RawUpstream::start(move |mut c| async move {
            while let Some(req) = c.request().await {
                c.send(reply(&req)).await;
            }
        })
        .await
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The next request the upstream reported.
    async fn next_seen(&mut self) -> Seen {
        within("a request at the upstream", self.seen.recv())
            .await
            .expect("the upstream is running")
    }

    /// Asserts that the next requests came on these connections, in order,
    /// and that no other connection was opened.
    async fn expect_conns(&mut self, conns: &[usize]) {
        for (i, conn) in conns.iter().enumerate() {
            let s = self.next_seen().await;
            assert_eq!(s.conn, *conn, "request {i}: {} {}", s.method, s.target);
        }
        let opened = conns.iter().max().copied().unwrap_or(0);
        assert_eq!(self.connections(), opened, "connections opened");
    }

    /// The next connection whose handler ended.
    async fn next_ended(&mut self) -> usize {
        within("an upstream connection to end", self.ended.recv())
            .await
            .expect("the upstream is running")
    }
}

/// A gateway with one service whose only target is `up`, without retries,
/// behind a catch-all route that forwards the path unchanged.
async fn gateway(up: &RawUpstream) -> TestGateway {
    TestGateway::start(&json!({"services": [{
        "name": "svc",
        "targets": [{"target": up.addr.to_string()}],
        "retries": 0,
        "routes": [{"name": "all", "paths": ["/"], "strip_path": false}],
    }]}))
    .await
}

/// A GET on a fresh client: the status and body, or how the request or its
/// body failed.
async fn get_body(url: &str) -> Result<(StatusCode, Bytes), String> {
    let req = Request::get(url).body(empty()).expect("request");
    let res = within("response head", client().0.request(req))
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let body = within("response body", res.into_body().collect()).await;
    Ok((status, body.map_err(|e| e.to_string())?.to_bytes()))
}

/// Two GETs of `path` in a row, with `headers`, on one client through a
/// gateway in front of `up`, each answered 200 with `body`; then the upstream
/// connection each of them arrived on (`conns`, as in
/// [`RawUpstream::expect_conns`]).
async fn get_twice(
    up: &mut RawUpstream,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    conns: &[usize],
) {
    let gw = gateway(up).await;
    let c = client();
    for _ in 0..2 {
        let r = c.request("GET", &gw.url(path), headers, empty()).await;
        assert_reply(&r, 200, body);
    }
    up.expect_conns(conns).await;
}

/// Asserts a reply's status and body.
fn assert_reply(r: &Reply, status: u16, body: &[u8]) {
    let shown = String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned();
    assert_eq!(r.status, status, "body: {shown:?}");
    assert!(
        r.body == body,
        "expected {} body bytes, got {}: {shown:?}",
        body.len(),
        r.body.len()
    );
}

// ---------------------------------------------------------------- response framing

#[tokio::test]
async fn a_chunked_response_with_extensions_arrives_whole_and_its_connection_is_reused() {
    let big = pattern(20_000);
    let mut reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n7;name=\"a value\";flag\r\n, world\r\n"
        .to_vec();
    // Upper-case hex, an extension, then a chunk large enough to be split off
    // the read buffer rather than copied.
    reply.extend_from_slice(format!("{:X};x=y\r\n", big.len()).as_bytes());
    reply.extend_from_slice(&big);
    reply.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = Bytes::from(reply);
    let mut up = RawUpstream::start(move |mut c| {
        let reply = reply.clone();
        async move {
            while c.request().await.is_some() {
                // The head and the small chunks a few bytes at a time.
                c.send_in_pieces(&reply[..110], 3).await;
                c.send(&reply[110..]).await;
            }
        }
    })
    .await;
    let expected = [&b"hello, world"[..], &big[..]].concat();
    // Both requests on one upstream connection.
    get_twice(&mut up, "/chunked", &[], &expected, &[1, 1]).await;
}

#[tokio::test]
async fn trailers_after_a_chunked_body_do_not_break_the_response() {
    let mut up = RawUpstream::answering(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum, x-more\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\nx-more: a, b\r\n\r\n"
    })
    .await;
    // The client accepts trailers; the gateway drops `Trailer` as a
    // hop-by-hop field, so its hyper server sends none: only the body can be
    // checked here. Reuse shows the trailer section was read to its end.
    get_twice(
        &mut up,
        "/t",
        &[("te", "trailers")],
        b"hello world",
        &[1, 1],
    )
    .await;
}

#[tokio::test]
async fn a_body_delimited_by_the_upstream_closing_is_relayed_whole_and_not_reused() {
    let body = pattern(100_000);
    let reply = Bytes::from(
        [
            &b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"[..],
            &body[..],
        ]
        .concat(),
    );
    let mut up = RawUpstream::start(move |mut c| {
        let reply = reply.clone();
        async move {
            // One answer per connection; closing the connection ends its body.
            if c.request().await.is_some() {
                c.send(&reply).await;
            }
        }
    })
    .await;
    // A connection whose body ended with its close is not reused.
    get_twice(&mut up, "/eof", &[], &body, &[1, 2]).await;
}

#[tokio::test]
async fn connection_close_from_the_upstream_is_honoured() {
    // Says `close` on its first connection but keeps it open and would
    // answer again: only the gateway can keep it from being reused.
    let mut up = RawUpstream::answering(|req| match req.conn {
        1 => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfirst",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let r = c.get(&gw.url("/a")).await;
    assert_reply(&r, 200, b"first");
    assert_eq!(r.header("connection"), None, "hop-by-hop, not relayed");
    assert_reply(&c.get(&gw.url("/b")).await, 200, b"second");
    // The request after `Connection: close` went on a new connection.
    up.expect_conns(&[1, 2]).await;
    assert_eq!(up.next_ended().await, 1, "the gateway closed the first one");
}

#[tokio::test]
async fn a_head_response_has_no_body_and_keeps_the_connection() {
    let mut up = RawUpstream::answering(|req| match req.method.as_str() {
        // The length of the body a GET would have; no body follows.
        "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n",
        _ => OK,
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let r = c.request("HEAD", &gw.url("/doc"), &[], empty()).await;
    assert_reply(&r, 200, b"");
    assert_eq!(r.header("content-length"), Some("1234"));
    // Had the gateway waited for 1234 body bytes, this would time out.
    assert_reply(&c.get(&gw.url("/doc")).await, 200, b"ok");
    // HEAD then GET on one connection.
    up.expect_conns(&[1, 1]).await;
}

/// The upstream's fields reach the client as they arrived, in order,
/// repeated ones included, over HTTP/1.1 and HTTP/2; a field the gateway
/// sets itself replaces the upstream's of that name; and every line the
/// client gets ends in CRLF, even where the upstream ended one in LF alone.
#[tokio::test]
async fn the_upstreams_fields_are_passed_on_and_the_gateways_own_replace_them() {
    let up = RawUpstream::answering(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n\
          X-Mixed-Case:   spaced value \r\nSet-Cookie: b=2\nX-Request-Id: upstream-id\r\n\
          Date: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"
    })
    .await;
    let gw = gateway(&up).await;
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET /f HTTP/1.1\r\nHost: t\r\nX-Request-Id: client-id\r\n\r\n")
        .await;
    let r = raw.response().await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    let head = String::from_utf8(r.head.clone()).expect("ascii head");
    assert!(
        head.split("\r\n").all(|line| !line.contains('\n')),
        "a bare LF in {head:?}"
    );
    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "content-type",
            "set-cookie",
            "x-mixed-case",
            "set-cookie",
            "date",
            "x-request-id",
            "content-length"
        ],
        "{head}"
    );
    assert_eq!(r.header("x-mixed-case"), Some("spaced value"));
    assert_eq!(r.header("x-request-id"), Some("client-id"));
    assert_eq!(r.header("date"), Some("Tue, 01 Dec 2026 00:00:00 GMT"));

    let mut h2 = h2c(gw.addr).await;
    let req = Request::get(format!("http://{}/f", gw.addr))
        .header("x-request-id", "h2-id")
        .body(empty())
        .expect("request");
    let res = within("h2c request", h2.send_request(req))
        .await
        .expect("h2c response");
    let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    let ids: Vec<_> = res.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["h2-id"]);
    assert_eq!(res.headers()["x-mixed-case"], "spaced value");
    assert_eq!(res.headers()["content-type"], "text/plain");
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body_and_keep_the_connection() {
    let mut up = RawUpstream::answering(|req| match req.target.as_str() {
        // Nothing says where a body would end: a read to the close would hang.
        "/204" => b"HTTP/1.1 204 No Content\r\nX-Done: yes\r\n\r\n",
        // The length of the representation, not of a body.
        "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\n",
        _ => OK,
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let r = c.get(&gw.url("/204")).await;
    assert_reply(&r, 204, b"");
    assert_eq!(r.header("x-done"), Some("yes"));
    let r = c.get(&gw.url("/304")).await;
    assert_reply(&r, 304, b"");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("content-length"), Some("5"));
    assert_reply(&c.get(&gw.url("/after")).await, 200, b"ok");
    up.expect_conns(&[1, 1, 1]).await;
}

#[tokio::test]
async fn interim_responses_before_the_final_one_are_skipped() {
    let mut up = RawUpstream::start(|mut c| async move {
        while let Some(mut req) = c.head().await {
            // 100 Continue once the head is in, before the body is read.
            c.send(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            if c.body(&mut req).await.is_none() {
                return;
            }
            c.report(&req);
            c.send_in_pieces(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                7,
            )
            .await;
            let body = if req.body.is_empty() {
                b"hello".to_vec()
            } else {
                req.body
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            c.send([head.as_bytes(), &body[..]].concat()).await;
        }
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    let r = c.get(&gw.url("/get")).await;
    assert_reply(&r, 200, b"hello");
    assert_eq!(r.header("x-final"), Some("yes"));
    // With a body, the 100 may arrive while the body is still going out.
    let r = c
        .request("POST", &gw.url("/post"), &[], full("ping!"))
        .await;
    assert_reply(&r, 200, b"ping!");
    assert_eq!(r.header("x-final"), Some("yes"));
    // Interim answers do not end the exchange: the connection is kept.
    up.expect_conns(&[1, 1]).await;
}

// ---------------------------------------------------------------- malformed answers

/// A keep-alive answer whose head carries a field value of `filler` bytes.
/// Leaked: it lives as long as the test.
fn long_head(filler: usize) -> &'static [u8] {
    let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Filler: ".to_vec();
    r.resize(r.len() + filler, b'a');
    r.extend_from_slice(b"\r\n\r\nok");
    r.leak()
}

#[tokio::test]
async fn malformed_response_heads_are_502_upstream_error() {
    let mut up = RawUpstream::answering(|req| match req.target.as_str() {
        "/large" => long_head(60 * 1024),
        "/conflict" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "/garbage" => b"this is not a status line\r\n\r\n",
        "/huge" => long_head(70 * 1024),
        _ => OK,
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    // Just under the 64 KiB limit: accepted, and the connection is kept.
    let r = c.get(&gw.url("/large")).await;
    assert_reply(&r, 200, b"ok");
    assert_eq!(r.header("x-filler").map(str::len), Some(60 * 1024));
    for path in ["/conflict", "/garbage", "/huge"] {
        let r = c.get(&gw.url(path)).await;
        assert_eq!(r.problem(502), "upstream_error", "{path}");
    }
    assert_reply(&c.get(&gw.url("/after")).await, 200, b"ok");
    // /large, then /conflict on the same connection; a connection that gave
    // a bad answer is not reused.
    up.expect_conns(&[1, 1, 2, 3, 4]).await;
}

#[tokio::test]
async fn an_invalid_chunk_size_cuts_the_response_after_its_head() {
    let go_on = Arc::new(Notify::new());
    let resume = go_on.clone();
    let mut up = RawUpstream::start(move |mut c| {
        let resume = resume.clone();
        async move {
            while let Some(req) = c.request().await {
                if req.target != "/bad-chunk" {
                    c.send(OK).await;
                    continue;
                }
                c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    .await;
                // The rest only once the client holds the head and "hello".
                resume.notified().await;
                c.send(b"zz\r\nnot a chunk\r\n0\r\n\r\n").await;
            }
        }
    })
    .await;
    let gw = gateway(&up).await;
    let req = Request::get(gw.url("/bad-chunk"))
        .body(empty())
        .expect("request");
    let res = within("response head", client().0.request(req))
        .await
        .expect("the head arrives before the bad chunk");
    assert_eq!(res.status(), 200, "the head was already relayed");
    let mut body = res.into_body();
    let (mut got, mut failed) = (Vec::new(), None);
    for _ in 0..20 {
        if got.len() == 5 {
            // The client holds "hello": now the bad chunk size.
            go_on.notify_one();
        }
        match within("a body frame", body.frame()).await {
            Some(Ok(f)) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
            Some(Err(e)) => {
                failed = Some(e.to_string());
                break;
            }
            None => break,
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert!(failed.is_some(), "the body ended cleanly: {got:?}");
    assert_eq!(got, "hello", "nothing after the bad chunk size");
    // The gateway goes on, on a new connection.
    assert_reply(&get(&gw.url("/after")).await, 200, b"ok");
    up.expect_conns(&[1, 2]).await;
}

#[tokio::test]
async fn an_upstream_closing_inside_a_body_does_not_deliver_a_complete_body() {
    let mut up = RawUpstream::start(|mut c| async move {
        while let Some(req) = c.request().await {
            let cut: &[u8] = match req.target.as_str() {
                // Declares 100 bytes, sends 10 and closes.
                "/short-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                // One chunk, then the close instead of the last chunk. Relayed
                // chunked, so only the gateway can tell the client it is cut.
                "/short-chunked" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
                }
                _ => {
                    c.send(OK).await;
                    continue;
                }
            };
            c.send(cut).await;
            return;
        }
    })
    .await;
    let gw = gateway(&up).await;
    for path in ["/short-length", "/short-chunked"] {
        // Cut before or after the head reached it, the client must not see
        // the body end cleanly.
        if let Ok((status, b)) = get_body(&gw.url(path)).await {
            panic!("{path}: {status} with {} bytes, ended cleanly", b.len());
        }
    }
    assert_reply(&get(&gw.url("/next")).await, 200, b"ok");
    up.expect_conns(&[1, 2, 3]).await;
}

// ---------------------------------------------------------------- request framing

#[tokio::test]
async fn the_upstream_sees_each_request_framed_by_its_body() {
    let mut up = RawUpstream::answering(|_| OK).await;
    let gw = gateway(&up).await;
    let c = client();
    let chunk = pattern(3000);
    // Method, path, body; then the framing fields and the body upstream.
    let cases = [
        (
            "POST",
            "/five",
            full("hello"),
            Some("5"),
            None,
            b"hello".to_vec(),
        ),
        ("POST", "/empty", empty(), Some("0"), None, Vec::new()),
        ("GET", "/get", empty(), None, None, Vec::new()),
        // A streamed body of unknown length goes chunked.
        (
            "POST",
            "/chunked",
            streamed(chunk.clone(), 4),
            None,
            Some("chunked"),
            chunk.repeat(4),
        ),
    ];
    for (method, path, body, length, coding, sent) in cases {
        let r = c.request(method, &gw.url(path), &[], body).await;
        assert_reply(&r, 200, b"ok");
        let s = up.next_seen().await;
        assert_eq!((s.method.as_str(), s.target.as_str()), (method, path));
        assert_eq!(s.header("content-length"), length, "{path}");
        assert_eq!(s.header("transfer-encoding"), coding, "{path}");
        let got = s.body.len();
        assert!(
            s.body == sent,
            "{path}: {got} bytes arrived, {} sent",
            sent.len()
        );
    }
}

/// An upstream that answers `/upload` with a 413 as soon as its head is in,
/// without reading the body, and [`OK`] to anything else. With `close` it
/// then closes the connection, which its kernel resets (the body is
/// unread); otherwise it keeps it and reads nothing more until `resume`.
async fn early_answerer(close: bool, resume: Arc<Notify>) -> RawUpstream {
    RawUpstream::start(move |mut c| {
        let resume = resume.clone();
        async move {
            while let Some(mut req) = c.head().await {
                c.report(&req);
                if req.target != "/upload" {
                    c.body(&mut req).await;
                    c.send(OK).await;
                    continue;
                }
                let reply: &[u8] = if close {
                    b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 7\r\n\r\ntoo big"
                } else {
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 7\r\n\r\ntoo big"
                };
                c.send(reply).await;
                if !close {
                    resume.notified().await;
                    c.drain().await;
                }
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_early_answer_during_an_upload_reaches_the_client_and_the_connection_is_not_reused() {
    let answered = Arc::new(Notify::new());
    let mut up = early_answerer(false, answered.clone()).await;
    let gw = gateway(&up).await;
    // 16 MiB, streamed: far more than the socket buffers hold, so the
    // gateway's writes stall on an upstream that stopped reading.
    let body = streamed(pattern(64 * 1024), 256);
    let r = client()
        .request("POST", &gw.url("/upload"), &[], body)
        .await;
    assert_reply(&r, 413, b"too big");
    answered.notify_one();
    let closed = up.next_ended().await;
    assert_eq!(closed, 1, "the gateway closed the connection");
    // Not reused after an unfinished upload, though nothing said `close`.
    assert_reply(&get(&gw.url("/next")).await, 200, b"ok");
    up.expect_conns(&[1, 2]).await;
}

#[tokio::test]
async fn an_early_answer_then_close_during_an_upload_reaches_the_client() {
    let mut up = early_answerer(true, Arc::new(Notify::new())).await;
    let gw = gateway(&up).await;
    let body = streamed(pattern(64 * 1024), 256);
    let r = client()
        .request("POST", &gw.url("/upload"), &[], body)
        .await;
    assert_reply(&r, 413, b"too big");
    assert_reply(&get(&gw.url("/next")).await, 200, b"ok");
    up.expect_conns(&[1, 2]).await;
}

#[tokio::test]
async fn a_request_the_upstream_dropped_unanswered_is_resent_only_when_it_is_safe() {
    // Answers the first request on each connection, then reads the next one
    // and closes without a word: a keep-alive timeout racing the request.
    let mut up = RawUpstream::start(|mut c| async move {
        if c.request().await.is_some() {
            c.send(OK).await;
            let _ = c.request().await;
        }
    })
    .await;
    let gw = gateway(&up).await;
    let c = client();
    assert_reply(&c.get(&gw.url("/a")).await, 200, b"ok");
    // A bodiless GET that got nothing back goes out again on a new
    // connection, though the service allows no retries.
    assert_reply(&c.get(&gw.url("/b")).await, 200, b"ok");
    for (conn, target) in [(1, "/a"), (1, "/b"), (2, "/b")] {
        let s = up.next_seen().await;
        assert_eq!((s.conn, s.target.as_str()), (conn, target));
    }
    // A POST may have been acted on: it is answered 502, not sent again.
    let r = c.request("POST", &gw.url("/c"), &[], full("x")).await;
    assert_eq!(r.problem(502), "upstream_error");
    let s = up.next_seen().await;
    assert_eq!(
        (s.conn, s.method.as_str(), &s.body[..]),
        (2, "POST", &b"x"[..])
    );
    assert_eq!(up.connections(), 2, "no connection opened to resend it");
    assert!(
        up.seen.try_recv().is_err(),
        "the POST reached the upstream once"
    );
}
