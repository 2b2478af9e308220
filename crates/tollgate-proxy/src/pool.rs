//! Upstream connections: one keep-alive pool per worker thread, on hyper's
//! HTTP/1.1 client connections.
//!
//! Each worker is a single-threaded runtime, so its pool is a plain
//! thread-local map with no lock and no cross-thread hand-off: a request
//! takes an idle connection of its own thread, and its response body puts
//! the connection back when the body has been read to the end (see
//! [`Conn`]). A connection whose body ends early, or which switched
//! protocols, is closed instead. This replaces hyper-util's general-purpose
//! pool, whose checkout, locking and per-request background task cost about
//! a tenth of the gateway's CPU per request (see bench/RESULTS.md).
//!
//! A pooled connection the upstream has just closed may fail a request
//! before it was written; hyper then hands the request back, and it is sent
//! on another (or a new) connection without counting as an attempt.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::body::UpstreamBody;

/// Idle connections kept per target and worker thread.
const MAX_IDLE_PER_TARGET: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

struct Idle {
    tx: SendRequest<UpstreamBody>,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<Arc<str>, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made; the request was not sent.
    Connect(std::io::Error),
    /// The exchange failed on an open connection.
    Http(hyper::Error),
}

/// A connection in use: the response body holds it, and gives it back to
/// its thread's pool with [`Conn::release`] once the body has ended.
#[derive(Debug)]
pub struct Conn {
    tx: SendRequest<UpstreamBody>,
    target: Arc<str>,
}

impl Conn {
    /// Puts the connection back for the next request to `target`. Call only
    /// once the response has been read to its end; hyper takes the next
    /// request only then (a connection not yet ready is awaited at checkout).
    pub fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        let now = Instant::now();
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let list = idle.entry(self.target).or_default();
            list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT && !c.tx.is_closed());
            if list.len() < MAX_IDLE_PER_TARGET {
                list.push(Idle {
                    tx: self.tx,
                    since: now,
                });
            }
        });
    }
}

/// The most recently used idle connection to `target` on this thread.
fn checkout(target: &str) -> Option<SendRequest<UpstreamBody>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(target)?;
        let now = Instant::now();
        while let Some(c) = list.pop() {
            if !c.tx.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.tx);
            }
        }
        None
    })
}

/// Sends `req` to `target` (`host:port`) on an idle connection of this
/// thread, or a new one made within `connect_timeout`.
pub async fn send(
    target: &Arc<str>,
    connect_timeout: Duration,
    mut req: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Conn), SendError> {
    while let Some(mut tx) = checkout(target) {
        if tx.ready().await.is_err() {
            continue;
        }
        match tx.try_send_request(req).await {
            Ok(res) => {
                let conn = Conn {
                    tx,
                    target: target.clone(),
                };
                return Ok((res, conn));
            }
            Err(mut e) => match e.take_message() {
                // Not written: the connection closed under it. Try another.
                Some(back) => req = back,
                None => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    let mut tx = connect(target, connect_timeout)
        .await
        .map_err(SendError::Connect)?;
    match tx.send_request(req).await {
        Ok(res) => Ok((
            res,
            Conn {
                tx,
                target: target.clone(),
            },
        )),
        Err(e) => Err(SendError::Http(e)),
    }
}

async fn connect(
    target: &str,
    connect_timeout: Duration,
) -> std::io::Result<SendRequest<UpstreamBody>> {
    let stream =
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target)).await {
            Ok(s) => s?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection within the connect timeout ({} ms)",
                        connect_timeout.as_millis()
                    ),
                ));
            }
        };
    stream.set_nodelay(true)?;
    let (tx, conn) = http1::Builder::new()
        // Small heads and bodies go out in one flat write rather than writev.
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(tx)
}
