//! The admin API on a real listener over a throw-away store, and a client
//! that reads whole answers. Shared by this crate's integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tollgate_admin::auth::hash_token;
use tollgate_admin::{AdminState, NodeStatus, UsageReader};
use tollgate_store::Store;

pub const TOKEN: &str = "test-admin-token-0123456789";
pub const PEPPER: [u8; 32] = [3u8; 32];
pub const TOKEN_TTL_SECS: i64 = 3600;

pub struct Api {
    pub addr: SocketAddr,
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub status: Arc<NodeStatus>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `code` of a problem+json answer (asserting the content type).
    pub fn code(&self) -> String {
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{}",
            self.text
        );
        self.json()["code"].as_str().expect("code").to_owned()
    }
}

impl Api {
    pub async fn start(store: Store) -> Api {
        Api::start_with_usage(store, None).await
    }

    /// Starts the API with this quota usage reader (`None`: no limiter).
    pub async fn start_with_usage(store: Store, usage: Option<Arc<dyn UsageReader>>) -> Api {
        // A second API on the same store finds the token registered.
        match store.add_admin_token(&hash_token(TOKEN), "test").await {
            Ok(_) | Err(tollgate_store::StoreError::Conflict(_)) => {}
            Err(e) => panic!("token: {e}"),
        }
        let status = Arc::new(NodeStatus::default());
        status.store_reachable(store.revision().await.expect("revision"));
        let app = tollgate_admin::router(AdminState {
            store,
            status: status.clone(),
            pepper: tollgate_identity::apikey::Pepper::new(&PEPPER).expect("pepper"),
            token_ttl: std::time::Duration::from_secs(TOKEN_TTL_SECS as u64),
            usage,
            metrics: Vec::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .expect("serve")
        });
        Api {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            status,
        }
    }

    /// A GET with the test token.
    pub async fn get(&self, path: &str) -> Reply {
        self.call_as(Method::GET, path, None, "", Some(TOKEN)).await
    }

    /// A JSON request with the test token.
    pub async fn send(&self, method: Method, path: &str, body: serde_json::Value) -> Reply {
        self.call_as(
            method,
            path,
            Some("application/json"),
            &body.to_string(),
            Some(TOKEN),
        )
        .await
    }

    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: &str,
        auth: Option<&str>,
    ) -> Reply {
        self.call_with(method, path, ct, body, auth, &[]).await
    }

    /// [`Api::call_as`] with extra request headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        if let Some(token) = auth {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = self
            .client
            .request(
                b.body(Full::new(Bytes::from(body.to_owned())))
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}
