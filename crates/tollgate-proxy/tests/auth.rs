//! The `auth` policy end to end: API keys from the in-memory key ring,
//! Tollgate's own OAuth2 access tokens, scopes, and the identity headers the
//! upstream receives. External JWT issuers are covered in
//! tollgate-identity's tests; the binary's tests cover keys made through the
//! admin API and the store.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use tollgate_core::identity::KeyEnvironment;
use tollgate_core::ids::{AppId, ClientId, KeyId, OrgId};
use tollgate_identity::apikey::generate;
use tollgate_identity::keyring::KeyEntry;
use tollgate_identity::oauth::keys::{generate_signing_key, hash_client_secret};
use tollgate_identity::oauth::{
    ClientEntry, OAuthServer, OAuthSettings, SigningMaterial, TokenRevoker,
};

fn auth(config: Value) -> Value {
    json!({"name": "auth", "config": config})
}

struct Ids {
    org: OrgId,
    app: AppId,
    key: KeyId,
}

/// Adds a key to the gateway's ring; returns the secret.
fn add_key(
    gw: &TestGateway,
    env: KeyEnvironment,
    scopes: &[&str],
    expires: Option<i64>,
) -> (String, Ids) {
    let secret = generate(env).expect("rng").secret;
    let ids = Ids {
        org: OrgId::new(),
        app: AppId::new(),
        key: KeyId::new(),
    };
    let ring = gw.gw.authenticator().keys();
    ring.upsert(
        ring.pepper().hash(&secret),
        KeyEntry::new(
            ids.key.clone(),
            ids.org.clone(),
            ids.app.clone(),
            env,
            scopes.iter().map(|s| s.to_string()).collect(),
            expires,
        ),
    );
    (secret, ids)
}

async fn keyed_gateway(routes: Value) -> (TestGateway, Upstream) {
    let up = Upstream::echo("up").await;
    let gw = TestGateway::start(&one_service(&up.url(), routes)).await;
    (gw, up)
}

#[tokio::test]
async fn a_route_without_a_credential_gets_401_with_a_bearer_challenge() {
    let (gw, up) = keyed_gateway(json!([
        {"name": "api", "paths": ["/api"], "policies": [auth(json!({"scopes": ["orders:read"]}))]}
    ]))
    .await;
    let r = get(&gw.url("/api/orders")).await;
    assert_eq!(r.problem(401), "credential_missing");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\", scope=\"orders:read\"")
    );
    assert_eq!(up.stats.requests(), 0);
}

#[tokio::test]
async fn a_valid_key_passes_in_either_header_and_the_upstream_learns_who_called() {
    let (gw, _up) = keyed_gateway(json!([
        {"name": "api", "paths": ["/api"], "policies": [auth(json!({"scopes": ["orders:read"]}))]}
    ]))
    .await;
    let (key, ids) = add_key(
        &gw,
        KeyEnvironment::Live,
        &["orders:read", "orders:write"],
        None,
    );
    let c = client();
    let bearer = format!("Bearer {key}");
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("x-api-key", key.as_str())],
    ] {
        let mut headers = headers.clone();
        // Forged identity headers never reach the upstream.
        headers.push(("x-tollgate-org", "org_forged"));
        headers.push(("x-tollgate-scopes", "admin"));
        let r = c
            .request("GET", &gw.url("/api/orders"), &headers, empty())
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let e = r.echo();
        assert_eq!(
            e.header("x-tollgate-org").as_deref(),
            Some(ids.org.as_str())
        );
        assert_eq!(
            e.header("x-tollgate-app").as_deref(),
            Some(ids.app.as_str())
        );
        assert_eq!(
            e.header("x-tollgate-key-id").as_deref(),
            Some(ids.key.as_str())
        );
        assert_eq!(
            e.header("x-tollgate-scopes").as_deref(),
            Some("orders:read orders:write")
        );
        assert_eq!(
            e.header("x-tollgate-credential").as_deref(),
            Some("api_key")
        );
        assert_eq!(e.header("x-tollgate-environment").as_deref(), Some("live"));
        assert_eq!(e.header_all("x-tollgate-org").len(), 1);
        // The credential itself is not passed on.
        assert_eq!(e.header("authorization"), None);
        assert_eq!(e.header("x-api-key"), None);
    }
}

