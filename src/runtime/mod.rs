//! Where servers run. A [`Runtime`] turns a [`ServerSpec`] into a running server and is the
//! source of truth about it: status and lists are read from the runtime, never from a cache
//! elsewhere. `local` runs child processes behind in-process bridges; `kubernetes` runs Jobs.
//!
//! Only `servers/` holds a runtime: everything else reaches servers through it.
//!
//! [`Runtime`] is an enum over the two runtimes rather than a trait object: there are exactly
//! two, every call is a plain `async fn` (no hand-boxed futures), and what each can do is a
//! typed [`Capabilities`] value instead of a comparison of names.

mod error;
mod info;
pub mod kubernetes;
pub(crate) mod local;
pub(crate) mod startup;
pub(crate) mod wake;

use std::{sync::Arc, time::Duration};

use schemars::JsonSchema;
use serde::Serialize;

pub(crate) use error::RuntimeError;
pub use info::{
    DeletePhase, Deleted, Phase, ProgressFn, ProgressStep, Reason, ServerInfo, ServerSource, StopReason, Urls, rfc3339,
    standard_labels,
};

use self::{kubernetes::KubernetesRuntime, local::LocalRuntime};
use crate::spec::{LabelSelector, ServerSpec};

/// Label keys set on every server.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_PRESET: &str = "mcp-ephemeral.dev/preset";
pub const MANAGED_BY: &str = "mcp-ephemeral";
/// Set (to the preset) on warm-pool members until they are handed out; `list` leaves them out.
pub const LABEL_POOL: &str = "mcp-ephemeral.dev/pool";
/// On a server made for an `MCPServer` resource: the resource's name.
pub const LABEL_RESOURCE: &str = "mcp-ephemeral.dev/resource";
/// On a server made for an `MCPServer` resource: a hash of the spec it was made from (a
/// different one means the spec changed and the server is replaced).
pub const LABEL_SPEC_HASH: &str = "mcp-ephemeral.dev/spec-hash";
/// On a server of an `MCPPool`: the pool's name.
pub const LABEL_MCPPOOL: &str = "mcp-ephemeral.dev/mcppool";
/// On a warm member of an `MCPPool`, until an `MCPServer` of the pool takes it: the pool's
/// name. Like a `--warm-pool` member, it is nobody's server yet (hidden from lists).
pub const LABEL_WARM: &str = "mcp-ephemeral.dev/warm";
/// Set on the throwaway servers of `discover_mcp_server_tools`; `list` leaves them out.
pub const LABEL_THROWAWAY: &str = "mcp-ephemeral.dev/throwaway";

/// Which runtime; serialized as `local` / `kubernetes` (get_version, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Local,
    Kubernetes,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Local => "local",
            RuntimeKind::Kubernetes => "kubernetes",
        }
    }
}

/// What a runtime can do; request checks ask this, never the runtime's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub kind: RuntimeKind,
    /// It runs container images (`image` requests).
    pub images: bool,
    /// It can keep a server off the network (`egress: "none"`): Kubernetes with
    /// `--network-policy on`.
    pub egress: bool,
}

/// A running server with an idle timeout, and how long it has carried no MCP traffic.
#[derive(Debug, Clone)]
pub(crate) struct Idleness {
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    pub(crate) idle_for: Duration,
}

/// A warm-pool member found in the runtime when this replica becomes the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundMember {
    pub(crate) name: String,
    /// Its pool (the preset).
    pub(crate) preset: String,
    pub(crate) state: MemberState,
}

/// Whether a found warm-pool member can join its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// Ready to be handed out.
    Ready,
    /// Runs what its pool runs and is on its way to Ready.
    Starting,
    /// Not of a current pool, running something else, failed or going: delete it.
    Unusable,
}

/// A place where MCP servers run. Cloning shares it.
#[derive(Clone)]
pub(crate) enum Runtime {
    Local(Arc<LocalRuntime>),
    Kubernetes(Arc<KubernetesRuntime>),
}

impl Runtime {
    pub(crate) fn capabilities(&self) -> Capabilities {
        match self {
            Runtime::Local(_) => Capabilities { kind: RuntimeKind::Local, images: false, egress: false },
            Runtime::Kubernetes(k) => {
                Capabilities { kind: RuntimeKind::Kubernetes, images: true, egress: k.restricts_egress() }
            }
        }
    }

    /// The Kubernetes namespace, if any.
    pub(crate) fn namespace(&self) -> Option<String> {
        match self {
            Runtime::Local(_) => None,
            Runtime::Kubernetes(k) => Some(k.namespace().to_string()),
        }
    }

    /// Start a server; returns as soon as it is started (phase `Starting` or `Pending`). The
    /// answer's `job_name` is the server's name from now on (it may differ from the spec's).
    pub(crate) async fn create(&self, spec: ServerSpec) -> Result<ServerInfo, RuntimeError> {
        match self {
            Runtime::Local(r) => r.create(spec).await,
            Runtime::Kubernetes(r) => r.create(spec).await,
        }
    }

    /// Wait until `name` is Ready, failing fast when it cannot become ready.
    pub(crate) async fn wait_ready(
        &self,
        name: &str,
        timeout: Duration,
        progress: Option<ProgressFn>,
    ) -> Result<ServerInfo, RuntimeError> {
        match self {
            Runtime::Local(r) => r.wait_ready(name, timeout, progress).await,
            Runtime::Kubernetes(r) => kubernetes::readiness::wait_ready(r, name, timeout, progress).await,
        }
    }

