//! Mounts: a running server's tools, prompts and resources offered by the meta server itself, so
//! a client that cannot open new connections (Claude Desktop) still gets them. Requests are
//! forwarded over streamable HTTP to the server's URL, the same way any client would reach it.
//! A mount keeps its server's lists current (the server's `list_changed` notifications make it
//! re-read them) and reports which list changed; telling the meta server's clients is not its job.
//! How the names look here is [`super::mount_names`]'s business.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceError, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
        GetPromptResponse, Prompt, ReadResourceRequestParams, ReadResourceResponse, Resource, ResourceContents,
        ResourceTemplate, Tool,
    },
    service::{NotificationContext, Peer, RunningService},
    transport::{
        StreamableHttpClientTransport, common::client_side_sse::NeverRetry,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::{Mutex, RwLock, mpsc};

use super::mount_names::{exposed_name, exposed_uri, split_name};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of a server's lists changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Tools,
    Prompts,
    /// Resources and resource templates: MCP has one notification for both.
    Resources,
}

impl ListKind {
    const ALL: [ListKind; 3] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources];
}

/// A server's lists, under their original names.
#[derive(Default)]
struct Catalog {
    tools: Vec<Tool>,
    prompts: Vec<Prompt>,
    resources: Vec<Resource>,
    templates: Vec<ResourceTemplate>,
}

/// What a mount shares with its MCP client (the handler of the server's notifications).
struct Shared {
    name: String,
    job_name: String,
    catalog: std::sync::RwLock<Catalog>,
    /// Held while a list is read and stored, so an older read never overwrites a newer one.
    refreshing: Mutex<()>,
    /// Set once the mount is offered and cleared when it is removed: only a live mount reports
    /// changes (the meta server announces a new mount itself).
    live: AtomicBool,
    changes: mpsc::UnboundedSender<ListKind>,
}

impl Shared {
    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().expect("mount catalog poisoned")
    }

    /// Read one list from the server and keep it; report it when it differs from the last one.
    async fn refresh(&self, kind: ListKind, peer: &Peer<RoleClient>) -> Result<(), ConnectFailure> {
        let _one_at_a_time = self.refreshing.lock().await;
        let caps = peer.peer_info().map(|info| info.capabilities.clone()).unwrap_or_default();
        let list_err = |what: &'static str| move |source| ConnectFailure::List { what, source };
        let changed = match kind {
            ListKind::Tools => {
                let tools = peer.list_all_tools().await.map_err(list_err("tools/list"))?;
                let mut catalog = self.catalog.write().expect("mount catalog poisoned");
                let changed = catalog.tools != tools;
                catalog.tools = tools;
                changed
            }
            ListKind::Prompts => {
                let prompts = match caps.prompts {
                    Some(_) => peer.list_all_prompts().await.map_err(list_err("prompts/list"))?,
                    None => Vec::new(),
                };
                let mut catalog = self.catalog.write().expect("mount catalog poisoned");
                let changed = catalog.prompts != prompts;
                catalog.prompts = prompts;
                changed
            }
            ListKind::Resources => {
                let (resources, templates) = match caps.resources {
                    Some(_) => (
                        peer.list_all_resources().await.map_err(list_err("resources/list"))?,
                        peer.list_all_resource_templates().await.map_err(list_err("resources/templates/list"))?,
                    ),
                    None => (Vec::new(), Vec::new()),
                };
                let mut catalog = self.catalog.write().expect("mount catalog poisoned");
                let changed = catalog.resources != resources || catalog.templates != templates;
                catalog.resources = resources;
                catalog.templates = templates;
                changed
            }
        };
        if changed && self.live.load(Ordering::SeqCst) {
            tracing::info!(mount = %self.name, job = %self.job_name, list = ?kind, "a mounted server's list changed");
            let _ = self.changes.send(kind);
        }
        Ok(())
    }

    /// Re-read a list the server says changed; a failure keeps the old list.
    async fn on_changed(&self, kind: ListKind, peer: &Peer<RoleClient>) {
        if let Err(e) = self.refresh(kind, peer).await {
            tracing::warn!(mount = %self.name, job = %self.job_name, list = ?kind, error = %e,
                "could not re-read a mounted server's list after it changed; keeping the old one");
        }
    }
}

