//! An `MCPServer`'s status, from what `Servers` says of its server: written only when it
//! changed, so a steady server costs no writes, with the `Ready` condition's transition time
//! kept while its status stays.

use kube::api::{Patch, PatchParams};

use super::{Context, ReconcileError};
use crate::runtime::{
    Phase, ServerInfo,
    kubernetes::crd::{Condition, MCPServer, MCPServerStatus, StatusUrls},
    rfc3339,
};

/// Every field of [`MCPServerStatus`] as it is serialized.
const STATUS_FIELDS: [&str; 10] = [
    "phase",
    "reason",
    "message",
    "urls",
    "tools",
    "readyAfterMs",
    "lastActivity",
    "jobName",
    "observedGeneration",
    "conditions",
];

/// The status of a resource whose server is `info`; `message` replaces the server's own.
pub(super) fn of_server(info: &ServerInfo, message: Option<String>) -> MCPServerStatus {
    MCPServerStatus {
        phase: Some(phase_name(info.phase)),
        reason: info.reason.as_ref().map(word),
        message: message.or_else(|| info.message.clone()),
        urls: Some(StatusUrls { mcp: info.urls.mcp.clone(), sse: info.urls.sse.clone() }),
        tools: info.tools.clone().unwrap_or_default(),
        ready_after_ms: info.ready_after_ms,
        last_activity: info.last_activity.map(rfc3339),
        job_name: Some(info.job_name.clone()),
        ..MCPServerStatus::default()
    }
}

/// The status of a resource that has no server (yet): `phase` for `reason`, said for a person.
pub(super) fn without_server(phase: Phase, reason: &str, message: String) -> MCPServerStatus {
    MCPServerStatus {
        phase: Some(phase_name(phase)),
        reason: Some(reason.to_string()),
        message: Some(message),
        ..MCPServerStatus::default()
    }
}

/// `Ready`, `Pending`, …: a phase as the tools show it.
fn phase_name(phase: Phase) -> String {
    word(&phase)
}

/// A unit enum as its serialized word.
fn word(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Write `status` (with `observedGeneration` and the `Ready` condition) unless the resource
/// already says exactly that.
pub(super) async fn write(
    ctx: &Context,
    resource: &MCPServer,
    mut status: MCPServerStatus,
) -> Result<(), ReconcileError> {
    use kube::ResourceExt;
    let generation = resource.metadata.generation;
    status.observed_generation = generation;
    let previous = resource.status.clone().unwrap_or_default();
    let ready = status.phase.as_deref() == Some("Ready");
    let was = previous.conditions.iter().find(|c| c.type_ == "Ready");
    let flag = if ready { "True" } else { "False" };
    let since = match was {
        Some(c) if c.status == flag => c.last_transition_time.clone(),
        _ => Some(rfc3339(std::time::SystemTime::now())),
    };
    status.conditions = vec![Condition {
        type_: "Ready".into(),
        status: flag.into(),
        reason: status.reason.clone().or_else(|| status.phase.clone()),
        message: status.message.clone(),
        last_transition_time: since,
        observed_generation: generation,
    }];
    if status == previous {
        return Ok(());
    }
    // A merge patch keeps what it does not name: fields this status leaves out are cleared.
    let mut value = serde_json::to_value(&status).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for key in STATUS_FIELDS {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let patch = Patch::Merge(serde_json::json!({ "status": value }));
    ctx.resources().patch_status(&resource.name_any(), &PatchParams::default(), &patch).await?;
    Ok(())
}
