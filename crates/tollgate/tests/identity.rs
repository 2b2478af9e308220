//! Credentials across a cluster: keys written to the store verify on every
//! node, a revocation reaches every node within a second, rotation keeps the
//! old key for its overlap, OAuth tokens issued by one node verify on
//! another, last-used times are written back, and a node with a different
//! key pepper refuses to start. Runs on one PostgreSQL schema and on one
//! SQLite file.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::{Method, StatusCode};
use serde_json::json;
use tollgate::Running;
use tollgate_core::identity::KeyEnvironment;
use tollgate_core::ids::{AppId, OrgId};
use tollgate_identity::apikey::{Pepper, display_prefix, generate};
use tollgate_store::testing::{TempDirGuard, postgres_schema};
use tollgate_store::{NewApiKey, Store};

const PROPAGATION: Duration = Duration::from_secs(1);

struct Cluster {
    a: Running,
    b: Running,
    store: Store,
    upstream: Upstream,
    _dir: Option<TempDirGuard>,
}

async fn on_postgres(extra: &[&str]) -> Option<Cluster> {
    let schema = postgres_schema().await?;
    let url = url_with_schema(&schema.url, &schema.schema);
    let mut args = vec!["--database-url", url.as_str()];
    args.extend_from_slice(extra);
    let a = node(&args).await;
    let b = node(&args).await;
    let store = schema.connect().await.expect("connect to the schema");
    Some(Cluster {
        a,
        b,
        store,
        upstream: Upstream::start("id-upstream").await,
        _dir: None,
    })
}

async fn on_sqlite(extra: &[&str]) -> Cluster {
    let dir = TempDirGuard::new().expect("temp dir");
    let data_dir = dir.path().to_str().expect("UTF-8 path").to_owned();
    let mut args = vec!["--data-dir", data_dir.as_str()];
    args.extend_from_slice(extra);
    let a = node(&args).await;
    let b = node(&args).await;
    let store = Store::open_data_dir(dir.path()).await.expect("open store");
    Cluster {
        a,
        b,
        store,
        upstream: Upstream::start("id-upstream").await,
        _dir: Some(dir),
    }
}

impl Cluster {
    async fn stop(self) {
        stop_node(self.a).await;
        stop_node(self.b).await;
    }

    /// Routes `/orders` to the upstream behind an `auth` policy.
    async fn protect(&self) {
        let cfg = json!({"services": [{
            "name": "orders", "url": self.upstream.url(),
            "routes": [{"name": "orders", "paths": ["/orders"], "strip_path": false,
                "policies": [{"name": "auth", "config": {"scopes": ["orders:read"]}}]}]
        }]});
        let r = call(
            Method::PUT,
            &admin_url(&self.a, "/config"),
            Some(TOKEN),
            Some(&cfg),
        )
        .await;
        assert!(r.status.is_success(), "{}", r.text);
        for n in [&self.a, &self.b] {
            eventually(DEADLINE, "the auth route to be live", || async {
                let r = get(&format!("http://{}/orders", proxy_of(n))).await;
                (r.status == StatusCode::UNAUTHORIZED).then_some(())
            })
            .await;
        }
    }

    async fn org_app(&self) -> (OrgId, AppId) {
        let org = self
            .store
            .create_org(
                &format!("acme-{}", OrgId::new().as_str()[20..].to_owned()),
                "Acme",
            )
            .await
            .expect("org");
        let app = self
            .store
            .tenant(&org.id)
            .create_app("billing", "", Default::default())
            .await
            .expect("app");
        (org.id, app.id)
    }
}

