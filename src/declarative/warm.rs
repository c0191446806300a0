//! An `MCPPool`'s warm members: servers started ahead of the pool's `MCPServer`s, owned by the
//! pool and hidden from lists (label [`LABEL_WARM`]), each handed to a resource of the pool that
//! asks for nothing beyond the pool's defaults, as `--warm-pool` members go to plain creates.
//! Each pool's pass ([`pools::keep`]) keeps them: it starts what is missing (one member per
//! pass) and deletes members made from an older spec of the pool or beyond its `warm`.

use k8s_openapi::api::batch::v1::Job;
use kube::{Api, Resource, ResourceExt, api::ListParams};

use super::{Context, ReconcileError, pools, reconcile};
use crate::{
    runtime::{
        LABEL_SPEC_HASH, LABEL_WARM, Phase,
        kubernetes::crd::{MCPPool, MCPServerSpec, ServerTemplate},
    },
    spec::Owner,
};

/// One warm member as the cluster has it.
pub(super) struct Member {
    pub(super) name: String,
    pub(super) hash: Option<String>,
    pub(super) ready: bool,
}

/// The spec hash of what a pool's members run: a resource of the pool that sets nothing of its
/// own. A resource fits a member when [`fits`].
pub(super) fn member_hash(pool: &MCPPool) -> String {
    let template = pools::with_defaults(&ServerTemplate::default(), pool);
    reconcile::spec_hash(&MCPServerSpec { template, pool: Some(pool.name_any()), stopped: false })
}

/// Whether `template` (a resource's) runs exactly what the pool's members run.
pub(super) fn fits(template: &ServerTemplate, pool: &MCPPool) -> bool {
    pools::with_defaults(template, pool) == pools::with_defaults(&ServerTemplate::default(), pool)
}

/// The pool's warm members that are not being deleted, oldest first.
pub(super) async fn members(ctx: &Context, pool: &str) -> Result<Vec<Member>, ReconcileError> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut listed = jobs.list(&ListParams::default().labels(&format!("{LABEL_WARM}={pool}"))).await?.items;
    listed.retain(|j| j.metadata.deletion_timestamp.is_none());
    listed.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
    let mut out = Vec::with_capacity(listed.len());
    for job in listed {
        let name = job.name_any();
        let ready = ctx.servers.status(&name).await.is_ok_and(|s| s.phase == Phase::Ready);
        out.push(Member { hash: job.labels().get(LABEL_SPEC_HASH).cloned(), name, ready });
    }
    Ok(out)
}

/// What one look at a pool's warm members found.
pub(super) struct Warm {
    /// Members of the pool's current spec that are Ready (at most `warm`).
    pub(super) ready: u32,
    /// Nothing left to do: every member Ready, none stale or extra.
    pub(super) settled: bool,
}

/// Keep `pool`'s warm members: delete those of an older spec and those beyond `warm`, and
/// start one that is missing (not waited for: the next look counts it).
pub(super) async fn keep(ctx: &Context, pool: &MCPPool) -> Result<Warm, ReconcileError> {
    let name = pool.name_any();
    let hash = member_hash(pool);
    let members = members(ctx, &name).await?;
    let (current, stale): (Vec<Member>, Vec<Member>) =
        members.into_iter().partition(|m| m.hash.as_deref() == Some(hash.as_str()));
    for old in &stale {
        tracing::info!(pool = %name, server = %old.name, "deleting a warm member of an older pool spec");
        ctx.servers.replace(&old.name).await?;
    }
    let want = pool.spec.warm as usize;
    for extra in current.iter().skip(want) {
        tracing::info!(pool = %name, server = %extra.name, "deleting a warm member beyond the pool's warm");
        ctx.servers.replace(&extra.name).await?;
    }
    if current.len() < want {
        start_member(ctx, pool, &hash).await;
    }
    let ready = current.iter().take(want).filter(|m| m.ready).count();
    Ok(Warm { ready: ready as u32, settled: ready == want && stale.is_empty() && current.len() == want })
}

/// Start one member of `pool` (not waited for: the next look counts it).
async fn start_member(ctx: &Context, pool: &MCPPool, hash: &str) {
    let name = pool.name_any();
    let template = pools::with_defaults(&ServerTemplate::default(), pool);
    let request = match reconcile::request(ctx, &template).await {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(pool = %name, error = %why, "cannot start a warm member");
            return;
        }
    };
    let owner = Owner {
        api_version: MCPPool::api_version(&()).to_string(),
        kind: MCPPool::kind(&()).to_string(),
        name: name.clone(),
        uid: pool.uid().unwrap_or_default(),
    };
    let shape = |id: &mut crate::spec::Identity| {
        id.labels.insert(LABEL_WARM.to_string(), name.clone());
        id.labels.insert(LABEL_SPEC_HASH.to_string(), hash.to_string());
        // Idle time counts from the hand-out; a member waiting for one is not idle.
        id.idle_timeout = None;
        id.owner = Some(owner);
    };
    match ctx.servers.create_with(request, None, shape).await {
        Ok(info) => tracing::info!(pool = %name, server = %info.job_name, "started a warm member"),
        Err(e) => tracing::warn!(pool = %name, error = %e, "cannot start a warm member"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_fits_a_member_when_it_asks_for_nothing_beyond_the_pool() {
        let mut pool = MCPPool::new("clocks", Default::default());
        pool.spec.preset = Some("time".into());
        pool.spec.default_ttl_seconds = Some(600);
        assert!(fits(&ServerTemplate::default(), &pool));
        let same = ServerTemplate { preset: Some("time".into()), ttl_seconds: Some(600), ..Default::default() };
        assert!(fits(&same, &pool), "spelling out the pool's defaults is the same server");
        let own = ServerTemplate { ttl_seconds: Some(60), ..Default::default() };
        assert!(!fits(&own, &pool));
        let before = member_hash(&pool);
        pool.spec.default_ttl_seconds = Some(60);
        assert_ne!(member_hash(&pool), before, "a pool spec change makes its members stale");
    }
}
