//! Mounts: a running server's tools offered by the meta server itself as `<name>_<tool>`, so a
//! client that cannot open new connections (Claude Desktop) still gets them. Calls are
//! forwarded over streamable HTTP to the server's URL, the same way any client would reach it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Tool},
    service::RunningService,
    transport::StreamableHttpClientTransport,
};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::RwLock;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One mounted server.
pub(crate) struct Mount {
    pub name: String,
    pub job_name: String,
    client: RunningService<RoleClient, ()>,
    /// The server's tools, under their original names.
    tools: Vec<Tool>,
}

/// What mount_mcp_server reports.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MountInfo {
    pub name: String,
    pub job_name: String,
    /// The tool names as this server now offers them.
    pub tools: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MountError {
    #[error("mount name `{0}` is invalid: use 1 to 32 letters, digits or `-`, starting with a letter")]
    BadName(String),
    #[error("a mount named `{0}` exists already; pick another name or remove_mcp_server_mount first")]
    Duplicate(String),
    #[error("mounting `{job}` as `{name}` would make tool `{tool}` clash with an existing tool; pick another name")]
    Clash { job: String, name: String, tool: String },
    #[error("cannot connect to `{job}` at {url}: {why}")]
    Connect {
        job: String,
        url: String,
        #[source]
        why: ConnectFailure,
    },
    #[error("no mount named `{0}`")]
    NotFound(String),
}

/// Why a mount could not reach its server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectFailure {
    /// Boxed: the error is large, and mounts fail rarely.
    #[error("{0}")]
    Initialize(#[source] Box<rmcp::service::ClientInitializeError>),
    #[error("tools/list failed: {0}")]
    ListTools(#[source] rmcp::ServiceError),
    #[error("no answer within {0}s")]
    Timeout(u64),
}

#[derive(Default)]
pub(crate) struct Mounts {
    by_name: RwLock<BTreeMap<String, Arc<Mount>>>,
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Mount {
    /// The one place a mounted tool's name here is made: `<mount>_<tool>`.
    fn exposed(&self, tool: &Tool) -> Tool {
        let mut t = tool.clone();
        t.name = format!("{}_{}", self.name, tool.name).into();
        let desc = tool.description.as_deref().unwrap_or("");
        t.description = Some(format!("[{} via mount `{}`] {desc}", self.job_name, self.name).into());
        t
    }

    /// The names this mount's tools have here.
    fn exposed_names(&self) -> Vec<String> {
        self.tools.iter().map(|t| self.exposed(t).name.to_string()).collect()
    }

    fn info(&self) -> MountInfo {
        MountInfo { name: self.name.clone(), job_name: self.job_name.clone(), tools: self.exposed_names() }
    }
}

impl Mounts {
    /// Connect to `url`, list its tools and offer them as `<name>_<tool>`. `taken` tells whether
    /// a tool name is already in use by the meta server itself.
    pub(crate) async fn mount(
        &self,
        name: &str,
        job_name: &str,
        url: &str,
        taken: impl Fn(&str) -> bool,
    ) -> Result<MountInfo, MountError> {
        if !valid_name(name) {
            return Err(MountError::BadName(name.to_string()));
        }
        if self.by_name.read().await.contains_key(name) {
            return Err(MountError::Duplicate(name.to_string()));
        }
        let connect_err = |why: ConnectFailure| MountError::Connect { job: job_name.into(), url: url.into(), why };
        let connect = async {
            let transport = StreamableHttpClientTransport::from_uri(url.to_string());
            let client = ().serve(transport).await.map_err(|e| ConnectFailure::Initialize(Box::new(e)))?;
            let tools = client.list_all_tools().await.map_err(ConnectFailure::ListTools)?;
            Ok::<_, ConnectFailure>((client, tools))
        };
        let (client, tools) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| connect_err(ConnectFailure::Timeout(CONNECT_TIMEOUT.as_secs())))?
            .map_err(connect_err)?;
        let mount = Mount { name: name.to_string(), job_name: job_name.to_string(), client, tools };
        let exposed = mount.exposed_names();
        let mut by_name = self.by_name.write().await;
        if by_name.contains_key(name) {
            return Err(MountError::Duplicate(name.to_string()));
        }
        let others: Vec<String> = by_name.values().flat_map(|m| m.exposed_names()).collect();
        if let Some(tool) = exposed.iter().find(|t| taken(t) || others.contains(t)) {
            return Err(MountError::Clash { job: job_name.into(), name: name.into(), tool: tool.clone() });
        }
        let info = mount.info();
        by_name.insert(name.to_string(), Arc::new(mount));
        tracing::info!(mount = name, job = job_name, tools = exposed.len(), "mounted");
        Ok(info)
    }

    /// Remove a mount and close its connection.
    pub(crate) async fn remove(&self, name: &str) -> Result<MountInfo, MountError> {
        let mount = self.by_name.write().await.remove(name).ok_or_else(|| MountError::NotFound(name.to_string()))?;
        let info = mount.info();
        if let Ok(mount) = Arc::try_unwrap(mount) {
            let _ = mount.client.cancel().await;
        }
        Ok(info)
    }

    /// Remove every mount of a deleted server; returns the names removed.
    pub(crate) async fn remove_job(&self, job_name: &str) -> Vec<String> {
        let names: Vec<String> =
            self.by_name.read().await.values().filter(|m| m.job_name == job_name).map(|m| m.name.clone()).collect();
        for n in &names {
            let _ = self.remove(n).await;
        }
        names
    }

    /// Every mounted tool, under its exposed name.
    pub(crate) async fn tools(&self) -> Vec<Tool> {
        self.by_name.read().await.values().flat_map(|m| m.tools.iter().map(|t| m.exposed(t))).collect()
    }

    /// The mount and original tool name behind an exposed name.
    pub(crate) async fn resolve(&self, exposed: &str) -> Option<(Arc<Mount>, String)> {
        let by_name = self.by_name.read().await;
        by_name.values().find_map(|m| {
            let rest = exposed.strip_prefix(m.name.as_str())?.strip_prefix('_')?;
            m.tools.iter().any(|t| t.name == rest).then(|| (m.clone(), rest.to_string()))
        })
    }

    pub(crate) async fn list(&self) -> Vec<MountInfo> {
        self.by_name.read().await.values().map(|m| m.info()).collect()
    }
}

impl Mount {
    /// Forward a call; a broken connection becomes a tool error that says what to do.
    pub(crate) async fn call(&self, original: String, mut request: CallToolRequestParams) -> CallToolResponse {
        request.name = original.into();
        match self.client.peer().call_tool_once(request).await {
            Ok(response) => response,
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                "the mounted server `{}` (mount `{}`) did not answer: {e}. Check get_mcp_server_status; \
                 remove_mcp_server_mount and mount it again if it was restarted.",
                self.job_name, self.name
            ))])
            .into(),
        }
    }
}
