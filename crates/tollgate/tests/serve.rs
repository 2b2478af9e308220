//! `tollgate serve` as a real process: the first-start admin token, a given
//! admin token, `--config` at start, and graceful shutdown on SIGTERM. Ports
//! are 127.0.0.1:0, read back from the "listening" lines on stderr.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::{Method, StatusCode};
use tollgate_store::testing::TempDirGuard;

const CREATED: &str = "created an admin token";

fn lines_with<'a>(lines: &'a [String], needle: &str) -> Vec<&'a String> {
    lines.iter().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn first_start_prints_a_working_admin_token_exactly_once() {
    let dir = TempDirGuard::new().expect("temp dir");
    let mut first = Serve::start(dir.path(), &[], &[]).await;
    let token = first
        .line("the new admin token", |l| {
            l.trim_start().starts_with("tgadm_")
        })
        .await;
    let token = token.trim().to_owned();
    assert_eq!(token.len(), "tgadm_".len() + 64, "{token}");

    // The curl line, as printed, is a working request.
    let curl = first
        .line("the curl line", |l| l.trim_start().starts_with("curl "))
        .await;
    let header = curl
        .split('\'')
        .nth(1)
        .expect("a quoted header in the curl line");
    assert_eq!(header, format!("Authorization: Bearer {token}"));
    let url = curl
        .rsplit(' ')
        .next()
        .expect("a URL at the end of the curl line");
    assert_eq!(url, format!("http://{}/services", first.admin));
    let bearer = header
        .strip_prefix("Authorization: Bearer ")
        .expect("a bearer header");
    let r = call(Method::GET, url, Some(bearer), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["items"], serde_json::json!([]));
    let r = call(Method::GET, url, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let lines = first.stop().await;
    assert_eq!(lines_with(&lines, CREATED).len(), 1, "{lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.trim() == token).count(),
        1,
        "the token line appears once"
    );
    assert_eq!(
        lines_with(&lines, &token).len(),
        2,
        "the token appears only in its own line and the curl line"
    );

    // A second start on the same data directory keeps the token and prints none.
    let second = Serve::start(dir.path(), &[], &[]).await;
    let r = call(
        Method::GET,
        &format!("http://{}/services", second.admin),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the first token still works: {}",
        r.text
    );
    let lines = second.stop().await;
    assert!(lines_with(&lines, "tgadm_").is_empty(), "{lines:#?}");
    assert!(lines_with(&lines, CREATED).is_empty(), "{lines:#?}");
}

#[tokio::test]
async fn a_given_admin_token_is_accepted_and_nothing_is_printed() {
    let dir = TempDirGuard::new().expect("temp dir");
    let node = Serve::start(dir.path(), &[], &[("TOLLGATE_ADMIN_TOKEN", TOKEN)]).await;
    let url = format!("http://{}/services", node.admin);
    let r = call(Method::GET, &url, Some(TOKEN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(Method::GET, &url, Some("not-the-token-0123456789"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.problem_code(), "unauthorized");
    let lines = node.stop().await;
    assert!(lines_with(&lines, "tgadm_").is_empty(), "{lines:#?}");
    assert!(lines_with(&lines, CREATED).is_empty(), "{lines:#?}");
    assert!(
        lines_with(&lines, TOKEN).is_empty(),
        "the given token is never echoed"
    );
}

#[tokio::test]
async fn serve_with_a_config_file_routes_as_soon_as_it_listens() {
    let dir = TempDirGuard::new().expect("temp dir");
    let upstream = Upstream::start("orders-upstream").await;
    let file = dir.path().join("quickstart.yaml");
    std::fs::write(&file, one_route_yaml("orders", &upstream.url(), "/orders"))
        .expect("write config");
    let node = Serve::start(
        dir.path(),
        &["--config", file.to_str().expect("UTF-8 path")],
        &[],
    )
    .await;

    // No waiting: the file is in the snapshot before the listener accepts.
    let r = get(&format!("http://{}/orders/42", node.proxy)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.upstream(), Some("orders-upstream"));
    let r = get(&format!("http://{}/payments", node.proxy)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.problem_code(), "no_route");
    let r = get(&format!("http://{}/readyz", node.admin)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let lines = node.stop().await;
    // stderr is a pipe here: the logs must be plain text, not terminal colours.
    assert!(
        lines.iter().any(|l| l.contains("configuration applied")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains('\u{1b}')),
        "ANSI escapes in piped logs: {lines:?}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    let dir = TempDirGuard::new().expect("temp dir");
    let upstream = Upstream::start("slow-upstream").await;
    let file = dir.path().join("slow.yaml");
    std::fs::write(&file, one_route_yaml("slow", &upstream.url(), "/slow")).expect("write config");
    let grace = Duration::from_secs(5);
    let mut node = Serve::start(
        dir.path(),
        &["--config", file.to_str().expect("UTF-8 path")],
        &[("TOLLGATE_SHUTDOWN_GRACE_SECS", "5")],
    )
    .await;
    let proxy = node.proxy;

    let in_flight = tokio::spawn(async move { get(&format!("http://{proxy}/slow")).await });
    upstream.wait_received(1).await;
    let signalled = Instant::now();
    node.terminate();

    // The listener closes at once, while the request is still being served.
    // A connection that reached a worker's backlog just before its listener
    // closed is reset rather than refused: both are a refusal.
    eventually(DEADLINE, "the proxy to refuse new connections", || async {
        tokio::net::TcpStream::connect(proxy).await.err().map(|e| {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ),
                "{e}"
            );
        })
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the listener should close before the in-flight request ends ({:?} after SIGTERM)",
        signalled.elapsed()
    );

    let r = within("the in-flight request", in_flight)
        .await
        .expect("request task");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.text, "slow-upstream /slow");

    let (status, lines) = node.wait_exit(grace).await;
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    assert!(
        signalled.elapsed() < grace,
        "exited {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("draining in-flight requests")),
        "{lines:#?}"
    );
}
