//! JWT verification against a real JWKS/discovery server on 127.0.0.1:0
//! that counts requests per path, can swap its documents and can go down.
//! Tokens are minted here with freshly generated keys (one fixed RSA key).
//! Waiting for an interval to pass is done by advancing tokio's clock.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use serde_json::{Value, json};
use tollgate_core::Duration;
use tollgate_core::config::{ClaimMapping, JwtAlgorithm, JwtIssuerSpec};
use tollgate_core::ids::OrgId;
use tollgate_identity::jwt::JwtError::{self, *};
use tollgate_identity::jwt::{Issuers, PlatformIssuer, VerifiedToken};

/// A fixed 2048-bit test key (`openssl genrsa 2048`), used for nothing else.
const RSA_PRIVATE_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAyQ0RT1jsw+EIZ0/wYCX5xUkPWhIhverGVH8LIUrJelaoLjrW
CYNQiIri1xDXfRj6d14XuxatDw+Zu55WASmuI/rOozJjKdUy0axutIXaihhjGsCm
ZfSYmOOozt8V4y71Y9um//Nl5qHfim9SMWquFMSSCt5T7xpbI5Z0IEbiqo57I3NY
BLCCzEDonJ1ut3exWmpumYHAG9U2vcEwqOlqmek40CkiPyi0+Tk1znaypkBpFNUx
gUgmiEV7kAlwmldoZtz4bhmqnXnqwbXanAoB/MpCCfISfM8tsyqZsu34LWEY/Xd6
3u5v3SOtW7tbZ7pXwc3edzCLxinKBFvI4G4gXQIDAQABAoIBACPyQ62Jqy9sfSmn
l8VBFPLKmMWUZ1cC8nnqCw3lRreqZcB6QYmK4mu/VUZ5muWhgSq1do27RK7kLarn
aN4lWx7QuYBhQmyY01C8wUBijEvTh2ihmD6zaFMxpR1zsoCfhT1Y6PdrR8VgHM0u
ESaHud85tBjgXmZqMnBe9p1MvzsaFDVxVPzK4MyAoFaL+PFR9VD3c4BnyFaDN/C8
4hQZhFL3lZLu7IIDbl7vtLw/fLTmuU+KC6qxPqh2W+PL9yrXxGHyzAbmiJMfN85n
g2CvUNtMCf3ne2oJWOJJ9yreB0j7gIMpMrBMEukq0w/r2dO1I6dNSYOuxKU4vSY6
I146OjsCgYEA8CI89hfZUeYENAXQXb756bNu2NKy25ppPwOs2yj4cBXzB/M6OMa4
70bzj4fuFSZu1PIAvbWJUapqCxmtwkBNAw4uV8rmzZE7ta/Nb1Jeq/p6c/ILX6Ee
fsGC7sxzSNm4NO+X/jDP4MTxCRU7liYRcuaYiJjl2KoI7v05w29R2zsCgYEA1lXD
EnOZlB+F+ZzsKqsFjJmEzM2V7jBEcj/g3WoaPVNzcVAwzksX1oLUBBy79U63sgot
jbO3BjR+ZLGn5b1fWHkyzm/SlNO0rYY9XhkvYeF6G1N69fwVpKaW9H9w/fpn309H
wh+AxUV+alGv36h5v+9dNh/UIA2wh1SIa087yUcCgYB/PjU9Vd/TFOYvRtFli3fT
zT+0ZtldolGYkXL74pbaldbk5I56XVrLd7ZB3Q5caLQb5GxeGh68hmeQoDfBkd78
+nu2C48HaKjSGmjqTyRZTu2qGJzMPIzzL8kYjn+cH7oLWtYYXHcarGDopjaf1mYy
k1xKLXLFvzvin44HMCqY1wKBgQDU5IrGoRxDDKy+qyfJmeYBKdvGsc3isP7LnLd2
NhWqJGHeg5B22A/tejWtf/0SRAYiSgnFXmTFPQ7uZagnglpaPshAVMIOIdqtIVGD
TfDKgHQRAHJ6MtIsoWv/nzZUj4ztOopEP5ZgXA6c/FZ9CZMlGlSzlhnVXMOjKEv4
itMPsQKBgQCws0hU2jjUA0cM+ut2dqAmA4r+ncLqEmLwv1xmev7oM38+aKevLZMy
QX6wR+CEjw7i7ldxDuUpKws+uYPJyo0ZYLn3VI7QWpOibR15yhj3cfzBhY3v3Mbj
tsD8ClwNF6mPUsC8iKj1DroqeWT3O2bLxLEghWaIVX+8aaTSD/4hrA==
-----END RSA PRIVATE KEY-----
";
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyQ0RT1jsw+EIZ0/wYCX5
xUkPWhIhverGVH8LIUrJelaoLjrWCYNQiIri1xDXfRj6d14XuxatDw+Zu55WASmu
I/rOozJjKdUy0axutIXaihhjGsCmZfSYmOOozt8V4y71Y9um//Nl5qHfim9SMWqu
FMSSCt5T7xpbI5Z0IEbiqo57I3NYBLCCzEDonJ1ut3exWmpumYHAG9U2vcEwqOlq
mek40CkiPyi0+Tk1znaypkBpFNUxgUgmiEV7kAlwmldoZtz4bhmqnXnqwbXanAoB
/MpCCfISfM8tsyqZsu34LWEY/Xd63u5v3SOtW7tbZ7pXwc3edzCLxinKBFvI4G4g
XQIDAQAB
-----END PUBLIC KEY-----
";
const RSA_N: &str = "yQ0RT1jsw-EIZ0_wYCX5xUkPWhIhverGVH8LIUrJelaoLjrWCYNQiIri1xDXfRj6d14XuxatDw-Zu55WASmuI_rOozJjKdUy0axutIXaihhjGsCmZfSYmOOozt8V4y71Y9um__Nl5qHfim9SMWquFMSSCt5T7xpbI5Z0IEbiqo57I3NYBLCCzEDonJ1ut3exWmpumYHAG9U2vcEwqOlqmek40CkiPyi0-Tk1znaypkBpFNUxgUgmiEV7kAlwmldoZtz4bhmqnXnqwbXanAoB_MpCCfISfM8tsyqZsu34LWEY_Xd63u5v3SOtW7tbZ7pXwc3edzCLxinKBFvI4G4gXQ";
/// HS256 tests use a variable cargo sets for every test run: the tests
/// cannot set one themselves (`set_var` is unsafe, and unsafe is forbidden).
const SECRET_ENV: &str = "CARGO_PKG_NAME";
const SECRET: &str = env!("CARGO_PKG_NAME");

