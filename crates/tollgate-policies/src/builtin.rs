//! The built-in policies, compiled from their configuration once per snapshot.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, request, response};
use tollgate_core::config::{
    CorsConfig, HeaderTransform, IpRestrictionConfig, PolicySpec, RequestSizeLimitConfig,
};
use tollgate_core::problem::ErrorCode;

use crate::{Flow, Policy, PolicyEnv, Reply, RequestCtx};

/// A compiled built-in policy. The enum gives the chain static dispatch.
#[derive(Debug)]
pub enum Builtin {
    IpRestriction(IpRestriction),
    Cors(Cors),
    Auth(crate::auth::Auth),
    RateLimit(crate::rate_limit::RateLimit),
    RequestSizeLimit(RequestSizeLimit),
    RequestTransformer(HeaderTransformer),
    ResponseTransformer(HeaderTransformer),
}

impl Builtin {
    /// Compiles a validated spec. Specs are validated when they enter the
    /// store, so values that would not compile are skipped rather than fatal.
    pub fn compile(spec: &PolicySpec, env: &PolicyEnv, at: &crate::Attachment) -> Builtin {
        match spec {
            PolicySpec::Auth(c) => Builtin::Auth(crate::auth::Auth::new(c, env.authn.clone())),
            PolicySpec::RateLimit(c) => Builtin::RateLimit(crate::rate_limit::RateLimit::new(
                c,
                at,
                env.limiter.clone(),
                env.catalog.clone(),
            )),
            PolicySpec::Cors(c) => Builtin::Cors(Cors::new(c)),
            PolicySpec::IpRestriction(c) => Builtin::IpRestriction(IpRestriction::new(c)),
            PolicySpec::RequestSizeLimit(c) => Builtin::RequestSizeLimit(RequestSizeLimit::new(c)),
            PolicySpec::RequestTransformer(t) => {
                Builtin::RequestTransformer(HeaderTransformer::new("request_transformer", t))
            }
            PolicySpec::ResponseTransformer(t) => {
                Builtin::ResponseTransformer(HeaderTransformer::new("response_transformer", t))
            }
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Builtin::IpRestriction($p) => $e,
            Builtin::Cors($p) => $e,
            Builtin::Auth($p) => $e,
            Builtin::RateLimit($p) => $e,
            Builtin::RequestSizeLimit($p) => $e,
            Builtin::RequestTransformer($p) => $e,
            Builtin::ResponseTransformer($p) => $e,
        }
    };
}

impl Policy for Builtin {
    fn name(&self) -> &'static str {
        dispatch!(self, p => p.name())
    }
    fn upstream_headers_as_map(&self) -> bool {
        dispatch!(self, p => p.upstream_headers_as_map())
    }
    fn response_headers_as_map(&self) -> bool {
        dispatch!(self, p => p.response_headers_as_map())
    }
    async fn access(&self, ctx: &mut RequestCtx, req: &mut request::Parts) -> Flow {
        dispatch!(self, p => p.access(ctx, req).await)
    }
    fn upstream_request(&self, ctx: &mut RequestCtx, req: &mut request::Parts) {
        dispatch!(self, p => p.upstream_request(ctx, req))
    }
    fn response(&self, ctx: &mut RequestCtx, res: &mut response::Parts) {
        dispatch!(self, p => p.response(ctx, res))
    }
    fn log(&self, ctx: &RequestCtx, summary: &crate::LogSummary) {
        dispatch!(self, p => p.log(ctx, summary))
    }
}

/// Allows or denies clients by address.
#[derive(Debug)]
pub struct IpRestriction {
    allow: Vec<ipnet::IpNet>,
    deny: Vec<ipnet::IpNet>,
}

impl IpRestriction {
    pub fn new(c: &IpRestrictionConfig) -> Self {
        IpRestriction {
            allow: c.allow.clone(),
            deny: c.deny.clone(),
        }
    }

    fn permits(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) compare as IPv4.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Policy for IpRestriction {
    fn name(&self) -> &'static str {
        "ip_restriction"
    }
    fn upstream_headers_as_map(&self) -> bool {
        false
    }
    fn response_headers_as_map(&self) -> bool {
        false
    }
    async fn access(&self, ctx: &mut RequestCtx, _req: &mut request::Parts) -> Flow {
        if self.permits(ctx.client_ip) {
            Flow::Continue
        } else {
            let p = ctx.problem(
                ErrorCode::IpForbidden,
                format!(
                    "requests from {} are not allowed on this route",
                    ctx.client_ip
                ),
            );
            Flow::Reply(Reply::problem(&p))
        }
    }
}

/// Cross-origin resource sharing per the Fetch standard.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: HeaderValue,
    allowed_methods: Vec<Method>,
    headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    preflight_continue: bool,
}

