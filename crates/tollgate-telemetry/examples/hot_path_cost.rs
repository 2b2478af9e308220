//! What tracing adds to one request on the request path (a SERVER span,
//! three children, eight attributes and the upstream `traceparent`): with a
//! disabled tracer, an enabled one that does not sample, and one that
//! samples, exporting to an in-process collector on another thread or to a
//! dead one (so the queue fills and drops). Run with
//! `cargo run --release -p tollgate-telemetry --example hot_path_cost`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use http::HeaderValue;
use tollgate_telemetry::{SpanHandle, SpanKind, Tracer, TracingSettings, attr, span_name};

fn request(tracer: &Tracer, incoming: Option<&HeaderValue>) -> Option<HeaderValue> {
    let mut t = tracer.start_request(incoming, "GET");
    let root = SpanHandle::ROOT;
    t.set_attribute(root, attr::HTTP_REQUEST_METHOD, "GET");
    t.set_attribute(root, attr::URL_PATH, "/users/42");
    t.set_attribute(root, attr::TOLLGATE_REQUEST_ID, "01J0000000000000000000000");
    let access = t.start_span(span_name::ACCESS, SpanKind::Internal);
    t.end_span(access);
    t.set_attribute(root, attr::HTTP_ROUTE, "/users/{id}");
    let up = t.start_span(span_name::UPSTREAM, SpanKind::Client);
    t.set_attribute(up, attr::SERVER_ADDRESS, "10.0.0.7");
    let header = t.traceparent_for_upstream(up);
    t.set_http_status(up, 200);
    t.end_span(up);
    let response = t.start_span(span_name::RESPONSE, SpanKind::Internal);
    t.end_span(response);
    t.finish(200);
    header
}

/// This thread's time on a CPU, in nanoseconds, where Linux reports it:
/// on a shared machine, wall-clock time also counts time spent waiting
/// for a CPU.
fn cpu_nanos() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn measure(label: &str, n: u32, tracer: &Tracer, incoming: Option<&HeaderValue>) {
    let (wall, cpu) = (Instant::now(), cpu_nanos());
    for _ in 0..n {
        black_box(request(tracer, incoming));
    }
    let wall = wall.elapsed().as_nanos() / u128::from(n);
    match cpu.zip(cpu_nanos()) {
        Some((a, b)) => println!(
            "{label:<40} {:>6} ns/request on CPU ({wall} ns wall)",
            (b - a) / u64::from(n)
        ),
        None => println!("{label:<40} {wall:>6} ns/request (wall)"),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dead = tollgate_telemetry::testing::dead_endpoint().expect("port");
    let base = TracingSettings {
        retry_backoff: Duration::from_millis(1),
        max_retries: 0,
        ..TracingSettings::new(dead)
    };
    let unsampled = rt.block_on(async {
        Tracer::new(TracingSettings {
            sample_ratio: 0.0,
            ..base.clone()
        })
        .expect("tracer")
    });
    let sampled = rt.block_on(async { Tracer::new(base.clone()).expect("tracer") });
    let (collector, live) = rt.block_on(async {
        let collector = tollgate_telemetry::testing::Collector::start()
            .await
            .expect("collector");
        let tracer = Tracer::new(TracingSettings {
            max_queue: 65_536,
            ..TracingSettings::new(collector.endpoint())
        })
        .expect("tracer");
        (collector, tracer)
    });
    let incoming =
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let n = 200_000;
    for _ in 0..2 {
        measure("disabled", n, &Tracer::disabled(), Some(&incoming));
        measure("enabled, not sampled (ratio 0)", n, &unsampled, None);
        measure("sampled, dead collector (queue drops)", n, &sampled, None);
        measure("sampled, exported to a live collector", n, &live, None);
    }
    rt.block_on(live.flush());
    println!("dead collector: {:?}", sampled.stats());
    println!("live collector: {:?}", live.stats());
    drop(collector);
}