// ---------- the JWKS / discovery server ----------

#[derive(Default)]
struct ServerState {
    docs: Mutex<HashMap<String, Value>>,
    hits: Mutex<HashMap<String, usize>>,
    down: AtomicBool,
}

struct Server {
    addr: SocketAddr,
    state: Arc<ServerState>,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = shared.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(st.answer(req.uri().path())) }
                });
                let conn = hyper::server::conn::http1::Builder::new();
                tokio::spawn(async move { conn.serve_connection(TokioIo::new(stream), svc).await });
            }
        });
        Server { addr, state }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn serve(&self, path: &str, doc: Value) {
        self.state.docs.lock().unwrap().insert(path.into(), doc);
    }
    fn hits(&self, path: &str) -> usize {
        let hits = self.state.hits.lock().unwrap();
        hits.get(path).copied().unwrap_or(0)
    }
    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
    /// An issuer `name` of algorithm `alg` whose JWKS at `/{name}/jwks` holds `keys`.
    fn spec(&self, name: &str, alg: JwtAlgorithm, keys: &[&Key]) -> JwtIssuerSpec {
        let path = format!("/{name}/jwks");
        self.serve(&path, jwks(keys));
        spec(name, alg, Some(self.url(&path)))
    }
}

impl ServerState {
    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        *self.hits.lock().unwrap().entry(path.into()).or_default() += 1;
        let doc = self.docs.lock().unwrap().get(path).cloned();
        let (status, body) = match doc {
            _ if self.down.load(Ordering::SeqCst) => (StatusCode::SERVICE_UNAVAILABLE, json!({})),
            Some(doc) => (StatusCode::OK, doc),
            None => (StatusCode::NOT_FOUND, json!({})),
        };
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let json = hyper::header::HeaderValue::from_static("application/json");
        response.headers_mut().insert("content-type", json);
        response
    }
}

// ---------- keys, tokens and issuers ----------

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Key {
    enc: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
    jwk: Value,
    public: Vec<u8>,
}

fn key(enc: EncodingKey, alg: Algorithm, kid: &str, jwk: Value, public: Vec<u8>) -> Key {
    let kid = Some(kid.to_owned());
    Key {
        enc,
        alg,
        kid,
        jwk,
        public,
    }
}

