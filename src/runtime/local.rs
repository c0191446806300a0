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

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Deleted, Phase, ProgressFn, ProgressStep, Runtime, RuntimeError, ServerInfo, Urls};
use crate::{
    bridge::{Bridge, BridgeConfig, ChildCommand, Readiness},
    http_guard::Guard,
    spec::{LabelSelector, ServerSpec, Source, SpecError},
};

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// How long a server may take to answer `initialize`.
    pub init_timeout: Duration,
    /// Children kept started ahead of sessions, per server.
    pub spares: usize,
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
    /// Stops the HTTP listener.
    stop: CancellationToken,
}

pub struct LocalRuntime {
    cfg: LocalConfig,
    servers: RwLock<BTreeMap<String, Arc<LocalServer>>>,
    stopping: CancellationToken,
}

impl LocalRuntime {
    pub fn new(cfg: LocalConfig) -> LocalRuntime {
        LocalRuntime { cfg, servers: RwLock::default(), stopping: CancellationToken::new() }
    }

    fn get(&self, name: &str) -> Result<Arc<LocalServer>, RuntimeError> {
        self.servers
            .read()
            .expect("servers poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(name.to_string()))
    }

    async fn start(&self, spec: ServerSpec) -> Result<ServerInfo, RuntimeError> {
        if self.stopping.is_cancelled() {
            return Err(RuntimeError::Io("the meta server is shutting down".into()));
        }
        let argv = match &spec.source {
            Source::Command { argv } => argv.clone(),
            Source::Image { .. } => return Err(RuntimeError::Unsupported(SpecError::ImageNeedsKubernetes.to_string())),
        };
        find_program(&argv[0])?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| RuntimeError::Io(format!("cannot open a local port for `{}`: {e}", spec.name)))?;
        let addr = listener.local_addr().map_err(|e| RuntimeError::Io(e.to_string()))?;
        let env = spec.env.iter().chain(&spec.secret_env).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut cfg = BridgeConfig::new(ChildCommand { argv, env });
        cfg.init_timeout = self.cfg.init_timeout;
        cfg.spares = self.cfg.spares;
        let bridge = Bridge::start(cfg);
        let stop = self.stopping.child_token();
        let guard = Guard { allowed_hosts: Some(Guard::loopback_hosts()), token: None };
        let app = guard.apply(bridge.router());
        let stopped = stop.clone();
        let name = spec.name.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(crate::bridge::nodelay(listener), app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
            {
                tracing::warn!(server = %name, error = %e, "listener ended");
            }
        });
        tracing::info!(server = %spec.name, %addr, command = ?spec.command_line(), "server started");
        let name = spec.name.clone();
        let server = Arc::new(LocalServer { spec: RwLock::new(spec), bridge, addr, stop });
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
        Readiness::Starting => {
            info.reason = Some("WaitingForInitialize".into());
            info.message = Some("the process is starting; it becomes Ready when it answers initialize".into());
        }
        Readiness::Ready(report) => {
            info.phase = Phase::Ready;
            info.tools = Some(report.tools);
            info.ready_after_ms = Some(report.ready_after.as_millis() as u64);
        }
        Readiness::Failed(failure) => {
            info.phase = Phase::Failed;
            info.reason = Some(failure.reason);
            info.message = Some(failure.message);
            info.exit_code = failure.exit.and_then(|e| e.code);
            info.log_tail = Some(failure.stderr_tail);
        }
    }
    info
}

