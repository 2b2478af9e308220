//! Wires analytics into a node: the recorder the gateway counts requests
//! in, the roll-up thread behind it, the task that writes roll-up rows to
//! the store, and the retention clean-up.
//!
//! Rows carry a node's full state of a minute, so a write that fails is kept
//! and written again with the next batch (the later state of a row replaces
//! the earlier one); while the store is down, at most [`MAX_PENDING`] rows
//! wait, and the oldest beyond that are dropped and counted.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tollgate_analytics::pipeline::{self, EventsFileSettings, PipelineSettings};
use tollgate_analytics::{Batch, Recorder, Rollup, RollupKey};
use tollgate_core::metrics::{self as names, MetricsSource, family};
use tollgate_store::{RollupRow, Store};

use crate::ServeArgs;
use crate::cli::Switch;

/// Rows kept for a later write while the store cannot take them.
pub const MAX_PENDING: usize = 100_000;
/// How often old roll-ups are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The writer's counters, reported at `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    written: AtomicU64,
    failures: AtomicU64,
    dropped_rows: AtomicU64,
}

impl MetricsSource for WriterStats {
    fn render(&self, out: &mut String) {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            out,
            names::ANALYTICS_ROWS_WRITTEN,
            "counter",
            "Analytics roll-up rows written to the store.",
        );
        let _ = writeln!(
            out,
            "{} {}",
            names::ANALYTICS_ROWS_WRITTEN,
            n(&self.written)
        );
        family(
            out,
            names::ANALYTICS_WRITE_FAILURES,
            "counter",
            "Roll-up writes that failed (the rows are kept and written again).",
        );
        let _ = writeln!(
            out,
            "{} {}",
            names::ANALYTICS_WRITE_FAILURES,
            n(&self.failures)
        );
    }
}

/// A node's analytics.
#[derive(Debug, Clone)]
pub struct Analytics {
    pub recorder: Arc<Recorder>,
    pub writer: Arc<WriterStats>,
}

/// Starts analytics as the settings ask: with `TOLLGATE_ANALYTICS=off` only
/// the request metrics are kept.
pub fn start(
    args: &ServeArgs,
    store: &Store,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Analytics> {
    let writer = Arc::new(WriterStats::default());
    if args.analytics == Switch::Off {
        return Ok(Analytics {
            recorder: Recorder::metrics_only(),
            writer,
        });
    }
    let settings = PipelineSettings {
        queue: args.analytics_queue.max(1),
        flush_every: Duration::from_millis(args.analytics_flush_ms.max(10)),
        events_file: args
            .analytics_events_file
            .as_ref()
            .map(|path| EventsFileSettings {
                path: path.clone(),
                max_bytes: args.analytics_events_max_mb.max(1) * 1024 * 1024,
                keep: args.analytics_events_keep,
            }),
    };
    let (recorder, batches) = pipeline::start(settings).map_err(|e| {
        anyhow::anyhow!("cannot start analytics: {e} (check TOLLGATE_ANALYTICS_EVENTS_FILE)")
    })?;
    let node = format!(
        "node_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    // Not one of the node's tasks: it runs until the roll-up thread is gone,
    // so that the final flush at shutdown (see `Running::wait`) is written.
    tokio::spawn(write_rollups(store.clone(), node, batches, writer.clone()));
    if args.analytics_retention_days > 0 {
        tasks.push(tokio::spawn(prune(
            store.clone(),
            i64::from(args.analytics_retention_days) * 86_400_000,
            shutdown.clone(),
        )));
    }
    Ok(Analytics { recorder, writer })
}

fn row(node: &str, key: &RollupKey, r: &Rollup) -> RollupRow {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    RollupRow {
        node: node.to_owned(),
        bucket_start: key.minute_ms,
        org_id: key.org.to_string(),
        app_id: key.app.to_string(),
        route: key.route.to_string(),
        status_class: i16::from(key.class),
        requests: n(r.requests),
        errors: n(r.errors),
        bytes_in: n(r.bytes_in),
        bytes_out: n(r.bytes_out),
        latency: r.latency.encode(),
        upstream_latency: r.upstream.encode(),
    }
}

/// Writes batches as they come. Ends when the roll-up thread is gone.
async fn write_rollups(
    store: Store,
    node: String,
    mut batches: UnboundedReceiver<Batch>,
    stats: Arc<WriterStats>,
) {
    let mut pending: BTreeMap<RollupKey, Rollup> = BTreeMap::new();
    let mut failing = false;
    while let Some(batch) = batches.recv().await {
        for (k, r) in batch.rows {
            pending.insert(k, r);
        }
        while pending.len() > MAX_PENDING {
            pending.pop_first();
            stats.dropped_rows.fetch_add(1, Ordering::Relaxed);
        }
        if !pending.is_empty() {
            let rows: Vec<RollupRow> = pending.iter().map(|(k, r)| row(&node, k, r)).collect();
            match store.upsert_rollups(&rows).await {
                Ok(()) => {
                    stats
                        .written
                        .fetch_add(rows.len() as u64, Ordering::Relaxed);
                    pending.clear();
                    if failing {
                        failing = false;
                        tracing::info!("analytics roll-ups are written to the store again");
                    }
                }
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        tracing::error!(error = %e, rows = rows.len(), "cannot write analytics roll-ups; keeping them for the next write");
                    }
                }
            }
        }
        if let Some(done) = batch.done {
            let _ = done.send(());
        }
    }
}

