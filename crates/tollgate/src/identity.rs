//! Keeps a node's credentials in step with the store: the key pepper, the
//! key ring, the OAuth server's clients and signing keys, and revoked
//! tokens. The gateway verifies credentials from memory only; this module
//! fills that memory from one snapshot at start and then from the store's
//! change feed, and writes keys' last-used times back in batches.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tollgate_core::ids::{ClientId, KeyId, SubscriptionId};
use tollgate_identity::apikey::{KeyHash, Pepper};
use tollgate_identity::authn::Authenticator;
use tollgate_identity::keyring::KeyEntry;
use tollgate_identity::oauth::{ClientEntry, OAuthServer, SigningMaterial, TokenRevoker};
use tollgate_store::{ChangeEntity, ClientGrant, KeyGrant, SigningKeyMaterial, Store, StoreError};

use crate::cli::StoreArgs;

/// The file in the data directory that holds a generated pepper.
pub const PEPPER_FILE: &str = "key-pepper";
/// Where the store keeps the pepper's fingerprint.
const PEPPER_META: &str = "key_pepper_fingerprint";

/// Resolves the key pepper (setting, else a file in the data directory,
/// created on first use) and checks it against the fingerprint recorded in
/// the store, so that nodes with different peppers refuse to start.
pub async fn pepper(args: &StoreArgs, store: &Store) -> anyhow::Result<Pepper> {
    let text = match &args.key_pepper {
        Some(p) => p.clone(),
        None => pepper_from_file(&args.data_dir.join(PEPPER_FILE))?,
    };
    let pepper = Pepper::new(text.trim().as_bytes())
        .map_err(|e| anyhow::anyhow!("TOLLGATE_KEY_PEPPER: {e}"))?;
    let mine = pepper.fingerprint();
    let stored = store
        .meta_init(PEPPER_META, &mine)
        .await
        .context("cannot read the key pepper fingerprint from the store")?;
    anyhow::ensure!(
        stored == mine,
        "this node's key pepper differs from the one this store's keys were hashed with \
         (fingerprint {mine}, store has {stored}); give every node the same TOLLGATE_KEY_PEPPER"
    );
    Ok(pepper)
}

