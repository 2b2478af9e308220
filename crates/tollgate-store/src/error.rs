//! The store's error type and the mapping from driver errors.

use sqlx::error::DatabaseError;
use tollgate_core::problem::FieldError;

/// Why a store operation failed.
///
/// Callers branch on the variant: `NotFound`, `Conflict` and `Invalid` are the
/// client's doing; `Unavailable` means the database went away and a retry later
/// is safe; `Corrupt` and `Internal` are bugs or damaged data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist.
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },
    /// A uniqueness rule would be broken; the message names the clash.
    #[error("{0}")]
    Conflict(String),
    /// The input failed validation.
    #[error("invalid: {}", format_field_errors(.0))]
    Invalid(Vec<FieldError>),
    /// The database cannot be reached (refused, timed out, I/O, pool closed).
    /// Nothing was written; retrying later is safe.
    #[error("configuration store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Data in the database does not parse as the model expects.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("configuration store error: {0}")]
    Internal(#[source] sqlx::Error),
}

fn format_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.path.is_empty() {
                e.reason.clone()
            } else {
                format!("{}: {}", e.path, e.reason)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl StoreError {
    /// True when the database could not be reached: the caller may keep its
    /// last good state and retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A single field error, as `Invalid`.
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Invalid(vec![FieldError {
            path: path.into(),
            reason: reason.into(),
        }])
    }

    pub(crate) fn not_found(kind: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// Turns a unique violation into `Conflict(message())`; other errors map as usual.
    pub(crate) fn unique(err: sqlx::Error, message: impl FnOnce() -> String) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(message())
            }
            _ => StoreError::from(err),
        }
    }

    /// A JSON document that would not serialise (never expected).
    pub(crate) fn encode(err: serde_json::Error) -> Self {
        StoreError::Internal(sqlx::Error::Encode(Box::new(err)))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if went_away(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Internal(err)
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::from(sqlx::Error::Migrate(Box::new(err)))
    }
}

/// True when the error says the database cannot be reached right now.
fn went_away(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => database_went_away(db.as_ref()),
        sqlx::Error::Migrate(m) => matches!(
            m.as_ref(),
            sqlx::migrate::MigrateError::Execute(inner) if went_away(inner)
        ),
        _ => false,
    }
}

/// Database errors that mean "not reachable right now" rather than "wrong":
/// PostgreSQL's connection exceptions (class 08) and operator interventions
/// such as a shutdown (57P01..57P03); SQLite's busy or locked after the busy
/// timeout.
fn database_went_away(db: &dyn DatabaseError) -> bool {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Extended result codes keep the primary code in the low byte.
        let primary = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        return matches!(primary, Some(5 | 6)); // SQLITE_BUSY, SQLITE_LOCKED
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_level_errors_are_unavailable() {
        for err in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert!(StoreError::from(err).is_unavailable());
        }
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
        assert!(matches!(
            StoreError::from(sqlx::Error::Protocol("x".into())),
            StoreError::Internal(_)
        ));
    }

    #[test]
    fn invalid_lists_paths() {
        let err = StoreError::Invalid(vec![
            FieldError {
                path: "name".into(),
                reason: "bad".into(),
            },
            FieldError {
                path: String::new(),
                reason: "worse".into(),
            },
        ]);
        assert_eq!(err.to_string(), "invalid: name: bad; worse");
    }
}
