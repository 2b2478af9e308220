//! The Redis backend: decisions run by one Lua script (`decide.lua`),
//! atomic and on the server's clock, so nodes whose clocks disagree still
//! count as one.
//!
//! Decisions are batched: each one is queued, and [`BATCHES_IN_FLIGHT`]
//! tasks, each with a connection of its own, take turns sending whatever
//! has queued as one `EVALSHA` ([`MAX_BATCH`] at most). An idle node sends
//! each decision on its own at once; a busy one shares a round trip, the
//! syscalls and the server's command overhead among many decisions. The
//! script runs a batch's decisions in order, each all-or-nothing over its
//! limits, exactly as if each had been its own call. That one command
//! goes over the limiter's own RESP connection ([`crate::resp`]); every
//! other call uses the `redis` crate's connection manager.
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
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::algo::{Rule, Status};
use crate::calendar;
use crate::resp::{Wire, WireError};
use crate::{Check, Decision, Permit};

const SCRIPT: &str = include_str!("decide.lua");

/// How long a concurrency slot is held when its node never gives it back
/// (the node died mid-request).
pub const CONCURRENCY_LEASE: Duration = Duration::from_secs(300);

/// The most decisions one script call carries, so a batch never holds the
/// server for long (a decision costs it a few microseconds).
pub const MAX_BATCH: usize = 128;

/// Batches sent and not yet answered, at most: the number of batching
/// tasks, each with its own connection. While all are out, new decisions
/// queue and leave together as the next batch.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Decisions waiting for a batch, at most; a decision that finds the queue
/// full waits for room within its timeout.
const QUEUE_DEPTH: usize = 8192;

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db`, or a Unix socket as
    /// `unix:///path/redis.sock?db=N&pass=…&user=…`. TLS (`rediss://`) is
    /// not built in and is refused at start.
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
    /// The batching tasks' queue, started by the first decision.
    queue: OnceLock<mpsc::Sender<Job>>,
    /// Source of unique concurrency-slot names.
    node: String,
    seq: AtomicU64,
    /// Tests only: decide at the given time instead of the server's clock.
    fixed_clock: bool,
}

/// How the backend reaches Redis: the `redis` crate's connection for the
/// calls other than decisions, and where the batching tasks' own
/// connections go.
pub(crate) struct Link {
    client: redis::Client,
    /// Where the batches' own connections go, and how they log in.
    info: redis::ConnectionInfo,
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
    /// The concurrency slots taken.
    slots: Option<Slots>,
}

/// Concurrency slots a decision took, given back by [`release`].
pub(crate) struct Slots {
    link: Arc<Link>,
    keys: Vec<String>,
    member: String,
}

