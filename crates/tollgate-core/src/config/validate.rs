//! Semantic checks of the configuration model, reported with their path.

use super::{PolicySpec, RouteSpec, ServiceSpec};
use crate::problem::FieldError;

#[derive(Default)]
pub(super) struct Errors(Vec<FieldError>);

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        let path = path.into();
        let path = path.strip_prefix('.').map(str::to_owned).unwrap_or(path);
        self.0.push(FieldError {
            path,
            reason: reason.into(),
        });
    }
    pub(super) fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// A parsed route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `/orders`: matches `/orders` and `/orders/...`, on segment boundaries.
    Prefix(String),
    /// `=/orders`: matches exactly `/orders`.
    Exact(String),
    /// `/users/{id}/orders`: literal segments and one-segment parameters.
    Template(Vec<Segment>),
}

/// One segment of a templated path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

impl PathPattern {
    /// Number of literal bytes: more literal text is more specific.
    pub fn literal_len(&self) -> usize {
        match self {
            PathPattern::Prefix(p) | PathPattern::Exact(p) => p.len(),
            PathPattern::Template(segs) => segs
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.len() + 1,
                    Segment::Param(_) => 1,
                })
                .sum(),
        }
    }
}

/// Parses a route path as written in configuration.
pub fn parse_path_pattern(raw: &str) -> Result<PathPattern, String> {
    let (exact, path) = match raw.strip_prefix('=') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if !path.starts_with('/') {
        return Err(format!(
            "path `{raw}` must start with `/` (or `=/` for an exact match)"
        ));
    }
    if path.len() > 1024 {
        return Err("path is longer than 1024 bytes".into());
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_ascii_control() || c.is_whitespace() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "path `{raw}` contains {c:?}; a route path is a path only, without query or fragment"
        ));
    }
    if !path.contains('{') && !path.contains('}') {
        return Ok(if exact {
            PathPattern::Exact(path.to_owned())
        } else {
            PathPattern::Prefix(path.to_owned())
        });
    }
    if exact {
        return Err(format!(
            "path `{raw}`: a template is already exact; drop the `=`"
        ));
    }
    let mut segs = Vec::new();
    let mut names = std::collections::HashSet::new();
    for seg in path[1..].split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "path `{raw}`: parameter `{{{name}}}` must be a name of letters, digits and `_`"
                ));
            }
            if !names.insert(name) {
                return Err(format!("path `{raw}`: parameter `{name}` appears twice"));
            }
            segs.push(Segment::Param(name.to_owned()));
        } else if seg.contains('{') || seg.contains('}') {
            return Err(format!(
                "path `{raw}`: a parameter must fill a whole segment, as in `/users/{{id}}`"
            ));
        } else {
            segs.push(Segment::Literal(seg.to_owned()));
        }
    }
    Ok(PathPattern::Template(segs))
}

pub(super) fn check_name(name: &str, at: &str, errs: &mut Errors) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'));
    if !ok {
        errs.push(
            format!("{at}.name"),
            "must be 1 to 128 letters, digits or `._~-`",
        );
    }
}

fn check_host_port(target: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("`{target}` must be `[ipv6]:port`"))?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{h}` is not an IPv6 address"))?;
        (h, p)
    } else {
        target
            .rsplit_once(':')
            .ok_or_else(|| format!("`{target}` must be `host:port`"))?
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return Err(format!("`{host}` is not a valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{port}` is not a valid port")),
    }
}

/// Splits `http://host:port/path` into `host:port` and the base path.
pub(crate) fn parse_upstream_url(url: &str) -> Result<(String, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "scheme `{other}` is not supported for upstreams; use http"
            ));
        }
        None => return Err(format!("`{url}` needs a scheme, as in `http://{url}`")),
    }
    let auth = uri
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if auth.as_str().contains('@') {
        return Err("credentials in the upstream URL are not supported".into());
    }
    if uri.query().is_some() {
        return Err("an upstream URL cannot have a query".into());
    }
    let host_port = match auth.port_u16() {
        Some(_) => auth.as_str().to_owned(),
        None => format!("{}:80", auth.as_str()),
    };
    check_host_port(&host_port)?;
    let path = uri.path();
    let base = if path == "/" {
        String::new()
    } else {
        path.trim_end_matches('/').to_owned()
    };
    Ok((host_port, base))
}

