//! The exporter: a bounded span queue shared by every worker thread, and
//! one background task that batches the queue and POSTs OTLP/JSON.
//!
//! The request path only locks the queue for a push; it wakes the task
//! when a push fills a batch, and otherwise the task wakes on its flush
//! interval, so a busy gateway does not pay a cross-thread wake-up per
//! request.

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::sync::{Notify, oneshot};

use crate::encode;
use crate::trace::{AttributeValue, SpanData};
use crate::{Error, TracingSettings};

/// The longest wait between two attempts at one batch, whatever the
/// backoff or the collector's `Retry-After` says.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The largest collector response body read (and discarded).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// What the exporter counts; read by `Tracer::stats` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub dropped_shutdown: AtomicU64,
    pub export_failures: AtomicU64,
}

/// The spans waiting for export, shared by the request path (push) and the
/// export task (take).
pub(crate) struct Queue {
    spans: Mutex<VecDeque<SpanData>>,
    max_spans: usize,
    batch_size: usize,
    /// Wakes the task: a batch is full, a flush was asked for, or the
    /// tracer is closing.
    wake: Notify,
    closing: AtomicBool,
    /// Spans taken from the queue and not yet exported or given up.
    in_flight: AtomicUsize,
    flush_waiters: Mutex<Vec<oneshot::Sender<()>>>,
    pub counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    pub fn new(max_spans: usize, batch_size: usize) -> Queue {
        Queue {
            spans: Mutex::new(VecDeque::new()),
            max_spans,
            batch_size,
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            flush_waiters: Mutex::new(Vec::new()),
            counters: Counters::default(),
        }
    }

    /// Queues one trace's spans, all or none. Never blocks beyond the
    /// queue's lock; a trace that does not fit is dropped and counted.
    pub fn push(&self, spans: Vec<SpanData>) {
        let n = spans.len() as u64;
        if self.closing.load(Ordering::Acquire) {
            self.counters
                .dropped_shutdown
                .fetch_add(n, Ordering::Relaxed);
            return;
        }
        let filled_a_batch = {
            let mut q = lock(&self.spans);
            if q.len() + spans.len() > self.max_spans {
                None
            } else {
                let before = q.len();
                q.extend(spans);
                Some(before < self.batch_size && q.len() >= self.batch_size)
            }
        };
        match filled_a_batch {
            None => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(n, Ordering::Relaxed);
            }
            Some(true) => self.wake.notify_one(),
            Some(false) => {}
        }
    }

    /// Up to `batch_size` spans from the front, counted as in flight.
    fn take_batch(&self) -> Vec<SpanData> {
        let mut q = lock(&self.spans);
        let n = q.len().min(self.batch_size);
        self.in_flight.fetch_add(n, Ordering::AcqRel);
        q.drain(..n).collect()
    }

    /// Spans waiting in the queue.
    pub fn len(&self) -> usize {
        lock(&self.spans).len()
    }

    /// Asks the task to stop after exporting what is queued.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// A receiver answered once everything queued now has been handled.
    pub fn request_flush(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.flush_waiters).push(tx);
        self.wake.notify_one();
        rx
    }

    /// After the task was stopped before finishing: counts what it left.
    pub fn abandon(&self) {
        let left = {
            let mut q = lock(&self.spans);
            let n = q.len();
            q.clear();
            n
        } + self.in_flight.swap(0, Ordering::AcqRel);
        self.counters
            .dropped_shutdown
            .fetch_add(left as u64, Ordering::Relaxed);
    }
}

/// Why one export attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    #[error("the request to the collector failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the collector answered {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("reading the collector's answer failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("building the export request failed")]
    Build(#[source] http::Error),
}