/// The client side of a mount's session: it hears the server's `list_changed` notifications.
#[derive(Clone)]
struct MountClient(Arc<Shared>);

impl ClientHandler for MountClient {
    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        self.0.on_changed(ListKind::Tools, &context.peer).await;
    }

    async fn on_prompt_list_changed(&self, context: NotificationContext<RoleClient>) {
        self.0.on_changed(ListKind::Prompts, &context.peer).await;
    }

    async fn on_resource_list_changed(&self, context: NotificationContext<RoleClient>) {
        self.0.on_changed(ListKind::Resources, &context.peer).await;
    }
}

type Session = RunningService<RoleClient, MountClient>;

/// One mounted server.
pub(crate) struct Mount {
    pub name: String,
    pub job_name: String,
    /// Where its sessions go, and the meta server's own bearer token when that is through the
    /// meta server's gateway.
    url: String,
    bearer: Option<String>,
    shared: Arc<Shared>,
    /// The current session; replaced when it died (see [`Mount::forward`]).
    session: RwLock<Arc<Session>>,
}

/// What mount_mcp_server reports.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MountInfo {
    pub name: String,
    pub job_name: String,
    /// The tool names as this server now offers them.
    pub tools: Vec<String>,
    /// The prompt names as this server now offers them.
    pub prompts: Vec<String>,
    /// The resource URIs and URI templates as this server now offers them.
    pub resources: Vec<String>,
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
    #[error("{what} failed: {source}")]
    List {
        what: &'static str,
        #[source]
        source: ServiceError,
    },
    #[error("no answer within {0}s")]
    Timeout(u64),
}

/// Why a forwarded request has no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unanswered {
    /// The server answered with an MCP error; it is passed on as it is.
    #[error("{0}")]
    Refused(ErrorData),
    #[error(
        "the mounted server `{job}` (mount `{mount}`) did not answer: {why}. Check get_mcp_server_status \
         (start_mcp_server if it is Stopped) and try again; remove_mcp_server_mount if it is gone."
    )]
    Unreachable { job: String, mount: String, why: String },
}

impl From<Unanswered> for ErrorData {
    fn from(e: Unanswered) -> ErrorData {
        match e {
            Unanswered::Refused(e) => e,
            e @ Unanswered::Unreachable { .. } => ErrorData::internal_error(e.to_string(), None),
        }
    }
}

pub(crate) struct Mounts {
    by_name: RwLock<BTreeMap<String, Arc<Mount>>>,
    changes: mpsc::UnboundedSender<ListKind>,
    own: Option<OwnDoor>,
}

/// The meta server's own HTTP door, behind its bearer token: servers' URLs through its gateway
/// start with `public` (`--public-url`, or the listen address). A mount goes to `internal`
/// instead (its own listener, not around through a proxy) and sends the token.
#[derive(Clone)]
pub(crate) struct OwnDoor {
    pub(crate) public: String,
    pub(crate) internal: String,
    pub(crate) token: String,
}

