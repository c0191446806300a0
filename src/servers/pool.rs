//! Warm pools: for a preset with `--warm-pool PRESET=N`, N servers are kept started and past
//! their `initialize` handshake, so `create_mcp_server` hands one out instead of waiting for
//! `uvx`/`npx`. A member is handed out once, never shared, and a replacement starts at once.
//!
//! Members are ordinary servers of the runtime carrying the label `mcp-ephemeral.dev/pool`;
//! runtimes leave them out of `list` (so they are not anyone's servers and the TTL reaper does
//! not see them). Handing one out ([`Runtime::adopt`]) gives it the caller's labels and TTL.
//! A member fits a request when the request launches exactly what the pool launches (one
//! comparison of [`Launch`]es), so a member is never handed to a request that would run
//! something else, with other env, resources or API access.
//!
//! Pools are kept by the leader only ([`keep`], one call per term of leadership). A new leader
//! first adopts the members the cluster already holds (a previous leader's, a previous run's)
//! that run exactly what its pool runs and are Ready or starting, and deletes the rest; only then
//! does it start members, so a failover neither duplicates nor throws away warm servers. A
//! follower hands nothing out: its creates start new servers.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    runtime::{LABEL_POOL, MemberState, Runtime, RuntimeError, kubernetes::lease::Leadership},
    spec::{Identity, Launch, ServerSpec},
    tasks::Tasks,
};

/// Longest wait between failed attempts to start a member.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What `get_version` shows of one pool.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PoolStatus {
    pub preset: String,
    /// Members wanted.
    pub size: usize,
    /// Ready to be handed out now.
    pub ready: usize,
    /// Being started.
    pub starting: usize,
    /// Handed out since the meta server started.
    pub handed_out: u64,
    /// Why the last start failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Members {
    ready: VecDeque<String>,
    starting: usize,
    handed_out: u64,
    last_error: Option<String>,
}

struct Pool {
    preset: String,
    size: usize,
    /// What every member runs, and the identity new members are made like (a fresh name and
    /// times each). A request fits when its launch is equal to this one's.
    template: ServerSpec,
    members: Mutex<Members>,
    wake: Notify,
}

impl Pool {
    /// The spec of a new member: the template's launch under a fresh identity that marks it
    /// as a pool member.
    fn member_spec(&self) -> ServerSpec {
        let labels = BTreeMap::from([(LABEL_POOL.to_string(), self.preset.clone())]);
        let id = &self.template.identity;
        let mut identity = Identity::fresh(&self.preset, id.preset.clone(), labels, id.ttl);
        // Each member its own token (a Kubernetes member keeps it when handed out: its pod
        // already runs with it).
        identity.capability = id.capability.as_ref().map(|_| crate::http::capability::Capability::generate());
        ServerSpec { identity, launch: self.template.launch.clone() }
    }
}

/// One pool to keep: the preset's name, how many members, and a spec resolved for the preset.
pub(crate) struct PoolSpec {
    pub preset: String,
    pub size: usize,
    pub(crate) template: ServerSpec,
}

/// All warm pools of a meta server.
pub(crate) struct WarmPools {
    runtime: Runtime,
    pools: BTreeMap<String, Arc<Pool>>,
    ready_timeout: Duration,
    tasks: Tasks,
    /// Members are handed out only while this replica leads (the leader's lists are the true ones).
    leadership: Leadership,
}

impl WarmPools {
    /// The pools, empty; [`keep`] fills them while this replica leads.
    pub(crate) fn new(
        runtime: Runtime,
        specs: Vec<PoolSpec>,
        ready_timeout: Duration,
        tasks: Tasks,
        leadership: Leadership,
    ) -> WarmPools {
        let pools = specs
            .into_iter()
            .filter(|p| p.size > 0)
            .map(|p| {
                let pool = Pool {
                    preset: p.preset.clone(),
                    size: p.size,
                    template: p.template,
                    members: Mutex::default(),
                    wake: Notify::new(),
                };
                (p.preset, Arc::new(pool))
            })
            .collect();
        WarmPools { runtime, pools, ready_timeout, tasks, leadership }
    }

    /// A ready member that runs exactly what `launch` asks for, taken out of its pool (none on
    /// a replica that does not lead).
    pub(crate) fn take(&self, launch: &Launch) -> Option<String> {
        if !self.leadership.is_leader() {
            return None;
        }
        let pool = self.pools.values().find(|p| p.template.launch == *launch)?;
        let mut members = pool.members.lock().expect("pool poisoned");
        let name = members.ready.pop_front()?;
        members.handed_out += 1;
        drop(members);
        pool.wake.notify_one();
        Some(name)
    }

