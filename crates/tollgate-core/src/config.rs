//! The declarative configuration model.
//!
//! One model serves three doors: YAML files (`tollgate apply`, `serve
//! --config`), the admin API, and the store's export. The proxy compiles a
//! [`Config`] into its runtime snapshot, so a setting means the same thing
//! whichever way it arrived.
//!
//! Every struct denies unknown fields and carries its defaults, and the JSON
//! Schema of the file format is generated from these types
//! (`docs/config.schema.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::problem::FieldError;

mod identity;
mod traffic;
mod validate;

pub use identity::{AuthConfig, ClaimMapping, JwtAlgorithm, JwtIssuerSpec, KeySource};
pub use traffic::{
    Algorithm, ConcurrencySpec, FailureMode, LimitBy, LimitSpec, Period, PlanLimits, PlanSpec,
    Pricing, RateLimitConfig, SubscriptionMode, check_timezone,
};
pub use validate::{PathPattern, Segment, parse_path_pattern};

/// A whole declarative configuration: services with their routes, and the
/// policies that apply globally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of this file. Only `1` exists today.
    #[serde(default = "default_format_version")]
    pub format_version: u32,
    /// Backends and the routes that reach them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Policies attached globally, to every route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicySpec>,
    /// External JWT issuers the `auth` policy trusts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_issuers: Vec<JwtIssuerSpec>,
    /// Plans that subscriptions bind organizations, apps and keys to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<PlanSpec>,
}

fn default_format_version() -> u32 {
    1
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format_version: default_format_version(),
            services: Vec::new(),
            policies: Vec::new(),
            jwt_issuers: Vec::new(),
            plans: Vec::new(),
        }
    }
}

/// Defines `$name` with every service setting plus the extra fields given.
/// The admin API's `ServiceSpec` and the file format's nested `Service` share
/// these fields, and this keeps them from drifting apart.
macro_rules! service_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Unique name; letters, digits and `._~-`.
            pub name: String,
            /// A single upstream as a URL, `http://host:port/base-path`. Give
            /// either `url` or `targets`; with `targets`, `path` sets the base path.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub url: Option<String>,
            /// Weighted upstream targets (`host:port`), balanced by `load_balancing`.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub targets: Vec<Target>,
            /// Base path prepended to the forwarded path when `targets` is used.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub path: Option<String>,
            /// How a target is picked for each request.
            #[serde(default)]
            pub load_balancing: LoadBalancing,
            /// Time allowed to open a TCP connection to a target.
            #[serde(default = "default_connect_timeout")]
            pub connect_timeout: Duration,
            /// Time allowed for the response head, and between two reads of the response body.
            #[serde(default = "default_read_timeout")]
            pub read_timeout: Duration,
            /// Deadline for the whole exchange, response body included. `0s` means none.
            #[serde(default)]
            pub timeout: Duration,
            /// How many times a failed attempt may be retried on another target.
            /// Only connect failures, and idempotent requests without a body, are retried.
            #[serde(default = "default_retries")]
            pub retries: u32,
            /// Caps retries to a share of recent traffic, so retries cannot multiply an outage.
            #[serde(default)]
            pub retry_budget: RetryBudget,
            /// Active and passive health checking of the targets.
            #[serde(default)]
            pub health_checks: HealthChecks,
            /// Stops sending to a failing service for a while.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub circuit_breaker: Option<CircuitBreaker>,
            $($extra)*
        }
    };
}

service_struct! {
    /// A service as written in a configuration file: its settings, its routes and its policies.
    pub struct Service {
        /// Routes that send requests to this service.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub routes: Vec<Route>,
        /// Policies for every route of this service.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub policies: Vec<PolicySpec>,
    }
}

service_struct! {
    /// A service's own settings, without routes or policies (the admin API's resource body).
    pub struct ServiceSpec {}
}

