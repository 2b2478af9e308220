//! Node-level proxy settings (not part of the stored configuration).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings for one proxy listener and its hot-path limits.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// Serve TLS (HTTP/2 and HTTP/1.1 by ALPN) with these PEM files.
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request head (request line plus headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request; more gets 431.
    pub max_headers: usize,
    /// Largest request body in bytes, for every route; larger gets 413. `None` means no gateway-wide limit.
    pub max_body_bytes: Option<u64>,
    /// Time allowed to receive a request head; slower clients are disconnected.
    pub header_read_timeout: Duration,
    /// Longest pause allowed while receiving a request body; longer gets 408.
    pub body_read_timeout: Duration,
    /// Most open client connections; further connections wait in the accept backlog.
    pub max_connections: usize,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

/// Certificate chain and private key, both PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            tls: None,
            trusted_proxies: Vec::new(),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
