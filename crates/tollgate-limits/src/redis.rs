//! The Redis backend: one `EVALSHA` of `decide.lua` per decision, so every
//! decision is one round trip and atomic, and it runs on the server's clock,
//! so nodes whose clocks disagree still count as one.
//!
//! Keys are `tg:{<subject>}:<limit>`: the braces are a Redis Cluster hash
//! tag, so every counter of one subject lives in one slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, Value};

use crate::algo::{Rule, Status};
use crate::calendar;
use crate::{Check, Decision, Permit};

const SCRIPT: &str = include_str!("decide.lua");

/// How long a concurrency slot is held when its node never gives it back
/// (the node died mid-request).
pub const CONCURRENCY_LEASE: Duration = Duration::from_secs(300);

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db` (or `rediss://`).
    pub url: String,
    /// How long one decision may wait for Redis before it counts as failed.
    pub timeout: Duration,
}

/// Why Redis could not decide.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RedisError(pub String);

/// Counters in Redis.
pub struct Redis {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    /// Held while connecting, so the first decisions of a node share one
    /// attempt instead of failing while another one connects.
    connecting: tokio::sync::Mutex<()>,
    /// Failed connection attempts so far: a decision that waited on an
    /// attempt that failed fails too, instead of trying again at once.
    connect_failures: AtomicU64,
    script: Script,
    timeout: Duration,
    /// Source of unique concurrency-slot names.
    node: String,
    seq: AtomicU64,
    /// Tests only: decide at the given time instead of the server's clock.
    fixed_clock: bool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

impl Redis {
    /// Checks the URL; connects on first use, so a node starts while Redis is down.
    pub fn new(opts: &RedisOptions) -> Result<Redis, RedisError> {
        let client = redis::Client::open(opts.url.as_str())
            .map_err(|e| RedisError(format!("TOLLGATE_REDIS_URL: {e}")))?;
        Ok(Redis {
            client,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            connect_failures: AtomicU64::new(0),
            script: Script::new(SCRIPT),
            timeout: opts.timeout,
            node: format!("{:016x}", rand_u64()),
            seq: AtomicU64::new(0),
            fixed_clock: false,
        })
    }

    /// Decides at the time given to [`Redis::decide`] instead of the
    /// server's clock. For tests of month boundaries only.
    pub fn with_fixed_clock(mut self) -> Redis {
        self.fixed_clock = true;
        self
    }

