//! Prometheus metrics: the one list of metric names, and the trait every
//! component that reports metrics implements. `GET /metrics` on the admin
//! listener concatenates what each [`MetricsSource`] renders, in the text
//! exposition format 0.0.4. Tests assert on these names, never on log text.

use std::fmt::Write;

/// A component that reports metrics.
pub trait MetricsSource: Send + Sync + 'static {
    /// Appends this component's metrics, each family with its `# HELP` and
    /// `# TYPE` lines.
    fn render(&self, out: &mut String);
}

/// Requests the gateway answered, by route and status class (counter).
pub const HTTP_REQUESTS: &str = "tollgate_http_requests_total";
/// Time from the request head to the end of the response, by route and
/// status class (histogram, seconds).
pub const HTTP_DURATION: &str = "tollgate_http_request_duration_seconds";
/// Time waiting for the upstream's response head, by route (histogram, seconds).
pub const UPSTREAM_DURATION: &str = "tollgate_upstream_duration_seconds";
/// Whether an upstream target takes traffic (gauge, 1 or 0), by service and target.
pub const UPSTREAM_HEALTHY: &str = "tollgate_upstream_target_healthy";
/// Requests in flight at an upstream target (gauge).
pub const UPSTREAM_IN_FLIGHT: &str = "tollgate_upstream_target_in_flight";
/// The configuration revision this node serves (gauge).
pub const CONFIG_REVISION: &str = "tollgate_config_revision";
/// Analytics events queued for the roll-up (counter).
pub const ANALYTICS_EVENTS: &str = "tollgate_analytics_events_total";
/// Analytics events dropped because the queue was full (counter).
pub const ANALYTICS_DROPPED: &str = "tollgate_analytics_events_dropped_total";
/// Roll-up rows written to the store (counter).
pub const ANALYTICS_ROWS_WRITTEN: &str = "tollgate_analytics_rollup_rows_written_total";
/// Roll-up writes the store refused or could not take (counter).
pub const ANALYTICS_WRITE_FAILURES: &str = "tollgate_analytics_rollup_write_failures_total";
/// Admin writes whose audit entry could not be stored (counter).
pub const AUDIT_WRITE_FAILURES: &str = "tollgate_audit_write_failures_total";
/// Rate-limit decisions by outcome (counter).
pub const RATELIMIT_DECISIONS: &str = "tollgate_ratelimit_decisions_total";
/// Decisions the rate-limit backend could not make (counter).
pub const RATELIMIT_BACKEND_ERRORS: &str = "tollgate_ratelimit_backend_errors_total";
/// Requests let through or refused because the backend was down (counter).
pub const RATELIMIT_BACKEND_FAILURES: &str = "tollgate_ratelimit_backend_failures_total";
/// Whether the rate-limit backend answered its last decision (gauge).
pub const RATELIMIT_BACKEND_UP: &str = "tollgate_ratelimit_backend_up";

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends `value` as a label value, escaped as the exposition format
/// requires (backslash, double quote and line feed).
pub fn label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        label_value(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }
}