impl OwnDoor {
    /// Where a mount of `url` connects, and the bearer token it sends.
    fn route(&self, url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix(self.public.as_str())?.strip_prefix("/servers/")?;
        Some((format!("{}/servers/{rest}", self.internal), self.token.clone()))
    }
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Open a session to `url` and read all of the server's lists into `shared`.
async fn connect(url: &str, bearer: Option<&str>, shared: &Arc<Shared>) -> Result<Session, ConnectFailure> {
    let connect = async {
        // No transparent re-initialize: a dead session is replaced by `Mount::reconnect`, which
        // also re-reads the lists (a new session may offer other ones). No retries of the GET
        // stream either: it ends when the session does (the server was stopped), and a retry
        // would be a request that wakes the stopped server. Notifications sent while it is
        // down wait in the bridge for the next request's stream.
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(url.to_string()).reinit_on_expired_session(false);
        config.retry_config = Arc::new(NeverRetry::default());
        if let Some(token) = bearer {
            config = config.auth_header(token.to_string());
        }
        let transport = StreamableHttpClientTransport::from_config(config);
        let session =
            MountClient(shared.clone()).serve(transport).await.map_err(|e| ConnectFailure::Initialize(Box::new(e)))?;
        for kind in ListKind::ALL {
            shared.refresh(kind, session.peer()).await?;
        }
        Ok(session)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| ConnectFailure::Timeout(CONNECT_TIMEOUT.as_secs()))?
}

/// Whether a request failed because the session is gone (not because the server said no).
fn session_died(e: &ServiceError) -> bool {
    matches!(e, ServiceError::TransportClosed | ServiceError::TransportSend(_))
}

/// A request's failure for a person: the transport's own error (e.g. `Session expired (HTTP
/// 404)`) rather than rmcp's wrapper, which names the transport's Rust type.
fn describe(e: &ServiceError) -> String {
    match e {
        ServiceError::TransportSend(e) => format!("its session ended ({})", e.error),
        ServiceError::TransportClosed => "its session ended".to_string(),
        e => e.to_string(),
    }
}

impl Mount {
    /// The one place a mounted tool looks the way it does here: `<mount>_<tool>`.
    fn exposed_tool(&self, tool: &Tool) -> Tool {
        let mut t = tool.clone();
        t.name = exposed_name(&self.name, &tool.name).into();
        t.description = Some(self.described(tool.description.as_deref()).into());
        t
    }

    fn exposed_prompt(&self, prompt: &Prompt) -> Prompt {
        let mut p = prompt.clone();
        p.name = exposed_name(&self.name, &prompt.name);
        p.description = Some(self.described(prompt.description.as_deref()));
        p
    }

    fn exposed_resource(&self, resource: &Resource) -> Resource {
        let mut r = resource.clone();
        r.uri = exposed_uri(&self.name, &resource.uri);
        r.description = Some(self.described(resource.description.as_deref()));
        r
    }

    fn exposed_template(&self, template: &ResourceTemplate) -> ResourceTemplate {
        let mut t = template.clone();
        t.uri_template = exposed_uri(&self.name, &template.uri_template);
        t.description = Some(self.described(template.description.as_deref()));
        t
    }

    fn described(&self, description: Option<&str>) -> String {
        format!("[{} via mount `{}`] {}", self.job_name, self.name, description.unwrap_or(""))
    }

    fn info(&self) -> MountInfo {
        let catalog = self.shared.catalog();
        MountInfo {
            name: self.name.clone(),
            job_name: self.job_name.clone(),
            tools: catalog.tools.iter().map(|t| exposed_name(&self.name, &t.name)).collect(),
            prompts: catalog.prompts.iter().map(|p| exposed_name(&self.name, &p.name)).collect(),
            resources: catalog
                .resources
                .iter()
                .map(|r| &r.uri)
                .chain(catalog.templates.iter().map(|t| &t.uri_template))
                .map(|uri| exposed_uri(&self.name, uri))
                .collect(),
        }
    }

    fn has_tool(&self, original: &str) -> bool {
        self.shared.catalog().tools.iter().any(|t| t.name == original)
    }

