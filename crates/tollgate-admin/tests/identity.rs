//! The identity part of the admin API over a real socket, on SQLite and
//! PostgreSQL: organizations, users, members, apps, API keys, OAuth
//! clients, JWT issuers and signing keys; secrets shown once; tenant
//! isolation; and client mistakes answered with 4xx problems.

use chrono::{DateTime, Utc};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_identity::apikey::Pepper;

mod common;

use common::*;

impl Reply {
    fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        self.json()
    }
    fn not_found(&self) {
        assert_eq!(self.status, StatusCode::NOT_FOUND, "{}", self.text);
        assert_eq!(self.code(), "not_found");
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

fn time(v: &Value) -> DateTime<Utc> {
    s(v).parse().expect("RFC 3339 time")
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().expect("items").clone()
}

fn ids(v: &Value) -> Vec<String> {
    items(v).iter().map(|i| s(&i["id"])).collect()
}

impl Api {
    async fn call(&self, method: Method, path: &str, ct: Option<&str>, body: &str) -> Reply {
        self.call_as(method, path, ct, body, Some(TOKEN)).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None, "").await
    }
    /// A POST without a body (revoke, rotate signing keys, new secret).
    async fn post(&self, path: &str) -> Reply {
        self.call(Method::POST, path, None, "").await
    }

    async fn org(&self, name: &str) -> String {
        let r = self
            .send(Method::POST, "/orgs", json!({"name": name}))
            .await;
        s(&r.expect(StatusCode::CREATED)["id"])
    }
    async fn user(&self, email: &str) -> String {
        let r = self
            .send(Method::POST, "/users", json!({"email": email}))
            .await;
        s(&r.expect(StatusCode::CREATED)["id"])
    }
    async fn app(&self, org: &str, name: &str) -> String {
        let r = self
            .send(
                Method::POST,
                &format!("/orgs/{org}/apps"),
                json!({"name": name}),
            )
            .await;
        s(&r.expect(StatusCode::CREATED)["id"])
    }
    /// Creates a key; returns (id, secret).
    async fn key(&self, org: &str, app: &str, body: Value) -> (String, String) {
        let r = self
            .send(Method::POST, &format!("/orgs/{org}/apps/{app}/keys"), body)
            .await;
        let v = r.expect(StatusCode::CREATED);
        (s(&v["key"]["id"]), s(&v["secret"]))
    }
    /// Creates an OAuth client; returns (id, secret).
    async fn client(&self, org: &str, app: &str) -> (String, String) {
        let r = self
            .send(
                Method::POST,
                &format!("/orgs/{org}/apps/{app}/oauth-clients"),
                json!({"name": "backend", "scopes": ["orders:read"]}),
            )
            .await;
        let v = r.expect(StatusCode::CREATED);
        (s(&v["client"]["id"]), s(&v["client_secret"]))
    }
}

/// Asserts `t` is within a minute of `expected`.
fn near(t: DateTime<Utc>, expected: DateTime<Utc>) {
    let off = (t - expected).num_seconds().abs();
    assert!(off < 60, "{t} is {off}s away from {expected}");
}

fn is_secret_response(r: &Reply) {
    assert_eq!(r.headers["cache-control"], "no-store", "{:?}", r.headers);
}

