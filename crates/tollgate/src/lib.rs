//! The `tollgate` binary's wiring: it opens the store, starts the roles a
//! node runs (gateway, admin; portal and worker as they arrive), keeps the
//! gateway's snapshot in step with the store, and shuts down gracefully. The
//! crates below do the work; this one only connects them.

pub mod analytics;
pub mod cli;
mod commands;
pub mod identity;
pub mod telemetry;
pub mod traffic;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_admin::{AdminState, NodeStatus};
use tollgate_core::config::Config;
use tollgate_identity::authn::Authenticator;
use tollgate_identity::oauth::{OAuthServer, OAuthSettings};
use tollgate_proxy::settings::TlsFiles;
use tollgate_proxy::{Gateway, Listener, ProxySettings};
use tollgate_store::Store;

pub use cli::{Cli, Command, Role, ServeArgs, StoreArgs};
pub use commands::run_command;

/// Opens the store named by the settings: PostgreSQL when a URL is given,
/// else SQLite in the data directory.
pub async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    match &args.database_url {
        Some(url) => Store::connect(url)
            .await
            .with_context(|| format!("cannot open the store at {}", redact(url))),
        None => Store::open_data_dir(&args.data_dir)
            .await
            .with_context(|| format!("cannot open the store in {}", args.data_dir.display())),
    }
}

/// Hides the password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// How long shutdown waits for the last analytics roll-ups to be written.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// A running node.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    pub status: Arc<NodeStatus>,
    pub store: Store,
    pub shutdown: CancellationToken,
    /// Request metrics and the analytics pipeline.
    pub analytics: analytics::Analytics,
    /// A new admin token, when this start created one.
    pub new_admin_token: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every role has stopped (after `shutdown` is cancelled),
    /// then writes the analytics still in memory.
    pub async fn wait(self) {
        let recorder = self.analytics.recorder.clone();
        for t in self.tasks {
            let _ = t.await;
        }
        self.gateway.stop();
        // Requests are over: write what the roll-up holds.
        if tokio::time::timeout(FINAL_FLUSH, recorder.flush())
            .await
            .is_err()
        {
            tracing::warn!("analytics roll-ups not written within {FINAL_FLUSH:?} of shutdown");
        }
        // Bounded by the tracer's own shutdown timeout.
        self.gateway.tracer().shutdown().await;
    }
}

fn proxy_settings(args: &ServeArgs) -> ProxySettings {
    ProxySettings {
        listen: args.proxy_listen,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        trusted_proxies: args.trusted_proxies.clone(),
        max_header_bytes: args.max_header_bytes,
        max_body_bytes: args.max_body_bytes,
        header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_read_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        max_connections: args.max_connections.max(1),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        ..ProxySettings::default()
    }
}

/// Makes sure at least one admin token is accepted. Returns a new token when
/// one had to be created.
async fn bootstrap_admin_token(
    store: &Store,
    given: Option<&str>,
) -> anyhow::Result<Option<String>> {
    use tollgate_admin::auth::{generate_token, hash_token};
    if let Some(token) = given {
        anyhow::ensure!(
            token.len() >= 16,
            "TOLLGATE_ADMIN_TOKEN must be at least 16 characters"
        );
        let hash = hash_token(token);
        if !store.admin_token_exists(&hash).await? {
            store
                .add_admin_token(&hash, "from TOLLGATE_ADMIN_TOKEN")
                .await?;
        }
        return Ok(None);
    }
    if store.admin_token_count().await? > 0 {
        return Ok(None);
    }
    let token = generate_token();
    store
        .add_admin_token(&hash_token(&token), "created at first start")
        .await?;
    Ok(Some(token))
}

/// Proxy worker threads: `--worker-threads`, or one per core.
fn proxy_workers(args: &ServeArgs) -> usize {
    args.worker_threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

/// Runs one more proxy worker on its own thread and current-thread runtime.
/// Returns once its listener is bound; the task ends when the worker stops.
async fn spawn_proxy_worker(
    worker: usize,
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut settings = gateway.settings.clone();
    settings.listen = addr;
    std::thread::Builder::new()
        .name(format!("tollgate-proxy-{worker}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = bound_tx.send(Err(anyhow::anyhow!(
                        "cannot start proxy worker {worker}: {e}"
                    )));
                    return;
                }
            };
            rt.block_on(async move {
                match Listener::bind(&settings).await {
                    Ok(listener) => {
                        let _ = bound_tx.send(Ok(()));
                        tollgate_proxy::serve(listener, gateway, shutdown).await;
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e.into()));
                    }
                }
            });
            drop(done_tx);
        })
        .with_context(|| format!("cannot start proxy worker {worker}"))?;
    bound_rx
        .await
        .context("proxy worker stopped before listening")??;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}

