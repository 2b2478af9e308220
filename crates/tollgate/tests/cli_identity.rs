//! The identity commands of the real binary (`orgs`, `apps`, `keys`,
//! `oauth-clients`, `signing-keys`), each run as a child process against a
//! temporary data directory. Nothing is served: the printed secrets are
//! checked against what the store holds.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;
use tollgate_identity::apikey::Pepper;
use tollgate_store::Store;
use tollgate_store::testing::{TempDirGuard, block_on};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `tollgate <args>`, asserts success and parses stdout as JSON.
fn ok_json(dir: &Path, args: &[&str]) -> Value {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: exit {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}):\n{}", stdout(&o)))
}

/// Runs `tollgate <args>`, asserts failure and returns stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        !o.status.success(),
        "{args:?} should fail\nstdout:\n{}",
        stdout(&o)
    );
    assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
    stderr(&o)
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// The store's HMAC of the key with id `id`, if the key is usable.
fn stored_hash(dir: &Path, id: &str) -> Option<[u8; 32]> {
    block_on(async {
        let store = Store::open_data_dir(dir).await.expect("open the store");
        store
            .key_grant(&id.parse().expect("key id"))
            .await
            .expect("key grant")
            .map(|g| g.key_hash)
    })
}

fn pepper(dir: &Path) -> Pepper {
    let text = std::fs::read_to_string(dir.join("key-pepper")).expect("generated pepper file");
    Pepper::new(text.trim().as_bytes()).expect("pepper")
}