fn join(values: &[String]) -> Option<HeaderValue> {
    if values.is_empty() {
        None
    } else {
        HeaderValue::from_str(&values.join(", ")).ok()
    }
}

impl Cors {
    pub fn new(c: &CorsConfig) -> Self {
        Cors {
            any_origin: c.origins.iter().any(|o| o == "*"),
            origins: c
                .origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            methods: join(&c.methods).unwrap_or(HeaderValue::from_static("GET, HEAD, POST")),
            allowed_methods: c
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: join(&c.headers),
            exposed: join(&c.exposed_headers),
            credentials: c.credentials,
            max_age: c
                .max_age
                .and_then(|d| HeaderValue::from_str(&d.get().as_secs().to_string()).ok()),
            preflight_continue: c.preflight_continue,
        }
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }
}

impl Policy for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }
    fn upstream_headers_as_map(&self) -> bool {
        false
    }

    async fn access(&self, ctx: &mut RequestCtx, req: &mut request::Parts) -> Flow {
        let Some(origin) = req.headers.get(header::ORIGIN).cloned() else {
            return Flow::Continue;
        };
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !self.allowed(&origin) {
            if preflight && !self.preflight_continue {
                let p = ctx.problem(ErrorCode::CorsRejected, "this origin may not call this API");
                return Flow::Reply(Reply::problem(&p));
            }
            return Flow::Continue;
        }
        ctx.cors_origin = Some(self.allow_origin_value(&origin));
        if !preflight || self.preflight_continue {
            return Flow::Continue;
        }
        let asked = req
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        if !asked.is_some_and(|m| self.allowed_methods.contains(&m)) {
            let p = ctx.problem(
                ErrorCode::CorsRejected,
                "the requested method is not allowed cross-origin",
            );
            return Flow::Reply(Reply::problem(&p));
        }
        let mut reply = Reply::empty(StatusCode::NO_CONTENT);
        let h = &mut reply.headers;
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let req_headers = req
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        if let Some(v) = self.headers.clone().or(req_headers) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Flow::Reply(reply)
    }

    fn response(&self, ctx: &mut RequestCtx, res: &mut response::Parts) {
        let Some(origin) = ctx.cors_origin.clone() else {
            return;
        };
        let wildcard = origin.as_bytes() == b"*";
        res.headers
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if !wildcard {
            res.headers
                .append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            res.headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.exposed {
            res.headers
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

/// Refuses bodies over a size: by `Content-Length` at once, and while
/// streaming for chunked bodies (the proxy enforces `ctx.body_limit`).
#[derive(Debug)]
pub struct RequestSizeLimit {
    max: u64,
}

impl RequestSizeLimit {
    pub fn new(c: &RequestSizeLimitConfig) -> Self {
        RequestSizeLimit { max: c.max_bytes }
    }
}

impl Policy for RequestSizeLimit {
    fn name(&self) -> &'static str {
        "request_size_limit"
    }
    fn upstream_headers_as_map(&self) -> bool {
        false
    }
    fn response_headers_as_map(&self) -> bool {
        false
    }
    async fn access(&self, ctx: &mut RequestCtx, req: &mut request::Parts) -> Flow {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared.filter(|len| *len > self.max) {
            let p = ctx.problem(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the body is {len} bytes; this route accepts at most {}",
                    self.max
                ),
            );
            return Flow::Reply(Reply::problem(&p));
        }
        ctx.limit_body(self.max);
        Flow::Continue
    }
}

/// Header changes for the request sent upstream or the response sent back.
#[derive(Debug)]
pub struct HeaderTransformer {
    name: &'static str,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    append: Vec<(HeaderName, HeaderValue)>,
}

fn pairs(map: &std::collections::BTreeMap<String, String>) -> Vec<(HeaderName, HeaderValue)> {
    map.iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

impl HeaderTransformer {
    pub fn new(name: &'static str, t: &HeaderTransform) -> Self {
        HeaderTransformer {
            name,
            remove: t
                .remove
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            set: pairs(&t.set),
            add: pairs(&t.add),
            append: pairs(&t.append),
        }
    }

    fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (k, v) in &self.set {
            headers.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            if !headers.contains_key(k) {
                headers.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &self.append {
            headers.append(k.clone(), v.clone());
        }
    }
}

impl Policy for HeaderTransformer {
    fn name(&self) -> &'static str {
        self.name
    }
    fn upstream_headers_as_map(&self) -> bool {
        self.name == "request_transformer"
    }
    fn response_headers_as_map(&self) -> bool {
        self.name == "response_transformer"
    }
    fn upstream_request(&self, _ctx: &mut RequestCtx, req: &mut request::Parts) {
        if self.name == "request_transformer" {
            self.apply(&mut req.headers);
        }
    }
    fn response(&self, _ctx: &mut RequestCtx, res: &mut response::Parts) {
        if self.name == "response_transformer" {
            self.apply(&mut res.headers);
        }
    }
}