fn pepper_from_file(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = Pepper::generate_text()
                .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            write_private(path, &text)
                .with_context(|| format!("cannot write the key pepper to {}", path.display()))?;
            tracing::info!(file = %path.display(), "generated a key pepper");
            Ok(text)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn key_entry(g: KeyGrant) -> (KeyHash, KeyEntry) {
    (
        KeyHash(g.key_hash),
        KeyEntry::new(
            g.id,
            g.org_id,
            g.app_id,
            g.environment,
            g.scopes,
            g.expires_at,
        ),
    )
}

fn client_entry(g: ClientGrant) -> ClientEntry {
    ClientEntry {
        id: g.id,
        org: g.org_id,
        app: g.app_id,
        scopes: g.scopes,
        secret_hash: g.secret_hash,
    }
}

fn signing_material(keys: Vec<SigningKeyMaterial>) -> Vec<SigningMaterial> {
    keys.into_iter()
        .map(|k| SigningMaterial {
            id: k.id,
            pkcs8: k.private_key_pkcs8,
            public_jwk: k.public_jwk,
            created_at_ms: k.created_at,
            retired: k.retired_at.is_some(),
        })
        .collect()
}

/// Stores revocations made at the token endpoint.
pub struct StoreRevoker(pub Store);

impl TokenRevoker for StoreRevoker {
    fn revoke(
        &self,
        jti: String,
        client: ClientId,
        expires_at: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.0
                .revoke_token(&jti, &client, expires_at)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Creates the first platform signing key when the store has none that signs.
pub async fn ensure_signing_key(store: &Store) -> anyhow::Result<()> {
    let keys = store.list_signing_keys().await?;
    if keys.iter().any(|k| k.retired_at.is_none()) {
        return Ok(());
    }
    let k = tollgate_identity::oauth::keys::generate_signing_key()?;
    store
        .add_signing_key(
            &k.id,
            tollgate_identity::oauth::keys::SIGNING_ALGORITHM,
            &k.pkcs8,
            &k.public_jwk,
        )
        .await?;
    tracing::info!(kid = %k.id, "created a platform signing key");
    Ok(())
}

/// The node's credential state and how to refresh it.
pub struct IdentitySync {
    pub store: Store,
    pub authn: Arc<Authenticator>,
    pub oauth: Option<Arc<OAuthServer>>,
    /// Subscriptions for the `rate_limit` policy.
    pub catalog: Arc<tollgate_limits::Catalog>,
    /// Upper bound of a platform token's life, for revocations learnt by id.
    pub token_ttl: Duration,
}

impl IdentitySync {
    /// Loads everything; returns the change sequence it reflects.
    pub async fn load(&self) -> Result<i64, StoreError> {
        let snap = self.store.identity_snapshot().await?;
        self.authn
            .keys()
            .replace_all(snap.keys.into_iter().map(key_entry));
        self.authn.set_revoked(snap.revoked_tokens);
        self.catalog
            .replace_subscriptions(snap.subscriptions.into_iter().map(crate::traffic::entry));
        if let Some(oauth) = &self.oauth {
            oauth.set_clients(snap.clients.into_iter().map(client_entry));
            oauth.set_signing_keys(&signing_material(snap.signing_keys));
        }
        Ok(snap.seq)
    }

    /// Applies changes after `seq`; returns the new position.
    pub async fn apply_changes(&self, mut seq: i64) -> Result<i64, StoreError> {
        loop {
            let changes = self.store.identity_changes(seq, 500).await?;
            if changes.is_empty() {
                return Ok(seq);
            }
            let mut signing_keys_changed = false;
            for c in &changes {
                match c.entity {
                    ChangeEntity::Key => self.refresh_key(&c.entity_id).await?,
                    ChangeEntity::Client => self.refresh_client(&c.entity_id).await?,
                    ChangeEntity::SigningKey => signing_keys_changed = true,
                    ChangeEntity::Subscription => self.refresh_subscription(&c.entity_id).await?,
                    ChangeEntity::RevokedToken => {
                        let now = now_ms() / 1000;
                        let bound = now + self.token_ttl.as_secs() as i64 + 60;
                        self.authn.revoke(c.entity_id.clone(), bound, now);
                    }
                }
                seq = c.seq;
            }
            if signing_keys_changed && let Some(oauth) = &self.oauth {
                let keys = self.store.signing_key_material().await?;
                oauth.set_signing_keys(&signing_material(keys));
            }
        }
    }

    async fn refresh_key(&self, id: &str) -> Result<(), StoreError> {
        let Ok(id) = id.parse::<KeyId>() else {
            return Ok(());
        };
        match self.store.key_grant(&id).await? {
            Some(g) => {
                let (hash, entry) = key_entry(g);
                self.authn.keys().upsert(hash, entry);
            }
            None => {
                self.authn.keys().remove(&id);
            }
        }
        Ok(())
    }

    async fn refresh_subscription(&self, id: &str) -> Result<(), StoreError> {
        let Ok(id) = id.parse::<SubscriptionId>() else {
            return Ok(());
        };
        match self.store.subscription_grant(&id).await? {
            Some(g) => self.catalog.upsert_subscription(crate::traffic::entry(g)),
            None => self.catalog.remove_subscription(&id),
        }
        Ok(())
    }

    async fn refresh_client(&self, id: &str) -> Result<(), StoreError> {
        let (Some(oauth), Ok(id)) = (&self.oauth, id.parse::<ClientId>()) else {
            return Ok(());
        };
        match self.store.client_grant(&id).await? {
            Some(g) => oauth.upsert_client(client_entry(g)),
            None => oauth.remove_client(&id),
        }
        Ok(())
    }

    /// Follows the change feed until `shutdown`; reloads everything when the
    /// feed cannot be followed.
    pub async fn run(self, mut seq: i64, every: Duration, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.apply_changes(seq).await {
                Ok(next) => {
                    seq = next;
                    if failing {
                        tracing::info!("identity changes are followed again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read identity changes; serving the credentials in memory");
                        failing = true;
                    }
                }
            }
        }
    }
}

/// Writes keys' last-used times to the store in one batch per interval, and
/// once more at shutdown.
pub async fn flush_last_used(
    store: Store,
    authn: Arc<Authenticator>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut pending: Vec<(KeyId, i64)> = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(every) => false,
        };
        pending.extend(authn.keys().take_last_used());
        if !pending.is_empty() {
            match store.touch_keys(&pending).await {
                Ok(()) => pending.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, keys = pending.len(), "cannot record keys' last use; will retry");
                    // Keep the newest per key only, so the backlog stays bounded.
                    pending.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                    pending.dedup_by(|a, b| a.0 == b.0);
                }
            }
        }
        if stopping {
            return;
        }
    }
}
