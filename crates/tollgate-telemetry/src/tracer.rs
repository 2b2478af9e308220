//! The [`Tracer`]: its settings, the sampling decision, and the handle on
//! the exporter task.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderValue, Uri};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::context::{TraceContext, new_span_id, new_trace_id};
use crate::export::{Exporter, Queue};
use crate::trace::RequestTrace;
use crate::{Error, metrics};

/// The default OTLP/HTTP traces endpoint: a collector on this host.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318/v1/traces";

/// How an enabled [`Tracer`] samples and exports. Build with
/// [`TracingSettings::new`] and adjust the fields.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The OTLP/HTTP traces URL, `http://` or `https://`, used as given
    /// (for example `http://collector:4318/v1/traces`). A URL without a
    /// path gets `/v1/traces`.
    pub endpoint: String,
    /// The `service.name` resource attribute. Default `tollgate`.
    pub service_name: String,
    /// More resource attributes, such as `service.instance.id` or
    /// `deployment.environment.name`, as strings.
    pub resource_attributes: Vec<(String, String)>,
    /// The share of new traces recorded, from 0.0 to 1.0. Parent-based: a
    /// request whose valid `traceparent` says sampled is always recorded,
    /// one that says not sampled never is; the ratio decides for requests
    /// without one, by their trace id. Default 1.0.
    pub sample_ratio: f64,
    /// The most spans waiting for export; past it whole traces are dropped
    /// and counted. Default 2048.
    pub max_queue: usize,
    /// The most spans in one export request; a full batch is sent at once.
    /// At most `max_queue`. Default 512.
    pub batch_size: usize,
    /// How long a partial batch may wait before it is sent. Default 5 s.
    pub flush_interval: Duration,
    /// The limit on one export attempt: connect, send, and read the answer.
    /// Default 10 s.
    pub export_timeout: Duration,
    /// How often a batch is sent again after a retryable failure (a
    /// connection failure, a timeout, 429, 502, 503 or 504). Default 3.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles per retry, with jitter,
    /// up to 30 s. A collector's `Retry-After` (in seconds) replaces it.
    /// Default 500 ms.
    pub retry_backoff: Duration,
    /// How long [`Tracer::shutdown`] and [`Tracer::flush`] wait for the
    /// queue to drain. Default 5 s.
    pub shutdown_timeout: Duration,
}

impl TracingSettings {
    /// Settings with the defaults, exporting to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> TracingSettings {
        TracingSettings {
            endpoint: endpoint.into(),
            service_name: "tollgate".to_owned(),
            resource_attributes: Vec::new(),
            sample_ratio: 1.0,
            max_queue: 2048,
            batch_size: 512,
            flush_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
            max_retries: 3,
            retry_backoff: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the settings and resolves the endpoint.
    pub fn validate(&self) -> Result<Uri, Error> {
        let invalid = |field, reason: &str| Error::InvalidSetting {
            field,
            reason: reason.to_owned(),
        };
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid(
                "sample_ratio",
                &format!("{} is not between 0.0 and 1.0", self.sample_ratio),
            ));
        }
        if self.max_queue == 0 {
            return Err(invalid("max_queue", "must be at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > self.max_queue {
            return Err(invalid(
                "batch_size",
                &format!("must be from 1 to max_queue ({})", self.max_queue),
            ));
        }
        for (field, d) in [
            ("flush_interval", self.flush_interval),
            ("export_timeout", self.export_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be more than zero"));
            }
        }
        if self.service_name.is_empty() {
            return Err(invalid("service_name", "must not be empty"));
        }
        parse_endpoint(&self.endpoint)
    }
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings::new(DEFAULT_ENDPOINT)
    }
}

fn parse_endpoint(endpoint: &str) -> Result<Uri, Error> {
    let invalid = |reason| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|_| invalid("not a URL".to_owned()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("the scheme must be http or https".to_owned())),
    }
    if uri.host().is_none() {
        return Err(invalid("no host".to_owned()));
    }
    if uri.path() == "/" && uri.query().is_none() {
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/v1/traces"));
        return Uri::from_parts(parts).map_err(|e| invalid(e.to_string()));
    }
    Ok(uri)
}

/// Counts from the exporter, as also rendered for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because their batch failed for good.
    pub dropped_export_failed: u64,
    /// Spans finished after shutdown began, or left when it timed out.
    pub dropped_shutdown: u64,
    /// Batches that failed for good (after their retries).
    pub export_failures: u64,
    /// Spans waiting in the queue now.
    pub queued: u64,
}

impl Stats {
    /// Every dropped span, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_export_failed + self.dropped_shutdown
    }
}

