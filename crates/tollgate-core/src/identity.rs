//! Identity vocabulary shared by every layer: member roles, key environments
//! and the kinds of credential a route can accept.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A member's role in an organization. Roles are ordered: each one can do
/// everything the roles after it can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including deleting the organization and managing owners.
    Owner,
    /// Manages members (except owners), apps, keys and OAuth clients.
    Admin,
    /// Manages apps, keys and OAuth clients.
    Developer,
    /// Reads everything, changes nothing.
    Viewer,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    /// At least as powerful as `other`.
    pub fn at_least(self, other: Role) -> bool {
        self <= other
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "developer" => Ok(Role::Developer),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role `{other}`; expected owner, admin, developer or viewer"
            )),
        }
    }
}

/// Whether a key calls the API for real or against a test environment. The
/// environment is visible in the key itself (`tg_live_` or `tg_test_`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyEnvironment {
    #[default]
    Live,
    Test,
}

impl KeyEnvironment {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyEnvironment::Live => "live",
            KeyEnvironment::Test => "test",
        }
    }
}

impl std::str::FromStr for KeyEnvironment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(KeyEnvironment::Live),
            "test" => Ok(KeyEnvironment::Test),
            other => Err(format!(
                "unknown environment `{other}`; expected live or test"
            )),
        }
    }
}

/// A kind of credential a route can accept.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CredentialType {
    /// A Tollgate API key (`tg_live_...`, `tg_test_...`).
    ApiKey,
    /// A JWT from one of the trusted external issuers (`jwt_issuers`).
    Jwt,
    /// An access token issued by Tollgate's own OAuth2 server.
    Oauth,
}

impl CredentialType {
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialType::ApiKey => "api_key",
            CredentialType::Jwt => "jwt",
            CredentialType::Oauth => "oauth",
        }
    }
}
