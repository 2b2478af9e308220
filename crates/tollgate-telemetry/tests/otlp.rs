//! The tracer against an in-process OTLP collector on a real socket.

use std::time::{Duration, Instant};

use http::HeaderValue;
use tollgate_telemetry::testing::{Collector, Export, ExportedSpan, dead_endpoint};
use tollgate_telemetry::{
    SpanHandle, SpanKind, Tracer, TracingSettings, attr, parse_traceparent, span_name,
};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Settings for tests: exports happen on a full batch, a flush or a
/// shutdown, never on the timer; retries wait milliseconds.
fn settings(endpoint: String) -> TracingSettings {
    TracingSettings {
        service_name: "tollgate-test".to_owned(),
        flush_interval: Duration::from_secs(3600),
        export_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(5),
        shutdown_timeout: Duration::from_secs(5),
        ..TracingSettings::new(endpoint)
    }
}

async fn collector() -> Collector {
    Collector::start().await.expect("collector")
}

fn spans(exports: &[Export]) -> Vec<ExportedSpan> {
    exports.iter().flat_map(Export::spans).collect()
}

/// A request as the proxy records it: access, upstream, response.
fn record_request(tracer: &Tracer, incoming: Option<&HeaderValue>, status: u16) -> Option<String> {
    let mut trace = tracer.start_request(incoming, "GET");
    let root = SpanHandle::ROOT;
    trace.set_attribute(root, attr::HTTP_REQUEST_METHOD, "GET");
    trace.set_attribute(root, attr::URL_PATH, "/users/42");
    trace.set_attribute(root, attr::TOLLGATE_REQUEST_ID, "01J0000000000000000000000");
    let access = trace.start_span(span_name::ACCESS, SpanKind::Internal);
    trace.end_span(access);
    if trace.is_recording() {
        trace.set_name(root, "GET /users/{id}");
    }
    trace.set_attribute(root, attr::HTTP_ROUTE, "/users/{id}");
    let upstream = trace.start_span(span_name::UPSTREAM, SpanKind::Client);
    trace.set_attribute(upstream, attr::HTTP_REQUEST_METHOD, "GET");
    trace.set_attribute(upstream, attr::SERVER_ADDRESS, "127.0.0.1");
    trace.set_attribute(upstream, attr::SERVER_PORT, 9000u16);
    let header = trace.traceparent_for_upstream(upstream);
    trace.set_http_status(upstream, status);
    trace.end_span(upstream);
    let response = trace.start_span(span_name::RESPONSE, SpanKind::Internal);
    trace.end_span(response);
    trace.finish(status);
    header.map(|h| h.to_str().expect("ascii").to_owned())
}

