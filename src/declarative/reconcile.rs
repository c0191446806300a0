//! One reconcile pass of an `MCPServer`: make its server if it has none (when its pool has a
//! slot), replace it when the spec changed, stop or start it as `spec.stopped` says, and write
//! what the server is into the status.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};

use super::{Context, ReconcileError, pools, status, warm};
use crate::{
    runtime::{
        LABEL_MCPPOOL, LABEL_RESOURCE, LABEL_SPEC_HASH, Phase, ServerInfo, StopReason,
        kubernetes::crd::{MCPServer, MCPServerSpec, ServerTemplate},
    },
    servers::CreateRequest,
    spec::{Args, LabelSelector, Owner, Resources},
};

/// How soon to look again while the server is changing (starting, stopping, waiting).
const SOON: Duration = Duration::from_secs(2);
/// How often a steady server's status (tools, last activity) is refreshed.
const STEADY: Duration = Duration::from_secs(30);

/// One pass, counted in the metrics: `success` when nothing is left to do but the steady
/// refresh, `requeued` when it waits for something, `error` when it failed.
pub(super) async fn reconcile(resource: Arc<MCPServer>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    use crate::metrics::{ReconcileOutcome, ResourceKind};
    let began = std::time::Instant::now();
    let result = pass(resource, ctx.clone()).await;
    let outcome = match &result {
        Ok(a) if *a == Action::await_change() || *a == Action::requeue(STEADY) => ReconcileOutcome::Success,
        Ok(_) => ReconcileOutcome::Requeued,
        Err(_) => ReconcileOutcome::Error,
    };
    ctx.servers.metrics().reconciled(ResourceKind::McpServer, outcome, began.elapsed());
    result
}

async fn pass(resource: Arc<MCPServer>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if resource.metadata.deletion_timestamp.is_some() {
        // Its Job is owned by it: the garbage collector takes the server.
        return Ok(Action::await_change());
    }
    let name = resource.name_any();
    let selector = LabelSelector::parse(&format!("{LABEL_RESOURCE}={name}")).expect("a resource name is a label value");
    let mut servers = ctx.servers.list(&selector).await?;
    // During a replacement the old server may still be listed (Terminating): the newest counts.
    servers.retain(|s| s.phase != Phase::Terminating);
    let server = servers.into_iter().max_by_key(|s| s.created_at);
    let pool = match &resource.spec.pool {
        Some(p) => match pools::get(&ctx, p).await? {
            Some(pool) => Some(pool),
            None => {
                let message = format!("MCPPool `{p}` does not exist in this namespace; create it or remove spec.pool");
                status::write(&ctx, &resource, status::without_server(Phase::Pending, "PoolMissing", message)).await?;
                return Ok(Action::requeue(Duration::from_secs(10)));
            }
        },
        None => None,
    };
    // The pool's own status (active, pending) is written by the pool's pass (pools.rs), not
    // here: one writer, and no two extra lists in every server's pass.
    match server {
        None => make(&ctx, &resource, pool.as_ref()).await,
        Some(server) => keep(&ctx, &resource, pool.as_ref(), server).await,
    }
}