/// The gateway's own fields (identity, forwarding, request id) are sent
/// encoded beside the client's; a request transformer still sees and edits
/// them as fields of the request.
#[tokio::test]
async fn a_request_transformer_edits_the_gateways_own_fields() {
    let transform = json!({"name": "request_transformer", "config": {
        "remove": ["x-forwarded-for", "x-tollgate-scopes"],
        "set": {"x-request-id": "set-by-policy"},
        "append": {"x-tollgate-app": "appended"},
    }});
    let (gw, _up) = keyed_gateway(json!([
        {"name": "plain", "paths": ["/plain"], "policies": [auth(json!({}))]},
        {"name": "edited", "paths": ["/edited"], "policies": [auth(json!({})), transform]},
    ]))
    .await;
    let (key, ids) = add_key(&gw, KeyEnvironment::Live, &["orders:read"], None);
    let c = client();
    let sent = [
        ("x-api-key", key.as_str()),
        ("x-forwarded-for", "198.51.100.1"),
        ("x-request-id", "from-client"),
    ];
    let r = c.request("GET", &gw.url("/plain"), &sent, empty()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = r.echo();
    assert_eq!(e.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(e.header_all("x-request-id"), ["from-client"]);
    assert_eq!(e.header_all("x-tollgate-scopes"), ["orders:read"]);
    assert_eq!(e.header_all("x-tollgate-app"), [ids.app.as_str()]);

    let r = c.request("GET", &gw.url("/edited"), &sent, empty()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = r.echo();
    assert_eq!(e.header("x-forwarded-for"), None);
    assert_eq!(e.header("x-tollgate-scopes"), None);
    assert_eq!(e.header_all("x-request-id"), ["set-by-policy"]);
    assert_eq!(
        e.header_all("x-tollgate-app"),
        [ids.app.as_str(), "appended"]
    );
    assert_eq!(e.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(
        e.header_all("x-tollgate-org"),
        [ids.org.as_str()],
        "the key's other fields are still sent once"
    );
    // The client still gets the request's own id back.
    assert_eq!(r.header("x-request-id"), Some("from-client"));
}

#[tokio::test]
async fn forged_identity_headers_are_removed_on_routes_without_auth_too() {
    let (gw, _up) = keyed_gateway(json!([{"name": "open", "paths": ["/open"]}])).await;
    let r = client()
        .request(
            "GET",
            &gw.url("/open"),
            &[
                ("x-tollgate-org", "org_forged"),
                ("X-Tollgate-Key-Id", "key_x"),
                ("x-other", "kept"),
            ],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200);
    let e = r.echo();
    assert_eq!(e.header("x-tollgate-org"), None);
    assert_eq!(e.header("x-tollgate-key-id"), None);
    assert_eq!(e.header("x-other").as_deref(), Some("kept"));
}

#[tokio::test]
async fn every_kind_of_bad_key_is_refused_with_401_invalid_token() {
    let (gw, up) = keyed_gateway(json!([
        {"name": "api", "paths": ["/api"], "policies": [auth(json!({}))]}
    ]))
    .await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let (good, _) = add_key(&gw, KeyEnvironment::Live, &[], None);
    let (expired, _) = add_key(&gw, KeyEnvironment::Live, &[], Some(now_ms - 1));
    let unknown = generate(KeyEnvironment::Live).expect("rng").secret;
    let mut typo = good.clone().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    let lookups = gw.gw.authenticator().keys().lookups();
    let c = client();
    for (key, why) in [
        ("tg_live_short", "wrong length"),
        (typo.as_str(), "checksum"),
        (unknown.as_str(), "not valid"),
        (expired.as_str(), "expired"),
    ] {
        let r = c
            .request("GET", &gw.url("/api"), &[("x-api-key", key)], empty())
            .await;
        assert_eq!(r.problem(401), "credential_invalid");
        assert!(
            r.json()["detail"].as_str().is_some_and(|d| d.contains(why)),
            "{why}: {}",
            r.json()
        );
        let challenge = r.header("www-authenticate").expect("challenge");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(
            !r.json().to_string().contains(key),
            "the key is never echoed"
        );
    }
    // Malformed keys and checksum failures were refused without a lookup.
    assert_eq!(gw.gw.authenticator().keys().lookups(), lookups + 2);
    assert_eq!(up.stats.requests(), 0);
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let (gw, _up) = keyed_gateway(json!([
        {"name": "api", "paths": ["/api"], "policies": [auth(json!({}))]}
    ]))
    .await;
    let (key, ids) = add_key(&gw, KeyEnvironment::Live, &[], None);
    let c = client();
    let url = gw.url("/api");
    let headers = [("x-api-key", key.as_str())];
    assert_eq!(c.request("GET", &url, &headers, empty()).await.status, 200);
    assert!(gw.gw.authenticator().keys().remove(&ids.key));
    assert_eq!(
        c.request("GET", &url, &headers, empty()).await.problem(401),
        "credential_invalid"
    );
}

#[tokio::test]
async fn missing_scopes_get_403_with_an_insufficient_scope_challenge() {
    let (gw, up) = keyed_gateway(json!([
        {"name": "api", "paths": ["/api"], "policies": [auth(json!({"scopes": ["orders:read", "orders:write"]}))]}
    ]))
    .await;
    let (key, _) = add_key(&gw, KeyEnvironment::Live, &["orders:read"], None);
    let r = client()
        .request(
            "GET",
            &gw.url("/api"),
            &[("x-api-key", key.as_str())],
            empty(),
        )
        .await;
    assert_eq!(r.problem(403), "insufficient_scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            "Bearer realm=\"tollgate\", error=\"insufficient_scope\", scope=\"orders:read orders:write\""
        )
    );
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("orders:write")
    );
    assert_eq!(up.stats.requests(), 0);
}

#[tokio::test]
async fn routes_choose_credential_types_key_sources_and_environments() {
    let (gw, _up) = keyed_gateway(json!([
        {"name": "jwt-only", "paths": ["/jwt"], "policies": [auth(json!({"accept": ["jwt", "oauth"]}))]},
        {"name": "header-only", "paths": ["/header"], "policies": [auth(json!({"key_sources": ["x_api_key"]}))]},
        {"name": "test-only", "paths": ["/sandbox"], "policies": [auth(json!({"environment": "test"}))]},
        {"name": "keys-only", "paths": ["/keys"], "policies": [auth(json!({"accept": ["api_key"]}))]}
    ]))
    .await;
    let (live, _) = add_key(&gw, KeyEnvironment::Live, &[], None);
    let (test, _) = add_key(&gw, KeyEnvironment::Test, &[], None);
    let c = client();
    let call = |path: &'static str, h: &'static str, v: String| {
        let c = &c;
        let url = gw.url(path);
        async move { c.request("GET", &url, &[(h, v.as_str())], empty()).await }
    };
    assert_eq!(
        call("/jwt", "x-api-key", live.clone()).await.problem(401),
        "credential_invalid"
    );
    assert_eq!(
        call("/header", "authorization", format!("Bearer {live}"))
            .await
            .problem(401),
        "credential_invalid"
    );
    assert_eq!(call("/header", "x-api-key", live.clone()).await.status, 200);
    assert_eq!(
        call("/sandbox", "x-api-key", live.clone())
            .await
            .problem(401),
        "credential_invalid"
    );
    let r = call("/sandbox", "x-api-key", test.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echo().header("x-tollgate-environment").as_deref(),
        Some("test")
    );
    assert_eq!(
        call("/keys", "authorization", "Bearer a.b.c".into())
            .await
            .problem(401),
        "credential_invalid"
    );
    assert_eq!(
        call("/keys", "authorization", "Basic dXNlcjpwYXNz".into())
            .await
            .problem(401),
        "credential_missing"
    );
}

// ------------------------------------------------------------------ OAuth2

#[derive(Default)]
struct CountingRevoker(AtomicUsize);

impl TokenRevoker for CountingRevoker {
    fn revoke(
        &self,
        _jti: String,
        _client: ClientId,
        _expires_at: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

struct OAuthFixture {
    gw: TestGateway,
    _up: Upstream,
    client_id: ClientId,
    secret: String,
    org: OrgId,
    app: AppId,
    revoker: Arc<CountingRevoker>,
}

async fn oauth_gateway() -> OAuthFixture {
    oauth_gateway_with(settings()).await
}

async fn oauth_gateway_with(s: tollgate_proxy::ProxySettings) -> OAuthFixture {
    let up = Upstream::echo("up").await;
    let routes = json!([
        {"name": "read", "paths": ["/read"], "policies": [auth(json!({"scopes": ["orders:read"]}))]},
        {"name": "write", "paths": ["/write"], "policies": [auth(json!({"scopes": ["orders:write"]}))]},
        {"name": "keys-only", "paths": ["/keys"], "policies": [auth(json!({"accept": ["api_key"]}))]}
    ]);
    let gw = TestGateway::start_with(s, &one_service(&up.url(), routes)).await;
    let revoker = Arc::new(CountingRevoker::default());
    let issuer = format!("http://{}", gw.addr);
    let server = OAuthServer::new(
        OAuthSettings {
            issuer: issuer.clone(),
            audience: issuer,
            token_ttl: std::time::Duration::from_secs(300),
        },
        gw.gw.authenticator().clone(),
        revoker.clone(),
    );
    let k = generate_signing_key().expect("key");
    server.set_signing_keys(&[SigningMaterial {
        id: k.id,
        pkcs8: k.pkcs8,
        public_jwk: k.public_jwk,
        created_at_ms: 1,
        retired: false,
    }]);
    let secret = "tgcs_test-secret-0123456789".to_owned();
    let (org, app, client_id) = (OrgId::new(), AppId::new(), ClientId::new());
    server.set_clients([ClientEntry {
        id: client_id.clone(),
        org: org.clone(),
        app: app.clone(),
        scopes: vec!["orders:read".into()],
        secret_hash: hash_client_secret(&secret).expect("hash"),
    }]);
    gw.gw.set_oauth(server);
    OAuthFixture {
        gw,
        _up: up,
        client_id,
        secret,
        org,
        app,
        revoker,
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

impl OAuthFixture {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut h = headers.to_vec();
        h.push(FORM);
        client()
            .request("POST", &self.gw.url(path), &h, full(body.to_owned()))
            .await
    }

    async fn token(&self) -> String {
        let auth = basic(self.client_id.as_str(), &self.secret);
        let r = self
            .post(
                "/oauth2/token",
                &[("authorization", &auth)],
                "grant_type=client_credentials",
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.json()["access_token"].as_str().expect("token").to_owned()
    }
}

#[tokio::test]
async fn client_credentials_tokens_work_through_the_gateway_and_carry_the_app() {
    let f = oauth_gateway().await;
    // client_secret_basic
    let auth = basic(f.client_id.as_str(), &f.secret);
    let r = f
        .post(
            "/oauth2/token",
            &[("authorization", &auth)],
            "grant_type=client_credentials&scope=orders%3Aread",
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "orders:read");
    let token = body["access_token"].as_str().expect("token").to_owned();
    // RFC 9068: typ at+jwt, with the platform key's kid.
    let header = jsonwebtoken_header(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    // client_secret_post
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        f.client_id, f.secret
    );
    assert_eq!(f.post("/oauth2/token", &[], &form).await.status, 200);

    let bearer = format!("Bearer {token}");
    let r = client()
        .request(
            "GET",
            &f.gw.url("/read"),
            &[("authorization", &bearer)],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = r.echo();
    assert_eq!(e.header("x-tollgate-credential").as_deref(), Some("oauth"));
    assert_eq!(e.header("x-tollgate-org").as_deref(), Some(f.org.as_str()));
    assert_eq!(e.header("x-tollgate-app").as_deref(), Some(f.app.as_str()));
    assert_eq!(
        e.header("x-tollgate-subject").as_deref(),
        Some(f.client_id.as_str())
    );
    // Scope it does not have; a route that takes keys only.
    let r = client()
        .request(
            "GET",
            &f.gw.url("/write"),
            &[("authorization", &bearer)],
            empty(),
        )
        .await;
    assert_eq!(r.problem(403), "insufficient_scope");
    let r = client()
        .request(
            "GET",
            &f.gw.url("/keys"),
            &[("authorization", &bearer)],
            empty(),
        )
        .await;
    assert_eq!(r.problem(401), "credential_invalid");
    // A revoked or deleted client's tokens stop working with it.
    f.gw.gw.oauth().expect("oauth").remove_client(&f.client_id);
    let r = client()
        .request(
            "GET",
            &f.gw.url("/read"),
            &[("authorization", &bearer)],
            empty(),
        )
        .await;
    assert_eq!(r.problem(401), "credential_invalid");
    assert!(r.json()["detail"].as_str().unwrap_or("").contains("client"));
}

fn jsonwebtoken_header(token: &str) -> Value {
    let head = token.split('.').next().expect("header");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .expect("base64url");
    serde_json::from_slice(&raw).expect("json")
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_clients_grants_and_scopes() {
    let f = oauth_gateway().await;
    let id = f.client_id.as_str();
    let wrong = basic(id, "tgcs_wrong");
    let r = f
        .post(
            "/oauth2/token",
            &[("authorization", &wrong)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    let unknown = basic(ClientId::new().as_str(), &f.secret);
    let r = f
        .post(
            "/oauth2/token",
            &[("authorization", &unknown)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_client");
    let good = basic(id, &f.secret);
    for (body, status, error) in [
        (
            "grant_type=password&username=a&password=b",
            400,
            "unsupported_grant_type",
        ),
        ("", 400, "invalid_request"),
        (
            "grant_type=client_credentials&scope=orders%3Awrite",
            400,
            "invalid_scope",
        ),
        (
            "grant_type=client_credentials&grant_type=client_credentials",
            400,
            "invalid_request",
        ),
    ] {
        let r = f
            .post("/oauth2/token", &[("authorization", &good)], body)
            .await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.json()["error"], error, "{body}");
    }
    // Two authentication methods at once.
    let both = format!(
        "grant_type=client_credentials&client_id={id}&client_secret={}",
        f.secret
    );
    let r = f
        .post("/oauth2/token", &[("authorization", &good)], &both)
        .await;
    assert_eq!(r.json()["error"], "invalid_request");
    // Not a form; not a POST.
    let r = client()
        .request(
            "POST",
            &f.gw.url("/oauth2/token"),
            &[
                ("authorization", &good),
                ("content-type", "application/json"),
            ],
            full("{}"),
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_request");
    let r = client().get(&f.gw.url("/oauth2/token")).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[tokio::test]
async fn metadata_and_jwks_are_published() {
    let f = oauth_gateway().await;
    let meta = client()
        .get(&f.gw.url("/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(meta.status, 200);
    let m = meta.json();
    let issuer = format!("http://{}", f.gw.addr);
    assert_eq!(m["issuer"], issuer.as_str());
    assert_eq!(m["token_endpoint"], format!("{issuer}/oauth2/token"));
    assert_eq!(m["jwks_uri"], format!("{issuer}/oauth2/jwks"));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{issuer}/oauth2/introspect")
    );
    assert_eq!(m["revocation_endpoint"], format!("{issuer}/oauth2/revoke"));
    assert_eq!(m["grant_types_supported"], json!(["client_credentials"]));
    let jwks = client().get(&f.gw.url("/oauth2/jwks")).await.json();
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert!(keys[0].get("d").is_none(), "no private part");
    let kid = jsonwebtoken_header(&f.token().await)["kid"].clone();
    assert_eq!(keys[0]["kid"], kid);
}

#[tokio::test]
async fn introspection_and_revocation_follow_rfc_7662_and_7009() {
    let f = oauth_gateway().await;
    let token = f.token().await;
    let auth = basic(f.client_id.as_str(), &f.secret);
    let form = format!("token={token}");
    let r = f
        .post("/oauth2/introspect", &[("authorization", &auth)], &form)
        .await;
    assert_eq!(r.status, 200);
    let i = r.json();
    assert_eq!(i["active"], true);
    assert_eq!(i["client_id"], f.client_id.as_str());
    assert_eq!(i["scope"], "orders:read");
    assert_eq!(i["token_type"], "Bearer");
    assert!(i["exp"].as_i64().is_some());
    // Garbage is inactive, not an error.
    let r = f
        .post(
            "/oauth2/introspect",
            &[("authorization", &auth)],
            "token=garbage",
        )
        .await;
    assert_eq!(r.json(), json!({"active": false}));
    // Introspection needs client authentication.
    let r = f.post("/oauth2/introspect", &[], &form).await;
    assert_eq!(r.status, 401);

    // Revocation: 200, and the token stops working on the gateway.
    let r = f
        .post("/oauth2/revoke", &[("authorization", &auth)], &form)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(f.revoker.0.load(Ordering::SeqCst), 1);
    let r = f
        .post("/oauth2/introspect", &[("authorization", &auth)], &form)
        .await;
    assert_eq!(r.json()["active"], false);
    let bearer = format!("Bearer {token}");
    let r = client()
        .request(
            "GET",
            &f.gw.url("/read"),
            &[("authorization", &bearer)],
            empty(),
        )
        .await;
    assert_eq!(r.problem(401), "credential_invalid");
    // Revoking garbage is still 200 (RFC 7009 2.2) and stores nothing.
    let r = f
        .post(
            "/oauth2/revoke",
            &[("authorization", &auth)],
            "token=garbage",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(f.revoker.0.load(Ordering::SeqCst), 1);
}

/// A token request whose form stalls is answered 408 at the body deadline,
/// not held for ever.
#[tokio::test]
async fn stalled_token_request_body_is_408() {
    let mut s = settings();
    s.body_read_timeout = std::time::Duration::from_millis(300);
    let f = oauth_gateway_with(s).await;
    let mut raw = Raw::connect(f.gw.addr).await;
    raw.send("POST /oauth2/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=")
        .await;
    let started = tokio::time::Instant::now();
    let res = raw.response().await;
    assert_eq!(res.problem(408), "request_timeout");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    raw.closed().await;
}
