//! Credentials for Tollgate's gateway: how API keys look, how they are
//! hashed and verified from an in-memory key ring, how JWTs from trusted
//! issuers are verified against cached JWKS, and how Tollgate's own OAuth2
//! server signs access tokens. Nothing here touches the store: the binary
//! feeds the key ring and the signer from it, and the hot path only reads
//! memory.

pub mod apikey;
pub mod authn;
pub mod fetch;
pub mod jwks;
pub mod jwt;
pub mod keyring;
pub mod oauth;
