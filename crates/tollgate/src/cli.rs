//! Command-line interface. Every setting also reads a `TOLLGATE_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tollgate_core::identity::KeyEnvironment;
use tollgate_core::ids::{AppId, KeyId};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate: an open-source API gateway and API management platform"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: proxy, admin API (and later portal and workers).
    Serve(Box<ServeArgs>),
    /// Replace the stored configuration with a file, atomically.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show what `apply` would change, without changing anything.
    Diff {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the stored configuration as YAML (or JSON).
    Export {
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create or upgrade the store's tables.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Organizations (tenants), written straight to the store.
    Orgs {
        #[command(subcommand)]
        command: OrgsCommand,
    },
    /// An organization's apps.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// An app's API keys. A key's secret is printed once, when it is made.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// An app's OAuth2 clients. A secret is printed once, when it is made.
    OauthClients {
        #[command(subcommand)]
        command: OauthClientsCommand,
    },
    /// The OAuth server's token signing keys.
    SigningKeys {
        #[command(subcommand)]
        command: SigningKeysCommand,
    },
    /// Requests, errors, bytes and latency percentiles per time bucket,
    /// from the analytics roll-ups in the store.
    Analytics(AnalyticsArgs),
    /// The audit log of writes through the admin API, read from the store.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List recorded writes that match the filters, oldest first.
    List {
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// The most entries to show (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Start after this entry id (the `next` a previous list printed).
        #[arg(long)]
        after: Option<String>,
        /// `table` (for people) or `json` (the page, with `next`).
        #[arg(long, value_enum, default_value_t = Output::Table)]
        format: Output,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print recorded writes that match the filters as JSON lines (one
    /// entry per line, oldest first), for a SIEM.
    Export {
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Start after this entry id (the last one a previous export printed).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// The filters of `tollgate audit list` and `export`; every one given must match.
#[derive(Debug, Clone, Args)]
pub struct AuditFilterArgs {
    /// Who wrote, such as `admin_token:0123456789ab`.
    #[arg(long)]
    pub actor: Option<String>,
    /// Such as `service.create` or `key.revoke`.
    #[arg(long)]
    pub action: Option<String>,
    /// Such as `service`, `key` or `config`.
    #[arg(long)]
    pub resource_type: Option<String>,
    /// The resource's id (or name, for JWT issuers and plans).
    #[arg(long)]
    pub resource_id: Option<String>,
    /// The organization: its id (`org_…`, also of a deleted one) or name.
    #[arg(long)]
    pub org: Option<String>,
    /// Entries recorded at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Entries recorded before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// The HTTP status of the write's answer.
    #[arg(long)]
    pub status: Option<u16>,
}

/// `tollgate analytics`.
#[derive(Debug, clap::Args)]
pub struct AnalyticsArgs {
    /// Start: RFC 3339 or unix milliseconds (default: a day before `--to`).
    #[arg(long)]
    pub from: Option<String>,
    /// End, exclusive (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// `minute`, `hour` or `day`.
    #[arg(long, default_value = "hour")]
    pub bucket: String,
    /// Only this organization (id).
    #[arg(long)]
    pub org: Option<String>,
    /// Only this app (id).
    #[arg(long)]
    pub app: Option<String>,
    /// Only this route (name).
    #[arg(long)]
    pub route: Option<String>,
    /// Only this status class (`2xx`, `5xx`...).
    #[arg(long)]
    pub status: Option<String>,
    /// `table` or `json`.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub format: Output,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization; prints it as JSON.
    Create {
        /// Unique slug: lower-case letters, digits and `-`.
        name: String,
        /// Shown to people; default: the name.
        #[arg(long)]
        display_name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List organizations as JSON.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app; prints it as JSON.
    Create {
        /// The organization's id (`org_…`) or name.
        #[arg(long)]
        org: String,
        /// Unique within the organization.
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List an organization's apps as JSON.
    List {
        /// The organization's id (`org_…`) or name.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; prints it with its secret, which is not shown again.
    Create {
        /// The organization's id (`org_…`) or name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        app: AppId,
        /// `live` or `test`.
        #[arg(long = "env", value_name = "ENV", default_value = "live")]
        environment: KeyEnvironment,
        /// A scope the key grants; repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List an app's keys as JSON (never their secrets).
    List {
        /// The organization's id (`org_…`) or name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        app: AppId,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key for good.
    Revoke {
        /// The organization's id (`org_…`) or name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        app: AppId,
        key: KeyId,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Replace a key; the old one keeps working for `--overlap`. Prints the
    /// new key with its secret, which is not shown again.
    Rotate {
        /// The organization's id (`org_…`) or name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        app: AppId,
        key: KeyId,
        /// How long the old key keeps working, such as `24h` (at most `720h`).
        #[arg(long)]
        overlap: tollgate_core::Duration,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum OauthClientsCommand {
    /// Create an OAuth client; prints its client_id and secret, which is
    /// not shown again.
    Create {
        /// The organization's id (`org_…`) or name.
        #[arg(long)]
        org: String,
        #[arg(long)]
        app: AppId,
        #[arg(long)]
        name: String,
        /// A scope the client may request; repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeysCommand {
    /// Start signing with a new key. Older keys stay published until the
    /// tokens they signed have expired.
    Rotate {
        /// Lifetime of issued access tokens, in seconds (as given to `serve`).
        #[arg(long, env = "TOLLGATE_OAUTH_TOKEN_TTL_SECS", default_value_t = 3600)]
        oauth_token_ttl_secs: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file without touching the store.
    Validate { file: PathBuf },
    /// Print the JSON Schema of the configuration file format.
    Schema,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// Where the configuration store is.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the embedded SQLite store.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
    pub data_dir: PathBuf,
    /// A `postgres://` URL switches the store to PostgreSQL.
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Secret mixed into every API key hash (at least 32 bytes). Without it,
    /// one is generated in the data directory (`key-pepper`). Every node of a
    /// cluster needs the same value.
    #[arg(long, env = "TOLLGATE_KEY_PEPPER", hide_env_values = true)]
    pub key_pepper: Option<String>,
}

/// A node role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Gateway,
    Admin,
    Portal,
    Worker,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Apply this configuration file to the store at start.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Roles to run, comma separated.
    #[arg(
        long,
        env = "TOLLGATE_ROLES",
        value_delimiter = ',',
        default_value = "gateway,admin,portal,worker"
    )]
    pub roles: Vec<Role>,
    #[arg(long, env = "TOLLGATE_PROXY_LISTEN", default_value = "0.0.0.0:8000")]
    pub proxy_listen: SocketAddr,
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
    pub admin_listen: SocketAddr,
    #[arg(long, env = "TOLLGATE_PORTAL_LISTEN", default_value = "0.0.0.0:8002")]
    pub portal_listen: SocketAddr,
    /// Redis for shared counters (used by rate limiting).
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Milliseconds a rate-limit decision may wait for Redis before the
    /// route's `on_backend_error` mode applies.
    #[arg(long, env = "TOLLGATE_REDIS_TIMEOUT_MS", default_value_t = 250)]
    pub redis_timeout_ms: u64,
    /// Milliseconds between syncs of rate counts with Redis; 0 (the default)
    /// decides every request on Redis, exactly. With N > 0, GCRA rates are
    /// decided in process and reconciled every N ms: no round trip per
    /// request, and a cluster can go over a limit by about one interval's
    /// traffic per node (docs/rate-limiting.md).
    #[arg(long, env = "TOLLGATE_REDIS_SYNC_MS", default_value_t = 0)]
    pub redis_sync_ms: u64,
    /// Milliseconds between batched writes of in-process quota counts to the store.
    #[arg(long, env = "TOLLGATE_USAGE_FLUSH_MS", default_value_t = 1_000)]
    pub usage_flush_ms: u64,
    /// Admin token to accept (stored hashed). Without it, a first start prints a new one.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Proxy worker threads, each with its own runtime and listener; default: one per core.
    #[arg(long, env = "TOLLGATE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Serve the proxy over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Proxies (CIDRs, comma separated) whose X-Forwarded-* and Forwarded headers are trusted.
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request head in bytes (431 above).
    #[arg(long, env = "TOLLGATE_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Largest request body in bytes for every route (413 above); unlimited when unset.
    #[arg(long, env = "TOLLGATE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Seconds allowed to send a request head.
    #[arg(long, env = "TOLLGATE_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a request body may stall (408 above).
    #[arg(long, env = "TOLLGATE_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Most concurrent client connections.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds to drain in-flight requests on SIGTERM.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Milliseconds between checks of the store for configuration changes.
    #[arg(long, env = "TOLLGATE_POLL_INTERVAL_MS", default_value_t = 250)]
    pub poll_interval_ms: u64,
    /// Issuer URL of the OAuth2 server (its base URL as clients reach it);
    /// default `http://localhost:<proxy port>`.
    #[arg(long, env = "TOLLGATE_OAUTH_ISSUER")]
    pub oauth_issuer: Option<String>,
    /// `aud` of issued access tokens; default the issuer URL.
    #[arg(long, env = "TOLLGATE_OAUTH_AUDIENCE")]
    pub oauth_audience: Option<String>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "TOLLGATE_OAUTH_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub oauth_token_ttl_secs: u64,
    /// Milliseconds between batched writes of API keys' last-used times.
    #[arg(long, env = "TOLLGATE_LAST_USED_FLUSH_MS", default_value_t = 10_000)]
    pub last_used_flush_ms: u64,
    /// Send request traces to this OTLP/HTTP endpoint (for example
    /// `http://127.0.0.1:4318/v1/traces`); unset: no tracing.
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (an incoming sampled
    /// `traceparent` is always followed).
    #[arg(long, env = "TOLLGATE_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
    /// Per-request analytics events and roll-ups (`on` or `off`; request
    /// metrics are kept either way).
    #[arg(long, env = "TOLLGATE_ANALYTICS", value_enum, default_value_t = Switch::On)]
    pub analytics: Switch,
    /// Analytics events each proxy worker's queue holds; more are dropped (and counted).
    #[arg(long, env = "TOLLGATE_ANALYTICS_QUEUE", default_value_t = 16_384)]
    pub analytics_queue: usize,
    /// Milliseconds between writes of analytics roll-ups to the store.
    #[arg(long, env = "TOLLGATE_ANALYTICS_FLUSH_MS", default_value_t = 5_000)]
    pub analytics_flush_ms: u64,
    /// Days of analytics roll-ups kept in the store; 0 keeps them forever.
    #[arg(long, env = "TOLLGATE_ANALYTICS_RETENTION_DAYS", default_value_t = 30)]
    pub analytics_retention_days: u32,
    /// Also write every raw event as a JSON line to this file (rotated by size).
    #[arg(long, env = "TOLLGATE_ANALYTICS_EVENTS_FILE")]
    pub analytics_events_file: Option<PathBuf>,
    /// Size in MiB at which the raw event file is rotated.
    #[arg(long, env = "TOLLGATE_ANALYTICS_EVENTS_MAX_MB", default_value_t = 100)]
    pub analytics_events_max_mb: u64,
    /// Rotated raw event files kept.
    #[arg(long, env = "TOLLGATE_ANALYTICS_EVENTS_KEEP", default_value_t = 5)]
    pub analytics_events_keep: u32,
    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
