//! Parameter and result types of the meta server's tools. Parameter names stay those of
//! mcp-ephemeral-k8s, so prompts written for it keep working.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{mounts::MountInfo, reply::Summary};
use crate::{
    presets::PresetSummary,
    runtime::{Deleted, Phase, RuntimeKind, ServerInfo, rfc3339},
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    /// The server's name, as returned by create_mcp_server.
    pub job_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// The server's name, as returned by create_mcp_server.
    pub job_name: String,
    /// Wait until every process of the server is gone (default false).
    #[serde(default)]
    pub wait_for_deletion: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// The server's name, as returned by create_mcp_server.
    pub job_name: String,
    /// Return once it answered initialize again (default false).
    #[serde(default)]
    pub wait_for_ready: bool,
    /// When its preset's --max-active is full, wait up to this many seconds for a slot (first come, first served) instead of failing at once (default 0).
    #[serde(default)]
    pub wait_for_capacity_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only servers whose labels match, e.g. "team=a,tier!=test" (kubectl syntax).
    #[serde(default)]
    pub label_selector: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    /// The server's name, as returned by create_mcp_server.
    pub job_name: String,
    /// How many of the last lines (default 100, at most 2000).
    #[serde(default)]
    pub tail_lines: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountArgs {
    /// The server to mount (it must be Ready).
    pub job_name: String,
    /// Prefix for its tools here: tool `x` appears as `<name>_x`. 1-32 letters, digits or `-`.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnmountArgs {
    /// The mount's name.
    pub name: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PresetList {
    pub presets: Vec<PresetSummary>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ServerList {
    pub servers: Vec<ServerInfo>,
    /// Servers whose tools are mounted here.
    pub mounts: Vec<MountInfo>,
}

/// What `discover_mcp_server_tools` answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Discovered {
    #[serde(flatten)]
    pub catalog: crate::bridge::catalog::Catalog,
    /// From the call to the answer: start, ready, read, deleted.
    pub took_ms: u64,
}

impl Summary for Discovered {
    fn summary(&self) -> String {
        format!(
            "{} tools ({}), in {} ms; the server is deleted",
            self.catalog.tools.len(),
            self.catalog.tool_names().join(", "),
            self.took_ms
        )
    }
}

/// What `list_mcp_server_tools` answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServerTools {
    pub job_name: String,
    #[serde(flatten)]
    pub catalog: crate::bridge::catalog::Catalog,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub git_commit: String,
    /// `local` or `kubernetes`.
    pub runtime: RuntimeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Seconds a server lives when the request gives no ttl_seconds.
    pub default_ttl_seconds: u64,
    pub max_servers: usize,
    /// Seconds without MCP traffic after which servers stop when neither the request nor the
    /// preset says (`--default-idle-timeout`); absent: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_idle_timeout_seconds: Option<u64>,
    /// Every quota (`max_servers`, each preset's `max_active`) and how much of it is used now.
    pub quotas: Vec<crate::servers::QuotaUse>,
    /// Warm pools (`--warm-pool`): servers started ahead, handed out by create_mcp_server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<crate::servers::PoolStatus>,
    /// Whether this replica leads (reaps TTLs, stops idle servers, keeps the warm pools): with
    /// `--leader-election on`, the one holding the Lease; otherwise always.
    pub leader: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Logs {
    pub job_name: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Unmounted {
    pub name: String,
    pub job_name: String,
    /// The tools no longer offered.
    pub tools_removed: Vec<String>,
}

impl Summary for PresetList {
    fn summary(&self) -> String {
        let names: Vec<&str> = self.presets.iter().map(|p| p.name.as_str()).collect();
        format!("{} presets: {}", names.len(), names.join(", "))
    }
}

impl Summary for ServerInfo {
    fn summary(&self) -> String {
        let mut s = format!("{} is {:?}", self.job_name, self.phase);
        if self.phase == Phase::Ready || self.phase == Phase::Starting {
            s.push_str(&format!(
                " at {} (SSE: {}), expires {}",
                self.urls.mcp,
                self.urls.sse,
                rfc3339(self.expires_at)
            ));
        }
        if let Some(reason) = &self.reason
            && self.phase == Phase::Failed
        {
            s.push_str(&format!(": {reason}"));
        }
        s
    }
}

impl Summary for ServerList {
    fn summary(&self) -> String {
        if self.servers.is_empty() {
            return "no MCP servers".into();
        }
        let each: Vec<String> = self.servers.iter().map(|s| format!("{} ({:?})", s.job_name, s.phase)).collect();
        format!("{} MCP servers: {}", each.len(), each.join(", "))
    }
}

impl Summary for Deleted {
    fn summary(&self) -> String {
        if self.already_gone {
            format!("{} was already gone", self.job_name)
        } else {
            format!("{} deleted ({:?})", self.job_name, self.phase)
        }
    }
}

impl Summary for VersionInfo {
    fn summary(&self) -> String {
        format!("{} {} ({}), runtime {}", self.name, self.version, self.git_commit, self.runtime.as_str())
    }
}

impl Summary for Logs {
    fn summary(&self) -> String {
        format!("{} lines of output from {}", self.lines.len(), self.job_name)
    }
}

impl Summary for MountInfo {
    fn summary(&self) -> String {
        format!(
            "{} mounted as `{}` with {} tools: {}",
            self.job_name,
            self.name,
            self.tools.len(),
            self.tools.join(", ")
        )
    }
}

impl Summary for Unmounted {
    fn summary(&self) -> String {
        format!("mount `{}` removed ({} tools)", self.name, self.tools_removed.len())
    }
}

impl Summary for ServerTools {
    fn summary(&self) -> String {
        let c = &self.catalog;
        let mut s = format!("{} offers {} tools: {}", self.job_name, c.tools.len(), c.tool_names().join(", "));
        if !c.prompts.is_empty() {
            s.push_str(&format!("; {} prompts", c.prompts.len()));
        }
        if !c.resources.is_empty() {
            s.push_str(&format!("; {} resources", c.resources.len()));
        }
        s
    }
}
