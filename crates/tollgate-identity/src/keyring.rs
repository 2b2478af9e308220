//! The gateway's in-memory key ring.
//!
//! Every node holds a complete replica of the usable keys (their hashes and
//! grants), loaded from the store at start and kept current by the store's
//! change feed. Verification is therefore memory-only: a well-formed key is
//! hashed and looked up, and a key that is not in the ring is unknown with
//! certainty. That makes the ring its own negative cache: a flood of
//! invented keys costs no store query and no memory, whatever its size (see
//! `docs/decisions/0005-identity.md`). Malformed keys and keys with a bad
//! checksum are refused before they are even hashed.
//!
//! Last-used times are recorded in the entry with one atomic store and
//! flushed to the store in batches by [`KeyRing::take_last_used`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tollgate_core::fields::FieldBlock;
use tollgate_core::identity::KeyEnvironment;
use tollgate_core::ids::{AppId, KeyId, OrgId};

use crate::apikey::{self, KeyFormatError, KeyHash, KeyHashBuild, Pepper};

/// What a key grants, as replicated from the store.
#[derive(Debug)]
pub struct KeyEntry {
    pub id: KeyId,
    pub org: OrgId,
    pub app: AppId,
    pub environment: KeyEnvironment,
    pub scopes: Vec<String>,
    /// When the key stops working (unix ms); rotation sets this on the old key.
    pub expires_at_ms: Option<i64>,
    identity: Arc<FieldBlock>,
    last_used_ms: AtomicI64,
    flushed_ms: AtomicI64,
}

impl KeyEntry {
    pub fn new(
        id: KeyId,
        org: OrgId,
        app: AppId,
        environment: KeyEnvironment,
        scopes: Vec<String>,
        expires_at_ms: Option<i64>,
    ) -> KeyEntry {
        let identity = Arc::new(FieldBlock::new(crate::authn::key_headers(
            &id,
            &org,
            &app,
            environment,
            &scopes,
        )));
        KeyEntry {
            identity,
            id,
            org,
            app,
            environment,
            scopes,
            expires_at_ms,
            last_used_ms: AtomicI64::new(0),
            flushed_ms: AtomicI64::new(0),
        }
    }

    /// The `X-Tollgate-*` headers the upstream receives for this key,
    /// encoded once for the wire.
    pub fn identity_block(&self) -> &Arc<FieldBlock> {
        &self.identity
    }

    /// The last use recorded in memory (unix ms), 0 if never.
    pub fn last_used_ms(&self) -> i64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }
}

/// Why a presented key was refused. The messages are safe to show callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error(transparent)]
    Format(#[from] KeyFormatError),
    #[error("the API key is not valid")]
    Unknown,
    #[error("the API key has expired")]
    Expired,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<KeyHash, Arc<KeyEntry>, KeyHashBuild>,
    by_id: HashMap<KeyId, KeyHash>,
}

/// The replica of usable keys. Shared by all worker threads.
pub struct KeyRing {
    pepper: Pepper,
    inner: RwLock<Inner>,
    lookups: AtomicU64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(pepper: Pepper) -> KeyRing {
        KeyRing {
            pepper,
            inner: RwLock::new(Inner::default()),
            lookups: AtomicU64::new(0),
        }
    }

    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.read().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many hash lookups verification has made (format refusals make none).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Replaces every key, keeping in-memory last-used times of keys that stay.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (KeyHash, KeyEntry)>) {
        let mut fresh = Inner::default();
        let mut inner = self.write();
        for (hash, entry) in entries {
            if let Some(old) = inner.by_hash.get(&hash) {
                carry_usage(old, &entry);
            }
            fresh.by_id.insert(entry.id.clone(), hash);
            fresh.by_hash.insert(hash, Arc::new(entry));
        }
        *inner = fresh;
    }

    /// Adds or replaces one key.
    pub fn upsert(&self, hash: KeyHash, entry: KeyEntry) {
        let mut inner = self.write();
        if let Some(old_hash) = inner.by_id.remove(&entry.id)
            && let Some(old) = inner.by_hash.remove(&old_hash)
        {
            carry_usage(&old, &entry);
        }
        inner.by_id.insert(entry.id.clone(), hash);
        inner.by_hash.insert(hash, Arc::new(entry));
    }

    /// Drops a key (revoked, deleted, or its app or organization went away).
    pub fn remove(&self, id: &KeyId) -> bool {
        let mut inner = self.write();
        match inner.by_id.remove(id) {
            Some(hash) => inner.by_hash.remove(&hash).is_some(),
            None => false,
        }
    }

    /// Verifies a presented key at `now_ms` (unix ms) and records its use.
    pub fn verify(&self, presented: &str, now_ms: i64) -> Result<Arc<KeyEntry>, KeyRefusal> {
        let key = apikey::parse(presented)?;
        let hash = self.pepper.hash(key.key);
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let entry = self
            .read()
            .by_hash
            .get(&hash)
            .cloned()
            .ok_or(KeyRefusal::Unknown)?;
        if entry.expires_at_ms.is_some_and(|exp| now_ms >= exp) {
            return Err(KeyRefusal::Expired);
        }
        if entry.last_used_ms.load(Ordering::Relaxed) < now_ms {
            entry.last_used_ms.store(now_ms, Ordering::Relaxed);
        }
        Ok(entry)
    }

    /// Last-used times recorded since the previous call, for one batched
    /// write to the store.
    pub fn take_last_used(&self) -> Vec<(KeyId, i64)> {
        let inner = self.read();
        let mut out = Vec::new();
        for entry in inner.by_hash.values() {
            let used = entry.last_used_ms.load(Ordering::Relaxed);
            if used > entry.flushed_ms.load(Ordering::Relaxed) {
                entry.flushed_ms.store(used, Ordering::Relaxed);
                out.push((entry.id.clone(), used));
            }
        }
        out
    }
}