impl Runtime for LocalRuntime {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn create(&self, spec: ServerSpec) -> BoxFuture<'_, Result<ServerInfo, RuntimeError>> {
        Box::pin(self.start(spec))
    }

    fn wait_ready<'a>(
        &'a self,
        name: &'a str,
        timeout: Duration,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<ServerInfo, RuntimeError>> {
        Box::pin(async move {
            let server = self.get(name)?;
            let report = |step, message: &str| {
                if let Some(p) = &progress {
                    p(ProgressStep { step, total: 2, message: message.to_string() });
                }
            };
            report(1, "process started; waiting for initialize");
            server.bridge.wait_ready(timeout).await;
            let info = info(&server);
            match info.phase {
                Phase::Ready => {
                    report(2, "initialize answered; ready");
                    Ok(info)
                }
                Phase::Failed => Err(RuntimeError::Failed {
                    name: name.to_string(),
                    reason: info.reason.unwrap_or_default(),
                    message: info.message.unwrap_or_default(),
                }),
                phase => Err(RuntimeError::NotReadyInTime { name: name.to_string(), waited: timeout, phase }),
            }
        })
    }

    fn status<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServerInfo, RuntimeError>> {
        Box::pin(async move { Ok(info(self.get(name)?.as_ref())) })
    }

    fn list<'a>(&'a self, selector: &'a LabelSelector) -> BoxFuture<'a, Result<Vec<ServerInfo>, RuntimeError>> {
        Box::pin(async move {
            let servers: Vec<_> = self.servers.read().expect("servers poisoned").values().cloned().collect();
            Ok(servers
                .iter()
                .map(|s| info(s))
                .filter(|i| !i.labels.contains_key(super::LABEL_POOL) && selector.matches(&i.labels))
                .collect())
        })
    }

    fn delete<'a>(&'a self, name: &'a str, wait: bool) -> BoxFuture<'a, Result<Deleted, RuntimeError>> {
        Box::pin(async move {
            let server = self.servers.write().expect("servers poisoned").remove(name);
            let Some(server) = server else {
                return Ok(Deleted {
                    job_name: name.to_string(),
                    phase: "Deleted".into(),
                    removed: Vec::new(),
                    already_gone: true,
                });
            };
            let removed = vec![
                format!("listener {}", server.addr),
                format!("{} session process(es) and the spare", server.bridge.session_count()),
            ];
            let label = name.to_string();
            let stop = async move {
                server.stop.cancel();
                server.bridge.shutdown().await;
                tracing::info!(server = %label, "server deleted");
            };
            let phase = if wait {
                stop.await;
                "Deleted"
            } else {
                tokio::spawn(stop);
                "Terminating"
            };
            Ok(Deleted { job_name: name.to_string(), phase: phase.into(), removed, already_gone: false })
        })
    }

    fn adopt<'a>(&'a self, pooled: &'a str, spec: ServerSpec) -> BoxFuture<'a, Result<ServerInfo, RuntimeError>> {
        Box::pin(async move {
            let server = self.servers.write().expect("servers poisoned").remove(pooled);
            let server = server.ok_or_else(|| RuntimeError::NotFound(pooled.to_string()))?;
            if !matches!(server.bridge.readiness(), Readiness::Ready(_)) {
                tokio::spawn(async move {
                    server.stop.cancel();
                    server.bridge.shutdown().await;
                });
                return Err(RuntimeError::Failed {
                    name: pooled.to_string(),
                    reason: "PoolMemberNotReady".into(),
                    message: "the warm-pool member stopped being ready".into(),
                });
            }
            let name = spec.name.clone();
            *server.spec.write().expect("spec poisoned") = spec;
            let info = info(&server);
            self.servers.write().expect("servers poisoned").insert(name.clone(), server);
            tracing::info!(server = %name, pooled, "warm-pool member handed out");
            Ok(info)
        })
    }

    fn logs<'a>(&'a self, name: &'a str, tail: usize) -> BoxFuture<'a, Result<Vec<String>, RuntimeError>> {
        Box::pin(async move { Ok(self.get(name)?.bridge.logs().tail(tail)) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stopping.cancel();
            let servers: Vec<_> =
                std::mem::take(&mut *self.servers.write().expect("servers poisoned")).into_values().collect();
            if !servers.is_empty() {
                tracing::info!(count = servers.len(), "stopping every server");
            }
            futures::future::join_all(servers.iter().map(|s| s.bridge.shutdown())).await;
        })
    }
}