tollgate_store::backend_tests! {
    async fn orgs_users_and_members(store) {
        let api = Api::start(store).await;
        let r = api.send(Method::POST, "/orgs", json!({"name": "acme", "display_name": "Acme Inc."})).await;
        let org = r.expect(StatusCode::CREATED);
        let id = s(&org["id"]);
        assert!(id.starts_with("org_"));
        assert_eq!(org["display_name"], "Acme Inc.");
        let r = api.send(Method::POST, "/orgs", json!({"name": "acme"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.code(), "conflict");
        let other = api.org("globex").await;
        assert_eq!(api.get(&format!("/orgs/{other}")).await.expect(StatusCode::OK)["display_name"], "globex");

        // Keyset pages.
        let page = api.get("/orgs?limit=1").await.expect(StatusCode::OK);
        assert_eq!(ids(&page), [id.as_str()]);
        let next = s(&page["next"]);
        let page = api.get(&format!("/orgs?limit=1&after={next}")).await.expect(StatusCode::OK);
        assert_eq!(ids(&page), [other.as_str()]);

        let r = api.send(Method::PATCH, &format!("/orgs/{id}"), json!({"display_name": "ACME"})).await;
        assert_eq!(r.expect(StatusCode::OK)["display_name"], "ACME");
        assert_eq!(api.get(&format!("/orgs/{id}")).await.expect(StatusCode::OK)["name"], "acme");

        // Users.
        let alice = api.user("Alice@Example.com").await;
        let bob = api.user("bob@example.com").await;
        let carol = api.user("carol@example.com").await;
        assert_eq!(api.get(&format!("/users/{alice}")).await.expect(StatusCode::OK)["email"], "alice@example.com");
        assert_eq!(api.get("/users").await.expect(StatusCode::OK)["items"].as_array().expect("items").len(), 3);
        let r = api.send(Method::POST, "/users", json!({"email": "ALICE@example.com"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

        // Members.
        let members = format!("/orgs/{id}/members");
        let r = api.send(Method::POST, &members, json!({"user_id": alice, "role": "owner"})).await;
        assert_eq!(r.headers["location"], format!("{members}/{alice}").as_str());
        let m = r.expect(StatusCode::CREATED);
        assert_eq!(m["role"], "owner");
        assert_eq!(m["user"]["id"], alice.as_str());
        api.send(Method::POST, &members, json!({"user_id": bob, "role": "developer"})).await.expect(StatusCode::CREATED);
        let r = api.send(Method::POST, &members, json!({"user_id": bob, "role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        let r = api.send(Method::POST, &members, json!({"user_id": "usr_01jd5m3x9q7k2v8r4t6y0w1zab", "role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "a missing user in the body is not a 404: {}", r.text);
        assert_eq!(r.json()["errors"][0]["path"], "user_id");

        let list = api.get(&members).await.expect(StatusCode::OK);
        assert_eq!(items(&list).len(), 2);
        let page = api.get(&format!("{members}?limit=1")).await.expect(StatusCode::OK);
        assert_eq!(items(&page).len(), 1);
        let page = api.get(&format!("{members}?limit=1&after={}", s(&page["next"]))).await.expect(StatusCode::OK);
        assert_eq!(items(&page).len(), 1);
        assert!(page.get("next").is_none());

        let r = api.send(Method::PATCH, &format!("{members}/{bob}"), json!({"role": "admin"})).await;
        assert_eq!(r.expect(StatusCode::OK)["role"], "admin");
        assert_eq!(api.get(&format!("{members}/{bob}")).await.expect(StatusCode::OK)["role"], "admin");

        // The last owner can be neither demoted nor removed.
        let r = api.send(Method::PATCH, &format!("{members}/{alice}"), json!({"role": "admin"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.code(), "conflict");
        let r = api.delete(&format!("{members}/{alice}")).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.code(), "conflict");
        // With a second owner, the first can go.
        api.send(Method::PATCH, &format!("{members}/{bob}"), json!({"role": "owner"})).await.expect(StatusCode::OK);
        api.send(Method::PATCH, &format!("{members}/{alice}"), json!({"role": "viewer"})).await.expect(StatusCode::OK);
        assert_eq!(api.delete(&format!("{members}/{alice}")).await.status, StatusCode::NO_CONTENT);
        api.get(&format!("{members}/{alice}")).await.not_found();
        api.get(&format!("{members}/{carol}")).await.not_found();
        api.delete(&format!("{members}/{carol}")).await.not_found();

        // Deleting the organization takes its memberships along.
        assert_eq!(api.delete(&format!("/orgs/{id}")).await.status, StatusCode::NO_CONTENT);
        api.get(&format!("/orgs/{id}")).await.not_found();
        api.get(&members).await.not_found();
        api.delete(&format!("/orgs/{id}")).await.not_found();
        assert_eq!(ids(&api.get("/orgs").await.expect(StatusCode::OK)), [other]);
    }

    async fn apps_crud(store) {
        let api = Api::start(store).await;
        let org = api.org("acme").await;
        let apps = format!("/orgs/{org}/apps");
        let r = api.send(Method::POST, &apps, json!({"name": "web", "description": "the shop", "metadata": {"team": "a"}})).await;
        let app = r.expect(StatusCode::CREATED);
        let id = s(&app["id"]);
        assert!(id.starts_with("app_"));
        assert_eq!(app["org_id"], org.as_str());
        let r = api.send(Method::POST, &apps, json!({"name": "web"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        let second = api.app(&org, "mobile").await;
        assert_eq!(ids(&api.get(&apps).await.expect(StatusCode::OK)), [id.as_str(), second.as_str()]);
        let page = api.get(&format!("{apps}?limit=1")).await.expect(StatusCode::OK);
        assert_eq!(ids(&page), [id.as_str()]);
        assert_eq!(s(&page["next"]), id);

        let r = api.send(Method::PATCH, &format!("{apps}/{id}"), json!({"description": "the web shop"})).await;
        let patched = r.expect(StatusCode::OK);
        assert_eq!(patched["description"], "the web shop");
        assert_eq!(patched["name"], "web");
        assert_eq!(patched["metadata"]["team"], "a");
        let r = api.send(Method::PATCH, &format!("{apps}/{id}"), json!({"name": "mobile"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(api.get(&format!("{apps}/{id}")).await.expect(StatusCode::OK)["description"], "the web shop");

        // Deleting an app deletes its keys.
        let (key, _) = api.key(&org, &id, json!({})).await;
        assert_eq!(api.delete(&format!("{apps}/{id}")).await.status, StatusCode::NO_CONTENT);
        api.get(&format!("{apps}/{id}")).await.not_found();
        api.get(&format!("{apps}/{id}/keys/{key}")).await.not_found();
        api.delete(&format!("{apps}/{id}")).await.not_found();
        assert_eq!(ids(&api.get(&apps).await.expect(StatusCode::OK)), [second]);
    }

    async fn api_key_secret_is_shown_once(store) {
        let api = Api::start(store.clone()).await;
        let org = api.org("acme").await;
        let app = api.app(&org, "web").await;
        let keys = format!("/orgs/{org}/apps/{app}/keys");
        let r = api.send(Method::POST, &keys, json!({"name": "ci", "scopes": ["orders:read"], "metadata": {"owner": "ci"}})).await;
        is_secret_response(&r);
        let created = r.expect(StatusCode::CREATED);
        let secret = s(&created["secret"]);
        let key = &created["key"];
        let id = s(&key["id"]);
        assert!(secret.starts_with("tg_live_"), "{secret}");
        assert!(tollgate_identity::apikey::parse(&secret).is_ok());
        assert_eq!(key["environment"], "live");
        assert!(secret.starts_with(&s(&key["display_prefix"])));
        assert_eq!(key["scopes"], json!(["orders:read"]));
        let fields: Vec<&String> = key.as_object().expect("object").keys().collect();
        assert!(fields.iter().all(|f| !f.contains("hash") && !f.contains("secret")), "{fields:?}");

        // The secret verifies: the store holds HMAC(pepper, secret).
        let pepper = Pepper::new(&PEPPER).expect("pepper");
        let grant = store.key_grant(&id.parse().expect("key id")).await.expect("grant").expect("usable");
        assert_eq!(grant.key_hash, pepper.hash(&secret).0);

        // Never again: not in reads, lists or updates.
        for path in [format!("{keys}/{id}"), keys.clone()] {
            let r = api.get(&path).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(!r.text.contains(&secret), "{path} shows the secret");
            assert!(r.text.contains(&s(&key["display_prefix"])));
            assert!(r.headers.get("cache-control").is_none());
        }

        let test = api.send(Method::POST, &keys, json!({"environment": "test"})).await.expect(StatusCode::CREATED);
        assert!(s(&test["secret"]).starts_with("tg_test_"));
        assert_eq!(test["key"]["environment"], "test");

        // PATCH: name, scopes, expiry; `null` removes the expiry.
        let later = (Utc::now() + chrono::Duration::days(7)).to_rfc3339();
        let r = api.send(Method::PATCH, &format!("{keys}/{id}"), json!({"name": "ci-2", "scopes": ["a", "b"], "expires_at": later})).await;
        let patched = r.expect(StatusCode::OK);
        assert!(!patched.to_string().contains(&secret));
        assert_eq!(patched["name"], "ci-2");
        assert_eq!(patched["scopes"], json!(["a", "b"]));
        assert_eq!(patched["metadata"]["owner"], "ci");
        near(time(&patched["expires_at"]), Utc::now() + chrono::Duration::days(7));
        let r = api.send(Method::PATCH, &format!("{keys}/{id}"), json!({"expires_at": null})).await;
        assert!(r.expect(StatusCode::OK)["expires_at"].is_null());

        // Revocation is idempotent.
        let revoked = api.post(&format!("{keys}/{id}/revoke")).await.expect(StatusCode::OK);
        let at = s(&revoked["revoked_at"]);
        let again = api.post(&format!("{keys}/{id}/revoke")).await.expect(StatusCode::OK);
        assert_eq!(s(&again["revoked_at"]), at);
        assert!(store.key_grant(&id.parse().expect("key id")).await.expect("grant").is_none());
    }

    async fn api_key_rotation(store) {
        let api = Api::start(store.clone()).await;
        let org = api.org("acme").await;
        let app = api.app(&org, "web").await;
        let keys = format!("/orgs/{org}/apps/{app}/keys");
        let (old, old_secret) = api.key(&org, &app, json!({"name": "ci", "scopes": ["orders:read"], "metadata": {"k": "v"}})).await;

        let r = api.send(Method::POST, &format!("{keys}/{old}/rotate"), json!({"overlap": "721h"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.json()["errors"][0]["path"], "overlap");
        let r = api.send(Method::POST, &format!("{keys}/{old}/rotate"), json!({})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "overlap is required: {}", r.text);

        let r = api.send(Method::POST, &format!("{keys}/{old}/rotate"), json!({"overlap": "24h"})).await;
        is_secret_response(&r);
        let rotated = r.expect(StatusCode::CREATED);
        let secret = s(&rotated["secret"]);
        assert_ne!(secret, old_secret);
        assert!(secret.starts_with("tg_live_"));
        let new = &rotated["key"];
        let new_id = s(&new["id"]);
        assert_eq!(new["rotated_from"], old.as_str());
        assert_eq!(new["scopes"], json!(["orders:read"]), "scopes default to the old key's");
        assert_eq!(new["metadata"], json!({"k": "v"}));
        assert_eq!(new["name"], "ci");
        assert!(new["expires_at"].is_null());
        let previous = &rotated["previous"];
        assert_eq!(previous["id"], old.as_str());
        near(time(&previous["expires_at"]), Utc::now() + chrono::Duration::hours(24));
        assert!(!rotated["previous"].to_string().contains(&old_secret));

        // Both keys work during the overlap.
        let pepper = Pepper::new(&PEPPER).expect("pepper");
        let old_grant = store.key_grant(&old.parse().expect("id")).await.expect("grant").expect("old key still usable");
        assert_eq!(old_grant.key_hash, pepper.hash(&old_secret).0);
        let new_grant = store.key_grant(&new_id.parse().expect("id")).await.expect("grant").expect("new key usable");
        assert_eq!(new_grant.key_hash, pepper.hash(&secret).0);

        // Overrides, and no secret in reads of either key.
        let r = api.send(Method::POST, &format!("{keys}/{new_id}/rotate"), json!({"overlap": "0s", "scopes": ["orders:write"], "name": "ci-3"})).await;
        let third = r.expect(StatusCode::CREATED);
        assert_eq!(third["key"]["scopes"], json!(["orders:write"]));
        assert_eq!(third["key"]["name"], "ci-3");
        let list = api.get(&keys).await;
        assert!(!list.text.contains(&secret) && !list.text.contains(&old_secret));
        assert_eq!(items(&list.json()).len(), 3);

        // A revoked key cannot be rotated.
        api.post(&format!("{keys}/{old}/revoke")).await.expect(StatusCode::OK);
        let r = api.send(Method::POST, &format!("{keys}/{old}/rotate"), json!({"overlap": "1h"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.code(), "conflict");
    }

    async fn oauth_clients_lifecycle(store) {
        use tollgate_identity::oauth::keys::verify_client_secret;
        let api = Api::start(store.clone()).await;
        let org = api.org("acme").await;
        let app = api.app(&org, "web").await;
        let clients = format!("/orgs/{org}/apps/{app}/oauth-clients");
        let r = api.send(Method::POST, &clients, json!({"name": "backend", "scopes": ["orders:read"]})).await;
        is_secret_response(&r);
        let created = r.expect(StatusCode::CREATED);
        let id = s(&created["client"]["id"]);
        let secret = s(&created["client_secret"]);
        assert!(id.starts_with("cli_"));
        assert!(secret.starts_with("tgcs_"));
        let grant = store.client_grant(&id.parse().expect("id")).await.expect("grant").expect("usable");
        assert!(verify_client_secret(&secret, &grant.secret_hash));
        assert!(!created["client"].to_string().contains("argon2"));

        for path in [format!("{clients}/{id}"), clients.clone()] {
            let r = api.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert!(!r.text.contains(&secret) && !r.text.contains("argon2"), "{}", r.text);
        }
        assert_eq!(ids(&api.get(&clients).await.expect(StatusCode::OK)), [id.as_str()]);

        // A new secret replaces the old one.
        let r = api.post(&format!("{clients}/{id}/secret")).await;
        is_secret_response(&r);
        let reset = r.expect(StatusCode::OK);
        let new_secret = s(&reset["client_secret"]);
        assert_ne!(new_secret, secret);
        let grant = store.client_grant(&id.parse().expect("id")).await.expect("grant").expect("usable");
        assert!(verify_client_secret(&new_secret, &grant.secret_hash));
        assert!(!verify_client_secret(&secret, &grant.secret_hash));

        // Revocation is idempotent and final.
        let revoked = api.post(&format!("{clients}/{id}/revoke")).await.expect(StatusCode::OK);
        let at = s(&revoked["revoked_at"]);
        assert_eq!(s(&api.post(&format!("{clients}/{id}/revoke")).await.expect(StatusCode::OK)["revoked_at"]), at);
        assert!(store.client_grant(&id.parse().expect("id")).await.expect("grant").is_none());
        let r = api.post(&format!("{clients}/{id}/secret")).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    }

    async fn tenants_never_see_each_other(store) {
        let api = Api::start(store).await;
        let a = api.org("org-a").await;
        let b = api.org("org-b").await;
        let a_app = api.app(&a, "secret-project").await;
        let a_app2 = api.app(&a, "other").await;
        let b_app = api.app(&b, "b-app").await;
        let (a_key, _) = api.key(&a, &a_app, json!({"name": "a-key"})).await;
        let (a_client, _) = api.client(&a, &a_app).await;
        let alice = api.user("alice@a.example").await;
        api.send(Method::POST, &format!("/orgs/{a}/members"), json!({"user_id": alice, "role": "owner"})).await.expect(StatusCode::CREATED);

        // A's ids under B: 404, never data, never 403.
        let reads = [
            format!("/orgs/{b}/apps/{a_app}"),
            format!("/orgs/{b}/apps/{a_app}/keys"),
            format!("/orgs/{b}/apps/{a_app}/keys/{a_key}"),
            format!("/orgs/{b}/apps/{b_app}/keys/{a_key}"),
            format!("/orgs/{b}/apps/{a_app}/oauth-clients"),
            format!("/orgs/{b}/apps/{a_app}/oauth-clients/{a_client}"),
            format!("/orgs/{b}/apps/{b_app}/oauth-clients/{a_client}"),
            format!("/orgs/{b}/members/{alice}"),
        ];
        for path in &reads {
            let r = api.get(path).await;
            r.not_found();
            assert!(!r.text.contains("secret-project") && !r.text.contains("a-key"), "{path}: {}", r.text);
        }
        let writes = [
            (Method::PATCH, format!("/orgs/{b}/apps/{a_app}"), json!({"name": "stolen"})),
            (Method::POST, format!("/orgs/{b}/apps/{a_app}/keys"), json!({})),
            (Method::POST, format!("/orgs/{b}/apps/{a_app}/oauth-clients"), json!({"name": "x"})),
            (Method::PATCH, format!("/orgs/{b}/apps/{b_app}/keys/{a_key}"), json!({"name": "stolen"})),
            (Method::POST, format!("/orgs/{b}/apps/{b_app}/keys/{a_key}/rotate"), json!({"overlap": "1h"})),
            (Method::PATCH, format!("/orgs/{b}/members/{alice}"), json!({"role": "viewer"})),
        ];
        for (method, path, body) in writes {
            api.send(method.clone(), &path, body).await.not_found();
        }
        for path in [
            format!("/orgs/{b}/apps/{b_app}/keys/{a_key}/revoke"),
            format!("/orgs/{b}/apps/{a_app}/keys/{a_key}/revoke"),
            format!("/orgs/{b}/apps/{b_app}/oauth-clients/{a_client}/revoke"),
            format!("/orgs/{b}/apps/{b_app}/oauth-clients/{a_client}/secret"),
        ] {
            api.post(&path).await.not_found();
        }
        api.delete(&format!("/orgs/{b}/apps/{a_app}")).await.not_found();
        api.delete(&format!("/orgs/{b}/members/{alice}")).await.not_found();

        // B's lists hold only B's things.
        assert_eq!(ids(&api.get(&format!("/orgs/{b}/apps")).await.expect(StatusCode::OK)), [b_app.as_str()]);
        assert!(items(&api.get(&format!("/orgs/{b}/members")).await.expect(StatusCode::OK)).is_empty());
        assert!(items(&api.get(&format!("/orgs/{b}/apps/{b_app}/keys")).await.expect(StatusCode::OK)).is_empty());
        assert!(items(&api.get(&format!("/orgs/{b}/apps/{b_app}/oauth-clients")).await.expect(StatusCode::OK)).is_empty());

        // A key or client under another app of its own organization: 404 too.
        api.get(&format!("/orgs/{a}/apps/{a_app2}/keys/{a_key}")).await.not_found();
        api.post(&format!("/orgs/{a}/apps/{a_app2}/keys/{a_key}/revoke")).await.not_found();
        api.send(Method::POST, &format!("/orgs/{a}/apps/{a_app2}/keys/{a_key}/rotate"), json!({"overlap": "1h"})).await.not_found();
        api.get(&format!("/orgs/{a}/apps/{a_app2}/oauth-clients/{a_client}")).await.not_found();
        api.post(&format!("/orgs/{a}/apps/{a_app2}/oauth-clients/{a_client}/revoke")).await.not_found();

        // Nothing changed in A.
        let key = api.get(&format!("/orgs/{a}/apps/{a_app}/keys/{a_key}")).await.expect(StatusCode::OK);
        assert!(key["revoked_at"].is_null() && key["expires_at"].is_null());
        assert_eq!(key["name"], "a-key");
        assert_eq!(items(&api.get(&format!("/orgs/{a}/apps/{a_app}/keys")).await.expect(StatusCode::OK)).len(), 1);
        let client = api.get(&format!("/orgs/{a}/apps/{a_app}/oauth-clients/{a_client}")).await.expect(StatusCode::OK);
        assert!(client["revoked_at"].is_null());
        assert_eq!(api.get(&format!("/orgs/{a}/apps/{a_app}")).await.expect(StatusCode::OK)["name"], "secret-project");
        assert_eq!(api.get(&format!("/orgs/{a}/members/{alice}")).await.expect(StatusCode::OK)["role"], "owner");

        // An organization that does not exist has nothing, not an empty list.
        let ghost = "org_01jd5m3x9q7k2v8r4t6y0w1zab";
        api.get(&format!("/orgs/{ghost}/apps")).await.not_found();
        api.get(&format!("/orgs/{ghost}/members")).await.not_found();
    }

    async fn client_mistakes_are_4xx_problems(store) {
        let api = Api::start(store).await;
        let org = api.org("acme").await;
        let app = api.app(&org, "web").await;
        let (key, _) = api.key(&org, &app, json!({})).await;
        let user = api.user("u@example.com").await;
        let json_ct = Some("application/json");
        let past = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let cases: Vec<(Method, String, Option<&str>, String, StatusCode)> = vec![
            (Method::POST, "/orgs".into(), json_ct, r#"{"name": "Not A Slug"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, "/orgs".into(), json_ct, r#"{"name": "x", "owner": "me"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, "/orgs".into(), json_ct, "{nope".into(), StatusCode::BAD_REQUEST),
            (Method::POST, "/orgs".into(), Some("text/plain"), "{}".into(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (Method::PATCH, format!("/orgs/{org}"), json_ct, r#"{"name": "renamed"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, "/users".into(), json_ct, r#"{"email": "not-an-email"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::GET, "/users/org_01jd5m3x9q7k2v8r4t6y0w1zab".into(), None, String::new(), StatusCode::NOT_FOUND),
            (Method::POST, format!("/orgs/{org}/members"), json_ct, format!(r#"{{"user_id": "{user}", "role": "emperor"}}"#), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/members"), json_ct, r#"{"user_id": "app_01jd5m3x9q7k2v8r4t6y0w1zab", "role": "viewer"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::GET, format!("/orgs/{app}/apps"), None, String::new(), StatusCode::NOT_FOUND),
            (Method::GET, format!("/orgs/{org}/apps/{org}"), None, String::new(), StatusCode::NOT_FOUND),
            (Method::GET, format!("/orgs/{org}/apps/{app}/keys/{app}"), None, String::new(), StatusCode::NOT_FOUND),
            (Method::GET, format!("/orgs/{org}/apps/{app}/keys/key_nope"), None, String::new(), StatusCode::NOT_FOUND),
            (Method::POST, format!("/orgs/{org}/apps"), json_ct, r#"{"name": "x", "colour": "red"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps"), json_ct, r#"{"name": ""}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps"), json_ct, r#"{"name": "m", "metadata": [1]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys"), json_ct, r#"{"environment": "prod"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys"), json_ct, r#"{"scopes": ["has space"]}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys"), json_ct, r#"{"expires_at": "tomorrow"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys"), json_ct, format!(r#"{{"expires_at": "{past}"}}"#), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys"), json_ct, r#"{"key_hash": "00"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::PATCH, format!("/orgs/{org}/apps/{app}/keys/{key}"), json_ct, r#"{"environment": "test"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys/{key}/rotate"), json_ct, r#"{"overlap": "31d"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys/{key}/rotate"), json_ct, r#"{"overlap": "1000h"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/keys/{key}/rotate"), json_ct, r#"{"overlap": -5}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::POST, format!("/orgs/{org}/apps/{app}/oauth-clients"), json_ct, r#"{"scopes": []}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::GET, format!("/orgs/{org}/apps?limit=0"), None, String::new(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::GET, format!("/orgs/{org}/members?limit=5000"), None, String::new(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::PUT, "/jwt-issuers/auth0".into(), json_ct, r#"{"name": "auth0", "issuer": "https://a.example/", "audiences": [], "algorithm": "RS256"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::PUT, "/jwt-issuers/partner".into(), json_ct, r#"{"name": "partner", "issuer": "p", "audiences": ["x"], "algorithm": "HS256"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::PUT, "/jwt-issuers/auth0".into(), json_ct, r#"{"name": "auth0", "issuer": "https://a.example/", "audiences": ["x"], "algorithm": "none"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::PUT, "/jwt-issuers/auth0".into(), json_ct, r#"{"name": "other", "issuer": "https://a.example/", "audiences": ["x"], "algorithm": "RS256"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::PUT, "/jwt-issuers/bad%20name".into(), json_ct, r#"{"name": "bad name", "issuer": "https://a.example/", "audiences": ["x"], "algorithm": "RS256"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
            (Method::GET, "/signing-keys/key_01jd5m3x9q7k2v8r4t6y0w1zab".into(), None, String::new(), StatusCode::NOT_FOUND),
            (Method::GET, "/signing-keys/rotate".into(), None, String::new(), StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, path, ct, body, status) in cases {
            let r = api.call(method.clone(), &path, ct, &body).await;
            assert_eq!(r.status, status, "{method} {path} {body}: {}", r.text);
            assert!(r.status.is_client_error());
            let code = r.code();
            assert!(!code.is_empty());
        }
        // Validation errors name the field.
        let r = api.send(Method::POST, &format!("/orgs/{org}/apps/{app}/keys"), json!({"environment": "prod"})).await;
        assert_eq!(r.json()["errors"][0]["path"], "environment");
        let r = api.send(Method::POST, &format!("/orgs/{org}/apps"), json!({"name": "x", "colour": "red"})).await;
        assert!(r.json()["errors"][0]["reason"].as_str().expect("reason").contains("colour"));
        let r = api.send(Method::PUT, "/jwt-issuers/auth0", json!({"name": "auth0", "issuer": "https://a.example/", "audiences": [], "algorithm": "RS256"})).await;
        assert_eq!(r.json()["errors"][0]["path"], "audiences");
        // No failed write left anything behind.
        assert_eq!(items(&api.get(&format!("/orgs/{org}/apps")).await.expect(StatusCode::OK)).len(), 1);
        assert_eq!(items(&api.get(&format!("/orgs/{org}/apps/{app}/keys")).await.expect(StatusCode::OK)).len(), 1);
        assert!(items(&api.get("/jwt-issuers").await.expect(StatusCode::OK)).is_empty());
    }

    async fn jwt_issuers_round_trip(store) {
        let api = Api::start(store).await;
        let spec = json!({
            "name": "auth0",
            "issuer": "https://example.eu.auth0.com/",
            "audiences": ["https://api.example.com"],
            "algorithm": "RS256",
            "jwks_url": "https://example.eu.auth0.com/.well-known/jwks.json",
        });
        let r = api.send(Method::PUT, "/jwt-issuers/auth0", spec.clone()).await;
        assert_eq!(r.headers["location"], "/jwt-issuers/auth0");
        let created = r.expect(StatusCode::CREATED);
        assert_eq!(created["leeway"], "30s", "defaults are filled in");
        let read = api.get("/jwt-issuers/auth0").await.expect(StatusCode::OK);
        assert_eq!(read, created);
        let mut changed = spec.clone();
        changed["audiences"] = json!(["https://api.example.com", "orders"]);
        let replaced = api.send(Method::PUT, "/jwt-issuers/auth0", changed).await.expect(StatusCode::OK);
        assert_eq!(replaced["audiences"][1], "orders");
        assert_eq!(api.get("/jwt-issuers/auth0").await.expect(StatusCode::OK)["audiences"][1], "orders");
        let partner = json!({"name": "partner", "issuer": "partner-hub", "audiences": ["orders-api"], "algorithm": "HS256", "secret_env": "PARTNER_JWT_SECRET"});
        api.send(Method::PUT, "/jwt-issuers/partner", partner).await.expect(StatusCode::CREATED);
        let list = api.get("/jwt-issuers").await.expect(StatusCode::OK);
        let names: Vec<String> = items(&list).iter().map(|i| s(&i["name"])).collect();
        assert_eq!(names, ["auth0", "partner"]);
        let page = api.get("/jwt-issuers?limit=1&after=auth0").await.expect(StatusCode::OK);
        assert_eq!(items(&page)[0]["name"], "partner");
        assert_eq!(api.delete("/jwt-issuers/auth0").await.status, StatusCode::NO_CONTENT);
        api.get("/jwt-issuers/auth0").await.not_found();
        api.delete("/jwt-issuers/auth0").await.not_found();
        assert_eq!(items(&api.get("/jwt-issuers").await.expect(StatusCode::OK)).len(), 1);
    }

    async fn signing_key_rotation_retires_the_old_key(store) {
        let api = Api::start(store.clone()).await;
        assert!(items(&api.get("/signing-keys").await.expect(StatusCode::OK)).is_empty());
        let first = api.post("/signing-keys/rotate").await.expect(StatusCode::CREATED);
        let first_id = s(&first["key"]["id"]);
        assert!(first_id.starts_with("sgk_"));
        assert_eq!(first["key"]["algorithm"], "ES256");
        assert!(first["retired"].as_array().expect("retired").is_empty());
        let jwk = &first["key"]["public_jwk"];
        assert_eq!(jwk["kid"], first_id.as_str());
        assert!(jwk.get("d").is_none(), "never the private key: {jwk}");

        let second = api.post("/signing-keys/rotate").await.expect(StatusCode::CREATED);
        let second_id = s(&second["key"]["id"]);
        let retired = second["retired"].as_array().expect("retired");
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0]["id"], first_id.as_str());
        near(time(&retired[0]["expires_at"]), Utc::now() + chrono::Duration::seconds(TOKEN_TTL_SECS + 300));
        assert!(!retired[0]["retired_at"].is_null());

        let list = api.get("/signing-keys").await;
        assert!(!list.text.contains("pkcs8") && !list.text.contains("private"), "{}", list.text);
        let list = list.json();
        assert_eq!(ids(&list), [first_id.as_str(), second_id.as_str()]);
        assert!(!items(&list)[0]["retired_at"].is_null());
        assert!(items(&list)[1]["retired_at"].is_null());
        let one = api.get(&format!("/signing-keys/{first_id}")).await.expect(StatusCode::OK);
        assert_eq!(one["id"], first_id.as_str());

        // The retired key stays published (its tokens keep verifying).
        let material = store.signing_key_material().await.expect("material");
        let published: Vec<String> = material.iter().map(|m| m.id.to_string()).collect();
        assert!(published.contains(&first_id) && published.contains(&second_id), "{published:?}");
    }
}

#[tokio::test]
async fn openapi_lists_the_identity_endpoints() {
    let (store, _dir) = tollgate_store::testing::sqlite_store().await;
    let api = Api::start(store).await;
    let doc = api.get("/openapi.json").await.expect(StatusCode::OK);
    for (path, method) in [
        ("/orgs", "post"),
        ("/orgs/{org}/members/{user}", "patch"),
        ("/orgs/{org}/apps/{app}/keys/{key}/rotate", "post"),
        (
            "/orgs/{org}/apps/{app}/oauth-clients/{client}/secret",
            "post",
        ),
        ("/jwt-issuers/{name}", "put"),
        ("/signing-keys/rotate", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let key = &doc["components"]["schemas"]["ApiKey"]["properties"];
    assert!(key.get("key_hash").is_none() && key.get("secret").is_none());
}
