//! Typed, prefixed identifiers.
//!
//! Every resource id is a ULID rendered in lower case behind a short prefix
//! (`svc_01j...`). The prefix makes ids self-describing in logs and lets the
//! API refuse an id of the wrong kind before it reaches the store.

use std::fmt;
use std::str::FromStr;

/// The error returned when a string is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}` followed by a ULID)")]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

/// A monotonic ULID: ids made in the same millisecond still sort in creation
/// order, so "oldest first" listings and keyset pagination agree.
fn next_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    // Overflow needs 2^80 ids in one millisecond; fall back to a plain ULID.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, ordered after every id this process made before.
            pub fn new() -> Self {
                Self(format!("{}{}", $prefix, next_ulid().to_string().to_ascii_lowercase()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let err = || IdError { kind: $kind, prefix: $prefix, value: s.chars().take(64).collect() };
                let rest = s.strip_prefix($prefix).ok_or_else(err)?;
                if rest.len() != 26 || ulid::Ulid::from_string(rest).is_err() {
                    return Err(err());
                }
                Ok(Self(s.to_ascii_lowercase()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9a-z]{26}$")))
                    .examples([serde_json::json!(concat!($prefix, "01jd5m3x9q7k2v8r4t6y0w1zab"))])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": concat!("^", $prefix, "[0-9a-z]{26}$"),
                })
            }
        }
    };
}

typed_id!(
    /// Identifies a service (an upstream backend).
    ServiceId, "svc_", "service"
);
typed_id!(
    /// Identifies a route.
    RouteId, "rt_", "route"
);
typed_id!(
    /// Identifies an attached policy instance.
    PolicyId, "pol_", "policy"
);
typed_id!(
    /// Identifies an admin token.
    AdminTokenId, "atk_", "admin token"
);
typed_id!(
    /// Identifies an organization (a tenant).
    OrgId, "org_", "organization"
);
typed_id!(
    /// Identifies a user: a person who can be a member of organizations.
    UserId, "usr_", "user"
);
typed_id!(
    /// Identifies an app of an organization.
    AppId, "app_", "app"
);
typed_id!(
    /// Identifies an API key. The id is public; the key itself is a secret.
    KeyId, "key_", "API key"
);
typed_id!(
    /// Identifies an OAuth2 client of an app. Doubles as its `client_id`.
    ClientId, "cli_", "OAuth client"
);
typed_id!(
    /// Identifies a platform signing key; doubles as its JWK `kid`.
    SigningKeyId, "sgk_", "signing key"
);
typed_id!(
    /// Identifies a subscription: an organization, app or key bound to a plan.
    SubscriptionId, "sub_", "subscription"
);
typed_id!(
    /// Identifies an entry of the audit log. Entries sort by id in the order
    /// they were recorded (to the millisecond across nodes).
    AuditId, "aud_", "audit entry"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<ServiceId> = (0..1000).map(|_| ServiceId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn ids_round_trip_and_reject_wrong_kinds() {
        let id = ServiceId::new();
        assert!(id.as_str().starts_with("svc_"));
        assert_eq!(id.as_str().len(), 4 + 26);
        let parsed: ServiceId = id.as_str().parse().expect("valid id");
        assert_eq!(parsed, id);
        let err = id
            .as_str()
            .replacen("svc_", "rt_", 1)
            .parse::<ServiceId>()
            .unwrap_err();
        assert_eq!(err.kind, "service");
        assert!("svc_nope".parse::<ServiceId>().is_err());
        assert!("".parse::<RouteId>().is_err());
        let json = serde_json::to_string(&id).expect("serialize");
        let back: ServiceId = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<RouteId>(&json).is_err());
    }
}
