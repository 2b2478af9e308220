//! Wires OTLP tracing into a node: a [`Tracer`] from the settings (disabled
//! without `TOLLGATE_OTLP_ENDPOINT`), and its counters on `/metrics`.

use anyhow::Context;
use tollgate_core::metrics::MetricsSource;
use tollgate_telemetry::{Tracer, TracingSettings};

use crate::ServeArgs;

/// The tracer these settings ask for. Must run inside the runtime that
/// outlives the proxy workers (the exporter task is spawned on it).
pub fn tracer(args: &ServeArgs) -> anyhow::Result<Tracer> {
    let Some(endpoint) = args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(Tracer::disabled());
    };
    let settings = TracingSettings {
        sample_ratio: args.trace_sample_ratio,
        ..TracingSettings::new(endpoint)
    };
    let tracer = Tracer::new(settings)
        .context("invalid TOLLGATE_OTLP_ENDPOINT or TOLLGATE_TRACE_SAMPLE_RATIO")?;
    tracing::info!(
        endpoint,
        ratio = args.trace_sample_ratio,
        "request traces go to OTLP"
    );
    Ok(tracer)
}

/// The tracer's export counters, for `/metrics`.
#[derive(Debug, Clone)]
pub struct TracerMetrics(pub Tracer);

impl MetricsSource for TracerMetrics {
    fn render(&self, out: &mut String) {
        if self.0.is_enabled() {
            self.0.render_metrics(out);
        }
    }
}
