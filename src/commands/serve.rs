//! `mcp-ephemeral serve`: a checked [`ServeConfig`] wired into running parts — the front door
//! (stdio or HTTP), the runtime (and, out of cluster, the gateway to its servers), the owner of
//! the servers' life, and the MCP tools — all on one task tree that shutdown cancels and waits
//! for.

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;

use crate::{
    cli::ServeArgs,
    config::{ConfigError, Front, KubeConfig, RuntimeConfig, ServeConfig, allowed_hosts},
    declarative::{self, ControllerMode},
    gateway,
    http::Guard,
    mcp::{MetaServer, mounts::OwnDoor, transport},
    metrics::Metrics,
    runtime::{
        Runtime,
        kubernetes::{
            KubernetesRuntime, UrlMode, client,
            lease::{self, ElectionTiming, Elector, Leadership},
        },
        local::{LocalConfig, LocalRuntime},
    },
    servers::Servers,
    spec::SpecError,
    tasks::Tasks,
};

/// Why `serve` could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}{what}: {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kubernetes(#[from] client::ConnectError),
    #[error("{0}")]
    Controller(String),
    #[error("--warm-pool: {0}")]
    Pools(#[source] SpecError),
    #[error("{what} transport: {source}")]
    Transport {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The front door, decided and bound once.
enum Door {
    Stdio,
    Http { listener: TcpListener, guard: Guard, public_url: Option<String> },
}

impl Door {
    async fn open(front: Front) -> Result<Door, ServeError> {
        Ok(match front {
            Front::Stdio => Door::Stdio,
            Front::Http { listen, guard, public_url } => {
                let listener = TcpListener::bind(listen).await.map_err(|source| ServeError::Listen {
                    addr: listen,
                    what: "",
                    source,
                })?;
                Door::Http { listener, guard, public_url }
            }
        })
    }

    /// The HTTP door, when a bearer token guards it: mounts through the gateway need the token.
    fn own(&self) -> Option<OwnDoor> {
        let Door::Http { listener, guard, .. } = self else { return None };
        let token = guard.token.clone()?;
        let internal = base_url(listener.local_addr().ok()?);
        Some(OwnDoor { public: self.http_base()?, internal, token })
    }

    /// The base URL of the HTTP listener, when there is one (URLs through the gateway start
    /// with it).
    fn http_base(&self) -> Option<String> {
        match self {
            Door::Http { public_url: Some(url), .. } => Some(url.clone()),
            Door::Http { listener, .. } => listener.local_addr().ok().map(base_url),
            Door::Stdio => None,
        }
    }
}

/// Check the flags, then run the meta server until its client goes away or a signal stops it.
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    run(args.into_config()?).await
}

async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let tasks = Tasks::new();
    // HTTP binds first: out of cluster its address is the gateway's, and URLs name it.
    let door = Door::open(config.front).await?;
    let metrics = Metrics::meta();
    if let Some((addr, guard)) = config.metrics_listen {
        serve_metrics(addr, guard, &metrics, &tasks).await?;
    }
    let controller = match &config.runtime {
        RuntimeConfig::Kubernetes(kube) => kube.controller,
        RuntimeConfig::Local(_) => ControllerMode::Off,
    };
    let leader_election = matches!(&config.runtime, RuntimeConfig::Kubernetes(kube) if kube.leader_election);
    let (runtime, gateway_routes) = match config.runtime {
        RuntimeConfig::Local(cfg) => local_runtime(cfg, door.http_base(), &metrics, &tasks),
        RuntimeConfig::Kubernetes(kube) => kubernetes_runtime(kube, door.http_base(), &metrics, &tasks).await?,
    };
    let kind = runtime.capabilities().kind;
    // Of several replicas one leads (reaper, idle check, pools, controller); alone, it always does.
    let elector = match &runtime {
        Runtime::Kubernetes(k) if leader_election => {
            Some(Elector::start(k.leases(), lease::identity(), ElectionTiming::default(), &tasks))
        }
        _ => None,
    };
    let leadership = elector.as_ref().map_or_else(Leadership::always, |e| e.leadership());
    let servers = Servers::start(config.presets, runtime, config.policy, &config.pools, leadership, &metrics, &tasks)
        .map_err(ServeError::Pools)?;
    if let Err(e) = declarative::start(servers.clone(), controller, &tasks).await {
        tasks.cancel();
        servers.shutdown().await;
        return Err(ServeError::Controller(e));
    }
    let server = MetaServer::new(servers.clone(), door.own(), &tasks);
    super::stop_on_signals(&tasks);
    tracing::info!(runtime = kind.as_str(), "mcp-ephemeral {} starting", env!("CARGO_PKG_VERSION"));
    let served = match door {
        Door::Stdio => transport::serve_stdio(server, &tasks)
            .await
            .map_err(|source| ServeError::Transport { what: "stdio", source }),
        Door::Http { listener, guard, .. } => {
            let routes = metrics.router().merge(gateway_routes.unwrap_or_default());
            transport::serve_http(listener, server, guard, &tasks, Some(routes))
                .await
                .map_err(|source| ServeError::Transport { what: "HTTP", source })
        }
    };
    tasks.cancel();
    if tokio::time::timeout(crate::config::SHUTDOWN_LIMIT, servers.shutdown()).await.is_err() {
        tracing::warn!("stopping the servers took longer than {}s", crate::config::SHUTDOWN_LIMIT.as_secs());
    }
    // The leader's work has stopped: a successor may lead at once.
    if let Some(elector) = &elector {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), elector.release()).await;
    }
    super::finish(&tasks).await;
    served
}