    fn has_prompt(&self, original: &str) -> bool {
        self.shared.catalog().prompts.iter().any(|p| p.name == original)
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> Unanswered {
        Unanswered::Unreachable { job: self.job_name.clone(), mount: self.name.clone(), why: why.to_string() }
    }

    /// Replace the session `dead` with a new one (unless another request did already) and
    /// re-read the lists; a list that differs is reported as changed.
    async fn reconnect(&self, dead: &Arc<Session>, cause: &str) -> Result<Arc<Session>, ConnectFailure> {
        let mut current = self.session.write().await;
        if !Arc::ptr_eq(&current, dead) {
            return Ok(current.clone());
        }
        tracing::info!(mount = %self.name, job = %self.job_name, cause, "the mounted server's session died; reconnecting");
        let fresh = Arc::new(connect(&self.url, self.bearer.as_deref(), &self.shared).await?);
        let old = std::mem::replace(&mut *current, fresh.clone());
        old.cancellation_token().cancel();
        Ok(fresh)
    }

    /// Send one request over the current session. A session that died (closed, or the
    /// request could not be delivered) is replaced once, and the request sent again on the new one.
    async fn forward<T, F, Fut>(&self, send: F) -> Result<T, Unanswered>
    where
        F: Fn(Peer<RoleClient>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let mut session = self.session.read().await.clone();
        let mut reconnected = false;
        if session.is_closed() {
            session = self
                .reconnect(&session, "session closed")
                .await
                .map_err(|e| self.unreachable(format!("its session had ended, and reconnecting failed: {e}")))?;
            reconnected = true;
        }
        let first = send(session.peer().clone()).await;
        let failed = match first {
            Ok(answer) => return Ok(answer),
            Err(ServiceError::McpError(e)) => return Err(Unanswered::Refused(e)),
            Err(e) if !reconnected && (session_died(&e) || session.is_closed()) => describe(&e),
            Err(e) => return Err(self.unreachable(describe(&e))),
        };
        let session = self
            .reconnect(&session, &failed)
            .await
            .map_err(|e| self.unreachable(format!("{failed}, and reconnecting failed: {e}")))?;
        match send(session.peer().clone()).await {
            Ok(answer) => Ok(answer),
            Err(ServiceError::McpError(e)) => Err(Unanswered::Refused(e)),
            Err(e) => Err(self.unreachable(format!("{} (after reconnecting)", describe(&e)))),
        }
    }

    /// Forward a tool call; a server that cannot be reached becomes a tool error that says
    /// what to do.
    pub(crate) async fn call(
        &self,
        original: String,
        mut request: CallToolRequestParams,
    ) -> Result<CallToolResponse, ErrorData> {
        request.name = original.into();
        match self
            .forward(|peer| {
                let r = request.clone();
                async move { peer.call_tool_once(r).await }
            })
            .await
        {
            Ok(response) => Ok(response),
            Err(Unanswered::Refused(e)) => Err(e),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into()),
        }
    }

    /// Forward `prompts/get`.
    pub(crate) async fn get_prompt(
        &self,
        original: String,
        mut request: GetPromptRequestParams,
    ) -> Result<GetPromptResponse, Unanswered> {
        request.name = original;
        self.forward(|peer| {
            let r = request.clone();
            async move { peer.get_prompt_once(r).await }
        })
        .await
    }

    /// Forward `resources/read`; the contents name the URI as it is here.
    pub(crate) async fn read_resource(
        &self,
        original: String,
        mut request: ReadResourceRequestParams,
    ) -> Result<ReadResourceResponse, Unanswered> {
        request.uri = original;
        let mut response = self
            .forward(|peer| {
                let r = request.clone();
                async move { peer.read_resource_once(r).await }
            })
            .await?;
        if let ReadResourceResponse::Complete(result) = &mut response {
            for contents in &mut result.contents {
                match contents {
                    ResourceContents::TextResourceContents { uri, .. }
                    | ResourceContents::BlobResourceContents { uri, .. } => *uri = exposed_uri(&self.name, uri),
                    _ => {}
                }
            }
        }
        Ok(response)
    }
}

impl Mounts {
    /// No mounts yet; the receiver hears which list of a live mount changed.
    pub(crate) fn new(own: Option<OwnDoor>) -> (Mounts, mpsc::UnboundedReceiver<ListKind>) {
        let (changes, rx) = mpsc::unbounded_channel();
        (Mounts { by_name: RwLock::default(), changes, own }, rx)
    }

    /// Connect to `url`, read its lists and offer them here (see [`super::mount_names`]).
    /// `taken` tells whether a tool name is already in use by the meta server itself.
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
        let shared = Arc::new(Shared {
            name: name.to_string(),
            job_name: job_name.to_string(),
            catalog: Default::default(),
            refreshing: Mutex::new(()),
            live: AtomicBool::new(false),
            changes: self.changes.clone(),
        });
        let (url, bearer) = match self.own.as_ref().and_then(|own| own.route(url)) {
            Some((url, token)) => (url, Some(token)),
            None => (url.to_string(), None),
        };
        let session = connect(&url, bearer.as_deref(), &shared).await.map_err(|why| MountError::Connect {
            job: job_name.into(),
            url: crate::http::capability::redact(&url),
            why,
        })?;
        let mount = Mount {
            name: name.to_string(),
            job_name: job_name.to_string(),
            url,
            bearer,
            shared,
            session: RwLock::new(Arc::new(session)),
        };
        let info = mount.info();
        // A refused mount is dropped, and its session closes with it.
        let mut by_name = self.by_name.write().await;
        if by_name.contains_key(name) {
            return Err(MountError::Duplicate(name.to_string()));
        }
        if let Some(tool) = info.tools.iter().find(|t| taken(t)) {
            return Err(MountError::Clash { job: job_name.into(), name: name.into(), tool: tool.clone() });
        }
        mount.shared.live.store(true, Ordering::SeqCst);
        by_name.insert(name.to_string(), Arc::new(mount));
        tracing::info!(
            mount = name,
            job = job_name,
            tools = info.tools.len(),
            prompts = info.prompts.len(),
            resources = info.resources.len(),
            "mounted"
        );
        Ok(info)
    }

