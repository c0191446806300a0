//! [`Servers`]: the one owner of a server's life. Requests come in (from the MCP tools today,
//! from a custom-resource controller later), are resolved into specs by a pure function, are
//! held to the quotas, served from a warm pool when one fits, and handed to the runtime; the
//! TTL reaper ends them even when every client forgot them, and the idle check stops the ones
//! nobody uses. Stopped servers start again on request (a tool, or a request to their URL
//! through the runtime's [`Waker`](crate::runtime::wake::Waker)), held to the same quotas.
//!
//! The runtime is private to this module: nothing else starts, reads or deletes a server, and
//! every name, URL and phase after a create is the runtime's answer, never a guess.

mod admission;
mod census;
mod error;
mod idle;
pub(crate) mod pool;
mod quota;
mod reaper;
mod request;
mod resolve;
mod turns;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{Notify, broadcast};

pub use admission::QuotaUse;
pub(crate) use error::ServersError;
pub use pool::PoolStatus;
pub use request::{CreateRequest, Policy, ServerAuth};
pub use resolve::resolve;

use self::{
    admission::{Admission, Want},
    pool::{PoolSpec, WarmPools},
    turns::Turns,
};
use crate::{
    metrics::{Metrics, Outcome},
    presets::Presets,
    runtime::kubernetes::lease::{Leadership, while_leading},
    runtime::{
        Capabilities, Deleted, Phase, ProgressFn, Runtime, RuntimeError, ServerInfo, StopReason, wake::WakeError,
    },
    spec::{LabelSelector, SpecError},
    tasks::Tasks,
};

/// The longest `wait_for_capacity_seconds`.
const MAX_CAPACITY_WAIT: u64 = 3600;

/// Every server of this meta server, and the rules they live by.
pub(crate) struct Servers {
    presets: Presets,
    runtime: Runtime,
    policy: Policy,
    pools: Option<Arc<WarmPools>>,
    /// `max_servers` and `max_active`, held under concurrent creates and starts.
    admission: Admission,
    /// Stops, starts and wakes of one server take turns.
    turns: Turns,
    /// Wakes the reaper when a server is made (its TTL may be the next to end).
    reaper_wake: Arc<Notify>,
    /// Wakes the idle check when a server with an idle timeout is made or started.
    idle_wake: Arc<Notify>,
    /// Names of servers as they are deleted (by a tool or the reaper), for unmounting.
    deleted: broadcast::Sender<String>,
    tasks: Tasks,
    /// Whether this replica leads: the reaper, the idle check and the pools run only then.
    leadership: Leadership,
    /// The loops that run on the leader; shutdown waits for them before the Lease is released.
    leader_loops: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Where creates, deletes, stops, starts and wakes are counted.
    metrics: Metrics,
    /// When the servers were last counted by phase for /metrics.
    census: census::Census,
}

/// A throwaway lives at most `--ready-timeout` and this much more.
const THROWAWAY_SLACK: Duration = Duration::from_secs(60);

/// A discovery's server: deleted when asked, or in the background when dropped first (the
/// caller went away).
struct Throwaway {
    runtime: Runtime,
    tasks: Tasks,
    name: Option<String>,
}

impl Throwaway {
    async fn delete(&mut self) {
        if let Some(name) = self.name.take()
            && let Err(e) = self.runtime.delete(&name, true).await
        {
            tracing::warn!(server = %name, error = %e, "could not delete a discovery's server");
        }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let runtime = self.runtime.clone();
            self.tasks.spawn(async move { runtime.delete(&name, true).await });
        }
    }
}

/// `wait_for_capacity_seconds`, checked.
fn capacity_wait(secs: Option<u64>) -> Result<Duration, SpecError> {
    match secs {
        Some(s) if s > MAX_CAPACITY_WAIT => {
            Err(SpecError::Args(format!("`wait_for_capacity_seconds` must be at most {MAX_CAPACITY_WAIT} (got {s})")))
        }
        s => Ok(Duration::from_secs(s.unwrap_or(0))),
    }
}