/// The local runtime. With an HTTP listener, servers' URLs go through its gateway (a remote
/// client cannot reach their loopback listeners, and the meta server's token guards them
/// too); returns the gateway routes then.
fn local_runtime(
    mut cfg: LocalConfig,
    http: Option<String>,
    metrics: &Metrics,
    tasks: &Tasks,
) -> (Runtime, Option<Router>) {
    cfg.gateway = http;
    cfg.metrics = metrics.clone();
    let routes_wanted = cfg.gateway.is_some();
    let runtime = Arc::new(LocalRuntime::new(cfg, tasks.child()));
    let routes = routes_wanted.then(|| {
        let pool = gateway::Pool::new(runtime.clone(), tasks.child());
        gateway::router(pool, runtime.waker().clone(), runtime.clone(), metrics)
    });
    (Runtime::Local(runtime), routes)
}

/// Connect to the cluster and decide how callers reach servers: Service DNS names in the
/// cluster; outside, the gateway (on the HTTP listener, or its own loopback listener). Returns
/// the gateway routes when they go on the HTTP listener.
async fn kubernetes_runtime(
    kube: KubeConfig,
    http: Option<String>,
    metrics: &Metrics,
    tasks: &Tasks,
) -> Result<(Runtime, Option<Router>), ServeError> {
    let conn = client::connect(kube.context.as_deref(), kube.namespace.as_deref()).await?;
    tracing::info!(server = %conn.server, namespace = %conn.namespace, in_cluster = conn.in_cluster, "connected to Kubernetes");
    let in_cluster = conn.in_cluster;
    let start = |urls| KubernetesRuntime::start(conn, kube.jobs, kube.network_policy, urls, tasks.child());
    if in_cluster && kube.gateway_listen.is_none() {
        return Ok((Runtime::Kubernetes(start(UrlMode::ServiceDns)), None));
    }
    if let (Some(base), None) = (http, kube.gateway_listen) {
        let runtime = start(UrlMode::Gateway(base));
        let routes = gateway::router(runtime.pool(), runtime.waker().clone(), runtime.clone(), metrics);
        return Ok((Runtime::Kubernetes(runtime), Some(routes)));
    }
    // A listener of its own: bound first, since the servers' URLs carry its address.
    let listen = kube.gateway_listen.unwrap_or(([127, 0, 0, 1], 0).into());
    let listener = TcpListener::bind(listen).await.map_err(|source| ServeError::Listen {
        addr: listen,
        what: " for the gateway",
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: listen, what: "", source })?;
    let base = base_url(addr);
    let runtime = start(UrlMode::Gateway(base.clone()));
    let app = Guard { allowed_hosts: allowed_hosts(listen, &[]), token: None }.apply(gateway::router(
        runtime.pool(),
        runtime.waker().clone(),
        runtime.clone(),
        metrics,
    ));
    tracing::info!(%base, "gateway to spawned servers listening");
    let stop = tasks.token().clone();
    tasks.spawn(async move {
        if let Err(e) = crate::http::serve(listener, app, stop).await {
            tracing::warn!(error = %e, "gateway listener ended");
        }
    });
    Ok((Runtime::Kubernetes(runtime), None))
}

/// `--metrics-listen`: `/metrics` on a listener of its own (bound before anything starts, so
/// a taken port fails the start), behind `guard`.
async fn serve_metrics(addr: SocketAddr, guard: Guard, metrics: &Metrics, tasks: &Tasks) -> Result<(), ServeError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, what: " for /metrics", source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Listen { addr, what: " for /metrics", source })?;
    tracing::info!(addr = %bound, "serving metrics at http://{bound}/metrics");
    let (app, stop) = (guard.apply(metrics.router()), tasks.token().clone());
    tasks.spawn(async move {
        if let Err(e) = crate::http::serve(listener, app, stop).await {
            tracing::warn!(error = %e, "metrics listener ended");
        }
    });
    Ok(())
}

/// `http://ADDR`, with an unspecified IP (0.0.0.0) replaced by loopback.
fn base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { addr.ip() };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}
