//! Admin authentication: `Authorization: Bearer <token>`, checked against the
//! SHA-256 hashes in the store. Tokens themselves are never stored.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AdminState;
use crate::error::ApiError;

/// Who made an authenticated request, as the audit log names them. Put in
/// the request's extensions by [`require_admin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The admin token with this stored hash: `admin_token:` and the first
    /// 12 hex digits of its SHA-256, enough to tell tokens apart without
    /// making the hash itself public.
    pub fn admin_token(token_hash: &str) -> Actor {
        Actor(format!(
            "admin_token:{}",
            token_hash.get(..12).unwrap_or(token_hash)
        ))
    }
}

/// The stored form of an admin token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random admin token (256 bits), prefixed so scanners can spot it.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand_bytes();
    format!("tgadm_{}", hex::encode(bytes))
}

fn rand_bytes() -> [u8; 32] {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Lets the request through when it carries a known admin token, with its
/// [`Actor`] in the extensions; 401 otherwise.
pub async fn require_admin(
    State(state): State<AdminState>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256);
    let Some(token) = token else {
        return ApiError::Unauthorized.into_response();
    };
    // The hash is compared by the database's index lookup; an attacker learns
    // nothing from timing about the token, only about its SHA-256.
    let hash = hash_token(token);
    match state.store.admin_token_exists(&hash).await {
        Ok(true) => {
            req.extensions_mut().insert(Actor::admin_token(&hash));
            next.run(req).await
        }
        Ok(false) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::Store(e).into_response(),
    }
}
