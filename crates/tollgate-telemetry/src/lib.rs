//! Tollgate's opt-in OpenTelemetry traces, light enough for the request
//! path. A [`Tracer`] starts one [`RequestTrace`] per received request: a
//! SERVER span that continues a valid incoming W3C `traceparent`
//! ([`TraceContext`]) or starts a new trace, sampled parent-based by ratio,
//! with child spans for the policy phases and the upstream call, and the
//! `traceparent` to send upstream. Finished traces go to a bounded queue
//! that never blocks (a full queue drops and counts), and one background
//! task batches the queue and POSTs it as OTLP/HTTP JSON to a collector's
//! `/v1/traces`, with a timeout and bounded retries (decision 0008 explains
//! why this is not the OpenTelemetry SDK). [`Tracer::disabled`] is the
//! default and costs nothing. [`testing::Collector`] is an in-process OTLP
//! collector for tests.

mod context;
mod encode;
mod export;
pub mod testing;
mod trace;
mod tracer;

pub use context::{
    FLAG_SAMPLED, TRACEPARENT_LEN, TraceContext, new_span_id, new_trace_id, parse_traceparent,
};
pub use encode::SCOPE_NAME;
pub use export::MAX_RETRY_WAIT;
pub use trace::{
    AttributeValue, MAX_ATTRIBUTES_PER_SPAN, MAX_SPANS_PER_TRACE, RequestTrace, SpanHandle,
    SpanKind, StatusCode,
};
pub use tracer::{DEFAULT_ENDPOINT, Stats, Tracer, TracingSettings};

