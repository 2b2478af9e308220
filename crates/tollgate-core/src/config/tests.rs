use super::*;

const KONG_STYLE: &str = r#"
services:
  - name: orders
    url: http://127.0.0.1:9000
    routes:
      - name: orders
        paths: [/orders]
        strip_path: true
"#;

#[test]
fn reads_the_kong_style_shape() {
    let cfg = Config::from_yaml(KONG_STYLE, "kong.yaml").expect("valid");
    assert_eq!(cfg.services.len(), 1);
    let svc = &cfg.services[0];
    assert_eq!(svc.url.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(svc.routes[0].paths, vec!["/orders"]);
    assert!(svc.routes[0].strip_path);
    assert_eq!(svc.connect_timeout, Duration::from_secs(5));
}

#[test]
fn yaml_round_trips() {
    let cfg = Config::from_yaml(KONG_STYLE, "a.yaml").expect("valid");
    let again = Config::from_yaml(&cfg.to_yaml(), "b.yaml").expect("re-read");
    assert_eq!(cfg, again);
}

#[test]
fn unknown_field_names_file_path_and_reason() {
    let text = "services:\n  - name: orders\n    url: http://127.0.0.1:9000\n    routes:\n      - name: r\n        pathz: [/x]\n";
    let err = Config::from_yaml(text, "bad.yaml").unwrap_err().to_string();
    assert!(err.starts_with("bad.yaml: line 6"), "{err}");
    assert!(err.contains("services[0].routes[0]"), "{err}");
    assert!(err.contains("unknown field `pathz`"), "{err}");
}

#[test]
fn semantic_errors_are_collected_with_paths() {
    let text = r#"
services:
  - name: a
    url: ftp://x
    routes:
      - name: r1
        paths: [orders, "/u/{id}/{id}"]
        methods: [get]
  - name: a
    targets: [{target: "nohost"}]
    routes:
      - name: r1
        hosts: ["*.*.example.com"]
policies:
  - name: ip_restriction
    config: {allow: []}
"#;
    let err = Config::from_yaml(text, "x.yaml").unwrap_err();
    let paths: Vec<String> = err.field_errors().into_iter().map(|e| e.path).collect();
    for want in [
        "services[0].url",
        "services[0].routes[0].paths[0]",
        "services[0].routes[0].paths[1]",
        "services[0].routes[0].methods[0]",
        "services[1].name",
        "services[1].targets[0].target",
        "services[1].routes[0].name",
        "services[1].routes[0].hosts[0]",
        "policies[0].config",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "missing {want} in {paths:?}"
        );
    }
}

#[test]
fn invalid_cidr_is_a_parse_error_with_path() {
    let text = "policies:\n  - name: ip_restriction\n    config: {allow: [\"10.0.0.0/99\"]}\n";
    let err = Config::from_yaml(text, "c.yaml").unwrap_err().to_string();
    assert!(err.contains("policies[0]"), "{err}");
}

#[test]
fn path_patterns() {
    assert_eq!(
        parse_path_pattern("/a").expect("ok"),
        PathPattern::Prefix("/a".into())
    );
    assert_eq!(
        parse_path_pattern("=/a").expect("ok"),
        PathPattern::Exact("/a".into())
    );
    assert!(
        matches!(parse_path_pattern("/u/{id}").expect("ok"), PathPattern::Template(s) if s.len() == 2)
    );
    assert!(parse_path_pattern("/u/x{id}").is_err());
    assert!(parse_path_pattern("/u?x=1").is_err());
    assert!(parse_path_pattern("=/u/{id}").is_err());
}