    /// Remove a mount and close its connection.
    pub(crate) async fn remove(&self, name: &str) -> Result<MountInfo, MountError> {
        let mount = self.by_name.write().await.remove(name).ok_or_else(|| MountError::NotFound(name.to_string()))?;
        mount.shared.live.store(false, Ordering::SeqCst);
        mount.session.read().await.cancellation_token().cancel();
        Ok(mount.info())
    }

    /// Remove every mount of a deleted server; returns what was removed.
    pub(crate) async fn remove_job(&self, job_name: &str) -> Vec<MountInfo> {
        let names: Vec<String> =
            self.by_name.read().await.values().filter(|m| m.job_name == job_name).map(|m| m.name.clone()).collect();
        let mut removed = Vec::new();
        for n in &names {
            removed.extend(self.remove(n).await.ok());
        }
        removed
    }

    async fn all(&self) -> Vec<Arc<Mount>> {
        self.by_name.read().await.values().cloned().collect()
    }

    /// Every mounted tool, under its exposed name.
    pub(crate) async fn tools(&self) -> Vec<Tool> {
        let mounts = self.all().await;
        mounts
            .iter()
            .flat_map(|m| m.shared.catalog().tools.iter().map(|t| m.exposed_tool(t)).collect::<Vec<_>>())
            .collect()
    }

    /// Every mounted prompt, under its exposed name.
    pub(crate) async fn prompts(&self) -> Vec<Prompt> {
        let mounts = self.all().await;
        mounts
            .iter()
            .flat_map(|m| m.shared.catalog().prompts.iter().map(|p| m.exposed_prompt(p)).collect::<Vec<_>>())
            .collect()
    }

    /// Every mounted resource, under its exposed URI.
    pub(crate) async fn resources(&self) -> Vec<Resource> {
        let mounts = self.all().await;
        mounts
            .iter()
            .flat_map(|m| m.shared.catalog().resources.iter().map(|r| m.exposed_resource(r)).collect::<Vec<_>>())
            .collect()
    }

    /// Every mounted resource template, under its exposed URI template.
    pub(crate) async fn resource_templates(&self) -> Vec<ResourceTemplate> {
        let mounts = self.all().await;
        mounts
            .iter()
            .flat_map(|m| m.shared.catalog().templates.iter().map(|t| m.exposed_template(t)).collect::<Vec<_>>())
            .collect()
    }

    /// A mount by name.
    pub(crate) async fn get(&self, name: &str) -> Option<Arc<Mount>> {
        self.by_name.read().await.get(name).cloned()
    }

    /// The mount and original tool name behind an exposed tool name.
    pub(crate) async fn resolve_tool(&self, exposed: &str) -> Option<(Arc<Mount>, String)> {
        let (mount, original) = split_name(exposed)?;
        let mount = self.get(mount).await?;
        mount.has_tool(original).then(|| (mount, original.to_string()))
    }

    /// The mount and original prompt name behind an exposed prompt name.
    pub(crate) async fn resolve_prompt(&self, exposed: &str) -> Option<(Arc<Mount>, String)> {
        let (mount, original) = split_name(exposed)?;
        let mount = self.get(mount).await?;
        mount.has_prompt(original).then(|| (mount, original.to_string()))
    }

    pub(crate) async fn list(&self) -> Vec<MountInfo> {
        self.all().await.iter().map(|m| m.info()).collect()
    }
}
