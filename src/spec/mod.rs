//! What a server is, once a request has been checked: [`ServerSpec`] (its identity and what it
//! launches), the field checks every request goes through, and label selectors. Nothing here
//! starts anything, so a rejected request changes nothing. The runtimes consume these types and
//! `servers/` produces them, which is why they sit below both.

mod checks;
mod resources;
mod selector;

pub use checks::*;
pub use resources::{Resources, is_quantity, quantity_nanos};
pub use selector::LabelSelector;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use schemars::JsonSchema;

use crate::http::capability::Capability;
use serde::{Deserialize, Serialize};

/// A checked request: who the server is and what it runs. A warm-pool member fits a request
/// when their [`Launch`]es are equal; only the [`Identity`] differs from one server to the next.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub identity: Identity,
    pub launch: Launch,
}

/// Who a server is: its name, how people find it, and how long it lives. Nothing here changes
/// what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The server's name (`job_name`), unique and never reused. A runtime may give it a fresh
    /// one (a name taken in the cluster); after a create, the runtime's answer is the truth.
    pub name: String,
    pub preset: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ttl: Duration,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    /// Stop the server after this long without MCP traffic (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The token its URLs carry (`None`: `--server-auth none`, or a door that cannot check one).
    pub capability: Option<Capability>,
    /// The object the server belongs to (its `MCPServer`): the server goes with it.
    pub owner: Option<Owner>,
}

/// An object that owns a server (Kubernetes: the Job's controller owner reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What runs, and with what: everything that makes two servers interchangeable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub source: Source,
    pub env: BTreeMap<String, String>,
    /// Environment whose values are secret: kept out of every output, log and annotation.
    pub secret_env: BTreeMap<String, String>,
    /// The server needs the Kubernetes API (its pod gets a service-account token).
    pub needs_kube_api: bool,
    /// CPU and memory for its container (Kubernetes); unset fields take the runtime's defaults.
    pub resources: Resources,
    /// The image a `Command` server runs in on Kubernetes, when its preset names one (else the
    /// runtime's `--server-image`).
    pub command_image: Option<String>,
    /// Where the server may connect to (Kubernetes, through its NetworkPolicy).
    pub egress: Egress,
}

impl Identity {
    /// A fresh identity for a server made from `base` (a preset, program or image name) that
    /// lives `ttl` from now.
    pub fn fresh(base: &str, preset: Option<String>, labels: BTreeMap<String, String>, ttl: Duration) -> Identity {
        let created_at = SystemTime::now();
        let name = crate::names::generate(base);
        Identity {
            name,
            preset,
            labels,
            ttl,
            created_at,
            expires_at: created_at + ttl,
            idle_timeout: None,
            capability: None,
            owner: None,
        }
    }
}

/// How an `image` server speaks MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageTransport {
    /// stdio: it runs behind `mcp-ephemeral bridge` (its command goes in `runtime_args`).
    Stdio,
    /// It serves streamable HTTP (`/mcp`) and SSE (`/sse`) itself on `image_port`.
    Http,
}

/// Where a server may open connections to; serialized as `open` / `none`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Anywhere (the default).
    #[default]
    Open,
    /// Nowhere but the cluster's DNS: its NetworkPolicy allows port 53 to kube-dns and nothing
    /// else. Only the Kubernetes runtime with `--network-policy on` can enforce it.
    None,
}

/// What runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A stdio server started as `argv` (behind the bridge).
    Command { argv: Vec<String> },
    /// A container image (Kubernetes runtime only). `transport` and `port` are `None` when the
    /// request left them to the runtime's defaults.
    Image { image: String, args: Vec<String>, transport: Option<ImageTransport>, port: Option<u16> },
}

impl Launch {
    /// The command line, for status output (never contains secret values).
    pub fn command_line(&self) -> Vec<String> {
        match &self.source {
            Source::Command { argv } => argv.clone(),
            Source::Image { image, args, .. } => std::iter::once(image.clone()).chain(args.iter().cloned()).collect(),
        }
    }
}

/// `runtime_args`: a list, or one string split shell-style.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Args {
    List(Vec<String>),
    Line(String),
}

impl Args {
    pub fn into_vec(self) -> Result<Vec<String>, SpecError> {
        match self {
            Args::List(v) => Ok(v),
            Args::Line(s) => shell_words::split(&s).map_err(|e| SpecError::Args(format!("{e} in `{s}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_args_split_like_a_shell() {
        let args = Args::Line("--repository '/tmp/my repo' -v".into()).into_vec().unwrap();
        assert_eq!(args, ["--repository", "/tmp/my repo", "-v"]);
        assert!(Args::Line("'unbalanced".into()).into_vec().is_err());
    }
}
