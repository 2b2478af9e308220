//! The typed per-request context and what a policy can answer with.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tollgate_core::problem::{ErrorCode, PROBLEM_JSON, Problem};

/// When a request arrived, read from the clocks once: the monotonic instant
/// for its latencies, the wall clock for its events, expiry checks, rate
/// limits and id. Each clock read costs 20–30 ns on a virtual machine, and
/// the phases of one request used to read them a dozen times.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The monotonic clock.
    pub at: Instant,
    /// The wall clock, microseconds since the Unix epoch.
    pub unix_us: i64,
}

impl Arrival {
    /// Now.
    pub fn now() -> Arrival {
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Arrival {
            at: Instant::now(),
            unix_us,
        }
    }

    /// An arrival at the monotonic instant `at`, when the wall clock read
    /// `unix_us` microseconds since the Unix epoch (a caller that can tell
    /// the wall clock without reading it again).
    pub fn new(at: Instant, unix_us: i64) -> Arrival {
        Arrival { at, unix_us }
    }

    /// The wall clock in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> i64 {
        self.unix_us.div_euclid(1000)
    }
}

/// State carried through the phases of one request.
#[derive(Debug)]
pub struct RequestCtx {
    /// The request id, generated or propagated; also sent upstream and back.
    pub request_id: HeaderValue,
    /// The TCP peer.
    pub peer_ip: IpAddr,
    /// The client: the peer, or the forwarded address when the peer is a trusted proxy.
    pub client_ip: IpAddr,
    /// The matched route's name.
    pub route: Arc<str>,
    /// The matched route's service name.
    pub service: Arc<str>,
    /// When the gateway received the request head.
    pub arrival: Arrival,
    /// Largest request body allowed, in bytes; the proxy enforces it while streaming.
    pub body_limit: Option<u64>,
    /// The CORS origin to echo on the response, set by the CORS policy.
    pub cors_origin: Option<HeaderValue>,
    /// Who is calling, once the `auth` policy verified a credential.
    pub caller: Option<tollgate_identity::authn::Caller>,
    /// Concurrency slots this request holds; given back when the context
    /// is dropped (once the response head has been sent).
    pub permit: Option<tollgate_limits::Permit>,
    /// The fields the gateway adds to the request going upstream, kept
    /// encoded beside the request's map (see [`crate::Policy::upstream_headers_as_map`]).
    pub upstream_fields: tollgate_core::fields::UpstreamFields,
    /// The fields the gateway sets on the response (the `rate_limit`
    /// policy's `RateLimit-Policy` and `RateLimit`), whatever the response
    /// turns out to be. Each replaces the upstream's fields of its name.
    /// They stay encoded beside the response's map unless a policy needs
    /// the map (see [`crate::Policy::response_headers_as_map`]).
    pub response_fields: tollgate_core::fields::GatewayFields,
    /// Free-form typed state for policies that need more.
    pub extensions: http::Extensions,
}

impl RequestCtx {
    /// A context for a request arriving now.
    pub fn new(
        request_id: HeaderValue,
        peer_ip: IpAddr,
        client_ip: IpAddr,
        route: Arc<str>,
        service: Arc<str>,
    ) -> Self {
        RequestCtx::arrived(
            Arrival::now(),
            request_id,
            peer_ip,
            client_ip,
            route,
            service,
        )
    }

    /// A context for a request that arrived at `arrival`.
    pub fn arrived(
        arrival: Arrival,
        request_id: HeaderValue,
        peer_ip: IpAddr,
        client_ip: IpAddr,
        route: Arc<str>,
        service: Arc<str>,
    ) -> Self {
        RequestCtx {
            request_id,
            peer_ip,
            client_ip,
            route,
            service,
            arrival,
            body_limit: None,
            cors_origin: None,
            caller: None,
            permit: None,
            upstream_fields: Default::default(),
            response_fields: Default::default(),
            extensions: http::Extensions::new(),
        }
    }

    /// A problem document for this request.
    pub fn problem(&self, code: ErrorCode, detail: impl Into<String>) -> Problem {
        let p = Problem::new(code).detail(detail);
        match self.request_id.to_str() {
            Ok(id) => p.request_id(id),
            Err(_) => p,
        }
    }

    /// Narrows the body limit; the smallest limit wins.
    pub fn limit_body(&mut self, max: u64) {
        self.body_limit = Some(self.body_limit.map_or(max, |cur| cur.min(max)));
    }
}

/// The outcome of an access hook.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next policy.
    Continue,
    /// Answer the client with this and skip the rest of the chain.
    Reply(Reply),
}

/// A response the gateway produces itself.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The stable error code, when the reply is a problem.
    pub code: Option<ErrorCode>,
}

impl Reply {
    /// An RFC 9457 problem response.
    pub fn problem(problem: &Problem) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        Reply {
            status: problem.status_code(),
            headers,
            body: Bytes::from(problem.to_json()),
            code: Some(problem.code),
        }
    }

    /// A response without a body.
    pub fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            code: None,
        }
    }
}

/// What the log phase learns about a finished exchange.
#[derive(Debug, Clone)]
pub struct LogSummary {
    pub status: StatusCode,
    /// The stable error code when the gateway answered with a problem.
    pub error: Option<ErrorCode>,
    /// Time spent waiting for the upstream's response head, when there was one.
    pub upstream_latency: Option<std::time::Duration>,
    /// Upstream target that answered, as `host:port`.
    pub target: Option<Arc<str>>,
}
