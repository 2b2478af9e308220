//! Export failures are logged once per incident: the events the exporter
//! emits, counted by level (not by their text).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tollgate_telemetry::testing::Collector;
use tollgate_telemetry::{Tracer, TracingSettings};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Clone, Default)]
struct Counts {
    warn: Arc<AtomicUsize>,
    info: Arc<AtomicUsize>,
}

impl<S: Subscriber> Layer<S> for Counts {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("tollgate_telemetry::export") {
            return;
        }
        match *meta.level() {
            Level::WARN => self.warn.fetch_add(1, Ordering::SeqCst),
            Level::INFO => self.info.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
    }
}

fn one_trace(tracer: &Tracer) {
    tracer.start_request(None, "GET").finish(200);
}

#[tokio::test]
async fn an_export_failure_is_logged_once_per_incident() {
    let counts = Counts::default();
    // The test runtime is current-thread: the export task logs on this
    // thread, under this subscriber.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(counts.clone()));
    let mut c = Collector::start().await.expect("collector");
    let tracer = Tracer::new(TracingSettings {
        batch_size: 1,
        flush_interval: Duration::from_secs(3600),
        ..TracingSettings::new(c.endpoint())
    })
    .expect("tracer");
    let (warn, info) = (
        || counts.warn.load(Ordering::SeqCst),
        || counts.info.load(Ordering::SeqCst),
    );

    // Three failed batches: one incident, one warning.
    c.respond_with([400, 400, 400]);
    for _ in 0..3 {
        one_trace(&tracer);
    }
    assert!(tracer.flush().await);
    assert_eq!(tracer.stats().export_failures, 3);
    assert_eq!((warn(), info()), (1, 0));

    // Recovery is logged once.
    one_trace(&tracer);
    one_trace(&tracer);
    assert!(tracer.flush().await);
    assert_eq!((warn(), info()), (1, 1));

    // A new incident is logged again.
    c.respond_with([400]);
    one_trace(&tracer);
    assert!(tracer.flush().await);
    assert_eq!((warn(), info()), (2, 1));
    assert_eq!(c.drain().len(), 6);
}