    /// The connection, made on first use. Not bounded in time by itself:
    /// callers run it under their timeout, and giving up (dropping the
    /// future) leaves nothing behind but a later attempt.
    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let failures = self.connect_failures.load(Ordering::Acquire);
        let _one_attempt = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        if self.connect_failures.load(Ordering::Acquire) != failures {
            return Err(RedisError("cannot connect to Redis".into()));
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        match ConnectionManager::new_with_config(self.client.clone(), cfg).await {
            Ok(c) => {
                self.conn.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Err(e) => {
                self.connect_failures.fetch_add(1, Ordering::AcqRel);
                Err(RedisError(e.to_string()))
            }
        }
    }

    /// Runs `op` with the connection, both within the timeout.
    pub(crate) async fn within_timeout<T, F>(
        &self,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, RedisError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let run = async {
            let conn = self.connection().await?;
            op(conn).await
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(RedisError(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Runs one decision. `now_us` is the node's clock: it only picks which
    /// months' counters the script may touch (the server's clock picks
    /// among them), unless the fixed clock is on. When none of them holds
    /// the server's time (the node's clock is months off), the script
    /// writes nothing and the decision is made again with the months
    /// around the server's time.
    pub async fn decide(&self, checks: &[Check<'_>], now_us: i64) -> Result<Decision, RedisError> {
        let member = format!("{}-{}", self.node, self.seq.fetch_add(1, Ordering::Relaxed));
        let slot = member.as_str();
        let (reply, held, conn) = self
            .within_timeout(|mut conn| async move {
                let (inv, held) = self.invocation(checks, now_us, slot);
                let reply = invoke(&inv, &mut conn).await?;
                if reply.first().and_then(int) != Some(MONTHS_OFF) {
                    return Ok((reply, held, conn));
                }
                // This node's clock is months off the server's: ask again
                // with the months around the server's time.
                let server_now = reply.get(1).and_then(int).ok_or_else(unexpected)?;
                let (inv, held) = self.invocation(checks, server_now, slot);
                let reply = invoke(&inv, &mut conn).await?;
                if reply.first().and_then(int) == Some(MONTHS_OFF) {
                    return Err(unexpected());
                }
                Ok((reply, held, conn))
            })
            .await?;
        let mut it = reply.iter().map(int);
        let allowed = it.next().flatten() == Some(1);
        let _server_now = it.next();
        let mut statuses = Vec::with_capacity(checks.len());
        for _ in checks {
            let mut f = || it.next().flatten().unwrap_or(0);
            let (ok, remaining, reset_us, retry_after_us, _start) = (f(), f(), f(), f(), f());
            statuses.push(Status {
                allowed: ok == 1,
                remaining: remaining.max(0) as u64,
                reset_us,
                retry_after_us,
            });
        }
        if statuses.len() != checks.len() {
            return Err(unexpected());
        }
        let permit = (allowed && !held.is_empty()).then(|| Permit::redis(conn, held, member));
        Ok(Decision {
            allowed,
            statuses,
            permit,
        })
    }

    /// The script's keys and arguments for `checks`, and the keys of the
    /// concurrency slots it would take.
    fn invocation(
        &self,
        checks: &[Check<'_>],
        now_us: i64,
        member: &str,
    ) -> (ScriptInvocation<'_>, Vec<String>) {
        let mut inv = self.script.prepare_invoke();
        inv.arg(if self.fixed_clock {
            now_us.to_string()
        } else {
            String::new()
        });
        inv.arg(member);
        let mut held = Vec::new();
        for c in checks {
            match c.rule {
                Rule::Gcra { interval_us, burst } => {
                    inv.key(&*c.key);
                    inv.arg("g")
                        .arg(interval_us)
                        .arg(burst)
                        .arg(0)
                        .arg(0)
                        .arg(0);
                }
                Rule::Window { window_us, limit } => {
                    inv.key(&*c.key);
                    inv.arg("w").arg(window_us).arg(limit).arg(0).arg(0).arg(0);
                }
                Rule::Month { limit, tz } => {
                    let b = calendar::month_bounds(now_us, tz);
                    for start in &b[..3] {
                        inv.key(month_key(&c.key, *start));
                    }
                    inv.arg("m")
                        .arg(limit)
                        .arg(b[0])
                        .arg(b[1])
                        .arg(b[2])
                        .arg(b[3]);
                }
                Rule::Concurrency { max } => {
                    inv.key(&*c.key);
                    held.push(c.key.to_string());
                    inv.arg("c")
                        .arg(max)
                        .arg(CONCURRENCY_LEASE.as_micros() as i64)
                        .arg(0)
                        .arg(0)
                        .arg(0);
                }
            }
        }
        (inv, held)
    }

    /// The count of `key`'s month starting at `start_us`.
    pub async fn quota_used(&self, key: &str, start_us: i64) -> Result<u64, RedisError> {
        let key = month_key(key, start_us);
        self.within_timeout(|mut conn| async move {
            let v: Option<u64> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| RedisError(e.to_string()))?;
            Ok(v.unwrap_or(0))
        })
        .await
    }
}

/// The script's first reply value when the server's time is outside the
/// months a node sent (its clock is months off).
const MONTHS_OFF: i64 = -1;

async fn invoke(
    inv: &ScriptInvocation<'_>,
    conn: &mut ConnectionManager,
) -> Result<Vec<Value>, RedisError> {
    inv.invoke_async(conn)
        .await
        .map_err(|e| RedisError(e.to_string()))
}

fn unexpected() -> RedisError {
    RedisError("unexpected reply from the limit script".into())
}

/// Releases concurrency slots, in the background.
pub(crate) fn release(mut conn: ConnectionManager, keys: Vec<String>, member: String) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("ZREM").arg(k).arg(&member).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!(error = %e, "could not release a concurrency slot; its lease will end it");
        }
    });
}

fn month_key(key: &str, start_us: i64) -> String {
    format!("{key}@{}", start_us / 1000)
}

pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
