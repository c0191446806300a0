//! The local runtime: each server is a [`Bridge`] in this process, listening on
//! `127.0.0.1:<free port>`, whose children are processes on this machine in their own process
//! groups. A stopped server runs no process, but its listener stays open: a request to it wakes
//! the server (through the owner's [`Waker`]) and is answered once it is ready. Everything dies with the meta server: [`Runtime::shutdown`] ends every group, and
//! `PR_SET_PDEATHSIG` covers a meta server that is killed outright.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use axum::{
    Router,
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{
    DeletePhase, Deleted, Idleness, Phase, ProgressFn, ProgressStep, Reason, RuntimeError, ServerInfo, StopReason,
    Urls,
    startup::{StartStep, Startup},
    wake::{self, WakeError, Waker},
};
use crate::{
    bridge::{
        Activity, Bridge, BridgeConfig, BridgeStatus, ChildCommand, Inherit, Readiness, catalog::Catalog,
        engine::logs::LogRing,
    },
    gateway::{Dialer, GatewayError, Key, Keys},
    http::{
        Guard, Stream,
        capability::{self, Admit, Capability},
    },
    metrics::Metrics,
    spec::{LabelSelector, ServerSpec, Source, SpecError},
    tasks::Tasks,
};

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub(crate) struct LocalConfig {
    /// How long a server may take to answer `initialize`.
    pub(crate) init_timeout: Duration,
    /// Children kept started ahead of sessions, per server.
    pub(crate) spares: usize,
    /// The meta server's variables passed on to children besides the kept ones
    /// (`--pass-env`).
    pub(crate) pass_env: Vec<String>,
    /// The meta server's gateway (`http://HOST:PORT`), when servers' URLs go through it (HTTP
    /// transport: a remote client cannot reach 127.0.0.1); `None`: URLs name the servers'
    /// own loopback listeners.
    pub(crate) gateway: Option<String>,
    /// Where the servers' in-process bridges count their sessions, calls and child exits.
    pub(crate) metrics: Metrics,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            init_timeout: Duration::from_secs(120),
            spares: 1,
            pass_env: Vec::new(),
            gateway: None,
            metrics: Metrics::default(),
        }
    }
}

/// A server: its listener (which never closes until it is deleted) and what runs behind it.
struct LocalServer {
    /// Replaced when a warm-pool member is handed out.
    spec: RwLock<ServerSpec>,
    addr: SocketAddr,
    /// The bridge's settings, to start it again after a stop.
    bridge_cfg: BridgeConfig,
    /// Its MCP traffic, across stops and starts.
    activity: Arc<Activity>,
    run: RwLock<Run>,
    /// This server's branch of the task tree: its listener and its bridges' tasks.
    tasks: Tasks,
}

/// What runs behind a server's listener.
enum Run {
    Up {
        bridge: Bridge,
        /// The bridge's routes, built once.
        router: Router,
        /// The bridge's branch of the server's tasks.
        tasks: Tasks,
    },
    /// No process runs; the output of the last run is kept for get_mcp_server_logs.
    Stopped { reason: StopReason, logs: Arc<LogRing> },
}

impl LocalServer {
    fn name(&self) -> String {
        self.spec.read().expect("spec poisoned").identity.name.clone()
    }

    /// The token its URLs carry.
    fn capability(&self) -> Option<Capability> {
        self.spec.read().expect("spec poisoned").identity.capability.clone()
    }

    /// Start a bridge behind the listener.
    fn launch(&self) -> Run {
        let tasks = self.tasks.child();
        let cfg = BridgeConfig { activity: self.activity.clone(), ..self.bridge_cfg.clone() };
        let bridge = Bridge::start(cfg, &tasks);
        let router = bridge.router();
        Run::Up { bridge, router, tasks }
    }

    fn bridge(&self) -> Option<Bridge> {
        match &*self.run.read().expect("run poisoned") {
            Run::Up { bridge, .. } => Some(bridge.clone()),
            Run::Stopped { .. } => None,
        }
    }

    fn router(&self) -> Option<Router> {
        match &*self.run.read().expect("run poisoned") {
            Run::Up { router, .. } => Some(router.clone()),
            Run::Stopped { .. } => None,
        }
    }

