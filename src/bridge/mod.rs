//! The bridge: serves a stdio MCP server over streamable HTTP (`/mcp`) and legacy SSE (`/sse`,
//! `/messages`), with `/healthz` and `/readyz`.
//!
//! Every client session gets its own child process, so sessions can never see each other's
//! responses or state. A spare child is kept started ahead of time so that a new session does
//! not wait for a process start (`uvx`/`npx` take hundreds of milliseconds). Readiness means a
//! real `initialize` handshake succeeded with a probe child. The same code runs as the
//! `mcp-ephemeral bridge` command (a container's entrypoint) and inside the local runtime.

pub mod child;
pub mod logs;
mod probe;
pub mod relay;
pub mod session;
pub mod sse;
pub mod streamable;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use child::{ChildCommand, ExitInfo};
pub use probe::{Failure, ProbeReport, Readiness};

use child::Child;
use logs::LogRing;
use session::{OpenError, Opened, SessionLimits, SessionOpener, SessionTable};

/// How a bridge runs its server.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub command: ChildCommand,
    /// How long the probe waits for the `initialize` answer.
    pub init_timeout: Duration,
    /// Children kept started ahead of sessions.
    pub spares: usize,
    pub limits: SessionLimits,
    /// Echo the children's stderr to ours (standalone bridge).
    pub echo_stderr: bool,
}

impl BridgeConfig {
    pub fn new(command: ChildCommand) -> BridgeConfig {
        BridgeConfig {
            command,
            init_timeout: Duration::from_secs(60),
            spares: 1,
            limits: SessionLimits::default(),
            echo_stderr: false,
        }
    }
}

/// A listener whose connections send small writes at once. Without it, Nagle's algorithm and
/// the client's delayed ACK hold the end of every streamed response back by ~40 ms.
pub fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

/// How long after `init_timeout` the probe may take to report: starting its process, and up to
/// 2 s to learn the exit status of one that closed stdout.
const PROBE_SLACK: Duration = Duration::from_secs(3);

struct Inner {
    cfg: BridgeConfig,
    logs: Arc<LogRing>,
    readiness: watch::Sender<Readiness>,
    spares: Mutex<Vec<Child>>,
    seq: AtomicU64,
    shutdown: CancellationToken,
}

/// A running bridge. Cloning shares it.
#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
    table: Arc<SessionTable>,
}

impl Bridge {
    /// Start the probe (and the first spare) in the background.
    pub fn start(cfg: BridgeConfig) -> Bridge {
        let logs = Arc::new(if cfg.echo_stderr { LogRing::echoing() } else { LogRing::default() });
        let (readiness, _) = watch::channel(Readiness::Starting);
        let limits = cfg.limits;
        let inner = Arc::new(Inner {
            cfg,
            logs,
            readiness,
            spares: Mutex::default(),
            seq: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        let table = SessionTable::new(Arc::new(Opener(inner.clone())), limits);
        tokio::spawn(run_probe(inner.clone()));
        // Start the first spare alongside the probe: on two cores both starts overlap.
        inner.refill_spares();
        Bridge { inner, table }
    }

    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.borrow().clone()
    }

    /// Wait until the probe has finished, at most `timeout`.
    ///
    /// The probe gives up by itself after `init_timeout`, counted from when its process started.
    /// A caller that waits at least that long gets the probe's verdict (`InitializeTimeout`
    /// with the stderr tail) rather than a tie between its own timer and the probe's.
    pub async fn wait_ready(&self, timeout: Duration) -> Readiness {
        let limit = if timeout >= self.inner.cfg.init_timeout { timeout + PROBE_SLACK } else { timeout };
        let mut rx = self.inner.readiness.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| !matches!(r, Readiness::Starting))).await;
        rx.borrow().clone()
    }

    /// A receiver of readiness changes (for progress reports).
    pub fn subscribe(&self) -> watch::Receiver<Readiness> {
        self.inner.readiness.subscribe()
    }

    pub fn logs(&self) -> &Arc<LogRing> {
        &self.inner.logs
    }

    pub fn session_count(&self) -> usize {
        self.table.len()
    }

    /// `/mcp`, `/sse`, `/messages`, `/healthz`, `/readyz`.
    pub fn router(&self) -> Router {
        let inner = self.inner.clone();
        Router::new()
            .merge(streamable::routes(self.table.clone()))
            .merge(sse::routes(self.table.clone()))
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let r = inner.readiness.borrow().clone();
                    async move {
                        match r {
                            Readiness::Ready(_) => (StatusCode::OK, "ready".to_string()),
                            Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting".to_string()),
                            Readiness::Failed(f) => (StatusCode::SERVICE_UNAVAILABLE, f.message),
                        }
                        .into_response()
                    }
                }),
            )
    }

    /// End every session and spare and wait for their processes (a few seconds at most).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        // Wake anyone waiting for readiness: it will not come now.
        self.inner.readiness.send_if_modified(|r| {
            let starting = matches!(r, Readiness::Starting);
            if starting {
                *r = Readiness::Failed(Failure {
                    reason: "Stopped".into(),
                    message: "the server was stopped before it became ready (deleted, or its TTL expired)".into(),
                    exit: None,
                    stderr_tail: Vec::new(),
                });
            }
            starting
        });
        let spares: Vec<Child> = std::mem::take(&mut *self.inner.spares.lock().expect("spares poisoned"));
        let spares = futures::future::join_all(spares.into_iter().map(Child::terminate));
        tokio::join!(self.table.close_all(), spares);
    }
}

