//! The proxy listener: accept, TLS, connection cap, deadlines, graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::coarse_timer::CoarseTimer;
use crate::framing::{FramingIo, HeadLimits};

/// How much later than the gateway's own header deadline hyper's fires.
const HYPER_SLACK: std::time::Duration = std::time::Duration::from_secs(1);
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
pub async fn serve(listener: Listener, gw: Arc<Gateway>, shutdown: CancellationToken) {
    let settings = gw.settings.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The framing guard enforces the head limits and deadline with problem
        // answers; hyper's own, set wider, are the backstop (and close idle
        // keep-alive connections). A backstop that may fire a tick late runs
        // on the coarse timer, which costs next to nothing per request.
        .timer(CoarseTimer)
        .header_read_timeout(settings.header_read_timeout + HYPER_SLACK)
        .max_buf_size((settings.max_header_bytes + HeadLimits::SLACK).max(8192))
        .max_headers(256)
        // Small heads and bodies go out in one flat write rather than writev.
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
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
        let builder = builder.clone();
        let tls = listener.tls.clone();
        let watcher = graceful.watcher();
        let header_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, peer, false, gw, &builder, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_conn(tls_stream, peer, true, gw, &builder, watcher).await
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
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

async fn serve_conn<IO>(
    io: IO,
    peer: SocketAddr,
    tls: bool,
    gw: Arc<Gateway>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = HeadLimits {
        max_bytes: gw.settings.max_header_bytes,
        max_fields: gw.settings.max_headers,
        deadline: gw.settings.header_read_timeout,
    };
    let header_timeout = gw.settings.header_read_timeout + HYPER_SLACK;
    let (io, verdicts) = FramingIo::new(io, limits);
    let conn = Arc::new(ConnInfo::new(peer, tls, verdicts.clone()));
    let svc = service_fn(move |req| handle(gw.clone(), conn.clone(), req));
    let fut = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let fut = watcher.watch(fut.into_owned());
    tokio::pin!(fut);
    // hyper's header deadline only starts once the protocol is known, so a
    // client that sends nothing (or part of the HTTP/2 preface) would hold the
    // connection for ever: without a first request in time, it is closed.
    let res = tokio::select! {
        res = &mut fut => res,
        _ = tokio::time::sleep(header_timeout) => {
            if verdicts.requests() == 0 {
                tracing::debug!(%peer, "no request within the header deadline; closing");
                return;
            }
            fut.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