#[test]
fn upstream_url_parsing() {
    let spec = |url: &str| {
        let (s, _, _) = Service::from_parts(
            ServiceSpec {
                name: "s".into(),
                url: Some(url.into()),
                targets: vec![],
                path: None,
                load_balancing: LoadBalancing::RoundRobin,
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                timeout: Duration::default(),
                retries: 0,
                retry_budget: RetryBudget::default(),
                health_checks: HealthChecks::default(),
                circuit_breaker: None,
            },
            vec![],
            vec![],
        )
        .into_parts();
        s.upstream()
    };
    let (t, base) = spec("http://example.com/api/").expect("ok");
    assert_eq!(t[0].target, "example.com:80");
    assert_eq!(base, "/api");
    assert!(spec("https://x:1").is_err());
    assert!(spec("http://u:p@x:1").is_err());
}

/// The committed schema in docs/ must match the code. Regenerate with
/// `TOLLGATE_BLESS=1 cargo test -p tollgate-core`.
#[test]
fn json_schema_snapshot_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.schema.json");
    let fresh = serde_json::to_string_pretty(&Config::json_schema()).expect("schema") + "\n";
    if std::env::var_os("TOLLGATE_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/config.schema.json is stale; run TOLLGATE_BLESS=1 cargo test -p tollgate-core"
    );
}

/// Every example configuration in the repository (and every benchmark
/// scenario) must load.
#[test]
fn example_configs_are_valid() {
    for sub in ["../../examples", "../../bench/scenarios"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(sub);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("the directory exists") {
            let path = entry.expect("entry").path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n > 0, "no configs found in {sub}");
    }
}

const PLANS: &str = r#"
plans:
  - name: free
    limits: {per_second: 5, monthly_quota: 1000}
    apis: [orders]
    pricing: {currency: USD}
  - name: pro
    limits: {per_second: 50, burst: 100, per_hour: 100000, monthly_quota: 1000000, concurrency: 20}
    scopes: [orders:read]
    pricing: {currency: EUR, monthly_fee: 4900, included_requests: 1000000, overage_per_1000: 5}
services:
  - name: orders
    url: http://127.0.0.1:9000
    routes:
      - name: orders
        paths: [/orders]
        policies:
          - name: rate_limit
            config:
              subscription: required
              on_backend_error: closed
              limits:
                - {requests: 10, per: 1s, burst: 20, by: ip}
                - {name: tenant, requests: 600, per: 1m, algorithm: sliding_window, by: "header:X-Tenant"}
                - {name: monthly, requests: 5000, per: month, timezone: Europe/Berlin, by: "claim:sub"}
              concurrency: {max: 4, by: consumer}
"#;

