//! The local runtime: each server is a [`Bridge`] in this process, listening on
//! `127.0.0.1:<free port>`, whose children are processes on this machine in their own process
//! groups. Everything dies with the meta server: [`Runtime::shutdown`] ends every group, and
//! `PR_SET_PDEATHSIG` covers a meta server that is killed outright.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use super::{
    DeletePhase, Deleted, Phase, ProgressFn, ProgressStep, Reason, RuntimeError, ServerInfo, Urls,
    startup::{StartStep, Startup},
};
use crate::{
    bridge::{Bridge, BridgeConfig, ChildCommand, Readiness},
    http::Guard,
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
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig { init_timeout: Duration::from_secs(120), spares: 1 }
    }
}

struct LocalServer {
    /// Replaced when a warm-pool member is handed out.
    spec: RwLock<ServerSpec>,
    bridge: Bridge,
    addr: SocketAddr,
    /// This server's branch of the task tree: its listener and its bridge's tasks.
    tasks: Tasks,
}

impl LocalServer {
    /// Stop the listener and every process of the server.
    async fn stop(&self) {
        self.tasks.cancel();
        self.bridge.shutdown().await;
    }
}

pub(crate) struct LocalRuntime {
    cfg: LocalConfig,
    servers: RwLock<BTreeMap<String, Arc<LocalServer>>>,
    tasks: Tasks,
}

impl LocalRuntime {
    /// A runtime whose servers are branches of `tasks`.
    pub(crate) fn new(cfg: LocalConfig, tasks: Tasks) -> LocalRuntime {
        LocalRuntime { cfg, servers: RwLock::default(), tasks }
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
        let mut cfg = BridgeConfig::new(ChildCommand { argv, env });
        cfg.init_timeout = self.cfg.init_timeout;
        cfg.spares = self.cfg.spares;
        let tasks = self.tasks.child();
        let bridge = Bridge::start(cfg, &tasks);
        let guard = Guard { allowed_hosts: Some(Guard::loopback_hosts()), token: None };
        let app = guard.apply(bridge.router());
        let stop = tasks.token().clone();
        let label = name.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(listener, app, stop).await {
                tracing::warn!(server = %label, error = %e, "listener ended");
            }
        });
        tracing::info!(server = %name, %addr, command = ?spec.launch.command_line(), "server started");
        let server = Arc::new(LocalServer { spec: RwLock::new(spec), bridge, addr, tasks });
        let info = info(&server);
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

fn info(server: &LocalServer) -> ServerInfo {
    let base = format!("http://{}", server.addr);
    let urls = Urls { mcp: format!("{base}/mcp"), sse: format!("{base}/sse") };
    let mut info = ServerInfo::from_spec(&server.spec.read().expect("spec poisoned"), Phase::Starting, urls);
    info.sessions = Some(server.bridge.session_count());
    match server.bridge.readiness() {
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
        let report = |step, message: &str| {
            if let Some(p) = &progress {
                p(ProgressStep { step, total: 2, message: message.to_string() });
            }
        };
        report(1, "process started; waiting for initialize");
        let mut startup = Startup::new();
        server.bridge.wait_ready(timeout).await;
        let mut info = info(&server);
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
        Ok(info(self.get(name)?.as_ref()))
    }

    pub(super) fn list(&self, selector: &LabelSelector) -> Vec<ServerInfo> {
        let servers: Vec<_> = self.servers.read().expect("servers poisoned").values().cloned().collect();
        let mut infos: Vec<ServerInfo> = servers
            .iter()
            .map(|s| info(s))
            .filter(|i| !i.labels.contains_key(super::LABEL_POOL) && selector.matches(&i.labels))
            .collect();
        infos.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.job_name.cmp(&b.job_name)));
        infos
    }

    pub(super) async fn delete(&self, name: &str, wait: bool) -> Deleted {
        let server = self.servers.write().expect("servers poisoned").remove(name);
        let Some(server) = server else {
            return Deleted::already_gone(name);
        };
        let removed = vec![
            format!("listener {}", server.addr),
            format!("{} session process(es) and the spare", server.bridge.session_count()),
        ];
        let label = name.to_string();
        let stop = async move {
            server.stop().await;
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
        if !matches!(server.bridge.readiness(), Readiness::Ready(_)) {
            self.tasks.spawn(async move { server.stop().await });
            return Err(RuntimeError::Failed {
                name: pooled.to_string(),
                reason: Reason::PoolMemberNotReady,
                message: "the warm-pool member stopped being ready".into(),
            });
        }
        let name = spec.identity.name.clone();
        *server.spec.write().expect("spec poisoned") = spec;
        let info = info(&server);
        self.servers.write().expect("servers poisoned").insert(name.clone(), server);
        tracing::info!(server = %name, pooled, "warm-pool member handed out");
        Ok(info)
    }

    pub(super) fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        Ok(self.get(name)?.bridge.logs().tail(tail))
    }

    /// End every server and wait for their processes.
    pub(super) async fn shutdown(&self) {
        self.tasks.cancel();
        let servers: Vec<_> =
            std::mem::take(&mut *self.servers.write().expect("servers poisoned")).into_values().collect();
        if !servers.is_empty() {
            tracing::info!(count = servers.len(), "stopping every server");
        }
        futures::future::join_all(servers.iter().map(|s| s.stop())).await;
    }
}
