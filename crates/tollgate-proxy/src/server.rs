//! The proxy listener: accept, TLS, connection cap, deadlines, graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

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
        let header_timeout = settings.header_read_timeout;
        tracker.spawn(async move {
            match tls {
                None => serve_plain(stream, peer, gw, &h2, shutdown).await,
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
                                h1::serve(wire, gw, conn, limits, shutdown).await;
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
        h1::serve(Wire::new(Box::new(stream), buf), gw, conn, limits, shutdown).await;
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
    // A connection that has not opened a stream by the header deadline is
    // closed, as an HTTP/1 one that sends no head is: otherwise a client
    // could hold a connection slot for ever after the handshake.
    let used = Arc::new(AtomicBool::new(false));
    let svc = {
        let used = used.clone();
        service_fn(move |req: Request<hyper::body::Incoming>| {
            used.store(true, Ordering::Relaxed);
            handle(gw.clone(), conn.clone(), req.map(RequestBody::H2))
        })
    };
    let fut = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(fut);
    let first = tokio::time::sleep(header_timeout);
    tokio::pin!(first);
    let mut waiting = true;
    let res = loop {
        tokio::select! {
            res = &mut fut => break res,
            () = &mut first, if waiting => {
                if !used.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no HTTP/2 stream within the header deadline; closing");
                    return;
                }
                waiting = false;
            }
            _ = shutdown.cancelled() => {
                if !used.load(Ordering::Relaxed) {
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