#[test]
fn cli_creates_orgs_apps_keys_and_clients() {
    let guard = TempDirGuard::new().expect("temp dir");
    let dir = guard.path();

    let org = ok_json(
        dir,
        &["orgs", "create", "acme", "--display-name", "Acme Inc."],
    );
    let org_id = s(&org["id"]);
    assert!(org_id.starts_with("org_"));
    assert_eq!(org["display_name"], "Acme Inc.");
    let orgs = ok_json(dir, &["orgs", "list"]);
    assert_eq!(orgs[0]["id"], org_id.as_str());

    // `--org` takes a name or an id.
    let app = ok_json(dir, &["apps", "create", "--org", "acme", "web"]);
    let app_id = s(&app["id"]);
    assert_eq!(app["org_id"], org_id.as_str());
    let apps = ok_json(dir, &["apps", "list", "--org", &org_id]);
    assert_eq!(apps.as_array().expect("array").len(), 1);

    let o = run(
        dir,
        &[
            "keys",
            "create",
            "--org",
            "acme",
            "--app",
            &app_id,
            "--scope",
            "orders:read",
            "--scope",
            "orders:write",
            "--name",
            "ci",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("shown only this once"),
        "{}",
        stderr(&o)
    );
    let created: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let secret = s(&created["secret"]);
    let key_id = s(&created["key"]["id"]);
    let prefix = s(&created["key"]["display_prefix"]);
    assert!(secret.starts_with("tg_live_") && secret.starts_with(&prefix));
    assert!(tollgate_identity::apikey::parse(&secret).is_ok());
    assert_eq!(
        created["key"]["scopes"],
        serde_json::json!(["orders:read", "orders:write"])
    );
    // The printed key verifies: the store holds HMAC(pepper, key).
    let pepper = pepper(dir);
    assert_eq!(stored_hash(dir, &key_id), Some(pepper.hash(&secret).0));

    let test = ok_json(
        dir,
        &[
            "keys", "create", "--org", "acme", "--app", &app_id, "--env", "test",
        ],
    );
    assert!(s(&test["secret"]).starts_with("tg_test_"));

    // `keys list` shows the display prefix, never the secret.
    let o = run(dir, &["keys", "list", "--org", "acme", "--app", &app_id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = stdout(&o);
    assert!(listed.contains(&prefix), "{listed}");
    assert!(!listed.contains(&secret), "the list shows a secret");
    assert!(!listed.contains(&s(&test["secret"])));
    assert_eq!(
        serde_json::from_str::<Value>(&listed).expect("JSON")[0]["id"],
        key_id.as_str()
    );

    // Rotation: a new secret; the old key keeps working for the overlap.
    let rotated = ok_json(
        dir,
        &[
            "keys",
            "rotate",
            "--org",
            "acme",
            "--app",
            &app_id,
            &key_id,
            "--overlap",
            "24h",
        ],
    );
    let new_secret = s(&rotated["secret"]);
    let new_id = s(&rotated["key"]["id"]);
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["key"]["rotated_from"], key_id.as_str());
    assert_eq!(rotated["key"]["scopes"], created["key"]["scopes"]);
    assert!(rotated["previous"]["expires_at"].is_string());
    assert_eq!(stored_hash(dir, &new_id), Some(pepper.hash(&new_secret).0));
    assert_eq!(stored_hash(dir, &key_id), Some(pepper.hash(&secret).0));

    // Revocation.
    let revoked = ok_json(
        dir,
        &["keys", "revoke", "--org", "acme", "--app", &app_id, &key_id],
    );
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(stored_hash(dir, &key_id), None);

    // OAuth clients.
    let o = run(
        dir,
        &[
            "oauth-clients",
            "create",
            "--org",
            "acme",
            "--app",
            &app_id,
            "--name",
            "backend",
            "--scope",
            "orders:read",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("shown only this once"));
    let client: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert!(s(&client["client_id"]).starts_with("cli_"));
    let client_secret = s(&client["client_secret"]);
    assert!(client_secret.starts_with("tgcs_"));
    let grant = block_on(async {
        let store = Store::open_data_dir(dir).await.expect("store");
        store
            .client_grant(&s(&client["client_id"]).parse().expect("client id"))
            .await
            .expect("grant")
            .expect("usable")
    });
    assert!(tollgate_identity::oauth::keys::verify_client_secret(
        &client_secret,
        &grant.secret_hash
    ));

    // Signing keys: the second rotation retires the first, with an expiry.
    let first = ok_json(dir, &["signing-keys", "rotate"]);
    let second = ok_json(
        dir,
        &["signing-keys", "rotate", "--oauth-token-ttl-secs", "60"],
    );
    assert_eq!(second["retired"][0]["id"], first["key"]["id"]);
    assert!(second["retired"][0]["expires_at"].is_string());
    assert!(second["key"]["public_jwk"].get("d").is_none());
}

#[test]
fn cli_identity_mistakes_fail_with_a_message() {
    let guard = TempDirGuard::new().expect("temp dir");
    let dir = guard.path();
    ok_json(dir, &["orgs", "create", "acme"]);
    ok_json(dir, &["orgs", "create", "globex"]);
    let app = s(&ok_json(dir, &["apps", "create", "--org", "acme", "web"])["id"]);
    let other_app = s(&ok_json(dir, &["apps", "create", "--org", "globex", "erp"])["id"]);
    let key = s(&ok_json(dir, &["keys", "create", "--org", "acme", "--app", &app])["key"]["id"]);

    let err = fails(dir, &["apps", "create", "--org", "nope", "web"]);
    assert!(err.contains("organization `nope` not found"), "{err}");
    let err = fails(
        dir,
        &["apps", "list", "--org", "org_01jd5m3x9q7k2v8r4t6y0w1zab"],
    );
    assert!(err.contains("not found"), "{err}");
    // Another organization's app, or a key under another app: not found.
    let err = fails(dir, &["keys", "list", "--org", "acme", "--app", &other_app]);
    assert!(
        err.contains(&format!("app `{other_app}` not found")),
        "{err}"
    );
    let err = fails(dir, &["keys", "create", "--org", "globex", "--app", &app]);
    assert!(err.contains("not found"), "{err}");
    let second_app = s(&ok_json(dir, &["apps", "create", "--org", "acme", "mobile"])["id"]);
    let err = fails(
        dir,
        &[
            "keys",
            "revoke",
            "--org",
            "acme",
            "--app",
            &second_app,
            &key,
        ],
    );
    assert!(err.contains(&format!("API key `{key}` not found")), "{err}");
    // Bad input.
    let err = fails(
        dir,
        &[
            "keys",
            "rotate",
            "--org",
            "acme",
            "--app",
            &app,
            &key,
            "--overlap",
            "1000h",
        ],
    );
    assert!(err.contains("overlap"), "{err}");
    let err = fails(
        dir,
        &[
            "keys", "create", "--org", "acme", "--app", &app, "--env", "prod",
        ],
    );
    assert!(err.contains("prod"), "{err}");
    let err = fails(dir, &["keys", "list", "--org", "acme", "--app", "web"]);
    assert!(err.contains("--app"), "{err}");
    let err = fails(
        dir,
        &[
            "keys",
            "create",
            "--org",
            "acme",
            "--app",
            &app,
            "--scope",
            "two words",
        ],
    );
    assert!(err.contains("scopes[0]"), "{err}");
    let err = fails(dir, &["orgs", "create", "acme"]);
    assert!(err.contains("acme"), "{err}");
    let err = fails(dir, &["orgs", "create", "Not A Slug"]);
    assert!(err.contains("name"), "{err}");
    // The key was never revoked by the failed attempts.
    let keys = ok_json(dir, &["keys", "list", "--org", "acme", "--app", &app]);
    assert!(keys[0]["revoked_at"].is_null());
}
