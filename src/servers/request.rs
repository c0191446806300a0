//! What a caller asks for: the arguments of `create_mcp_server` ([`CreateRequest`], names
//! compatible with mcp-ephemeral-k8s) and the limits and defaults every request is held to
//! ([`Policy`]).

use std::{collections::BTreeMap, time::Duration};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::spec::{Args, Egress, ImageTransport, Resources};

/// Arguments of `create_mcp_server` (names compatible with mcp-ephemeral-k8s).
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A preset name from list_presets (e.g. "time", "fetch", "everything").
    #[serde(default)]
    pub preset: Option<String>,
    /// The program to run instead of a preset, e.g. "uvx" or "npx".
    #[serde(default)]
    pub runtime_exec: Option<String>,
    /// The MCP package or script it runs, e.g. "mcp-server-fetch".
    #[serde(default)]
    pub runtime_mcp: Option<String>,
    /// Extra arguments: a list, or one string split like a shell. With a preset they replace its default arguments.
    #[serde(default)]
    pub runtime_args: Option<Args>,
    /// A container image (Kubernetes runtime only).
    #[serde(default)]
    pub image: Option<String>,
    /// Environment variables for the server.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Environment variables whose values are secret: never shown in any output or log.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
    /// Wait until the server answered initialize before returning (default false).
    #[serde(default)]
    pub wait_for_ready: bool,
    /// When a quota (--max-servers, --max-active) is full, wait up to this many seconds for a slot (first come, first served) instead of failing at once (default 0).
    #[serde(default)]
    pub wait_for_capacity_seconds: Option<u64>,
    /// Seconds until the server is deleted automatically (default: the meta server's --default-ttl).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Stop the server (phase Stopped, reason IdleTimeout) after this many seconds without a request or an open stream; the next request to its URL starts it again. 0 turns it off. Default: the preset's idle_timeout, else the meta server's --default-idle-timeout (off unless set).
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
    /// Labels to find it by (list_mcp_servers label_selector).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// CPU and memory for the server's container (Kubernetes runtime); unset fields keep the preset's or the defaults.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// How an `image` speaks MCP: "stdio" (run behind the bridge; its command goes in runtime_args) or "http" (it serves /mcp and /sse itself on image_port). Default: the meta server's --image-transport.
    #[serde(default)]
    pub image_transport: Option<ImageTransport>,
    /// The port an "http" image listens on (default: the meta server's --image-port).
    #[serde(default)]
    pub image_port: Option<u16>,
    /// Where the server may connect to: "open" (anywhere) or "none" (the cluster's DNS only, enforced by its NetworkPolicy; Kubernetes runtime with --network-policy on). Default: the preset's egress, else "open".
    #[serde(default)]
    pub egress: Option<Egress>,
    /// An MCPPool to make the server in (Kubernetes, with the MCPServer/MCPPool CRDs): it counts against the pool's maxActive, and the pool's preset or template and its default TTL and idle timeout fill what this request leaves unset.
    #[serde(default)]
    pub pool: Option<String>,
}

/// Limits and defaults applied to every request.
#[derive(Debug, Clone)]
pub struct Policy {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Most servers that exist at once (Stopped ones included).
    pub max_servers: usize,
    /// Most servers of a preset that are not Stopped: preset name → limit.
    pub max_active: BTreeMap<String, usize>,
    /// Idle timeout of servers whose request and preset set none.
    pub default_idle_timeout: Option<Duration>,
    /// How long `wait_for_ready` waits.
    pub ready_timeout: Duration,
    /// Whether servers' URLs carry a capability token.
    pub server_auth: ServerAuth,
}

/// `--server-auth`: what a server's own door checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerAuth {
    /// A random token in every URL handed out; other paths are 404.
    #[default]
    Token,
    /// No token: whoever reaches the server's port may use it.
    None,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            max_servers: 100,
            max_active: BTreeMap::new(),
            default_idle_timeout: None,
            ready_timeout: Duration::from_secs(120),
            server_auth: ServerAuth::Token,
        }
    }
}