    /// Stop the listener and every process of the server.
    async fn end(&self) {
        self.tasks.cancel();
        if let Some(bridge) = self.bridge() {
            bridge.shutdown().await;
        }
    }
}

/// The listener's one handler. MCP paths answer only under the server's token (`/<token>/mcp`;
/// anything else is a 404); the probes stay open. Behind the token: the bridge's routes while it
/// runs; while stopped, a request to `/mcp`, `/sse` or `/messages` wakes the server and is
/// answered once it is ready.
async fn door(server: Weak<LocalServer>, waker: Waker, mut req: Request) -> Response {
    use tower::ServiceExt;
    let Some(server) = server.upgrade() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let token = server.capability();
    let path = match capability::admit(token.as_ref(), req.uri().path()) {
        Admit::Refused => return capability::refused(),
        Admit::Open => req.uri().path().to_string(),
        Admit::Inner(path) => path.to_string(),
    };
    if let Some(uri) = capability::with_path(req.uri(), &path) {
        *req.uri_mut() = uri;
    }
    if let Some(router) = server.router() {
        return router.oneshot(req).await.into_response();
    }
    match path.as_str() {
        "/healthz" => return "ok".into_response(),
        "/readyz" => return (StatusCode::SERVICE_UNAVAILABLE, "stopped").into_response(),
        "/status" => return axum::Json(BridgeStatus::stopped(&server.activity)).into_response(),
        "/mcp" | "/sse" | "/messages" | "/message" => {}
        _ => return StatusCode::NOT_FOUND.into_response(),
    }
    let name = server.name();
    if !wake::opens_session(&path, req.headers()) {
        return wake::session_ended(&name);
    }
    tracing::info!(server = %name, path, "request to a stopped server; starting it");
    let woken = waker.wake(&name).await;
    match (woken, server.router()) {
        (Ok(()), Some(router)) => router.oneshot(req).await.into_response(),
        (Ok(()), None) => {
            let e = WakeError::Unavailable("it was stopped again while starting".into());
            wake::failed(req.method(), &name, &e)
        }
        (Err(e), _) => {
            tracing::warn!(server = %name, error = %e, "wake on request failed");
            wake::failed(req.method(), &name, &e)
        }
    }
}

pub(crate) struct LocalRuntime {
    cfg: LocalConfig,
    servers: RwLock<BTreeMap<String, Arc<LocalServer>>>,
    tasks: Tasks,
    waker: Waker,
}

impl LocalRuntime {
    /// A runtime whose servers are branches of `tasks`.
    pub(crate) fn new(cfg: LocalConfig, tasks: Tasks) -> LocalRuntime {
        LocalRuntime { cfg, servers: RwLock::default(), tasks, waker: Waker::default() }
    }

