//! JWK sets of external issuers: parsing a fetched set into verification
//! keys, and the per-issuer cache that keeps them. A set is fetched from the
//! issuer's `jwks_url` or through OIDC discovery, kept for the cache TTL, and
//! refetched early when a token names an unknown `kid`, but never more than
//! once per refetch interval, and never by two tasks at once. When a refetch
//! fails the old set stays in use and the next attempt waits for the refetch
//! interval; only an issuer whose set was never fetched has no keys. Keys are only ever taken from the configured endpoint: a
//! token's `jku`, `x5u`, `x5c` and `jwk` headers play no part here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use tokio::time::Instant;
use tollgate_core::config::JwtAlgorithm;

use crate::fetch::{self, FetchError};

/// Where an issuer's JWK set is found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// The set itself.
    Jwks(String),
    /// An OIDC discovery document whose `jwks_uri` names the set.
    Discovery(String),
}

impl KeySource {
    /// The source configured for an issuer: `jwks_url`, else
    /// `discovery_url`, else `{issuer}/.well-known/openid-configuration`.
    pub fn for_issuer(issuer: &str, jwks_url: Option<&str>, discovery_url: Option<&str>) -> Self {
        match (jwks_url, discovery_url) {
            (Some(url), _) => KeySource::Jwks(url.to_owned()),
            (None, Some(url)) => KeySource::Discovery(url.to_owned()),
            (None, None) => KeySource::Discovery(format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )),
        }
    }
}

/// The kind of public key a JWK holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can check signatures of `alg`.
    fn fits(self, alg: JwtAlgorithm) -> bool {
        use JwtAlgorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One usable public key of a set.
#[derive(Clone)]
pub struct JwkKey {
    kid: Option<String>,
    kind: KeyKind,
    alg: Option<String>,
    key: DecodingKey,
}

impl JwkKey {
    fn fits(&self, alg: JwtAlgorithm) -> bool {
        self.kind.fits(alg) && self.alg.as_deref().is_none_or(|a| a == alg.as_str())
    }
}

/// A fetched JWK set, reduced to the signature keys it holds.
pub struct KeySet {
    keys: Vec<JwkKey>,
    fetched_at: Instant,
}

impl KeySet {
    /// Parses a JWK set document (RFC 7517 section 5). Entries that are not
    /// public signature keys of a supported type are skipped; symmetric
    /// (`oct`) entries are always skipped.
    pub fn parse(doc: &Value, fetched_at: Instant) -> Result<KeySet, FetchError> {
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(FetchError::Document("a JWK set needs a `keys` array"))?;
        let keys = entries.iter().filter_map(parse_jwk).collect();
        Ok(KeySet { keys, fetched_at })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn is_fresh(&self, ttl: Duration) -> bool {
        Instant::now().saturating_duration_since(self.fetched_at) < ttl
    }

    /// The key for a token: the one whose `kid` matches, or, for a token
    /// without `kid`, the only key of the set that fits `alg`.
    pub fn select(&self, kid: Option<&str>, alg: JwtAlgorithm) -> Option<DecodingKey> {
        self.find(kid, alg).map(|k| k.key.clone())
    }

    fn find(&self, kid: Option<&str>, alg: JwtAlgorithm) -> Option<&JwkKey> {
        let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
        match kid {
            Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)),
            None => match (fitting.next(), fitting.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
        }
    }
}

fn b64(value: &Value, field: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(value.get(field)?.as_str()?.trim_end_matches('='))
        .ok()
}

fn parse_jwk(jwk: &Value) -> Option<JwkKey> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|op| op.as_str() == Some("verify"))
    {
        return None;
    }
    let (kind, key) = match field("kty")? {
        "RSA" => {
            let n = b64(jwk, "n")?;
            let e = b64(jwk, "e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < 256 || e.is_empty() {
                return None;
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kind, len) = match field("crv")? {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                _ => return None,
            };
            let x = b64(jwk, "x")?;
            let y = b64(jwk, "y")?;
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if field("crv")? != "Ed25519" {
                return None;
            }
            let x = b64(jwk, "x")?;
            if x.len() != 32 {
                return None;
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        _ => return None,
    };
    Some(JwkKey {
        kid: field("kid").map(str::to_owned),
        kind,
        alg: field("alg").map(str::to_owned),
        key,
    })
}

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The set has no fitting key with that `kid`.
    UnknownKey,
    /// No set was ever fetched.
    NoKeys,
}

