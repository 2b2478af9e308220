//! The synced backend: rate limits decided in process, and reconciled with
//! Redis in batches. It trades exactness across the cluster for a request
//! path that never waits on the network.
//!
//! - A decision whose limits are all GCRA rates is made on this node's
//!   counters ([`Local`]), on the server's clock as of the last sync.
//! - Every `every` (`TOLLGATE_REDIS_SYNC_MS`), one script call
//!   (`sync.lua`) adds the requests this node admitted to the shared
//!   counters, and the node takes the cluster's counts back for every key
//!   it decided since the previous sync.
//! - Other limits (sliding windows, monthly quotas, concurrency) stay exact:
//!   a decision that has one of them is made on Redis, as by
//!   [`crate::redis::Redis`].
//!
//! What a cluster may admit beyond a limit: a node decides on the cluster's
//! count as of its last sync of a key, so until its next sync it may admit
//! up to one burst (and at most one interval's traffic) that the others
//! already used. The keys and values are those of the exact backend, so
//! nodes of both kinds can share one Redis.
//!
//! While Redis is away, decisions go on in process (each node then limits
//! on its own), the admitted counts are kept, and the next sync that gets
//! through adds them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use redis::Script;

use crate::algo::Rule;
use crate::local::Local;
use crate::redis::{Redis, RedisError, int};
use crate::{Check, Decision};

const SCRIPT: &str = include_str!("sync.lua");
/// Keys per script call, so one sync never holds the server for long.
const KEYS_PER_CALL: usize = 1000;

/// What a node admitted on one key since its last sync.
#[derive(Debug, Clone, Copy)]
struct Pending {
    interval_us: i64,
    burst: u64,
    admitted: u64,
}

/// Counters in process, reconciled with Redis every [`Synced::every`].
pub struct Synced {
    local: Local,
    redis: Redis,
    script: Script,
    every: Duration,
    pending: Mutex<HashMap<String, Pending>>,
    /// The server's clock minus this node's, as of the last sync.
    offset_us: AtomicI64,
}

impl std::fmt::Debug for Synced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synced")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Synced {
    pub fn new(redis: Redis, every: Duration) -> Synced {
        Synced {
            local: Local::new(),
            redis,
            script: Script::new(SCRIPT),
            every: every.max(Duration::from_millis(1)),
            pending: Mutex::new(HashMap::new()),
            offset_us: AtomicI64::new(0),
        }
    }

    /// How often [`Synced::sync`] should run.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The exact backend, for the decisions this one does not make.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides `checks` at the node's `now_us` in process, when all of
    /// them are GCRA rates; `None` when the decision belongs to Redis.
    pub fn decide_here(&self, checks: &[Check<'_>], now_us: i64) -> Option<Decision> {
        if !checks.iter().all(|c| matches!(c.rule, Rule::Gcra { .. })) {
            return None;
        }
        let d = self
            .local
            .decide(checks, now_us + self.offset_us.load(Ordering::Relaxed));
        let admitted = u64::from(d.allowed);
        let mut pending = self.pending();
        for c in checks {
            let Rule::Gcra { interval_us, burst } = c.rule else {
                continue;
            };
            // A refused key is synced too, so the node learns what the
            // others have used of it.
            match pending.get_mut(&*c.key) {
                Some(p) => {
                    p.admitted += admitted;
                    p.interval_us = interval_us;
                    p.burst = burst;
                }
                None => {
                    pending.insert(
                        c.key.to_string(),
                        Pending {
                            interval_us,
                            burst,
                            admitted,
                        },
                    );
                }
            }
        }
        Some(d)
    }

    /// Adds what this node admitted since the last sync to the shared
    /// counters and takes the cluster's counts back. `node_now_us` is the
    /// node's clock. Returns how many keys were synced; on failure the
    /// admitted counts are kept for the next sync.
    pub async fn sync(&self, node_now_us: impl Fn() -> i64) -> Result<usize, RedisError> {
        let batch: Vec<(String, Pending)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        let mut done = 0;
        for (n, chunk) in batch.chunks(KEYS_PER_CALL).enumerate() {
            match self.sync_chunk(chunk, &node_now_us).await {
                Ok(()) => done += chunk.len(),
                Err(e) => {
                    self.keep(&batch[n * KEYS_PER_CALL..]);
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    async fn sync_chunk(
        &self,
        chunk: &[(String, Pending)],
        node_now_us: &impl Fn() -> i64,
    ) -> Result<(), RedisError> {
        let reply = self
            .redis
            .within_timeout(|mut conn| async move {
                let mut inv = self.script.prepare_invoke();
                for (key, p) in chunk {
                    inv.key(key.as_str())
                        .arg(p.interval_us)
                        .arg(p.burst)
                        .arg(p.admitted);
                }
                inv.invoke_async::<Vec<redis::Value>>(&mut conn)
                    .await
                    .map_err(|e| RedisError(e.to_string()))
            })
            .await?;
        let unexpected = || RedisError("unexpected reply from the sync script".into());
        if reply.len() != chunk.len() + 1 {
            return Err(unexpected());
        }
        let server_now = int(&reply[0]).ok_or_else(unexpected)?;
        self.offset_us
            .store(server_now - node_now_us(), Ordering::Relaxed);
        for ((key, p), tat) in chunk.iter().zip(&reply[1..]) {
            let tat = int(tat).ok_or_else(unexpected)?;
            // Requests admitted here while the script ran are not in the
            // server's count yet; they stay charged until the next sync.
            let newer = self.pending().get(key).map_or(0, |n| n.admitted);
            self.local
                .set_gcra(key, tat + (newer as i64).saturating_mul(p.interval_us));
        }
        Ok(())
    }

    /// Puts counts that could not be synced back, for the next sync.
    fn keep(&self, unsent: &[(String, Pending)]) {
        let mut pending = self.pending();
        for (key, p) in unsent {
            pending
                .entry(key.clone())
                .and_modify(|q| q.admitted += p.admitted)
                .or_insert(*p);
        }
    }
}