#[test]
fn plans_and_rate_limits_load() {
    let c = Config::from_yaml(PLANS, "plans.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.plans.len(), 2);
    assert_eq!(c.plans[1].limits.concurrency, Some(20));
    // Round trip through the export format.
    let again = Config::from_yaml(&c.to_yaml(), "export.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, c);
}

#[test]
fn bad_plans_and_limits_name_their_path() {
    let cases = [
        ("limits: {per_second: 0}", "plans[0].limits.per_second"),
        ("limits: {burst: 5}", "plans[0].limits.burst"),
        ("apis: [nowhere]", "plans[0].apis[0]"),
        ("pricing: {currency: usd}", "plans[0].pricing.currency"),
    ];
    for (plan, path) in cases {
        let yaml = format!(
            "plans:\n  - name: p\n    {plan}\nservices:\n  - name: orders\n    url: http://127.0.0.1:9000\n"
        );
        let err = Config::from_yaml(&yaml, "p.yaml")
            .expect_err(plan)
            .to_string();
        assert!(err.contains(path), "{plan}: {err}");
    }
    let limit = |l: &str| {
        format!(
            "services:\n  - name: s\n    url: http://127.0.0.1:9000\n    policies:\n      - name: rate_limit\n        config:\n          limits: [{l}]\n"
        )
    };
    let cases = [
        ("{requests: 0, per: 1s}", "limits[0].requests"),
        ("{requests: 5, per: month, burst: 2}", "limits[0].burst"),
        (
            "{requests: 5, per: 1s, timezone: Europe/Berlin}",
            "limits[0].timezone",
        ),
        (
            "{requests: 5, per: month, timezone: Mars/Base}",
            "limits[0].timezone",
        ),
        (
            "{requests: 5, per: 1s, algorithm: sliding_window, burst: 9}",
            "limits[0].burst",
        ),
        (
            "{requests: 5, per: weekly}",
            "neither a duration nor `month`",
        ),
        ("{requests: 5, per: 1s, by: user}", "unknown `by` value"),
    ];
    for (l, want) in cases {
        let err = Config::from_yaml(&limit(l), "l.yaml")
            .expect_err(l)
            .to_string();
        assert!(err.contains(want), "{l}: {err}");
    }
}

const ISSUERS: &str = r#"
jwt_issuers:
  - name: idp
    issuer: https://idp.example.com/
    audiences: [https://api.example.com]
    algorithm: RS256
  - name: partner
    issuer: partner
    audiences: [api]
    algorithm: HS256
    secret_env: PARTNER_JWT_SECRET
    organization: org_01jd5m3x9q7k2v8r4t6y0w1zab
services:
  - name: orders
    url: http://127.0.0.1:9000
    routes:
      - name: orders
        paths: [/orders]
        policies:
          - name: auth
            config: {scopes: ["orders:read"], issuers: [idp], environment: live}
"#;

#[test]
fn auth_policies_and_jwt_issuers_read_with_their_defaults() {
    let cfg = Config::from_yaml(ISSUERS, "auth.yaml").expect("valid");
    assert_eq!(cfg.jwt_issuers.len(), 2);
    let idp = &cfg.jwt_issuers[0];
    assert_eq!(idp.algorithm, JwtAlgorithm::RS256);
    assert_eq!(idp.leeway, Duration::from_secs(30));
    assert_eq!(idp.claims.scopes, "scope");
    let PolicySpec::Auth(auth) = &cfg.services[0].routes[0].policies[0] else {
        panic!("auth policy");
    };
    assert_eq!(auth.accept.len(), 3);
    assert_eq!(
        auth.key_sources,
        vec![KeySource::Bearer, KeySource::XApiKey]
    );
    assert!(auth.hide_credentials);
    let again = Config::from_yaml(&cfg.to_yaml(), "again.yaml").expect("round trip");
    assert_eq!(again, cfg);
}

#[test]
fn issuer_and_auth_mistakes_are_reported_with_paths() {
    let text = r#"
jwt_issuers:
  - name: a
    issuer: https://a.example.com
    audiences: []
    algorithm: HS256
  - name: a
    issuer: b
    audiences: [x]
    algorithm: RS256
    secret_env: NOPE
    jwks_url: "not a url"
policies:
  - name: auth
    config: {accept: [], scopes: ["two words"], issuers: [missing]}
"#;
    let err = Config::from_yaml(text, "bad.yaml").unwrap_err();
    let errs = err.field_errors();
    let has = |path: &str, reason: &str| {
        errs.iter()
            .any(|e| e.path == path && e.reason.contains(reason))
    };
    assert!(has("jwt_issuers[0].audiences", "at least one"), "{errs:?}");
    assert!(has("jwt_issuers[0].secret_env", "HS256"), "{errs:?}");
    assert!(has("jwt_issuers[1].name", "duplicate"), "{errs:?}");
    assert!(has("jwt_issuers[1].secret_env", "only HS256"), "{errs:?}");
    assert!(
        has("jwt_issuers[1].jwks_url", "not an absolute"),
        "{errs:?}"
    );
    assert!(has("policies[0].config.accept", "at least one"), "{errs:?}");
    assert!(
        has("policies[0].config.scopes[0]", "without spaces"),
        "{errs:?}"
    );
    assert!(
        has("policies[0].config.issuers[0]", "no JWT issuer"),
        "{errs:?}"
    );
    // `alg: none` is not an algorithm one can configure.
    let none = "jwt_issuers: [{name: n, issuer: n, audiences: [a], algorithm: none}]";
    assert!(Config::from_yaml(none, "none.yaml").is_err());
}
