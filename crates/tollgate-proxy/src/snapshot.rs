//! Compiling a configuration into an immutable snapshot, and swapping it in.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tollgate_analytics::Recorder;
use tollgate_core::config::{CircuitBreaker, Config, PassiveHealthCheck, RetryBudget};
use tollgate_identity::apikey::Pepper;
use tollgate_identity::authn::Authenticator;
use tollgate_identity::oauth::OAuthServer;
use tollgate_policies::{Chain, PolicyEnv};

use crate::router::Router;
use crate::settings::ProxySettings;
use crate::upstream::{Balancer, Registry, ServiceState};

/// What a matched route leads to.
#[derive(Debug)]
pub struct RouteTarget {
    pub service: usize,
    /// The route's request metrics (kept across reloads by name).
    pub stats: Arc<tollgate_analytics::RouteStats>,
    pub chain: Chain,
    pub strip_path: bool,
    pub preserve_host: bool,
}

/// A service ready to forward to.
#[derive(Debug)]
pub struct ServiceRt {
    pub name: Arc<str>,
    pub balancer: Balancer,
    pub base_path: String,
    pub read_timeout: Duration,
    pub total_timeout: Option<Duration>,
    pub retries: u32,
    pub retry_budget: RetryBudget,
    pub passive: Option<PassiveHealthCheck>,
    pub breaker: Option<CircuitBreaker>,
    pub state: Arc<ServiceState>,
    pub connect_timeout: Duration,
    pub active: Option<tollgate_core::config::ActiveHealthCheck>,
}

/// An immutable, compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The store revision this snapshot was compiled from.
    pub revision: i64,
    pub router: Router<RouteTarget>,
    pub services: Vec<Arc<ServiceRt>>,
}

/// The data plane's shared state: the current snapshot plus everything that
/// must survive a reload (target health, breakers, connection pools).
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    registry: Registry,
    health: Mutex<Option<CancellationToken>>,
    env: PolicyEnv,
    oauth: std::sync::OnceLock<Arc<OAuthServer>>,
    recorder: Arc<Recorder>,
    tracer: tollgate_telemetry::Tracer,
    pub settings: ProxySettings,
}

impl Gateway {
    /// A gateway with its own authenticator under a random pepper: fine for
    /// tests and for configurations without API keys.
    pub fn new(settings: ProxySettings) -> Arc<Gateway> {
        let pepper = Pepper::random().expect("the system's random generator works");
        Gateway::with_authenticator(settings, Authenticator::new(pepper))
    }

    /// A gateway whose `auth` policies use `authn`.
    pub fn with_authenticator(settings: ProxySettings, authn: Arc<Authenticator>) -> Arc<Gateway> {
        Gateway::with_env(settings, PolicyEnv::new(authn))
    }

    /// A gateway whose policies use `env` (credentials, the rate limiter,
    /// plans and subscriptions).
    pub fn with_env(settings: ProxySettings, env: PolicyEnv) -> Arc<Gateway> {
        Gateway::with_recorder(settings, env, Recorder::metrics_only())
    }

    /// A gateway that reports every request to `recorder` (metrics, and the
    /// analytics queue when the recorder has one).
    pub fn with_recorder(
        settings: ProxySettings,
        env: PolicyEnv,
        recorder: Arc<Recorder>,
    ) -> Arc<Gateway> {
        Gateway::with_observers(
            settings,
            env,
            recorder,
            tollgate_telemetry::Tracer::disabled(),
        )
    }