fn ec(kid: &str, p384: bool) -> Key {
    let rng = SystemRandom::new();
    use sig::{ECDSA_P256_SHA256_FIXED_SIGNING as P256, ECDSA_P384_SHA384_FIXED_SIGNING as P384};
    let (algo, alg, crv) = match p384 {
        true => (&P384, Algorithm::ES384, "P-384"),
        false => (&P256, Algorithm::ES256, "P-256"),
    };
    let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(algo, &rng).unwrap();
    let pair = sig::EcdsaKeyPair::from_pkcs8(algo, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let (x, y) = point[1..].split_at((point.len() - 1) / 2);
    let jwk = json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64(x), "y": b64(y)});
    let enc = EncodingKey::from_ec_der(pkcs8.as_ref());
    key(enc, alg, kid, jwk, point)
}

fn ed25519(kid: &str) -> Key {
    let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = pair.public_key().as_ref().to_vec();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&public)});
    let enc = EncodingKey::from_ed_der(pkcs8.as_ref());
    key(enc, Algorithm::EdDSA, kid, jwk, public)
}

fn rsa(kid: &str, alg: Algorithm) -> Key {
    let enc = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
    let jwk = json!({"kty": "RSA", "kid": kid, "n": RSA_N, "e": "AQAB"});
    key(enc, alg, kid, jwk, Vec::new())
}

fn hmac(secret: &str) -> Key {
    let enc = EncodingKey::from_secret(secret.as_bytes());
    key(enc, Algorithm::HS256, "hs", json!({}), Vec::new()).kid(None)
}

fn hs256() -> Key {
    hmac(SECRET)
}

impl Key {
    /// The same key, naming another `kid` (or none).
    fn kid(mut self, kid: Option<&str>) -> Key {
        self.kid = kid.map(str::to_owned);
        self
    }
    fn header(&self) -> Header {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        header
    }
    fn mint(&self, claims: &Value) -> String {
        self.mint_with(self.header(), claims)
    }
    fn mint_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.enc).unwrap()
    }
    /// A valid token of issuer `name`.
    fn token(&self, name: &str) -> String {
        self.mint(&claims(name))
    }
    /// A token of issuer `name` whose claims are changed by `patch`.
    fn patched(&self, name: &str, patch: Value) -> String {
        self.mint(&with(claims(name), patch))
    }
}

fn jwks(keys: &[&Key]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn iss(name: &str) -> String {
    format!("https://{name}.example")
}

fn claims(name: &str) -> Value {
    json!({"iss": iss(name), "aud": "api", "sub": "user-1", "exp": now() + 600,
           "azp": "app-1", "scope": "read write", "jti": "jti-1"})
}

/// `value` with the members of `patch` set, or removed where `null`.
fn with(mut value: Value, patch: Value) -> Value {
    let object = value.as_object_mut().unwrap();
    for (k, v) in patch.as_object().unwrap() {
        match v {
            Value::Null => object.remove(k),
            v => object.insert(k.clone(), v.clone()),
        };
    }
    value
}

fn spec(name: &str, algorithm: JwtAlgorithm, jwks_url: Option<String>) -> JwtIssuerSpec {
    JwtIssuerSpec {
        name: name.into(),
        issuer: iss(name),
        audiences: vec!["api".into()],
        algorithm,
        secret_env: algorithm.is_symmetric().then(|| SECRET_ENV.into()),
        jwks_url,
        discovery_url: None,
        leeway: Duration::from_secs(0),
        jwks_cache_ttl: Duration::from_secs(600),
        jwks_refetch_interval: Duration::from_secs(10),
        claims: ClaimMapping::default(),
        organization: None,
    }
}

fn hs_spec(name: &str) -> JwtIssuerSpec {
    spec(name, JwtAlgorithm::HS256, None)
}

fn installed(specs: &[JwtIssuerSpec]) -> Arc<Issuers> {
    let issuers = Issuers::new();
    issuers.install(specs);
    issuers
}

type Outcome = Result<(), JwtError>;

async fn check(issuers: &Issuers, token: &str) -> Outcome {
    issuers.verify(token, &[]).await.map(|_| ())
}

/// The caller-facing fields of a verified token, on one line.
fn summary(v: &VerifiedToken) -> String {
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let (sub, app, org) = (
        or_dash(&v.subject),
        or_dash(&v.app),
        or_dash(&v.organization),
    );
    format!(
        "sub={sub} app={app} org={org} scopes={}",
        v.scopes.join(",")
    )
}

fn is_unknown_key(result: &Outcome) -> bool {
    matches!(result, Err(JwtError::UnknownKey { .. }))
}

/// Moves tokio's clock forward without sleeping.
async fn skip(secs: u64) {
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(secs)).await;
    tokio::time::resume();
}