impl ServiceSpec {
    /// The targets and base path this service forwards to, after validation.
    pub fn upstream(&self) -> Result<(Vec<super::Target>, String), String> {
        match (&self.url, self.targets.is_empty()) {
            (Some(url), true) => {
                let (target, base) = parse_upstream_url(url)?;
                if self.path.is_some() {
                    return Err("give the base path inside `url`, not in `path`".into());
                }
                Ok((
                    vec![super::Target {
                        target,
                        weight: 100,
                    }],
                    base,
                ))
            }
            (None, false) => {
                let base = self.path.clone().unwrap_or_default();
                Ok((self.targets.clone(), base.trim_end_matches('/').to_owned()))
            }
            (Some(_), false) => Err("give either `url` or `targets`, not both".into()),
            (None, true) => Err("a service needs `url` or `targets`".into()),
        }
    }
}

pub(super) fn service(s: &ServiceSpec, at: &str, errs: &mut Errors) {
    check_name(&s.name, at, errs);
    if let Err(e) = s.upstream() {
        errs.push(format!("{at}.url"), e);
    }
    if let Some(p) = &s.path
        && !p.starts_with('/')
    {
        errs.push(format!("{at}.path"), "must start with `/`");
    }
    for (i, t) in s.targets.iter().enumerate() {
        if let Err(e) = check_host_port(&t.target) {
            errs.push(format!("{at}.targets[{i}].target"), e);
        }
        if t.weight > 65535 {
            errs.push(format!("{at}.targets[{i}].weight"), "must be at most 65535");
        }
    }
    if !s.targets.is_empty() && s.targets.iter().all(|t| t.weight == 0) {
        errs.push(
            format!("{at}.targets"),
            "at least one target needs a weight above 0",
        );
    }
    if s.connect_timeout.is_zero() {
        errs.push(format!("{at}.connect_timeout"), "must be above 0");
    }
    if s.read_timeout.is_zero() {
        errs.push(format!("{at}.read_timeout"), "must be above 0");
    }
    if s.retries > 10 {
        errs.push(format!("{at}.retries"), "must be at most 10");
    }
    if !(0.0..=1.0).contains(&s.retry_budget.ratio) {
        errs.push(
            format!("{at}.retry_budget.ratio"),
            "must be between 0 and 1",
        );
    }
    if let Some(a) = &s.health_checks.active {
        let hat = format!("{at}.health_checks.active");
        if !a.path.starts_with('/') {
            errs.push(format!("{hat}.path"), "must start with `/`");
        }
        if a.interval.get() < std::time::Duration::from_millis(10) {
            errs.push(format!("{hat}.interval"), "must be at least 10ms");
        }
        if a.timeout.is_zero() {
            errs.push(format!("{hat}.timeout"), "must be above 0");
        }
        if a.healthy_threshold == 0 || a.unhealthy_threshold == 0 {
            errs.push(hat, "thresholds must be at least 1");
        }
    }
    if let Some(p) = &s.health_checks.passive
        && p.unhealthy_threshold == 0
    {
        errs.push(
            format!("{at}.health_checks.passive.unhealthy_threshold"),
            "must be at least 1",
        );
    }
    if let Some(cb) = &s.circuit_breaker
        && cb.failure_threshold == 0
    {
        errs.push(
            format!("{at}.circuit_breaker.failure_threshold"),
            "must be at least 1",
        );
    }
}

fn check_host_pattern(h: &str) -> Result<(), String> {
    let body = h
        .strip_prefix("*.")
        .or_else(|| h.strip_suffix(".*"))
        .unwrap_or(h);
    if body.is_empty() || body.len() > 253 {
        return Err(format!("`{h}` is not a host name"));
    }
    if body.contains('*') {
        return Err(format!(
            "`{h}`: a wildcard may only be the first or last label"
        ));
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "`{h}` is not a host name; write host names without scheme or port"
        ));
    }
    Ok(())
}

