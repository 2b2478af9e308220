//! Fetching the small JSON documents JWT verification depends on: OIDC
//! discovery documents and JWK sets. A fetch is a single `GET` over http or
//! https (webpki roots), bounded by a 5 second timeout and a 1 MiB body, and
//! succeeds only on a `200` with a JSON body. A fresh client is built per
//! fetch: fetches are rare, and a client bound to no runtime can be used from
//! any of the gateway's worker runtimes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long one fetch (connect, request and body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest body a fetch accepts.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a fetch failed. Always an upstream problem (the issuer's endpoint),
/// safe to retry later.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not an absolute http(s) URL")]
    InvalidUrl(String),
    #[error("TLS set-up failed")]
    Tls(#[source] rustls::Error),
    #[error("request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("no complete response within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    #[error("answered with status {0}, expected 200")]
    Status(StatusCode),
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("reading the body failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("content type `{0}` is not JSON")]
    NotJson(String),
    #[error("the body is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the document is unusable: {0}")]
    Document(&'static str),
}

/// Parses `url` as an absolute http or https URI.
pub fn parse_url(url: &str) -> Result<Uri, FetchError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| FetchError::InvalidUrl(url.to_owned()))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none() {
        return Err(FetchError::InvalidUrl(url.to_owned()));
    }
    Ok(uri)
}

/// `GET`s `url` and parses the body as JSON.
pub async fn fetch_json(url: &str) -> Result<serde_json::Value, FetchError> {
    let uri = parse_url(url)?;
    match tokio::time::timeout(FETCH_TIMEOUT, get(uri)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout),
    }
}

async fn get(uri: Uri) -> Result<serde_json::Value, FetchError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(FetchError::Tls)?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = Request::get(uri)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .body(Empty::new())
        .map_err(|_| FetchError::Document("cannot build the request"))?;
    let response = client.request(request).await.map_err(FetchError::Request)?;
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let headers = response.headers();
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.contains("json") {
            return Err(FetchError::NotJson(ct.chars().take(64).collect()));
        }
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(FetchError::TooLarge);
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge
            } else {
                FetchError::Body(e)
            }
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(FetchError::Json)
}
