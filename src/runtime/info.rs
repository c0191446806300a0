//! What the tools report about a server: [`ServerInfo`] with its [`Phase`] and [`Reason`], the
//! result of a delete, and progress steps. States are enums; times are [`SystemTime`]s, turned
//! into RFC 3339 text only when serialized.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use schemars::JsonSchema;
use serde::{Serialize, Serializer};

use super::{LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_PRESET, MANAGED_BY};
use crate::{
    bridge::FailureReason,
    spec::{Identity, ServerSpec},
};

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
    /// Runs nothing, but keeps its name, URLs, labels and TTL; `start_mcp_server` or a request
    /// to its URL starts it again. `reason` says who stopped it.
    Stopped,
}

/// A short machine-readable cause of a phase. The reasons this project gives are variants; a
/// reason Kubernetes reports (`ErrImagePull`, `DeadlineExceeded`, an exit reason, …) is kept as
/// the cluster spelled it. Serialized as the bare name, e.g. `"InitializeTimeout"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The process or container runs; it has not answered `initialize` yet.
    WaitingForInitialize,
    /// The program could not be started at all.
    StartFailed,
    ExitedBeforeInitialize,
    InitializeRejected,
    InitializeTimeout,
    /// Stopped (deleted, TTL) before it became ready.
    Stopped,
    /// A warm-pool member that was no longer ready when it was to be handed out.
    PoolMemberNotReady,
    /// The Job has no pod yet.
    WaitingForPod,
    Unscheduled,
    ContainerCreating,
    /// The server exited without error.
    Completed,
    /// The Job or pod is being deleted.
    Deleting,
    /// Stopped after its idle timeout passed without MCP traffic.
    IdleTimeout,
    /// Stopped by `stop_mcp_server`.
    StoppedByRequest,
    /// A reason as the cluster reported it.
    Cluster(String),
}

impl Reason {
    /// A reason the cluster reported: one of ours when it has the same name, so a reason is
    /// spelled one way only.
    pub fn from_cluster(text: String) -> Reason {
        const OURS: [Reason; 14] = [
            Reason::WaitingForInitialize,
            Reason::StartFailed,
            Reason::ExitedBeforeInitialize,
            Reason::InitializeRejected,
            Reason::InitializeTimeout,
            Reason::Stopped,
            Reason::PoolMemberNotReady,
            Reason::WaitingForPod,
            Reason::Unscheduled,
            Reason::ContainerCreating,
            Reason::Completed,
            Reason::Deleting,
            Reason::IdleTimeout,
            Reason::StoppedByRequest,
        ];
        OURS.into_iter().find(|r| r.as_str() == text).unwrap_or(Reason::Cluster(text))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reason::WaitingForInitialize => "WaitingForInitialize",
            Reason::StartFailed => "StartFailed",
            Reason::ExitedBeforeInitialize => "ExitedBeforeInitialize",
            Reason::InitializeRejected => "InitializeRejected",
            Reason::InitializeTimeout => "InitializeTimeout",
            Reason::Stopped => "Stopped",
            Reason::PoolMemberNotReady => "PoolMemberNotReady",
            Reason::WaitingForPod => "WaitingForPod",
            Reason::Unscheduled => "Unscheduled",
            Reason::ContainerCreating => "ContainerCreating",
            Reason::Completed => "Completed",
            Reason::Deleting => "Deleting",
            Reason::IdleTimeout => "IdleTimeout",
            Reason::StoppedByRequest => "StoppedByRequest",
            Reason::Cluster(text) => text,
        }
    }
}

/// Why a server was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    IdleTimeout,
    StoppedByRequest,
}

impl StopReason {
    pub fn reason(self) -> Reason {
        match self {
            StopReason::IdleTimeout => Reason::IdleTimeout,
            StopReason::StoppedByRequest => Reason::StoppedByRequest,
        }
    }

    /// The reason spelled as [`Reason`] spells it; `None` for any other text.
    pub fn parse(text: &str) -> Option<StopReason> {
        [StopReason::IdleTimeout, StopReason::StoppedByRequest].into_iter().find(|r| r.reason().as_str() == text)
    }

    /// The phase message of a server stopped for this reason.
    pub fn message(self) -> &'static str {
        match self {
            StopReason::IdleTimeout => {
                "stopped after its idle timeout; a request to its URL or start_mcp_server starts it again"
            }
            StopReason::StoppedByRequest => {
                "stopped by stop_mcp_server; a request to its URL or start_mcp_server starts it again"
            }
        }
    }
}

