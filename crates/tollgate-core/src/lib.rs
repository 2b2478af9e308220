//! Tollgate's shared vocabulary. This crate sits at the bottom of the workspace:
//! typed, prefixed identifiers ([`ids`]), RFC 9457 problem details with stable
//! error codes ([`problem`]), human-friendly durations ([`duration`]) and the
//! declarative configuration model that the YAML files, the admin API and the
//! store all share ([`config`]). Nothing here does I/O except reading a config
//! file on request.

pub mod config;
pub mod duration;
pub mod fields;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod problem;
pub mod request_id;

pub use duration::Duration;
pub use problem::{ErrorCode, Problem};