fn new_key(secret: &str, scopes: &[&str]) -> NewApiKey {
    let pepper = Pepper::new(PEPPER.as_bytes()).expect("pepper");
    NewApiKey {
        name: "test".into(),
        environment: KeyEnvironment::Live,
        key_hash: pepper.hash(secret).0,
        display_prefix: display_prefix(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        metadata: Default::default(),
        expires_at: None,
    }
}

async fn status_with_key(node: &Running, key: &str) -> StatusCode {
    let url = format!("http://{}/orders", proxy_of(node));
    get_with(&url, &[("x-api-key", key)]).await.status
}

/// Waits until `node` answers `want` for `key`; returns how long it took.
async fn until_status(node: &Running, key: &str, want: StatusCode, what: &str) -> Duration {
    let start = Instant::now();
    eventually(DEADLINE, what, || async {
        (status_with_key(node, key).await == want).then_some(())
    })
    .await;
    start.elapsed()
}

async fn keys_propagate_and_revocations_reach_every_node(c: &Cluster) {
    c.protect().await;
    let (org, app) = c.org_app().await;
    let tenant = c.store.tenant(&org);
    let secret = generate(KeyEnvironment::Live).expect("rng").secret;
    let key = tenant
        .create_key(&app, new_key(&secret, &["orders:read"]))
        .await
        .expect("key");
    for n in [&c.a, &c.b] {
        let took = until_status(n, &secret, StatusCode::OK, "the new key to work").await;
        assert!(took < PROPAGATION, "a new key took {took:?}");
    }
    // Revocation: both nodes refuse within a second.
    tenant.revoke_key(&key.id).await.expect("revoke");
    for n in [&c.a, &c.b] {
        let took = until_status(
            n,
            &secret,
            StatusCode::UNAUTHORIZED,
            "the revoked key to fail",
        )
        .await;
        assert!(took < PROPAGATION, "revocation took {took:?}");
    }

    // Rotation with an overlap: both keys work until the old one expires.
    let old_secret = generate(KeyEnvironment::Live).expect("rng").secret;
    let old = tenant
        .create_key(&app, new_key(&old_secret, &["orders:read"]))
        .await
        .expect("key");
    until_status(&c.b, &old_secret, StatusCode::OK, "the old key to work").await;
    let new_secret = generate(KeyEnvironment::Live).expect("rng").secret;
    let (new, previous) = tenant
        .rotate_key(
            &old.id,
            new_key(&new_secret, &["orders:read"]),
            Duration::from_secs(2),
        )
        .await
        .expect("rotate");
    assert_eq!(new.rotated_from.as_ref(), Some(&old.id));
    until_status(&c.b, &new_secret, StatusCode::OK, "the new key to work").await;
    assert_eq!(
        status_with_key(&c.b, &old_secret).await,
        StatusCode::OK,
        "old key within overlap"
    );
    let expiry = previous.expires_at.expect("the old key expires");
    let left = (expiry - chrono::Utc::now()).to_std().unwrap_or_default();
    assert!(left <= Duration::from_secs(2), "{left:?}");
    until_status(
        &c.b,
        &old_secret,
        StatusCode::UNAUTHORIZED,
        "the old key to expire",
    )
    .await;
    assert_eq!(status_with_key(&c.a, &new_secret).await, StatusCode::OK);

    // Last use is written back in batches (the nodes flush every 100 ms).
    eventually(DEADLINE, "last use to be recorded", || async {
        tenant
            .get_key(&new.id)
            .await
            .expect("key")
            .last_used_at
            .map(|_| ())
    })
    .await;
}

async fn oauth_tokens_from_one_node_verify_on_the_other(c: &Cluster) {
    let (org, app) = c.org_app().await;
    let secret = "tgcs_cluster-secret-0123456789";
    let hash = tollgate_identity::oauth::keys::hash_client_secret(secret).expect("hash");
    let client = c
        .store
        .tenant(&org)
        .create_client(&app, "svc", vec!["orders:read".into()], &hash)
        .await
        .expect("client");
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={secret}",
        client.id
    );
    // The client reaches node A's OAuth server through the change feed.
    let token = eventually(DEADLINE, "a token from node A", || async {
        let r = post_form(&format!("http://{}/oauth2/token", proxy_of(&c.a)), &form).await;
        if r.status == StatusCode::OK {
            r.json()["access_token"].as_str().map(str::to_owned)
        } else {
            None
        }
    })
    .await;
    let bearer = format!("Bearer {token}");
    let r = get_with(
        &format!("http://{}/orders", proxy_of(&c.b)),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Revoked at node A, refused by node B within a second.
    let revoke = format!(
        "token={token}&client_id={}&client_secret={secret}",
        client.id
    );
    let r = post_form(&format!("http://{}/oauth2/revoke", proxy_of(&c.a)), &revoke).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let start = Instant::now();
    eventually(DEADLINE, "node B to refuse the revoked token", || async {
        let r = get_with(
            &format!("http://{}/orders", proxy_of(&c.b)),
            &[("authorization", &bearer)],
        )
        .await;
        (r.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(start.elapsed() < PROPAGATION, "{:?}", start.elapsed());
}

/// Both nodes flush last-used times often and share the public issuer URL,
/// as a cluster behind one address does.
const FAST: &[&str] = &[
    "--last-used-flush-ms",
    "100",
    "--oauth-issuer",
    "https://api.example.test",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_cross_a_postgres_cluster() {
    let Some(c) = on_postgres(FAST).await else {
        return;
    };
    keys_propagate_and_revocations_reach_every_node(&c).await;
    oauth_tokens_from_one_node_verify_on_the_other(&c).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_cross_a_sqlite_cluster() {
    let c = on_sqlite(FAST).await;
    keys_propagate_and_revocations_reach_every_node(&c).await;
    oauth_tokens_from_one_node_verify_on_the_other(&c).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_pepper_refuses_to_start() {
    let dir = TempDirGuard::new().expect("temp dir");
    let data_dir = dir.path().to_str().expect("UTF-8 path");
    let a = node(&["--data-dir", data_dir]).await;
    let argv = [
        "tollgate",
        "serve",
        "--proxy-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token",
        TOKEN,
        "--data-dir",
        data_dir,
        "--key-pepper",
        "another-pepper-that-is-long-enough-0123456789",
    ];
    let cli = <tollgate::Cli as clap::Parser>::try_parse_from(argv).expect("arguments");
    let tollgate::Command::Serve(serve) = cli.command else {
        panic!("serve")
    };
    let err = within("the second node to give up", tollgate::start(*serve))
        .await
        .expect_err("a node with another pepper must not start");
    let msg = format!("{err:#}");
    assert!(msg.contains("TOLLGATE_KEY_PEPPER"), "{msg}");
    assert!(
        !msg.contains("another-pepper"),
        "the pepper is never printed: {msg}"
    );
    stop_node(a).await;
}