#[tokio::test]
async fn a_request_trace_is_a_server_span_with_children() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    let upstream_header = record_request(&tracer, None, 200).expect("traceparent");
    assert!(tracer.flush().await);

    let export = c.next_export().await.expect("export");
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(export.content_type.as_deref(), Some("application/json"));
    assert_eq!(export.status, 200);
    let spans = export.spans();
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let root = spans.iter().find(|s| s.kind == 2).expect("server span");
    assert_eq!(root.name, "GET /users/{id}");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.service_name.as_deref(), Some("tollgate-test"));
    assert_eq!(root.str_attribute(attr::HTTP_REQUEST_METHOD), Some("GET"));
    assert_eq!(root.str_attribute(attr::URL_PATH), Some("/users/42"));
    assert_eq!(root.str_attribute(attr::HTTP_ROUTE), Some("/users/{id}"));
    assert_eq!(
        root.int_attribute(attr::HTTP_RESPONSE_STATUS_CODE),
        Some(200)
    );
    assert_eq!(
        root.str_attribute(attr::TOLLGATE_REQUEST_ID),
        Some("01J0000000000000000000000")
    );
    assert_eq!(root.status_code, 0);
    assert_eq!(root.trace_id.len(), 32);
    assert_eq!(root.span_id.len(), 16);

    let names: Vec<&str> = spans
        .iter()
        .filter(|s| s.kind != 2)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["access", "upstream", "response"]);
    for child in spans.iter().filter(|s| s.kind != 2) {
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id.as_deref(), Some(root.span_id.as_str()));
        assert_ne!(child.span_id, root.span_id);
        assert!(child.start_unix_nano >= root.start_unix_nano);
        assert!(child.end_unix_nano >= child.start_unix_nano);
        assert!(child.end_unix_nano <= root.end_unix_nano);
    }
    let upstream = spans
        .iter()
        .find(|s| s.name == "upstream")
        .expect("upstream");
    assert_eq!(upstream.kind, 3);
    assert_eq!(
        upstream.str_attribute(attr::SERVER_ADDRESS),
        Some("127.0.0.1")
    );
    assert_eq!(upstream.int_attribute(attr::SERVER_PORT), Some(9000));
    assert_eq!(
        upstream.int_attribute(attr::HTTP_RESPONSE_STATUS_CODE),
        Some(200)
    );
    assert_eq!(
        spans.iter().find(|s| s.name == "access").map(|s| s.kind),
        Some(1)
    );

    // The upstream gets the same trace, with its CLIENT span as parent.
    let sent = parse_traceparent(&upstream_header).expect("valid");
    assert_eq!(
        upstream_header,
        format!("00-{}-{}-01", root.trace_id, upstream.span_id)
    );
    assert!(sent.is_sampled());

    assert_eq!(tracer.stats().exported, 4);
    assert!(tracer.shutdown().await);
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    let incoming = HeaderValue::from_static(INCOMING);
    let trace = tracer.start_request(Some(&incoming), "GET");
    assert!(trace.is_continued());
    let ctx = trace.context(SpanHandle::ROOT).expect("context");
    assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(ctx.span_id_hex(), "00f067aa0ba902b7");
    trace.finish(204);
    let header = record_request(&tracer, Some(&incoming), 200).expect("traceparent");
    assert!(tracer.flush().await);

    let spans = spans(&c.drain());
    assert_eq!(spans.len(), 5);
    for s in &spans {
        assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    let roots: Vec<_> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(roots.len(), 2);
    for root in roots {
        assert_eq!(root.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(root.span_id, "00f067aa0ba902b7");
    }
    assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(header.ends_with("-01"));
    assert!(!header.contains("00f067aa0ba902b7"));
}

#[tokio::test]
async fn an_unsampled_incoming_traceparent_is_propagated_but_not_recorded() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    let incoming =
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    let mut trace = tracer.start_request(Some(&incoming), "GET");
    assert!(!trace.is_recording());
    let up = trace.start_span(span_name::UPSTREAM, SpanKind::Client);
    let header = trace.traceparent_for_upstream(up).expect("traceparent");
    let sent = parse_traceparent(&header).expect("valid");
    assert_eq!(sent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(!sent.is_sampled());
    trace.finish(200);
    assert!(tracer.flush().await);
    assert!(c.drain().is_empty());
    assert_eq!(tracer.stats().exported, 0);
}

#[tokio::test]
async fn malformed_traceparents_start_new_traces() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    let bad = [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
    ];
    for value in bad {
        let v = HeaderValue::from_static(value);
        let trace = tracer.start_request(Some(&v), "GET");
        assert!(trace.is_recording(), "{value}");
        assert!(!trace.is_continued(), "{value}");
        trace.finish(200);
    }
    assert!(tracer.flush().await);
    let spans = spans(&c.drain());
    assert_eq!(spans.len(), bad.len());
    let mut ids: Vec<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    for s in &spans {
        assert_eq!(s.parent_span_id, None);
        assert_ne!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(s.trace_id, "0".repeat(32));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), bad.len(), "every request got its own trace");
}

