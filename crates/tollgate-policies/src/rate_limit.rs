//! The `rate_limit` policy: the caller's plan (via its subscription) and the
//! route's own limits, decided together in one atomic step.
//!
//! - Over a rate: 429 `rate_limited`; over the monthly quota: 429
//!   `quota_exceeded`; too many in flight: 429 `concurrency_limited`. Each
//!   with `Retry-After` rounded up, so it is never earlier than the instant
//!   the request would pass.
//! - No subscription where one is required: 403 `subscription_required`;
//!   an API or scope outside the plan: 403 `not_in_plan`.
//! - Backend down: per `on_backend_error`, the request passes uncounted
//!   (open) or gets 503 `limiter_unavailable` (closed).
//!
//! Every response on a limited route carries `RateLimit-Policy` and
//! `RateLimit` (draft-ietf-httpapi-ratelimit-headers): one item per limit,
//! `"name";q=<quota>;w=<window s>` and `"name";r=<remaining>;t=<reset s>`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::request;
use smallvec::SmallVec;
use tollgate_core::config::{
    Algorithm, FailureMode, LimitBy, Period, PlanLimits, RateLimitConfig, SubscriptionMode,
};
use tollgate_core::fields::GatewayFields;
use tollgate_core::problem::ErrorCode;
use tollgate_identity::authn::Caller;
use tollgate_limits::algo::SECOND_US;
use tollgate_limits::catalog::{MONTHLY_QUOTA, Resolved};
use tollgate_limits::{Catalog, Check, Decision, Limiter, Rule, Status, calendar};

use crate::{Flow, Policy, Reply, RequestCtx};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Where a `rate_limit` policy is attached; route limits count per
/// attachment, so a limit attached globally is one budget across routes.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `global`, `service:<name>` or `route:<name>`.
    pub scope: String,
    /// Scopes the route's `auth` policy requires (checked against the plan).
    pub required_scopes: Vec<String>,
}

/// A compiled route limit.
#[derive(Debug)]
struct RouteLimit {
    name: String,
    by: LimitBy,
    rule: Rule,
    /// Counter name under the subject: `<scope>:<name>`.
    counter: String,
    /// This limit's item in `RateLimit-Policy`.
    policy_item: String,
}

/// The compiled `rate_limit` policy.
#[derive(Debug)]
pub struct RateLimit {
    limits: Vec<RouteLimit>,
    concurrency: Option<RouteLimit>,
    subscription: SubscriptionMode,
    on_error: FailureMode,
    headers: bool,
    required_scopes: Vec<String>,
    /// `RateLimit-Policy` when no plan applies: the route's limits only.
    route_policy: Option<HeaderValue>,
    limiter: Arc<Limiter>,
    catalog: Arc<Catalog>,
}

fn policy_item(name: &str, q: u64, w: Option<i64>, unit: Option<&str>) -> String {
    let mut s = format!("\"{name}\";q={q}");
    if let Some(w) = w {
        let _ = write!(s, ";w={w}");
    }
    if let Some(u) = unit {
        let _ = write!(s, ";qu=\"{u}\"");
    }
    s
}

fn period_us(p: Period) -> i64 {
    match p {
        Period::Fixed(d) => d.0.as_micros().min(i64::MAX as u128) as i64,
        Period::Month => 0,
    }
}

