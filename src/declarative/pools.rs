//! `MCPPool`: how many of a pool's servers may run (`maxActive`), who is next when one frees
//! (creation order), the defaults its servers take, and the pool's pass: every [`EVERY`] the
//! leader keeps each pool's warm members ([`warm`]) and writes its status (`active`,
//! `pending`, `warmReady`). Each pass is the pool's reconcile in the metrics (`mcppool`).

use std::{sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};

use super::{Context, ReconcileError, warm};
use crate::{
    runtime::{
        LABEL_MCPPOOL, LABEL_RESOURCE, Phase, ServerInfo,
        kubernetes::crd::{MCPPool, MCPPoolStatus, MCPServer, ServerTemplate},
    },
    spec::LabelSelector,
};
use tokio_util::sync::CancellationToken;

/// How often the leader passes over the pools.
const EVERY: Duration = Duration::from_secs(3);

/// What a pool holds now.
pub(super) struct Occupancy {
    /// The pool's servers that are not Stopped.
    pub(super) active: usize,
    /// The pool's resources that want a server and have none, oldest first.
    pub(super) waiting: Vec<String>,
}

pub(super) async fn get(ctx: &Context, name: &str) -> Result<Option<MCPPool>, ReconcileError> {
    let pools: Api<MCPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(pools.get_opt(name).await?)
}

/// The pool's servers and the resources waiting for one.
pub(super) async fn occupancy(ctx: &Context, pool: &str) -> Result<Occupancy, ReconcileError> {
    let selector = LabelSelector::parse(&format!("{LABEL_MCPPOOL}={pool}")).expect("a pool name is a label value");
    let servers: Vec<ServerInfo> = ctx.servers.list_brief(&selector).await?;
    let active = servers.iter().filter(|s| s.phase != Phase::Stopped).count();
    let served: Vec<&str> = servers.iter().filter_map(|s| s.labels.get(LABEL_RESOURCE).map(String::as_str)).collect();
    let mut waiting: Vec<MCPServer> = ctx
        .resources()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.spec.pool.as_deref() == Some(pool)
                && !r.spec.stopped
                && r.metadata.deletion_timestamp.is_none()
                && !served.contains(&r.name_any().as_str())
        })
        .collect();
    waiting.sort_by(|a, b| {
        let at = |r: &MCPServer| r.metadata.creation_timestamp.clone().map(|t| t.0);
        at(a).cmp(&at(b)).then_with(|| a.name_any().cmp(&b.name_any()))
    });
    Ok(Occupancy { active, waiting: waiting.iter().map(|r| r.name_any()).collect() })
}

/// Whether `resource` may have a server now: the pool has a free slot for it once the older
/// waiting resources have theirs.
pub(super) fn has_slot(pool: &MCPPool, occupancy: &Occupancy, resource: &str) -> bool {
    let Some(max) = pool.spec.max_active else { return true };
    let ahead = occupancy.waiting.iter().position(|r| r == resource).unwrap_or(occupancy.waiting.len());
    occupancy.active + ahead < max as usize
}

/// `spec` with every unset field taken from the pool's template, its preset and its default
/// TTL and idle timeout.
pub(super) fn with_defaults(spec: &ServerTemplate, pool: &MCPPool) -> ServerTemplate {
    let base = pool.spec.template.clone().unwrap_or_default();
    let mut out = spec.clone();
    let has_source = spec.preset.is_some() || spec.runtime_exec.is_some() || spec.image.is_some();
    if !has_source {
        out.preset = base.preset.or_else(|| pool.spec.preset.clone());
        out.runtime_exec = base.runtime_exec;
        out.runtime_mcp = out.runtime_mcp.or(base.runtime_mcp);
        out.image = base.image;
        out.image_transport = out.image_transport.or(base.image_transport);
        out.image_port = out.image_port.or(base.image_port);
        out.runtime_args = out.runtime_args.or(base.runtime_args);
    }
    for (k, v) in base.env {
        out.env.entry(k).or_insert(v);
    }
    for (k, v) in base.labels {
        out.labels.entry(k).or_insert(v);
    }
    if out.secret_env_from.is_empty() {
        out.secret_env_from = base.secret_env_from;
    }
    out.resources = out.resources.or(base.resources);
    out.egress = out.egress.or(base.egress);
    out.ttl_seconds = out.ttl_seconds.or(base.ttl_seconds).or(pool.spec.default_ttl_seconds);
    out.idle_timeout_seconds =
        out.idle_timeout_seconds.or(base.idle_timeout_seconds).or(pool.spec.default_idle_timeout_seconds);
    out
}