#[tokio::test]
async fn sampling_zero_exports_nothing_and_one_exports_everything() {
    let mut c = collector().await;
    let none = Tracer::new(TracingSettings {
        sample_ratio: 0.0,
        ..settings(c.endpoint())
    })
    .expect("tracer");
    for _ in 0..50 {
        assert_eq!(
            record_request(&none, None, 200).map(|h| h.ends_with("-00")),
            Some(true)
        );
    }
    assert!(none.flush().await);
    assert!(c.drain().is_empty());
    assert_eq!(none.stats().exported, 0);

    // Parent-based: a sampled caller is recorded whatever the ratio.
    let incoming = HeaderValue::from_static(INCOMING);
    record_request(&none, Some(&incoming), 200);
    assert!(none.flush().await);
    assert_eq!(spans(&c.drain()).len(), 4);

    let all = Tracer::new(settings(c.endpoint())).expect("tracer");
    for _ in 0..50 {
        record_request(&all, None, 200);
    }
    assert!(all.flush().await);
    let spans = spans(&c.drain());
    assert_eq!(spans.len(), 200);
    assert_eq!(spans.iter().filter(|s| s.kind == 2).count(), 50);
    assert_eq!(all.stats().exported, 200);
    assert_eq!(all.stats().dropped(), 0);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let mut c = collector().await;
    c.hold();
    let tracer = Tracer::new(TracingSettings {
        max_queue: 4,
        batch_size: 2,
        ..settings(c.endpoint())
    })
    .expect("tracer");
    let two_spans = |tracer: &Tracer| {
        let mut t = tracer.start_request(None, "GET");
        let a = t.start_span(span_name::ACCESS, SpanKind::Internal);
        t.end_span(a);
        t.finish(200);
    };
    // The first trace fills a batch; the exporter sends it and the
    // collector holds its answer.
    two_spans(&tracer);
    let first = c.next_export().await.expect("first export");
    assert_eq!(first.spans().len(), 2);
    // The queue takes two more traces, then drops whole traces.
    let started = Instant::now();
    for _ in 0..100 {
        two_spans(&tracer);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "finish blocked");
    let stats = tracer.stats();
    assert_eq!(stats.queued, 4);
    assert_eq!(stats.dropped_queue_full, 98 * 2);
    let mut metrics = String::new();
    tracer.render_metrics(&mut metrics);
    assert!(metrics.contains("tollgate_trace_spans_dropped_total{reason=\"queue_full\"} 196\n"));

    c.release();
    assert!(tracer.flush().await);
    let stats = tracer.stats();
    assert_eq!(stats.exported, 6);
    assert_eq!(stats.queued, 0);
    assert_eq!(spans(&c.drain()).len(), 4);
}

#[tokio::test]
async fn a_retryable_answer_gets_the_batch_sent_again() {
    let mut c = collector().await;
    c.respond_with([503, 429]);
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    record_request(&tracer, None, 200);
    assert!(tracer.flush().await);
    let exports = c.drain();
    let statuses: Vec<u16> = exports.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [503, 429, 200]);
    assert_eq!(exports[0].body, exports[2].body, "the same batch, again");
    let stats = tracer.stats();
    assert_eq!(stats.exported, 4);
    assert_eq!(stats.export_failures, 0);
    assert_eq!(stats.dropped(), 0);
}

#[tokio::test]
async fn an_answer_the_specification_calls_final_is_not_retried() {
    let mut c = collector().await;
    c.respond_with([500]);
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    record_request(&tracer, None, 200);
    assert!(tracer.flush().await);
    assert_eq!(c.drain().len(), 1);
    let stats = tracer.stats();
    assert_eq!(stats.export_failures, 1);
    assert_eq!(stats.dropped_export_failed, 4);
    assert_eq!(stats.exported, 0);

    // The collector is fine again; so is the export.
    record_request(&tracer, None, 200);
    assert!(tracer.flush().await);
    assert_eq!(c.drain().len(), 1);
    assert_eq!(tracer.stats().exported, 4);
}

#[tokio::test]
async fn a_dead_collector_counts_failures_without_panicking() {
    let tracer = Tracer::new(TracingSettings {
        max_retries: 2,
        batch_size: 4,
        ..settings(dead_endpoint().expect("port"))
    })
    .expect("tracer");
    for _ in 0..3 {
        record_request(&tracer, None, 200);
    }
    assert!(tracer.flush().await);
    let stats = tracer.stats();
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.export_failures, 3, "three batches of four spans");
    assert_eq!(stats.dropped_export_failed, 12);
    let mut metrics = String::new();
    tracer.render_metrics(&mut metrics);
    assert!(
        metrics.contains("tollgate_trace_export_failures_total 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("tollgate_trace_spans_exported_total 0\n"));
    assert!(tracer.shutdown().await);
}

#[tokio::test]
async fn shutdown_exports_what_is_queued_and_then_drops() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    for _ in 0..3 {
        record_request(&tracer, None, 200);
    }
    assert!(c.try_next().is_none(), "nothing sent before a batch fills");
    assert!(tracer.shutdown().await);
    assert_eq!(spans(&c.drain()).len(), 12);
    assert_eq!(tracer.stats().exported, 12);

    record_request(&tracer, None, 200);
    assert_eq!(tracer.stats().dropped_shutdown, 4);
    assert!(tracer.shutdown().await, "a second shutdown does nothing");
    assert!(tracer.flush().await);
}

#[tokio::test]
async fn shutdown_is_bounded_when_the_collector_stalls() {
    let mut c = collector().await;
    c.hold();
    let tracer = Tracer::new(TracingSettings {
        shutdown_timeout: Duration::from_millis(300),
        ..settings(c.endpoint())
    })
    .expect("tracer");
    record_request(&tracer, None, 200);
    let started = Instant::now();
    assert!(!tracer.shutdown().await);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(c.next_export().await.is_some(), "the export was attempted");
    let stats = tracer.stats();
    assert_eq!(stats.dropped_shutdown, 4);
    assert_eq!(stats.exported, 0);
}