impl RateLimit {
    pub fn new(
        cfg: &RateLimitConfig,
        at: &Attachment,
        limiter: Arc<Limiter>,
        catalog: Arc<Catalog>,
    ) -> RateLimit {
        let limits: Vec<RouteLimit> = cfg
            .limits
            .iter()
            .map(|l| {
                let name = l.name.clone().unwrap_or_else(|| l.per.to_string());
                let p = period_us(l.per);
                let rule = match (l.per, l.algorithm) {
                    (Period::Month, _) => Rule::Month {
                        limit: l.requests,
                        tz: calendar::zone(l.timezone.as_deref()),
                    },
                    (_, Algorithm::Gcra) => Rule::gcra(l.requests, p, l.burst),
                    (_, Algorithm::SlidingWindow) => Rule::Window {
                        window_us: p.max(1),
                        limit: l.requests,
                    },
                };
                let (q, w) = rule.advertised(l.requests, p);
                RouteLimit {
                    counter: format!("{}:{name}", at.scope),
                    policy_item: policy_item(&name, q, w, None),
                    name,
                    by: l.by.clone(),
                    rule,
                }
            })
            .collect();
        let concurrency = cfg.concurrency.as_ref().map(|c| RouteLimit {
            name: "concurrency".into(),
            by: c.by.clone(),
            rule: Rule::Concurrency {
                max: u64::from(c.max),
            },
            counter: format!("{}:concurrency", at.scope),
            policy_item: policy_item("concurrency", u64::from(c.max), None, Some("concurrency")),
        });
        let items: Vec<&str> = limits
            .iter()
            .chain(&concurrency)
            .map(|l: &RouteLimit| l.policy_item.as_str())
            .collect();
        let route_policy = HeaderValue::from_str(&items.join(", ")).ok();
        RateLimit {
            route_policy,
            limits,
            concurrency,
            subscription: cfg.subscription,
            on_error: cfg.on_backend_error,
            headers: cfg.headers,
            required_scopes: at.required_scopes.clone(),
            limiter,
            catalog,
        }
    }

    fn resolve(&self, ctx: &RequestCtx) -> Option<Resolved> {
        if self.subscription == SubscriptionMode::Off {
            return None;
        }
        let caller = ctx.caller.as_ref()?;
        let key = match caller {
            Caller::Key(k) => Some(k.id.as_str()),
            Caller::Token(_) => None,
        };
        self.catalog
            .resolve(caller.org(), caller.app(), key, &ctx.service)
    }

    fn refuse(ctx: &RequestCtx, code: ErrorCode, detail: String) -> Flow {
        Flow::Reply(Reply::problem(&ctx.problem(code, detail)))
    }
}

/// One limit applied to this request, for the response fields.
struct Applied<'a> {
    name: Cow<'a, str>,
    policy_item: Cow<'a, str>,
    rule: Rule,
}

/// The limits of one request: up to four without an allocation (a route's
/// own limits, or those and a plan's rates); more spill to the heap.
type Checks<'a> = SmallVec<[Check<'a>; 4]>;
type AppliedList<'a> = SmallVec<[Applied<'a>; 4]>;

fn plan_checks(r: &Resolved, checks: &mut Checks<'_>, applied: &mut AppliedList<'_>) {
    let PlanLimits {
        per_second,
        per_minute,
        per_hour,
        burst,
        monthly_quota,
        concurrency,
    } = r.limits;
    let sub = &r.subscription;
    let mut add = |name: &'static str, rule: Rule, q: u64, w: Option<i64>, unit: Option<&str>| {
        checks.push(Check {
            key: Cow::Owned(sub.counter(name)),
            rule,
        });
        applied.push(Applied {
            name: Cow::Borrowed(name),
            policy_item: Cow::Owned(policy_item(name, q, w, unit)),
            rule,
        });
    };
    let rates = [
        ("plan-second", 1, per_second, burst),
        ("plan-minute", 60, per_minute, None),
        ("plan-hour", 3600, per_hour, None),
    ];
    for (name, secs, n, burst) in rates {
        if let Some(n) = n {
            let rule = Rule::gcra(n, secs * SECOND_US, burst);
            add(name, rule, n, Some(secs), None);
        }
    }
    if let Some(n) = monthly_quota {
        let rule = Rule::Month {
            limit: n,
            tz: sub.timezone,
        };
        add(MONTHLY_QUOTA, rule, n, None, None);
    }
    if let Some(n) = concurrency {
        let n = u64::from(n);
        add(
            "plan-concurrency",
            Rule::Concurrency { max: n },
            n,
            None,
            Some("concurrency"),
        );
    }
}