fn mismatch(expected: &'static str, got: &str) -> Outcome {
    let got = got.to_owned();
    Err(JwtError::AlgorithmMismatch { expected, got })
}

fn unavailable(issuer: &str) -> Outcome {
    let issuer = Arc::from(issuer);
    Err(JwtError::KeysUnavailable { issuer })
}

/// `expect!(issuers, token => outcome)`: verifies and compares.
macro_rules! expect {
    ($issuers:expr, $token:expr => $want:expr) => {
        let want = $want;
        assert_eq!(
            check(&$issuers, &$token).await,
            want,
            "{}",
            stringify!($token)
        )
    };
}

/// `unknown_key!(issuers, token)`: refused for an unknown `kid`.
macro_rules! unknown_key {
    ($issuers:expr, $token:expr) => {
        let got = check(&$issuers, &$token).await;
        assert!(matches!(got, Err(JwtError::UnknownKey { .. })), "{got:?}")
    };
}

// ---------- tests ----------

#[tokio::test]
async fn valid_tokens_of_every_algorithm_family() {
    let srv = Server::start().await;
    let cases = [
        ("rs", rsa("r1", Algorithm::RS256), JwtAlgorithm::RS256),
        ("ps", rsa("p1", Algorithm::PS256), JwtAlgorithm::PS256),
        ("es", ec("e1", false), JwtAlgorithm::ES256),
        ("es384", ec("e2", true), JwtAlgorithm::ES384),
        ("ed", ed25519("d1"), JwtAlgorithm::EdDSA),
        ("hs", hs256(), JwtAlgorithm::HS256),
    ];
    let specs: Vec<_> = cases
        .iter()
        .map(|(name, key, alg)| match alg {
            JwtAlgorithm::HS256 => hs_spec(name),
            _ => srv.spec(name, *alg, &[key]),
        })
        .collect();
    let issuers = installed(&specs);
    for (name, key, _) in &cases {
        let c = claims(name);
        for _ in 0..2 {
            let v = issuers.verify(&key.mint(&c), &[]).await;
            let v = v.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((&*v.issuer_name, v.platform), (*name, false));
            assert_eq!(summary(&v), "sub=user-1 app=app-1 org=- scopes=read,write");
            assert_eq!(v.jti.as_deref(), Some("jti-1"));
            assert_eq!(v.expires_at, c["exp"].as_i64());
        }
        let fetches = if *name == "hs" { 0 } else { 1 };
        assert_eq!(srv.hits(&format!("/{name}/jwks")), fetches, "{name}");
    }
}

#[tokio::test]
async fn claims_are_mapped_with_fallbacks() {
    let org = OrgId::new();
    let mut s = hs_spec("hs");
    s.claims.organization = Some("tenant".into());
    (s.claims.app, s.claims.scopes) = ("appid".into(), "perms".into());
    s.organization = Some(org.clone());
    let issuers = installed(&[s]);
    let mapped = json!({"tenant": "org_x", "appid": "a1", "perms": ["p", "q"]});
    let v = issuers
        .verify(&hs256().patched("hs", mapped), &[])
        .await
        .unwrap();
    let want = "sub=user-1 app=a1 org=org_x scopes=p,q";
    assert_eq!(summary(&v), want);
    let fallback = json!({"azp": null, "scope": null, "client_id": "c1", "scp": "x y"});
    let v = issuers
        .verify(&hs256().patched("hs", fallback), &[])
        .await
        .unwrap();
    let want = format!("sub=user-1 app=c1 org={org} scopes=x,y");
    assert_eq!(summary(&v), want);
    assert_eq!(v.claims["client_id"], "c1");
}