macro_rules! route_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Unique name across all services.
            pub name: String,
            /// Host names to match: `api.example.com`, `*.example.com` or `api.example.*`.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub hosts: Vec<String>,
            /// Paths to match: `/orders` (prefix, on segment boundaries), `=/orders`
            /// (exact) or `/users/{id}` (template, one segment per parameter).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub paths: Vec<String>,
            /// Methods to match, upper case. Empty means any.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub methods: Vec<String>,
            /// Headers that must be present with one of the listed values (compared case-insensitively).
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub headers: BTreeMap<String, Vec<String>>,
            /// Remove the matched path prefix before forwarding.
            #[serde(default = "default_true")]
            pub strip_path: bool,
            /// Forward the client's `Host` header instead of the target's.
            #[serde(default)]
            pub preserve_host: bool,
            $($extra)*
        }
    };
}

route_struct! {
    /// A route as written in a configuration file, with its policies.
    pub struct Route {
        /// Policies for this route only.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub policies: Vec<PolicySpec>,
    }
}

route_struct! {
    /// A route's own settings, without policies (the admin API's resource body).
    pub struct RouteSpec {}
}

impl Service {
    pub fn from_parts(spec: ServiceSpec, routes: Vec<Route>, policies: Vec<PolicySpec>) -> Self {
        let ServiceSpec {
            name,
            url,
            targets,
            path,
            load_balancing,
            connect_timeout,
            read_timeout,
            timeout,
            retries,
            retry_budget,
            health_checks,
            circuit_breaker,
        } = spec;
        Service {
            name,
            url,
            targets,
            path,
            load_balancing,
            connect_timeout,
            read_timeout,
            timeout,
            retries,
            retry_budget,
            health_checks,
            circuit_breaker,
            routes,
            policies,
        }
    }

    /// Splits into the service's own settings, its routes and its policies.
    pub fn into_parts(self) -> (ServiceSpec, Vec<Route>, Vec<PolicySpec>) {
        let Service {
            name,
            url,
            targets,
            path,
            load_balancing,
            connect_timeout,
            read_timeout,
            timeout,
            retries,
            retry_budget,
            health_checks,
            circuit_breaker,
            routes,
            policies,
        } = self;
        let spec = ServiceSpec {
            name,
            url,
            targets,
            path,
            load_balancing,
            connect_timeout,
            read_timeout,
            timeout,
            retries,
            retry_budget,
            health_checks,
            circuit_breaker,
        };
        (spec, routes, policies)
    }
}

impl Route {
    pub fn from_parts(spec: RouteSpec, policies: Vec<PolicySpec>) -> Self {
        let RouteSpec {
            name,
            hosts,
            paths,
            methods,
            headers,
            strip_path,
            preserve_host,
        } = spec;
        Route {
            name,
            hosts,
            paths,
            methods,
            headers,
            strip_path,
            preserve_host,
            policies,
        }
    }

    pub fn into_parts(self) -> (RouteSpec, Vec<PolicySpec>) {
        let Route {
            name,
            hosts,
            paths,
            methods,
            headers,
            strip_path,
            preserve_host,
            policies,
        } = self;
        (
            RouteSpec {
                name,
                hosts,
                paths,
                methods,
                headers,
                strip_path,
                preserve_host,
            },
            policies,
        )
    }
}

fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_retries() -> u32 {
    2
}

/// One upstream target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`; the host is an IP address or a DNS name.
    pub target: String,
    /// Relative share of traffic, 0 to 65535. A weight of 0 takes the target out of rotation.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

/// How a target is chosen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight relative to its weight.
    LeastConnections,
}

/// A retry budget: retries may add at most `ratio` of the recent request rate,
/// plus `min_per_second`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default = "default_budget_ratio")]
    pub ratio: f64,
    #[serde(default = "default_budget_min")]
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: default_budget_ratio(),
            min_per_second: default_budget_min(),
        }
    }
}

fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min() -> u32 {
    10
}

/// Health checking of a service's targets.
#[derive(
    Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct HealthChecks {
    /// Probe each target over HTTP on an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    /// Eject a target after consecutive failures seen on real traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
}