struct FetchState {
    /// When a `kid` missing from a fresh set last caused a fetch.
    last_kid_refetch: Option<Instant>,
    /// When a fetch last failed.
    last_failure: Option<Instant>,
}

/// The cached JWK set of one issuer. Shared by every worker thread; kept
/// across config reloads while the issuer and its key source stay the same.
pub struct JwksCache {
    issuer: String,
    name: Arc<str>,
    source: KeySource,
    current: RwLock<Option<Arc<KeySet>>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

impl JwksCache {
    pub fn new(issuer: &str, name: Arc<str>, source: KeySource) -> Self {
        JwksCache {
            issuer: issuer.to_owned(),
            name,
            source,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState {
                last_kid_refetch: None,
                last_failure: None,
            }),
        }
    }

    /// What the cache is keyed by across reloads.
    pub fn identity(&self) -> (&str, &KeySource) {
        (&self.issuer, &self.source)
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn store(&self, set: KeySet) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(set));
    }

    /// Finds the key for a token's `kid` (and the issuer's pinned `alg`),
    /// fetching the set when it is missing, older than `ttl`, or lacks the
    /// key. A `kid` missing from a fresh set causes at most one fetch per
    /// `refetch_interval`; after a failed fetch the next one waits for
    /// `refetch_interval` too, and a stale set stays in use meanwhile.
    pub async fn key(
        &self,
        kid: Option<&str>,
        alg: JwtAlgorithm,
        ttl: Duration,
        refetch_interval: Duration,
    ) -> Result<DecodingKey, Miss> {
        let seen = self.snapshot();
        let stale_hit = match &seen {
            Some(set) => match set.select(kid, alg) {
                Some(key) if set.is_fresh(ttl) => return Ok(key),
                hit => hit,
            },
            None => None,
        };
        // The set must be fetched. A task holding a (stale) key does not wait
        // for a fetch already under way; the others queue behind it, so
        // concurrent fetches collapse into one.
        let mut state = match stale_hit {
            Some(key) => match self.fetch.try_lock() {
                Ok(state) => state,
                Err(_) => return Ok(key),
            },
            None => self.fetch.lock().await,
        };
        let current = self.snapshot();
        let replaced = match (&seen, &current) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, Some(_)) => true,
            _ => false,
        };
        let answer = |set: &Option<Arc<KeySet>>| match set {
            Some(set) => set.select(kid, alg).ok_or(Miss::UnknownKey),
            None => Err(Miss::NoKeys),
        };
        if replaced && let Ok(key) = answer(&current) {
            return Ok(key);
        }
        // Why the set is fetched decides what limits the fetch: a failed
        // fetch is retried after the interval, and a `kid` missing from a
        // fresh set causes at most one fetch per interval.
        let now = Instant::now();
        let recent = |at: Option<Instant>| {
            at.is_some_and(|at| now.saturating_duration_since(at) < refetch_interval)
        };
        let unknown_kid = current.as_ref().is_some_and(|set| set.is_fresh(ttl));
        let held_back =
            recent(state.last_failure) || (unknown_kid && recent(state.last_kid_refetch));
        if !held_back {
            if unknown_kid {
                state.last_kid_refetch = Some(now);
            }
            match self.load().await {
                Ok(set) => {
                    tracing::debug!(issuer = %self.name, keys = set.len(), "fetched the JWK set");
                    self.store(set);
                }
                Err(error) => {
                    state.last_failure = Some(now);
                    if current.is_some() {
                        tracing::warn!(
                            issuer = %self.name,
                            error = %error,
                            "refreshing the JWK set failed; the cached keys stay in use"
                        );
                    } else {
                        tracing::warn!(
                            issuer = %self.name,
                            error = %error,
                            "fetching the JWK set failed; tokens of this issuer are refused until it succeeds"
                        );
                    }
                }
            }
        }
        drop(state);
        answer(&self.snapshot())
    }

    async fn load(&self) -> Result<KeySet, FetchError> {
        let jwks_url = match &self.source {
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery(url) => {
                let doc = fetch::fetch_json(url).await?;
                if let Some(iss) = doc.get("issuer")
                    && iss.as_str() != Some(self.issuer.as_str())
                {
                    return Err(FetchError::Document(
                        "the discovery document names another issuer",
                    ));
                }
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or(FetchError::Document(
                        "the discovery document has no `jwks_uri`",
                    ))?
                    .to_owned()
            }
        };
        let doc = fetch::fetch_json(&jwks_url).await?;
        KeySet::parse(&doc, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    fn ec(kid: &str, crv: &str, len: usize) -> Value {
        let coordinate = URL_SAFE_NO_PAD.encode(vec![7u8; len]);
        json!({"kty": "EC", "crv": crv, "kid": kid, "x": coordinate, "y": coordinate})
    }

    fn with(mut jwk: Value, extra: Value) -> Value {
        for (k, v) in extra.as_object().into_iter().flatten() {
            jwk[k] = v.clone();
        }
        jwk
    }

    fn kid(set: &KeySet, kid: Option<&str>, alg: JwtAlgorithm) -> Option<String> {
        set.find(kid, alg)
            .map(|k| k.kid.clone().unwrap_or_default())
    }

    #[test]
    fn entries_that_do_not_fit_are_skipped() {
        let doc = json!({"keys": [
            with(ec("enc", "P-256", 32), json!({"use": "enc"})),
            with(ec("ops", "P-256", 32), json!({"key_ops": ["sign"]})),
            with(ec("alg", "P-256", 32), json!({"alg": "ES384"})),
            ec("short", "P-256", 31),
            ec("p521", "P-521", 66),
            ec("p384", "P-384", 48),
            {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "rsa-small", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa", "n": N, "e": "AQAB", "alg": "RS256"},
            {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode([1u8; 32])},
            {"kid": "no-kty"},
            with(ec("good", "P-256", 32), json!({"use": "sig", "alg": "ES256", "key_ops": ["verify"]})),
        ]});
        let set = KeySet::parse(&doc, Instant::now()).expect("a set");
        assert_eq!(set.len(), 5, "alg, p384, rsa, ed and good remain");
        use JwtAlgorithm::*;
        // Only `good` fits ES256, so a token without kid gets it.
        assert_eq!(kid(&set, None, ES256).as_deref(), Some("good"));
        for refused in ["enc", "ops", "alg", "short", "p521", "oct", "p384", "rsa"] {
            assert_eq!(kid(&set, Some(refused), ES256), None, "{refused}");
        }
        assert_eq!(
            kid(&set, Some("alg"), ES384),
            None,
            "a P-256 key never fits ES384"
        );
        assert_eq!(kid(&set, None, ES384).as_deref(), Some("p384"));
        assert_eq!(kid(&set, Some("rsa"), RS256).as_deref(), Some("rsa"));
        assert_eq!(kid(&set, Some("rsa"), PS256), None, "its alg says RS256");
        assert_eq!(kid(&set, Some("ed"), EdDSA).as_deref(), Some("ed"));
        assert_eq!(
            kid(&set, Some("rsa-small"), RS256),
            None,
            "RSA below 2048 bits"
        );
    }

    #[test]
    fn a_token_without_kid_needs_a_single_fitting_key() {
        let doc = json!({"keys": [ec("a", "P-256", 32), ec("b", "P-256", 32)]});
        let set = KeySet::parse(&doc, Instant::now()).expect("a set");
        assert_eq!(kid(&set, None, JwtAlgorithm::ES256), None);
        assert_eq!(
            kid(&set, Some("b"), JwtAlgorithm::ES256).as_deref(),
            Some("b")
        );
        assert!(KeySet::parse(&json!({"keys": {}}), Instant::now()).is_err());
        assert!(KeySet::parse(&json!([]), Instant::now()).is_err());
    }

    #[test]
    fn the_key_source_follows_the_spec() {
        let at = |iss: &str, jwks: Option<&str>, disc: Option<&str>| {
            KeySource::for_issuer(iss, jwks, disc)
        };
        let discovery = |u: &str| KeySource::Discovery(u.into());
        let well_known = "https://id.example/t/.well-known/openid-configuration";
        assert_eq!(
            at("https://id.example/t/", None, None),
            discovery(well_known)
        );
        assert_eq!(
            at("https://id.example/t", None, None),
            discovery(well_known)
        );
        assert_eq!(at("i", None, Some("https://d")), discovery("https://d"));
        assert_eq!(
            at("i", Some("https://j"), None),
            KeySource::Jwks("https://j".into())
        );
    }
}
