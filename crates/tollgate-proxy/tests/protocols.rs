//! Protocols: h2c, TLS with ALPN (h2 and http/1.1), WebSocket tunnels and
//! streaming of large bodies in both directions.

mod common;

use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tollgate_proxy::settings::TlsFiles;

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_to_http11() {
    let (gw, up) = echo_gateway(settings()).await;
    let mut h2 = h2c(gw.addr).await;
    let req = Request::get(format!("http://{}/api/x?q=1", gw.addr))
        .header("x-client", "h2")
        .body(empty())
        .expect("request");
    let r = Reply::read(
        within("h2c request", h2.send_request(req))
            .await
            .expect("h2c response"),
    )
    .await;
    assert_eq!(r.version, Version::HTTP_2);
    let e = r.echo();
    assert_eq!(e.version(), "HTTP/1.1");
    assert_eq!((e.path(), e.query()), ("/api/x", Some("q=1")));
    assert_eq!(e.header("x-client").as_deref(), Some("h2"));
    assert_eq!(e.header("host"), Some(up.target()));
    assert_eq!(e.header("x-forwarded-proto").as_deref(), Some("http"));
    // Several streams on the one connection, one with a body.
    let body = pattern(100_000);
    let req = Request::post(format!("http://{}/upload", gw.addr))
        .body(full(body.clone()))
        .expect("request");
    let r = Reply::read(
        within("h2c upload", h2.send_request(req))
            .await
            .expect("h2c response"),
    )
    .await;
    assert_eq!(
        (r.echo().body_len(), r.echo().body_sum()),
        (100_000, checksum(&body))
    );
    assert_eq!(up.stats.requests(), 2);
}

/// An HTTP/2 connection is closed (GOAWAY) once its streams have all ended
/// and it stays idle as long as an idle HTTP/1 keep-alive connection may,
/// but not while a response body is still open, however long that takes.
#[tokio::test]
async fn idle_http2_connection_goes_away_but_not_while_a_stream_is_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that sends the first chunk of its body at once and the
    // rest when the test lets it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let upstream = listener.local_addr().expect("addr");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await;
        let _ = released.await;
        let _ = s.write_all(b"4\r\nlast\r\n0\r\n\r\n").await;
        let _ = s.read(&mut buf).await;
    });
    let mut s = settings();
    s.header_read_timeout = std::time::Duration::from_millis(200);
    let idle_after = s.header_read_timeout + std::time::Duration::from_secs(1);
    let cfg = one_service(
        &format!("http://{upstream}"),
        serde_json::json!([{"name": "all", "paths": ["/"]}]),
    );
    let gw = TestGateway::start_with(s, &cfg).await;
    let (mut h2, mut conn) = h2c_connection(gw.addr).await;
    let req = Request::get(format!("http://{}/slow", gw.addr))
        .body(empty())
        .expect("request");
    let res = within("h2c request", h2.send_request(req))
        .await
        .expect("h2c response");
    let mut body = res.into_body();
    let first = within("first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"first"[..]));
    // Past the idle deadline with the response still open: nothing to
    // await but the time itself.
    tokio::time::sleep(idle_after + std::time::Duration::from_millis(600)).await;
    assert!(!conn.is_finished(), "closed while a stream was open");
    release.send(()).expect("upstream waiting");
    let rest = within("rest of the body", body.collect())
        .await
        .expect("whole body")
        .to_bytes();
    assert_eq!(&rest[..], b"last");
    // The stream has ended: the connection goes away on its own.
    let ended = std::time::Instant::now();
    within("the server's GOAWAY and close", &mut conn)
        .await
        .expect("connection task")
        .expect("a clean close");
    assert!(
        ended.elapsed() + std::time::Duration::from_millis(300) >= idle_after,
        "closed after {:?}, before the idle deadline",
        ended.elapsed()
    );
}

struct Tls {
    _dir: TempDir,
    files: TlsFiles,
    cert: CertificateDer<'static>,
}

fn self_signed() -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let dir = TempDir::new("tls");
    let files = TlsFiles {
        cert: dir.0.join("cert.pem"),
        key: dir.0.join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).expect("write key");
    Tls {
        _dir: dir,
        files,
        cert: ck.cert.der().clone(),
    }
}