#[tokio::test]
async fn failures_are_marked_on_the_spans() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    // An upstream 404 fails the CLIENT span but not the SERVER span.
    record_request(&tracer, None, 404);
    // A 503 fails both.
    record_request(&tracer, None, 503);
    // An upstream that timed out.
    let mut trace = tracer.start_request(None, "GET");
    let up = trace.start_span(span_name::UPSTREAM, SpanKind::Client);
    trace.set_error(up, "timeout");
    trace.finish(504);
    assert!(tracer.flush().await);
    let spans = spans(&c.drain());
    let by = |name: &str, status: i64| {
        spans
            .iter()
            .filter(|s| s.name.starts_with(name) && s.status_code == status)
            .count()
    };
    assert_eq!(by("GET", 0), 1, "404 leaves the server span unset");
    assert_eq!(by("GET", 2), 2);
    assert_eq!(by("upstream", 2), 3);
    let timed_out = spans
        .iter()
        .find(|s| s.str_attribute(attr::ERROR_TYPE) == Some("timeout"))
        .expect("timeout span");
    assert_eq!(timed_out.kind, 3);
    let server_503 = spans
        .iter()
        .find(|s| s.kind == 2 && s.int_attribute(attr::HTTP_RESPONSE_STATUS_CODE) == Some(503))
        .expect("503");
    assert_eq!(server_503.str_attribute(attr::ERROR_TYPE), Some("503"));
}

#[tokio::test]
async fn a_trace_dropped_unfinished_is_exported_as_cancelled() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    let mut trace = tracer.start_request(None, "GET");
    let up = trace.start_span(span_name::UPSTREAM, SpanKind::Client);
    let _ = trace.traceparent_for_upstream(up);
    drop(trace);
    assert!(tracer.flush().await);
    let spans = spans(&c.drain());
    assert_eq!(spans.len(), 2);
    let root = spans.iter().find(|s| s.kind == 2).expect("root");
    assert_eq!(root.bool_attribute(attr::TOLLGATE_CANCELLED), Some(true));
    for s in &spans {
        assert!(s.end_unix_nano >= s.start_unix_nano && s.end_unix_nano > 0);
    }
}

#[tokio::test]
async fn traces_finished_on_other_runtimes_reach_the_exporter() {
    let mut c = collector().await;
    let tracer = Tracer::new(settings(c.endpoint())).expect("tracer");
    // Like the proxy: one current-thread runtime per worker thread.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let tracer = tracer.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    for _ in 0..10 {
                        record_request(&tracer, None, 200);
                    }
                });
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert!(tracer.flush().await);
    assert_eq!(spans(&c.drain()).len(), 80);
}

#[tokio::test]
async fn a_full_batch_is_sent_without_waiting_for_the_timer() {
    let mut c = collector().await;
    let tracer = Tracer::new(TracingSettings {
        batch_size: 8,
        ..settings(c.endpoint())
    })
    .expect("tracer");
    record_request(&tracer, None, 200);
    record_request(&tracer, None, 200);
    // No flush: the second trace filled the batch of eight.
    let export = c.next_export().await.expect("export");
    assert_eq!(export.spans().len(), 8);
}

#[tokio::test]
async fn resource_attributes_are_sent() {
    let mut c = collector().await;
    let tracer = Tracer::new(TracingSettings {
        resource_attributes: vec![("deployment.environment.name".into(), "test".into())],
        ..settings(c.endpoint())
    })
    .expect("tracer");
    record_request(&tracer, None, 200);
    assert!(tracer.flush().await);
    let export = c.next_export().await.expect("export");
    let attrs = export.body["resourceSpans"][0]["resource"]["attributes"]
        .as_array()
        .expect("attributes")
        .clone();
    let value = |key: &str| {
        attrs
            .iter()
            .find(|kv| kv["key"] == key)
            .map(|kv| kv["value"]["stringValue"].clone())
    };
    assert_eq!(value("service.name"), Some("tollgate-test".into()));
    assert_eq!(value("deployment.environment.name"), Some("test".into()));
    assert_eq!(value("telemetry.sdk.language"), Some("rust".into()));
    assert_eq!(
        export.body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
        "tollgate"
    );
}