/// Starts request traces and owns the exporter. Cheap to clone (one `Arc`);
/// every clone feeds the same queue. [`Tracer::disabled`], the default,
/// does nothing and costs nothing.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Tracer(disabled)"),
            Some(i) => write!(f, "Tracer({})", i.endpoint),
        }
    }
}

struct Inner {
    queue: Arc<Queue>,
    /// A new trace is sampled when the low 64 bits of its id are below this.
    threshold: u64,
    always: bool,
    endpoint: Uri,
    shutdown_timeout: Duration,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last clone gone: the task exports what is queued and stops.
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Tracer {
    /// A tracer that records nothing: every [`RequestTrace`] it starts is
    /// inert, with no allocation, clock read or random number.
    pub const fn disabled() -> Tracer {
        Tracer { inner: None }
    }

    /// An enabled tracer whose exporter task runs on the current tokio
    /// runtime. Fails on invalid settings or outside a runtime.
    ///
    /// Start it on a runtime that outlives the gateway's worker runtimes
    /// (the binary's main runtime): the task runs there, and request
    /// threads only push to its queue.
    pub fn new(settings: TracingSettings) -> Result<Tracer, Error> {
        let handle = Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Tracer::with_runtime(settings, &handle)
    }

    /// An enabled tracer whose exporter task runs on `runtime`.
    pub fn with_runtime(settings: TracingSettings, runtime: &Handle) -> Result<Tracer, Error> {
        let endpoint = settings.validate()?;
        let queue = Arc::new(Queue::new(settings.max_queue, settings.batch_size));
        let exporter = Exporter::new(Arc::clone(&queue), endpoint.clone(), &settings)?;
        let task = runtime.spawn(exporter.run());
        let (threshold, always) = sampling_threshold(settings.sample_ratio);
        tracing::info!(endpoint = %endpoint, sample_ratio = settings.sample_ratio, "exporting traces over OTLP");
        Ok(Tracer {
            inner: Some(Arc::new(Inner {
                queue,
                threshold,
                always,
                endpoint,
                shutdown_timeout: settings.shutdown_timeout,
                task: Mutex::new(Some(task)),
            })),
        })
    }

    /// Whether this tracer exports (it was not made by [`Tracer::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts the trace of one received request, with its SERVER span
    /// named `name` (rename it once the route is known).
    ///
    /// `incoming` is the request's `traceparent`. When it is valid, the
    /// trace continues it (same trace id; the caller's span is the SERVER
    /// span's parent) and follows its sampled flag. When it is missing or
    /// malformed, a new trace starts and `sample_ratio` decides.
    pub fn start_request(
        &self,
        incoming: Option<&HeaderValue>,
        name: impl Into<Cow<'static, str>>,
    ) -> RequestTrace {
        let Some(inner) = &self.inner else {
            return RequestTrace::off();
        };
        let parent = incoming.and_then(TraceContext::parse);
        let (trace_id, sampled) = match &parent {
            Some(p) => (p.trace_id, p.is_sampled()),
            None => {
                let id = new_trace_id();
                (id, inner.samples(&id))
            }
        };
        let ctx = TraceContext {
            trace_id,
            span_id: new_span_id(),
            flags: u8::from(sampled),
        };
        if !sampled {
            return RequestTrace::unsampled(ctx);
        }
        RequestTrace::recording(
            Arc::clone(&inner.queue),
            ctx,
            parent.map(|p| p.span_id),
            name.into(),
        )
    }

    /// The exporter's counts. All zero for a disabled tracer.
    pub fn stats(&self) -> Stats {
        let Some(inner) = &self.inner else {
            return Stats::default();
        };
        let c = &inner.queue.counters;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            exported: n(&c.exported),
            dropped_queue_full: n(&c.dropped_queue_full),
            dropped_export_failed: n(&c.dropped_export_failed),
            dropped_shutdown: n(&c.dropped_shutdown),
            export_failures: n(&c.export_failures),
            queued: inner.queue.len() as u64,
        }
    }

    /// Appends the exporter's metrics in the Prometheus text format, with
    /// `# HELP` and `# TYPE` lines. A disabled tracer appends nothing.
    pub fn render_metrics(&self, out: &mut String) {
        if self.inner.is_some() {
            metrics::render(&self.stats(), out);
        }
    }

