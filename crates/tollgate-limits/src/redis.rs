//! The Redis backend: decisions run by one Lua script (`decide.lua`),
//! atomic and on the server's clock, so nodes whose clocks disagree still
//! count as one.
//!
//! Decisions are batched: each one is queued to a task that sends whatever
//! has queued as one `EVALSHA` ([`MAX_BATCH`] at most, with up to
//! [`BATCHES_IN_FLIGHT`] batches on the wire). An idle node sends each
//! decision on its own at once; a busy one shares a round trip, the
//! syscalls and the server's command overhead among many decisions. The
//! script runs a batch's decisions in order, each all-or-nothing over its
//! limits, exactly as if each had been its own call.
//!
//! Keys are `tg:{<subject>}:<limit>`: the braces are a Redis Cluster hash
//! tag, so every counter of one subject lives in one slot. (A batch mixes
//! subjects, which a standalone server or a single-shard deployment takes;
//! the client connects to one server.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::algo::{Rule, Status};
use crate::calendar;
use crate::{Check, Decision, Permit};

const SCRIPT: &str = include_str!("decide.lua");

/// How long a concurrency slot is held when its node never gives it back
/// (the node died mid-request).
pub const CONCURRENCY_LEASE: Duration = Duration::from_secs(300);

/// The most decisions one script call carries, so a batch never holds the
/// server for long (a decision costs it a few microseconds).
pub const MAX_BATCH: usize = 128;

/// Batches sent and not yet answered, at most. While all are out, new
/// decisions queue and leave together as the next batch.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Decisions waiting for a batch, at most; a decision that finds the queue
/// full waits for room within its timeout.
const QUEUE_DEPTH: usize = 8192;

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
    link: Arc<Link>,
    /// The batching task's queue, started by the first decision.
    queue: OnceLock<mpsc::Sender<Job>>,
    /// Source of unique concurrency-slot names.
    node: String,
    seq: AtomicU64,
    /// Tests only: decide at the given time instead of the server's clock.
    fixed_clock: bool,
}

