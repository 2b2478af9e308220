//! Configuration of traffic control: plans (named tiers with rate limits, a
//! monthly quota, allowed APIs and scopes, and pricing) and the `rate_limit`
//! policy (limits attached to routes, services or every route, and whether
//! the caller's plan applies).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::Errors;
use crate::duration::Duration;

/// A plan: a named tier such as Free, Starter, Growth or Enterprise. A
/// subscription binds an organization, an app or a key to a plan for an API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// Unique name; letters, digits and `._~-`. Subscriptions refer to it.
    pub name: String,
    /// Display name for people (the portal, invoices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Request rates, the monthly quota and the concurrency cap.
    #[serde(default)]
    pub limits: PlanLimits,
    /// APIs (service names) the plan includes. Empty includes every API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<String>,
    /// Scopes the plan allows. A route that needs a scope outside this list
    /// is refused with 403 `not_in_plan`. Empty allows every scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Prices, for billing. The gateway does not read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// The limits of a plan, or a subscription's overrides of them (where a
/// field set on the subscription replaces the plan's).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Sustained requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u64>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
    /// Requests per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u64>,
    /// Requests allowed at once on top of an idle `per_second` allowance
    /// (the burst of the per-second GCRA). Default: `per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Requests per calendar month. The month follows the organization's
    /// time zone (UTC when it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_quota: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

impl PlanLimits {
    /// These limits with every field set in `over` replaced.
    pub fn overridden(&self, over: &PlanLimits) -> PlanLimits {
        PlanLimits {
            per_second: over.per_second.or(self.per_second),
            per_minute: over.per_minute.or(self.per_minute),
            per_hour: over.per_hour.or(self.per_hour),
            burst: over.burst.or(self.burst),
            monthly_quota: over.monthly_quota.or(self.monthly_quota),
            concurrency: over.concurrency.or(self.concurrency),
        }
    }
}

/// What a plan costs. Amounts are in the currency's minor unit (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// ISO 4217 code, upper case (`USD`, `EUR`).
    pub currency: String,
    /// Fixed fee per month.
    #[serde(default)]
    pub monthly_fee: u64,
    /// Requests included in the fee each month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included_requests: Option<u64>,
    /// Price of each further 1,000 requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_per_1000: Option<u64>,
}

/// The `rate_limit` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Limits of this route, service or gateway, all applied together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitSpec>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// Whether the caller's plan applies (`optional`: when the caller has a
    /// subscription to this API; `required`: a caller without one is refused
    /// with 403; `off`: plans are ignored here).
    #[serde(default)]
    pub subscription: SubscriptionMode,
    /// What happens when the shared counter store (Redis) cannot answer.
    #[serde(default)]
    pub on_backend_error: FailureMode,
    /// Send the `RateLimit-Policy` and `RateLimit` fields.
    #[serde(default = "default_true")]
    pub headers: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            limits: Vec::new(),
            concurrency: None,
            subscription: SubscriptionMode::default(),
            on_backend_error: FailureMode::default(),
            headers: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// How a route treats the caller's subscription.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionMode {
    Off,
    #[default]
    Optional,
    Required,
}

/// Behaviour when the counter store is unreachable.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through, uncounted.
    #[default]
    Open,
    /// Refuse with 503 `limiter_unavailable`.
    Closed,
}

/// How a rate is counted.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Generic cell rate algorithm: an even rate with a burst allowance.
    #[default]
    Gcra,
    /// A sliding-window counter: the current window plus the weighted
    /// remainder of the previous one.
    SlidingWindow,
}

