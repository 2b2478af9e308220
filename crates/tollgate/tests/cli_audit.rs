//! `tollgate audit list` and `tollgate audit export` of the real binary,
//! on SQLite and PostgreSQL: a node started in-process records writes made
//! through its admin API (with the client's address, which needs the
//! listener's peer info), and the commands, run as child processes, read
//! them back from the store with filters.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_admin::auth::{Actor, hash_token};
use tollgate_store::testing::{TempDirGuard, postgres_schema};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `tollgate <args> <store>`, asserts success, returns (stdout, stderr).
fn ok(dir: &Path, args: &[&str], store: &[&str]) -> (String, String) {
    let mut v = args.to_vec();
    v.extend_from_slice(store);
    let o = run(dir, &v);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{v:?}: exit {}\nstdout:\n{}\nstderr:\n{err}",
        o.status,
        stdout(&o)
    );
    (stdout(&o), err)
}

fn json_out(dir: &Path, args: &[&str], store: &[&str]) -> Value {
    let (out, _) = ok(dir, args, store);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
}

fn actions(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_owned())
        .collect()
}

/// Writes through a node's admin API; returns the organization's id.
async fn write_some(store: &[&str]) -> String {
    let node = node(store).await;
    let admin = |path: &str| admin_url(&node, path);
    let svc = json!({"name": "orders", "url": "http://127.0.0.1:9000"});
    let r = call(Method::POST, &admin("/services"), Some(TOKEN), Some(&svc)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let moved = json!({"name": "orders", "url": "http://127.0.0.1:9001"});
    let r = call(
        Method::PUT,
        &admin(&format!("/services/{id}")),
        Some(TOKEN),
        Some(&moved),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(
        Method::POST,
        &admin("/services"),
        Some(TOKEN),
        Some(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = call(
        Method::POST,
        &admin("/orgs"),
        Some(TOKEN),
        Some(&json!({"name": "acme"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let org = r.json()["id"].as_str().expect("id").to_owned();
    let app = json!({"name": "web"});
    let r = call(
        Method::POST,
        &admin(&format!("/orgs/{org}/apps")),
        Some(TOKEN),
        Some(&app),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = call(
        Method::DELETE,
        &admin(&format!("/services/{id}")),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    stop_node(node).await;
    org
}

fn check_commands(dir: &Path, store: &[&str], org: &str) {
    let actor = Actor::admin_token(&hash_token(TOKEN)).0;
    let (table, _) = ok(dir, &["audit", "list"], store);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 7, "a header and six entries:\n{table}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("ACTION"),
        "{table}"
    );
    for (line, action) in lines[1..].iter().zip([
        "service.create",
        "service.update",
        "service.create",
        "org.create",
        "app.create",
        "service.delete",
    ]) {
        assert!(line.contains(action), "{action} in `{line}`");
        assert!(line.contains(&actor), "{actor} in `{line}`");
        assert!(line.contains("127.0.0.1"), "the client address in `{line}`");
    }

    let update = json_out(
        dir,
        &[
            "audit",
            "list",
            "--format",
            "json",
            "--action",
            "service.update",
        ],
        store,
    );
    let e = &update["items"][0];
    assert_eq!(update["items"].as_array().expect("items").len(), 1);
    assert_eq!(e["before"]["spec"]["url"], "http://127.0.0.1:9000");
    assert_eq!(e["after"]["spec"]["url"], "http://127.0.0.1:9001");
    assert_eq!(e["ip"], "127.0.0.1");

    let failed = json_out(
        dir,
        &["audit", "list", "--format", "json", "--status", "422"],
        store,
    );
    assert_eq!(actions(&failed), ["service.create"]);
    assert_eq!(failed["items"][0]["after"], Value::Null);
    let services = json_out(
        dir,
        &[
            "audit",
            "list",
            "--format",
            "json",
            "--resource-type",
            "service",
        ],
        store,
    );
    assert_eq!(actions(&services).len(), 4);
    for by in ["acme", org] {
        let of_org = json_out(
            dir,
            &["audit", "list", "--format", "json", "--org", by],
            store,
        );
        assert_eq!(actions(&of_org), ["org.create", "app.create"], "--org {by}");
    }
    let mine = json_out(
        dir,
        &["audit", "list", "--format", "json", "--actor", &actor],
        store,
    );
    assert_eq!(actions(&mine).len(), 6);
    let (none, _) = ok(
        dir,
        &["audit", "list", "--since", "2999-01-01T00:00:00Z"],
        store,
    );
    assert_eq!(none, "no matching audit entries\n");
    let all = json_out(
        dir,
        &[
            "audit",
            "list",
            "--format",
            "json",
            "--since",
            "2000-01-01T00:00:00Z",
        ],
        store,
    );
    assert_eq!(actions(&all).len(), 6);

    // Pages: the rest is announced on stderr and reached with --after.
    let (two, err) = ok(dir, &["audit", "list", "--limit", "2"], store);
    assert_eq!(two.lines().count(), 3, "{two}");
    let next = err
        .split("--after ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no --after hint in {err}"))
        .to_owned();
    let rest = json_out(
        dir,
        &["audit", "list", "--format", "json", "--after", &next],
        store,
    );
    assert_eq!(actions(&rest).len(), 4);
    assert_eq!(rest["next"], Value::Null);

    // The export is every entry as one JSON object per line.
    let (export, _) = ok(dir, &["audit", "export"], store);
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let ids = |v: &[Value]| {
        v.iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&lines), ids(all["items"].as_array().expect("items")));
    let (apps, _) = ok(dir, &["audit", "export", "--action", "app.create"], store);
    assert_eq!(apps.lines().count(), 1);
    let (after, _) = ok(
        dir,
        &[
            "audit",
            "export",
            "--after",
            lines[4]["id"].as_str().expect("id"),
        ],
        store,
    );
    assert_eq!(after.lines().count(), 1);
}

#[tokio::test]
async fn audit_commands_read_the_log_on_sqlite() {
    let dir = TempDirGuard::new().expect("temp dir");
    let data = dir.path().to_str().expect("UTF-8 path").to_owned();
    let org = write_some(&["--data-dir", &data]).await;
    check_commands(dir.path(), &[], &org);
}

#[tokio::test]
async fn audit_commands_read_the_log_on_postgres() {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let url = url_with_schema(&schema.url, &schema.schema);
    let dir = TempDirGuard::new().expect("temp dir");
    let org = write_some(&["--database-url", &url]).await;
    check_commands(dir.path(), &["--database-url", &url], &org);
    assert!(
        !dir.path().join(tollgate_store::SQLITE_FILE_NAME).exists(),
        "SQLite was used instead"
    );
}
