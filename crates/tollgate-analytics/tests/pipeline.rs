//! The roll-up thread end to end: events recorded on several threads are
//! aggregated per minute and dimensions, a flush hands every one of them to
//! the writer, and the raw event file rotates by size.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};
use tollgate_analytics::pipeline::{self, EventsFileSettings, PipelineSettings};
use tollgate_analytics::{Batch, Event, Rollup, RollupKey, Who};

fn event(at_ms: i64, route: &str, status: u16, total_us: u64) -> Event {
    Event {
        at_ms,
        route: Some(Arc::from(route)),
        service: Some(Arc::from("svc")),
        who: Who::Token {
            org: Some("org_1".into()),
            app: None,
        },
        method: Method::GET,
        status,
        error: None,
        upstream_us: Some(total_us / 2),
        total_us,
        bytes_in: 3,
        bytes_out: 10,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        request_id: HeaderValue::from_static("r"),
    }
}

/// Flushes, playing the writer: collects every batch up to the flush's own
/// and acknowledges it.
async fn flush(
    recorder: &Arc<tollgate_analytics::Recorder>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Batch>,
) -> Vec<(RollupKey, Rollup)> {
    let r = recorder.clone();
    let flushed = tokio::spawn(async move { r.flush().await });
    let mut rows = Vec::new();
    loop {
        let b = rx.recv().await.unwrap();
        rows.extend(b.rows);
        if let Some(done) = b.done {
            let _ = done.send(());
            break;
        }
    }
    flushed.await.unwrap();
    rows
}

#[tokio::test]
async fn a_flush_hands_over_every_event_recorded_before_it() {
    let (recorder, mut rx) = pipeline::start(PipelineSettings {
        queue: 100_000,
        flush_every: Duration::from_secs(3600),
        events_file: None,
    })
    .unwrap();
    let stats = recorder.route("a");
    let minute = 1_700_000_040_000; // a minute boundary
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (recorder, stats) = (recorder.clone(), stats.clone());
            std::thread::spawn(move || {
                for i in 0..2_500u64 {
                    let status = if i % 10 == 0 { 503 } else { 200 };
                    recorder.record(
                        &stats,
                        event(minute + (t * 1000) as i64, "a", status, 100 + i),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // One event in the next minute.
    recorder.record(&stats, event(minute + 60_000, "a", 200, 1_000));
    let rows = flush(&recorder, &mut rx).await;
    assert_eq!(recorder.dropped(), 0);
    let count = |class: u8, m: i64| -> Rollup {
        rows.iter()
            .filter(|(k, _)| k.class == class && k.minute_ms == m)
            .map(|(_, r)| r.clone())
            .fold(Rollup::default(), |mut a, r| {
                a.merge(&r);
                a
            })
    };
    let ok = count(2, minute);
    let bad = count(5, minute);
    assert_eq!(ok.requests, 9_000);
    assert_eq!(bad.requests, 1_000);
    assert_eq!(bad.errors, 1_000);
    assert_eq!(ok.errors, 0);
    assert_eq!(ok.bytes_in + bad.bytes_in, 30_000);
    assert_eq!(ok.latency.count(), 9_000);
    assert_eq!(count(2, minute + 60_000).requests, 1);
    let key = &rows[0].0;
    assert_eq!((&*key.org, &*key.app, &*key.route), ("org_1", "", "a"));
    // Nothing changed since: the next flush hands over no rows.
    assert!(flush(&recorder, &mut rx).await.is_empty());
}

#[tokio::test]
async fn the_raw_event_file_rotates_by_size_and_keeps_the_newest() {
    let dir = std::env::temp_dir().join(format!("tollgate-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("events.jsonl");
    let (recorder, mut rx) = pipeline::start(PipelineSettings {
        queue: 1000,
        flush_every: Duration::from_secs(3600),
        events_file: Some(EventsFileSettings {
            path: path.clone(),
            max_bytes: 2_000,
            keep: 2,
        }),
    })
    .unwrap();
    let stats = recorder.route("a");
    for i in 0..100 {
        recorder.record(&stats, event(1_700_000_000_000 + i, "a", 200, 100));
    }
    flush(&recorder, &mut rx).await;
    let lines = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let current = lines(&path);
    let one = lines(&dir.join("events.jsonl.1"));
    let two = lines(&dir.join("events.jsonl.2"));
    assert!(
        !dir.join("events.jsonl.3").exists(),
        "only `keep` rotated files stay"
    );
    assert!(!one.is_empty() && !two.is_empty());
    for f in ["events.jsonl", "events.jsonl.1", "events.jsonl.2"] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 2_000 + 400, "{f} is {len} bytes");
    }
    // The newest events are the current file's, the older ones rotated.
    let last = current.last().or(one.last()).unwrap();
    assert_eq!(last["time"], "2023-11-14T22:13:20.099Z");
    assert_eq!(last["org_id"], "org_1");
    assert_eq!(last["status"], 200);
    let oldest_kept = two.first().unwrap()["time"].as_str().unwrap().to_owned();
    assert!(
        oldest_kept.as_str() > "2023-11-14T22:13:20.000Z",
        "the oldest files were removed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