/// Pass over every pool until `term` ends (the leader's term).
pub(super) async fn keep(ctx: Arc<Context>, term: CancellationToken) {
    loop {
        if let Err(e) = look(&ctx).await {
            tracing::warn!(error = %e, "could not list the MCPPools");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = term.cancelled() => return,
        }
    }
}

/// One pass over every pool; a pool that fails is logged and the others are still kept.
async fn look(ctx: &Context) -> Result<(), ReconcileError> {
    use crate::metrics::{ReconcileOutcome, ResourceKind};
    let pools: Api<MCPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for pool in pools.list(&ListParams::default()).await?.items {
        if pool.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let began = std::time::Instant::now();
        let outcome = match pass(ctx, &pool).await {
            Ok(true) => ReconcileOutcome::Success,
            Ok(false) => ReconcileOutcome::Requeued,
            Err(e) => {
                tracing::warn!(pool = %pool.name_any(), error = %e, "could not keep the MCPPool");
                ReconcileOutcome::Error
            }
        };
        ctx.servers.metrics().reconciled(ResourceKind::McpPool, outcome, began.elapsed());
    }
    Ok(())
}

/// One pool's pass: its warm members, then its status. `Ok(true)` when nothing is left to do.
async fn pass(ctx: &Context, pool: &MCPPool) -> Result<bool, ReconcileError> {
    let warm = warm::keep(ctx, pool).await?;
    let occupancy = occupancy(ctx, &pool.name_any()).await?;
    write_status(ctx, pool, &occupancy, warm.ready).await?;
    Ok(warm.settled)
}

/// Write the pool's status unless it says that already.
async fn write_status(
    ctx: &Context,
    pool: &MCPPool,
    occupancy: &Occupancy,
    warm_ready: u32,
) -> Result<(), ReconcileError> {
    let status = MCPPoolStatus {
        active: occupancy.active as u32,
        warm_ready,
        pending: occupancy.waiting.len() as u32,
        observed_generation: pool.metadata.generation,
    };
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let pools: Api<MCPPool> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    match pools.patch_status(&pool.name_any(), &PatchParams::default(), &patch).await {
        // Deleted meanwhile: nothing to report on.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max: Option<u32>) -> MCPPool {
        let mut p = MCPPool::new("clocks", Default::default());
        p.spec.max_active = max;
        p.spec.preset = Some("time".into());
        p.spec.default_ttl_seconds = Some(600);
        p
    }

    #[test]
    fn a_slot_goes_to_the_oldest_waiting_resource_first() {
        let occupancy = Occupancy { active: 1, waiting: vec!["old".into(), "new".into()] };
        assert!(has_slot(&pool(Some(2)), &occupancy, "old"));
        assert!(!has_slot(&pool(Some(2)), &occupancy, "new"), "the older one is ahead");
        assert!(!has_slot(&pool(Some(1)), &occupancy, "old"));
        assert!(has_slot(&pool(None), &occupancy, "new"), "no maxActive: no limit");
    }

    #[test]
    fn unset_fields_come_from_the_pool() {
        let spec = ServerTemplate { ttl_seconds: None, idle_timeout_seconds: Some(5), ..Default::default() };
        let filled = with_defaults(&spec, &pool(None));
        assert_eq!(filled.preset.as_deref(), Some("time"));
        assert_eq!(filled.ttl_seconds, Some(600));
        assert_eq!(filled.idle_timeout_seconds, Some(5), "the server's own value wins");
        let own = ServerTemplate { runtime_exec: Some("uvx".into()), ..Default::default() };
        assert_eq!(with_defaults(&own, &pool(None)).preset, None, "a server with a source keeps it");
    }
}