    pub(crate) fn status(&self) -> Vec<PoolStatus> {
        self.pools
            .values()
            .map(|p| {
                let m = p.members.lock().expect("pool poisoned");
                PoolStatus {
                    preset: p.preset.clone(),
                    size: p.size,
                    ready: m.ready.len(),
                    starting: m.starting,
                    handed_out: m.handed_out,
                    last_error: m.last_error.clone(),
                }
            })
            .collect()
    }

    /// Stop refilling and delete every member not handed out; with leader election, leave them
    /// for the next leader to adopt instead (they end at their TTL if none comes).
    pub(crate) async fn shutdown(&self) {
        self.tasks.cancel();
        if self.leadership.elected() {
            return;
        }
        let names: Vec<String> = self
            .pools
            .values()
            .flat_map(|p| std::mem::take(&mut p.members.lock().expect("pool poisoned").ready))
            .collect();
        let deletes = names.iter().map(|n| self.runtime.delete(n, false));
        for result in futures::future::join_all(deletes).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not delete a pool member");
            }
        }
    }
}

/// One term of leadership over the pools (all of `pools`, or none configured): adopt what the
/// runtime holds, delete the members nobody can use, keep every pool at its size until `stop`.
/// A term that ends because leadership moved forgets its members: the next leader adopts them.
pub(crate) async fn keep(runtime: Runtime, pools: Option<Arc<WarmPools>>, stop: CancellationToken) {
    let specs: BTreeMap<String, ServerSpec> =
        pools.iter().flat_map(|p| p.pools.iter().map(|(preset, pool)| (preset.clone(), pool.member_spec()))).collect();
    for pool in pools.iter().flat_map(|p| p.pools.values()) {
        let mut m = pool.members.lock().expect("pool poisoned");
        m.ready.clear();
        m.starting = 0;
    }
    // Without the list a new member could duplicate one that exists: wait for it.
    let mut backoff = Duration::from_secs(1);
    let found = loop {
        match runtime.pool_members(&specs).await {
            Ok(found) => break found,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot list the warm-pool members in the cluster");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    let mut adopting = Vec::new();
    for member in found {
        let pool = pools.as_ref().and_then(|p| p.pools.get(&member.preset));
        let kept = match (pool, member.state) {
            (Some(pool), state @ (MemberState::Ready | MemberState::Starting)) => {
                let mut m = pool.members.lock().expect("pool poisoned");
                let room = m.ready.len() + m.starting < pool.size;
                if room && state == MemberState::Ready {
                    m.ready.push_back(member.name.clone());
                } else if room {
                    m.starting += 1;
                    adopting.push((pool.clone(), member.name.clone()));
                }
                room
            }
            _ => false,
        };
        if kept {
            tracing::info!(preset = %member.preset, server = %member.name, state = ?member.state, "adopted a warm-pool member");
        } else {
            tracing::info!(preset = %member.preset, server = %member.name, state = ?member.state, "deleting a warm-pool member no pool can use");
            if let Err(e) = runtime.delete(&member.name, false).await {
                tracing::warn!(server = %member.name, error = %e, "could not delete a warm-pool member");
            }
        }
    }
    let Some(pools) = pools else {
        stop.cancelled().await;
        return;
    };
    let mut work: Vec<futures::future::BoxFuture<'static, ()>> =
        pools.pools.values().map(|pool| keep_filled(pools.clone(), pool.clone(), stop.clone()).boxed()).collect();
    for (pool, name) in adopting {
        work.push(finish_adopting(pools.clone(), pool, name, stop.clone()).boxed());
    }
    futures::future::join_all(work).await;
    if !pools.tasks.is_cancelled() {
        // Leadership moved (this is no shutdown): the members are the next leader's.
        for pool in pools.pools.values() {
            pool.members.lock().expect("pool poisoned").ready.clear();
        }
    }
}

/// Wait for an adopted member that was still starting; one that fails is deleted and replaced.
async fn finish_adopting(pools: Arc<WarmPools>, pool: Arc<Pool>, name: String, stop: CancellationToken) {
    let ready = tokio::select! {
        r = pools.runtime.wait_ready(&name, pools.ready_timeout, None) => Some(r),
        // Left as it is, for whoever leads next.
        _ = stop.cancelled() => None,
    };
    let failed = {
        let mut m = pool.members.lock().expect("pool poisoned");
        m.starting -= 1;
        match ready {
            Some(Ok(_)) if !stop.is_cancelled() => {
                tracing::info!(preset = %pool.preset, server = %name, "adopted pool member ready");
                m.ready.push_back(name.clone());
                false
            }
            Some(Err(e)) => {
                m.last_error = Some(e.to_string());
                true
            }
            _ => false,
        }
    };
    if failed {
        let _ = pools.runtime.delete(&name, false).await;
    }
    pool.wake.notify_one();
}

/// Keep `pool` at its size until `stop`: start members one at a time, back off after failures.
async fn keep_filled(pools: Arc<WarmPools>, pool: Arc<Pool>, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let wanted = {
            let m = pool.members.lock().expect("pool poisoned");
            pool.size.saturating_sub(m.ready.len() + m.starting)
        };
        if wanted == 0 {
            tokio::select! {
                _ = pool.wake.notified() => continue,
                _ = stop.cancelled() => return,
            }
        }
        let spec = pool.member_spec();
        // Cut off mid-create, the member may exist under the name it was given.
        let planned = spec.identity.name.clone();
        pool.members.lock().expect("pool poisoned").starting += 1;
        let started = tokio::select! {
            r = start_member(&pools, spec) => r,
            _ = stop.cancelled() => Err((Some(planned), RuntimeError::ShuttingDown)),
        };
        let failed = {
            let mut m = pool.members.lock().expect("pool poisoned");
            m.starting -= 1;
            match started {
                Ok(name) if !stop.is_cancelled() => {
                    tracing::info!(preset = %pool.preset, server = %name, "pool member ready");
                    m.ready.push_back(name);
                    m.last_error = None;
                    None
                }
                Ok(name) => Some((Some(name), RuntimeError::ShuttingDown)),
                Err((name, why)) => {
                    m.last_error = Some(why.to_string());
                    Some((name, why))
                }
            }
        };
        let Some((name, why)) = failed else {
            backoff = Duration::from_secs(1);
            continue;
        };
        if let Some(name) = name {
            let runtime = pools.runtime.clone();
            pools.tasks.spawn(async move {
                let _ = runtime.delete(&name, false).await;
            });
        }
        if stop.is_cancelled() {
            return;
        }
        tracing::warn!(preset = %pool.preset, error = %why, retry_in = ?backoff, "cannot start a pool member");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Create a member and wait until it is ready; its name (as the runtime gave it) either way,
/// when it was created, so that a failed member can be deleted.
async fn start_member(pools: &WarmPools, spec: ServerSpec) -> Result<String, (Option<String>, RuntimeError)> {
    let info = pools.runtime.create(spec).await.map_err(|e| (None, e))?;
    let name = info.job_name;
    match pools.runtime.wait_ready(&name, pools.ready_timeout, None).await {
        Ok(_) => Ok(name),
        Err(e) => Err((Some(name), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        presets::Presets,
        runtime::local::{LocalConfig, LocalRuntime},
        servers::{CreateRequest, Policy, resolve},
    };

    fn time_spec() -> ServerSpec {
        let presets = Presets::load(None).unwrap();
        let req = CreateRequest { preset: Some("time".into()), ..Default::default() };
        let runtime = Runtime::Local(Arc::new(LocalRuntime::new(LocalConfig::default(), Tasks::new())));
        resolve(req, &presets, &Policy::default(), runtime.capabilities()).unwrap()
    }

    /// A pool of `time` with one ready member, without starting anything.
    fn pools_with_a_member() -> WarmPools {
        let runtime = Runtime::Local(Arc::new(LocalRuntime::new(LocalConfig::default(), Tasks::new())));
        let spec = PoolSpec { preset: "time".into(), size: 1, template: time_spec() };
        let pools = WarmPools::new(runtime, vec![spec], Duration::from_secs(1), Tasks::new(), Leadership::always());
        pools.pools["time"].members.lock().unwrap().ready.push_back("time-member01".into());
        pools
    }

    #[test]
    fn a_member_goes_only_to_a_request_that_launches_exactly_the_same() {
        let base = time_spec().launch;
        let mut differing: Vec<(&str, Launch)> = Vec::new();
        let mut l = base.clone();
        l.needs_kube_api = true;
        differing.push(("needs_kube_api", l));
        let mut l = base.clone();
        l.env.insert("TZ".into(), "UTC".into());
        differing.push(("env", l));
        let mut l = base.clone();
        l.secret_env.insert("KEY".into(), "v".into());
        differing.push(("secret_env", l));
        let mut l = base.clone();
        l.resources.cpu_limit = Some("2".into());
        differing.push(("resources", l));
        let mut l = base.clone();
        l.command_image = Some("example/other:1".into());
        differing.push(("command_image", l));
        let mut l = base.clone();
        if let crate::spec::Source::Command { argv } = &mut l.source {
            argv.push("--local-timezone=UTC".into());
        }
        differing.push(("source", l));
        let pools = pools_with_a_member();
        for (field, launch) in &differing {
            assert_eq!(pools.take(launch), None, "a request that differs in {field} got the member");
        }
        assert_eq!(pools.take(&base).as_deref(), Some("time-member01"), "the same launch gets it");
        assert_eq!(pools.take(&base), None, "handed out once");
        assert_eq!(pools.status()[0].handed_out, 1);
    }
}