#[tokio::test]
async fn algorithm_is_pinned_per_issuer() {
    let srv = Server::start().await;
    let (r, p) = (rsa("r1", Algorithm::RS256), rsa("r1", Algorithm::PS256));
    let (e256, e384) = (ec("e1", false), ec("e1", true));
    let issuers = installed(&[
        srv.spec("rs", JwtAlgorithm::RS256, &[&r]),
        srv.spec("es", JwtAlgorithm::ES256, &[&e256, &e384]),
    ]);
    expect!(issuers, p.token("rs") => mismatch("RS256", "PS256"));
    expect!(issuers, e384.token("es") => mismatch("ES256", "ES384"));
    expect!(issuers, r.token("rs") => Ok(()));
    expect!(issuers, e256.token("es") => Ok(()));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let issuers = installed(&[hs_spec("hs")]);
    let payload = b64(claims("hs").to_string().as_bytes());
    for alg in ["none", "NONE", "None"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        for sig in ["", "e30"] {
            let token = format!("{header}.{payload}.{sig}");
            expect!(issuers, token => mismatch("HS256", "none"));
        }
    }
}

#[tokio::test]
async fn hmac_signed_with_the_rsa_public_key_is_refused() {
    let srv = Server::start().await;
    let rs = srv.spec("rs", JwtAlgorithm::RS256, &[&rsa("r1", Algorithm::RS256)]);
    let issuers = installed(&[rs]);
    // HS256 header, HMAC keyed with the issuer's public key (PEM and modulus).
    for secret in [RSA_PUBLIC_PEM, RSA_N] {
        let token = hmac(secret).kid(Some("r1")).token("rs");
        expect!(issuers, token => mismatch("RS256", "HS256"));
    }
    // RS256 header over an HMAC made with the public key.
    let header = b64(br#"{"alg":"RS256","kid":"r1"}"#);
    let input = format!("{header}.{}", b64(claims("rs").to_string().as_bytes()));
    let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, RSA_PUBLIC_PEM.as_bytes());
    let mac = ring::hmac::sign(&mac_key, input.as_bytes());
    let token = format!("{input}.{}", b64(mac.as_ref()));
    expect!(issuers, token => Err(BadSignature));
}

#[tokio::test]
async fn exp_and_nbf_honour_the_leeway() {
    let mut lenient = hs_spec("lenient");
    lenient.leeway = Duration::from_secs(30);
    let issuers = installed(&[hs_spec("strict"), lenient]);
    let (key, t) = (hs256(), now());
    expect!(issuers, key.patched("strict", json!({"exp": t - 10})) => Err(Expired));
    expect!(issuers, key.patched("lenient", json!({"exp": t - 10})) => Ok(()));
    expect!(issuers, key.patched("lenient", json!({"exp": t - 100})) => Err(Expired));
    expect!(issuers, key.patched("strict", json!({"nbf": t + 10})) => Err(NotYetValid));
    expect!(issuers, key.patched("lenient", json!({"nbf": t + 10})) => Ok(()));
    expect!(issuers, key.patched("lenient", json!({"nbf": t + 100})) => Err(NotYetValid));
    expect!(issuers, key.patched("strict", json!({"nbf": t - 10})) => Ok(()));
    expect!(issuers, key.patched("strict", json!({"exp": null})) => Err(MissingClaim("exp")));
}

#[tokio::test]
async fn audience_must_match() {
    let (issuers, key) = (installed(&[hs_spec("hs")]), hs256());
    expect!(issuers, key.patched("hs", json!({"aud": "other"})) => Err(WrongAudience));
    expect!(issuers, key.patched("hs", json!({"aud": ["other", "x"]})) => Err(WrongAudience));
    expect!(issuers, key.patched("hs", json!({"aud": ["other", "api"]})) => Ok(()));
    expect!(issuers, key.patched("hs", json!({"aud": null})) => Err(MissingClaim("aud")));
}

#[tokio::test]
async fn unknown_issuer_and_malformed_tokens_are_refused() {
    let (issuers, key) = (installed(&[hs_spec("hs")]), hs256());
    let good = key.token("hs");
    let (h, rest) = good.split_once('.').unwrap();
    let at = good.len() - 5;
    let flipped = if &good[at..at + 1] == "A" { "B" } else { "A" };
    let malformed = Err(JwtError::Malformed);
    expect!(issuers, key.patched("hs", json!({"iss": "https://evil"})) => Err(UnknownIssuer));
    expect!(issuers, key.patched("hs", json!({"iss": null})) => Err(MissingClaim("iss")));
    expect!(issuers, format!("{}{flipped}{}", &good[..at], &good[at + 1..]) => Err(BadSignature));
    expect!(issuers, format!("{h}.!!.{rest}") => malformed.clone());
    expect!(issuers, format!("e30.{rest}") => malformed.clone());
    expect!(issuers, format!("{good}{}", "A".repeat(20_000)) => malformed.clone());
    expect!(issuers, good.clone() => Ok(()));
    for bad in ["", "abc", "a.b", "a.b.c.d"] {
        expect!(issuers, bad => malformed.clone());
    }
}

