//! [`MetaServer`]: one per process, cloned cheaply into every client session (the HTTP
//! transport builds one per session), so all state lives behind one `Arc`. Besides its own tools
//! and `config://version` it offers what its mounts bring (tools, prompts, resources) and tells
//! every client when one of those lists changes.

use std::sync::{Arc, Mutex};

use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext, wrapper::Parameters},
    model::{
        CallToolRequestParams, CallToolResponse, GetPromptRequestParams, GetPromptResponse, Implementation,
        ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
        ResourceContents, ServerCapabilities, ServerConfig, Tool,
    },
    service::{NotificationContext, RequestContext},
    tool, tool_router,
};
use tokio::sync::mpsc;

use super::{
    error::ToolError,
    mount_names::{MOUNT_URI_PREFIX, split_uri},
    mounts::{ListKind, MountInfo, Mounts, OwnDoor},
    params::*,
    reply::Json,
};
use crate::{
    runtime::{Deleted, Phase, ProgressFn, ServerInfo},
    servers::{CreateRequest, Servers},
    spec::LabelSelector,
    tasks::Tasks,
};

const VERSION_URI: &str = "config://version";
const MAX_TAIL: u32 = 2000;

struct State {
    servers: Arc<Servers>,
    /// Where the session's helper tasks (progress, unmount on delete) run.
    tasks: Tasks,
    mounts: Mounts,
    /// Connected clients, told when the tool, prompt or resource list changes.
    peers: Mutex<Vec<Peer<RoleServer>>>,
}

#[derive(Clone)]
pub(crate) struct MetaServer {
    state: Arc<State>,
    tool_router: Arc<ToolRouter<MetaServer>>,
}

impl MetaServer {
    /// A meta server over `servers`; mounts of deleted servers are removed automatically.
    /// `own` is the meta server's HTTP door when it has a bearer token (mounts through its
    /// gateway send it).
    pub(crate) fn new(servers: Arc<Servers>, own: Option<OwnDoor>, tasks: &Tasks) -> MetaServer {
        let mut deletions = servers.deletions();
        let (mounts, mut mount_changes) = Mounts::new(own);
        let state = Arc::new(State { servers, tasks: tasks.clone(), mounts, peers: Mutex::default() });
        let server = MetaServer { state: state.clone(), tool_router: Arc::new(Self::tool_router()) };
        let weak = Arc::downgrade(&state);
        tasks.spawn_until_cancelled(async move {
            while let Ok(job) = deletions.recv().await {
                let Some(state) = weak.upgrade() else { break };
                for removed in state.mounts.remove_job(&job).await {
                    notify_mount_changed(&state, &removed).await;
                }
            }
        });
        // A mounted server's own list_changed, once the mount has re-read that list.
        let weak = Arc::downgrade(&state);
        tasks.spawn_until_cancelled(async move {
            while let Some(kind) = mount_changes.recv().await {
                let Some(state) = weak.upgrade() else { break };
                notify_list_changed(&state, kind).await;
            }
        });
        server
    }

    async fn version(&self) -> Result<VersionInfo, ToolError> {
        let s = &self.state.servers;
        Ok(VersionInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("MCP_EPHEMERAL_GIT_COMMIT").into(),
            runtime: s.capabilities().kind,
            namespace: s.namespace(),
            default_ttl_seconds: s.policy().default_ttl.as_secs(),
            max_servers: s.policy().max_servers,
            default_idle_timeout_seconds: s.policy().default_idle_timeout.map(|d| d.as_secs()),
            quotas: s.quota_use().await?,
            pools: s.pool_status(),
            leader: s.leadership().is_leader(),
        })
    }
}

/// Tell every connected client that one of the lists changed.
async fn notify_list_changed(state: &State, kind: ListKind) {
    let peers: Vec<Peer<RoleServer>> = {
        let mut peers = state.peers.lock().expect("peers poisoned");
        peers.retain(|p| !p.is_transport_closed());
        peers.clone()
    };
    for peer in peers {
        let sent = match kind {
            ListKind::Tools => peer.notify_tool_list_changed().await,
            ListKind::Prompts => peer.notify_prompt_list_changed().await,
            ListKind::Resources => peer.notify_resource_list_changed().await,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, list = ?kind, "could not notify a client of a list change");
        }
    }
}