pub(super) fn route(r: &RouteSpec, at: &str, errs: &mut Errors) {
    check_name(&r.name, at, errs);
    if r.hosts.is_empty() && r.paths.is_empty() && r.methods.is_empty() && r.headers.is_empty() {
        errs.push(
            at.to_owned(),
            "a route needs at least one of hosts, paths, methods or headers",
        );
    }
    for (i, h) in r.hosts.iter().enumerate() {
        if let Err(e) = check_host_pattern(h) {
            errs.push(format!("{at}.hosts[{i}]"), e);
        }
    }
    for (i, p) in r.paths.iter().enumerate() {
        if let Err(e) = parse_path_pattern(p) {
            errs.push(format!("{at}.paths[{i}]"), e);
        }
    }
    for (i, m) in r.methods.iter().enumerate() {
        let ok = !m.is_empty()
            && m.len() <= 32
            && m.chars()
                .all(|c| c.is_ascii_uppercase() || c == '-' || c == '_');
        if !ok {
            errs.push(
                format!("{at}.methods[{i}]"),
                format!("`{m}` is not an upper-case method token"),
            );
        }
    }
    for (name, values) in &r.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errs.push(format!("{at}.headers.{name}"), "is not a valid header name");
        }
        if values.is_empty() {
            errs.push(format!("{at}.headers.{name}"), "needs at least one value");
        }
        for v in values {
            if http::HeaderValue::from_str(v).is_err() {
                errs.push(
                    format!("{at}.headers.{name}"),
                    format!("`{v}` is not a valid header value"),
                );
            }
        }
    }
}

fn check_headers<'a>(names: impl Iterator<Item = &'a String>, at: &str, errs: &mut Errors) {
    for n in names {
        if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
            errs.push(format!("{at}.{n}"), "is not a valid header name");
        }
    }
}

pub(super) fn policies(
    list: &[PolicySpec],
    issuers: Option<&[super::JwtIssuerSpec]>,
    at: &str,
    errs: &mut Errors,
) {
    let mut seen = std::collections::HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let pat = format!("{at}[{i}]");
        if !seen.insert(p.name()) {
            errs.push(
                format!("{pat}.name"),
                format!("policy `{}` is attached twice at the same level", p.name()),
            );
        }
        match p {
            PolicySpec::Cors(c) => {
                if c.origins.is_empty() {
                    errs.push(
                        format!("{pat}.config.origins"),
                        "needs at least one origin, or `*`",
                    );
                }
                for (j, o) in c.origins.iter().enumerate() {
                    let ok = o == "*"
                        || (o.starts_with("http://") || o.starts_with("https://"))
                            && !o[8..].contains('/');
                    if !ok {
                        errs.push(
                            format!("{pat}.config.origins[{j}]"),
                            format!("`{o}` is not an origin such as `https://app.example.com`"),
                        );
                    }
                }
                if c.credentials && c.origins.iter().any(|o| o == "*") {
                    errs.push(
                        format!("{pat}.config.credentials"),
                        "cannot be used with the `*` origin (Fetch standard)",
                    );
                }
                check_headers(
                    c.headers.iter().chain(&c.exposed_headers),
                    &format!("{pat}.config.headers"),
                    errs,
                );
            }
            PolicySpec::IpRestriction(c) => {
                if c.allow.is_empty() && c.deny.is_empty() {
                    errs.push(format!("{pat}.config"), "give `allow` or `deny`");
                }
            }
            PolicySpec::RequestSizeLimit(_) => {}
            PolicySpec::RateLimit(c) => {
                super::traffic::rate_limit(c, &format!("{pat}.config"), errs)
            }
            PolicySpec::Auth(c) => {
                super::identity::auth(c, issuers, &format!("{pat}.config"), errs)
            }
            PolicySpec::RequestTransformer(t) | PolicySpec::ResponseTransformer(t) => {
                check_headers(t.remove.iter(), &format!("{pat}.config.remove"), errs);
                for (kind, map) in [("set", &t.set), ("add", &t.add), ("append", &t.append)] {
                    for (n, v) in map {
                        if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                            errs.push(
                                format!("{pat}.config.{kind}.{n}"),
                                "is not a valid header name",
                            );
                        }
                        if http::HeaderValue::from_str(v).is_err() {
                            errs.push(
                                format!("{pat}.config.{kind}.{n}"),
                                "is not a valid header value",
                            );
                        }
                    }
                }
            }
        }
    }
}