#[tokio::test]
async fn several_issuers_and_the_allowed_list() {
    let srv = Server::start().await;
    let (a, b) = (ec("a1", false), rsa("b1", Algorithm::RS256));
    let issuers = installed(&[
        srv.spec("alpha", JwtAlgorithm::ES256, &[&a]),
        srv.spec("beta", JwtAlgorithm::RS256, &[&b]),
    ]);
    let (ta, tb) = (a.token("alpha"), b.token("beta"));
    let cases: [(&str, &[&str], Result<&str, JwtError>); 5] = [
        (&ta, &[], Ok("alpha")),
        (&tb, &[], Ok("beta")),
        (&ta, &["beta"], Err(JwtError::IssuerNotAllowed)),
        (&ta, &["alpha"], Ok("alpha")),
        (&tb, &["alpha", "beta"], Ok("beta")),
    ];
    for (token, allowed, want) in cases {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        let got = issuers.verify(token, &allowed).await;
        assert_eq!(got.as_ref().map(|v| &*v.issuer_name), want.as_deref());
    }
    // alpha's key claiming to be beta: beta's pinned algorithm refuses it.
    expect!(issuers, a.token("beta") => mismatch("RS256", "ES256"));
}

#[tokio::test]
async fn a_rotated_kid_costs_exactly_one_refetch() {
    let srv = Server::start().await;
    let (k1, k2) = (ec("k1", false), ec("k2", false));
    let issuers = installed(&[srv.spec("rot", JwtAlgorithm::ES256, &[&k1])]);
    expect!(issuers, k1.token("rot") => Ok(()));
    assert_eq!(srv.hits("/rot/jwks"), 1);
    srv.serve("/rot/jwks", jwks(&[&k2]));
    expect!(issuers, k2.token("rot") => Ok(()));
    expect!(issuers, k2.token("rot") => Ok(()));
    assert_eq!(srv.hits("/rot/jwks"), 2);
    // k1 left the set: refused, and no fetch within the interval.
    unknown_key!(issuers, k1.token("rot"));
    assert_eq!(srv.hits("/rot/jwks"), 2);
}

#[tokio::test]
async fn a_random_kid_flood_costs_one_fetch_per_interval() {
    let srv = Server::start().await;
    let good = ec("k1", false);
    let issuers = installed(&[srv.spec("flood", JwtAlgorithm::ES256, &[&good])]);
    expect!(issuers, good.token("flood") => Ok(()));
    let attacker = ec("x", false);
    let flood = |n: usize| {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let mut header = attacker.header();
            header.kid = Some(format!("rnd-{i}-{}", rand::random::<u64>()));
            let token = attacker.mint_with(header, &claims("flood"));
            let issuers = issuers.clone();
            set.spawn(async move { check(&issuers, &token).await });
        }
        set.join_all()
    };
    for round in 0..3 {
        // Concurrent floods: their fetches coalesce, later ones wait out the interval.
        for _ in 0..3 {
            assert!(flood(30).await.iter().all(is_unknown_key));
        }
        let fetches = srv.hits("/flood/jwks");
        assert_eq!(fetches, 2 + round, "the first fetch plus one per interval");
        expect!(issuers, good.token("flood") => Ok(()));
        skip(11).await;
    }
}

#[tokio::test]
async fn stale_keys_are_served_while_the_issuer_is_down() {
    let srv = Server::start().await;
    let (k1, other) = (ec("k1", false), ec("k9", false));
    let mut s = srv.spec("stale", JwtAlgorithm::ES256, &[&k1]);
    s.jwks_cache_ttl = Duration::from_secs(60);
    let issuers = installed(&[s]);
    let token = k1.token("stale");
    expect!(issuers, token => Ok(()));
    srv.set_down(true);
    skip(61).await;
    expect!(issuers, token => Ok(())); // the stale keys stay in use
    assert_eq!(srv.hits("/stale/jwks"), 2);
    expect!(issuers, token => Ok(()));
    unknown_key!(issuers, other.token("stale"));
    assert_eq!(srv.hits("/stale/jwks"), 2, "no retry within the interval");
    skip(11).await;
    expect!(issuers, token => Ok(()));
    assert_eq!(srv.hits("/stale/jwks"), 3, "retried after the interval");
    srv.set_down(false);
    skip(11).await;
    expect!(issuers, token => Ok(()));
    expect!(issuers, token => Ok(()));
    assert_eq!(srv.hits("/stale/jwks"), 4, "fresh again");
}