async fn prune(store: Store, keep_ms: i64, shutdown: CancellationToken) {
    loop {
        let before = chrono::Utc::now().timestamp_millis() - keep_ms;
        match store.prune_rollups(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "old analytics roll-ups pruned"),
            Err(e) => tracing::warn!(error = %e, "cannot prune analytics roll-ups"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// `tollgate analytics`: the admin API's query, read from the store.
pub async fn command(args: crate::cli::AnalyticsArgs) -> Result<String, tollgate_admin::ApiError> {
    use tollgate_admin::analytics::{SeriesQuery, query};
    let store = crate::open_store(&args.store)
        .await
        .map_err(|e| tollgate_admin::ApiError::Internal(format!("{e:#}")))?;
    let org = match &args.org {
        Some(o) => Some(o.parse().map_err(|e: tollgate_core::ids::IdError| {
            tollgate_admin::ApiError::Invalid(vec![tollgate_core::problem::FieldError {
                path: "org".into(),
                reason: e.to_string(),
            }])
        })?),
        None => None,
    };
    let q = SeriesQuery {
        from: args.from,
        to: args.to,
        bucket: Some(args.bucket),
        org: None,
        app: args.app,
        route: args.route,
        status: args.status,
    };
    let series = query(&store, &q, org.as_ref()).await?;
    Ok(match args.format {
        crate::cli::Output::Json => {
            let mut s = serde_json::to_string_pretty(&series)
                .map_err(|e| tollgate_admin::ApiError::Internal(e.to_string()))?;
            s.push('\n');
            s
        }
        crate::cli::Output::Table => table(&series),
    })
}

fn table(series: &tollgate_admin::analytics::SeriesOut) -> String {
    use tollgate_admin::analytics::Figures;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "start",
        "requests",
        "errors",
        "err%",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "bytes in",
        "bytes out"
    );
    let mut line = |label: &str, f: &Figures| {
        let p = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let l = f.latency_ms.as_ref();
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>7} {:>7.2} {:>9} {:>9} {:>9} {:>12} {:>12}",
            label,
            f.requests,
            f.errors,
            f.error_rate * 100.0,
            p(l.map(|l| l.p50)),
            p(l.map(|l| l.p95)),
            p(l.map(|l| l.p99)),
            f.bytes_in,
            f.bytes_out
        );
    };
    for b in &series.buckets {
        line(&b.start.format("%Y-%m-%d %H:%M").to_string(), &b.figures);
    }
    line("total", &series.totals);
    out
}