/// A mount came or went: the tool list changed, and the prompt and resource lists when it had any.
async fn notify_mount_changed(state: &State, mount: &MountInfo) {
    notify_list_changed(state, ListKind::Tools).await;
    if !mount.prompts.is_empty() {
        notify_list_changed(state, ListKind::Prompts).await;
    }
    if !mount.resources.is_empty() {
        notify_list_changed(state, ListKind::Resources).await;
    }
}

/// Forward wait steps to the client as `notifications/progress`, in order.
fn progress_reporter(ctx: &RequestContext<RoleServer>, tasks: &Tasks) -> Option<ProgressFn> {
    let token = ctx.meta.get_progress_token()?;
    let peer = ctx.peer.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<crate::runtime::ProgressStep>();
    // Ends when the reporter is dropped (the wait is over) or the client is gone.
    tasks.spawn(async move {
        while let Some(step) = rx.recv().await {
            let mut param = ProgressNotificationParam::new(token.clone(), step.step as f64).with_message(step.message);
            // A step of unknown length (waiting for a slot) has no total.
            if step.total > 0 {
                param = param.with_total(step.total as f64);
            }
            if peer.notify_progress(param).await.is_err() {
                break;
            }
        }
    });
    Some(Arc::new(move |step| {
        let _ = tx.send(step);
    }))
}

