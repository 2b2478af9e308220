//! Upstream connections: one keep-alive pool per worker thread, of the
//! inline HTTP/1.1 client connections in [`crate::client`].
//!
//! Each worker is a single-threaded runtime, so its pool is a plain
//! thread-local map with no lock and no cross-thread hand-off: a request
//! takes an idle connection of its own thread, and its response body puts
//! the connection back when the body has been read to the end (see
//! [`ResponseBody`]). A connection whose body ends early, which switched
//! protocols, or whose upstream asked to close it, is closed instead.
//!
//! Before a pooled connection is reused, it is checked for anything the
//! upstream sent while it was idle (its FIN, typically: a keep-alive timeout
//! shorter than the gateway's). A connection the upstream closed just as
//! the request went out fails without an answer; a request that cannot have
//! been acted on (see [`crate::client::Failed`]) is then sent again on
//! another connection, without counting as an attempt.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;

use crate::body::UpstreamBody;
use crate::client::{ClientError, Connection, RequestHead, ResponseBody};

/// Idle connections kept per target and worker thread.
const MAX_IDLE_PER_TARGET: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

struct Idle {
    conn: Box<Connection>,
    since: Instant,
}

/// Idle connections by target. Keyed with foldhash: SipHash on the target's
/// address was about 1.4% of a pass-through request's instructions.
type IdleMap = HashMap<Arc<str>, Vec<Idle>, foldhash::fast::RandomState>;

thread_local! {
    static IDLE: RefCell<IdleMap> = RefCell::new(IdleMap::default());
}

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made; the request was not sent.
    Connect(std::io::Error),
    /// The exchange failed on an open connection.
    Exchange(ClientError),
}

/// Puts a connection whose response ended back for the next request to its
/// target on this thread.
pub(crate) fn release(conn: Box<Connection>) {
    // The coarse clock: an idle age a tick too long does not matter
    // against the idle timeout, and it costs no clock read.
    let now = crate::coarse_timer::now();
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(conn.target().clone()).or_default();
        if list.len() >= MAX_IDLE_PER_TARGET {
            list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT);
        }
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(Idle { conn, since: now });
        }
    });
}

/// The most recently used idle connection to `target` on this thread that
/// is still open.
fn checkout(target: &str, now: Instant) -> Option<Box<Connection>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(target)?;
        while let Some(mut c) = list.pop() {
            if now.duration_since(c.since) < IDLE_TIMEOUT && c.conn.is_idle_and_open() {
                return Some(c.conn);
            }
        }
        None
    })
}

/// Sends a request to `target` (`host:port`) on an idle connection of this
/// thread, or a new one made within `connect_timeout`, and returns the
/// response head with its body still on the connection. `now` is the time
/// of the attempt, read by the caller.
pub async fn send(
    target: &Arc<str>,
    connect_timeout: Duration,
    head: &RequestHead<'_>,
    body: &mut UpstreamBody,
    now: Instant,
) -> Result<Response<ResponseBody>, SendError> {
    while let Some(conn) = checkout(target, now) {
        match conn.exchange(head, body).await {
            Ok(res) => return Ok(res),
            // The upstream had closed it; the request cannot have been acted on.
            Err(failed) if failed.resendable => continue,
            Err(failed) => return Err(SendError::Exchange(failed.error)),
        }
    }
    let conn = connect(target, connect_timeout)
        .await
        .map_err(SendError::Connect)?;
    conn.exchange(head, body)
        .await
        .map_err(|failed| SendError::Exchange(failed.error))
}

async fn connect(target: &Arc<str>, connect_timeout: Duration) -> std::io::Result<Box<Connection>> {
    let stream = match tokio::time::timeout(
        connect_timeout,
        tokio::net::TcpStream::connect(&**target),
    )
    .await
    {
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
    Ok(Connection::new(stream, target.clone()))
}

/// Sends a request on a connection of its own, closed after it: a health
/// probe, which so also checks that the target accepts connections.
pub async fn probe(
    target: &Arc<str>,
    connect_timeout: Duration,
    head: &RequestHead<'_>,
    body: &mut UpstreamBody,
) -> Result<Response<ResponseBody>, SendError> {
    let conn = connect(target, connect_timeout)
        .await
        .map_err(SendError::Connect)?
        .single_use();
    conn.exchange(head, body)
        .await
        .map_err(|failed| SendError::Exchange(failed.error))
}
