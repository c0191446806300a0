//! [`Servers`]: the one owner of a server's life. Requests come in (from the MCP tools today,
//! from a custom-resource controller later), are resolved into specs by a pure function, are
//! held to the quota, served from a warm pool when one fits, and handed to the runtime; the
//! TTL reaper ends them even when every client forgot them.
//!
//! The runtime is private to this module: nothing else starts, reads or deletes a server, and
//! every name, URL and phase after a create is the runtime's answer, never a guess.

mod error;
pub(crate) mod pool;
mod quota;
mod reaper;
mod request;
mod resolve;

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::{Notify, broadcast};

pub(crate) use error::ServersError;
pub use pool::PoolStatus;
pub use request::{CreateRequest, Policy};
pub use resolve::resolve;

use self::{
    pool::{PoolSpec, WarmPools},
    quota::Quota,
};
use crate::{
    presets::Presets,
    runtime::{Capabilities, Deleted, ProgressFn, Runtime, ServerInfo},
    spec::{LabelSelector, SpecError},
    tasks::Tasks,
};

/// Every server of this meta server, and the rules they live by.
pub(crate) struct Servers {
    presets: Presets,
    runtime: Runtime,
    policy: Policy,
    pools: Option<Arc<WarmPools>>,
    /// `max_servers`, held under concurrent creates.
    quota: Quota,
    /// Wakes the reaper when a server is made (its TTL may be the next to end).
    reaper_wake: Arc<Notify>,
    /// Names of servers as they are deleted (by a tool or the reaper), for unmounting.
    deleted: broadcast::Sender<String>,
    tasks: Tasks,
}

impl Servers {
    /// The owner of `runtime`'s servers, with its TTL reaper and the warm `pools` (preset name
    /// → members) running on a branch of `tasks`. Fails, before anything starts, for a pool
    /// of an unknown preset or of one that needs env.
    pub(crate) fn start(
        presets: Presets,
        runtime: Runtime,
        policy: Policy,
        pools: &BTreeMap<String, usize>,
        tasks: &Tasks,
    ) -> Result<Arc<Servers>, SpecError> {
        let tasks = tasks.child();
        let caps = runtime.capabilities();
        let mut specs = Vec::new();
        for (preset, size) in pools {
            let req = CreateRequest { preset: Some(preset.clone()), ..Default::default() };
            let template = resolve(req, &presets, &policy, caps)?;
            specs.push(PoolSpec { preset: preset.clone(), size: *size, template });
        }
        let pools = (!specs.is_empty()).then(|| WarmPools::start(runtime.clone(), specs, policy.ready_timeout, &tasks));
        let (deleted, _) = broadcast::channel(64);
        let reaper_wake = Arc::new(Notify::new());
        let reaper = reaper::Reaper { runtime: runtime.clone(), deleted: deleted.clone(), wake: reaper_wake.clone() };
        tasks.spawn(reaper.run(tasks.token().clone()));
        let quota = Quota::new(policy.max_servers);
        Ok(Arc::new(Servers { presets, runtime, policy, pools, quota, reaper_wake, deleted, tasks }))
    }

    pub(crate) fn presets(&self) -> &Presets {
        &self.presets
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        self.runtime.capabilities()
    }

    /// The Kubernetes namespace, if any.
    pub(crate) fn namespace(&self) -> Option<String> {
        self.runtime.namespace()
    }

    /// The warm pools' state, for get_version.
    pub(crate) fn pool_status(&self) -> Vec<PoolStatus> {
        self.pools.as_ref().map(|p| p.status()).unwrap_or_default()
    }

    /// Names of servers as they are deleted (by a tool or the reaper), for unmounting.
    pub(crate) fn deletions(&self) -> broadcast::Receiver<String> {
        self.deleted.subscribe()
    }

    /// Create a server; with `wait_for_ready`, return once it is Ready (or why it is not).
    pub(crate) async fn create(
        &self,
        req: CreateRequest,
        progress: Option<ProgressFn>,
    ) -> Result<ServerInfo, ServersError> {
        let began = std::time::Instant::now();
        let wait = req.wait_for_ready;
        let spec = resolve(req, &self.presets, &self.policy, self.runtime.capabilities())?;
        let listed_at = std::time::Instant::now();
        let listed: Vec<String> =
            self.runtime.list(&LabelSelector::default()).await?.into_iter().map(|s| s.job_name).collect();
        let slot =
            self.quota.reserve(&spec.identity.name, &listed, listed_at).map_err(|f| ServersError::Quota(f.max))?;
        if let Some(member) = self.pools.as_ref().and_then(|p| p.take(&spec.launch)) {
            match self.runtime.adopt(&member, spec.clone()).await {
                Ok(info) => {
                    slot.settle(&info.job_name);
                    self.reaper_wake.notify_one();
                    return Ok(info);
                }
                Err(e) => {
                    tracing::warn!(member, error = %e, "warm-pool member unusable; starting a new server");
                    let runtime = self.runtime.clone();
                    self.tasks.spawn(async move { runtime.delete(&member, false).await });
                }
            }
        }
        let info = self.runtime.create(spec).await?;
        slot.settle(&info.job_name);
        self.reaper_wake.notify_one();
        if !wait {
            return Ok(info);
        }
        let created = began.elapsed();
        // The runtime's name, not the spec's: a name taken in the cluster gets a fresh one.
        let mut ready = self.runtime.wait_ready(&info.job_name, self.policy.ready_timeout, progress).await?;
        ready.startup = crate::runtime::startup::after_create(created, std::mem::take(&mut ready.startup));
        Ok(ready)
    }

    pub(crate) async fn status(&self, name: &str) -> Result<ServerInfo, ServersError> {
        Ok(self.runtime.status(name).await?)
    }

    pub(crate) async fn list(&self, selector: &LabelSelector) -> Result<Vec<ServerInfo>, ServersError> {
        Ok(self.runtime.list(selector).await?)
    }

    pub(crate) async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>, ServersError> {
        Ok(self.runtime.logs(name, tail).await?)
    }

    pub(crate) async fn delete(&self, name: &str, wait: bool) -> Result<Deleted, ServersError> {
        Ok(reaper::delete(&self.runtime, &self.deleted, name, wait).await?)
    }

    /// Stop the reaper and the pools, and every server the runtime must not leave behind.
    pub(crate) async fn shutdown(&self) {
        self.tasks.cancel();
        if let Some(pools) = &self.pools {
            pools.shutdown().await;
        }
        self.runtime.shutdown().await;
    }
}
