//! Where servers run. A [`Runtime`] turns a [`ServerSpec`] into a running server and is the
//! source of truth about it: status and lists are read from the runtime, never from a cache
//! elsewhere. `local` runs child processes behind in-process bridges; `kubernetes` runs Jobs.

pub mod kubernetes;
pub mod local;

use std::{collections::BTreeMap, sync::Arc, time::Duration, time::SystemTime};

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Serialize;

use crate::spec::{LabelSelector, ServerSpec};

/// Label keys set on every server.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_PRESET: &str = "mcp-ephemeral.dev/preset";
pub const MANAGED_BY: &str = "mcp-ephemeral";
/// Set (to the preset) on warm-pool members until they are handed out; `list` leaves them out.
pub const LABEL_POOL: &str = "mcp-ephemeral.dev/pool";

/// The lifecycle phase of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Phase {
    /// Accepted; nothing started yet (e.g. a pod waiting to be scheduled).
    Pending,
    /// The process or container runs; `initialize` not answered yet.
    Starting,
    /// Answered `initialize`: usable through its URLs.
    Ready,
    /// Cannot become ready; `reason`, `message` and `log_tail` say why.
    Failed,
    /// Being deleted.
    Terminating,
    /// Ended on its own without error.
    Succeeded,
}

/// Where a server can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Urls {
    /// Streamable HTTP endpoint.
    pub mcp: String,
    /// Legacy SSE endpoint (MCP 2024-11-05 clients).
    pub sse: String,
}

/// A server as the tools report it. Holds no secret values.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServerInfo {
    pub job_name: String,
    pub phase: Phase,
    /// Short machine-readable cause of the phase (`InitializeTimeout`, `ErrImagePull`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened and what to do, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The command line (or image and args) it runs.
    pub command: Vec<String>,
    pub urls: Urls,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; the server is deleted then.
    pub expires_at: String,
    pub labels: BTreeMap<String, String>,
    /// Names of the variables set from `env` and `secret_env` (values are never shown).
    pub env_names: Vec<String>,
    pub secret_env_names: Vec<String>,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Tool names, once the server answered `tools/list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Client sessions open on it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<usize>,
    /// Milliseconds from creation to ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_after_ms: Option<u64>,
    /// The server's last output lines, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<Vec<String>>,
    #[serde(skip)]
    #[schemars(skip)]
    pub expires: SystemTime,
}

impl ServerInfo {
    /// A server known by name, URLs and times; every other field empty.
    pub fn new(job_name: String, phase: Phase, urls: Urls, created: SystemTime, expires: SystemTime) -> ServerInfo {
        ServerInfo {
            job_name,
            phase,
            reason: None,
            message: None,
            preset: None,
            command: Vec::new(),
            urls,
            created_at: rfc3339(created),
            expires_at: rfc3339(expires),
            labels: BTreeMap::new(),
            env_names: Vec::new(),
            secret_env_names: Vec::new(),
            restarts: 0,
            exit_code: None,
            tools: None,
            sessions: None,
            ready_after_ms: None,
            log_tail: None,
            expires,
        }
    }

    /// The fields every runtime fills the same way from the spec.
    pub fn from_spec(spec: &ServerSpec, phase: Phase, urls: Urls) -> ServerInfo {
        ServerInfo {
            preset: spec.preset.clone(),
            command: spec.command_line(),
            labels: standard_labels(spec),
            env_names: spec.env.keys().cloned().collect(),
            secret_env_names: spec.secret_env.keys().cloned().collect(),
            ..ServerInfo::new(spec.name.clone(), phase, urls, spec.created_at, spec.expires_at)
        }
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The user's labels plus the ones this project sets on everything it makes.
pub fn standard_labels(spec: &ServerSpec) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_INSTANCE.into(), spec.name.clone());
    labels.insert(LABEL_PRESET.into(), spec.preset.clone().unwrap_or_else(|| "custom".into()));
    labels
}

/// What a delete did.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deleted {
    pub job_name: String,
    /// `Deleted` when everything is gone, `Terminating` when it is still going.
    pub phase: String,
    /// What was removed, for a person.
    pub removed: Vec<String>,
    /// The server was already gone (not an error).
    pub already_gone: bool,
}

/// One step of a wait, reported to clients that asked for progress.
#[derive(Debug, Clone)]
pub struct ProgressStep {
    pub step: u32,
    pub total: u32,
    pub message: String,
}

pub type ProgressFn = Arc<dyn Fn(ProgressStep) + Send + Sync>;

/// Errors of a runtime; each message names the server and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no MCP server named `{0}`; list_mcp_servers shows the servers there are")]
    NotFound(String),
    #[error("cannot start `{program}`: {why}")]
    Program { program: String, why: String },
    #[error(
        "server `{name}` failed ({reason}): {message}\nIt is kept for inspection (get_mcp_server_logs); delete it with delete_mcp_server."
    )]
    Failed { name: String, reason: String, message: String },
    #[error("server `{name}` is not ready after {}s (phase {phase:?}); check get_mcp_server_status and get_mcp_server_logs, or wait longer", waited.as_secs())]
    NotReadyInTime { name: String, waited: Duration, phase: Phase },
    #[error("{0}")]
    Unsupported(String),
    #[error("Kubernetes API error while {action}: {detail}")]
    Api { action: String, detail: String },
    #[error("{0}")]
    Io(String),
}

/// A place where MCP servers run.
pub trait Runtime: Send + Sync + 'static {
    /// `local` or `kubernetes`.
    fn kind(&self) -> &'static str;
    /// The Kubernetes namespace, if any.
    fn namespace(&self) -> Option<String> {
        None
    }
    /// Start a server; returns as soon as it is started (phase `Starting` or `Pending`).
    fn create(&self, spec: ServerSpec) -> BoxFuture<'_, Result<ServerInfo, RuntimeError>>;
    /// Wait until `name` is Ready, failing fast when it cannot become ready.
    fn wait_ready<'a>(
        &'a self,
        name: &'a str,
        timeout: Duration,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<ServerInfo, RuntimeError>>;
    fn status<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<ServerInfo, RuntimeError>>;
    fn list<'a>(&'a self, selector: &'a LabelSelector) -> BoxFuture<'a, Result<Vec<ServerInfo>, RuntimeError>>;
    /// Delete `name`; deleting what is already gone succeeds with `already_gone`.
    fn delete<'a>(&'a self, name: &'a str, wait: bool) -> BoxFuture<'a, Result<Deleted, RuntimeError>>;
    /// Hand out the ready warm-pool member `pooled` as the server `spec` describes (its labels,
    /// TTL and, where the runtime can rename, its name). Fails if the member is not Ready.
    fn adopt<'a>(&'a self, pooled: &'a str, spec: ServerSpec) -> BoxFuture<'a, Result<ServerInfo, RuntimeError>>;
    /// The last `tail` lines of the server's output.
    fn logs<'a>(&'a self, name: &'a str, tail: usize) -> BoxFuture<'a, Result<Vec<String>, RuntimeError>>;
    /// Stop everything this runtime owns that must not outlive the meta server.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