fn carry_usage(old: &KeyEntry, new: &KeyEntry) {
    new.last_used_ms
        .store(old.last_used_ms.load(Ordering::Relaxed), Ordering::Relaxed);
    new.flushed_ms
        .store(old.flushed_ms.load(Ordering::Relaxed), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::generate;

    fn ring_with(secret: &str, expires: Option<i64>) -> (KeyRing, KeyId) {
        let ring = KeyRing::new(Pepper::new(&[7u8; 32]).expect("pepper"));
        let id = KeyId::new();
        let hash = ring.pepper().hash(secret);
        ring.upsert(
            hash,
            KeyEntry::new(
                id.clone(),
                OrgId::new(),
                AppId::new(),
                KeyEnvironment::Live,
                vec!["orders:read".into()],
                expires,
            ),
        );
        (ring, id)
    }

    #[test]
    fn a_stored_key_verifies_and_records_its_use() {
        let key = generate(KeyEnvironment::Live).expect("rng").secret;
        let (ring, id) = ring_with(&key, None);
        let entry = ring.verify(&key, 1_000).expect("valid");
        assert_eq!(entry.id, id);
        assert_eq!(entry.scopes, ["orders:read"]);
        ring.verify(&key, 2_000).expect("valid");
        assert_eq!(ring.take_last_used(), vec![(id.clone(), 2_000)]);
        assert!(
            ring.take_last_used().is_empty(),
            "nothing new since the flush"
        );
        ring.verify(&key, 3_000).expect("valid");
        assert_eq!(ring.take_last_used(), vec![(id, 3_000)]);
    }

    #[test]
    fn unknown_expired_and_malformed_keys_are_refused() {
        let key = generate(KeyEnvironment::Live).expect("rng").secret;
        let (ring, id) = ring_with(&key, Some(5_000));
        assert!(ring.verify(&key, 4_999).is_ok());
        assert_eq!(ring.verify(&key, 5_000).unwrap_err(), KeyRefusal::Expired);
        let other = generate(KeyEnvironment::Live).expect("rng").secret;
        assert_eq!(ring.verify(&other, 0).unwrap_err(), KeyRefusal::Unknown);
        let before = ring.lookups();
        assert!(matches!(
            ring.verify("tg_live_nope", 0),
            Err(KeyRefusal::Format(_))
        ));
        assert_eq!(ring.lookups(), before, "a malformed key costs no lookup");
        assert!(ring.remove(&id));
        assert_eq!(ring.verify(&key, 0).unwrap_err(), KeyRefusal::Unknown);
        assert!(ring.is_empty());
    }

    #[test]
    fn a_flood_of_invented_keys_leaves_the_ring_unchanged() {
        let key = generate(KeyEnvironment::Live).expect("rng").secret;
        let (ring, _) = ring_with(&key, None);
        for _ in 0..10_000 {
            let invented = generate(KeyEnvironment::Live).expect("rng").secret;
            assert_eq!(ring.verify(&invented, 0).unwrap_err(), KeyRefusal::Unknown);
        }
        assert_eq!(ring.len(), 1, "refusals are not remembered one by one");
    }

    #[test]
    fn replacing_an_entry_keeps_its_usage() {
        let key = generate(KeyEnvironment::Live).expect("rng").secret;
        let (ring, id) = ring_with(&key, None);
        ring.verify(&key, 9_000).expect("valid");
        let hash = ring.pepper().hash(&key);
        ring.replace_all([(
            hash,
            KeyEntry::new(
                id.clone(),
                OrgId::new(),
                AppId::new(),
                KeyEnvironment::Live,
                vec![],
                None,
            ),
        )]);
        assert_eq!(ring.take_last_used(), vec![(id, 9_000)]);
    }
}