/// 64-bit FNV-1a: a stable digest for long header values, the same on every node.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Who `by` counts for this request, appended to `out`.
fn push_subject(out: &mut String, by: &LimitBy, ctx: &RequestCtx, req: &request::Parts) {
    let caller = ctx.caller.as_ref();
    let start = out.len();
    match by {
        LimitBy::Ip => {}
        LimitBy::Route => out.push_str("all"),
        LimitBy::Consumer => match caller {
            Some(Caller::Key(k)) => out.push_str(k.id.as_str()),
            Some(Caller::Token(t)) => {
                let who = t.subject.as_deref().or(t.app.as_deref()).unwrap_or("");
                let _ = write!(out, "tok:{}:{who}", t.issuer);
            }
            None => {}
        },
        LimitBy::Key => {
            if let Some(Caller::Key(k)) = caller {
                out.push_str(k.id.as_str());
            }
        }
        LimitBy::App => out.push_str(caller.and_then(|c| c.app()).unwrap_or("")),
        LimitBy::Org => out.push_str(caller.and_then(|c| c.org()).unwrap_or("")),
        LimitBy::Header(h) => {
            if let Some(v) = req.headers.get(h.as_str()) {
                let v = v.as_bytes();
                if v.len() <= 64 && v.iter().all(|b| b.is_ascii_graphic() && *b != b'}') {
                    let _ = write!(out, "h:{h}={}", String::from_utf8_lossy(v));
                } else {
                    let _ = write!(out, "h:{h}#{:016x}", fnv1a(v));
                }
            }
        }
        LimitBy::Claim(c) => {
            if let Some(Caller::Token(t)) = caller {
                match t.claims.get(c.as_str()) {
                    Some(serde_json::Value::String(s)) => {
                        let _ = write!(out, "c:{c}#{:016x}", fnv1a(s.as_bytes()));
                    }
                    Some(serde_json::Value::Number(n)) => {
                        let _ = write!(out, "c:{c}={n}");
                    }
                    _ => {}
                }
            }
        }
    }
    if out.len() == start {
        out.push_str("ip:");
        push_ip(out, ctx.client_ip);
    }
}