    pub(crate) async fn status(&self, name: &str) -> Result<ServerInfo, RuntimeError> {
        match self {
            Runtime::Local(r) => r.status(name),
            Runtime::Kubernetes(r) => r.status(name).await,
        }
    }

    /// Every server whose labels match, oldest first; warm-pool members are left out.
    pub(crate) async fn list(&self, selector: &LabelSelector) -> Result<Vec<ServerInfo>, RuntimeError> {
        match self {
            Runtime::Local(r) => Ok(r.list(selector)),
            Runtime::Kubernetes(r) => r.list(selector).await,
        }
    }

    /// [`list`](Self::list) for counting: phases, labels and times as the runtime holds them,
    /// without asking each Kubernetes bridge for its sessions and tools (locally the same list).
    pub(crate) async fn list_brief(&self, selector: &LabelSelector) -> Result<Vec<ServerInfo>, RuntimeError> {
        match self {
            Runtime::Local(r) => Ok(r.list(selector)),
            Runtime::Kubernetes(r) => r.list_brief(selector).await,
        }
    }

    /// Delete `name`; deleting what is already gone succeeds with `already_gone`.
    /// Delete the resource server `name` was made for (an `MCPServer`), if any.
    pub(crate) async fn delete_owner(&self, name: &str) -> Result<(), RuntimeError> {
        match self {
            Runtime::Local(_) => Ok(()),
            Runtime::Kubernetes(r) => r.delete_owner(name).await,
        }
    }

    pub(crate) async fn delete(&self, name: &str, wait: bool) -> Result<Deleted, RuntimeError> {
        match self {
            Runtime::Local(r) => Ok(r.delete(name, wait).await),
            Runtime::Kubernetes(r) => r.delete(name, wait).await,
        }
    }

    /// Hand out the ready warm-pool member `pooled` as the server `spec` describes (its labels,
    /// TTL and, where the runtime can rename, its name). Fails if the member is not Ready.
    pub(crate) async fn adopt(&self, pooled: &str, spec: ServerSpec) -> Result<ServerInfo, RuntimeError> {
        match self {
            Runtime::Local(r) => r.adopt(pooled, spec),
            Runtime::Kubernetes(r) => r.adopt(pooled, spec).await,
        }
    }

    /// Stop `name`: nothing runs, everything else stays (name, URLs, labels, TTL). Stopping a
    /// stopped server changes nothing.
    pub(crate) async fn stop(&self, name: &str, reason: StopReason) -> Result<ServerInfo, RuntimeError> {
        match self {
            Runtime::Local(r) => r.stop(name, reason).await,
            Runtime::Kubernetes(r) => r.stop(name, reason).await,
        }
    }

    /// Start a stopped server again; returns as soon as it is started (wait with
    /// [`Self::wait_ready`]). A server that is not stopped is left as it is.
    pub(crate) async fn resume(&self, name: &str) -> Result<ServerInfo, RuntimeError> {
        match self {
            Runtime::Local(r) => r.resume(name),
            Runtime::Kubernetes(r) => r.resume(name).await,
        }
    }

    /// The running servers that have an idle timeout, with how long each has been idle (zero
    /// for one not Ready yet).
    pub(crate) async fn idleness(&self) -> Result<Vec<Idleness>, RuntimeError> {
        match self {
            Runtime::Local(r) => Ok(r.idleness()),
            Runtime::Kubernetes(r) => r.idleness().await,
        }
    }

    /// The warm-pool members a previous leader or run left (none on the local runtime, whose
    /// members die with their process), with whether each fits `members[preset]`, the spec a
    /// new member of that pool gets.
    pub(crate) async fn pool_members(
        &self,
        members: &std::collections::BTreeMap<String, ServerSpec>,
    ) -> Result<Vec<FoundMember>, RuntimeError> {
        match self {
            Runtime::Local(_) => Ok(Vec::new()),
            Runtime::Kubernetes(r) => r.pool_members(members).await,
        }
    }

    /// Delete what half-made servers left behind (the leader does it once per term).
    pub(crate) async fn sweep_orphans(&self) {
        match self {
            Runtime::Local(_) => {}
            Runtime::Kubernetes(r) => r.sweep_orphans().await,
        }
    }

    /// How the runtime's doors (local listeners, the gateway) ask for a stopped server to be
    /// started.
    pub(crate) fn waker(&self) -> wake::Waker {
        match self {
            Runtime::Local(r) => r.waker().clone(),
            Runtime::Kubernetes(r) => r.waker().clone(),
        }
    }

    /// What Ready server `name` offers: its tools with their schemas, its prompts and resources.
    pub(crate) async fn catalog(&self, name: &str) -> Result<crate::bridge::catalog::Catalog, RuntimeError> {
        match self {
            Runtime::Local(r) => r.catalog(name),
            Runtime::Kubernetes(r) => r.catalog(name).await,
        }
    }

    /// The last `tail` lines of the server's output.
    pub(crate) async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        match self {
            Runtime::Local(r) => r.logs(name, tail),
            Runtime::Kubernetes(r) => r.logs(name, tail).await,
        }
    }

    /// Stop everything this runtime owns that must not outlive the meta server. Kubernetes
    /// servers live in the cluster and end with their TTL: nothing there must stop.
    pub(crate) async fn shutdown(&self) {
        match self {
            Runtime::Local(r) => r.shutdown().await,
            Runtime::Kubernetes(_) => {}
        }
    }
}