impl Inner {
    fn spawn_child(&self, role: &str) -> Result<Child, child::SpawnError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        Child::spawn(&self.cfg.command, self.logs.clone(), format!("{role}-{n}"))
    }

    /// Keep `cfg.spares` children started, unless the server failed or we are stopping.
    fn refill_spares(self: &Arc<Self>) {
        if self.shutdown.is_cancelled() || matches!(*self.readiness.borrow(), Readiness::Failed(_)) {
            return;
        }
        let mut spares = self.spares.lock().expect("spares poisoned");
        spares.retain(|c| c.exit_watch().borrow().is_none());
        while spares.len() < self.cfg.spares {
            match self.spawn_child("session") {
                Ok(c) => spares.push(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a spare child");
                    break;
                }
            }
        }
    }

    fn take_spare(&self) -> Option<Child> {
        let mut spares = self.spares.lock().expect("spares poisoned");
        while let Some(c) = spares.pop() {
            if c.exit_watch().borrow().is_none() {
                return Some(c);
            }
        }
        None
    }

    fn drop_spares(&self) {
        self.spares.lock().expect("spares poisoned").clear();
    }
}

struct Opener(Arc<Inner>);

impl SessionOpener for Opener {
    fn open(&self) -> futures::future::BoxFuture<'_, Result<Opened, OpenError>> {
        Box::pin(async move {
            let inner = &self.0;
            if inner.shutdown.is_cancelled() {
                return Err(OpenError::ShuttingDown);
            }
            let mut rx = inner.readiness.subscribe();
            let limit = inner.cfg.init_timeout + PROBE_SLACK;
            let waited = tokio::time::timeout(limit, rx.wait_for(|r| !matches!(r, Readiness::Starting))).await;
            match waited.ok().and_then(|r| r.ok()).map(|r| r.clone()) {
                Some(Readiness::Ready(_)) => {}
                Some(Readiness::Failed(f)) => return Err(OpenError::NotReady(f.message)),
                _ => return Err(OpenError::NotReady("the server did not finish starting".into())),
            }
            let mut child = match inner.take_spare() {
                Some(c) => c,
                None => inner.spawn_child("session").map_err(|e| OpenError::Spawn(e.to_string()))?,
            };
            inner.refill_spares();
            tracing::debug!(pid = child.pid(), "session child assigned");
            let upstream = child.take_upstream();
            Ok(Opened {
                upstream,
                closer: Box::new(move || {
                    Box::pin(async move {
                        child.terminate().await;
                    })
                }),
            })
        })
    }
}

async fn run_probe(inner: Arc<Inner>) {
    let outcome = tokio::select! {
        _ = inner.shutdown.cancelled() => return,
        r = probe::probe(&inner) => r,
    };
    let failed = matches!(outcome, Readiness::Failed(_));
    match &outcome {
        Readiness::Ready(r) => tracing::info!(
            server = r.server_name.as_deref().unwrap_or("?"),
            tools = r.tools.len(),
            ms = r.ready_after.as_millis() as u64,
            "server ready"
        ),
        Readiness::Failed(f) => tracing::warn!(reason = %f.reason, "{}", f.message),
        Readiness::Starting => {}
    }
    inner.readiness.send_replace(outcome);
    if failed {
        inner.drop_spares();
    }
}