#[tool_router]
impl MetaServer {
    #[tool(
        description = "List the presets: ready-made MCP servers to create by name (e.g. time, fetch, git, everything, filesystem, memory), with the environment each needs.",
        annotations(read_only_hint = true)
    )]
    async fn list_presets(&self) -> Json<PresetList> {
        Json(PresetList { presets: self.state.servers.presets().iter().map(|p| p.summary()).collect() })
    }

    #[tool(
        description = "Create an MCP server and return its URLs (streamable HTTP `urls.mcp`, legacy SSE `urls.sse`). Give exactly one of `preset`, `runtime_exec` (+ `runtime_mcp`, `runtime_args`) or `image`. Set wait_for_ready=true to return once it answers; it is deleted after ttl_seconds."
    )]
    async fn create_mcp_server(
        &self,
        Parameters(req): Parameters<CreateRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ServerInfo>, ToolError> {
        let progress = progress_reporter(&ctx, &self.state.tasks);
        let mut req = req;
        let pool = req.pool.take();
        if let Some(pool) = &pool {
            req = crate::declarative::pooled(&self.state.servers, pool, req).await?;
        }
        let created = self.state.servers.create_with(req, progress, move |id| {
            if let Some(pool) = pool {
                id.labels.insert(crate::runtime::LABEL_MCPPOOL.to_string(), pool);
            }
        });
        tokio::select! {
            r = created => Ok(Json(r?)),
            _ = ctx.ct.cancelled() => Err(ToolError::Cancelled),
        }
    }

    #[tool(
        description = "Delete an MCP server and everything it runs. Deleting a server that is already gone succeeds.",
        annotations(destructive_hint = true, idempotent_hint = true)
    )]
    async fn delete_mcp_server(&self, Parameters(args): Parameters<DeleteArgs>) -> Result<Json<Deleted>, ToolError> {
        Ok(Json(self.state.servers.delete(&args.job_name, args.wait_for_deletion).await?))
    }

    #[tool(
        description = "Status of one MCP server: phase (Pending, Starting, Ready, Failed, Terminating, Succeeded, Stopped), reason, message, URLs, tools when known, open sessions and last_activity, log tail when failed.",
        annotations(read_only_hint = true)
    )]
    async fn get_mcp_server_status(
        &self,
        Parameters(args): Parameters<JobArgs>,
    ) -> Result<Json<ServerInfo>, ToolError> {
        Ok(Json(self.state.servers.status(&args.job_name).await?))
    }

    #[tool(
        description = "List the MCP servers that exist now, optionally filtered by a label selector such as \"team=a\".",
        annotations(read_only_hint = true)
    )]
    async fn list_mcp_servers(&self, Parameters(args): Parameters<ListArgs>) -> Result<Json<ServerList>, ToolError> {
        let selector = LabelSelector::parse(args.label_selector.as_deref().unwrap_or(""))?;
        let servers = self.state.servers.list(&selector).await?;
        Ok(Json(ServerList { servers, mounts: self.state.mounts.list().await }))
    }

    #[tool(
        description = "Name, version, git commit, runtime and namespace of this meta server, its quotas (max_servers, max_active per preset) with their current use, and its warm pools.",
        annotations(read_only_hint = true)
    )]
    async fn get_version(&self) -> Result<Json<VersionInfo>, ToolError> {
        Ok(Json(self.version().await?))
    }

    #[tool(
        description = "The tools of a Ready MCP server as it describes them (name, description, inputSchema, and outputSchema/annotations when given), plus the names of its prompts and resources.",
        annotations(read_only_hint = true)
    )]
    async fn list_mcp_server_tools(
        &self,
        Parameters(args): Parameters<JobArgs>,
    ) -> Result<Json<ServerTools>, ToolError> {
        let catalog = self.state.servers.catalog(&args.job_name).await?;
        Ok(Json(ServerTools { job_name: args.job_name, catalog }))
    }

    #[tool(
        description = "Start a throwaway MCP server from create_mcp_server's parameters, wait until it is ready, return its tools (with their schemas), prompts and resources and how long it took, and delete it. Nothing is left behind, whether it succeeds, fails or times out."
    )]
    async fn discover_mcp_server_tools(
        &self,
        Parameters(req): Parameters<CreateRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Discovered>, ToolError> {
        let progress = progress_reporter(&ctx, &self.state.tasks);
        let discovered = self.state.servers.discover(req, progress);
        tokio::select! {
            r = discovered => {
                let (catalog, took) = r?;
                Ok(Json(Discovered { catalog, took_ms: took.as_millis() as u64 }))
            }
            _ = ctx.ct.cancelled() => Err(ToolError::Cancelled),
        }
    }

    #[tool(
        description = "Stop an MCP server: nothing runs, but it keeps its name, URLs, labels and TTL (phase Stopped, reason StoppedByRequest). start_mcp_server, or the next request to its URL, starts it again. Stopping a stopped server succeeds.",
        annotations(idempotent_hint = true)
    )]
    async fn stop_mcp_server(&self, Parameters(args): Parameters<JobArgs>) -> Result<Json<ServerInfo>, ToolError> {
        let stopped = self.state.servers.stop(&args.job_name, crate::runtime::StopReason::StoppedByRequest).await?;
        Ok(Json(stopped))
    }

    #[tool(
        description = "Start a Stopped MCP server again under the same name and URLs; answers like create_mcp_server (wait_for_ready=true returns once it answers, with progress notifications). Starting a server that runs succeeds.",
        annotations(idempotent_hint = true)
    )]
    async fn start_mcp_server(
        &self,
        Parameters(args): Parameters<StartArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ServerInfo>, ToolError> {
        let progress = progress_reporter(&ctx, &self.state.tasks);
        let servers = &self.state.servers;
        let started = servers.resume(&args.job_name, args.wait_for_ready, args.wait_for_capacity_seconds, progress);
        tokio::select! {
            r = started => Ok(Json(r?)),
            _ = ctx.ct.cancelled() => Err(ToolError::Cancelled),
        }
    }

    #[tool(
        description = "The recent output (stderr) of an MCP server, to see why it failed or what it did.",
        annotations(read_only_hint = true)
    )]
    async fn get_mcp_server_logs(&self, Parameters(args): Parameters<LogsArgs>) -> Result<Json<Logs>, ToolError> {
        let tail = args.tail_lines.unwrap_or(100);
        if tail == 0 || tail > MAX_TAIL {
            return Err(ToolError::TailLines { got: tail, max: MAX_TAIL });
        }
        let lines = self.state.servers.logs(&args.job_name, tail as usize).await?;
        Ok(Json(Logs { job_name: args.job_name, lines }))
    }

    #[tool(
        description = "Offer a Ready server's tools and prompts here as `<name>_<tool>` / `<name>_<prompt>`, and its resources as `mcp-ephemeral://mounts/<name>/<original URI>`, for clients that cannot connect to its URL. Clients are told the lists changed, also when the server's own lists change."
    )]
    async fn mount_mcp_server(&self, Parameters(args): Parameters<MountArgs>) -> Result<Json<MountInfo>, ToolError> {
        let status = self.state.servers.status(&args.job_name).await?;
        if status.phase != Phase::Ready {
            return Err(ToolError::NotReady { job: args.job_name, phase: status.phase });
        }
        let router = self.tool_router.clone();
        let info =
            self.state.mounts.mount(&args.name, &args.job_name, &status.urls.mcp, |t| router.has_route(t)).await?;
        notify_mount_changed(&self.state, &info).await;
        Ok(Json(info))
    }

    #[tool(
        description = "Stop offering a mounted server's tools, prompts and resources here (the server keeps running)."
    )]
    async fn remove_mcp_server_mount(
        &self,
        Parameters(args): Parameters<UnmountArgs>,
    ) -> Result<Json<Unmounted>, ToolError> {
        let info = self.state.mounts.remove(&args.name).await?;
        notify_mount_changed(&self.state, &info).await;
        Ok(Json(Unmounted { name: info.name, job_name: info.job_name, tools_removed: info.tools }))
    }
}