/// No server yet: make one, unless the resource says stopped or its pool is full.
async fn make(
    ctx: &Context,
    resource: &MCPServer,
    pool: Option<&crate::runtime::kubernetes::crd::MCPPool>,
) -> Result<Action, ReconcileError> {
    let name = resource.name_any();
    if resource.spec.stopped {
        let message = "spec.stopped is true: no server runs; set it to false to start one".to_string();
        status::write(ctx, resource, status::without_server(Phase::Stopped, "StoppedByRequest", message)).await?;
        return Ok(Action::await_change());
    }
    if let Some(pool) = pool.filter(|p| p.spec.max_active.is_some()) {
        let occupancy = pools::occupancy(ctx, &pool.name_any()).await?;
        if !pools::has_slot(pool, &occupancy, &name) {
            let max = pool.spec.max_active.unwrap_or_default();
            let message = format!(
                "MCPPool `{}` runs its maxActive of {max} servers; this one starts, in creation order, when one is stopped or deleted",
                pool.name_any()
            );
            status::write(ctx, resource, status::without_server(Phase::Pending, "PoolFull", message)).await?;
            return Ok(Action::requeue(SOON));
        }
    }
    let template = match pool {
        Some(pool) => pools::with_defaults(&resource.spec.template, pool),
        None => resource.spec.template.clone(),
    };
    let request = match request(ctx, &template).await {
        Ok(r) => r,
        Err(message) => {
            status::write(ctx, resource, status::without_server(Phase::Failed, "SecretMissing", message)).await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    };
    let owner = Owner {
        api_version: MCPServer::api_version(&()).to_string(),
        kind: MCPServer::kind(&()).to_string(),
        name: name.clone(),
        uid: resource.uid().unwrap_or_default(),
    };
    let mut labels = BTreeMap::from([
        (LABEL_RESOURCE.to_string(), name.clone()),
        (LABEL_SPEC_HASH.to_string(), spec_hash(&resource.spec)),
    ]);
    if let Some(pool) = pool {
        labels.insert(LABEL_MCPPOOL.to_string(), pool.name_any());
    }
    let shape = move |id: &mut crate::spec::Identity| {
        id.labels.extend(labels);
        id.owner = Some(owner);
    };
    // A resource that asks for nothing beyond its pool takes a warm member when one is Ready.
    if let Some(pool) = pool.filter(|p| p.spec.warm > 0 && warm::fits(&resource.spec.template, p)) {
        let _one_at_a_time = ctx.claims.lock().await;
        let members = warm::members(ctx, &pool.name_any()).await?;
        let hash = warm::member_hash(pool);
        if let Some(member) = members.iter().find(|m| m.ready && m.hash.as_deref() == Some(hash.as_str())) {
            match ctx.servers.hand_out(&member.name, request.clone(), shape.clone()).await {
                Ok(info) => {
                    tracing::info!(resource = %name, server = %info.job_name, "handed a warm member to an MCPServer");
                    status::write(ctx, resource, status::of_server(&info, None)).await?;
                    return Ok(Action::requeue(SOON));
                }
                Err(e) => tracing::warn!(resource = %name, member = %member.name, error = %e,
                    "could not hand out a warm member; starting a new server"),
            }
        }
    }
    match ctx.servers.create_with(request, None, shape).await {
        Ok(info) => {
            tracing::info!(resource = %name, server = %info.job_name, "made the server of an MCPServer");
            ctx.servers.watch_ready(&info.job_name);
            status::write(ctx, resource, status::of_server(&info, None)).await?;
            Ok(Action::requeue(SOON))
        }
        Err(e) => {
            // A spec the tools would refuse (or a full quota): said in the status; a new
            // generation is reconciled at once, a quota is tried again.
            let message = crate::http::capability::redact(&e.to_string());
            status::write(ctx, resource, status::without_server(Phase::Failed, "CreateFailed", message)).await?;
            Ok(Action::requeue(Duration::from_secs(15)))
        }
    }
}

/// A server exists: replace it if the spec changed, stop or start it as asked, report it.
async fn keep(
    ctx: &Context,
    resource: &MCPServer,
    pool: Option<&crate::runtime::kubernetes::crd::MCPPool>,
    server: ServerInfo,
) -> Result<Action, ReconcileError> {
    let job = server.job_name.clone();
    if server.labels.get(LABEL_SPEC_HASH) != Some(&spec_hash(&resource.spec)) {
        tracing::info!(resource = %resource.name_any(), server = %job, "the MCPServer's spec changed; replacing its server");
        ctx.servers.replace(&job).await?;
        let message = format!("the spec changed: server `{job}` is replaced by a new one");
        status::write(ctx, resource, status::without_server(Phase::Pending, "SpecChanged", message)).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let stopped = server.phase == Phase::Stopped;
    if resource.spec.stopped && !stopped {
        let info = ctx.servers.stop(&job, StopReason::StoppedByRequest).await?;
        status::write(ctx, resource, status::of_server(&info, None)).await?;
        return Ok(Action::await_change());
    }
    if !resource.spec.stopped && stopped {
        if let Some((pool, max)) = pool.and_then(|p| Some(p).zip(p.spec.max_active)) {
            let occupancy = pools::occupancy(ctx, &pool.name_any()).await?;
            if occupancy.active >= max as usize {
                let message = format!("MCPPool `{}` is full; the server starts when a slot frees", pool.name_any());
                status::write(ctx, resource, status::of_server(&server, Some(message))).await?;
                return Ok(Action::requeue(SOON));
            }
        }
        let info = ctx.servers.resume(&job, false, None, None).await?;
        ctx.servers.watch_ready(&job);
        status::write(ctx, resource, status::of_server(&info, None)).await?;
        return Ok(Action::requeue(SOON));
    }
    let info = ctx.servers.status(&job).await?;
    let next = if info.phase == Phase::Ready || info.phase == Phase::Stopped { STEADY } else { SOON };
    status::write(ctx, resource, status::of_server(&info, None)).await?;
    Ok(Action::requeue(next))
}

/// `create_mcp_server`'s request for `t`, with the secret variables read from their Secrets
/// (an error names the Secret or key that is missing).
pub(super) async fn request(ctx: &Context, t: &ServerTemplate) -> Result<CreateRequest, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut secret_env = BTreeMap::new();
    for from in &t.secret_env_from {
        let secret = secrets
            .get_opt(&from.secret_name)
            .await
            .map_err(|e| format!("cannot read Secret `{}` for {}: {e}", from.secret_name, from.name))?
            .ok_or_else(|| {
                format!("Secret `{}` (for {}) does not exist in this namespace", from.secret_name, from.name)
            })?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&from.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| format!("Secret `{}` has no key `{}` (for {})", from.secret_name, from.key, from.name))?;
        secret_env.insert(from.name.clone(), value);
    }
    Ok(CreateRequest {
        preset: t.preset.clone(),
        runtime_exec: t.runtime_exec.clone(),
        runtime_mcp: t.runtime_mcp.clone(),
        runtime_args: t.runtime_args.clone().map(Args::List),
        image: t.image.clone(),
        env: Some(t.env.clone()).filter(|e| !e.is_empty()),
        secret_env: Some(secret_env).filter(|e| !e.is_empty()),
        ttl_seconds: t.ttl_seconds,
        idle_timeout_seconds: t.idle_timeout_seconds,
        labels: Some(t.labels.clone()).filter(|l| !l.is_empty()),
        resources: t.resources.as_ref().map(Resources::from),
        image_transport: t.image_transport,
        image_port: t.image_port,
        egress: t.egress,
        ..CreateRequest::default()
    })
}

/// A stable hash (FNV-1a, hex) of what makes the server: everything but `stopped`, which
/// stops and starts the same server instead of replacing it.
pub(super) fn spec_hash(spec: &MCPServerSpec) -> String {
    let text = serde_json::to_string(&(&spec.template, &spec.pool)).unwrap_or_default();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_changes_with_the_spec_but_not_with_stopped() {
        let mut spec = MCPServerSpec::default();
        spec.template.preset = Some("time".into());
        let h = spec_hash(&spec);
        assert_eq!(h.len(), 16);
        spec.stopped = true;
        assert_eq!(spec_hash(&spec), h, "stopping is not a new server");
        spec.template.ttl_seconds = Some(60);
        assert_ne!(spec_hash(&spec), h);
    }
}