#[tokio::test]
async fn keys_are_unavailable_until_a_first_fetch_succeeds() {
    let srv = Server::start().await;
    let k1 = ec("k1", false);
    srv.set_down(true);
    let issuers = installed(&[srv.spec("down", JwtAlgorithm::ES256, &[&k1])]);
    let token = k1.token("down");
    expect!(issuers, token => unavailable("down"));
    expect!(issuers, token => unavailable("down"));
    assert_eq!(srv.hits("/down/jwks"), 1);
    srv.set_down(false);
    skip(11).await;
    expect!(issuers, token => Ok(()));
    assert_eq!(srv.hits("/down/jwks"), 2);
    // Nothing listens there at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let gone = spec("gone", JwtAlgorithm::ES256, Some(url));
    issuers.install(&[gone]);
    let err = issuers.verify(&k1.token("gone"), &[]).await.unwrap_err();
    assert!(err.is_upstream() && Err(err) == unavailable("gone"));
}

#[tokio::test]
async fn keys_are_found_through_oidc_discovery() {
    let srv = Server::start().await;
    let k1 = ec("k1", false);
    let mut specs = Vec::new();
    for base in ["/tenant", "/slash/", "/custom", "/liar"] {
        let name = base.trim_matches('/');
        let issuer = srv.url(base);
        let claimed = srv.url(if name == "liar" { "/else" } else { base });
        let doc = json!({"issuer": claimed, "jwks_uri": srv.url(&format!("/{name}/keys"))});
        let well_known = format!("/{name}/.well-known/openid-configuration");
        srv.serve(&well_known, doc.clone());
        srv.serve(&format!("/{name}/keys"), jwks(&[&k1]));
        let mut s = spec(name, JwtAlgorithm::ES256, None);
        s.issuer = issuer;
        if name == "custom" {
            srv.serve("/elsewhere/openid", doc);
            s.discovery_url = Some(srv.url("/elsewhere/openid"));
        }
        specs.push(s);
    }
    let issuers = installed(&specs);
    for s in &specs {
        let token = k1.patched("x", json!({"iss": s.issuer}));
        let got = issuers.verify(&token, &[]).await;
        let got = got.map(|v| v.issuer_name.to_string());
        match s.name.as_str() {
            "liar" => assert_eq!(got.map(|_| ()), unavailable("liar")),
            name => assert_eq!(got, Ok(name.to_owned())),
        }
    }
    let well_known = "/.well-known/openid-configuration";
    for (path, hits) in [
        (format!("/tenant{well_known}"), 1),
        (format!("/slash{well_known}"), 1),
        (format!("/custom{well_known}"), 0),
        ("/elsewhere/openid".into(), 1),
        ("/tenant/keys".into(), 1),
        ("/slash/keys".into(), 1),
        ("/custom/keys".into(), 1),
        ("/liar/keys".into(), 0),
    ] {
        assert_eq!(srv.hits(&path), hits, "{path}");
    }
}

#[tokio::test]
async fn embedded_jwk_jku_x5u_and_x5c_headers_are_ignored() {
    let (srv, evil) = (Server::start().await, Server::start().await);
    let (good, attacker) = (ec("k1", false), ec("k1", false));
    let issuers = installed(&[srv.spec("legit", JwtAlgorithm::ES256, &[&good])]);
    evil.serve("/jwks", jwks(&[&attacker]));
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(attacker.jwk.clone()).unwrap();
    for kid in [Some("k1"), Some("evil-kid"), None] {
        let mut header = attacker.header();
        header.kid = kid.map(str::to_owned);
        header.jwk = Some(jwk.clone());
        header.jku = Some(evil.url("/jwks"));
        header.x5u = Some(evil.url("/x5u"));
        header.x5c = Some(vec!["MIIBszCCAVmgAwIBAgIUQ".into()]);
        let got = check(&issuers, &attacker.mint_with(header, &claims("legit"))).await;
        let refused = got == Err(BadSignature) || is_unknown_key(&got);
        assert!(refused, "{got:?}");
    }
    let asked = evil.state.hits.lock().unwrap().len();
    assert_eq!(asked, 0, "the attacker's server was never asked");
    expect!(issuers, good.token("legit") => Ok(()));
}

