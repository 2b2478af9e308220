//! The one-shot commands of the real binary: `config validate`, `config
//! schema`, `apply`, `diff`, `export`, `migrate` and `serve --help`. Each
//! test runs `tollgate` as a child process on its own temporary data
//! directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::*;
use tollgate_store::testing::{TempDirGuard, postgres_schema};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a successful run and returns its stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Writes `text` to `name` inside `dir`.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The README's quickstart file: the CLI must accept what the docs show.
const ORDERS: &str = include_str!("../../../examples/quickstart.yaml");

#[test]
fn config_validate_accepts_a_valid_file() {
    let dir = TempDirGuard::new().expect("temp dir");
    let f = file(dir.path(), "orders.yaml", ORDERS);
    let out = ok(run(dir.path(), &["config", "validate", s(&f)]));
    assert!(
        out.contains(s(&f)) && out.contains("valid (1 services, 1 routes)"),
        "{out}"
    );
    assert!(
        !dir.path().join(tollgate_store::SQLITE_FILE_NAME).exists(),
        "validate must not touch the store"
    );
}

#[test]
fn every_example_file_in_the_repo_is_valid() {
    let dir = TempDirGuard::new().expect("temp dir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("read examples/") {
        let path = entry.expect("entry").path();
        if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            let out = ok(run(dir.path(), &["config", "validate", s(&path)]));
            assert!(out.contains("valid"), "{out}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected examples/quickstart.yaml and examples/full.yaml, checked {checked}"
    );
}

#[test]
fn config_validate_names_the_file_the_path_and_the_reason() {
    let dir = TempDirGuard::new().expect("temp dir");
    let cases = [
        (
            "unknown-field.yaml",
            "services:\n  - name: orders\n    url: http://127.0.0.1:9000\n    routes:\n      - name: orders\n        paths: [/orders]\n        bogus: 1\n",
            "services[0].routes[0]",
            "unknown field `bogus`",
        ),
        (
            "bad-path.yaml",
            "services:\n  - name: orders\n    url: http://127.0.0.1:9000\n    routes:\n      - name: orders\n        paths: [orders]\n",
            "services[0].routes[0].paths[0]",
            "must start with `/`",
        ),
        (
            "duplicate.yaml",
            "services:\n  - name: orders\n    url: http://127.0.0.1:9000\n  - name: orders\n    url: http://127.0.0.1:9001\n",
            "services[1].name",
            "duplicate service name `orders`",
        ),
        (
            "duplicate-route.yaml",
            "services:\n  - name: a\n    url: http://127.0.0.1:9000\n    routes: [{name: r, paths: [/a]}]\n  - name: b\n    url: http://127.0.0.1:9001\n    routes: [{name: r, paths: [/b]}]\n",
            "services[1].routes[0].name",
            "duplicate route name `r`",
        ),
    ];
    for (name, text, path, reason) in cases {
        let f = file(dir.path(), name, text);
        let o = run(dir.path(), &["config", "validate", s(&f)]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{name} was accepted: {}", stdout(&o));
        assert!(!stdout(&o).contains("valid"), "{name}: {}", stdout(&o));
        assert!(
            err.contains(s(&f)),
            "{name}: stderr does not name the file:\n{err}"
        );
        assert!(
            err.contains(path),
            "{name}: stderr does not name `{path}`:\n{err}"
        );
        assert!(
            err.contains(reason),
            "{name}: stderr does not give the reason `{reason}`:\n{err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    // A file that is not there.
    let missing = dir.path().join("missing.yaml");
    let o = run(dir.path(), &["config", "validate", s(&missing)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(s(&missing)) && stderr(&o).contains("cannot read"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_schema_prints_the_json_schema() {
    let dir = TempDirGuard::new().expect("temp dir");
    let out = ok(run(dir.path(), &["config", "schema"]));
    let schema: serde_json::Value = serde_json::from_str(&out).expect("the schema is JSON");
    assert!(
        schema["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("json-schema.org")),
        "{schema:#}"
    );
    assert!(schema["properties"]["services"].is_object(), "{schema:#}");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level fields are denied"
    );
}

#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    // `tollgate config schema | head -1`: the reader goes away first. Rust's
    // `println!` panics on EPIPE; the commands must end quietly instead.
    let dir = TempDirGuard::new().expect("temp dir");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["config", "schema"])
        .env("TOLLGATE_DATA_DIR", dir.path())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tollgate");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait for tollgate");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

#[test]
fn apply_then_export_round_trips() {
    let dir = TempDirGuard::new().expect("temp dir");
    let f = file(dir.path(), "orders.yaml", ORDERS);
    let out = ok(run(dir.path(), &["apply", "-f", s(&f)]));
    assert!(
        out.contains("+ service orders") && out.contains("+ route orders"),
        "{out}"
    );
    assert!(
        out.contains("2 created, 0 updated, 0 deleted (applied)"),
        "{out}"
    );

    let exported = ok(run(dir.path(), &["export"]));
    assert!(
        exported.contains("name: orders") && exported.contains("/orders"),
        "{exported}"
    );
    let again = file(dir.path(), "exported.yaml", &exported);
    assert_eq!(
        ok(run(dir.path(), &["apply", "-f", s(&again)])).trim(),
        "no changes"
    );
    assert_eq!(
        ok(run(dir.path(), &["export"])),
        exported,
        "export is stable"
    );

    let json = ok(run(dir.path(), &["export", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("export --format json is JSON");
    assert_eq!(v["services"][0]["routes"][0]["paths"][0], "/orders");
    let from_json = file(dir.path(), "exported.json", &json);
    assert_eq!(
        ok(run(dir.path(), &["apply", "-f", s(&from_json)])).trim(),
        "no changes"
    );
}

#[test]
fn diff_lists_the_changes_and_exits_1_until_applied() {
    let dir = TempDirGuard::new().expect("temp dir");
    let f = file(dir.path(), "orders.yaml", ORDERS);
    let before = run(dir.path(), &["diff", "-f", s(&f)]);
    assert_eq!(before.status.code(), Some(1), "{}", stderr(&before));
    let out = stdout(&before);
    assert!(
        out.contains("+ service orders") && out.contains("+ route orders"),
        "{out}"
    );
    assert!(out.contains("(to apply)"), "{out}");
    assert_eq!(
        ok(run(dir.path(), &["export"])).trim(),
        "format_version: 1",
        "diff wrote nothing"
    );

    ok(run(dir.path(), &["apply", "-f", s(&f)]));
    assert_eq!(
        ok(run(dir.path(), &["diff", "-f", s(&f)])).trim(),
        "no changes"
    );

    let changed = file(dir.path(), "changed.yaml", &ORDERS.replace("9000", "9001"));
    let o = run(dir.path(), &["diff", "-f", s(&changed)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("~ service orders"), "{}", stdout(&o));
}

#[test]
fn a_failed_apply_changes_nothing() {
    let dir = TempDirGuard::new().expect("temp dir");
    let good = file(dir.path(), "good.yaml", ORDERS);
    ok(run(dir.path(), &["apply", "-f", s(&good)]));
    let before = ok(run(dir.path(), &["export"]));

    // Well-formed YAML of the right shape: the first service changes and a
    // second one is added, but the second's route is invalid.
    let broken = file(
        dir.path(),
        "broken.yaml",
        "services:\n  - name: orders\n    url: http://127.0.0.1:9999\n    routes:\n      - name: orders\n        paths: [/orders]\n  - name: payments\n    url: http://127.0.0.1:9001\n    routes:\n      - name: payments\n        paths: [payments]\n",
    );
    let o = run(dir.path(), &["apply", "-f", s(&broken)]);
    assert!(
        !o.status.success(),
        "the broken file was applied: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains(s(&broken)) && err.contains("services[1].routes[0].paths[0]"),
        "{err}"
    );
    assert_eq!(
        ok(run(dir.path(), &["export"])),
        before,
        "a failed apply left the store changed"
    );
}

#[test]
fn migrate_is_idempotent() {
    let dir = TempDirGuard::new().expect("temp dir");
    for _ in 0..2 {
        let out = ok(run(dir.path(), &["migrate"]));
        assert!(out.contains("store is up to date (sqlite)"), "{out}");
    }
    assert!(dir.path().join(tollgate_store::SQLITE_FILE_NAME).is_file());
}

#[tokio::test]
async fn commands_reach_a_postgres_schema_through_the_url() {
    let Some(schema) = postgres_schema().await else {
        return;
    };
    let url = url_with_schema(&schema.url, &schema.schema);
    let dir = TempDirGuard::new().expect("temp dir");
    let f = file(dir.path(), "orders.yaml", ORDERS);
    let pg = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--database-url", &url]);
        run(dir.path(), &v)
    };
    for _ in 0..2 {
        assert!(ok(pg(&["migrate"])).contains("store is up to date (postgres)"));
    }
    assert!(ok(pg(&["apply", "-f", s(&f)])).contains("(applied)"));
    // The tables live in the test schema: a store opened on it sees the service.
    let store = schema.connect().await.expect("connect to the schema");
    let (_, config) = store.export().await.expect("export");
    assert_eq!(config.services.len(), 1);
    assert_eq!(config.services[0].name, "orders");
    assert!(ok(pg(&["export"])).contains("name: orders"));
    assert!(
        !dir.path().join(tollgate_store::SQLITE_FILE_NAME).exists(),
        "SQLite was used instead"
    );
}

#[test]
fn serve_help_lists_every_setting_s_environment_variable() {
    let dir = TempDirGuard::new().expect("temp dir");
    let help = ok(run(dir.path(), &["serve", "--help"]));
    for var in [
        "TOLLGATE_PROXY_LISTEN",
        "TOLLGATE_ADMIN_LISTEN",
        "TOLLGATE_PORTAL_LISTEN",
        "TOLLGATE_DATA_DIR",
        "TOLLGATE_DATABASE_URL",
        "TOLLGATE_REDIS_URL",
        "TOLLGATE_ADMIN_TOKEN",
        "TOLLGATE_POLL_INTERVAL_MS",
        "TOLLGATE_SHUTDOWN_GRACE_SECS",
    ] {
        assert!(
            help.contains(&format!("env: {var}")),
            "`serve --help` does not mention {var}:\n{help}"
        );
    }
    for flag in [
        "--config",
        "--proxy-listen",
        "--admin-listen",
        "--data-dir",
        "--database-url",
        "--admin-token",
    ] {
        assert!(help.contains(flag), "`serve --help` does not list {flag}");
    }
}
