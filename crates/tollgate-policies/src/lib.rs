//! Tollgate's policy pipeline.
//!
//! A policy is a configured gateway behaviour (CORS, IP rules, size limits,
//! header transformation, authentication, rate limits and quotas). Every
//! policy implements the one [`Policy`] trait, whose hooks are the phases of a
//! request, in this order:
//!
//! 1. [`Policy::access`]: after the route matched, before an upstream is
//!    chosen. May answer by itself ([`Flow::Reply`]) and skip the rest.
//! 2. [`Policy::upstream_request`]: after the gateway's own header handling,
//!    just before the request is sent upstream.
//! 3. [`Policy::response`]: on the response head about to go to the client,
//!    whether it came from the upstream or from the gateway itself.
//! 4. [`Policy::log`]: once the response head has been sent.
//!
//! Built-in policies are compiled from [`tollgate_core::config::PolicySpec`]
//! once per configuration snapshot into a [`Chain`]: an explicit ordered list
//! (see [`ORDER`]), so the order never depends on how a file was written. The
//! chain dispatches statically through the [`Builtin`] enum; the hot path does
//! no allocation or dynamic dispatch for policies it does not run.

mod auth;
mod builtin;
mod chain;
mod context;
mod rate_limit;

pub use auth::Auth;
pub use builtin::{Builtin, Cors, HeaderTransformer, IpRestriction, RequestSizeLimit};
pub use chain::{Chain, ORDER, merge_specs};
pub use context::{Arrival, Flow, LogSummary, Reply, RequestCtx};
pub use rate_limit::{Attachment, RATELIMIT, RATELIMIT_POLICY, RateLimit};

/// Shared runtime state that policies need beyond their own configuration.
/// One lives in the gateway and outlives every snapshot.
#[derive(Debug, Clone)]
pub struct PolicyEnv {
    /// Credential checks for the `auth` policy.
    pub authn: std::sync::Arc<tollgate_identity::authn::Authenticator>,
    /// Counters for the `rate_limit` policy, in process or on Redis.
    pub limiter: std::sync::Arc<tollgate_limits::Limiter>,
    /// Plans and subscriptions for the `rate_limit` policy.
    pub catalog: std::sync::Arc<tollgate_limits::Catalog>,
}

impl PolicyEnv {
    /// An environment with in-process counters and no subscriptions.
    pub fn new(authn: std::sync::Arc<tollgate_identity::authn::Authenticator>) -> PolicyEnv {
        PolicyEnv {
            authn,
            limiter: std::sync::Arc::new(tollgate_limits::Limiter::local()),
            catalog: tollgate_limits::Catalog::new(),
        }
    }
}

use http::request;
use http::response;
use std::future::Future;

/// The phase hooks of a gateway policy. Every hook has a default that does
/// nothing, so a policy implements only the phases it needs.
pub trait Policy: Send + Sync + 'static {
    /// The policy's configuration name (`cors`, `ip_restriction`, ...).
    fn name(&self) -> &'static str;

    /// Access phase: runs after routing, before an upstream target is chosen,
    /// in chain order. The default continues.
    ///
    /// Return [`Flow::Continue`] to pass the request on to the next policy, or
    /// [`Flow::Reply`] to answer the client now: no later policy's `access`
    /// runs and nothing is sent upstream; the `response` and `log` phases still
    /// run for every policy, on the reply.
    fn access(
        &self,
        ctx: &mut RequestCtx,
        req: &mut request::Parts,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (ctx, req);
        async { Flow::Continue }
    }

    /// Upstream-request phase: runs once the gateway has stripped hop-by-hop
    /// headers and set its forwarding headers, just before the request leaves.
    /// Changes made here are what the upstream sees. The default does nothing.
    ///
    /// The fields the gateway adds (forwarding, request id, identity) wait
    /// in `ctx.upstream_fields`, encoded for the wire, rather than in
    /// `req.headers`; see [`Policy::upstream_headers_as_map`].
    fn upstream_request(&self, ctx: &mut RequestCtx, req: &mut request::Parts) {
        let _ = (ctx, req);
    }

    /// Whether [`Policy::upstream_request`] reads or edits `req.headers` and
    /// must find the gateway's own fields there. Before the first policy
    /// that says so, the chain moves `ctx.upstream_fields` into the map
    /// ([`tollgate_core::fields::UpstreamFields::materialize`]); until then
    /// they stay encoded and cost one copy each on the way out. The default,
    /// `true`, is always correct; a policy whose hook leaves the request's
    /// fields alone returns `false`.
    fn upstream_headers_as_map(&self) -> bool {
        true
    }

    /// Response phase: runs on every response head going back to the client,
    /// from the upstream or from the gateway (including another policy's early
    /// reply), in chain order. The default does nothing.
    ///
    /// An upstream's fields are passed on as they arrived rather than put in
    /// `res.headers`; see [`Policy::response_headers_as_map`]. A field set
    /// in `res.headers`, or added to `ctx.response_fields` (which costs no
    /// map), replaces the upstream's fields of that name.
    fn response(&self, ctx: &mut RequestCtx, res: &mut response::Parts) {
        let _ = (ctx, res);
    }

    /// Whether [`Policy::response`] reads the upstream's fields or adds to
    /// them (appends, removes) and so must find them in `res.headers`.
    /// Before the first policy that says so, the chain moves the upstream's
    /// fields and `ctx.response_fields` into the map
    /// ([`tollgate_core::fields::ResponseFields::materialize`]); until then
    /// they are written out from the head they arrived in. The
    /// default, `true`, is always correct; a policy that only sets fields of
    /// its own (each replacing the upstream's of that name) returns `false`.
    fn response_headers_as_map(&self) -> bool {
        true
    }

    /// Log phase: runs after the response head was handed to the client. It
    /// must not block; queue work elsewhere. The default does nothing.
    fn log(&self, ctx: &RequestCtx, summary: &LogSummary) {
        let _ = (ctx, summary);
    }
}