    /// Exports everything queued now and waits for it, at most the
    /// configured `shutdown_timeout`. Returns whether it finished in time.
    /// For tests and for a clean stop; the exporter flushes by itself.
    pub async fn flush(&self) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        if inner.queue.is_closing() {
            return inner.queue.len() == 0;
        }
        let done = inner.queue.request_flush();
        matches!(
            tokio::time::timeout(inner.shutdown_timeout, done).await,
            Ok(Ok(()))
        )
    }

    /// Stops the exporter: spans finished from now on are dropped (and
    /// counted), what is queued is exported, and the call returns once that
    /// is done or `shutdown_timeout` has passed, whichever is first. What is
    /// left then is dropped and counted. Returns whether everything queued
    /// was handled in time. Calling it again does nothing.
    pub async fn shutdown(&self) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        inner.queue.close();
        let task = inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut task) = task else {
            return true;
        };
        match tokio::time::timeout(inner.shutdown_timeout, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                let _ = task.await;
                inner.queue.abandon();
                tracing::warn!(
                    endpoint = %inner.endpoint,
                    "trace export did not finish within the shutdown timeout; queued spans are dropped"
                );
                false
            }
        }
    }
}

impl Inner {
    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        if self.always {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        u64::from_be_bytes(low) < self.threshold
    }
}

/// The threshold for `ratio` over the low 64 bits of a trace id, and
/// whether every trace is sampled.
fn sampling_threshold(ratio: f64) -> (u64, bool) {
    if ratio >= 1.0 {
        (u64::MAX, true)
    } else if ratio <= 0.0 {
        (0, false)
    } else {
        // `as` saturates; ratio < 1 keeps it below 2^64.
        ((ratio * 18_446_744_073_709_551_616.0) as u64, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = |e: &str| parse_endpoint(e).map(|u| u.to_string());
        assert_eq!(
            ok("http://collector:4318/v1/traces").ok().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            ok("http://collector:4318").ok().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            ok("https://otlp.example.com/").ok().as_deref(),
            Some("https://otlp.example.com/v1/traces")
        );
        assert_eq!(
            ok("http://c/custom/path").ok().as_deref(),
            Some("http://c/custom/path")
        );
        for bad in ["collector:4318", "grpc://c:4317", "", "http://"] {
            assert!(
                matches!(parse_endpoint(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_are_checked() {
        let base = TracingSettings::default();
        assert!(base.validate().is_ok());
        let cases: [(&str, TracingSettings); 6] = [
            (
                "sample_ratio",
                TracingSettings {
                    sample_ratio: 1.5,
                    ..base.clone()
                },
            ),
            (
                "sample_ratio",
                TracingSettings {
                    sample_ratio: f64::NAN,
                    ..base.clone()
                },
            ),
            (
                "max_queue",
                TracingSettings {
                    max_queue: 0,
                    ..base.clone()
                },
            ),
            (
                "batch_size",
                TracingSettings {
                    batch_size: 4096,
                    ..base.clone()
                },
            ),
            (
                "flush_interval",
                TracingSettings {
                    flush_interval: Duration::ZERO,
                    ..base.clone()
                },
            ),
            (
                "service_name",
                TracingSettings {
                    service_name: String::new(),
                    ..base.clone()
                },
            ),
        ];
        for (field, settings) in cases {
            match settings.validate() {
                Err(Error::InvalidSetting { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn ratio_thresholds() {
        assert_eq!(sampling_threshold(1.0), (u64::MAX, true));
        assert_eq!(sampling_threshold(0.0), (0, false));
        let (half, always) = sampling_threshold(0.5);
        assert!(!always);
        assert_eq!(half, 1 << 63);
    }

    #[test]
    fn a_ratio_samples_about_its_share() {
        let (threshold, always) = sampling_threshold(0.25);
        let inner = Inner {
            queue: Arc::new(Queue::new(1, 1)),
            threshold,
            always,
            endpoint: Uri::from_static("http://x/"),
            shutdown_timeout: Duration::from_secs(1),
            task: Mutex::new(None),
        };
        let sampled = (0..20_000)
            .filter(|_| inner.samples(&new_trace_id()))
            .count();
        assert!((4_000..6_000).contains(&sampled), "{sampled}");
    }

    #[test]
    fn a_disabled_tracer_hands_out_inert_traces() {
        let tracer = Tracer::disabled();
        let incoming =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut trace = tracer.start_request(Some(&incoming), "request");
        assert!(!trace.is_recording());
        let up = trace.start_span("upstream", crate::SpanKind::Client);
        assert_eq!(up, crate::SpanHandle::NONE);
        assert_eq!(trace.traceparent_for_upstream(up), None);
        assert_eq!(trace.context(crate::SpanHandle::ROOT), None);
        trace.finish(200);
        let mut out = String::new();
        tracer.render_metrics(&mut out);
        assert!(out.is_empty());
        assert_eq!(tracer.stats(), Stats::default());
    }

    #[test]
    fn new_needs_a_runtime() {
        assert!(matches!(
            Tracer::new(TracingSettings::default()),
            Err(Error::NoRuntime)
        ));
    }
}
