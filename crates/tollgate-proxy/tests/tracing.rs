//! OTLP tracing through the proxy: an incoming `traceparent` is continued,
//! the SERVER span has the phases and the upstream call as children, the
//! upstream continues the trace under the CLIENT span, and a gateway answer
//! (a 401) is traced too. With tracing off the client's `traceparent`
//! reaches the upstream untouched.

mod common;

use common::*;
use serde_json::json;
use tollgate_analytics::Recorder;
use tollgate_identity::apikey::Pepper;
use tollgate_identity::authn::Authenticator;
use tollgate_policies::PolicyEnv;
use tollgate_proxy::Gateway;
use tollgate_telemetry::testing::{Collector, ExportedSpan};
use tollgate_telemetry::{Tracer, TracingSettings};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

async fn traced(tracer: Tracer) -> (TestGateway, Upstream) {
    let up = Upstream::echo("up").await;
    let authn = Authenticator::new(Pepper::random().expect("rng"));
    let gw = Gateway::with_observers(
        settings(),
        PolicyEnv::new(authn),
        Recorder::metrics_only(),
        tracer,
    );
    let cfg = one_service(
        &up.url(),
        json!([
            {"name": "open", "paths": ["/open"]},
            {"name": "keyed", "paths": ["/keyed"], "policies": [{"name": "auth", "config": {}}]}
        ]),
    );
    (TestGateway::start_gateway(gw, &cfg).await, up)
}

fn named<'a>(spans: &'a [ExportedSpan], name: &str) -> &'a ExportedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[tokio::test]
async fn a_request_continues_the_trace_with_phase_and_upstream_spans() {
    let mut collector = Collector::start().await.expect("collector");
    let tracer = Tracer::new(TracingSettings::new(collector.endpoint())).expect("tracer");
    let (gw, _up) = traced(tracer.clone()).await;
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = client()
        .request(
            "GET",
            &gw.url("/open/x"),
            &[("traceparent", incoming.as_str()), ("tracestate", "v=1")],
            empty(),
        )
        .await;
    let echo = r.echo();
    assert!(within("flush", tracer.flush()).await);
    let export = within("export", collector.next_export())
        .await
        .expect("an export");
    let spans = export.spans();
    let server = named(&spans, "GET open");
    assert_eq!(server.trace_id, TRACE);
    assert_eq!(server.parent_span_id.as_deref(), Some(PARENT));
    assert_eq!(server.kind, 2);
    assert_eq!(server.int_attribute("http.response.status_code"), Some(200));
    assert_eq!(server.str_attribute("url.path"), Some("/open/x"));
    assert_eq!(server.str_attribute("tollgate.route"), Some("open"));
    for (name, kind) in [
        ("access", 1),
        ("upstream_request", 1),
        ("upstream", 3),
        ("response", 1),
    ] {
        let s = named(&spans, name);
        assert_eq!(s.trace_id, TRACE, "{name}");
        assert_eq!(
            s.parent_span_id.as_deref(),
            Some(server.span_id.as_str()),
            "{name}"
        );
        assert_eq!(s.kind, kind, "{name}");
        assert!(s.start_unix_nano <= s.end_unix_nano, "{name}");
    }
    let upstream = named(&spans, "upstream");
    assert_eq!(
        upstream.int_attribute("http.response.status_code"),
        Some(200)
    );
    // The upstream continues the trace under the CLIENT span.
    let sent = echo.header("traceparent").expect("traceparent upstream");
    assert_eq!(sent, format!("00-{TRACE}-{}-01", upstream.span_id));
    assert_eq!(echo.header("tracestate").as_deref(), Some("v=1"));
}

#[tokio::test]
async fn a_gateway_answer_is_traced_and_a_new_trace_starts_without_traceparent() {
    let mut collector = Collector::start().await.expect("collector");
    let tracer = Tracer::new(TracingSettings::new(collector.endpoint())).expect("tracer");
    let (gw, _up) = traced(tracer.clone()).await;
    assert_eq!(
        get(&gw.url("/keyed/y")).await.problem(401),
        "credential_missing"
    );
    assert!(within("flush", tracer.flush()).await);
    let spans = within("export", collector.next_export())
        .await
        .expect("an export")
        .spans();
    let server = named(&spans, "GET keyed");
    assert_eq!(server.parent_span_id, None);
    assert_eq!(server.trace_id.len(), 32);
    assert_ne!(server.trace_id, TRACE);
    assert_eq!(server.int_attribute("http.response.status_code"), Some(401));
    assert_eq!(
        server.str_attribute("error.type"),
        Some("credential_missing")
    );
    assert!(
        spans.iter().all(|s| s.name != "upstream"),
        "no upstream call was made"
    );
}

#[tokio::test]
async fn without_tracing_the_clients_traceparent_passes_unchanged() {
    let (gw, _up) = traced(Tracer::disabled()).await;
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = client()
        .request(
            "GET",
            &gw.url("/open/x"),
            &[("traceparent", incoming.as_str())],
            empty(),
        )
        .await;
    assert_eq!(r.echo().header("traceparent"), Some(incoming));
}