/// Why a tracer could not be started. All are configuration errors, found
/// at start-up; retrying with the same settings fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OTLP endpoint is not an absolute http(s) URL.
    #[error("the OTLP endpoint `{endpoint}` is invalid: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range.
    #[error("the tracing setting `{field}` is invalid: {reason}")]
    InvalidSetting {
        /// The [`TracingSettings`] field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// [`Tracer::new`] was called outside a tokio runtime.
    #[error("no tokio runtime to run the trace exporter on")]
    NoRuntime,
    /// The TLS client for `https` endpoints could not be built.
    #[error("setting up TLS for the OTLP exporter failed")]
    Tls(#[source] rustls::Error),
}

/// Attribute keys the gateway sets, in one place. The `http.*`, `url.*`,
/// `server.*`, `client.*` and `error.type` keys are the stable OpenTelemetry
/// HTTP semantic conventions; `tollgate.*` are the gateway's own.
pub mod attr {
    /// The request method (SERVER and CLIENT spans).
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// The path of the request (SERVER span), without the query.
    pub const URL_PATH: &str = "url.path";
    /// `http` or `https` (SERVER span).
    pub const URL_SCHEME: &str = "url.scheme";
    /// The matched route's path template (SERVER span).
    pub const HTTP_ROUTE: &str = "http.route";
    /// The response status (SERVER: to the client; CLIENT: from upstream).
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// Which attempt a CLIENT span is, from 1 for the first retry.
    pub const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";
    /// The upstream target's host (CLIENT span).
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The upstream target's port (CLIENT span).
    pub const SERVER_PORT: &str = "server.port";
    /// The client's address, after trusted proxies (SERVER span).
    pub const CLIENT_ADDRESS: &str = "client.address";
    /// `1.1` or `2` (SERVER span).
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    /// The kind of failure of a failed span: the status code as text, or
    /// a word such as `timeout` or `connect`.
    pub const ERROR_TYPE: &str = "error.type";
    /// The request id the gateway sent upstream (`X-Request-Id`).
    pub const TOLLGATE_REQUEST_ID: &str = "tollgate.request_id";
    /// The matched route's name.
    pub const TOLLGATE_ROUTE: &str = "tollgate.route";
    /// The service the route sends to.
    pub const TOLLGATE_SERVICE: &str = "tollgate.service";
    /// The policy that answered the request itself (a 401, a 429).
    pub const TOLLGATE_POLICY: &str = "tollgate.policy";
    /// `true` on a SERVER span whose request was dropped before it
    /// finished (the client went away).
    pub const TOLLGATE_CANCELLED: &str = "tollgate.cancelled";
}

/// Names of the child spans the proxy records, one per policy phase and
/// one for the upstream call.
pub mod span_name {
    /// The access phase (INTERNAL): auth, address rules, limits.
    pub const ACCESS: &str = "access";
    /// The upstream-request phase (INTERNAL): header and body transforms.
    pub const UPSTREAM_REQUEST: &str = "upstream_request";
    /// One attempt at the upstream (CLIENT), until its response head.
    pub const UPSTREAM: &str = "upstream";
    /// The response phase (INTERNAL).
    pub const RESPONSE: &str = "response";
    /// The log phase (INTERNAL).
    pub const LOG: &str = "log";
}

/// Metric names, in one place, and their rendering.
pub mod metrics {
    use std::fmt::Write;

    use crate::Stats;

    /// Counter: spans the collector accepted.
    pub const SPANS_EXPORTED: &str = "tollgate_trace_spans_exported_total";
    /// Counter: spans dropped, by `reason` (`queue_full`, `export_failed`,
    /// `shutdown`).
    pub const SPANS_DROPPED: &str = "tollgate_trace_spans_dropped_total";
    /// Counter: export batches that failed for good, after their retries.
    pub const EXPORT_FAILURES: &str = "tollgate_trace_export_failures_total";
    /// Gauge: spans waiting for export.
    pub const QUEUE_SPANS: &str = "tollgate_trace_queue_spans";

    pub(crate) fn render(s: &Stats, out: &mut String) {
        let _ = write!(
            out,
            "# HELP {e} Spans the OTLP collector accepted.\n# TYPE {e} counter\n{e} {}\n\
             # HELP {d} Spans dropped before export, by reason.\n# TYPE {d} counter\n\
             {d}{{reason=\"queue_full\"}} {}\n{d}{{reason=\"export_failed\"}} {}\n\
             {d}{{reason=\"shutdown\"}} {}\n\
             # HELP {f} Trace export batches that failed after their retries.\n# TYPE {f} counter\n{f} {}\n\
             # HELP {q} Spans waiting for export.\n# TYPE {q} gauge\n{q} {}\n",
            s.exported,
            s.dropped_queue_full,
            s.dropped_export_failed,
            s.dropped_shutdown,
            s.export_failures,
            s.queued,
            e = SPANS_EXPORTED,
            d = SPANS_DROPPED,
            f = EXPORT_FAILURES,
            q = QUEUE_SPANS,
        );
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn renders_every_metric_with_help_and_type() {
            let mut out = String::new();
            render(
                &Stats {
                    exported: 7,
                    dropped_queue_full: 1,
                    dropped_export_failed: 2,
                    dropped_shutdown: 3,
                    export_failures: 4,
                    queued: 5,
                },
                &mut out,
            );
            for line in [
                "# TYPE tollgate_trace_spans_exported_total counter",
                "tollgate_trace_spans_exported_total 7",
                "# TYPE tollgate_trace_spans_dropped_total counter",
                "tollgate_trace_spans_dropped_total{reason=\"queue_full\"} 1",
                "tollgate_trace_spans_dropped_total{reason=\"export_failed\"} 2",
                "tollgate_trace_spans_dropped_total{reason=\"shutdown\"} 3",
                "# TYPE tollgate_trace_export_failures_total counter",
                "tollgate_trace_export_failures_total 4",
                "# TYPE tollgate_trace_queue_spans gauge",
                "tollgate_trace_queue_spans 5",
            ] {
                assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
            }
            let helps = out.lines().filter(|l| l.starts_with("# HELP ")).count();
            assert_eq!(helps, 4);
        }
    }
}