/// Appends an address; IPv4 without the formatting machinery (it is on
/// every request of a limit by address).
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut buf = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(buf.format(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The counter key of a route limit: `tg:{<subject>}:<counter>`.
fn route_key(by: &LimitBy, counter: &str, ctx: &RequestCtx, req: &request::Parts) -> String {
    let mut key = String::with_capacity(48 + counter.len());
    key.push_str("tg:{");
    push_subject(&mut key, by, ctx, req);
    key.push_str("}:");
    key.push_str(counter);
    key
}

#[cfg(test)]
fn subject(by: &LimitBy, ctx: &RequestCtx, req: &request::Parts) -> String {
    let mut s = String::new();
    push_subject(&mut s, by, ctx, req);
    s
}

fn secs_up(us: i64) -> i64 {
    if us <= 0 {
        0
    } else {
        (us + SECOND_US - 1) / SECOND_US
    }
}

/// Sets the `RateLimit-Policy` and `RateLimit` fields; `policy` is given
/// when it is known in advance (no plan applies), else built from the
/// limits applied. A value that is not a valid field value is left out, and
/// `RateLimit` with `RateLimit-Policy`; limit names are tokens, checked when
/// the configuration is loaded, so neither happens in practice.
fn set_fields(
    out: &mut GatewayFields,
    applied: &[Applied],
    statuses: &[Status],
    policy: Option<&HeaderValue>,
) {
    let policy_set = match policy {
        Some(p) => {
            out.push(&RATELIMIT_POLICY, p);
            true
        }
        None => out.push_with(&RATELIMIT_POLICY, |w| {
            for (i, a) in applied.iter().enumerate() {
                if i > 0 {
                    w.extend_from_slice(b", ");
                }
                w.extend_from_slice(a.policy_item.as_bytes());
            }
        }),
    };
    if !policy_set {
        return;
    }
    out.push_with(&RATELIMIT, |w| {
        let mut num = itoa::Buffer::new();
        for (i, (a, s)) in applied.iter().zip(statuses).enumerate() {
            if i > 0 {
                w.extend_from_slice(b", ");
            }
            w.push(b'"');
            w.extend_from_slice(a.name.as_bytes());
            w.extend_from_slice(b"\";r=");
            w.extend_from_slice(num.format(s.remaining).as_bytes());
            if !matches!(a.rule, Rule::Concurrency { .. }) {
                w.extend_from_slice(b";t=");
                w.extend_from_slice(num.format(secs_up(s.reset_us)).as_bytes());
            }
        }
    });
}

fn refusal(applied: &[Applied], d: &Decision) -> (ErrorCode, String, i64) {
    let mut code = ErrorCode::RateLimited;
    let mut wait = 0;
    let mut names = Vec::new();
    for (a, s) in applied.iter().zip(&d.statuses) {
        if s.allowed {
            continue;
        }
        wait = wait.max(s.retry_after_us);
        names.push(format!("`{}`", a.name));
        code = match (code, a.rule) {
            (_, Rule::Month { .. }) => ErrorCode::QuotaExceeded,
            (ErrorCode::QuotaExceeded, _) => ErrorCode::QuotaExceeded,
            (_, Rule::Concurrency { .. }) => ErrorCode::ConcurrencyLimited,
            (c, _) => c,
        };
    }
    let retry = secs_up(wait).max(1);
    let what = match code {
        ErrorCode::QuotaExceeded => "the quota for this period is used up",
        ErrorCode::ConcurrencyLimited => "too many requests are in flight",
        _ => "the rate limit is exceeded",
    };
    (
        code,
        format!("{what} ({}); retry in {retry} s", names.join(", ")),
        retry,
    )
}

impl Policy for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }
    fn upstream_headers_as_map(&self) -> bool {
        false
    }
    /// Sets its two fields in `ctx.response_fields`, at the access phase.
    fn response_headers_as_map(&self) -> bool {
        false
    }

    async fn access(&self, ctx: &mut RequestCtx, req: &mut request::Parts) -> Flow {
        let resolved = self.resolve(ctx);
        match &resolved {
            None if self.subscription == SubscriptionMode::Required => {
                let detail = if ctx.caller.is_some() {
                    format!(
                        "the caller has no subscription that covers `{}`",
                        ctx.service
                    )
                } else {
                    "this API needs a subscription; call it with a credential".to_owned()
                };
                return RateLimit::refuse(ctx, ErrorCode::SubscriptionRequired, detail);
            }
            Some(r) => {
                if !r.plan.apis.is_empty() && !r.plan.apis.iter().any(|a| **a == *ctx.service) {
                    let detail =
                        format!("plan `{}` does not include `{}`", r.plan.name, ctx.service);
                    return RateLimit::refuse(ctx, ErrorCode::NotInPlan, detail);
                }
                if !r.plan.scopes.is_empty()
                    && let Some(s) = self
                        .required_scopes
                        .iter()
                        .find(|s| !r.plan.scopes.contains(s))
                {
                    let detail = format!("plan `{}` does not allow scope `{s}`", r.plan.name);
                    return RateLimit::refuse(ctx, ErrorCode::NotInPlan, detail);
                }
            }
            None => {}
        }

        let mut checks = Checks::new();
        let mut applied = AppliedList::new();
        if let Some(r) = &resolved {
            plan_checks(r, &mut checks, &mut applied);
        }
        for l in self.limits.iter().chain(&self.concurrency) {
            checks.push(Check {
                key: Cow::Owned(route_key(&l.by, &l.counter, ctx, req)),
                rule: l.rule,
            });
            applied.push(Applied {
                name: Cow::Borrowed(&l.name),
                policy_item: Cow::Borrowed(&l.policy_item),
                rule: l.rule,
            });
        }
        if checks.is_empty() {
            return Flow::Continue;
        }
        let d = match self.limiter.decide(&checks, ctx.arrival.unix_us).await {
            Ok(d) => d,
            Err(_) => {
                // The cause is logged by the limiter, once per incident; the
                // client learns no more than that limits cannot be checked.
                let c = self.limiter.counters();
                return match self.on_error {
                    FailureMode::Open => {
                        c.failed_open.fetch_add(1, Ordering::Relaxed);
                        Flow::Continue
                    }
                    FailureMode::Closed => {
                        c.failed_closed.fetch_add(1, Ordering::Relaxed);
                        let mut reply = Reply::problem(&ctx.problem(
                            ErrorCode::LimiterUnavailable,
                            "limits cannot be checked right now; retry shortly",
                        ));
                        reply
                            .headers
                            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                        Flow::Reply(reply)
                    }
                };
            }
        };
        if self.headers {
            // Set now for whatever the response turns out to be: the
            // upstream's, this policy's 429 or a later policy's answer.
            set_fields(
                &mut ctx.response_fields,
                &applied,
                &d.statuses,
                self.route_policy.as_ref().filter(|_| resolved.is_none()),
            );
        }
        if !d.allowed {
            let (code, detail, retry) = refusal(&applied, &d);
            let mut reply = Reply::problem(&ctx.problem(code, detail));
            reply
                .headers
                .insert(RETRY_AFTER, HeaderValue::from(retry as u64));
            return Flow::Reply(reply);
        }
        ctx.permit = d.permit;
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_follow_the_draft_syntax() {
        assert_eq!(
            policy_item("plan-second", 10, Some(1), None),
            "\"plan-second\";q=10;w=1"
        );
        assert_eq!(
            policy_item("concurrency", 5, None, Some("concurrency")),
            "\"concurrency\";q=5;qu=\"concurrency\""
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(secs_up(1), 1);
        assert_eq!(secs_up(SECOND_US), 1);
        assert_eq!(secs_up(SECOND_US + 1), 2);
        assert_eq!(secs_up(0), 0);
    }

    fn ctx(caller: Option<Caller>) -> RequestCtx {
        let mut c = RequestCtx::new(
            HeaderValue::from_static("req"),
            [10, 0, 0, 1].into(),
            [192, 0, 2, 7].into(),
            Arc::from("r"),
            Arc::from("s"),
        );
        c.caller = caller;
        c
    }

    fn token(claims: serde_json::Value) -> Caller {
        Caller::Token(tollgate_identity::authn::TokenCaller {
            credential: tollgate_core::identity::CredentialType::Jwt,
            org: Some("org_1".into()),
            app: None,
            subject: Some("alice".into()),
            scopes: vec![],
            issuer: Arc::from("idp"),
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
        })
    }

    #[test]
    fn subjects_follow_by_and_fall_back_to_the_address() {
        let req = http::Request::builder()
            .header("x-tenant", "blue")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let by = |s: &str| s.parse::<LimitBy>().unwrap();
        let anon = ctx(None);
        assert_eq!(
            subject(&by("header:X-Tenant"), &anon, &req),
            "h:x-tenant=blue"
        );
        assert_eq!(subject(&by("header:x-other"), &anon, &req), "ip:192.0.2.7");
        assert_eq!(subject(&by("consumer"), &anon, &req), "ip:192.0.2.7");
        assert_eq!(subject(&by("route"), &anon, &req), "all");
        let t = ctx(Some(token(serde_json::json!({"tier": 3, "team": "red"}))));
        assert_eq!(subject(&by("claim:tier"), &t, &req), "c:tier=3");
        let team = subject(&by("claim:team"), &t, &req);
        assert!(team.starts_with("c:team#"), "{team}");
        assert_ne!(
            team,
            subject(
                &by("claim:team"),
                &ctx(Some(token(serde_json::json!({"team": "blue"})))),
                &req
            )
        );
        assert_eq!(subject(&by("claim:missing"), &t, &req), "ip:192.0.2.7");
        assert_eq!(subject(&by("org"), &t, &req), "org_1");
        assert_eq!(subject(&by("app"), &t, &req), "ip:192.0.2.7");
        assert_eq!(subject(&by("consumer"), &t, &req), "tok:idp:alice");
    }

    #[test]
    fn long_or_odd_header_values_become_stable_digests() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