/// The connection to Redis, shared by the decisions' batching task and the
/// backend's other calls.
struct Link {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    /// Held while connecting, so the first calls of a node share one
    /// attempt instead of failing while another one connects.
    connecting: tokio::sync::Mutex<()>,
    /// Failed connection attempts so far: a call that waited on an attempt
    /// that failed fails too, instead of trying again at once.
    connect_failures: AtomicU64,
    /// The SHA-1 of [`SCRIPT`], for `EVALSHA`.
    script_hash: String,
    timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

/// One decision waiting for its batch: the script's keys and arguments.
struct Job {
    /// The fixed clock's time; `None` decides on the server's clock.
    now_us: Option<i64>,
    /// The concurrency slots' member name; empty when it takes none.
    member: String,
    /// The counters' keys, in the order of the limits (three for a month).
    keys: Vec<String>,
    /// Per limit: its kind letter and parameters (two, five for a month).
    limits: Vec<(&'static str, [i64; 5])>,
    /// The keys of the concurrency slots it would take.
    held: Vec<String>,
    reply: oneshot::Sender<Result<Answer, RedisError>>,
}

/// The script's answer to one decision.
struct Answer {
    server_now_us: i64,
    /// Allowed (1, 0, or [`MONTHS_OFF`]), then five values per limit.
    values: Vec<i64>,
    /// The slots taken, with the connection that gives them back.
    slots: Option<(ConnectionManager, Vec<String>, String)>,
}

impl Redis {
    /// Checks the URL; connects on first use, so a node starts while Redis is down.
    pub fn new(opts: &RedisOptions) -> Result<Redis, RedisError> {
        let client = redis::Client::open(opts.url.as_str())
            .map_err(|e| RedisError(format!("TOLLGATE_REDIS_URL: {e}")))?;
        Ok(Redis {
            link: Arc::new(Link {
                client,
                conn: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
                connect_failures: AtomicU64::new(0),
                script_hash: redis::Script::new(SCRIPT).get_hash().to_owned(),
                timeout: opts.timeout,
            }),
            queue: OnceLock::new(),
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

    /// Runs `op` with the connection, both within the timeout.
    pub(crate) async fn within_timeout<T, F>(
        &self,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, RedisError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        self.link.within_timeout(op).await
    }

    /// Runs one decision. `now_us` is the node's clock: it only picks which
    /// months' counters the script may touch (the server's clock picks
    /// among them), unless the fixed clock is on. When none of them holds
    /// the server's time (the node's clock is months off), the script
    /// writes nothing and the decision is made again with the months
    /// around the server's time.
    pub async fn decide(&self, checks: &[Check<'_>], now_us: i64) -> Result<Decision, RedisError> {
        let run = async {
            let first = self.submit(checks, now_us).await?;
            if first.values.first() != Some(&MONTHS_OFF) {
                return Ok(first);
            }
            // This node's clock is months off the server's: ask again
            // with the months around the server's time.
            let again = self.submit(checks, first.server_now_us).await?;
            if again.values.first() == Some(&MONTHS_OFF) {
                return Err(unexpected());
            }
            Ok(again)
        };
        let answer = match tokio::time::timeout(self.link.timeout, run).await {
            Ok(r) => r?,
            Err(_) => return Err(self.link.timed_out()),
        };
        let allowed = answer.values.first() == Some(&1);
        let statuses = answer.values[1..]
            .chunks_exact(5)
            .map(|v| Status {
                allowed: v[0] == 1,
                remaining: v[1].max(0) as u64,
                reset_us: v[2],
                retry_after_us: v[3],
            })
            .collect::<Vec<_>>();
        if statuses.len() != checks.len() {
            return Err(unexpected());
        }
        let permit = answer
            .slots
            .map(|(conn, held, member)| Permit::redis(conn, held, member));
        Ok(Decision {
            allowed,
            statuses,
            permit,
        })
    }

    /// Queues one decision for the next batch and waits for its answer.
    async fn submit(&self, checks: &[Check<'_>], now_us: i64) -> Result<Answer, RedisError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            tokio::spawn(batcher(self.link.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let closed = || RedisError("the Redis decision queue has stopped".into());
        queue
            .send(self.job(checks, now_us, reply))
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// The script's keys and arguments for `checks`.
    fn job(
        &self,
        checks: &[Check<'_>],
        now_us: i64,
        reply: oneshot::Sender<Result<Answer, RedisError>>,
    ) -> Job {
        let mut keys = Vec::with_capacity(checks.len());
        let mut limits = Vec::with_capacity(checks.len());
        let mut held = Vec::new();
        for c in checks {
            match c.rule {
                Rule::Gcra { interval_us, burst } => {
                    keys.push(c.key.to_string());
                    limits.push(("g", [interval_us, wide(burst), 0, 0, 0]));
                }
                Rule::Window { window_us, limit } => {
                    keys.push(c.key.to_string());
                    limits.push(("w", [window_us, wide(limit), 0, 0, 0]));
                }
                Rule::Month { limit, tz } => {
                    let b = calendar::month_bounds(now_us, tz);
                    for start in &b[..3] {
                        keys.push(month_key(&c.key, *start));
                    }
                    limits.push(("m", [wide(limit), b[0], b[1], b[2], b[3]]));
                }
                Rule::Concurrency { max } => {
                    keys.push(c.key.to_string());
                    held.push(c.key.to_string());
                    let lease = CONCURRENCY_LEASE.as_micros() as i64;
                    limits.push(("c", [wide(max), lease, 0, 0, 0]));
                }
            }
        }
        let member = if held.is_empty() {
            String::new()
        } else {
            format!("{}-{}", self.node, self.seq.fetch_add(1, Ordering::Relaxed))
        };
        Job {
            now_us: self.fixed_clock.then_some(now_us),
            member,
            keys,
            limits,
            held,
            reply,
        }
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

impl Link {
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
    async fn within_timeout<T, F>(
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
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> RedisError {
        RedisError(format!("Redis did not answer within {:?}", self.timeout))
    }
}

/// The batching task: takes what has queued, up to [`MAX_BATCH`], whenever
/// fewer than [`BATCHES_IN_FLIGHT`] batches are out, and sends it. Ends
/// when the backend is dropped.
async fn batcher(link: Arc<Link>, mut queue: mpsc::Receiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = Vec::new();
        if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let link = link.clone();
        tokio::spawn(async move {
            run_batch(&link, jobs).await;
            drop(slot);
        });
    }
}

/// Sends one batch and hands each decision its answer. A decision whose
/// caller has gone (its request was cancelled) gives back the concurrency
/// slots it took.
async fn run_batch(link: &Link, jobs: Vec<Job>) {
    let cmd = command(&link.script_hash, &jobs);
    let reply = link
        .within_timeout(|mut conn| async move {
            let reply = eval(&cmd, &mut conn).await?;
            Ok((reply, conn))
        })
        .await
        .and_then(|(reply, conn)| Ok((numbers(&reply, &jobs)?, conn)));
    let (values, conn) = match reply {
        Ok(r) => r,
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let server_now_us = values[0];
    let mut at = 1;
    for job in jobs {
        let n = 1 + 5 * job.limits.len();
        let values = values[at..at + n].to_vec();
        at += n;
        let took = values[0] == 1 && !job.held.is_empty();
        let slots = took.then(|| (conn.clone(), job.held, job.member));
        let answer = Answer {
            server_now_us,
            values,
            slots,
        };
        if let Err(Ok(unclaimed)) = job.reply.send(Ok(answer))
            && let Some((conn, held, member)) = unclaimed.slots
        {
            release(conn, held, member);
        }
    }
}

/// The `EVALSHA` of a batch: the distinct counter keys, then each
/// decision's arguments, its limits naming keys by index (see `decide.lua`).
fn command(script_hash: &str, jobs: &[Job]) -> Cmd {
    let mut index: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut keys = Vec::new();
    let mut args = Vec::with_capacity(jobs.len() * 8);
    for job in jobs {
        args.push(job.now_us.map_or(Arg::Empty, Arg::Int));
        args.push(Arg::Member(&job.member));
        args.push(Arg::Int(job.limits.len() as i64));
        let mut job_keys = job.keys.iter();
        for (kind, params) in &job.limits {
            args.push(Arg::Kind(kind));
            let (nkeys, nparams) = if *kind == "m" { (3, 5) } else { (1, 2) };
            for k in job_keys.by_ref().take(nkeys) {
                let i = *index.entry(k.as_str()).or_insert_with(|| {
                    keys.push(k.as_str());
                    keys.len()
                });
                args.push(Arg::Int(i as i64));
            }
            args.extend(params[..nparams].iter().map(|p| Arg::Int(*p)));
        }
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script_hash).arg(keys.len());
    for k in keys {
        cmd.arg(k);
    }
    for a in args {
        match a {
            Arg::Empty => cmd.arg(""),
            Arg::Int(n) => cmd.arg(n),
            Arg::Member(m) | Arg::Kind(m) => cmd.arg(m),
        };
    }
    cmd
}

/// One script argument, kept until the keys (which come first) are known.
enum Arg<'a> {
    Empty,
    Int(i64),
    Member(&'a str),
    Kind(&'a str),
}

/// Runs the script, loading it first when the server does not have it
/// (after a restart or `SCRIPT FLUSH`).
async fn eval(cmd: &Cmd, conn: &mut ConnectionManager) -> Result<Value, RedisError> {
    let reply = match cmd.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::NoScriptError => {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SCRIPT)
                .query_async::<()>(conn)
                .await
                .map_err(|e| RedisError(e.to_string()))?;
            cmd.query_async(conn).await
        }
        reply => reply,
    };
    reply.map_err(|e| RedisError(e.to_string()))
}

/// The batch's reply as numbers, checked against the decisions it answers.
fn numbers(reply: &Value, jobs: &[Job]) -> Result<Vec<i64>, RedisError> {
    let Value::Array(items) = reply else {
        return Err(unexpected());
    };
    let expected = 1 + jobs.iter().map(|j| 1 + 5 * j.limits.len()).sum::<usize>();
    if items.len() != expected {
        return Err(unexpected());
    }
    items
        .iter()
        .map(|v| int(v).ok_or_else(unexpected))
        .collect()
}

/// A count or limit as the script's integer argument (saturating; limits
/// beyond `i64::MAX` are not limits).
fn wide(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
