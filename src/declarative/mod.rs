//! Declarative servers: a controller that keeps one server per `MCPServer` resource, through
//! [`Servers`] — the same path `create_mcp_server` takes (quotas, presets, TTL, tokens) — so a
//! resource-made server is a server like any other, with a `source` that says where it came from.
//!
//! It sits above `servers/` (like the MCP face) because it drives the owner of servers; the
//! resource types live with the Kubernetes runtime ([`crd`](crate::runtime::kubernetes::crd)),
//! whose delete path also needs them. Reconciling is level-based: each pass reads the resource,
//! its server and its pool, does at most one thing, writes the status, and asks to look again
//! while something is still changing.

mod pools;
mod reconcile;
mod status;
mod tool;
mod warm;

pub(crate) use tool::{PoolError, pooled};

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{Controller, controller::Action, watcher},
};

use crate::{
    runtime::{
        LABEL_MANAGED_BY, MANAGED_BY,
        kubernetes::{crd::MCPServer, lease::while_leading},
    },
    servers::Servers,
    tasks::Tasks,
};

/// `--controller`: whether `serve --runtime kubernetes` reconciles `MCPServer` resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ControllerMode {
    /// When the CRDs are installed (checked at startup).
    #[default]
    Auto,
    On,
    Off,
}

/// Why one reconcile pass failed (it is retried with a backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Servers(#[from] crate::servers::ServersError),
}

/// What every reconcile pass needs.
pub(crate) struct Context {
    pub(crate) servers: Arc<Servers>,
    pub(crate) client: Client,
    pub(crate) namespace: String,
    /// Held while a warm member is chosen and handed out: two resources never get the same.
    pub(crate) claims: tokio::sync::Mutex<()>,
}

impl Context {
    pub(crate) fn resources(&self) -> Api<MCPServer> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// Whether the `MCPServer` CRD is installed (a list in the namespace answers).
async fn installed(api: &Api<MCPServer>) -> bool {
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "MCPServer resources cannot be listed");
            false
        }
    }
}

/// Start the controller on `tasks` when `mode` and the cluster say so; `Ok(false)` when it does
/// not run. With `On`, missing CRDs are an error a person can act on.
pub(crate) async fn start(servers: Arc<Servers>, mode: ControllerMode, tasks: &Tasks) -> Result<bool, String> {
    let Some((client, namespace)) = servers.kubernetes() else { return Ok(false) };
    if mode == ControllerMode::Off {
        return Ok(false);
    }
    let ctx = Arc::new(Context { servers, client, namespace, claims: Default::default() });
    let resources = ctx.resources();
    if !installed(&resources).await {
        if mode == ControllerMode::On {
            return Err(format!(
                "--controller on: MCPServer resources cannot be listed in namespace `{}`; install the CRDs \
                 (`mcp-ephemeral crds | kubectl apply -f -`) and grant the Role the mcpservers rules, or use --controller auto",
                ctx.namespace
            ));
        }
        tracing::info!("the MCPServer CRD is not installed; the controller does not run (--controller auto)");
        return Ok(false);
    }
    let leadership = ctx.servers.leadership();
    let stop = tasks.token().clone();
    tasks.spawn(while_leading(leadership, stop, move |term| run(ctx.clone(), term)));
    Ok(true)
}

/// Reconcile until `term` ends (this replica stops leading, or shuts down): only the leader
/// reconciles, so two replicas never make a resource's server twice.
async fn run(ctx: Arc<Context>, term: tokio_util::sync::CancellationToken) {
    tracing::info!(namespace = %ctx.namespace, "leading: reconciling MCPServer resources");
    let pools = pools::keep(ctx.clone(), term.clone());
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let controller = Controller::new(ctx.resources(), watcher::Config::default())
        .owns(jobs, managed)
        .graceful_shutdown_on(async move { term.cancelled().await })
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        });
    tokio::join!(controller, pools);
}

/// A failed pass is tried again after a pause (the API server or the cluster may be busy).
fn error_policy(resource: Arc<MCPServer>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    use kube::ResourceExt;
    tracing::warn!(resource = %resource.name_any(), error = %error, "reconcile failed; trying again in 5 s");
    Action::requeue(Duration::from_secs(5))
}