/// One limit: `requests` per `per`, counted separately for each value of `by`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Name in the `RateLimit` fields. Default: derived from the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub requests: u64,
    /// The window: a duration (`1s`, `1m`, `1h`, `1d`) or `month` for a
    /// calendar quota.
    #[schemars(with = "String")]
    #[schema(value_type = String, example = "1m")]
    pub per: Period,
    /// GCRA only: requests allowed at once from idle. Default: `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Ignored for `per: month`, which is always a calendar quota.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Who is counted: `consumer` (the credential, else the client
    /// address), `ip`, `key`, `app`, `org`, `route` (everyone together),
    /// `header:<name>` or `claim:<name>`. A caller without the value is
    /// counted by client address.
    #[serde(default)]
    #[schemars(with = "String")]
    #[schema(value_type = String, example = "consumer")]
    pub by: LimitBy,
    /// Time zone of a monthly quota's boundaries (IANA name). Default: the
    /// organization's, else UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A concurrency limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencySpec {
    pub max: u32,
    #[serde(default)]
    #[schemars(with = "String")]
    #[schema(value_type = String, example = "consumer")]
    pub by: LimitBy,
}

/// The window of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Fixed(Duration),
    Month,
}

impl FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "month" {
            return Ok(Period::Month);
        }
        let d: Duration = s
            .parse()
            .map_err(|e| format!("`{s}` is neither a duration nor `month`: {e}"))?;
        if d.0 < std::time::Duration::from_millis(1) {
            return Err("a window must be at least 1ms".into());
        }
        Ok(Period::Fixed(d))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Fixed(d) => write!(f, "{d}"),
            Period::Month => f.write_str("month"),
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who a limit counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum LimitBy {
    /// The credential (key, or token subject), else the client address.
    #[default]
    Consumer,
    Ip,
    Key,
    App,
    Org,
    /// Every caller together.
    Route,
    /// A request header's value (name stored lower case).
    Header(String),
    /// A claim of the caller's token.
    Claim(String),
}

impl FromStr for LimitBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "consumer" => LimitBy::Consumer,
            "ip" => LimitBy::Ip,
            "key" => LimitBy::Key,
            "app" => LimitBy::App,
            "org" => LimitBy::Org,
            "route" => LimitBy::Route,
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err(format!("`{h}` is not a valid header name"));
                    }
                    LimitBy::Header(h.to_ascii_lowercase())
                } else if let Some(c) = s.strip_prefix("claim:") {
                    if c.is_empty() {
                        return Err("`claim:` needs a claim name".into());
                    }
                    LimitBy::Claim(c.to_owned())
                } else {
                    return Err(format!(
                        "unknown `by` value `{s}`; expected consumer, ip, key, app, org, route, \
                         header:<name> or claim:<name>"
                    ));
                }
            }
        })
    }
}

impl fmt::Display for LimitBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitBy::Consumer => f.write_str("consumer"),
            LimitBy::Ip => f.write_str("ip"),
            LimitBy::Key => f.write_str("key"),
            LimitBy::App => f.write_str("app"),
            LimitBy::Org => f.write_str("org"),
            LimitBy::Route => f.write_str("route"),
            LimitBy::Header(h) => write!(f, "header:{h}"),
            LimitBy::Claim(c) => write!(f, "claim:{c}"),
        }
    }
}

impl Serialize for LimitBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LimitBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks an IANA time zone name.
pub fn check_timezone(tz: &str) -> Result<(), String> {
    tz.parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| format!("`{tz}` is not an IANA time zone such as `Europe/Berlin` or `UTC`"))
}

fn check_name_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(super) fn limits(l: &PlanLimits, at: &str, errs: &mut Errors) {
    for (field, v) in [
        ("per_second", l.per_second),
        ("per_minute", l.per_minute),
        ("per_hour", l.per_hour),
        ("burst", l.burst),
        ("monthly_quota", l.monthly_quota),
    ] {
        if v == Some(0) {
            errs.push(
                format!("{at}.{field}"),
                "must be at least 1; leave it out for no limit",
            );
        }
    }
    if l.concurrency == Some(0) {
        errs.push(
            format!("{at}.concurrency"),
            "must be at least 1; leave it out for no limit",
        );
    }
    if l.burst.is_some() && l.per_second.is_none() {
        errs.push(format!("{at}.burst"), "applies to `per_second`; set it too");
    }
}

