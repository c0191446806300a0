//! `GET /status`: what a bridge knows about its server, as JSON — readiness, the tool names the
//! probe saw, the open sessions, the time to ready. The meta server reads it for servers it
//! cannot look into directly (pods), so that their status says as much as a local server's.

use serde::{Deserialize, Serialize};

use super::Readiness;

/// The body of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStatus {
    /// `starting`, `ready` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Tool names, once the server answered `tools/list`.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Client sessions open now.
    pub sessions: usize,
    /// Milliseconds from the probe's start to the `initialize` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_after_ms: Option<u64>,
}

impl BridgeStatus {
    pub(crate) fn of(readiness: &Readiness, sessions: usize) -> BridgeStatus {
        let (state, report) = match readiness {
            Readiness::Starting => ("starting", None),
            Readiness::Ready(r) => ("ready", Some(r)),
            Readiness::Failed(_) => ("failed", None),
        };
        BridgeStatus {
            state: state.into(),
            server_name: report.and_then(|r| r.server_name.clone()),
            tools: report.map(|r| r.tools.clone()).unwrap_or_default(),
            sessions,
            ready_after_ms: report.map(|r| r.ready_after.as_millis() as u64),
        }
    }
}
