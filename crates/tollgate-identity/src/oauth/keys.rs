//! Platform signing keys and client secrets.
//!
//! Access tokens are signed with ES256 keys generated here (ring, P-256).
//! The private half lives in the store and in memory; the public half is
//! published as a JWK. Client secrets are random and stored only as argon2id
//! PHC strings.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use tollgate_core::ids::SigningKeyId;

/// The algorithm of platform signing keys.
pub const SIGNING_ALGORITHM: &str = "ES256";

/// A newly generated signing key.
pub struct GeneratedKey {
    pub id: SigningKeyId,
    pub pkcs8: Vec<u8>,
    pub public_jwk: serde_json::Value,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("id", &self.id)
            .field("public_jwk", &self.public_jwk)
            .finish_non_exhaustive()
    }
}

/// Why key material could not be made or used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Generates an ES256 signing key with its public JWK.
pub fn generate_signing_key() -> Result<GeneratedKey, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| KeyError("could not generate a P-256 key".into()))?;
    let id = SigningKeyId::new();
    let public_jwk = public_jwk(&id, pkcs8.as_ref())?;
    Ok(GeneratedKey {
        id,
        pkcs8: pkcs8.as_ref().to_vec(),
        public_jwk,
    })
}

/// The public JWK of a P-256 PKCS#8 key.
pub fn public_jwk(id: &SigningKeyId, pkcs8: &[u8]) -> Result<serde_json::Value, KeyError> {
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .map_err(|_| KeyError("stored signing key is not a P-256 PKCS#8 key".into()))?;
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return Err(KeyError("unexpected public key encoding".into()));
    }
    Ok(serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        "kid": id.as_str(),
        "alg": SIGNING_ALGORITHM,
        "use": "sig",
    }))
}

/// The prefix of client secrets, so scanners can recognise them too.
pub const CLIENT_SECRET_PREFIX: &str = "tgcs_";

/// A new random client secret (`tgcs_` and 43 URL-safe characters, 256 bits).
pub fn generate_client_secret() -> Result<String, KeyError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError("random generator failed".into()))?;
    Ok(format!(
        "{CLIENT_SECRET_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The argon2id PHC string stored for a client secret.
pub fn hash_client_secret(secret: &str) -> Result<String, KeyError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| KeyError("random generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| KeyError(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| KeyError(e.to_string()))
}

/// Checks a presented secret against its stored PHC string. Slow by design:
/// run it off the request threads.
pub fn verify_client_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_secrets_hash_with_argon2id_and_verify() {
        let secret = generate_client_secret().expect("rng");
        assert!(secret.starts_with(CLIENT_SECRET_PREFIX));
        let phc = hash_client_secret(&secret).expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains(&secret));
        assert!(verify_client_secret(&secret, &phc));
        assert!(!verify_client_secret("tgcs_wrong", &phc));
        assert!(!verify_client_secret(&secret, "not a phc string"));
    }

    #[test]
    fn signing_keys_publish_their_public_half_only() {
        let k = generate_signing_key().expect("key");
        assert_eq!(k.public_jwk["kid"], k.id.as_str());
        assert_eq!(k.public_jwk["crv"], "P-256");
        assert!(k.public_jwk.get("d").is_none());
        assert_eq!(public_jwk(&k.id, &k.pkcs8).expect("jwk"), k.public_jwk);
    }
}
