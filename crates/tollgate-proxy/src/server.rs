//! The proxy listener: accept, TLS, connection cap, deadlines, graceful shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::Request;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::coarse_timer;
use crate::h1::{self, HeadLimits, RequestBody, Wire};
use crate::service::{ConnInfo, handle};
use crate::settings::{ProxySettings, TlsFiles};
use crate::snapshot::Gateway;

/// A bound proxy listener.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("tcp", &self.tcp)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot read TLS file {path}: {reason}")]
    Tls { path: String, reason: String },
}

impl Listener {
    /// Binds the proxy address and loads TLS material, if any.
    pub async fn bind(settings: &ProxySettings) -> Result<Listener, ListenError> {
        let tls = settings.tls.as_ref().map(load_tls).transpose()?;
        let tcp = reuseport_listener(settings.listen).map_err(|source| ListenError::Bind {
            addr: settings.listen,
            source,
        })?;
        Ok(Listener { tcp, tls })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A listener with `SO_REUSEPORT`, so each worker thread can have its own on
/// the same address and the kernel spreads connections over them.
fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, ListenError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let err = |path: &std::path::Path, reason: String| ListenError::Tls {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(&files.cert, "no certificate found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(&files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(&files.key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves the proxy until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish for up to `shutdown_grace`.
///
/// HTTP/1.x runs on Tollgate's own connection code ([`crate::h1`]); HTTP/2,
/// chosen by ALPN over TLS or by the prior-knowledge preface in cleartext,
/// runs on hyper's.
pub async fn serve(listener: Listener, gw: Arc<Gateway>, shutdown: CancellationToken) {
    let settings = gw.settings.clone();
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    let h2 = Arc::new(h2);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let tracker = TaskTracker::new();
    let draining = Arc::new(h1::Draining::default());
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.tcp.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gw.clone();
        let h2 = h2.clone();
        let tls = listener.tls.clone();
        let shutdown = shutdown.clone();
        let draining = draining.clone();
        let header_timeout = settings.header_read_timeout;
        tracker.spawn(async move {
            match tls {
                None => serve_plain(stream, peer, gw, &h2, shutdown, draining).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let alpn_h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let conn = Arc::new(ConnInfo::new(peer, true));
                            if alpn_h2 {
                                serve_h2(tls_stream, conn, gw, &h2, shutdown).await;
                            } else {
                                let wire = Wire::new(Box::new(tls_stream), BytesMut::new());
                                let limits = head_limits(&gw);
                                h1::serve(wire, gw, conn, limits, draining).await;
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    draining.start();
    tracker.close();
    if tokio::time::timeout(settings.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

fn head_limits(gw: &Gateway) -> HeadLimits {
    HeadLimits {
        max_bytes: gw.settings.max_header_bytes,
        max_fields: gw.settings.max_headers,
        deadline: gw.settings.header_read_timeout,
    }
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A cleartext connection: HTTP/2 if it opens with the HTTP/2 preface,
/// HTTP/1.x otherwise. A client that sends nothing (or part of the preface)
/// within the header deadline is disconnected.
async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    h2: &Http2Builder,
    shutdown: CancellationToken,
    draining: Arc<h1::Draining>,
) {
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + gw.settings.header_read_timeout;
    let is_h2 = loop {
        let seen = buf.len().min(H2_PREFACE.len());
        if buf[..seen] != H2_PREFACE[..seen] {
            break false;
        }
        if seen == H2_PREFACE.len() {
            break true;
        }
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(%peer, "no request within the header deadline; closing");
                return;
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let conn = Arc::new(ConnInfo::new(peer, false));
    if is_h2 {
        serve_h2(Rewind::new(stream, buf.freeze()), conn, gw, h2, shutdown).await;
    } else {
        let limits = head_limits(&gw);
        h1::serve(Wire::new(Box::new(stream), buf), gw, conn, limits, draining).await;
    }
}

type Http2Builder = hyper::server::conn::http2::Builder<TokioExecutor>;

async fn serve_h2<IO>(
    io: IO,
    conn: Arc<ConnInfo>,
    gw: Arc<Gateway>,
    builder: &Http2Builder,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let header_timeout = gw.settings.header_read_timeout;
    // Idle connections are closed as HTTP/1 ones are: one that has not
    // opened a stream by the header deadline at once (otherwise a client
    // could hold a connection slot for ever after the handshake), and one
    // whose streams have all ended for as long as an idle keep-alive
    // connection may wait, with a GOAWAY. A stream counts until its
    // response body has been sent or dropped.
    let streams = Arc::new(Streams::default());
    let svc = {
        let streams = streams.clone();
        service_fn(move |req: Request<hyper::body::Incoming>| {
            let stream = StreamGuard::open(&streams);
            let handled = handle(gw.clone(), conn.clone(), Box::new(req.map(RequestBody::H2)));
            async move {
                let Ok(mut res) = handled.await;
                // hyper writes the map alone.
                if let Some(fields) = res.body_mut().take_fields() {
                    fields.materialize(res.headers_mut());
                }
                Ok::<_, Infallible>(res.map(|body| TrackedBody {
                    body,
                    _stream: stream,
                }))
            }
        })
    };
    let fut = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(fut);
    let idle_after = header_timeout + h1::IDLE_SLACK;
    let mut check = coarse_timer::sleep(header_timeout);
    let res = loop {
        tokio::select! {
            res = &mut fut => break res,
            () = &mut check => {
                let Some(idle) = streams.idle_for(coarse_timer::now()) else {
                    check = coarse_timer::sleep(idle_after);
                    continue;
                };
                if !streams.used() {
                    tracing::debug!(%peer, "no HTTP/2 stream within the header deadline; closing");
                    return;
                }
                if idle < idle_after {
                    check = coarse_timer::sleep(idle_after.saturating_sub(idle));
                    continue;
                }
                tracing::debug!(%peer, "HTTP/2 connection idle; going away");
                fut.as_mut().graceful_shutdown();
                break fut.await;
            }
            _ = shutdown.cancelled() => {
                if !streams.used() {
                    return;
                }
                fut.as_mut().graceful_shutdown();
                break fut.await;
            }
        }
    };
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The streams of an HTTP/2 connection, for its idle deadline.
#[derive(Debug)]
struct Streams {
    /// Streams whose response has not ended yet.
    open: AtomicUsize,
    /// Whether a stream was ever opened.
    used: AtomicBool,
    /// When the connection last had no stream open, in nanoseconds after
    /// `base` on the coarse clock.
    idle_since_ns: AtomicU64,
    base: Instant,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            open: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            idle_since_ns: AtomicU64::new(0),
            base: coarse_timer::now(),
        }
    }
}

impl Streams {
    fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// How long the connection has had no stream open, or None while one is.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.base + Duration::from_nanos(self.idle_since_ns.load(Ordering::Acquire));
        Some(now.saturating_duration_since(since))
    }
}

/// One open stream: counted from its request until its response body is
/// dropped (sent, failed or abandoned).
#[derive(Debug)]
struct StreamGuard(Arc<Streams>);

impl StreamGuard {
    fn open(streams: &Arc<Streams>) -> StreamGuard {
        streams.used.store(true, Ordering::Relaxed);
        streams.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let s = &self.0;
        let ns = coarse_timer::now()
            .saturating_duration_since(s.base)
            .as_nanos() as u64;
        s.idle_since_ns.fetch_max(ns, Ordering::AcqRel);
        s.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An HTTP/2 response body that holds its stream open until it is dropped.
struct TrackedBody {
    body: ProxyBody,
    _stream: StreamGuard,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = <ProxyBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream that first yields bytes already read from it.
struct Rewind<T> {
    pre: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(inner: T, pre: Bytes) -> Self {
        Rewind { pre, inner }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            let pre = self.pre.split_to(n);
            buf.put_slice(&pre);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