/// Starts a node with these settings. Returns once every listener is bound.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    let store = open_store(&args.store).await?;
    if let Some(file) = &args.config {
        let config = Config::from_file(file)?;
        let changes = store
            .apply(&config)
            .await
            .with_context(|| format!("cannot apply {}", file.display()))?;
        tracing::info!(file = %file.display(), changes = changes.changes.len(), "configuration file applied");
    }
    let new_admin_token = bootstrap_admin_token(&store, args.admin_token.as_deref()).await?;
    let pepper = identity::pepper(&args.store, &store).await?;
    identity::ensure_signing_key(&store)
        .await
        .context("cannot prepare the OAuth signing key")?;
    let authn = Authenticator::new(pepper.clone());
    let token_ttl = Duration::from_secs(args.oauth_token_ttl_secs.max(1));

    let limiter = traffic::limiter(&args)?;
    traffic::seed_quotas(&store, &limiter)
        .await
        .context("cannot load this month's quota counts")?;
    let catalog = tollgate_limits::Catalog::new();
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let analytics = analytics::start(&args, &store, &shutdown, &mut tasks)?;
    let tracer = telemetry::tracer(&args)?;
    let gateway = Gateway::with_observers(
        proxy_settings(&args),
        tollgate_policies::PolicyEnv {
            authn: authn.clone(),
            limiter: limiter.clone(),
            catalog: catalog.clone(),
        },
        analytics.recorder.clone(),
        tracer.clone(),
    );
    let status = Arc::new(NodeStatus::default());
    let (revision, config) = store
        .export()
        .await
        .context("cannot load the configuration")?;
    gateway.install(&config, revision);
    status.store_reachable(revision);

    tasks.push(tokio::spawn(watch::run(
        store.clone(),
        gateway.clone(),
        status.clone(),
        Duration::from_millis(args.poll_interval_ms.max(10)),
        shutdown.clone(),
    )));

    let mut proxy_addr = None;
    if args.roles.contains(&Role::Gateway) {
        // Worker 0 is this (current-thread) runtime; workers 1..N get a thread
        // and a runtime each, with their own SO_REUSEPORT listener.
        let listener = Listener::bind(&gateway.settings).await?;
        let addr = listener.local_addr()?;
        proxy_addr = Some(addr);
        let issuer = args
            .oauth_issuer
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{}", addr.port()));
        let audience = args
            .oauth_audience
            .clone()
            .unwrap_or_else(|| issuer.clone());
        gateway.set_oauth(OAuthServer::new(
            OAuthSettings {
                issuer,
                audience,
                token_ttl,
            },
            authn.clone(),
            Arc::new(identity::StoreRevoker(store.clone())),
        ));
        tasks.push(tokio::spawn(tollgate_proxy::serve(
            listener,
            gateway.clone(),
            shutdown.clone(),
        )));
        for worker in 1..proxy_workers(&args) {
            tasks.push(spawn_proxy_worker(worker, addr, gateway.clone(), shutdown.clone()).await?);
        }
    }
    // Credentials are in memory before the first request is served.
    let sync = identity::IdentitySync {
        store: store.clone(),
        authn: authn.clone(),
        oauth: gateway.oauth().cloned(),
        catalog,
        token_ttl,
    };
    let seq = sync
        .load()
        .await
        .context("cannot load API keys and OAuth clients")?;
    tasks.push(tokio::spawn(sync.run(
        seq,
        Duration::from_millis(args.poll_interval_ms.max(10)),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(identity::flush_last_used(
        store.clone(),
        authn.clone(),
        Duration::from_millis(args.last_used_flush_ms.max(10)),
        shutdown.clone(),
    )));

    if let Some(every) = limiter.sync_every() {
        tasks.push(tokio::spawn(traffic::sync_limits(
            limiter.clone(),
            every,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(traffic::flush_quotas(
        store.clone(),
        limiter.clone(),
        Duration::from_millis(args.usage_flush_ms.max(10)),
        shutdown.clone(),
    )));

    let mut admin_addr = None;
    if args.roles.contains(&Role::Admin) {
        let listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
        admin_addr = Some(listener.local_addr()?);
        let app = tollgate_admin::router(AdminState {
            store: store.clone(),
            status: status.clone(),
            pepper: pepper.clone(),
            token_ttl,
            usage: Some(Arc::new(traffic::LimiterUsage(limiter.clone()))),
            metrics: vec![
                gateway.clone(),
                limiter.clone(),
                analytics.writer.clone(),
                Arc::new(telemetry::TracerMetrics(tracer)),
            ],
        });
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            // The peer address is the client IP of the audit log.
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin listener failed");
            }
        }));
    }
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        status,
        store,
        shutdown,
        analytics,
        new_admin_token,
        tasks,
    })
}