impl Redis {
    /// Checks the URL; connects on first use, so a node starts while Redis is down.
    pub fn new(opts: &RedisOptions) -> Result<Redis, RedisError> {
        let client = redis::Client::open(opts.url.as_str())
            .map_err(|e| RedisError(format!("TOLLGATE_REDIS_URL: {e}")))?;
        Ok(Redis {
            link: Arc::new(Link {
                info: client.get_connection_info().clone(),
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
            .collect::<crate::Statuses>();
        if statuses.len() != checks.len() {
            return Err(unexpected());
        }
        let permit = answer.slots.map(Permit::redis);
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
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..BATCHES_IN_FLIGHT {
                tokio::spawn(batcher(self.link.clone(), rx.clone()));
            }
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

/// A batching task: takes its turn at the queue, takes what has queued
/// there (up to [`MAX_BATCH`], waiting for one decision at least, then
/// yielding its turn while that lets ready tasks add more), sends it on
/// its own connection and hands out the answers. Ends when the backend is
/// dropped.
async fn batcher(link: Arc<Link>, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut wire = None;
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut values = Vec::new();
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                return;
            }
            // The first decision woke this task, often before the other
            // tasks that are ready to run have queued theirs: let them
            // run first, and take what they queued into this batch, for
            // as long as a turn brings more.
            while jobs.len() < MAX_BATCH {
                tokio::task::yield_now().await;
                let had = jobs.len();
                while jobs.len() < MAX_BATCH
                    && let Ok(job) = queue.try_recv()
                {
                    jobs.push(job);
                }
                if jobs.len() == had {
                    break;
                }
            }
        }
        run_batch(&link, &mut wire, &mut jobs, &mut values).await;
    }
}

/// Sends one batch and hands each decision its answer (or the batch's
/// error). A decision whose caller has gone (its request was cancelled)
/// gives back the concurrency slots it took.
async fn run_batch(
    link: &Arc<Link>,
    wire: &mut Option<Wire>,
    jobs: &mut Vec<Job>,
    values: &mut Vec<i64>,
) {
    let outcome = match tokio::time::timeout(link.timeout, exchange(link, wire, jobs, values)).await
    {
        Ok(Ok(())) => check(values, jobs),
        Ok(Err(e)) => {
            if matches!(e, WireError::Broken(_)) {
                *wire = None;
            }
            Err(RedisError(e.to_string()))
        }
        Err(_) => {
            // Cut off mid-exchange: the connection is out of step.
            *wire = None;
            Err(link.timed_out())
        }
    };
    if let Err(e) = outcome {
        for job in jobs.drain(..) {
            let _ = job.reply.send(Err(e.clone()));
        }
        return;
    }
    let server_now_us = values[0];
    let mut at = 1;
    for job in jobs.drain(..) {
        let n = 1 + 5 * job.limits.len();
        let values = values[at..at + n].to_vec();
        at += n;
        let took = values[0] == 1 && !job.held.is_empty();
        let slots = took.then(|| Slots {
            link: link.clone(),
            keys: job.held,
            member: job.member,
        });
        let answer = Answer {
            server_now_us,
            values,
            slots,
        };
        if let Err(Ok(unclaimed)) = job.reply.send(Ok(answer))
            && let Some(slots) = unclaimed.slots
        {
            release(slots);
        }
    }
}

/// Runs the batch's script call on `wire` (connecting first when there is
/// none), loading the script when the server does not have it (after a
/// restart or `SCRIPT FLUSH`). The reply's numbers go to `values`.
async fn exchange(
    link: &Link,
    wire: &mut Option<Wire>,
    jobs: &[Job],
    values: &mut Vec<i64>,
) -> Result<(), WireError> {
    let w = match wire {
        Some(w) => w,
        None => wire.insert(Wire::connect(&link.info).await?),
    };
    encode(w, &link.script_hash, jobs);
    w.send().await?;
    match w.integers(values).await {
        Err(WireError::Server(e)) if e.starts_with("NOSCRIPT") => {
            w.start(3);
            w.bulk(b"SCRIPT");
            w.bulk(b"LOAD");
            w.bulk(SCRIPT.as_bytes());
            encode(w, &link.script_hash, jobs);
            w.send().await?;
            // The batch's reply follows unread if the load fails: the
            // connection is out of step then.
            w.simple()
                .await
                .map_err(|e| e.fatal("SCRIPT LOAD failed"))?;
            w.integers(values).await
        }
        reply => reply,
    }
}

/// Writes the `EVALSHA` of a batch to `wire`: the distinct counter keys,
/// then each decision's arguments, its limits naming keys by index (see
/// `decide.lua`).
fn encode(wire: &mut Wire, script_hash: &str, jobs: &[Job]) {
    let mut index: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut keys = Vec::new();
    let mut args = Vec::with_capacity(jobs.len() * 8);
    for job in jobs {
        args.push(job.now_us.map_or(Arg::Empty, Arg::Int));
        args.push(Arg::Str(&job.member));
        args.push(Arg::Int(job.limits.len() as i64));
        let mut job_keys = job.keys.iter();
        for (kind, params) in &job.limits {
            args.push(Arg::Str(kind));
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
    wire.start(3 + keys.len() + args.len());
    wire.bulk(b"EVALSHA");
    wire.bulk(script_hash.as_bytes());
    wire.int(keys.len() as i64);
    for k in keys {
        wire.bulk(k.as_bytes());
    }
    for a in args {
        match a {
            Arg::Empty => wire.bulk(b""),
            Arg::Int(n) => wire.int(n),
            Arg::Str(s) => wire.bulk(s.as_bytes()),
        }
    }
}

/// One script argument, kept until the keys (which come first) are known.
enum Arg<'a> {
    Empty,
    Int(i64),
    Str(&'a str),
}

/// Checks the batch's reply against the decisions it answers.
fn check(values: &[i64], jobs: &[Job]) -> Result<(), RedisError> {
    let expected = 1 + jobs.iter().map(|j| 1 + 5 * j.limits.len()).sum::<usize>();
    if values.len() != expected {
        return Err(unexpected());
    }
    Ok(())
}

/// A count or limit as the script's integer argument (saturating; limits
/// beyond `i64::MAX` are not limits).
fn wide(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unexpected() -> RedisError {
    RedisError("unexpected reply from the limit script".into())
}

/// Gives concurrency slots back, in the background.
pub(crate) fn release(slots: Slots) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let Slots { link, keys, member } = slots;
        let given_back = link
            .within_timeout(|mut conn| async move {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("ZREM").arg(k).arg(&member).ignore();
                }
                pipe.query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| RedisError(e.to_string()))
            })
            .await;
        if let Err(e) = given_back {
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
