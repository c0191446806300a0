//! Readiness: a probe child must answer a real `initialize` (and `tools/list`, whose names are
//! reported in status) before the bridge calls itself ready; when it cannot, the failure says why,
//! with the exit status and the stderr tail. It is handed what it needs, never the engine itself.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::bridge::catalog::{Catalog, ToolSpec};

use super::{
    child::{Child, ExitInfo, SpawnError},
    logs::LogRing,
};

/// Lines of stderr quoted in a failure message.
const STDERR_TAIL: usize = 15;

#[derive(Debug, Clone)]
pub enum Readiness {
    Starting,
    Ready(ProbeReport),
    Failed(Failure),
}

/// What the probe learned from a healthy server.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    pub protocol_version: Option<String>,
    /// Tool names (as in `catalog`).
    pub tools: Vec<String>,
    /// Its tools with their schemas, its prompts and resources.
    pub catalog: Catalog,
    pub ready_after: Duration,
}

/// Why a bridge's server cannot be used; a short CamelCase name, like Kubernetes' reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The program could not be started at all.
    StartFailed,
    ExitedBeforeInitialize,
    InitializeRejected,
    InitializeTimeout,
    /// The bridge was stopped before the server became ready.
    Stopped,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::StartFailed => "StartFailed",
            FailureReason::ExitedBeforeInitialize => "ExitedBeforeInitialize",
            FailureReason::InitializeRejected => "InitializeRejected",
            FailureReason::InitializeTimeout => "InitializeTimeout",
            FailureReason::Stopped => "Stopped",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a server is not usable.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: FailureReason,
    /// A sentence a person can act on, with the stderr tail.
    pub message: String,
    pub exit: Option<ExitInfo>,
    pub stderr_tail: Vec<String>,
}

enum HandshakeError {
    Closed,
    Rejected(String),
}

/// The failure of a probe whose child could not be started.
pub(super) fn start_failed(e: &SpawnError) -> Readiness {
    Readiness::Failed(Failure {
        reason: FailureReason::StartFailed,
        message: format!("{e}. Check that the program is installed and on PATH."),
        exit: None,
        stderr_tail: Vec::new(),
    })
}

/// Probe `child`, started at `started` as `argv` (the command, for messages), giving it `timeout`
/// to answer `initialize`; a failure quotes the tail of `logs`. The child is ended afterwards.
pub(super) async fn probe(
    mut child: Child,
    started: Instant,
    argv: &str,
    timeout: Duration,
    logs: &LogRing,
) -> Readiness {
    let mut exit = child.exit_watch();
    let result = tokio::time::timeout(timeout, handshake(&mut child)).await;
    let failure = |reason: FailureReason, what: String, exit: Option<ExitInfo>| {
        let tail = logs.tail(STDERR_TAIL);
        let mut message = what;
        if tail.is_empty() {
            message.push_str(" It wrote nothing to stderr.");
        } else {
            message.push_str(" Last stderr lines:\n");
            message.push_str(&tail.join("\n"));
        }
        Readiness::Failed(Failure { reason, message, exit, stderr_tail: tail })
    };
    let outcome = match result {
        Ok(Ok(mut report)) => {
            report.ready_after = started.elapsed();
            Readiness::Ready(report)
        }
        Ok(Err(HandshakeError::Closed)) => {
            let info = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|i| i.clone()));
            let how = info.as_ref().map(|i| format!(" ({i})")).unwrap_or_default();
            failure(
                FailureReason::ExitedBeforeInitialize,
                format!("`{argv}` exited{how} before answering initialize."),
                info,
            )
        }
        Ok(Err(HandshakeError::Rejected(msg))) => {
            failure(FailureReason::InitializeRejected, format!("`{argv}` rejected initialize: {msg}."), None)
        }
        Err(_) => failure(
            FailureReason::InitializeTimeout,
            format!(
                "`{argv}` did not answer initialize within {}; is it a stdio MCP server? \
                 (a first `uvx`/`npx` run may be downloading: retry, or raise the timeout)",
                humantime::format_duration(timeout)
            ),
            None,
        ),
    };
    // The probe child has done its job; sessions get their own.
    child.terminate_later();
    outcome
}

async fn handshake(child: &mut Child) -> Result<ProbeReport, HandshakeError> {
    let init = json!({
        "jsonrpc": "2.0", "id": "probe-initialize", "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "mcp-ephemeral-probe", "version": env!("CARGO_PKG_VERSION")},
        },
    });
    let result = request(child, init).await?;
    let info = &result["serverInfo"];
    let mut report = ProbeReport {
        server_name: info["name"].as_str().map(str::to_owned),
        server_version: info["version"].as_str().map(str::to_owned),
        protocol_version: result["protocolVersion"].as_str().map(str::to_owned),
        tools: Vec::new(),
        catalog: Catalog::default(),
        ready_after: Duration::ZERO,
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    if !child.send(Bytes::from(initialized.to_string())).await {
        return Err(HandshakeError::Closed);
    }
    // A server that answers initialize but fails a list is still up; that list stays empty.
    let offers = |what: &str| result["capabilities"].get(what).is_some();
    if offers("tools") {
        report.catalog.tools =
            list_all(child, "tools/list", "tools").await.iter().filter_map(ToolSpec::from_listed).collect();
        report.tools = report.catalog.tool_names();
    }
    if offers("prompts") {
        let prompts = list_all(child, "prompts/list", "prompts").await;
        report.catalog.prompts = prompts.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect();
    }
    if offers("resources") {
        let resources = list_all(child, "resources/list", "resources").await;
        let templates = list_all(child, "resources/templates/list", "resourceTemplates").await;
        report.catalog.resources = resources
            .iter()
            .filter_map(|r| r["uri"].as_str())
            .chain(templates.iter().filter_map(|t| t["uriTemplate"].as_str()))
            .map(str::to_owned)
            .collect();
    }
    Ok(report)
}

/// The most pages of one list the probe reads.
const MAX_PAGES: usize = 20;
/// How long the probe waits for one page of a list.
const LIST_WAIT: Duration = Duration::from_secs(5);

/// Every item of a paginated list (`method` answers `{key: [...], nextCursor}`); what was read
/// before an error.
async fn list_all(child: &mut Child, method: &str, key: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let msg = json!({"jsonrpc": "2.0", "id": format!("probe-{method}-{page}"), "method": method, "params": params});
        // A list that does not come is left out rather than failing the server's readiness.
        let Ok(Ok(result)) = tokio::time::timeout(LIST_WAIT, request(child, msg)).await else { break };
        items.extend(result[key].as_array().into_iter().flatten().cloned());
        cursor = result["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    items
}

/// Send one request and wait for its response, skipping notifications and answering nothing else.
async fn request(child: &mut Child, msg: Value) -> Result<Value, HandshakeError> {
    let id = msg["id"].clone();
    if !child.send(Bytes::from(msg.to_string())).await {
        return Err(HandshakeError::Closed);
    }
    loop {
        let line = child.recv().await.ok_or(HandshakeError::Closed)?;
        let Ok(reply) = serde_json::from_slice::<Value>(&line) else { continue };
        if reply.get("method").is_some() || reply["id"] != id {
            continue;
        }
        if let Some(err) = reply.get("error") {
            return Err(HandshakeError::Rejected(err["message"].as_str().unwrap_or("error").to_string()));
        }
        return Ok(reply["result"].clone());
    }
}