impl ExportError {
    /// Whether sending the same batch again may succeed. The OTLP/HTTP
    /// specification lists 429, 502, 503 and 504 as the retryable answers
    /// and says other 4xx and 5xx answers must not be retried; connection
    /// failures and timeouts are retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Request(_) | ExportError::Timeout(_) | ExportError::Body(_) => true,
            ExportError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ExportError::Build(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `Retry-After` in its delay-seconds form; the HTTP-date form is ignored
/// (the exporter's own backoff applies).
pub(crate) fn parse_retry_after(v: &http::HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    s.parse::<u64>().ok().map(Duration::from_secs)
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The background exporter: owns the HTTP client and the export policy.
pub(crate) struct Exporter {
    queue: Arc<Queue>,
    client: HttpsClient,
    endpoint: Uri,
    resource: Vec<(String, AttributeValue)>,
    flush_interval: Duration,
    export_timeout: Duration,
    max_retries: u32,
    retry_backoff: Duration,
    /// Whether the last batch failed: failures are logged once per incident.
    failing: bool,
}

impl Exporter {
    pub fn new(
        queue: Arc<Queue>,
        endpoint: Uri,
        settings: &TracingSettings,
    ) -> Result<Exporter, Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.export_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(Error::Tls)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        let mut resource: Vec<(String, AttributeValue)> = vec![
            (
                "service.name".to_owned(),
                AttributeValue::from(settings.service_name.clone()),
            ),
            (
                "telemetry.sdk.name".to_owned(),
                AttributeValue::String("tollgate".into()),
            ),
            (
                "telemetry.sdk.language".to_owned(),
                AttributeValue::String("rust".into()),
            ),
            (
                "telemetry.sdk.version".to_owned(),
                AttributeValue::String(env!("CARGO_PKG_VERSION").into()),
            ),
        ];
        for (k, v) in &settings.resource_attributes {
            if let Some(slot) = resource.iter_mut().find(|(key, _)| key == k) {
                slot.1 = AttributeValue::from(v.clone());
            } else {
                resource.push((k.clone(), AttributeValue::from(v.clone())));
            }
        }
        Ok(Exporter {
            queue,
            client,
            endpoint,
            resource,
            flush_interval: settings.flush_interval,
            export_timeout: settings.export_timeout,
            max_retries: settings.max_retries,
            retry_backoff: settings.retry_backoff,
            failing: false,
        })
    }

    /// The task: waits for a full batch, a flush request, closing or the
    /// flush interval, then exports everything queued, batch by batch.
    /// Returns once the tracer is closing and the queue is empty.
    pub async fn run(mut self) {
        loop {
            let queue = Arc::clone(&self.queue);
            if !queue.is_closing() && queue.len() < queue.batch_size {
                tokio::select! {
                    _ = queue.wake.notified() => {}
                    _ = tokio::time::sleep(self.flush_interval) => {}
                }
            }
            let waiters = std::mem::take(&mut *lock(&queue.flush_waiters));
            loop {
                let batch = queue.take_batch();
                if batch.is_empty() {
                    break;
                }
                self.export(batch).await;
            }
            for w in waiters {
                let _ = w.send(());
            }
            if queue.is_closing() && queue.len() == 0 {
                // Answer flushes asked for while closing.
                for w in std::mem::take(&mut *lock(&queue.flush_waiters)) {
                    let _ = w.send(());
                }
                return;
            }
        }
    }

    /// Exports one batch, retrying what is retryable with backoff, and
    /// counts the outcome.
    async fn export(&mut self, batch: Vec<SpanData>) {
        let n = batch.len();
        let body = Bytes::from(encode::export_request(&self.resource, &batch));
        drop(batch);
        let mut backoff = self.retry_backoff;
        let mut attempt = 0;
        let outcome = loop {
            let result =
                match tokio::time::timeout(self.export_timeout, self.post(body.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(ExportError::Timeout(self.export_timeout)),
                };
            match result {
                Ok(()) => break Ok(()),
                Err(e) if e.is_retryable() && attempt < self.max_retries => {
                    attempt += 1;
                    let wait = e.retry_after().unwrap_or_else(|| jitter(backoff));
                    tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
                    backoff = backoff.saturating_mul(2).min(MAX_RETRY_WAIT);
                }
                Err(e) => break Err(e),
            }
        };
        let c = &self.queue.counters;
        match outcome {
            Ok(()) => {
                c.exported.fetch_add(n as u64, Ordering::Relaxed);
                if self.failing {
                    self.failing = false;
                    tracing::info!(endpoint = %self.endpoint, "trace export recovered");
                }
            }
            Err(e) => {
                c.export_failures.fetch_add(1, Ordering::Relaxed);
                c.dropped_export_failed
                    .fetch_add(n as u64, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        error = %e,
                        cause = e.source().map(|s| s.to_string()),
                        attempts = attempt + 1,
                        spans = n,
                        "trace export failed; spans are dropped, and further failures are not \
                         logged until an export succeeds"
                    );
                }
            }
        }
        self.queue.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    async fn post(&self, body: Bytes) -> Result<(), ExportError> {
        let request = Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(ExportError::Build)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(ExportError::Request)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(parse_retry_after);
        // Read the answer so the connection can be reused.
        Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(ExportError::Body)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(ExportError::Status {
                status: status.as_u16(),
                retry_after,
            })
        }
    }
}

/// `base` scaled by a random factor in [0.5, 1.0), so a fleet of gateways
/// does not retry in step.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.5..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_answers_follow_the_otlp_specification() {
        let status = |status| ExportError::Status {
            status,
            retry_after: None,
        };
        for s in [429, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 404, 413, 500, 501] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(ExportError::Timeout(Duration::from_secs(1)).is_retryable());
    }

    #[test]
    fn retry_after_seconds() {
        let v = |s| http::HeaderValue::from_static(s);
        assert_eq!(parse_retry_after(&v("3")), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(&v(" 0 ")), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&v("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j < Duration::from_millis(100));
        }
    }

    fn span(n: u8) -> SpanData {
        SpanData {
            trace_id: [1; 16],
            span_id: [n; 8],
            parent_span_id: None,
            name: "s".into(),
            kind: crate::SpanKind::Server,
            start_unix_nano: 1,
            end_unix_nano: 2,
            attributes: Vec::new(),
            status: crate::StatusCode::Unset,
            status_message: None,
        }
    }

    #[test]
    fn a_full_queue_drops_whole_traces_and_counts_them() {
        let q = Queue::new(5, 2);
        q.push(vec![span(1), span(2)]);
        q.push(vec![span(3), span(4)]);
        q.push(vec![span(5), span(6)]);
        assert_eq!(q.len(), 4);
        assert_eq!(q.counters.dropped_queue_full.load(Ordering::Relaxed), 2);
        q.push(vec![span(7)]);
        assert_eq!(q.len(), 5);
        let batch = q.take_batch();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].span_id, [1; 8]);
        assert_eq!(q.in_flight.load(Ordering::Relaxed), 2);
        q.abandon();
        assert_eq!(q.len(), 0);
        assert_eq!(q.counters.dropped_shutdown.load(Ordering::Relaxed), 5);
        q.close();
        q.push(vec![span(8)]);
        assert_eq!(q.counters.dropped_shutdown.load(Ordering::Relaxed), 6);
    }
}