pub(super) fn plan(p: &PlanSpec, at: &str, errs: &mut Errors) {
    super::validate::check_name(&p.name, at, errs);
    limits(&p.limits, &format!("{at}.limits"), errs);
    if let Some(pr) = &p.pricing
        && (pr.currency.len() != 3 || !pr.currency.bytes().all(|b| b.is_ascii_uppercase()))
    {
        errs.push(
            format!("{at}.pricing.currency"),
            format!("`{}` is not an ISO 4217 code such as `USD`", pr.currency),
        );
    }
}

impl PlanSpec {
    /// Checks one plan alone (the admin API's resource body).
    pub fn validate(&self) -> Result<(), Vec<crate::problem::FieldError>> {
        let mut errs = Errors::default();
        plan(self, "", &mut errs);
        errs.finish()
    }
}

pub(super) fn rate_limit(c: &RateLimitConfig, at: &str, errs: &mut Errors) {
    let mut names = std::collections::HashSet::new();
    for (i, l) in c.limits.iter().enumerate() {
        let lat = format!("{at}.limits[{i}]");
        if l.requests == 0 {
            errs.push(format!("{lat}.requests"), "must be at least 1");
        }
        if l.burst == Some(0) {
            errs.push(format!("{lat}.burst"), "must be at least 1");
        }
        if let Some(n) = &l.name {
            if !check_name_token(n) {
                errs.push(
                    format!("{lat}.name"),
                    "use 1 to 64 letters, digits, `-`, `_` or `.`",
                );
            }
            if !names.insert(n.clone()) {
                errs.push(format!("{lat}.name"), format!("duplicate limit name `{n}`"));
            }
        }
        if let Some(tz) = &l.timezone {
            if l.per != Period::Month {
                errs.push(format!("{lat}.timezone"), "applies to `per: month` only");
            }
            if let Err(e) = check_timezone(tz) {
                errs.push(format!("{lat}.timezone"), e);
            }
        }
        if l.per == Period::Month && l.burst.is_some() {
            errs.push(
                format!("{lat}.burst"),
                "a monthly quota has no burst; it counts every request of the month",
            );
        }
        if l.algorithm == Algorithm::SlidingWindow && l.burst.is_some() {
            errs.push(format!("{lat}.burst"), "applies to `gcra` only");
        }
    }
    if let Some(cc) = &c.concurrency
        && cc.max == 0
    {
        errs.push(format!("{at}.concurrency.max"), "must be at least 1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_parses_and_prints() {
        for s in [
            "consumer",
            "ip",
            "key",
            "app",
            "org",
            "route",
            "header:x-tenant",
            "claim:sub",
        ] {
            let b: LimitBy = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
        }
        assert_eq!(
            "header:X-Tenant".parse::<LimitBy>().unwrap(),
            LimitBy::Header("x-tenant".into())
        );
        assert!("header:bad header".parse::<LimitBy>().is_err());
        assert!("claim:".parse::<LimitBy>().is_err());
        assert!("user".parse::<LimitBy>().is_err());
    }

    #[test]
    fn period_parses() {
        assert_eq!("month".parse::<Period>().unwrap(), Period::Month);
        assert!(matches!("1m".parse::<Period>().unwrap(), Period::Fixed(_)));
        assert!("monthly".parse::<Period>().is_err());
        assert!("0s".parse::<Period>().is_err());
    }

    #[test]
    fn overrides_replace_set_fields_only() {
        let plan = PlanLimits {
            per_second: Some(10),
            monthly_quota: Some(1000),
            ..Default::default()
        };
        let over = PlanLimits {
            monthly_quota: Some(5),
            ..Default::default()
        };
        let eff = plan.overridden(&over);
        assert_eq!(eff.per_second, Some(10));
        assert_eq!(eff.monthly_quota, Some(5));
    }

    #[test]
    fn timezones_are_checked() {
        assert!(check_timezone("Europe/Berlin").is_ok());
        assert!(check_timezone("UTC").is_ok());
        assert!(check_timezone("Mars/Olympus").is_err());
    }
}
