//! The compact record of one request.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Method};
use serde::Serialize;
use tollgate_core::ErrorCode;
use tollgate_identity::authn::Caller;
use tollgate_identity::keyring::KeyEntry;

/// Who made a request, as analytics keeps it: the key itself (shared, no
/// copy), or the organization and app a token named.
#[derive(Debug, Clone, Default)]
pub enum Who {
    #[default]
    Anonymous,
    Key(Arc<KeyEntry>),
    Token {
        org: Option<String>,
        app: Option<String>,
    },
}

impl Who {
    pub fn org(&self) -> Option<&str> {
        match self {
            Who::Anonymous => None,
            Who::Key(k) => Some(k.org.as_str()),
            Who::Token { org, .. } => org.as_deref(),
        }
    }

    pub fn app(&self) -> Option<&str> {
        match self {
            Who::Anonymous => None,
            Who::Key(k) => Some(k.app.as_str()),
            Who::Token { app, .. } => app.as_deref(),
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Who::Key(k) => Some(k.id.as_str()),
            _ => None,
        }
    }
}

impl From<Option<Caller>> for Who {
    fn from(c: Option<Caller>) -> Who {
        match c {
            None => Who::Anonymous,
            Some(Caller::Key(k)) => Who::Key(k),
            Some(Caller::Token(t)) => Who::Token {
                org: t.org,
                app: t.app,
            },
        }
    }
}

/// One finished request, as the gateway saw it. Building one allocates
/// nothing: names are shared, a key caller is the key ring's entry itself.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the request head arrived, unix milliseconds.
    pub at_ms: i64,
    /// The matched route; `None` when no route matched (404, 405, 400, the
    /// OAuth2 endpoints).
    pub route: Option<Arc<str>>,
    /// The matched route's service.
    pub service: Option<Arc<str>>,
    /// Who called, when a credential was verified.
    pub who: Who,
    pub method: Method,
    pub status: u16,
    /// The gateway's error code when it answered by itself.
    pub error: Option<ErrorCode>,
    /// Time to the upstream's response head, in microseconds.
    pub upstream_us: Option<u64>,
    /// Time from the request head to the end of the response, in microseconds.
    pub total_us: u64,
    /// Request body bytes the gateway read from the client.
    pub bytes_in: u64,
    /// Response body bytes the gateway sent to the client.
    pub bytes_out: u64,
    pub client_ip: IpAddr,
    pub request_id: HeaderValue,
}

/// A status code's class: 1 to 5 for 1xx to 5xx, 0 for anything else.
pub fn status_class(status: u16) -> u8 {
    match status / 100 {
        c @ 1..=5 => c as u8,
        _ => 0,
    }
}

/// The label of a status class (`2xx`, ...; `other` for 0).
pub fn class_label(class: u8) -> &'static str {
    match class {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// Reads a class label (`5xx`, `5XX` or `5`).
pub fn parse_class(s: &str) -> Option<u8> {
    let s = s.trim();
    let digit = s
        .strip_suffix("xx")
        .or_else(|| s.strip_suffix("XX"))
        .unwrap_or(s);
    match digit {
        "1" => Some(1),
        "2" => Some(2),
        "3" => Some(3),
        "4" => Some(4),
        "5" => Some(5),
        _ => None,
    }
}

/// Whether a response counts as an error in analytics: a 5xx, whether the
/// upstream or the gateway produced it. Client errors (4xx, including 429)
/// are reported by their class, not as errors.
pub fn is_error(status: u16) -> bool {
    status >= 500
}

/// The JSON-lines form of an event, as written to the raw event file.
#[derive(Debug, Serialize)]
pub struct EventRecord<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub org_id: Option<&'a str>,
    pub app_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub route: Option<&'a str>,
    pub service: Option<&'a str>,
    pub method: &'a str,
    pub status: u16,
    pub error: Option<&'static str>,
    pub upstream_latency_ms: Option<f64>,
    pub latency_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub client_ip: String,
}

impl Event {
    /// The record written to the raw event file.
    pub fn record(&self) -> EventRecord<'_> {
        EventRecord {
            time: chrono::DateTime::from_timestamp_millis(self.at_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            request_id: self.request_id.to_str().unwrap_or(""),
            org_id: self.who.org(),
            app_id: self.who.app(),
            key_id: self.who.key_id(),
            route: self.route.as_deref(),
            service: self.service.as_deref(),
            method: self.method.as_str(),
            status: self.status,
            error: self.error.map(ErrorCode::as_str),
            upstream_latency_ms: self.upstream_us.map(|us| us as f64 / 1000.0),
            latency_ms: self.total_us as f64 / 1000.0,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            client_ip: self.client_ip.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(status_class(204), 2);
        assert_eq!(status_class(599), 5);
        assert_eq!(status_class(99), 0);
        assert_eq!(status_class(600), 0);
        assert_eq!(parse_class("5xx"), Some(5));
        assert_eq!(parse_class("4XX"), Some(4));
        assert_eq!(parse_class("2"), Some(2));
        assert_eq!(parse_class("7xx"), None);
        assert_eq!(class_label(0), "other");
    }
}
