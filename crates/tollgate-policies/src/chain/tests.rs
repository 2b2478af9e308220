use super::*;
use crate::{Reply, RequestCtx};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use std::sync::Arc;
use tollgate_core::config::{
    CorsConfig, HeaderTransform, IpRestrictionConfig, RequestSizeLimitConfig,
};

fn ctx(ip: &str) -> RequestCtx {
    let ip = ip.parse().expect("ip");
    RequestCtx::new(
        HeaderValue::from_static("req-1"),
        ip,
        ip,
        Arc::from("r"),
        Arc::from("s"),
    )
}

fn parts(method: Method, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::builder().method(method).uri("/x");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn ip_rule(allow: &[&str], deny: &[&str]) -> PolicySpec {
    PolicySpec::IpRestriction(IpRestrictionConfig {
        allow: allow.iter().map(|s| s.parse().expect("cidr")).collect(),
        deny: deny.iter().map(|s| s.parse().expect("cidr")).collect(),
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt")
        .block_on(f)
}

fn problem_code(r: &Reply) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["code"].as_str().expect("code").to_owned()
}

#[test]
fn narrower_level_wins_and_order_is_fixed() {
    let global = vec![
        PolicySpec::ResponseTransformer(HeaderTransform::default()),
        ip_rule(&["10.0.0.0/8"], &[]),
    ];
    let route = vec![
        ip_rule(&["192.168.0.0/16"], &[]),
        PolicySpec::RequestSizeLimit(RequestSizeLimitConfig { max_bytes: 1 }),
    ];
    let merged = merge_specs(&global, &[], &route);
    let names: Vec<_> = merged.iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        [
            "ip_restriction",
            "request_size_limit",
            "response_transformer"
        ]
    );
    assert_eq!(
        merged[0], &route[0],
        "the route's ip rule replaces the global one"
    );
}

#[test]
fn ip_restriction_deny_beats_allow_and_mapped_v4_matches() {
    let chain = Chain::compile(
        &[ip_rule(&["10.0.0.0/8"], &["10.1.0.0/16"])],
        &[],
        &[],
        &env(),
    );
    for (ip, ok) in [
        ("10.2.3.4", true),
        ("10.1.2.3", false),
        ("192.168.1.1", false),
        ("::ffff:10.2.3.4", true),
    ] {
        let mut c = ctx(ip);
        let res = block_on(chain.access(&mut c, &mut parts(Method::GET, &[])));
        match res {
            Ok(()) => assert!(ok, "{ip} should be refused"),
            Err(r) => {
                assert!(!ok, "{ip} should pass");
                assert_eq!(r.status, StatusCode::FORBIDDEN);
                assert_eq!(problem_code(&r), "ip_forbidden");
            }
        }
    }
}

fn cors(origins: &[&str], credentials: bool) -> Chain {
    Chain::compile(
        &[],
        &[],
        &[PolicySpec::Cors(CorsConfig {
            origins: origins.iter().map(|s| s.to_string()).collect(),
            methods: vec!["GET".into(), "POST".into()],
            headers: vec![],
            exposed_headers: vec!["x-total".into()],
            credentials,
            max_age: Some(tollgate_core::Duration::from_secs(600)),
            preflight_continue: false,
        })],
        &env(),
    )
}

#[test]
fn cors_preflight_is_answered_for_allowed_origins_only() {
    let chain = cors(&["https://app.example.com"], true);
    let mut c = ctx("127.0.0.1");
    let mut req = parts(
        Method::OPTIONS,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-a"),
        ],
    );
    let reply = block_on(chain.access(&mut c, &mut req)).expect_err("preflight answered");
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reply.headers[header::ACCESS_CONTROL_ALLOW_METHODS],
        "GET, POST"
    );
    assert_eq!(reply.headers[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-a");
    assert_eq!(reply.headers[header::ACCESS_CONTROL_MAX_AGE], "600");
    let mut res = Response::new(()).into_parts().0;
    chain.response(&mut c, &mut res, &mut None);
    assert_eq!(
        res.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(
        res.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
        "true"
    );
    assert_eq!(res.headers[header::VARY], "Origin");

    let mut c = ctx("127.0.0.1");
    let mut req = parts(
        Method::OPTIONS,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
    );
    let reply = block_on(chain.access(&mut c, &mut req)).expect_err("refused");
    assert_eq!(problem_code(&reply), "cors_rejected");

    let mut c = ctx("127.0.0.1");
    let mut req = parts(
        Method::OPTIONS,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "DELETE"),
        ],
    );
    let reply = block_on(chain.access(&mut c, &mut req)).expect_err("method refused");
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // A simple request from an unknown origin passes without CORS headers.
    let mut c = ctx("127.0.0.1");
    block_on(chain.access(
        &mut c,
        &mut parts(Method::GET, &[("origin", "https://evil.example")]),
    ))
    .expect("continues");
    let mut res = Response::new(()).into_parts().0;
    chain.response(&mut c, &mut res, &mut None);
    assert!(
        !res.headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[test]
fn cors_wildcard_sends_star_and_exposes() {
    let chain = cors(&["*"], false);
    let mut c = ctx("127.0.0.1");
    block_on(chain.access(
        &mut c,
        &mut parts(Method::GET, &[("origin", "https://any.example")]),
    ))
    .expect("continues");
    let mut res = Response::new(()).into_parts().0;
    chain.response(&mut c, &mut res, &mut None);
    assert_eq!(res.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(
        res.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "x-total"
    );
    assert!(!res.headers.contains_key(header::VARY));
}

#[test]
fn size_limit_refuses_declared_length_and_sets_streaming_limit() {
    let chain = Chain::compile(
        &[],
        &[PolicySpec::RequestSizeLimit(RequestSizeLimitConfig {
            max_bytes: 10,
        })],
        &[],
        &env(),
    );
    let mut c = ctx("127.0.0.1");
    let r = block_on(chain.access(
        &mut c,
        &mut parts(Method::POST, &[("content-length", "11")]),
    ))
    .expect_err("too big");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_code(&r), "payload_too_large");
    let mut c = ctx("127.0.0.1");
    block_on(chain.access(
        &mut c,
        &mut parts(Method::POST, &[("transfer-encoding", "chunked")]),
    ))
    .expect("streams");
    assert_eq!(c.body_limit, Some(10));
}

#[test]
fn transformers_apply_in_documented_order() {
    let t = HeaderTransform {
        remove: vec!["x-drop".into()],
        set: [("x-set".to_string(), "1".to_string())].into(),
        add: [
            ("x-add".to_string(), "new".to_string()),
            ("x-keep".to_string(), "new".to_string()),
        ]
        .into(),
        append: [("x-multi".to_string(), "b".to_string())].into(),
    };
    let chain = Chain::compile(
        &[PolicySpec::RequestTransformer(t.clone())],
        &[PolicySpec::ResponseTransformer(t)],
        &[],
        &env(),
    );
    let mut c = ctx("127.0.0.1");
    let mut req = parts(
        Method::GET,
        &[
            ("x-drop", "1"),
            ("x-set", "0"),
            ("x-keep", "old"),
            ("x-multi", "a"),
        ],
    );
    chain.upstream_request(&mut c, &mut req);
    assert!(!req.headers.contains_key("x-drop"));
    assert_eq!(req.headers["x-set"], "1");
    assert_eq!(req.headers["x-add"], "new");
    assert_eq!(req.headers["x-keep"], "old");
    let multi: Vec<_> = req.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    let mut res = Response::builder()
        .header("x-drop", "1")
        .body(())
        .expect("res")
        .into_parts()
        .0;
    chain.response(&mut c, &mut res, &mut None);
    assert!(!res.headers.contains_key("x-drop"));
    assert_eq!(res.headers["x-set"], "1");
}

fn env() -> crate::PolicyEnv {
    crate::PolicyEnv::new(tollgate_identity::authn::Authenticator::new(
        tollgate_identity::apikey::Pepper::new(&[9u8; 32]).expect("pepper"),
    ))
}
