//! The bridge: serves a stdio MCP server over streamable HTTP (`/mcp`) and legacy SSE (`/sse`,
//! `/messages`), with `/healthz` and `/readyz`, by gluing an [`engine`] (processes) to the [`http`]
//! session layer. It owns no process nor session itself, only the wiring and the health routes.
//!
//! Every client session gets its own child process, so sessions can never see each other's
//! responses or state. A spare child is kept started ahead of time so that a new session does
//! not wait for a process start (`uvx`/`npx` take hundreds of milliseconds). Readiness means a
//! real `initialize` handshake succeeded with a probe child. The same code runs as the
//! `mcp-ephemeral bridge` command (a container's entrypoint) and inside the local runtime.

mod activity;
pub mod catalog;
pub(crate) mod engine;
pub mod http;
mod status;

use std::{sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use tokio::sync::watch;

pub use activity::Activity;
pub use engine::environment::{NEVER as NEVER_PASSED, SERVER_TOKEN_ENV};
pub use engine::{ChildCommand, ExitInfo, Failure, FailureReason, Inherit, ProbeReport, Readiness};
pub use status::BridgeStatus;

use engine::{Engine, EngineConfig, logs::LogRing};
use http::{SessionLimits, SessionTable};

use crate::{metrics::Metrics, tasks::Tasks};

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
    /// Where its MCP traffic is clocked (shared with whoever decides idleness).
    pub activity: Arc<Activity>,
    /// Where its sessions, relayed requests and child exits are counted (the meta server's,
    /// for an in-process bridge).
    pub(crate) metrics: Metrics,
}

impl BridgeConfig {
    pub fn new(command: ChildCommand) -> BridgeConfig {
        BridgeConfig {
            command,
            init_timeout: Duration::from_secs(60),
            spares: 1,
            limits: SessionLimits::default(),
            echo_stderr: false,
            activity: Arc::default(),
            metrics: Metrics::default(),
        }
    }
}

/// A running bridge. Cloning shares it.
#[derive(Clone)]
pub struct Bridge {
    engine: Arc<Engine>,
    table: Arc<SessionTable>,
    activity: Arc<Activity>,
}

impl Bridge {
    /// Start the probe (and the first spare) in the background, on a branch of `tasks`.
    pub fn start(cfg: BridgeConfig, tasks: &Tasks) -> Bridge {
        let BridgeConfig { command, init_timeout, spares, limits, echo_stderr, activity, metrics } = cfg;
        let tasks = tasks.child();
        let engine = Engine::new(EngineConfig { command, init_timeout, spares, echo_stderr, metrics }, tasks.clone());
        let table = SessionTable::start(engine.opener(), limits, &tasks);
        engine.start();
        activity.touch();
        // A server cannot be idle before it could be used: its idle time starts when it is
        // Ready (a start slower than the idle timeout must not end in an immediate stop).
        let (mut readiness, ready_at) = (engine.subscribe(), activity.clone());
        tasks.spawn_until_cancelled(async move {
            if readiness.wait_for(|r| matches!(r, Readiness::Ready(_))).await.is_ok() {
                ready_at.touch();
            }
        });
        Bridge { engine, table, activity }
    }

    pub fn readiness(&self) -> Readiness {
        self.engine.readiness()
    }

    /// Wait until the probe has finished, at most `timeout`.
    ///
    /// The probe gives up by itself after `init_timeout`, counted from when its process started.
    /// A caller that waits at least that long gets the probe's verdict (`InitializeTimeout`
    /// with the stderr tail) rather than a tie between its own timer and the probe's.
    pub async fn wait_ready(&self, timeout: Duration) -> Readiness {
        self.engine.wait_ready(timeout).await
    }

    /// A receiver of readiness changes (for progress reports).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Readiness> {
        self.engine.subscribe()
    }

    pub(crate) fn logs(&self) -> &Arc<LogRing> {
        self.engine.logs()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.table.len()
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// `/mcp`, `/sse`, `/messages` (their traffic is [activity](Activity)), `/healthz`,
    /// `/readyz`, `/status`, `/catalog` (the server's tools with their schemas, prompts and
    /// resources, once Ready).
    pub fn router(&self) -> Router {
        let engine = self.engine.clone();
        let (status_engine, table, status_activity) = (self.engine.clone(), self.table.clone(), self.activity.clone());
        let activity = self.activity.clone();
        let mcp = http::streamable_routes(self.table.clone())
            .merge(http::sse_routes(self.table.clone()))
            .layer(axum::middleware::from_fn(move |req, next| activity::track(activity.clone(), req, next)));
        let catalog_engine = self.engine.clone();
        Router::new()
            .route(
                "/catalog",
                get(move || {
                    let readiness = catalog_engine.readiness();
                    async move {
                        match readiness {
                            Readiness::Ready(report) => axum::Json(report.catalog).into_response(),
                            _ => (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response(),
                        }
                    }
                }),
            )
            .route(
                "/status",
                get(move || {
                    let status = BridgeStatus::of(&status_engine.readiness(), table.len(), &status_activity);
                    async move { axum::Json(status) }
                }),
            )
            .merge(mcp)
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let r = engine.readiness();
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
        let spares = self.engine.shutdown();
        tokio::join!(self.table.close_all(), spares);
    }
}
