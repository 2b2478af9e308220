//! Published JWS test vectors: RFC 7515 appendix A (HS256, RS256, ES256),
//! RFC 7520 section 4 (RS256, PS384, HS256) and RFC 8037 appendix A.4
//! (EdDSA). Each signature must verify with the RFC's public JWK and fail
//! once a single byte of the signing input changes. RFC 7520 section 4.3
//! is ES512, which Tollgate does not support: its header must be refused.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jsonwebtoken::crypto::verify;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use tollgate_core::Duration;
use tollgate_core::config::{ClaimMapping, JwtAlgorithm, JwtIssuerSpec};
use tollgate_identity::jwt::{Issuers, JwtError};

/// RFC 7515 appendix A.1-A.3: the JWS Payload shared by the examples.
const RFC7515_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

/// RFC 7520 figure 8: the payload shared by the section 4 examples.
const RFC7520_PAYLOAD: &str = concat!(
    "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IH",
    "lvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBk",
    "b24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcm",
    "UgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4",
);

/// RFC 7520 figure 3: the RSA public key of sections 4.1 and 4.2.
const RFC7520_RSA_JWK: &str = r#"{
    "kty": "RSA",
    "kid": "bilbo.baggins@hobbiton.example",
    "use": "sig",
    "n": "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw",
    "e": "AQAB"
}"#;

struct Vector {
    name: &'static str,
    jwk: String,
    alg: Algorithm,
    /// `header.payload`, base64url-encoded.
    signing_input: String,
    signature: &'static str,
}

fn vectors() -> Vec<Vector> {
    vec![
        Vector {
            name: "RFC 7515 A.1 (HS256)",
            jwk: r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#.into(),
            alg: Algorithm::HS256,
            signing_input: format!("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{RFC7515_PAYLOAD}"),
            signature: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        },
        Vector {
            name: "RFC 7515 A.2 (RS256)",
            jwk: r#"{"kty":"RSA","e":"AQAB","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"}"#.into(),
            alg: Algorithm::RS256,
            signing_input: format!("eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD}"),
            signature: concat!(
                "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7",
                "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4",
                "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K",
                "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv",
                "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB",
                "p0igcN_IoypGlUPQGe77Rw",
            ),
        },
        Vector {
            name: "RFC 7515 A.3 (ES256)",
            jwk: r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#.into(),
            alg: Algorithm::ES256,
            signing_input: format!("eyJhbGciOiJFUzI1NiJ9.{RFC7515_PAYLOAD}"),
            signature: "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
        },
        Vector {
            name: "RFC 7520 4.1 (RS256)",
            jwk: RFC7520_RSA_JWK.into(),
            alg: Algorithm::RS256,
            signing_input: format!(
                "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.{RFC7520_PAYLOAD}"
            ),
            signature: concat!(
                "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmK",
                "ZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4J",
                "IwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8w",
                "W1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluP",
                "xUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_f",
                "cIe8u9ipH84ogoree7vjbU5y18kDquDg",
            ),
        },
        Vector {
            name: "RFC 7520 4.2 (PS384)",
            jwk: RFC7520_RSA_JWK.into(),
            alg: Algorithm::PS384,
            signing_input: format!(
                "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.{RFC7520_PAYLOAD}"
            ),
            signature: concat!(
                "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2I",
                "pN6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXU",
                "vdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRX",
                "e8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT",
                "0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a",
                "6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw",
            ),
        },
        Vector {
            name: "RFC 7520 4.4 (HS256)",
            jwk: r#"{"kty":"oct","kid":"018c0ae5-4d9b-471b-bfd6-eef314bc7037","use":"sig","alg":"HS256","k":"hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg"}"#.into(),
            alg: Algorithm::HS256,
            signing_input: format!(
                "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9.{RFC7520_PAYLOAD}"
            ),
            signature: "s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0",
        },
        Vector {
            name: "RFC 8037 A.4 (EdDSA)",
            jwk: r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#.into(),
            alg: Algorithm::EdDSA,
            signing_input: "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc".into(),
            signature: "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
        },
    ]
}

#[test]
fn rfc_vectors_verify_and_tampering_fails() {
    for v in vectors() {
        let jwk: Jwk = serde_json::from_str(&v.jwk).expect(v.name);
        let key = DecodingKey::from_jwk(&jwk).expect(v.name);
        let input = v.signing_input.as_bytes();
        assert!(
            verify(v.signature, input, &key, v.alg).expect(v.name),
            "{}: the published signature must verify",
            v.name
        );
        // Change one byte at a few places: first, middle, inside the payload, last.
        for at in [0, input.len() / 2, input.len() - 5, input.len() - 1] {
            let mut changed = input.to_vec();
            changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
            let ok = verify(v.signature, &changed, &key, v.alg).unwrap_or(false);
            assert!(!ok, "{}: a changed byte at {at} must fail", v.name);
        }
    }
}

/// RFC 7520 figure 27 (ES512 over P-521).
const RFC7520_ES512: &str = concat!(
    "eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9",
    ".",
    "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IH",
    "lvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBk",
    "b24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcm",
    "UgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4",
    ".",
    "AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvb",
    "u9Plon7KRTzoNEuT4Va2cmL1eJAQy3mtPBu_u_sDDyYjnAMDxXPn7XrT0lw-kv",
    "AD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2",
);

fn es256_issuer(issuer: &str) -> Arc<Issuers> {
    let issuers = Issuers::new();
    issuers.install(&[JwtIssuerSpec {
        name: "hobbiton".into(),
        issuer: issuer.into(),
        audiences: vec!["api".into()],
        algorithm: JwtAlgorithm::ES256,
        // Never fetched: the header is refused before any key is needed.
        jwks_url: Some("http://127.0.0.1:9/jwks".into()),
        discovery_url: None,
        secret_env: None,
        leeway: Duration::from_secs(0),
        jwks_cache_ttl: Duration::from_secs(600),
        jwks_refetch_interval: Duration::from_secs(30),
        claims: ClaimMapping::default(),
        organization: None,
    }]);
    issuers
}

#[tokio::test]
async fn rfc7520_es512_is_refused() {
    assert!(
        "ES512".parse::<Algorithm>().is_err(),
        "ES512 is unsupported"
    );
    let issuers = es256_issuer("https://hobbiton.example");

    // The RFC's own JWS: its payload is prose, not claims.
    assert!(issuers.verify(RFC7520_ES512, &[]).await.is_err());

    // The RFC's ES512 header over claims naming a trusted issuer.
    let header = RFC7520_ES512.split('.').next().expect("header");
    let signature = RFC7520_ES512.rsplit('.').next().expect("signature");
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"iss":"https://hobbiton.example","aud":"api","exp":9999999999}"#);
    let token = format!("{header}.{claims}.{signature}");
    assert_eq!(
        issuers.verify(&token, &[]).await.unwrap_err(),
        JwtError::AlgorithmMismatch {
            expected: "ES256",
            got: "ES512".into()
        }
    );
}