    /// How its servers' listeners ask for a stopped server to be started.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    fn info(&self, server: &LocalServer) -> ServerInfo {
        describe(server, self.cfg.gateway.as_deref())
    }

    fn get(&self, name: &str) -> Result<Arc<LocalServer>, RuntimeError> {
        self.servers
            .read()
            .expect("servers poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(name.to_string()))
    }

    pub(super) async fn create(&self, spec: ServerSpec) -> Result<ServerInfo, RuntimeError> {
        if self.tasks.is_cancelled() {
            return Err(RuntimeError::ShuttingDown);
        }
        let argv = match &spec.launch.source {
            Source::Command { argv } => argv.clone(),
            Source::Image { .. } => return Err(RuntimeError::Unsupported(SpecError::ImageNeedsKubernetes.to_string())),
        };
        find_program(&argv[0])?;
        let name = spec.identity.name.clone();
        let io_error = |source| RuntimeError::Io { what: format!("cannot open a local port for `{name}`"), source };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(io_error)?;
        let addr = listener.local_addr().map_err(io_error)?;
        let launch = &spec.launch;
        let env = launch.env.iter().chain(&launch.secret_env).map(|(k, v)| (k.clone(), v.clone())).collect();
        let inherit = Inherit::Minimal { pass: self.cfg.pass_env.clone() };
        let mut bridge_cfg = BridgeConfig::new(ChildCommand { argv, env, inherit });
        bridge_cfg.init_timeout = self.cfg.init_timeout;
        bridge_cfg.spares = self.cfg.spares;
        bridge_cfg.metrics = self.cfg.metrics.clone();
        tracing::info!(server = %name, %addr, command = ?spec.launch.command_line(), "server started");
        let tasks = self.tasks.child();
        let server = Arc::new_cyclic(|weak: &Weak<LocalServer>| {
            let server = LocalServer {
                spec: RwLock::new(spec),
                addr,
                bridge_cfg,
                activity: Arc::default(),
                run: RwLock::new(Run::Stopped { reason: StopReason::StoppedByRequest, logs: Arc::default() }),
                tasks,
            };
            let (weak, waker) = (weak.clone(), self.waker.clone());
            let doors = Router::new().fallback(move |req: Request| door(weak.clone(), waker.clone(), req));
            let guard = Guard { allowed_hosts: Some(Guard::loopback_hosts()), token: None };
            let app = guard.apply(doors);
            let stop = server.tasks.token().clone();
            let label = name.clone();
            server.tasks.spawn(async move {
                if let Err(e) = crate::http::serve(listener, app, stop).await {
                    tracing::warn!(server = %label, error = %e, "listener ended");
                }
            });
            server
        });
        *server.run.write().expect("run poisoned") = server.launch();
        let info = self.info(&server);
        self.servers.write().expect("servers poisoned").insert(name, server);
        Ok(info)
    }
}