impl Servers {
    /// The owner of `runtime`'s servers, with its TTL reaper, idle check and the warm `pools`
    /// (preset name → members) running on a branch of `tasks` while `leadership` says this
    /// replica leads. Fails, before anything starts, for a pool of an unknown preset or of one
    /// that needs env.
    pub(crate) fn start(
        presets: Presets,
        runtime: Runtime,
        policy: Policy,
        pools: &BTreeMap<String, usize>,
        leadership: Leadership,
        metrics: &Metrics,
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
        let pools = (!specs.is_empty()).then(|| {
            Arc::new(WarmPools::new(runtime.clone(), specs, policy.ready_timeout, tasks.child(), leadership.clone()))
        });
        let (deleted, _) = broadcast::channel(64);
        let reaper_wake = Arc::new(Notify::new());
        let reaper = reaper::Reaper {
            runtime: runtime.clone(),
            deleted: deleted.clone(),
            wake: reaper_wake.clone(),
            // Servers made through another replica do not wake this one's reaper.
            max_sleep: if leadership.elected() { reaper::ELECTED_MAX_SLEEP } else { reaper::MAX_SLEEP },
        };
        let stop = tasks.token().clone();
        let mut leader_loops = vec![
            tasks.spawn(while_leading(leadership.clone(), stop.clone(), move |term| reaper.clone().run(term))),
            tasks.spawn(while_leading(leadership.clone(), stop.clone(), {
                let (runtime, pools) = (runtime.clone(), pools.clone());
                move |term| pool::keep(runtime.clone(), pools.clone(), term)
            })),
        ];
        let admission = Admission::new(&policy);
        let idle_wake = Arc::new(Notify::new());
        let servers = Arc::new(Servers {
            presets,
            runtime,
            policy,
            pools,
            admission,
            turns: Turns::default(),
            reaper_wake,
            idle_wake: idle_wake.clone(),
            deleted,
            tasks: tasks.clone(),
            leadership: leadership.clone(),
            leader_loops: Default::default(),
            metrics: metrics.clone(),
            census: Default::default(),
        });
        census::install(&servers);
        let weak = Arc::downgrade(&servers);
        leader_loops.push(
            tasks.spawn(while_leading(leadership, stop, move |term| idle::run(weak.clone(), idle_wake.clone(), term))),
        );
        *servers.leader_loops.lock().expect("leader loops") = leader_loops;
        let weak = Arc::downgrade(&servers);
        servers.runtime.waker().install(move |name| {
            let weak = weak.clone();
            Box::pin(async move {
                let servers =
                    weak.upgrade().ok_or(WakeError::Unavailable("the meta server is shutting down".into()))?;
                servers.wake(&name).await
            })
        });
        Ok(servers)
    }

    /// The metrics of this meta server (the controller counts its reconciles there).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
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

    /// Every quota and how much of it is used now, for get_version.
    pub(crate) async fn quota_use(&self) -> Result<Vec<QuotaUse>, ServersError> {
        let listed = self.runtime.list_brief(&LabelSelector::default()).await?;
        Ok(self.admission.usage(&listed))
    }

    /// Names of servers as they are deleted (by a tool or the reaper), for unmounting.
    pub(crate) fn deletions(&self) -> broadcast::Receiver<String> {
        self.deleted.subscribe()
    }

    /// Create a server; with `wait_for_ready`, return once it is Ready (or why it is not).
    /// `shape` adds to the checked identity what no request field can ask for (the
    /// controller's owner and labels, a pool's label). A server with an owner is never a
    /// warm-pool member: a member's Job has no owner to hand over.
    pub(crate) async fn create_with(
        &self,
        req: CreateRequest,
        progress: Option<ProgressFn>,
        shape: impl FnOnce(&mut crate::spec::Identity),
    ) -> Result<ServerInfo, ServersError> {
        let began = Instant::now();
        let created = self.create_uncounted(req, progress, shape).await;
        self.metrics.servers().created(Outcome::of(&created));
        if let Ok(info) = &created
            && info.phase == Phase::Ready
        {
            self.metrics.servers().ready_after(began.elapsed());
        }
        created
    }

