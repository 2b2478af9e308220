//! How many events per second the roll-up stage takes on one core.
//!
//! ```sh
//! cargo run --release -p tollgate-analytics --example rollup_throughput [EVENTS]
//! ```
//!
//! Two measurements over the same synthetic traffic (200 organizations,
//! 3 apps each, 50 routes, a realistic spread of statuses and latencies):
//!
//! 1. `aggregate`: [`Aggregator::add`] alone, on this thread.
//! 2. `pipeline`: events recorded on this thread go through the bounded
//!    queue to the roll-up thread, which aggregates them; timed until a
//!    flush has handed every row over. The queue is large enough that
//!    nothing is dropped, and the drop count is printed to prove it.
//!
//! The issue's target is at least 200,000 events/s on one core.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};
use tollgate_analytics::pipeline::{self, PipelineSettings};
use tollgate_analytics::{Aggregator, Event, Who};

fn events(n: usize) -> Vec<Event> {
    let routes: Vec<Arc<str>> = (0..50).map(|i| Arc::from(format!("route-{i}"))).collect();
    let service: Arc<str> = Arc::from("svc");
    let base = 1_764_000_000_000i64;
    (0..n)
        .map(|i| {
            let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let org = (x >> 8) % 200;
            Event {
                at_ms: base + (i as i64 / 1000) * 7, // about 8.5 minutes in all for 1M events
                route: Some(routes[((x >> 20) % 50) as usize].clone()),
                service: Some(service.clone()),
                who: Who::Token {
                    org: Some(format!("org_{org:04}")),
                    app: Some(format!("app_{org:04}_{}", (x >> 30) % 3)),
                },
                method: Method::GET,
                status: match x % 100 {
                    0..=89 => 200,
                    90..=96 => 404,
                    97..=98 => 429,
                    _ => 502,
                },
                error: None,
                upstream_us: Some(200 + (x >> 40) % 20_000),
                total_us: 250 + (x >> 40) % 20_000,
                bytes_in: 0,
                bytes_out: 512,
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                request_id: HeaderValue::from_static("r"),
            }
        })
        .collect()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let evs = events(n);

    let mut agg = Aggregator::new();
    let t = Instant::now();
    for e in &evs {
        agg.add(e);
    }
    let took = t.elapsed();
    println!(
        "aggregate: {n} events in {:.3} s = {:.0} events/s ({} rows)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        agg.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (recorder, mut rx) = pipeline::start(PipelineSettings {
            queue: n + 1,
            flush_every: Duration::from_secs(3600),
            events_file: None,
        })
        .expect("pipeline");
        let stats = recorder.route("route-0");
        let t = Instant::now();
        for e in evs {
            recorder.record(&stats, e);
        }
        let r = recorder.clone();
        let flushed = tokio::spawn(async move { r.flush().await });
        let mut rows = 0;
        while let Some(b) = rx.recv().await {
            rows += b.rows.len();
            if let Some(done) = b.done {
                let _ = done.send(());
                break;
            }
        }
        let _ = flushed.await;
        let took = t.elapsed();
        println!(
            "pipeline: {n} events in {:.3} s = {:.0} events/s ({rows} rows, {} dropped)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            recorder.dropped()
        );
    });
}