    /// A gateway that counts requests in `recorder` and traces them with
    /// `tracer` (OTLP; [`tollgate_telemetry::Tracer::disabled`] for none).
    pub fn with_observers(
        settings: ProxySettings,
        env: PolicyEnv,
        recorder: Arc<Recorder>,
        tracer: tollgate_telemetry::Tracer,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(Snapshot {
                revision: -1,
                router: Router::new(Vec::new()),
                services: Vec::new(),
            }),
            registry: Registry::default(),
            health: Mutex::new(None),
            env,
            oauth: std::sync::OnceLock::new(),
            recorder,
            tracer,
            settings,
        })
    }

    /// Where request traces go.
    pub fn tracer(&self) -> &tollgate_telemetry::Tracer {
        &self.tracer
    }

    /// Upstream targets' shared state.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where requests are counted.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// The snapshot new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// What the policies share across snapshots.
    pub fn env(&self) -> &PolicyEnv {
        &self.env
    }

    /// The authenticator behind every `auth` policy.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.env.authn
    }

    /// Serves the OAuth2 authorization server's endpoints (`/oauth2/...` and
    /// its metadata) on the proxy listener, ahead of routing. Set once.
    pub fn set_oauth(&self, server: Arc<OAuthServer>) {
        let _ = self.oauth.set(server);
    }

    pub fn oauth(&self) -> Option<&Arc<OAuthServer>> {
        self.oauth.get()
    }

    pub fn revision(&self) -> i64 {
        self.snapshot.load().revision
    }

    /// Compiles `config` and makes it current. Must run inside a Tokio
    /// runtime: active health checkers are restarted for the new snapshot.
    pub fn install(&self, config: &Config, revision: i64) {
        self.env.authn.issuers().install(&config.jwt_issuers);
        self.env.catalog.install_plans(&config.plans);
        let snapshot = self.compile(config, revision);
        let token = CancellationToken::new();
        for svc in &snapshot.services {
            if let Some(active) = &svc.active {
                crate::health::spawn(svc.clone(), active.clone(), token.clone());
            }
        }
        self.snapshot.store(Arc::new(snapshot));
        if let Some(old) = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(token)
        {
            old.cancel();
        }
    }

    /// Stops background health checks.
    pub fn stop(&self) {
        if let Some(t) = self.health.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.cancel();
        }
    }

    fn compile(&self, config: &Config, revision: i64) -> Snapshot {
        let mut services = Vec::with_capacity(config.services.len());
        let mut routes = Vec::new();
        let mut live = HashSet::new();
        for svc in &config.services {
            let (spec, svc_routes, svc_policies) = svc.clone().into_parts();
            let Ok((targets, base_path)) = spec.upstream() else {
                tracing::error!(service = %spec.name, "service has no usable upstream; skipped");
                continue;
            };
            let states: Vec<_> = targets
                .iter()
                .filter_map(|t| {
                    let authority = t.target.parse().ok()?;
                    live.insert((spec.name.clone(), t.target.clone()));
                    Some(
                        self.registry
                            .target(&spec.name, &t.target, authority, t.weight),
                    )
                })
                .collect();
            if spec.health_checks.active.is_none() {
                // No checker will ever clear a "down" left by an earlier
                // configuration's active check.
                for t in &states {
                    t.active_healthy.store(true, Ordering::Relaxed);
                }
            }
            let idx = services.len();
            services.push(Arc::new(ServiceRt {
                name: Arc::from(spec.name.as_str()),
                balancer: Balancer::new(states, spec.load_balancing),
                base_path,
                read_timeout: spec.read_timeout.get(),
                total_timeout: (!spec.timeout.is_zero()).then(|| spec.timeout.get()),
                retries: spec.retries,
                retry_budget: spec.retry_budget.clone(),
                passive: spec.health_checks.passive.clone(),
                breaker: spec.circuit_breaker.clone(),
                state: self.registry.service(&spec.name),
                connect_timeout: spec.connect_timeout.get(),
                active: spec.health_checks.active.clone(),
            }));
            for route in svc_routes {
                let (rspec, rpolicies) = route.into_parts();
                let chain = Chain::compile_named(
                    &config.policies,
                    (&spec.name, &svc_policies),
                    (&rspec.name, &rpolicies),
                    &self.env,
                );
                let target = RouteTarget {
                    service: idx,
                    stats: self.recorder.route(&rspec.name),
                    chain,
                    strip_path: rspec.strip_path,
                    preserve_host: rspec.preserve_host,
                };
                routes.push((rspec, target));
            }
        }
        self.registry.retain(&live);
        Snapshot {
            revision,
            router: Router::new(routes),
            services,
        }
    }
}
