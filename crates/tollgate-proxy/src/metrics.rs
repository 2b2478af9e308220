//! The gateway's own metrics: upstream targets' health and load, and the
//! configuration revision it serves. Request metrics come from its
//! [`tollgate_analytics::Recorder`], rendered beside these.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use tollgate_core::metrics::{self as names, MetricsSource, family, label_value};

use crate::snapshot::Gateway;
use crate::upstream::now_ms;

impl MetricsSource for Gateway {
    fn render(&self, out: &mut String) {
        let targets = self.registry().targets();
        let now = now_ms();
        let mut labels = String::new();
        let mut label = |service: &str, addr: &str| {
            labels.clear();
            labels.push_str("service=\"");
            label_value(&mut labels, service);
            labels.push_str("\",target=\"");
            label_value(&mut labels, addr);
            labels.push('"');
            labels.clone()
        };
        let rows: Vec<(String, bool, usize)> = targets
            .iter()
            .map(|(svc, t)| {
                (
                    label(svc, &t.addr),
                    t.healthy(now),
                    t.in_flight.load(Ordering::Relaxed),
                )
            })
            .collect();
        family(
            out,
            names::UPSTREAM_HEALTHY,
            "gauge",
            "Whether an upstream target takes traffic (active and passive health checks).",
        );
        for (l, healthy, _) in &rows {
            let _ = writeln!(
                out,
                "{}{{{l}}} {}",
                names::UPSTREAM_HEALTHY,
                u8::from(*healthy)
            );
        }
        family(
            out,
            names::UPSTREAM_IN_FLIGHT,
            "gauge",
            "Requests in flight at an upstream target.",
        );
        for (l, _, n) in &rows {
            let _ = writeln!(out, "{}{{{l}}} {n}", names::UPSTREAM_IN_FLIGHT);
        }
        family(
            out,
            names::CONFIG_REVISION,
            "gauge",
            "The configuration revision this node serves.",
        );
        let _ = writeln!(out, "{} {}", names::CONFIG_REVISION, self.revision());
        self.recorder().render(out);
    }
}