async fn tls_connect(
    gw: &TestGateway,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("root");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = within("connect", TcpStream::connect(gw.addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = within(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(alpn),
        "negotiated ALPN"
    );
    tls
}

async fn tls_gateway(tls: &Tls) -> (TestGateway, Upstream) {
    let mut s = settings();
    s.tls = Some(tls.files.clone());
    echo_gateway(s).await
}

#[tokio::test]
async fn tls_with_alpn_h2_is_proxied() {
    let tls = self_signed();
    let (gw, _up) = tls_gateway(&tls).await;
    let stream = tls_connect(&gw, &tls.cert, b"h2").await;
    let (mut send, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://localhost/secure/x")
        .body(empty())
        .expect("request");
    let r = Reply::read(
        within("h2 request", send.send_request(req))
            .await
            .expect("response"),
    )
    .await;
    assert_eq!(r.version, Version::HTTP_2);
    let e = r.echo();
    assert_eq!((e.path(), e.version()), ("/secure/x", "HTTP/1.1"));
    assert_eq!(e.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(e.header("x-forwarded-host").as_deref(), Some("localhost"));
    assert_eq!(
        e.header("forwarded").as_deref(),
        Some("for=127.0.0.1;proto=https;host=\"localhost\"")
    );
}

#[tokio::test]
async fn tls_with_http11_is_proxied() {
    let tls = self_signed();
    let (gw, _up) = tls_gateway(&tls).await;
    let stream = tls_connect(&gw, &tls.cert, b"http/1.1").await;
    let (mut send, conn) = within(
        "h1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .expect("h1 handshake");
    tokio::spawn(conn);
    for i in 0..2 {
        let req = Request::get(format!("/tls/{i}"))
            .header("host", "localhost")
            .body(empty())
            .expect("request");
        let r = Reply::read(
            within("h1 request", send.send_request(req))
                .await
                .expect("response"),
        )
        .await;
        assert_eq!(r.version, Version::HTTP_11);
        let e = r.echo();
        assert_eq!(e.path(), format!("/tls/{i}"));
        assert_eq!(e.header("x-forwarded-proto").as_deref(), Some("https"));
    }
    // Plain HTTP on the TLS port is not served.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    raw.closed().await;
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_both_ways() {
    let (gw, up) = echo_gateway(settings()).await;
    let (mut ws, res) = within(
        "websocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", gw.addr)),
    )
    .await
    .expect("handshake");
    assert_eq!(res.status(), 101);
    assert_eq!(
        res.headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("up")
    );
    // Upstream to client first, then client to upstream and back.
    let greeting = within("greeting", ws.next())
        .await
        .expect("open")
        .expect("message");
    assert_eq!(greeting, Message::text("hello from up"));
    ws.send(Message::text("ping")).await.expect("send");
    assert_eq!(
        within("echo", ws.next())
            .await
            .expect("open")
            .expect("message"),
        Message::text("ping")
    );
    let blob = pattern(200_000);
    ws.send(Message::binary(blob.clone())).await.expect("send");
    assert_eq!(
        within("echo", ws.next())
            .await
            .expect("open")
            .expect("message"),
        Message::binary(blob)
    );
    ws.close(None).await.expect("close");
    assert_eq!(up.stats.hits("/ws/chat"), 1);
    // The gateway goes on serving ordinary requests.
    assert_eq!(get(&gw.url("/after")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_upload_is_streamed_to_the_upstream() {
    let (gw, _up) = echo_gateway(settings()).await;
    upload(&gw, 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_is_streamed_to_the_client() {
    let (gw, _up) = echo_gateway(settings()).await;
    let len = 64 * MIB;
    let res = within(
        "download",
        client().0.request(
            Request::get(gw.url(&format!("/download/{len}")))
                .body(empty())
                .expect("request"),
        ),
    )
    .await
    .expect("response");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let (mut got, mut sum) = (0usize, 0u64);
    let expected_sum = {
        let chunk = pattern(64 * 1024);
        checksum(&chunk).wrapping_mul((len / chunk.len()) as u64)
    };
    while let Some(frame) = within("download frame", body.frame()).await {
        if let Some(d) = frame.expect("frame").data_ref() {
            got += d.len();
            sum = d.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
        }
    }
    assert_eq!((got, sum), (len, expected_sum));
}
