//! Every request is recorded once, with what analytics needs: the route,
//! the caller, status, error code, latencies and bytes both ways; requests
//! that match no route too. The request metrics count the same requests,
//! and a full event queue drops (and counts) events without holding a
//! request up.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use tollgate_analytics::{Event, EventQueue, Recorder};
use tollgate_core::metrics::MetricsSource;
use tollgate_identity::apikey::Pepper;
use tollgate_identity::authn::Authenticator;
use tollgate_policies::PolicyEnv;
use tollgate_proxy::Gateway;

async fn recorded_gateway(capacity: usize) -> (TestGateway, Upstream, EventQueue) {
    let up = Upstream::echo("up").await;
    let (recorder, queue) = Recorder::channel(capacity);
    let authn = Authenticator::new(Pepper::random().expect("rng"));
    let gw = Gateway::with_recorder(settings(), PolicyEnv::new(authn), recorder);
    let cfg = one_service(
        &up.url(),
        json!([
            {"name": "open", "paths": ["/open"]},
            {"name": "keyed", "paths": ["/keyed"],
             "policies": [{"name": "auth", "config": {}}]}
        ]),
    );
    (TestGateway::start_gateway(gw, &cfg).await, up, queue)
}

fn drain(q: &EventQueue) -> Vec<Event> {
    std::iter::from_fn(|| q.try_next()).collect()
}

#[tokio::test]
async fn each_request_is_one_event_with_route_caller_status_latency_and_bytes() {
    let (gw, _up, queue) = recorded_gateway(64).await;
    let Caller {
        secret,
        org,
        app,
        key,
    } = add_key(&gw, &[]);

    let before = chrono::Utc::now().timestamp_millis();
    let r = client()
        .request("POST", &gw.url("/open/x"), &[], full(vec![7u8; 1000]))
        .await;
    assert_eq!(r.status, 200);
    let echoed = r.body.len() as u64;
    let r = client()
        .request(
            "GET",
            &gw.url("/keyed/y"),
            &[("x-api-key", secret.as_str())],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200);
    let keyed_len = r.body.len() as u64;
    assert_eq!(
        get(&gw.url("/keyed/y")).await.problem(401),
        "credential_missing"
    );
    assert_eq!(get(&gw.url("/nowhere")).await.problem(404), "no_route");

    let events = drain(&queue);
    assert_eq!(events.len(), 4, "{events:#?}");
    let open = &events[0];
    assert_eq!(open.route.as_deref(), Some("open"));
    assert_eq!(open.service.as_deref(), Some("svc"));
    assert_eq!((open.method.as_str(), open.status), ("POST", 200));
    assert_eq!(open.bytes_in, 1000);
    assert_eq!(open.bytes_out, echoed);
    assert!(open.upstream_us.is_some_and(|u| u <= open.total_us));
    assert!(open.at_ms >= before && open.at_ms <= chrono::Utc::now().timestamp_millis());
    assert!(open.who.org().is_none());
    assert_eq!(open.error, None);
    assert_eq!(open.client_ip.to_string(), "127.0.0.1");
    assert!(!open.request_id.is_empty());

    let keyed = &events[1];
    assert_eq!(keyed.who.org(), Some(org.as_str()));
    assert_eq!(keyed.who.app(), Some(app.as_str()));
    assert_eq!(keyed.who.key_id(), Some(key.as_str()));
    assert_eq!(keyed.bytes_out, keyed_len);

    let refused = &events[2];
    assert_eq!(refused.route.as_deref(), Some("keyed"));
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.error.map(|e| e.as_str()),
        Some("credential_missing")
    );
    assert_eq!(refused.upstream_us, None);
    assert!(refused.bytes_out > 0, "the problem body is counted");

    let unrouted = &events[3];
    assert_eq!(unrouted.route, None);
    assert_eq!(
        (unrouted.status, unrouted.error.map(|e| e.as_str())),
        (404, Some("no_route"))
    );

    // The metrics counted the same requests.
    let mut text = String::new();
    gw.gw.render(&mut text);
    for line in [
        "tollgate_http_requests_total{route=\"open\",status_class=\"2xx\"} 1",
        "tollgate_http_requests_total{route=\"keyed\",status_class=\"2xx\"} 1",
        "tollgate_http_requests_total{route=\"keyed\",status_class=\"4xx\"} 1",
        "tollgate_http_requests_total{route=\"\",status_class=\"4xx\"} 1",
        "tollgate_http_request_duration_seconds_count{route=\"open\",status_class=\"2xx\"} 1",
        "tollgate_upstream_duration_seconds_count{route=\"open\"} 1",
        "tollgate_analytics_events_total 4",
        "tollgate_analytics_events_dropped_total 0",
        "tollgate_config_revision 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.contains("tollgate_upstream_target_healthy{service=\"svc\",target=\"127.0.0.1:"));
}

#[tokio::test]
async fn a_streamed_response_is_recorded_when_it_ends_with_every_byte() {
    let (gw, _up, queue) = recorded_gateway(64).await;
    let r = client()
        .request(
            "POST",
            &gw.url("/open/up"),
            &[],
            streamed(pattern(64 * 1024), 16),
        )
        .await;
    assert_eq!(r.status, 200);
    let events = drain(&queue);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].bytes_in, 16 * 64 * 1024);
    assert_eq!(events[0].bytes_out, r.body.len() as u64);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_events_and_never_holds_a_request() {
    // Nobody drains this queue of 2.
    let (gw, _up, queue) = recorded_gateway(2).await;
    for _ in 0..10 {
        let r = within(
            "request with a full analytics queue",
            get(&gw.url("/open/")),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let recorder: &Arc<Recorder> = gw.gw.recorder();
    assert_eq!(recorder.enqueued(), 2);
    assert_eq!(recorder.dropped(), 8);
    assert_eq!(drain(&queue).len(), 2);
    // Metrics are exact whatever the queue did.
    let mut text = String::new();
    gw.gw.render(&mut text);
    assert!(
        text.lines()
            .any(|l| l == "tollgate_http_requests_total{route=\"open\",status_class=\"2xx\"} 10"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "tollgate_analytics_events_dropped_total 8"),
        "{text}"
    );
}
