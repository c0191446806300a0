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

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::Notify;

use crate::{
    runtime::{LABEL_POOL, Runtime, RuntimeError},
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
        let identity = Identity::fresh(&self.preset, id.preset.clone(), labels, id.ttl);
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
}

impl WarmPools {
    /// The pools, empty; [`WarmPools::start`] fills them.
    fn new(runtime: Runtime, specs: Vec<PoolSpec>, ready_timeout: Duration, tasks: Tasks) -> WarmPools {
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
        WarmPools { runtime, pools, ready_timeout, tasks }
    }

    /// Start keeping each pool at its size, on a branch of `tasks`.
    pub(crate) fn start(
        runtime: Runtime,
        specs: Vec<PoolSpec>,
        ready_timeout: Duration,
        tasks: &Tasks,
    ) -> Arc<WarmPools> {
        let this = Arc::new(WarmPools::new(runtime, specs, ready_timeout, tasks.child()));
        for pool in this.pools.values() {
            this.tasks.spawn(keep_filled(this.clone(), pool.clone()));
        }
        this
    }

    /// A ready member that runs exactly what `launch` asks for, taken out of its pool.
    pub(crate) fn take(&self, launch: &Launch) -> Option<String> {
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

    /// Stop refilling and delete every member not handed out.
    pub(crate) async fn shutdown(&self) {
        self.tasks.cancel();
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

/// Keep `pool` at its size: start members one at a time, back off after failures.
async fn keep_filled(pools: Arc<WarmPools>, pool: Arc<Pool>) {
    let stop = pools.tasks.token().clone();
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
        let pools = WarmPools::new(runtime, vec![spec], Duration::from_secs(1), Tasks::new());
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