/// An HTTP probe. A target is healthy after `healthy_threshold` consecutive
/// 2xx/3xx answers and unhealthy after `unhealthy_threshold` consecutive failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthCheck {
    #[serde(default = "default_probe_path")]
    pub path: String,
    #[serde(default = "default_probe_interval")]
    pub interval: Duration,
    #[serde(default = "default_probe_timeout")]
    pub timeout: Duration,
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_probe_path() -> String {
    "/".to_owned()
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Passive checking: `unhealthy_threshold` consecutive connect failures or 5xx
/// answers eject a target for `cooldown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthCheck {
    #[serde(default = "default_passive_threshold")]
    pub unhealthy_threshold: u32,
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
}

fn default_passive_threshold() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(10)
}

/// A service-wide circuit breaker: after `failure_threshold` consecutive failed
/// requests it opens for `open_for`, then lets one trial request through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default = "default_passive_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "default_open_for")]
    pub open_for: Duration,
}

fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

/// A policy and its configuration. The `name` picks the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(tag = "name", content = "config", rename_all = "snake_case")]
pub enum PolicySpec {
    /// Cross-origin resource sharing: answers preflights and adds CORS headers.
    Cors(CorsConfig),
    /// Allow or deny clients by address (CIDR).
    IpRestriction(IpRestrictionConfig),
    /// Refuse request bodies over a size with 413.
    RequestSizeLimit(RequestSizeLimitConfig),
    /// Require a credential (API key, JWT or OAuth token) and scopes.
    Auth(AuthConfig),
    /// Rate limits, quotas and concurrency caps, and the caller's plan.
    RateLimit(RateLimitConfig),
    /// Change the headers sent upstream.
    RequestTransformer(HeaderTransform),
    /// Change the headers sent back to the client.
    ResponseTransformer(HeaderTransform),
}

impl PolicySpec {
    /// The policy's name as written in configuration.
    pub fn name(&self) -> &'static str {
        match self {
            PolicySpec::Cors(_) => "cors",
            PolicySpec::IpRestriction(_) => "ip_restriction",
            PolicySpec::RequestSizeLimit(_) => "request_size_limit",
            PolicySpec::Auth(_) => "auth",
            PolicySpec::RateLimit(_) => "rate_limit",
            PolicySpec::RequestTransformer(_) => "request_transformer",
            PolicySpec::ResponseTransformer(_) => "response_transformer",
        }
    }
}

/// CORS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`), or `*`.
    pub origins: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub methods: Vec<String>,
    /// Allowed request headers. Empty reflects what the preflight asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_headers: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Pass preflight requests to the upstream instead of answering them.
    #[serde(default)]
    pub preflight_continue: bool,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

/// Address rules. A client matching `deny` is refused; when `allow` is
/// non-empty, only matching clients pass. The client address is the peer, or
/// the forwarded address when the peer is a trusted proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    #[schema(value_type = Vec<String>)]
    pub allow: Vec<ipnet::IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    #[schema(value_type = Vec<String>)]
    pub deny: Vec<ipnet::IpNet>,
}

/// Body size limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeLimitConfig {
    /// Largest allowed request body in bytes.
    pub max_bytes: u64,
}

/// Header changes, applied in the order remove, set, add, append.
#[derive(
    Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct HeaderTransform {
    /// Headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Headers to set, replacing any existing value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers to add only when absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Headers to append as an extra value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub append: BTreeMap<String, String>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {location}{path}: {reason}")]
    Parse {
        file: String,
        location: String,
        path: String,
        reason: String,
    },
    #[error("{file}: {}", .errors.iter().map(|e| format!("{}: {}", e.path, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid {
        file: String,
        errors: Vec<FieldError>,
    },
}

