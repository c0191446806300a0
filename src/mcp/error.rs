//! [`ToolError`]: every way a tool call can fail, as one type that becomes a tool error result
//! (`isError: true` with the sentence as text), so tool handlers simply use `?`.

use rmcp::{
    ErrorData,
    handler::server::tool::IntoCallToolResult,
    model::{CallToolResponse, CallToolResult, ContentBlock},
};

use super::mounts::MountError;
use crate::{runtime::Phase, servers::ServersError, spec::SpecError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    #[error(transparent)]
    Servers(#[from] ServersError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Pool(#[from] crate::declarative::PoolError),
    #[error("cancelled by the client; the server may still be starting (list_mcp_servers)")]
    Cancelled,
    #[error("tail_lines must be between 1 and {max} (got {got})")]
    TailLines { got: u32, max: u32 },
    #[error(
        "server `{job}` is {phase:?}, not Ready; wait for it (create with wait_for_ready=true, or poll get_mcp_server_status)"
    )]
    NotReady { job: String, phase: Phase },
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        // An error may quote a server's URL; the log gets it without the token.
        tracing::debug!(error = %crate::http::capability::redact(&self.to_string()), "tool call failed");
        Ok(CallToolResult::error(vec![ContentBlock::text(self.to_string())]).into())
    }
}