#[tokio::test]
async fn platform_tokens_need_typ_at_jwt() {
    let key = ed25519("sgk_1");
    let issuers = installed(&[hs_spec("ext")]);
    issuers.set_platform(Some(PlatformIssuer {
        issuer: "https://gw.example".into(),
        audience: "tollgate".into(),
        keys: vec![("sgk_1".into(), DecodingKey::from_ed_der(&key.public))],
        algorithm: JwtAlgorithm::EdDSA,
        leeway: Duration::from_secs(0),
    }));
    let c = json!({"iss": "https://gw.example", "aud": "tollgate", "exp": now() + 60,
                   "client_id": "cli_1", "scope": "a b", "org_id": "org_1", "app_id": "app_1",
                   "sub": "cli_1"});
    let mint = |key: &Key, typ: Option<&str>, kid: Option<&str>, claims: &Value| {
        let mut header = key.header();
        (header.typ, header.kid) = (typ.map(str::to_owned), kid.map(str::to_owned));
        key.mint_with(header, claims)
    };
    let token = |typ: Option<&str>, kid: Option<&str>| mint(&key, typ, kid, &c);
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let v = issuers.verify(&token(Some(typ), Some("sgk_1")), &[]).await;
        let v = v.unwrap();
        assert_eq!((&*v.issuer_name, v.platform), ("tollgate", true));
        assert_eq!(summary(&v), "sub=cli_1 app=app_1 org=org_1 scopes=a,b");
    }
    let valid = token(Some("at+jwt"), Some("sgk_1"));
    let only_ext = ["ext".to_string()];
    let v = issuers.verify(&valid, &only_ext).await.unwrap();
    assert!(v.platform, "`allowed` restricts external issuers only");
    let wrong_aud = with(c.clone(), json!({"aud": "api"}));
    expect!(issuers, token(Some("JWT"), Some("sgk_1")) => Err(WrongType));
    expect!(issuers, token(None, Some("sgk_1")) => Err(WrongType));
    expect!(issuers, token(Some("at+jwt+x"), Some("sgk_1")) => Err(WrongType));
    expect!(issuers, token(Some("at+jwt"), None) => Err(MissingKeyId));
    expect!(issuers, mint(&key, Some("at+jwt"), Some("sgk_1"), &wrong_aud) => Err(WrongAudience));
    expect!(issuers, mint(&ed25519("x"), Some("at+jwt"), Some("sgk_1"), &c) => Err(BadSignature));
    unknown_key!(issuers, token(Some("at+jwt"), Some("sgk_2")));
    // A reload keeps the platform issuer; `set_platform(None)` removes it.
    issuers.install(&[]);
    expect!(issuers, valid => Ok(()));
    issuers.set_platform(None);
    expect!(issuers, valid => Err(UnknownIssuer));
}

#[tokio::test]
async fn reloads_keep_the_jwks_cache_of_unchanged_issuers() {
    let srv = Server::start().await;
    let k1 = ec("k1", false);
    srv.serve("/v2/jwks", jwks(&[&k1]));
    let mut s = srv.spec("keep", JwtAlgorithm::ES256, &[&k1]);
    let issuers = installed(std::slice::from_ref(&s));
    expect!(issuers, k1.token("keep") => Ok(()));
    s.audiences.push("other".into());
    s.name = "renamed".into();
    issuers.install(std::slice::from_ref(&s));
    let v = issuers.verify(&k1.token("keep"), &[]).await.unwrap();
    assert_eq!(&*v.issuer_name, "renamed");
    assert_eq!(srv.hits("/keep/jwks"), 1, "the cache was kept");
    s.jwks_url = Some(srv.url("/v2/jwks"));
    issuers.install(&[s]);
    expect!(issuers, k1.token("keep") => Ok(()));
    assert_eq!((srv.hits("/keep/jwks"), srv.hits("/v2/jwks")), (1, 1));
}

#[tokio::test]
async fn hs256_without_its_secret_refuses_every_token() {
    let mut s = hs_spec("hs");
    s.secret_env = Some("TOLLGATE_TEST_SURELY_UNSET_SECRET".into());
    let issuers = installed(&[s]);
    expect!(issuers, hs256().token("hs") => unavailable("hs"));
}