impl ServerHandler for MetaServer {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Create MCP servers on demand: list_presets, then create_mcp_server(preset=..., wait_for_ready=true) \
                 and connect to urls.mcp, or mount_mcp_server to use its tools here. Servers are deleted after their TTL.",
            )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.state.peers.lock().expect("peers poisoned").push(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.tool_router.list_all();
        // A server's list may change after it was mounted; the meta server's own tools win.
        let router = &self.tool_router;
        tools.extend(self.state.mounts.tools().await.into_iter().filter(|t| !router.has_route(&t.name)));
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.tool_router.has_route(&request.name) {
            return self.tool_router.call(ToolCallContext::new(self, request, context)).await;
        }
        match self.state.mounts.resolve_tool(&request.name).await {
            Some((mount, original)) => mount.call(original, request).await,
            None => Err(ErrorData::invalid_params(
                format!("unknown tool `{}`; tools/list shows the tools there are", request.name),
                None,
            )),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut res = Resource::new(VERSION_URI, "version");
        res.description = Some("name, version, git commit and runtime of this meta server".into());
        res.mime_type = Some("application/json".into());
        let mut resources = vec![res];
        resources.extend(self.state.mounts.resources().await);
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(self.state.mounts.resource_templates().await))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(self.state.mounts.prompts().await))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        match self.state.mounts.resolve_prompt(&request.name).await {
            Some((mount, original)) => Ok(mount.get_prompt(original, request).await?),
            None => Err(ErrorData::invalid_params(
                format!(
                    "unknown prompt `{}`; prompts/list shows the prompts there are (a mounted server's \
                     prompts are named `<mount>_<prompt>`)",
                    request.name
                ),
                None,
            )),
        }
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if let Some((name, original)) = split_uri(&request.uri) {
            let Some(mount) = self.state.mounts.get(name).await else {
                return Err(ErrorData::resource_not_found(
                    format!(
                        "no mount named `{name}` for resource `{}`; list_mcp_servers shows the mounts there are",
                        request.uri
                    ),
                    None,
                ));
            };
            let original = original.to_string();
            return Ok(mount.read_resource(original, request).await?);
        }
        if request.uri != VERSION_URI {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource `{}`; resources/list and resources/templates/list show the resources there are \
                     (a mounted server's are under `{MOUNT_URI_PREFIX}<mount>/`)",
                    request.uri
                ),
                None,
            ));
        }
        let version = self.version().await.map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let text = serde_json::to_string_pretty(&version).unwrap_or_default();
        let contents = ResourceContents::TextResourceContents {
            uri: VERSION_URI.into(),
            mime_type: Some("application/json".into()),
            text,
            meta: None,
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}
