//! `GET /status`: what a bridge knows about its server, as JSON — readiness, the tool names the
//! probe saw, the open sessions, the time to ready, and its MCP traffic (the last activity and
//! how long it has been idle, which the meta server's idle check reads). The meta server reads it for servers it
//! cannot look into directly (pods), so that their status says as much as a local server's.

use serde::{Deserialize, Serialize};

use super::{Activity, Readiness};

/// The body of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStatus {
    /// `starting`, `ready`, `failed`, or `stopped` (a local server's listener while stopped).
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
    /// RFC 3339: the last request, response or stream end through `/mcp`, `/sse`, `/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    /// Requests being answered and streams open now.
    #[serde(default)]
    pub open_streams: usize,
    /// Milliseconds without activity (0 while a request or stream is open). A duration, so
    /// the reader's clock need not agree with the pod's.
    #[serde(default)]
    pub idle_ms: u64,
}

impl BridgeStatus {
    /// A stopped server's: nothing runs behind the listener.
    pub(crate) fn stopped(activity: &Activity) -> BridgeStatus {
        BridgeStatus {
            state: "stopped".into(),
            server_name: None,
            tools: Vec::new(),
            sessions: 0,
            ready_after_ms: None,
            last_activity: Some(crate::runtime::rfc3339(activity.last())),
            open_streams: 0,
            idle_ms: activity.idle_for().as_millis() as u64,
        }
    }

    pub(crate) fn of(readiness: &Readiness, sessions: usize, activity: &Activity) -> BridgeStatus {
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
            last_activity: Some(crate::runtime::rfc3339(activity.last())),
            open_streams: activity.open(),
            idle_ms: activity.idle_for().as_millis() as u64,
        }
    }
}