impl From<FailureReason> for Reason {
    fn from(r: FailureReason) -> Reason {
        match r {
            FailureReason::StartFailed => Reason::StartFailed,
            FailureReason::ExitedBeforeInitialize => Reason::ExitedBeforeInitialize,
            FailureReason::InitializeRejected => Reason::InitializeRejected,
            FailureReason::InitializeTimeout => Reason::InitializeTimeout,
            FailureReason::Stopped => Reason::Stopped,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
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
    #[schemars(with = "Option<String>")]
    pub reason: Option<Reason>,
    /// What happened and what to do, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The command line (or image and args) it runs.
    pub command: Vec<String>,
    pub urls: Urls,
    /// RFC 3339.
    #[serde(serialize_with = "rfc3339_field")]
    #[schemars(with = "String")]
    pub created_at: SystemTime,
    /// RFC 3339; the server is deleted then.
    #[serde(serialize_with = "rfc3339_field")]
    #[schemars(with = "String")]
    pub expires_at: SystemTime,
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
    /// RFC 3339: the last request, response or stream end through its URLs (the start of
    /// the server when there was none).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rfc3339_option")]
    #[schemars(with = "Option<String>")]
    pub last_activity: Option<SystemTime>,
    /// Seconds without MCP traffic after which it is stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    /// Milliseconds from creation to ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_after_ms: Option<u64>,
    /// The server's last output lines, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<Vec<String>>,
    /// When a create that waited for ready saw each step of the start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub startup: Vec<super::startup::StartTiming>,
    /// What made it: a tool call, or an `MCPServer` resource (which the controller keeps).
    pub source: ServerSource,
}

/// What made a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerSource {
    /// `create_mcp_server`.
    #[default]
    Tool,
    /// An `MCPServer` resource (Kubernetes); deleting the server deletes the resource.
    Resource,
}

impl ServerInfo {
    /// A server known by name, URLs and times; every other field empty.
    pub fn new(
        job_name: String,
        phase: Phase,
        urls: Urls,
        created_at: SystemTime,
        expires_at: SystemTime,
    ) -> ServerInfo {
        ServerInfo {
            job_name,
            phase,
            reason: None,
            message: None,
            preset: None,
            command: Vec::new(),
            urls,
            created_at,
            expires_at,
            labels: BTreeMap::new(),
            env_names: Vec::new(),
            secret_env_names: Vec::new(),
            restarts: 0,
            exit_code: None,
            tools: None,
            sessions: None,
            last_activity: None,
            idle_timeout_seconds: None,
            ready_after_ms: None,
            log_tail: None,
            startup: Vec::new(),
            source: ServerSource::Tool,
        }
    }

    /// The fields every runtime fills the same way from the spec.
    pub fn from_spec(spec: &ServerSpec, phase: Phase, urls: Urls) -> ServerInfo {
        let id = &spec.identity;
        ServerInfo {
            preset: id.preset.clone(),
            command: spec.launch.command_line(),
            labels: standard_labels(id),
            env_names: spec.launch.env.keys().cloned().collect(),
            secret_env_names: spec.launch.secret_env.keys().cloned().collect(),
            idle_timeout_seconds: id.idle_timeout.map(|d| d.as_secs()),
            ..ServerInfo::new(id.name.clone(), phase, urls, id.created_at, id.expires_at)
        }
    }

    /// Set the phase with its reason and a sentence for a person.
    pub fn set_phase(&mut self, phase: Phase, reason: Reason, message: impl Into<String>) {
        self.phase = phase;
        self.reason = Some(reason);
        self.message = Some(message.into());
    }
}

/// A time as RFC 3339 text with second precision, the form every output uses.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn rfc3339_field<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

fn rfc3339_option<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339_field(t, s),
        None => s.serialize_none(),
    }
}

/// The user's labels plus the ones this project sets on everything it makes.
pub fn standard_labels(id: &Identity) -> BTreeMap<String, String> {
    let mut labels = id.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_INSTANCE.into(), id.name.clone());
    labels.insert(LABEL_PRESET.into(), id.preset.clone().unwrap_or_else(|| "custom".into()));
    labels
}

/// Where a delete left a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum DeletePhase {
    /// Everything is gone.
    Deleted,
    /// It is still going (the delete did not wait).
    Terminating,
}

/// What a delete did.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deleted {
    pub job_name: String,
    /// `Deleted` when everything is gone, `Terminating` when it is still going.
    pub phase: DeletePhase,
    /// What was removed, for a person.
    pub removed: Vec<String>,
    /// The server was already gone (not an error).
    pub already_gone: bool,
}

impl Deleted {
    /// The answer for a server that was not there.
    pub fn already_gone(job_name: &str) -> Deleted {
        Deleted { job_name: job_name.to_string(), phase: DeletePhase::Deleted, removed: Vec::new(), already_gone: true }
    }
}

/// One step of a wait, reported to clients that asked for progress.
#[derive(Debug, Clone)]
pub struct ProgressStep {
    pub step: u32,
    /// 0 when unknown.
    pub total: u32,
    pub message: String,
}

pub type ProgressFn = Arc<dyn Fn(ProgressStep) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_the_strings_the_contract_names() {
        let mut info = ServerInfo::new(
            "time-ab12cd34".into(),
            Phase::Ready,
            Urls { mcp: "m".into(), sse: "s".into() },
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3600),
        );
        info.reason = Some(Reason::InitializeTimeout);
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["phase"], "Ready");
        assert_eq!(v["reason"], "InitializeTimeout");
        assert_eq!(v["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["expires_at"], "1970-01-01T01:00:00Z");
        info.reason = Some(Reason::Cluster("ErrImagePull".into()));
        assert_eq!(serde_json::to_value(&info).unwrap()["reason"], "ErrImagePull");
        assert_eq!(Reason::from_cluster("Completed".into()), Reason::Completed);
        let d = serde_json::to_value(Deleted::already_gone("x")).unwrap();
        assert_eq!((d["phase"].as_str(), d["already_gone"].as_bool()), (Some("Deleted"), Some(true)));
    }
}
