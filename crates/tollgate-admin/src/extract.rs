//! Validated extractors: JSON (and YAML) bodies, typed ids and pagination,
//! each failing with a precise problem instead of a bare rejection.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tollgate_core::problem::FieldError;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The body format of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

fn format_of(parts: &axum::http::HeaderMap, allow_yaml: bool) -> Result<Format, ApiError> {
    let ct = parts
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "application/merge-patch+json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" if allow_yaml => Ok(Format::Yaml),
        "" => Err(ApiError::UnsupportedMediaType(
            "send a body with `Content-Type: application/json`".into(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "`{other}` is not accepted here; use application/json{}",
            if allow_yaml {
                " or application/yaml"
            } else {
                ""
            }
        ))),
    }
}

async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is larger than {MAX_BODY} bytes"
        )));
    }
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "the body is larger than {MAX_BODY} bytes or was cut off"
            ))
        })
}

/// Deserialises JSON, reporting the path of the first error.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("the body is not valid JSON: {reason}"))
        } else {
            ApiError::Invalid(vec![FieldError {
                path: if path == "." { String::new() } else { path },
                reason,
            }])
        }
    })
}

/// A JSON body of `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        format_of(req.headers(), false)?;
        let bytes = read_body(req).await?;
        from_json(&bytes).map(Json)
    }
}

/// A raw body with its declared format (JSON or YAML), for configuration documents.
#[derive(Debug)]
pub struct Document {
    pub format: Format,
    pub text: String,
}

impl<S: Send + Sync> FromRequest<S> for Document {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let format = format_of(req.headers(), true)?;
        let bytes = read_body(req).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
        Ok(Document { format, text })
    }
}

/// A typed id from the path. An id of the wrong shape names nothing: 404.
#[derive(Debug)]
pub struct Id<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for Id<T>
where
    T: std::str::FromStr + Send,
{
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw): axum::extract::Path<String> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        raw.parse::<T>().map(Id).map_err(|_| {
            ApiError::NotFound(format!(
                "`{}` not found",
                raw.chars().take(64).collect::<String>()
            ))
        })
    }
}

/// `?limit=&after=` pagination.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<tollgate_store::Page, ApiError> {
        let limit = self.limit.unwrap_or(tollgate_store::Page::DEFAULT_LIMIT);
        if limit == 0 || limit > tollgate_store::Page::MAX_LIMIT {
            return Err(ApiError::Invalid(vec![FieldError {
                path: "limit".into(),
                reason: "must be between 1 and 1000".into(),
            }]));
        }
        Ok(tollgate_store::Page {
            limit,
            after: self.after.clone(),
        })
    }
}

/// Query string extractor with problem+json errors.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Applies an RFC 7396 JSON merge patch to `target`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    if let serde_json::Value::Object(p) = patch {
        if !target.is_object() {
            *target = serde_json::Value::Object(serde_json::Map::new());
        }
        if let serde_json::Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Patches a spec: serialise, merge, deserialise (with paths in errors).
pub fn patch_spec<T: serde::Serialize + DeserializeOwned>(
    spec: &T,
    patch: &serde_json::Value,
) -> Result<T, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::BadRequest(
            "a merge patch must be a JSON object".into(),
        ));
    }
    let mut value = serde_json::to_value(spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    merge_patch(&mut value, patch);
    let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    from_json(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut v = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut v, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(v, json!({"a": "z", "c": {"d": "e"}}));
        let mut v = json!({"a": [1, 2]});
        merge_patch(&mut v, &json!({"a": [3]}));
        assert_eq!(v, json!({"a": [3]}));
    }
}
