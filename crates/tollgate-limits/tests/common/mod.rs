//! Shared helpers for the Redis tests: the shared test server (skipped when
//! absent, required when `CI=true`), private `redis-server` processes that a
//! test may kill and restart, unique key subjects and a seeded generator.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::OnceCell;
use tollgate_limits::Limiter;
use tollgate_limits::redis::{Redis, RedisOptions};

pub const TEST_REDIS_URL_ENV: &str = "TOLLGATE_TEST_REDIS_URL";
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// Whether a missing Redis fails the run instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The shared test Redis, or `None` (after a note) when it is unreachable
/// outside CI. Reachability is checked once per test binary.
pub async fn shared_redis() -> Option<String> {
    static REACHABLE: OnceCell<Result<(), String>> = OnceCell::const_new();
    let url = std::env::var(TEST_REDIS_URL_ENV).unwrap_or_else(|_| DEFAULT_TEST_REDIS_URL.into());
    let reachable = REACHABLE.get_or_init(|| ping(url.clone())).await;
    match reachable {
        Ok(()) => Some(url),
        Err(e) => {
            if ci() {
                panic!(
                    "CI=true and the test Redis at {url} is unreachable ({TEST_REDIS_URL_ENV}): {e}"
                );
            }
            eprintln!("skipping: cannot reach Redis at {url} ({e}); set {TEST_REDIS_URL_ENV}");
            None
        }
    }
}

/// Skips the test (returns) when the shared Redis is unreachable outside CI.
#[macro_export]
macro_rules! require_redis {
    () => {
        match common::shared_redis().await {
            Some(url) => url,
            None => return,
        }
    };
}

async fn ping(url: String) -> Result<(), String> {
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let attempt = async {
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out".into()),
    }
}

/// Options for a backend at `url` that gives up on one decision after `timeout`.
pub fn options(url: &str, timeout: Duration) -> RedisOptions {
    RedisOptions {
        url: url.to_owned(),
        timeout,
    }
}

/// A backend on the server's clock, with a timeout generous enough for CI.
pub fn redis(url: &str) -> Redis {
    Redis::new(&options(url, Duration::from_secs(5))).expect("a valid Redis URL")
}

/// A limiter ("node") on Redis, on the server's clock.
pub fn node(url: &str) -> Limiter {
    Limiter::redis(redis(url))
}

/// A limiter on Redis that decides at the `now_us` it is given.
pub fn fixed_clock_node(url: &str) -> Limiter {
    Limiter::redis(redis(url).with_fixed_clock())
}

/// A subject no other test (or earlier run) uses, so tests never share
/// counters and can run in parallel against one server.
pub fn subject(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let a = random_u64();
    let b = random_u64() ^ SEQ.fetch_add(1, Ordering::Relaxed);
    format!("test-{tag}-{a:016x}{b:016x}")
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((SystemTime::now(), std::thread::current().id()))
}

/// The wall clock in µs since the epoch (what a node passes to `decide`).
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as i64
}

/// A small seeded generator (splitmix64), so a failing sequence can be
/// replayed from the seed printed by the test.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> (Rng, u64) {
        let seed = std::env::var("TOLLGATE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(random_u64);
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The `redis-server` binary: `REDIS_SERVER`, then `PATH`, then the usual
/// system places.
fn redis_server_binary() -> Option<String> {
    if let Ok(p) = std::env::var("REDIS_SERVER") {
        return std::path::Path::new(&p).is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            [
                "/usr/bin/redis-server",
                "/usr/sbin/redis-server",
                "/usr/local/bin/redis-server",
            ]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
        })
        .map(|p| p.to_string_lossy().into_owned())
}

/// A private `redis-server` on a loopback port, killed when dropped (also
/// when the test panics). It can be stopped and started again on the same
/// port, or frozen (SIGSTOP) to stand for a server that stops answering.
pub struct RedisServer {
    binary: String,
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Picks a free port without starting the server yet, or `None` (after
    /// a note) when `redis-server` is not installed outside CI.
    pub fn on_free_port() -> Option<RedisServer> {
        let Some(binary) = redis_server_binary() else {
            if ci() {
                panic!("CI=true and redis-server is not installed (set REDIS_SERVER)");
            }
            eprintln!("skipping: redis-server is not installed (set REDIS_SERVER)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        Some(RedisServer {
            binary,
            port,
            child: None,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server and waits (at most 10 s) until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        // Waiting on an external process: poll its port, bounded.
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to the running server.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen (SIGSTOPped) server too.
        self.stop();
    }
}
