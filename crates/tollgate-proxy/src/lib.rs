//! Tollgate's data plane.
//!
//! A [`Gateway`] holds the current compiled [`Snapshot`] (router, per-route
//! policy chains, upstream pools) behind an atomic pointer. The control plane
//! calls [`Gateway::install`] with a new configuration; requests already in
//! flight finish on the snapshot they started with, new ones see the new one.
//! The hot path never touches the store.
//!
//! [`server::serve`] runs a listener (HTTP/1.1, h2c, and HTTP/2 over TLS via
//! rustls) with a connection cap, header and body deadlines, and graceful
//! shutdown. [`service`] is the proxy itself: routing, the policy phases,
//! forwarding-header hygiene, load balancing, retries and health. Every
//! request is counted in the gateway's [`tollgate_analytics::Recorder`]
//! when its response ends; the gateway reports upstream health and its
//! configuration revision as metrics too.

pub mod body;
pub mod client;
mod coarse_timer;
pub mod error;
mod framing;
pub mod h1;
pub mod headers;
mod health;
mod metrics;
pub mod pool;
pub mod router;
pub mod server;
pub mod service;
pub mod settings;
pub mod snapshot;
pub mod upstream;

pub use error::ProxyError;
pub use server::{Listener, serve};
pub use settings::ProxySettings;
pub use snapshot::{Gateway, Snapshot};
