//! Merging policies from their attachment levels and ordering them.

use http::{request, response};
use tollgate_core::config::PolicySpec;
use tollgate_core::fields::ResponseFields;

use crate::{Builtin, Flow, LogSummary, Policy, PolicyEnv, RequestCtx};

/// The fixed execution order of built-in policies. Address rules run first so
/// a denied client learns nothing else; CORS answers preflights before any
/// later check (browsers send preflights without credentials); `auth` runs
/// before anything that depends on who is calling; `rate_limit` counts only
/// requests that got that far, by who they are; size limits run before
/// anything reads the body.
pub const ORDER: &[&str] = &[
    "ip_restriction",
    "cors",
    "auth",
    "rate_limit",
    "request_size_limit",
    "request_transformer",
    "response_transformer",
];

fn rank(name: &str) -> usize {
    ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len())
}

/// Merges the policies attached globally, to a service and to a route. A
/// policy attached at a narrower level replaces the same policy from a wider
/// one (route over service over global). The result is in [`ORDER`].
pub fn merge_specs<'a>(
    global: &'a [PolicySpec],
    service: &'a [PolicySpec],
    route: &'a [PolicySpec],
) -> Vec<&'a PolicySpec> {
    let mut out: Vec<&PolicySpec> = Vec::new();
    for level in [route, service, global] {
        for spec in level {
            if !out.iter().any(|p| p.name() == spec.name()) {
                out.push(spec);
            }
        }
    }
    out.sort_by_key(|p| rank(p.name()));
    out
}

/// A compiled, ordered policy chain for one route.
#[derive(Debug, Default)]
pub struct Chain {
    policies: Vec<Builtin>,
    /// The first policy whose upstream-request phase needs the gateway's
    /// added fields in the request's map.
    maps_fields_at: Option<usize>,
    /// The first policy whose response phase needs the upstream's fields in
    /// the response's map.
    maps_response_at: Option<usize>,
}

impl Chain {
    /// Compiles the merged policies of a route without names: every
    /// `rate_limit` counts as attached to an anonymous route.
    pub fn compile(
        global: &[PolicySpec],
        service: &[PolicySpec],
        route: &[PolicySpec],
        env: &PolicyEnv,
    ) -> Chain {
        Chain::compile_named(global, ("", service), ("", route), env)
    }

    /// Compiles the merged policies of the route `route.0` of service
    /// `service.0`. A `rate_limit` policy counts per attachment: the same
    /// policy attached globally or to a service is one budget across the
    /// routes that share it.
    pub fn compile_named(
        global: &[PolicySpec],
        service: (&str, &[PolicySpec]),
        route: (&str, &[PolicySpec]),
        env: &PolicyEnv,
    ) -> Chain {
        let merged = merge_specs(global, service.1, route.1);
        let required_scopes = merged
            .iter()
            .find_map(|p| match p {
                PolicySpec::Auth(a) => Some(a.scopes.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let from =
            |level: &[PolicySpec], spec: &PolicySpec| level.iter().any(|p| std::ptr::eq(p, spec));
        let policies: Vec<Builtin> = merged
            .into_iter()
            .map(|spec| {
                let scope = if from(route.1, spec) {
                    format!("route:{}", route.0)
                } else if from(service.1, spec) {
                    format!("service:{}", service.0)
                } else {
                    "global".to_owned()
                };
                let at = crate::Attachment {
                    scope,
                    required_scopes: required_scopes.clone(),
                };
                Builtin::compile(spec, env, &at)
            })
            .collect();
        Chain::new(policies)
    }

    /// A chain of these policies, in this order.
    pub fn new(policies: Vec<Builtin>) -> Chain {
        let maps_fields_at = policies.iter().position(Policy::upstream_headers_as_map);
        let maps_response_at = policies.iter().position(Policy::response_headers_as_map);
        Chain {
            policies,
            maps_fields_at,
            maps_response_at,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Names in execution order.
    pub fn names(&self) -> Vec<&'static str> {
        self.policies.iter().map(Policy::name).collect()
    }

    /// Runs the access phase, stopping at the first policy that answers.
    pub async fn access(
        &self,
        ctx: &mut RequestCtx,
        req: &mut request::Parts,
    ) -> Result<(), crate::Reply> {
        for p in &self.policies {
            if let Flow::Reply(r) = p.access(ctx, req).await {
                return Err(r);
            }
        }
        Ok(())
    }

    /// Runs the upstream-request phase of every policy. The gateway's added
    /// fields move into the request's map before the first policy that
    /// reads or edits it, and stay encoded when none does.
    pub fn upstream_request(&self, ctx: &mut RequestCtx, req: &mut request::Parts) {
        for (i, p) in self.policies.iter().enumerate() {
            if self.maps_fields_at == Some(i) {
                ctx.upstream_fields.materialize(&mut req.headers);
            }
            p.upstream_request(ctx, req);
        }
    }

    /// Runs the response phase of every policy. `fields` holds an upstream
    /// response's fields as they arrived; they move into the response's map
    /// before the first policy that reads or edits them, and stay where
    /// they are when none does. The gateway's own fields in
    /// `ctx.response_fields` join them (or the map, when `fields` is gone
    /// or there were none: an answer the gateway made).
    pub fn response(
        &self,
        ctx: &mut RequestCtx,
        res: &mut response::Parts,
        fields: &mut Option<ResponseFields>,
    ) {
        for (i, p) in self.policies.iter().enumerate() {
            if self.maps_response_at == Some(i) {
                if let Some(f) = fields.take() {
                    f.materialize(&mut res.headers);
                }
                ctx.response_fields.materialize(&mut res.headers);
            }
            p.response(ctx, res);
        }
        match fields {
            Some(f) => f.own.append(&mut ctx.response_fields),
            None => ctx.response_fields.materialize(&mut res.headers),
        }
    }

    pub fn log(&self, ctx: &RequestCtx, summary: &LogSummary) {
        for p in &self.policies {
            p.log(ctx, summary);
        }
    }
}

#[cfg(test)]
mod tests;