impl ConfigError {
    /// Field-level errors, for problem documents.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Io { source, .. } => vec![FieldError {
                path: String::new(),
                reason: source.to_string(),
            }],
            ConfigError::Parse { path, reason, .. } => vec![FieldError {
                path: path.clone(),
                reason: reason.clone(),
            }],
            ConfigError::Invalid { errors, .. } => errors.clone(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a YAML (or JSON) file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        Config::from_yaml(&text, &file)
    }

    /// Parses and validates YAML (JSON is YAML too). `file` names the source in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = match serde_path_to_error::deserialize(de) {
            Ok(c) => c,
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let location = inner
                    .location()
                    .map(|l| format!("line {} column {}: ", l.line(), l.column()))
                    .unwrap_or_default();
                let reason = strip_location(&inner.to_string());
                // serde_yaml may start its message with the same path.
                let reason = reason
                    .strip_prefix(&format!("{path}: "))
                    .map(str::to_owned)
                    .unwrap_or(reason);
                return Err(ConfigError::Parse {
                    file: file.to_owned(),
                    location,
                    path: if path == "." {
                        String::from("(root)")
                    } else {
                        path
                    },
                    reason,
                });
            }
        };
        config.validate().map_err(|errors| ConfigError::Invalid {
            file: file.to_owned(),
            errors,
        })?;
        Ok(config)
    }

    /// Renders as YAML, the format `tollgate export` writes.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// Checks everything serde cannot: names, uniqueness, URLs, paths, hosts, methods, headers.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = validate::Errors::default();
        if self.format_version != 1 {
            errs.push(
                "format_version",
                format!(
                    "unsupported format version {}; this Tollgate reads 1",
                    self.format_version
                ),
            );
        }
        let mut service_names = BTreeSet::new();
        let mut route_names = BTreeSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            let at = format!("services[{i}]");
            if !service_names.insert(svc.name.as_str()) {
                errs.push(
                    format!("{at}.name"),
                    format!("duplicate service name `{}`", svc.name),
                );
            }
            let (spec, routes, policies) = svc.clone().into_parts();
            validate::service(&spec, &at, &mut errs);
            validate::policies(
                &policies,
                Some(&self.jwt_issuers),
                &format!("{at}.policies"),
                &mut errs,
            );
            for (j, route) in routes.iter().enumerate() {
                let rat = format!("{at}.routes[{j}]");
                if !route_names.insert(route.name.clone()) {
                    errs.push(
                        format!("{rat}.name"),
                        format!("duplicate route name `{}`", route.name),
                    );
                }
                let (rspec, rpolicies) = route.clone().into_parts();
                validate::route(&rspec, &rat, &mut errs);
                validate::policies(
                    &rpolicies,
                    Some(&self.jwt_issuers),
                    &format!("{rat}.policies"),
                    &mut errs,
                );
            }
        }
        validate::policies(
            &self.policies,
            Some(&self.jwt_issuers),
            "policies",
            &mut errs,
        );
        let mut issuer_names = BTreeSet::new();
        for (i, iss) in self.jwt_issuers.iter().enumerate() {
            let at = format!("jwt_issuers[{i}]");
            validate::check_name(&iss.name, &at, &mut errs);
            if !issuer_names.insert(iss.name.as_str()) {
                errs.push(
                    format!("{at}.name"),
                    format!("duplicate JWT issuer name `{}`", iss.name),
                );
            }
            identity::issuer(iss, &at, &mut errs);
        }
        let mut plan_names = BTreeSet::new();
        for (i, plan) in self.plans.iter().enumerate() {
            let at = format!("plans[{i}]");
            if !plan_names.insert(plan.name.as_str()) {
                errs.push(
                    format!("{at}.name"),
                    format!("duplicate plan name `{}`", plan.name),
                );
            }
            traffic::plan(plan, &at, &mut errs);
            for (j, api) in plan.apis.iter().enumerate() {
                if !service_names.contains(api.as_str()) {
                    errs.push(
                        format!("{at}.apis[{j}]"),
                        format!("no service is named `{api}`"),
                    );
                }
            }
        }
        errs.finish()
    }

    /// The JSON Schema of the file format.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
    }
}

impl ServiceSpec {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = validate::Errors::default();
        validate::service(self, "", &mut errs);
        errs.finish()
    }
}

impl RouteSpec {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = validate::Errors::default();
        validate::route(self, "", &mut errs);
        errs.finish()
    }
}

impl PolicySpec {
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = validate::Errors::default();
        validate::policies(std::slice::from_ref(self), None, "", &mut errs);
        errs.finish().map_err(|errors| {
            errors
                .into_iter()
                .map(|e| FieldError {
                    path: e.path.strip_prefix("[0].").unwrap_or(&e.path).to_owned(),
                    reason: e.reason,
                })
                .collect()
        })
    }
}

/// serde_yaml appends " at line X column Y" to messages; the location is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests;
