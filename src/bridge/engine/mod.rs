//! The stdio engine of a bridge: the server's child processes, the spares started ahead of
//! sessions, the probe run and the readiness watch. It hands the http layer one upstream per
//! session (as its [`SessionOpener`]) and must not know about routes, streams or HTTP.

mod child;
pub(crate) mod environment;
pub(crate) mod logs;
mod probe;

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

pub use child::{ChildCommand, ExitInfo};
pub use environment::Inherit;
pub use probe::{Failure, FailureReason, ProbeReport, Readiness};

use crate::{
    bridge::http::{OpenError, Opened, SessionOpener},
    metrics::Metrics,
    tasks::Tasks,
};
use child::Child;
use logs::LogRing;

/// How long after `init_timeout` the probe may take to report: starting its process, and up to
/// 2 s to learn the exit status of one that closed stdout.
const PROBE_SLACK: Duration = Duration::from_secs(3);

/// What the engine runs, and how.
pub(crate) struct EngineConfig {
    pub(crate) command: ChildCommand,
    /// How long the probe waits for the `initialize` answer.
    pub(crate) init_timeout: Duration,
    /// Children kept started ahead of sessions.
    pub(crate) spares: usize,
    /// Echo the children's stderr to ours (standalone bridge).
    pub(crate) echo_stderr: bool,
    pub(crate) metrics: Metrics,
}

/// The children of one server. Shared behind an `Arc`.
pub(crate) struct Engine {
    cfg: EngineConfig,
    logs: Arc<LogRing>,
    readiness: watch::Sender<Readiness>,
    spares: Mutex<Vec<Child>>,
    seq: AtomicU64,
    /// The engine's branch of the task tree; cancelled on shutdown.
    tasks: Tasks,
}

impl Engine {
    /// An engine with nothing started yet (see [`Engine::start`]), whose tasks are `tasks`.
    pub(crate) fn new(cfg: EngineConfig, tasks: Tasks) -> Arc<Engine> {
        let logs = Arc::new(if cfg.echo_stderr { LogRing::echoing() } else { LogRing::default() });
        let (readiness, _) = watch::channel(Readiness::Starting);
        Arc::new(Engine { cfg, logs, readiness, spares: Mutex::default(), seq: AtomicU64::new(0), tasks })
    }

    /// Start the probe (and the first spare) in the background. With two CPUs or more the
    /// spare starts alongside the probe and both starts overlap; with one (a pod's CPU limit of
    /// 1 counts) they would share it and readiness would come later, so the spare waits for
    /// the probe's answer.
    pub(crate) fn start(self: &Arc<Self>) {
        self.tasks.spawn(run_probe(self.clone()));
        if spare_alongside_probe() {
            self.refill_spares();
        }
    }

    /// What a session table opens its sessions with: a spare (or new) child each, once ready.
    pub(crate) fn opener(self: &Arc<Self>) -> Arc<dyn SessionOpener> {
        Arc::new(Opener(self.clone()))
    }

    pub(crate) fn readiness(&self) -> Readiness {
        self.readiness.borrow().clone()
    }

    /// Wait until the probe has finished, at most `timeout` (see [`super::Bridge::wait_ready`]).
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> Readiness {
        let limit = if timeout >= self.cfg.init_timeout { timeout + PROBE_SLACK } else { timeout };
        let mut rx = self.readiness.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| !matches!(r, Readiness::Starting))).await;
        rx.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Readiness> {
        self.readiness.subscribe()
    }

    pub(crate) fn logs(&self) -> &Arc<LogRing> {
        &self.logs
    }

    /// Stop starting children, settle readiness and take the spares, all before this returns (so
    /// before the caller closes its sessions); the returned future ends the spares' processes.
    pub(crate) fn shutdown(&self) -> impl Future<Output = Vec<Option<ExitInfo>>> {
        self.tasks.cancel();
        // Wake anyone waiting for readiness: it will not come now.
        self.readiness.send_if_modified(|r| {
            let starting = matches!(r, Readiness::Starting);
            if starting {
                *r = Readiness::Failed(Failure {
                    reason: FailureReason::Stopped,
                    message: "the server was stopped before it became ready (deleted, or its TTL expired)".into(),
                    exit: None,
                    stderr_tail: Vec::new(),
                });
            }
            starting
        });
        let spares: Vec<Child> = std::mem::take(&mut *self.spares.lock().expect("spares poisoned"));
        futures::future::join_all(spares.into_iter().map(Child::terminate))
    }

    fn spawn_child(&self, role: &str) -> Result<Child, child::SpawnError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let child = Child::spawn(&self.cfg.command, self.logs.clone(), format!("{role}-{n}"), &self.tasks)?;
        self.cfg.metrics.bridge().count_exit(child.exit_watch(), &self.tasks);
        Ok(child)
    }

    /// Keep `cfg.spares` children started, unless the server failed or we are stopping.
    fn refill_spares(self: &Arc<Self>) {
        if self.tasks.is_cancelled() || matches!(*self.readiness.borrow(), Readiness::Failed(_)) {
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

    /// Start a probe child and run the probe on it.
    async fn probe(&self) -> Readiness {
        let started = Instant::now();
        let argv = self.cfg.command.argv.join(" ");
        match self.spawn_child("probe") {
            Ok(child) => probe::probe(child, started, &argv, self.cfg.init_timeout, &self.logs).await,
            Err(e) => probe::start_failed(&e),
        }
    }
}

struct Opener(Arc<Engine>);

impl SessionOpener for Opener {
    fn calls(&self) -> Option<prometheus_client::metrics::counter::Counter> {
        Some(self.0.cfg.metrics.bridge().calls())
    }

    fn open(&self) -> futures::future::BoxFuture<'_, Result<Opened, OpenError>> {
        Box::pin(async move {
            let engine = &self.0;
            if engine.tasks.is_cancelled() {
                return Err(OpenError::ShuttingDown);
            }
            let mut rx = engine.readiness.subscribe();
            let limit = engine.cfg.init_timeout + PROBE_SLACK;
            let waited = tokio::time::timeout(limit, rx.wait_for(|r| !matches!(r, Readiness::Starting))).await;
            match waited.ok().and_then(|r| r.ok()).map(|r| r.clone()) {
                Some(Readiness::Ready(_)) => {}
                Some(Readiness::Failed(f)) => return Err(OpenError::NotReady(f.message)),
                _ => return Err(OpenError::NotReady("the server did not finish starting".into())),
            }
            let mut child = match engine.take_spare() {
                Some(c) => c,
                None => engine.spawn_child("session").map_err(|e| OpenError::Spawn(Box::new(e)))?,
            };
            engine.refill_spares();
            tracing::debug!(pid = child.pid(), "session child assigned");
            let upstream = child.take_upstream();
            let open = engine.cfg.metrics.bridge().session_opened();
            Ok(Opened {
                upstream,
                closer: Box::new(move || {
                    Box::pin(async move {
                        child.terminate().await;
                        drop(open);
                    })
                }),
            })
        })
    }
}

async fn run_probe(engine: Arc<Engine>) {
    let outcome = tokio::select! {
        _ = engine.tasks.cancelled() => return,
        r = engine.probe() => r,
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
    engine.readiness.send_replace(outcome);
    if failed {
        engine.drop_spares();
    } else {
        engine.refill_spares();
    }
}

/// Whether this process may use two CPUs at once (std counts a cgroup's CPU quota).
fn spare_alongside_probe() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}
