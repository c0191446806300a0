//! [`RuntimeError`]: why a runtime could not do what was asked. Each message names the server
//! and what to do; the cause (an I/O or Kubernetes API error) is kept as the source.

use std::time::Duration;

use super::{Phase, Reason, kubernetes::retry::ApiError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum RuntimeError {
    #[error("no MCP server named `{0}`; list_mcp_servers shows the servers there are")]
    NotFound(String),
    #[error("cannot start `{program}`: {why}")]
    Program { program: String, why: String },
    #[error(
        "server `{name}` failed ({reason}): {message}\nIt is kept for inspection (get_mcp_server_logs); delete it with delete_mcp_server."
    )]
    Failed { name: String, reason: Reason, message: String },
    #[error("server `{name}` is not ready after {}s (phase {phase:?}); check get_mcp_server_status and get_mcp_server_logs, or wait longer", waited.as_secs())]
    NotReadyInTime { name: String, waited: Duration, phase: Phase },
    #[error(
        "server `{name}` is {phase:?}, not Ready; start_mcp_server starts a Stopped one, get_mcp_server_status tells when a starting one is up"
    )]
    NotReady { name: String, phase: Phase },
    #[error("{0}")]
    Unsupported(String),
    #[error("Kubernetes API error while {action}: {}", source.detail())]
    Api {
        action: String,
        #[source]
        source: ApiError,
    },
    #[error("Kubernetes API error while {action}: {detail}")]
    Watch {
        action: String,
        detail: String,
        #[source]
        source: Option<kube::runtime::watcher::Error>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the meta server is shutting down")]
    ShuttingDown,
}
