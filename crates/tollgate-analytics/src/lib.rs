//! Tollgate's analytics: every proxied request becomes a compact [`Event`].
//!
//! - On the request path, [`Recorder::record`] counts the request in the
//!   Prometheus metrics (per route and status class) and offers the event
//!   to a bounded queue; a full queue drops it and counts the drop, so a
//!   request never waits on analytics.
//! - The roll-up thread ([`pipeline`]) aggregates events per minute per
//!   (organization, app, route, status class) in an [`Aggregator`], with
//!   latencies in mergeable [`Sketch`]es (DDSketch, 1% relative accuracy),
//!   optionally writes raw events to a rotating JSON-lines file, and hands
//!   changed rows to a writer (the binary writes them to the store).
//! - [`query`] merges stored rows into minute, hour or day buckets; merged
//!   sketches give percentiles as right as the minute rows'.
//!
//! This crate does no database I/O and knows nothing of HTTP servers.

mod event;
mod events_file;
pub mod pipeline;
pub mod query;
mod queue;
mod recorder;
pub mod rollup;
pub mod sketch;

pub use event::{Event, Who, class_label, is_error, parse_class, status_class};
pub use pipeline::{Batch, EventsFileSettings, PipelineSettings};
pub use recorder::{BUCKETS_SECONDS, EventQueue, Recorder, RouteStats};
pub use rollup::{Aggregator, Rollup, RollupKey};
pub use sketch::Sketch;
