//! Helpers shared by the identity resources: typed ids from multi-segment
//! paths, the tenant handle every `/orgs/{org}/…` handler goes through,
//! pages of short lists kept in memory, and responses that carry a secret.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_core::ids::OrgId;
use tollgate_store::{Listed, Page, Tenant};

use crate::AdminState;
use crate::error::ApiError;

/// The named parameters of a request path. Each is parsed to its typed id
/// by [`PathIds::get`]; an id of the wrong shape names nothing: 404.
#[derive(Debug)]
pub struct PathIds(Vec<(String, String)>);

impl PathIds {
    pub fn get<T: std::str::FromStr>(&self, name: &str) -> Result<T, ApiError> {
        let raw = self
            .0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| ApiError::Internal(format!("route has no `{name}` parameter")))?;
        raw.parse::<T>().map_err(|_| {
            ApiError::NotFound(format!(
                "`{}` not found",
                raw.chars().take(64).collect::<String>()
            ))
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(params): axum::extract::Path<Vec<(String, String)>> =
            axum::extract::Path::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Ok(PathIds(params))
    }
}

/// The organization's view of the store, once it is known to exist (404
/// otherwise), so that lists under a missing organization are not empty
/// successes.
pub(crate) async fn tenant<'a>(s: &'a AdminState, org: &OrgId) -> Result<Tenant<'a>, ApiError> {
    s.store.get_org(org).await?;
    Ok(s.store.tenant(org))
}

/// One keyset page of `items`, which are sorted by `key`: the ones after
/// `page.after`, at most `page.limit`, with `next` when more follow. For
/// lists the store returns whole (members, JWT issuers, signing keys).
pub(crate) fn paginate<T>(items: Vec<T>, page: &Page, key: impl Fn(&T) -> &str) -> Listed<T> {
    let limit = page.limit.clamp(1, Page::MAX_LIMIT) as usize;
    let mut items: Vec<T> = items
        .into_iter()
        .filter(|t| page.after.as_deref().is_none_or(|after| key(t) > after))
        .collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|t| key(t).to_owned())
    } else {
        None
    };
    Listed { items, next }
}

/// A response that shows a secret: `Cache-Control: no-store`, so no cache
/// or history keeps it.
pub(crate) fn with_secret<T: serde::Serialize>(
    status: StatusCode,
    location: Option<String>,
    body: &T,
) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(location) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    res
}

/// For `#[serde(default, deserialize_with = "present")]` on an
/// `Option<Option<T>>`: absent is `None`, `null` is `Some(None)`.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paginate_walks_sorted_items() {
        let items: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let page = |after: Option<&str>| Page {
            limit: 2,
            after: after.map(String::from),
        };
        let first = paginate(items.clone(), &page(None), |s| s);
        assert_eq!(first.items, ["a", "b"]);
        assert_eq!(first.next.as_deref(), Some("b"));
        let last = paginate(items.clone(), &page(Some("d")), |s| s);
        assert_eq!(last.items, ["e"]);
        assert_eq!(last.next, None);
        let exact = paginate(items, &page(Some("c")), |s| s);
        assert_eq!(exact.items, ["d", "e"]);
        assert_eq!(exact.next, None);
    }
}
