//! Helpers for tests that need Redis, shared by this crate's tests and the
//! binary's: the shared test server (skipped when unreachable, required when
//! `CI=true`) and private `redis-server` processes a test may kill and start
//! again. Not used by the gateway itself.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// Whether a missing service fails the run instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

pub const TEST_REDIS_URL_ENV: &str = "TOLLGATE_TEST_REDIS_URL";
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379/";

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
    /// Settings given on the command line after the defaults.
    args: Vec<String>,
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
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
            .port();
        Some(RedisServer {
            binary,
            port,
            args: Vec::new(),
            child: None,
        })
    }

    /// Adds `redis-server` settings (`["--requirepass", "s3cret"]`) for
    /// every start.
    pub fn with_args(mut self, args: &[&str]) -> RedisServer {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
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
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn redis-server: {e}"));
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
        let Some(child) = self.child.as_ref() else {
            panic!("the server is not running");
        };
        let pid = child.id();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen (SIGSTOPped) server too.
        self.stop();
    }
}
