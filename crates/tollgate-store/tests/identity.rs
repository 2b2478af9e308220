//! Identity on both backends: tenant isolation, memberships, apps, keys,
//! clients, rotation, the gateway feed, signing keys, revoked tokens, meta
//! values and JWT issuers in the declarative configuration.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::{Map, json};
use tollgate_core::identity::{KeyEnvironment, Role};
use tollgate_core::ids::{AppId, ClientId, KeyId, OrgId, SigningKeyId, UserId};
use tollgate_store::{
    AppUpdate, ChangeEntity, KeyUpdate, Kind, NewApiKey, Op, Page, Store, StoreError, backend_tests,
};

const SECRET_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$c2VjcmV0aGFzaA";

fn fresh_hash() -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(&ulid::Ulid::new().0.to_be_bytes());
    hash[16..].copy_from_slice(&ulid::Ulid::new().0.to_be_bytes());
    hash
}

fn new_key(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        environment: KeyEnvironment::Live,
        key_hash: fresh_hash(),
        display_prefix: "tg_live_AbCd".into(),
        scopes: vec!["orders:read".into()],
        metadata: Map::new(),
        expires_at: None,
    }
}

fn meta(v: serde_json::Value) -> Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

/// Asserts `NotFound` of this kind for this id.
#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, kind: &str, id: &str) {
    match result {
        Err(StoreError::NotFound { kind: k, id: i }) => {
            assert_eq!((k, i.as_str()), (kind, id));
        }
        other => panic!("expected {kind} `{id}` NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(msg)) => msg,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// An organization with an owner, an app, a key and a client.
struct Fixture {
    org: OrgId,
    owner: UserId,
    app: AppId,
    key: KeyId,
    client: ClientId,
}

async fn fixture(store: &Store, name: &str) -> Fixture {
    let org = store
        .create_org(name, &format!("{name} Inc."))
        .await
        .unwrap()
        .id;
    let owner = store
        .create_user(&format!("owner@{name}.example"), "Owner")
        .await
        .unwrap()
        .id;
    let t = store.tenant(&org);
    t.add_member(&owner, Role::Owner).await.unwrap();
    let app = t.create_app("web", "", Map::new()).await.unwrap().id;
    let key = t.create_key(&app, new_key("main")).await.unwrap().id;
    let client = t
        .create_client(&app, "backend", vec!["orders:read".into()], SECRET_HASH)
        .await
        .unwrap()
        .id;
    Fixture {
        org,
        owner,
        app,
        key,
        client,
    }
}

/// The entity ids of every change after `after`.
async fn changed_after(store: &Store, after: i64) -> Vec<(ChangeEntity, String)> {
    store
        .identity_changes(after, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.entity, c.entity_id))
        .collect()
}

backend_tests! {
    async fn tenant_isolation(store) {
        let a = fixture(&store, "alpha").await;
        let b = fixture(&store, "beta").await;
        let tb = store.tenant(&b.org);
        let seq = store.identity_seq().await.unwrap();

        // Every tenant method of B, given A's ids, answers like for a missing id.
        let (app, key, client, user) = (a.app.as_str(), a.key.as_str(), a.client.as_str(), a.owner.as_str());
        assert_not_found(tb.get_app(&a.app).await, "app", app);
        assert_not_found(tb.update_app(&a.app, AppUpdate { name: Some("x".into()), ..AppUpdate::default() }).await, "app", app);
        assert_not_found(tb.delete_app(&a.app).await, "app", app);
        assert_not_found(tb.list_keys(&a.app, Page::default()).await, "app", app);
        assert_not_found(tb.list_clients(&a.app, Page::default()).await, "app", app);
        assert_not_found(tb.create_key(&a.app, new_key("sneaky")).await, "app", app);
        assert_not_found(tb.create_client(&a.app, "sneaky", vec![], SECRET_HASH).await, "app", app);
        assert_not_found(tb.get_key(&a.key).await, "api_key", key);
        assert_not_found(tb.update_key(&a.key, KeyUpdate { name: Some("x".into()), ..KeyUpdate::default() }).await, "api_key", key);
        assert_not_found(tb.revoke_key(&a.key).await, "api_key", key);
        assert_not_found(tb.rotate_key(&a.key, new_key("r"), Duration::from_secs(60)).await, "api_key", key);
        assert_not_found(tb.get_client(&a.client).await, "oauth_client", client);
        assert_not_found(tb.set_client_secret(&a.client, SECRET_HASH).await, "oauth_client", client);
        assert_not_found(tb.revoke_client(&a.client).await, "oauth_client", client);
        assert_not_found(tb.set_role(&a.owner, Role::Viewer).await, "member", user);
        assert_not_found(tb.remove_member(&a.owner).await, "member", user);
        assert_eq!(tb.role_of(&a.owner).await.unwrap(), None);
        // The same as ids that exist nowhere.
        let missing = KeyId::new();
        assert_not_found(tb.get_key(&missing).await, "api_key", missing.as_str());

        // B's lists hold only B's rows.
        let apps = tb.list_apps(Page::default()).await.unwrap().items;
        assert_eq!(apps.iter().map(|a| &a.id).collect::<Vec<_>>(), [&b.app]);
        let members = tb.list_members().await.unwrap();
        assert_eq!(members.iter().map(|m| &m.user.id).collect::<Vec<_>>(), [&b.owner]);
        let keys = tb.list_keys(&b.app, Page::default()).await.unwrap().items;
        assert_eq!(keys.iter().map(|k| &k.id).collect::<Vec<_>>(), [&b.key]);
        let clients = tb.list_clients(&b.app, Page::default()).await.unwrap().items;
        assert_eq!(clients.iter().map(|c| &c.id).collect::<Vec<_>>(), [&b.client]);

        // A is untouched and nothing reached the feed.
        let ta = store.tenant(&a.org);
        let ka = ta.get_key(&a.key).await.unwrap();
        assert_eq!((ka.name.as_str(), ka.revoked_at, ka.expires_at), ("main", None, None));
        assert_eq!(ta.get_app(&a.app).await.unwrap().name, "web");
        assert!(ta.get_client(&a.client).await.unwrap().revoked_at.is_none());
        assert_eq!(ta.role_of(&a.owner).await.unwrap(), Some(Role::Owner));
        assert_eq!(ta.list_keys(&a.app, Page::default()).await.unwrap().items.len(), 1);
        assert_eq!(store.identity_seq().await.unwrap(), seq);
        assert!(store.key_grant(&a.key).await.unwrap().is_some());
    }

    async fn members_and_last_owner(store) {
        let org = store.create_org("acme", "Acme").await.unwrap().id;
        let t = store.tenant(&org);
        let u1 = store.create_user("one@acme.example", "One").await.unwrap().id;
        let u2 = store.create_user("two@acme.example", "Two").await.unwrap().id;
        let m = t.add_member(&u1, Role::Owner).await.unwrap();
        assert_eq!((m.user.id.clone(), m.role), (u1.clone(), Role::Owner));
        t.add_member(&u2, Role::Admin).await.unwrap();
        assert_conflict(t.add_member(&u2, Role::Viewer).await);
        let ghost = UserId::new();
        assert_not_found(t.add_member(&ghost, Role::Viewer).await, "user", ghost.as_str());
        let no_org = OrgId::new();
        assert_not_found(store.tenant(&no_org).add_member(&u1, Role::Owner).await, "organization", no_org.as_str());

        let msg = assert_conflict(t.remove_member(&u1).await);
        assert!(msg.contains("owner"), "{msg}");
        assert_conflict(t.set_role(&u1, Role::Admin).await);
        assert_eq!(t.role_of(&u1).await.unwrap(), Some(Role::Owner), "refused changes change nothing");

        // With a second owner the first may step down; then the second is the last.
        t.set_role(&u2, Role::Owner).await.unwrap();
        assert_eq!(t.set_role(&u1, Role::Developer).await.unwrap().role, Role::Developer);
        assert_conflict(t.remove_member(&u2).await);
        assert_conflict(t.set_role(&u2, Role::Viewer).await);
        assert_eq!(t.set_role(&u2, Role::Owner).await.unwrap().role, Role::Owner, "same role is a no-op");
        t.remove_member(&u1).await.unwrap();
        assert_eq!(t.role_of(&u1).await.unwrap(), None);
        assert_not_found(t.remove_member(&u1).await, "member", u1.as_str());
        let members = t.list_members().await.unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].user.email, "two@acme.example");
        assert_eq!(store.user_orgs(&u2).await.unwrap()[0].1, Role::Owner);
    }

    async fn orgs_and_users(store) {
        assert_eq!(invalid_paths(store.create_org("Bad_Slug", "").await), ["name", "display_name"]);
        assert_eq!(invalid_paths(store.create_org("-x", "X").await), ["name"]);
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(store.create_org(&format!("org-{i}"), "Org").await.unwrap().id.to_string());
        }
        assert_conflict(store.create_org("org-1", "Again").await);
        let (sizes, listed) = walk(2, |o: &tollgate_store::Organization| o.id.to_string(), |p| store.list_orgs(p)).await;
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(listed, ids);
        let org = store.get_org_by_name("org-2").await.unwrap();
        let updated = store.update_org(&org.id, "Renamed").await.unwrap();
        assert_eq!((updated.name.as_str(), updated.display_name.as_str()), ("org-2", "Renamed"));
        assert_eq!(store.get_org(&org.id).await.unwrap(), updated);
        store.delete_org(&org.id).await.unwrap();
        assert_not_found(store.get_org(&org.id).await, "organization", org.id.as_str());
        assert_not_found(store.delete_org(&org.id).await, "organization", org.id.as_str());
        assert_not_found(store.get_org_by_name("org-2").await, "organization", "org-2");

        let user = store.create_user("  Ada@Example.COM ", "Ada").await.unwrap();
        assert_eq!(user.email, "ada@example.com");
        assert_conflict(store.create_user("ADA@example.com", "Other").await);
        for bad in ["", "ada", "ada@", "@example.com", "a b@example.com", "ada@example", "a@b@example.com"] {
            assert_eq!(invalid_paths(store.create_user(bad, "x").await), ["email"], "{bad}");
        }
        let found = store.find_user_by_email("ADA@example.com").await.unwrap().unwrap();
        assert_eq!(found, user);
        assert_eq!(store.find_user_by_email("nobody@example.com").await.unwrap(), None);
        assert_eq!(store.get_user(&user.id).await.unwrap(), user);
        assert_eq!(store.list_users(Page::default()).await.unwrap().items, vec![user]);
        assert_eq!(store.revision().await.unwrap(), 0, "identity is not configuration");
    }

    async fn apps_and_keys_crud(store) {
        let f = fixture(&store, "acme").await;
        let other = fixture(&store, "other").await;
        let t = store.tenant(&f.org);
        assert_conflict(t.create_app("web", "again", Map::new()).await);
        let app = t.create_app("mobile", "The app\nfor phones", meta(json!({"team": "m"}))).await.unwrap();
        assert_eq!(app.metadata["team"], "m");
        let updated = t
            .update_app(&app.id, AppUpdate { description: Some("Phones".into()), ..AppUpdate::default() })
            .await
            .unwrap();
        assert_eq!((updated.name.as_str(), updated.description.as_str()), ("mobile", "Phones"));
        assert_eq!(updated.metadata, app.metadata);
        assert_conflict(t.update_app(&app.id, AppUpdate { name: Some("web".into()), ..AppUpdate::default() }).await);
        let same_name = store.tenant(&other.org).create_app("mobile", "", Map::new()).await;
        assert!(same_name.is_ok(), "app names are unique per organization only");
        assert_eq!(invalid_paths(t.create_app("", "", Map::new()).await), ["name"]);

        let mut ids = vec![f.key.to_string()];
        for i in 0..4 {
            ids.push(t.create_key(&f.app, new_key(&format!("k{i}"))).await.unwrap().id.to_string());
        }
        let (sizes, listed) = walk(2, |k: &tollgate_store::ApiKey| k.id.to_string(), |p| t.list_keys(&f.app, p)).await;
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(listed, ids);

        let mut bad = new_key("bad");
        bad.scopes = vec!["ok".into(), "has space".into(), "ok".into()];
        bad.display_prefix = String::new();
        bad.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert_eq!(
            invalid_paths(t.create_key(&f.app, bad).await),
            ["display_prefix", "scopes[1]", "scopes[2]", "expires_at"]
        );
        let dup = new_key("dup");
        let hash = dup.key_hash;
        t.create_key(&f.app, dup.clone()).await.unwrap();
        let msg = assert_conflict(t.create_key(&f.app, dup).await);
        assert!(!msg.contains(&hex_of(&hash)), "the hash never shows in errors");

        let later = Utc::now() + chrono::Duration::days(30);
        let key = t
            .update_key(&f.key, KeyUpdate {
                scopes: Some(vec!["a".into(), "b".into()]),
                expires_at: Some(Some(later)),
                ..KeyUpdate::default()
            })
            .await
            .unwrap();
        assert_eq!((key.name.as_str(), key.scopes.clone()), ("main", vec!["a".to_owned(), "b".into()]));
        assert_eq!(key.expires_at.unwrap().timestamp_millis(), later.timestamp_millis());
        let key = t
            .update_key(&f.key, KeyUpdate { expires_at: Some(None), ..KeyUpdate::default() })
            .await
            .unwrap();
        assert_eq!(key.expires_at, None);
        assert_eq!(store.key_grant(&f.key).await.unwrap().unwrap().scopes, ["a", "b"]);

        // Deleting an app takes its keys and clients.
        t.delete_app(&f.app).await.unwrap();
        assert_not_found(t.get_key(&f.key).await, "api_key", f.key.as_str());
        assert_not_found(t.get_client(&f.client).await, "oauth_client", f.client.as_str());
        assert_eq!(t.list_apps(Page::default()).await.unwrap().items.len(), 1);
    }

    async fn rotate_key_overlaps_and_links(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let before = Utc::now().timestamp_millis();
        let mut next = new_key("next");
        next.scopes = vec!["orders:write".into()];
        let (new, old) = t.rotate_key(&f.key, next, Duration::from_secs(3600)).await.unwrap();
        let after = Utc::now().timestamp_millis();
        assert_eq!(new.rotated_from.as_ref(), Some(&f.key));
        assert_eq!((&new.app_id, new.environment), (&f.app, KeyEnvironment::Live));
        assert_eq!(new.scopes, ["orders:write"]);
        assert_eq!(old.id, f.key);
        let exp = old.expires_at.unwrap().timestamp_millis();
        assert!((before + 3_600_000..=after + 3_600_000).contains(&exp), "{exp}");
        assert_eq!(t.get_key(&f.key).await.unwrap(), old);
        // Both work during the overlap.
        assert_eq!(store.key_grant(&f.key).await.unwrap().unwrap().expires_at, Some(exp));
        assert!(store.key_grant(&new.id).await.unwrap().is_some());

        // A longer overlap never extends an earlier expiry.
        let (_, old2) = t.rotate_key(&f.key, new_key("n2"), Duration::from_secs(86_400)).await.unwrap();
        assert_eq!(old2.expires_at.unwrap().timestamp_millis(), exp);

        // The environment stays.
        let mut test_env = new_key("t");
        test_env.environment = KeyEnvironment::Test;
        assert_eq!(invalid_paths(t.rotate_key(&new.id, test_env, Duration::ZERO).await), ["environment"]);

        // No overlap: the old key stops at once, and cannot be rotated again.
        let (_, gone) = t.rotate_key(&new.id, new_key("n3"), Duration::ZERO).await.unwrap();
        assert!(gone.expires_at.unwrap().timestamp_millis() <= Utc::now().timestamp_millis());
        assert_eq!(store.key_grant(&new.id).await.unwrap(), None);
        let count = t.list_keys(&f.app, Page::default()).await.unwrap().items.len();
        let seq = store.identity_seq().await.unwrap();
        assert!(assert_conflict(t.rotate_key(&new.id, new_key("x"), Duration::ZERO).await).contains("expired"));

        // A revoked key cannot be rotated; nothing is written.
        t.revoke_key(&f.key).await.unwrap();
        let seq_revoked = store.identity_seq().await.unwrap();
        assert_eq!(seq_revoked, seq + 1);
        let msg = assert_conflict(t.rotate_key(&f.key, new_key("x"), Duration::from_secs(60)).await);
        assert!(msg.contains("revoked"), "{msg}");
        assert_eq!(t.list_keys(&f.app, Page::default()).await.unwrap().items.len(), count);
        assert_eq!(store.identity_seq().await.unwrap(), seq_revoked);
        assert_eq!(t.get_key(&f.key).await.unwrap().expires_at, old.expires_at);
    }

    async fn revoke_emits_changes_and_drops_grants(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let grant = store.key_grant(&f.key).await.unwrap().unwrap();
        assert_eq!((&grant.org_id, &grant.app_id, grant.scopes.clone()), (&f.org, &f.app, vec!["orders:read".to_owned()]));
        assert!(!format!("{grant:?}").contains(&hex_of(&grant.key_hash)), "Debug redacts the hash");
        let seq = store.identity_seq().await.unwrap();

        let revoked = t.revoke_key(&f.key).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(store.key_grant(&f.key).await.unwrap(), None);
        assert_eq!(changed_after(&store, seq).await, [(ChangeEntity::Key, f.key.to_string())]);
        let again = t.revoke_key(&f.key).await.unwrap();
        assert_eq!(again.revoked_at, revoked.revoked_at, "idempotent");
        assert_eq!(store.identity_seq().await.unwrap(), seq + 1, "a repeat records nothing");

        let cg = store.client_grant(&f.client).await.unwrap().unwrap();
        assert_eq!(cg.secret_hash, SECRET_HASH);
        assert!(!format!("{cg:?}").contains(SECRET_HASH));
        let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
        t.set_client_secret(&f.client, new_hash).await.unwrap();
        assert_eq!(store.client_grant(&f.client).await.unwrap().unwrap().secret_hash, new_hash);
        let err = t.set_client_secret(&f.client, "plain-secret").await.unwrap_err();
        assert!(!err.to_string().contains("plain-secret") && !format!("{err:?}").contains("plain-secret"));
        t.revoke_client(&f.client).await.unwrap();
        assert_eq!(store.client_grant(&f.client).await.unwrap(), None);
        assert_conflict(t.set_client_secret(&f.client, new_hash).await);
        assert_eq!(
            changed_after(&store, seq + 1).await,
            [(ChangeEntity::Client, f.client.to_string()), (ChangeEntity::Client, f.client.to_string())]
        );
    }

    async fn snapshot_holds_only_usable_credentials(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let revoked = t.create_key(&f.app, new_key("revoked")).await.unwrap().id;
        t.revoke_key(&revoked).await.unwrap();
        let expiring = t.create_key(&f.app, new_key("expiring")).await.unwrap().id;
        let (rotated, _) = t.rotate_key(&expiring, new_key("rotated"), Duration::ZERO).await.unwrap();
        let mut later = new_key("later");
        later.expires_at = Some(Utc::now() + chrono::Duration::hours(1));
        let later = t.create_key(&f.app, later).await.unwrap();
        let gone_client = t.create_client(&f.app, "gone", vec![], SECRET_HASH).await.unwrap().id;
        t.revoke_client(&gone_client).await.unwrap();

        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": "abc"});
        let active = SigningKeyId::new();
        store.add_signing_key(&active, "EdDSA", b"pkcs8-active", &jwk).await.unwrap();
        let retiring = SigningKeyId::new();
        store.add_signing_key(&retiring, "EdDSA", b"pkcs8-retiring", &jwk).await.unwrap();
        store.retire_signing_key(&retiring, Utc::now() + chrono::Duration::hours(1)).await.unwrap();
        let expired = SigningKeyId::new();
        store.add_signing_key(&expired, "EdDSA", b"pkcs8-expired", &jwk).await.unwrap();
        store.retire_signing_key(&expired, Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
        let now_s = Utc::now().timestamp();
        store.revoke_token("jti-live", &f.client, now_s + 600).await.unwrap();
        store.revoke_token("jti-old", &f.client, now_s - 600).await.unwrap();

        let snap = store.identity_snapshot().await.unwrap();
        assert_eq!(snap.seq, store.identity_seq().await.unwrap());
        let mut keys: Vec<_> = snap.keys.iter().map(|k| k.id.clone()).collect();
        keys.sort();
        assert_eq!(keys, [f.key.clone(), rotated.id, later.id.clone()]);
        let later_grant = snap.keys.iter().find(|k| k.id == later.id).unwrap();
        assert_eq!(later_grant.expires_at, later.expires_at.map(|t| t.timestamp_millis()));
        assert_eq!(snap.clients.iter().map(|c| &c.id).collect::<Vec<_>>(), [&f.client]);
        let signing: Vec<_> = snap.signing_keys.iter().map(|k| (&k.id, k.private_key_pkcs8.as_slice())).collect();
        assert_eq!(signing, [(&active, &b"pkcs8-active"[..]), (&retiring, &b"pkcs8-retiring"[..])]);
        assert!(snap.signing_keys[1].retired_at.is_some() && snap.signing_keys[0].retired_at.is_none());
        assert_eq!(snap.signing_keys[0].public_jwk, jwk);
        assert_eq!(snap.revoked_tokens, [("jti-live".to_owned(), now_s + 600)]);
        let private = format!("{:?}", b"pkcs8-active".to_vec());
        assert!(!format!("{snap:?}").contains(&private), "Debug redacts private keys");

        // The admin view lists every signing key, without private keys.
        let listed = store.list_signing_keys().await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(store.signing_key_material().await.unwrap().len(), 2);
        assert_conflict(store.add_signing_key(&active, "EdDSA", b"x", &jwk).await);
        let ghost = SigningKeyId::new();
        assert_not_found(store.retire_signing_key(&ghost, Utc::now()).await, "signing_key", ghost.as_str());
    }

    async fn changes_are_ordered_and_paged(store) {
        assert_eq!(store.identity_seq().await.unwrap(), 0);
        let f = fixture(&store, "acme").await; // key + client: two changes
        let t = store.tenant(&f.org);
        t.update_key(&f.key, KeyUpdate { name: Some("renamed".into()), ..KeyUpdate::default() }).await.unwrap();
        store.add_signing_key(&SigningKeyId::new(), "ES256", b"k", &json!({"kty": "EC"})).await.unwrap();
        store.revoke_token("jti-1", &f.client, Utc::now().timestamp() + 60).await.unwrap();
        store.revoke_token("jti-1", &f.client, Utc::now().timestamp() + 60).await.unwrap();
        assert!(store.is_token_revoked("jti-1").await.unwrap());
        assert!(!store.is_token_revoked("jti-2").await.unwrap());

        let all = store.identity_changes(0, 100).await.unwrap();
        let seqs: Vec<i64> = all.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        let entities: Vec<_> = all.iter().map(|c| c.entity).collect();
        assert_eq!(
            entities,
            [ChangeEntity::Key, ChangeEntity::Client, ChangeEntity::Key, ChangeEntity::SigningKey, ChangeEntity::RevokedToken]
        );
        assert_eq!(all[4].entity_id, "jti-1");
        let newer = store.identity_changes(3, 100).await.unwrap();
        assert_eq!(newer, all[3..].to_vec());
        assert_eq!(store.identity_changes(1, 2).await.unwrap(), all[1..3].to_vec());
        assert!(store.identity_changes(5, 100).await.unwrap().is_empty());
        assert_eq!(serde_json::to_value(&all[4]).unwrap()["entity"], "token");

        // Concurrent writers still produce a gap-free sequence.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            let (org, app) = (f.org.clone(), f.app.clone());
            tasks.push(tokio::spawn(async move {
                store.tenant(&org).create_key(&app, new_key(&format!("c{i}"))).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let seqs: Vec<i64> = store.identity_changes(0, 100).await.unwrap().iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
    }

    async fn deleting_apps_and_orgs_emits_changes(store) {
        let f = fixture(&store, "acme").await;
        let keep = fixture(&store, "keep").await;
        let t = store.tenant(&f.org);
        let k2 = t.create_key(&f.app, new_key("second")).await.unwrap().id;
        let app2 = t.create_app("other", "", Map::new()).await.unwrap().id;
        let k3 = t.create_key(&app2, new_key("third")).await.unwrap().id;
        let c3 = t.create_client(&app2, "c3", vec![], SECRET_HASH).await.unwrap().id;

        let seq = store.identity_seq().await.unwrap();
        t.delete_app(&f.app).await.unwrap();
        let mut changed = changed_after(&store, seq).await;
        changed.sort();
        let mut expected = vec![
            (ChangeEntity::Key, f.key.to_string()),
            (ChangeEntity::Key, k2.to_string()),
            (ChangeEntity::Client, f.client.to_string()),
        ];
        expected.sort();
        assert_eq!(changed, expected);
        for k in [&f.key, &k2] {
            assert_eq!(store.key_grant(k).await.unwrap(), None);
        }
        assert_eq!(store.client_grant(&f.client).await.unwrap(), None);
        assert!(store.key_grant(&k3).await.unwrap().is_some());

        let seq = store.identity_seq().await.unwrap();
        store.delete_org(&f.org).await.unwrap();
        let mut changed = changed_after(&store, seq).await;
        changed.sort();
        let mut expected = vec![(ChangeEntity::Key, k3.to_string()), (ChangeEntity::Client, c3.to_string())];
        expected.sort();
        assert_eq!(changed, expected);
        assert_eq!(store.key_grant(&k3).await.unwrap(), None);
        assert_eq!(store.client_grant(&c3).await.unwrap(), None);
        assert!(t.list_apps(Page::default()).await.unwrap().items.is_empty());
        assert!(t.list_members().await.unwrap().is_empty());
        // Users outlive their organizations; other organizations are untouched.
        assert!(store.get_user(&f.owner).await.is_ok());
        let snap = store.identity_snapshot().await.unwrap();
        assert_eq!(snap.keys.iter().map(|k| &k.id).collect::<Vec<_>>(), [&keep.key]);
        assert_eq!(snap.clients.iter().map(|c| &c.id).collect::<Vec<_>>(), [&keep.client]);
    }

    async fn touch_keys_only_moves_forward(store) {
        let f = fixture(&store, "acme").await;
        let t = store.tenant(&f.org);
        let k2 = t.create_key(&f.app, new_key("two")).await.unwrap().id;
        let seq = store.identity_seq().await.unwrap();
        store.touch_keys(&[]).await.unwrap();
        store.touch_keys(&[(f.key.clone(), 1_000_000), (k2.clone(), 2_000_000), (KeyId::new(), 5)]).await.unwrap();
        store
            .touch_keys(&[(k2.clone(), 2_500_000), (f.key.clone(), 500_000), (k2.clone(), 3_000_000)])
            .await
            .unwrap();
        let used = |k: tollgate_store::ApiKey| k.last_used_at.map(|t| t.timestamp_millis());
        assert_eq!(used(t.get_key(&f.key).await.unwrap()), Some(1_000_000), "never backwards");
        assert_eq!(used(t.get_key(&k2).await.unwrap()), Some(3_000_000));
        assert_eq!(store.identity_seq().await.unwrap(), seq, "last use records no change");
    }

    async fn meta_init_keeps_the_first_value(store) {
        assert_eq!(store.meta_get("pepper_id").await.unwrap(), None);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.meta_init("pepper_id", &format!("v{i}")).await }));
        }
        let mut values = Vec::new();
        for task in tasks {
            values.push(task.await.unwrap().unwrap());
        }
        let stored = store.meta_get("pepper_id").await.unwrap().unwrap();
        assert!(values.iter().all(|v| *v == stored), "{values:?}");
        assert_eq!(store.meta_init("pepper_id", "later").await.unwrap(), stored);
        assert_eq!(invalid_paths(store.meta_init("", "x").await), ["key"]);
    }

    async fn jwt_issuers_export_apply_diff(store) {
        let v1 = config(ISSUERS_V1);
        let changes = store.apply(&v1).await.unwrap();
        assert_eq!(changes.changes.len(), 2 + 1, "{changes}");
        let lines: Vec<String> = changes.changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(lines, ["+ policy global/auth", "+ jwt_issuer auth0", "+ jwt_issuer corp"]);
        assert_eq!(changes.changes[1].kind, Kind::JwtIssuer);
        assert_eq!(store.revision().await.unwrap(), 1);
        let (_, exported) = store.export().await.unwrap();
        let names: Vec<_> = exported.jwt_issuers.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["auth0", "corp"], "sorted by name");
        assert_eq!(exported.jwt_issuers, vec![v1.jwt_issuers[1].clone(), v1.jwt_issuers[0].clone()]);
        assert!(store.apply(&config(&exported.to_yaml())).await.unwrap().is_empty());
        assert_eq!(store.list_jwt_issuers().await.unwrap(), exported.jwt_issuers);

        // Change one, drop the other.
        let v2 = config(&ISSUERS_V1.replace("audiences: [corp-api]", "audiences: [corp-api, v2]").replace(AUTH0, ""));
        let diff = store.diff(&v2).await.unwrap();
        assert_eq!(diff.to_string(), "- jwt_issuer auth0\n~ jwt_issuer corp");
        assert_eq!(store.apply(&v2).await.unwrap(), diff);
        assert_eq!(store.list_jwt_issuers().await.unwrap()[0].audiences, ["corp-api", "v2"]);

        // CRUD: upsert by name, delete by name; each write bumps the revision.
        let rev = store.revision().await.unwrap();
        let mut spec = v1.jwt_issuers[1].clone();
        assert!(store.put_jwt_issuer(spec.clone()).await.unwrap(), "created");
        spec.audiences = vec!["other".into()];
        assert!(!store.put_jwt_issuer(spec.clone()).await.unwrap(), "replaced");
        assert_eq!(store.revision().await.unwrap(), rev + 2);
        assert_eq!(store.list_jwt_issuers().await.unwrap().len(), 2);
        spec.audiences.clear();
        assert_eq!(invalid_paths(store.put_jwt_issuer(spec).await), ["audiences"]);
        store.delete_jwt_issuer("auth0").await.unwrap();
        assert_not_found(store.delete_jwt_issuer("auth0").await, "jwt_issuer", "auth0");
        // `corp` is named by the global auth policy.
        assert!(assert_conflict(store.delete_jwt_issuer("corp").await).contains("auth"));
        assert_eq!(store.diff(&v2).await.unwrap().changes, vec![]);
        let wipe = store.apply(&config("{}")).await.unwrap();
        assert!(wipe.changes.iter().any(|c| c.kind == Kind::JwtIssuer && c.op == Op::Delete));
        assert!(store.list_jwt_issuers().await.unwrap().is_empty());
    }
}

const AUTH0: &str = r#"
  - name: auth0
    issuer: https://tenant.auth0.example/
    audiences: [api]
    algorithm: RS256
"#;

const ISSUERS_V1: &str = r#"
policies:
  - name: auth
    config: {accept: [jwt], issuers: [corp]}
jwt_issuers:
  - name: corp
    issuer: https://login.corp.example
    audiences: [corp-api]
    algorithm: ES256
    jwks_url: https://login.corp.example/jwks.json
  - name: auth0
    issuer: https://tenant.auth0.example/
    audiences: [api]
    algorithm: RS256
"#;

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