    async fn create_uncounted(
        &self,
        req: CreateRequest,
        progress: Option<ProgressFn>,
        shape: impl FnOnce(&mut crate::spec::Identity),
    ) -> Result<ServerInfo, ServersError> {
        let began = Instant::now();
        let wait = req.wait_for_ready;
        let capacity_wait = capacity_wait(req.wait_for_capacity_seconds)?;
        let mut spec = resolve(req, &self.presets, &self.policy, self.runtime.capabilities())?;
        shape(&mut spec.identity);
        let owned = spec.identity.owner.is_some();
        let id = &spec.identity;
        let preset = id.preset.as_deref();
        let slot = self
            .admission
            .take(&self.runtime, Want::Create, &id.name, preset, capacity_wait, progress.as_ref())
            .await?;
        // The idle check looks again once the server exists.
        let idle_check = self.idle_wake.clone();
        let idles = spec.identity.idle_timeout.is_some();
        let created = move || {
            if idles {
                idle_check.notify_one();
            }
        };
        if let Some(member) = self.pools.as_ref().filter(|_| !owned).and_then(|p| p.take(&spec.launch)) {
            match self.runtime.adopt(&member, spec.clone()).await {
                Ok(info) => {
                    slot.settle(&info.job_name);
                    self.reaper_wake.notify_one();
                    created();
                    return Ok(info);
                }
                Err(e) => {
                    tracing::warn!(member, error = %e, "warm-pool member unusable; starting a new server");
                    let runtime = self.runtime.clone();
                    self.tasks.spawn(async move { runtime.delete(&member, false).await });
                }
            }
        }
        let info = match self.runtime.create(spec).await {
            Ok(info) => info,
            Err(e) => {
                drop(slot);
                self.admission.freed();
                return Err(e.into());
            }
        };
        slot.settle(&info.job_name);
        self.reaper_wake.notify_one();
        created();
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

    /// [`list`](Self::list) for counting (no bridge `/status` per server): see
    /// [`Runtime::list_brief`].
    pub(crate) async fn list_brief(&self, selector: &LabelSelector) -> Result<Vec<ServerInfo>, ServersError> {
        Ok(self.runtime.list_brief(selector).await?)
    }

    /// Start a throwaway server for `req`, read what it offers once it is Ready, and delete
    /// it: on success, on failure, on timeout, and when the caller goes away (the delete then
    /// runs on its own). A throwaway never shows in `list`, and its TTL is short, so even a
    /// crash of this process leaves nothing for long.
    pub(crate) async fn discover(
        &self,
        req: CreateRequest,
        progress: Option<ProgressFn>,
    ) -> Result<(crate::bridge::catalog::Catalog, Duration), ServersError> {
        let began = Instant::now();
        let capacity_wait = capacity_wait(req.wait_for_capacity_seconds)?;
        let mut spec = resolve(req, &self.presets, &self.policy, self.runtime.capabilities())?;
        let id = &mut spec.identity;
        id.labels.insert(crate::runtime::LABEL_THROWAWAY.into(), "true".into());
        id.idle_timeout = None;
        id.ttl = id.ttl.min(self.policy.ready_timeout + THROWAWAY_SLACK);
        id.expires_at = id.created_at + id.ttl;
        let (name, preset) = (id.name.clone(), id.preset.clone());
        let slot = self
            .admission
            .take(&self.runtime, Want::Create, &name, preset.as_deref(), capacity_wait, progress.as_ref())
            .await?;
        let info = self.runtime.create(spec).await?;
        slot.settle(&info.job_name);
        let mut throwaway =
            Throwaway { runtime: self.runtime.clone(), tasks: self.tasks.clone(), name: Some(info.job_name) };
        let name = throwaway.name.clone().unwrap_or_default();
        let read = async {
            self.runtime.wait_ready(&name, self.policy.ready_timeout, progress).await?;
            self.runtime.catalog(&name).await
        }
        .await;
        throwaway.delete().await;
        self.admission.freed();
        let why = match read {
            Ok(catalog) => return Ok((catalog, began.elapsed())),
            Err(RuntimeError::Failed { reason, message, .. }) => format!("failed ({reason}): {message}"),
            Err(RuntimeError::NotReadyInTime { waited, phase, .. }) => {
                format!("was not ready within {}s (--ready-timeout; it was {phase:?})", waited.as_secs())
            }
            Err(e) => e.to_string(),
        };
        Err(ServersError::Discovery { name, why })
    }

    /// Hand out the Ready warm member `member` (of an MCPPool) as the server `req` and `shape`
    /// describe: its labels, owner, times and deadline, on the Job that already runs.
    pub(crate) async fn hand_out(
        &self,
        member: &str,
        req: CreateRequest,
        shape: impl FnOnce(&mut crate::spec::Identity),
    ) -> Result<ServerInfo, ServersError> {
        let mut spec = resolve(req, &self.presets, &self.policy, self.runtime.capabilities())?;
        shape(&mut spec.identity);
        // A member is hidden (counted by no quota) until now: it takes its slot as a create
        // would, at once or not at all (the caller then starts a server, which says why).
        let id = &spec.identity;
        let slot = self
            .admission
            .take(&self.runtime, Want::Create, &id.name, id.preset.as_deref(), Duration::ZERO, None)
            .await?;
        let info = self.runtime.adopt(member, spec).await?;
        slot.settle(&info.job_name);
        self.reaper_wake.notify_one();
        self.idle_wake.notify_one();
        Ok(info)
    }

    /// Wait in the background (at most the ready timeout) until server `name` is Ready or shows
    /// it cannot be. On Kubernetes the wait records readiness on the Job, so the controller,
    /// which watches the Jobs it owns, hears of it at once instead of at its next look.
    pub(crate) fn watch_ready(&self, name: &str) {
        let (runtime, name, timeout) = (self.runtime.clone(), name.to_string(), self.policy.ready_timeout);
        self.tasks.spawn_until_cancelled(async move {
            if let Err(e) = runtime.wait_ready(&name, timeout, None).await {
                tracing::debug!(server = %name, error = %e, "the watched server did not become ready");
            }
        });
    }

    /// Delete server `name` without touching the resource it was made for: the controller
    /// replaces a server whose resource's spec changed.
    pub(crate) async fn replace(&self, name: &str) -> Result<Deleted, ServersError> {
        let deleted = self.runtime.delete(name, false).await?;
        let _ = self.deleted.send(name.to_string());
        self.admission.freed();
        Ok(deleted)
    }

    /// The Kubernetes API client and namespace, when servers run there.
    pub(crate) fn kubernetes(&self) -> Option<(kube::Client, String)> {
        match &self.runtime {
            Runtime::Kubernetes(k) => Some(k.client()),
            Runtime::Local(_) => None,
        }
    }

    /// The tools (with their schemas), prompts and resources of Ready server `name`.
    pub(crate) async fn catalog(&self, name: &str) -> Result<crate::bridge::catalog::Catalog, ServersError> {
        Ok(self.runtime.catalog(name).await?)
    }

    pub(crate) async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>, ServersError> {
        Ok(self.runtime.logs(name, tail).await?)
    }

    pub(crate) async fn delete(&self, name: &str, wait: bool) -> Result<Deleted, ServersError> {
        let deleted = reaper::delete(&self.runtime, &self.deleted, name, wait).await.map_err(ServersError::from);
        self.metrics.servers().deleted(Outcome::of(&deleted));
        let deleted = deleted?;
        self.admission.freed();
        Ok(deleted)
    }

    /// Stop `name` (nothing runs; name, URLs, labels and TTL stay). Stopping a stopped server
    /// answers its status.
    pub(crate) async fn stop(&self, name: &str, reason: StopReason) -> Result<ServerInfo, ServersError> {
        let _turn = self.turns.take(name).await;
        let info = self.runtime.stop(name, reason).await.map_err(ServersError::from);
        self.metrics.servers().stopped(Outcome::of(&info));
        let info = info?;
        self.admission.freed();
        Ok(info)
    }

    /// Start a Stopped server again (a server that runs is left as it is), within its
    /// preset's `--max-active`, waiting up to `capacity_wait_secs` for a slot; with
    /// `wait_for_ready`, return once it is Ready (or why it is not).
    pub(crate) async fn resume(
        &self,
        name: &str,
        wait_for_ready: bool,
        capacity_wait_secs: Option<u64>,
        progress: Option<ProgressFn>,
    ) -> Result<ServerInfo, ServersError> {
        let resumed = self.resume_uncounted(name, wait_for_ready, capacity_wait_secs, progress).await;
        self.metrics.servers().started(Outcome::of(&resumed));
        resumed
    }

    async fn resume_uncounted(
        &self,
        name: &str,
        wait_for_ready: bool,
        capacity_wait_secs: Option<u64>,
        progress: Option<ProgressFn>,
    ) -> Result<ServerInfo, ServersError> {
        let began = Instant::now();
        let capacity_wait = capacity_wait(capacity_wait_secs)?;
        let info = {
            let _turn = self.turns.take(name).await;
            let status = self.runtime.status(name).await?;
            if status.phase != Phase::Stopped {
                status
            } else {
                let preset = status.preset.as_deref();
                let slot = self
                    .admission
                    .take(&self.runtime, Want::Start, name, preset, capacity_wait, progress.as_ref())
                    .await?;
                let info = self.runtime.resume(name).await?;
                slot.settle(name);
                self.idle_wake.notify_one();
                info
            }
        };
        if !wait_for_ready || info.phase == Phase::Ready {
            return Ok(info);
        }
        let waited = began.elapsed();
        let mut ready = self.runtime.wait_ready(name, self.policy.ready_timeout, progress).await?;
        ready.startup = crate::runtime::startup::after_create(waited, std::mem::take(&mut ready.startup));
        Ok(ready)
    }

    /// A request reached a server with nothing running behind its URL: start it (a stopped
    /// one) or wait for it (a starting one), then let the request through.
    async fn wake(&self, name: &str) -> Result<(), WakeError> {
        let woken = self.wake_uncounted(name).await;
        self.metrics.servers().woken(Outcome::of_wake(&woken));
        woken
    }

    async fn wake_uncounted(&self, name: &str) -> Result<(), WakeError> {
        match self.resume_uncounted(name, true, None, None).await {
            Ok(info) if info.phase == Phase::Ready => Ok(()),
            Ok(info) => Err(WakeError::Unavailable(format!(
                "it is {:?}{}",
                info.phase,
                info.message.map(|m| format!(": {m}")).unwrap_or_default()
            ))),
            Err(ServersError::Runtime(e @ RuntimeError::NotFound(_))) => Err(WakeError::NotFound(e.to_string())),
            Err(e) => Err(WakeError::Unavailable(e.to_string())),
        }
    }

    /// Stop the servers whose idle timeout has passed; returns when to look next.
    async fn stop_idle(&self) -> Duration {
        let idle = match self.runtime.idleness().await {
            Ok(idle) => idle,
            Err(e) => {
                tracing::warn!(error = %e, "the idle check could not read the servers");
                return idle::MAX_INTERVAL;
            }
        };
        let mut next = idle::MAX_INTERVAL;
        for server in idle {
            match server.timeout.checked_sub(server.idle_for) {
                Some(left) if !left.is_zero() => next = next.min(left),
                _ => {
                    tracing::info!(server = %server.name, idle_s = server.idle_for.as_secs(), "idle timeout passed; stopping");
                    if let Err(e) = self.stop(&server.name, StopReason::IdleTimeout).await {
                        tracing::warn!(server = %server.name, error = %e, "could not stop an idle server");
                    }
                }
            }
        }
        next
    }

    /// Whether this replica leads, for more work that must run on the leader only (a
    /// controller): run it with [`while_leading`].
    pub(crate) fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Stop the reaper, the idle check and the pools (and wait for them: a successor may lead
    /// once this returns), and every server the runtime must not leave behind.
    pub(crate) async fn shutdown(&self) {
        self.tasks.cancel();
        let loops = std::mem::take(&mut *self.leader_loops.lock().expect("leader loops"));
        futures::future::join_all(loops).await;
        if let Some(pools) = &self.pools {
            pools.shutdown().await;
        }
        self.runtime.shutdown().await;
    }
}