/// Check that `program` can be started, so a typo fails the create call instead of the server.
fn find_program(program: &str) -> Result<PathBuf, RuntimeError> {
    let missing = |why: String| RuntimeError::Program { program: program.to_string(), why };
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if executable(&path) { Ok(path) } else { Err(missing("no such executable file".into())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| executable(p)).ok_or_else(|| {
        let hint = match program {
            "uvx" | "uv" => " Install uv (`pip install uv`, or see docs.astral.sh/uv).",
            "npx" | "npm" | "node" => " Install Node.js and npm.",
            _ => "",
        };
        missing(format!("it is not on PATH ({}).{hint}", path.to_string_lossy()))
    })
}

/// A server's URLs: through the meta server's gateway when there is one, else its own
/// listener; under its token when it has one.
fn urls(server: &LocalServer, gateway: Option<&str>) -> Urls {
    let mut base = match gateway {
        Some(gw) => format!("{}/servers/{}", gw.trim_end_matches('/'), server.name()),
        None => format!("http://{}", server.addr),
    };
    if let Some(token) = server.capability() {
        base = format!("{base}/{}", token.expose());
    }
    Urls { mcp: format!("{base}/mcp"), sse: format!("{base}/sse") }
}

fn describe(server: &LocalServer, gateway: Option<&str>) -> ServerInfo {
    let urls = urls(server, gateway);
    let mut info = ServerInfo::from_spec(&server.spec.read().expect("spec poisoned"), Phase::Starting, urls);
    info.last_activity = Some(server.activity.last());
    let bridge = match &*server.run.read().expect("run poisoned") {
        Run::Up { bridge, .. } => bridge.clone(),
        Run::Stopped { reason, .. } => {
            info.set_phase(Phase::Stopped, reason.reason(), reason.message());
            info.sessions = Some(0);
            return info;
        }
    };
    info.sessions = Some(bridge.session_count());
    match bridge.readiness() {
        Readiness::Starting => info.set_phase(
            Phase::Starting,
            Reason::WaitingForInitialize,
            "the process is starting; it becomes Ready when it answers initialize",
        ),
        Readiness::Ready(report) => {
            info.phase = Phase::Ready;
            info.tools = Some(report.tools);
            info.ready_after_ms = Some(report.ready_after.as_millis() as u64);
        }
        Readiness::Failed(failure) => {
            info.set_phase(Phase::Failed, failure.reason.into(), failure.message);
            info.exit_code = failure.exit.and_then(|e| e.code);
            info.log_tail = Some(failure.stderr_tail);
        }
    }
    info
}

impl LocalRuntime {
    pub(super) async fn wait_ready(
        &self,
        name: &str,
        timeout: Duration,
        progress: Option<ProgressFn>,
    ) -> Result<ServerInfo, RuntimeError> {
        let server = self.get(name)?;
        let Some(bridge) = server.bridge() else {
            return Err(RuntimeError::NotReady { name: name.to_string(), phase: Phase::Stopped });
        };
        let report = |step, message: &str| {
            if let Some(p) = &progress {
                p(ProgressStep { step, total: 2, message: message.to_string() });
            }
        };
        report(1, "process started; waiting for initialize");
        let mut startup = Startup::new();
        bridge.wait_ready(timeout).await;
        let mut info = self.info(&server);
        match info.phase {
            Phase::Ready => {
                startup.mark(StartStep::InitializeAnswered);
                info.startup = startup.finish();
                report(2, "initialize answered; ready");
                Ok(info)
            }
            Phase::Failed => Err(RuntimeError::Failed {
                name: name.to_string(),
                reason: info.reason.unwrap_or(Reason::StartFailed),
                message: info.message.unwrap_or_default(),
            }),
            phase => Err(RuntimeError::NotReadyInTime { name: name.to_string(), waited: timeout, phase }),
        }
    }

    pub(super) fn status(&self, name: &str) -> Result<ServerInfo, RuntimeError> {
        Ok(self.info(self.get(name)?.as_ref()))
    }

    pub(super) fn list(&self, selector: &LabelSelector) -> Vec<ServerInfo> {
        let servers: Vec<_> = self.servers.read().expect("servers poisoned").values().cloned().collect();
        let mut infos: Vec<ServerInfo> = servers
            .iter()
            .map(|s| self.info(s))
            .filter(|i| {
                let hidden = [super::LABEL_POOL, super::LABEL_THROWAWAY, super::LABEL_WARM]
                    .iter()
                    .any(|l| i.labels.contains_key(*l));
                !hidden && selector.matches(&i.labels)
            })
            .collect();
        infos.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.job_name.cmp(&b.job_name)));
        infos
    }

    pub(super) async fn delete(&self, name: &str, wait: bool) -> Deleted {
        let server = self.servers.write().expect("servers poisoned").remove(name);
        let Some(server) = server else {
            return Deleted::already_gone(name);
        };
        let sessions = server.bridge().map_or(0, |b| b.session_count());
        let removed =
            vec![format!("listener {}", server.addr), format!("{sessions} session process(es) and the spare")];
        let label = name.to_string();
        let stop = async move {
            server.end().await;
            tracing::info!(server = %label, "server deleted");
        };
        let phase = if wait {
            stop.await;
            DeletePhase::Deleted
        } else {
            self.tasks.spawn(stop);
            DeletePhase::Terminating
        };
        Deleted { job_name: name.to_string(), phase, removed, already_gone: false }
    }

    pub(super) fn adopt(&self, pooled: &str, spec: ServerSpec) -> Result<ServerInfo, RuntimeError> {
        let server = self.servers.write().expect("servers poisoned").remove(pooled);
        let server = server.ok_or_else(|| RuntimeError::NotFound(pooled.to_string()))?;
        if !server.bridge().is_some_and(|b| matches!(b.readiness(), Readiness::Ready(_))) {
            self.tasks.spawn(async move { server.end().await });
            return Err(RuntimeError::Failed {
                name: pooled.to_string(),
                reason: Reason::PoolMemberNotReady,
                message: "the warm-pool member stopped being ready".into(),
            });
        }
        let name = spec.identity.name.clone();
        *server.spec.write().expect("spec poisoned") = spec;
        // Its idle time counts from the hand-out, not from when the pool started it.
        server.activity.touch();
        let info = self.info(&server);
        self.servers.write().expect("servers poisoned").insert(name.clone(), server);
        tracing::info!(server = %name, pooled, "warm-pool member handed out");
        Ok(info)
    }

    pub(super) fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        let server = self.get(name)?;
        let run = server.run.read().expect("run poisoned");
        Ok(match &*run {
            Run::Up { bridge, .. } => bridge.logs().tail(tail),
            Run::Stopped { logs, .. } => logs.tail(tail),
        })
    }

    /// What Ready server `name` offers: its tools with their schemas, prompts and resources.
    pub(super) fn catalog(&self, name: &str) -> Result<Catalog, RuntimeError> {
        let server = self.get(name)?;
        match server.bridge().map(|b| b.readiness()) {
            Some(Readiness::Ready(report)) => Ok(report.catalog),
            _ => Err(RuntimeError::NotReady { name: name.to_string(), phase: self.info(&server).phase }),
        }
    }

    /// Stop `name`'s processes; its listener stays (a request to it wakes the server). A
    /// stopped server keeps the reason it was first stopped for.
    pub(super) async fn stop(&self, name: &str, reason: StopReason) -> Result<ServerInfo, RuntimeError> {
        let server = self.get(name)?;
        let was = {
            let mut run = server.run.write().expect("run poisoned");
            let timeout = server.spec.read().expect("spec poisoned").identity.idle_timeout;
            // A request that came in since the idle check looked keeps it up.
            let busy = reason == StopReason::IdleTimeout && timeout.is_none_or(|t| server.activity.idle_for() < t);
            match &*run {
                Run::Stopped { .. } => None,
                Run::Up { .. } if busy => None,
                Run::Up { bridge, .. } => {
                    let logs = bridge.logs().clone();
                    Some(std::mem::replace(&mut *run, Run::Stopped { reason, logs }))
                }
            }
        };
        if let Some(Run::Up { bridge, tasks, .. }) = was {
            bridge.shutdown().await;
            tasks.cancel();
            tracing::info!(server = name, reason = %reason.reason(), "server stopped (its listener stays)");
        }
        Ok(self.info(&server))
    }

    /// Start a stopped server's processes again behind the same listener (a no-op for one
    /// that runs).
    pub(super) fn resume(&self, name: &str) -> Result<ServerInfo, RuntimeError> {
        if self.tasks.is_cancelled() {
            return Err(RuntimeError::ShuttingDown);
        }
        let server = self.get(name)?;
        {
            let mut run = server.run.write().expect("run poisoned");
            if matches!(*run, Run::Stopped { .. }) {
                *run = server.launch();
                tracing::info!(server = name, "server started again");
            }
        }
        Ok(self.info(&server))
    }

    /// Running servers with an idle timeout, and how long each has been idle (zero for one
    /// that is not Ready yet: it cannot be idle before it could be used).
    pub(super) fn idleness(&self) -> Vec<Idleness> {
        let servers: Vec<_> = self.servers.read().expect("servers poisoned").values().cloned().collect();
        servers
            .iter()
            .filter_map(|s| {
                let timeout = s.spec.read().expect("spec poisoned").identity.idle_timeout?;
                let ready = matches!(s.bridge()?.readiness(), Readiness::Ready(_));
                let idle_for = if ready { s.activity.idle_for() } else { Duration::ZERO };
                Some(Idleness { name: s.name(), timeout, idle_for })
            })
            .collect()
    }

    /// End every server and wait for their processes.
    pub(super) async fn shutdown(&self) {
        self.tasks.cancel();
        let servers: Vec<_> =
            std::mem::take(&mut *self.servers.write().expect("servers poisoned")).into_values().collect();
        if !servers.is_empty() {
            tracing::info!(count = servers.len(), "stopping every server");
        }
        futures::future::join_all(servers.iter().map(|s| s.end())).await;
    }
}

/// The gateway reaches a local server at its own listener (the listener checks the token and
/// wakes a stopped server itself).
impl Dialer for LocalRuntime {
    fn dial<'a>(&'a self, job: &'a str) -> futures::future::BoxFuture<'a, Result<Box<dyn Stream>, GatewayError>> {
        Box::pin(async move {
            let addr = self.get(job).map_err(|_| GatewayError::NotFound(job.to_string()))?.addr;
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| GatewayError::Tunnel { job: job.to_string(), why: Box::new(e) })?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as Box<dyn Stream>)
        })
    }
}

impl Keys for LocalRuntime {
    fn key<'a>(&'a self, job: &'a str) -> futures::future::BoxFuture<'a, Option<Key>> {
        let key = self.get(job).ok().map(|s| s.capability().map_or(Key::Open, Key::Token));
        Box::pin(async move { key })
    }
}
