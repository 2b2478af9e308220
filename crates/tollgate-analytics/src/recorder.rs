//! The request path's side of analytics: [`Recorder::record`] counts the
//! request in the Prometheus metrics (atomics, per route and status class)
//! and offers the event to a bounded queue. A full queue drops the event and
//! counts the drop; the request never waits.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tollgate_core::metrics::{self as names, MetricsSource, family, label_value};

use crate::event::{Event, class_label, status_class};
use crate::queue::{Msg, QueueRx, QueueTx};

/// Upper bounds of the latency histograms' buckets, in seconds.
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
/// Status classes 0 (other) to 5 (5xx).
const CLASSES: usize = 6;

/// A latency histogram with the buckets of [`BUCKETS_SECONDS`]. Each bucket
/// holds the observations that fall in it; rendering accumulates them.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, us: u64) {
        let i = BUCKETS_US.partition_point(|b| *b < us);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0u64;
        for (b, le) in self.buckets.iter().zip(BUCKETS_SECONDS) {
            cum += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The metrics of one route (or of requests that matched none). The proxy
/// holds one per compiled route; it outlives configuration reloads.
#[derive(Debug)]
pub struct RouteStats {
    name: Arc<str>,
    classes: [Histogram; CLASSES],
    upstream: Histogram,
}

impl RouteStats {
    fn new(name: Arc<str>) -> RouteStats {
        RouteStats {
            name,
            classes: Default::default(),
            upstream: Histogram::default(),
        }
    }

    /// Requests of a status class (1 to 5; 0 for anything else) so far.
    pub fn requests(&self, class: u8) -> u64 {
        self.classes
            .get(usize::from(class))
            .map_or(0, |h| h.count.load(Ordering::Relaxed))
    }
}

/// The receiving end of [`Recorder::channel`].
#[derive(Debug)]
pub struct EventQueue(std::sync::Mutex<QueueRx>);

impl EventQueue {
    /// The next queued event, if any. Flush requests are acknowledged on the way.
    pub fn try_next(&self) -> Option<Event> {
        let mut rx = self.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match rx.try_recv().ok()? {
                Msg::Event(e) => return Some(e),
                Msg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Counts requests and hands their events to the roll-up.
#[derive(Debug)]
pub struct Recorder {
    queue: Option<QueueTx>,
    enqueued: AtomicU64,
    dropped: AtomicU64,
    routes: RwLock<HashMap<Arc<str>, Arc<RouteStats>>>,
    unrouted: Arc<RouteStats>,
}

impl Recorder {
    /// Metrics only: events go nowhere (analytics off).
    pub fn metrics_only() -> Arc<Recorder> {
        Arc::new(Recorder::with_queue(None))
    }

    /// A recorder whose events wait in a queue of `capacity` for the
    /// caller to take them ([`EventQueue::try_next`]); for tests and for
    /// consumers other than the roll-up thread.
    pub fn channel(capacity: usize) -> (Arc<Recorder>, EventQueue) {
        let (tx, rx) = crate::queue::bounded(capacity);
        (
            Arc::new(Recorder::with_queue(Some(tx))),
            EventQueue(std::sync::Mutex::new(rx)),
        )
    }

    pub(crate) fn with_queue(queue: Option<QueueTx>) -> Recorder {
        Recorder {
            queue,
            enqueued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            routes: RwLock::new(HashMap::new()),
            unrouted: Arc::new(RouteStats::new(Arc::from(""))),
        }
    }

    /// Whether events are collected (analytics on).
    pub fn collects_events(&self) -> bool {
        self.queue.is_some()
    }

    /// The metrics of the route named `name`, the same object for the same
    /// name across reloads. Called when a snapshot is compiled.
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        if let Some(s) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return s.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(Arc::from(name))
            .or_insert_with_key(|k| Arc::new(RouteStats::new(k.clone())))
            .clone()
    }

    /// The metrics of requests that matched no route.
    pub fn unrouted(&self) -> &Arc<RouteStats> {
        &self.unrouted
    }

    /// Records one finished request: metrics now, the event to the queue if
    /// there is room. Never blocks.
    pub fn record(&self, stats: &RouteStats, event: Event) {
        let class = usize::from(status_class(event.status));
        if let Some(h) = stats.classes.get(class) {
            h.observe(event.total_us);
        }
        if let Some(us) = event.upstream_us {
            stats.upstream.observe(us);
        }
        let Some(queue) = &self.queue else { return };
        match queue.try_send(event) {
            Ok(()) => self.enqueued.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Events dropped because the queue was full, so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events queued for the roll-up, so far.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::Relaxed)
    }

    /// Resolves once every event recorded before the call is in the roll-up
    /// and the roll-up's rows have been handed to (and acknowledged by) the
    /// writer. Resolves at once when analytics is off or its thread is gone.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if queue.flush(tx) {
            let _ = rx.await;
        }
    }

    fn all_routes(&self) -> Vec<Arc<RouteStats>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = routes.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.insert(0, self.unrouted.clone());
        all
    }
}

impl MetricsSource for Recorder {
    fn render(&self, out: &mut String) {
        let routes = self.all_routes();
        let mut labels = String::new();
        family(
            out,
            names::HTTP_REQUESTS,
            "counter",
            "Requests the gateway answered, by route (empty: no route matched) and status class.",
        );
        for r in &routes {
            for (class, h) in r.classes.iter().enumerate() {
                let n = h.count.load(Ordering::Relaxed);
                if n > 0 {
                    route_labels(&mut labels, &r.name, class);
                    let _ = writeln!(out, "{}{{{labels}}} {n}", names::HTTP_REQUESTS);
                }
            }
        }
        family(
            out,
            names::HTTP_DURATION,
            "histogram",
            "Time from the request head to the end of the response, by route and status class.",
        );
        for r in &routes {
            for (class, h) in r.classes.iter().enumerate() {
                if h.count.load(Ordering::Relaxed) > 0 {
                    route_labels(&mut labels, &r.name, class);
                    h.render(out, names::HTTP_DURATION, &labels);
                }
            }
        }
        family(
            out,
            names::UPSTREAM_DURATION,
            "histogram",
            "Time waiting for the upstream's response head, by route.",
        );
        for r in &routes {
            if r.upstream.count.load(Ordering::Relaxed) > 0 {
                labels.clear();
                labels.push_str("route=\"");
                label_value(&mut labels, &r.name);
                labels.push('"');
                r.upstream.render(out, names::UPSTREAM_DURATION, &labels);
            }
        }
        family(
            out,
            names::ANALYTICS_EVENTS,
            "counter",
            "Analytics events queued for the roll-up.",
        );
        let _ = writeln!(out, "{} {}", names::ANALYTICS_EVENTS, self.enqueued());
        family(
            out,
            names::ANALYTICS_DROPPED,
            "counter",
            "Analytics events dropped because the queue was full.",
        );
        let _ = writeln!(out, "{} {}", names::ANALYTICS_DROPPED, self.dropped());
    }
}

fn route_labels(labels: &mut String, route: &str, class: usize) {
    labels.clear();
    labels.push_str("route=\"");
    label_value(labels, route);
    labels.push_str("\",status_class=\"");
    labels.push_str(class_label(class as u8));
    labels.push('"');
}
