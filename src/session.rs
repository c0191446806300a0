//! The SessionManager: turns create requests into [`ServerSpec`]s (presets, defaults, names,
//! TTL, quotas), hands them to the runtime, and reaps servers whose TTL has passed, even when
//! every client forgot them.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::{
    pool::{PoolStatus, WarmPools},
    presets::Presets,
    runtime::{Deleted, ProgressFn, Runtime, RuntimeError, ServerInfo},
    spec::{self, Args, ImageTransport, LabelSelector, Resources, ServerSpec, Source, SpecError},
};

/// Arguments of `create_mcp_server` (names compatible with mcp-ephemeral-k8s).
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A preset name from list_presets (e.g. "time", "fetch", "everything").
    #[serde(default)]
    pub preset: Option<String>,
    /// The program to run instead of a preset, e.g. "uvx" or "npx".
    #[serde(default)]
    pub runtime_exec: Option<String>,
    /// The MCP package or script it runs, e.g. "mcp-server-fetch".
    #[serde(default)]
    pub runtime_mcp: Option<String>,
    /// Extra arguments: a list, or one string split like a shell. With a preset they replace its default arguments.
    #[serde(default)]
    pub runtime_args: Option<Args>,
    /// A container image (Kubernetes runtime only).
    #[serde(default)]
    pub image: Option<String>,
    /// Environment variables for the server.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Environment variables whose values are secret: never shown in any output or log.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
    /// Wait until the server answered initialize before returning (default false).
    #[serde(default)]
    pub wait_for_ready: bool,
    /// Seconds until the server is deleted automatically (default: the meta server's --default-ttl).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Labels to find it by (list_mcp_servers label_selector).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// CPU and memory for the server's container (Kubernetes runtime); unset fields keep the preset's or the defaults.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// How an `image` speaks MCP: "stdio" (run behind the bridge; its command goes in runtime_args) or "http" (it serves /mcp and /sse itself on image_port). Default: the meta server's --image-transport.
    #[serde(default)]
    pub image_transport: Option<ImageTransport>,
    /// The port an "http" image listens on (default: the meta server's --image-port).
    #[serde(default)]
    pub image_port: Option<u16>,
}

/// Limits and defaults applied to every request.
#[derive(Debug, Clone)]
pub struct Policy {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Most servers alive at once.
    pub max_servers: usize,
    /// How long `wait_for_ready` waits.
    pub ready_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            max_servers: 100,
            ready_timeout: Duration::from_secs(120),
        }
    }
}

/// Errors of the manager: a refused request or a runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the limit of {0} servers is reached; delete one (delete_mcp_server) or wait for a TTL to expire")]
    Quota(usize),
}

pub struct SessionManager {
    pools: std::sync::OnceLock<Arc<WarmPools>>,
    presets: Presets,
    runtime: Arc<dyn Runtime>,
    policy: Policy,
    reaper_wake: Notify,
    deleted: broadcast::Sender<String>,
    stop: CancellationToken,
}

impl SessionManager {
    /// A manager with its TTL reaper running until [`SessionManager::shutdown`].
    pub fn new(presets: Presets, runtime: Arc<dyn Runtime>, policy: Policy) -> Arc<SessionManager> {
        let (deleted, _) = broadcast::channel(64);
        let manager = Arc::new(SessionManager {
            pools: std::sync::OnceLock::new(),
            presets,
            runtime,
            policy,
            reaper_wake: Notify::new(),
            deleted,
            stop: CancellationToken::new(),
        });
        tokio::spawn(reap(Arc::downgrade(&manager), manager.stop.clone()));
        manager
    }

    /// Keep warm pools for `sizes` (preset name → members); names must be presets.
    pub fn start_pools(self: &Arc<Self>, sizes: &BTreeMap<String, usize>) -> Result<(), SpecError> {
        let mut pools = Vec::new();
        for (preset, size) in sizes {
            let weak = Arc::downgrade(self);
            let req = CreateRequest { preset: Some(preset.clone()), ..Default::default() };
            // Fails here, once, for an unknown preset or one that needs env.
            self.resolve(req.clone())?;
            let make: crate::pool::MakeSpec = Box::new(move || weak.upgrade()?.resolve(req.clone()).ok());
            pools.push((preset.clone(), *size, make));
        }
        if !pools.is_empty() {
            let started = WarmPools::start(self.runtime.clone(), pools, self.policy.ready_timeout);
            let _ = self.pools.set(started);
        }
        Ok(())
    }

    /// The warm pools' state, for get_version.
    pub fn pool_status(&self) -> Vec<PoolStatus> {
        self.pools.get().map(|p| p.status()).unwrap_or_default()
    }

    pub fn presets(&self) -> &Presets {
        &self.presets
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Names of servers as they are deleted (by a tool or the reaper), for unmounting.
    pub fn deletions(&self) -> broadcast::Receiver<String> {
        self.deleted.subscribe()
    }

    /// Check a request and build its spec; nothing is started.
    pub fn resolve(&self, req: CreateRequest) -> Result<ServerSpec, SpecError> {
        let given: Vec<&str> = [
            req.preset.as_ref().map(|_| "preset"),
            req.runtime_exec.as_ref().map(|_| "runtime_exec"),
            req.image.as_ref().map(|_| "image"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(SpecError::ConflictingSources(given.join(" and ")));
        }
        if req.runtime_mcp.is_some() && req.runtime_exec.is_none() {
            return Err(if req.preset.is_some() || req.image.is_some() {
                SpecError::ConflictingSources("runtime_mcp with preset/image".into())
            } else {
                SpecError::EmptyExec
            });
        }
        let args = req.runtime_args.map(Args::into_vec).transpose()?;
        if let Some(a) = &args {
            spec::check_args(a)?;
        }
        let user_env = req.env.unwrap_or_default();
        let secret_env = req.secret_env.unwrap_or_default();
        spec::check_env("env", &user_env)?;
        spec::check_env("secret_env", &secret_env)?;
        let labels = req.labels.unwrap_or_default();
        spec::check_labels(&labels)?;
        let requested = req.resources.unwrap_or_default();
        requested.check()?;
        if req.image.is_none() {
            if req.image_transport.is_some() {
                return Err(SpecError::ImageOnly("image_transport"));
            }
            if req.image_port.is_some() {
                return Err(SpecError::ImageOnly("image_port"));
            }
        }
        if req.image_port == Some(0) {
            return Err(SpecError::Args("`image_port` must be a port number between 1 and 65535".into()));
        }
        let mut resources = requested.clone();
        let mut command_image = None;

        let (preset, source, base, mut env, needs_kube_api) = if let Some(name) = &req.preset {
            let p = self.presets.get(name).ok_or_else(|| SpecError::UnknownPreset {
                name: name.clone(),
                known: self.presets.names().join(", "),
            })?;
            let missing: Vec<&str> = p
                .required_env
                .iter()
                .filter(|n| !user_env.contains_key(*n) && !secret_env.contains_key(*n))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(SpecError::MissingEnv { preset: name.clone(), names: missing.join(", ") });
            }
            let mut argv = vec![p.runtime_exec.clone()];
            argv.extend(p.runtime_mcp.clone());
            argv.extend(args.unwrap_or_else(|| p.runtime_args.clone()));
            let source = Source::Command { argv };
            resources = requested.or(&p.resources);
            command_image = p.image.clone();
            (Some(name.clone()), source, name.clone(), p.env.clone(), p.needs_kube_api)
        } else if let Some(exec) = &req.runtime_exec {
            spec::check_exec(exec)?;
            let mut argv = vec![exec.clone()];
            if let Some(mcp) = &req.runtime_mcp {
                spec::check_value(|| "runtime_mcp".into(), mcp)?;
                argv.push(mcp.clone());
            }
            argv.extend(args.unwrap_or_default());
            let base = req.runtime_mcp.clone().unwrap_or_else(|| exec.clone());
            (None, Source::Command { argv }, base, BTreeMap::new(), false)
        } else if let Some(image) = &req.image {
            spec::check_value(|| "image".into(), image)?;
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(SpecError::Args(format!("`image` must be an image reference, got `{image}`")));
            }
            if self.runtime.kind() == "local" {
                return Err(SpecError::ImageNeedsKubernetes);
            }
            let source = Source::Image {
                image: image.clone(),
                args: args.unwrap_or_default(),
                transport: req.image_transport,
                port: req.image_port,
            };
            (None, source, image.clone(), BTreeMap::new(), false)
        } else {
            return Err(SpecError::NoSource);
        };
        env.extend(user_env);

        let max = self.policy.max_ttl.as_secs();
        let ttl = match req.ttl_seconds {
            Some(s) if s == 0 || s > max => return Err(SpecError::Ttl { got: s, max }),
            Some(s) => Duration::from_secs(s),
            None => self.policy.default_ttl,
        };
        let created_at = SystemTime::now();
        Ok(ServerSpec {
            name: crate::names::generate(&base),
            preset,
            source,
            env,
            secret_env,
            labels,
            ttl,
            created_at,
            expires_at: created_at + ttl,
            needs_kube_api,
            resources,
            command_image,
        })
    }

    /// Create a server; with `wait_for_ready`, return once it is Ready (or why it is not).
    pub async fn create(&self, req: CreateRequest, progress: Option<ProgressFn>) -> Result<ServerInfo, ManagerError> {
        let wait = req.wait_for_ready;
        let spec = self.resolve(req)?;
        let count = self.runtime.list(&LabelSelector::default()).await?.len();
        if count >= self.policy.max_servers {
            return Err(ManagerError::Quota(self.policy.max_servers));
        }
        if let Some(member) = self.pools.get().and_then(|p| p.take(&spec)) {
            match self.runtime.adopt(&member, spec.clone()).await {
                Ok(info) => {
                    self.reaper_wake.notify_one();
                    return Ok(info);
                }
                Err(e) => {
                    tracing::warn!(member, error = %e, "warm-pool member unusable; starting a new server");
                    let runtime = self.runtime.clone();
                    tokio::spawn(async move { runtime.delete(&member, false).await });
                }
            }
        }
        let name = spec.name.clone();
        let info = self.runtime.create(spec).await?;
        self.reaper_wake.notify_one();
        if !wait {
            return Ok(info);
        }
        Ok(self.runtime.wait_ready(&name, self.policy.ready_timeout, progress).await?)
    }

    pub async fn delete(&self, name: &str, wait: bool) -> Result<Deleted, ManagerError> {
        let deleted = self.runtime.delete(name, wait).await?;
        let _ = self.deleted.send(name.to_string());
        Ok(deleted)
    }

    /// Stop the reaper and every server the runtime must not leave behind.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(pools) = self.pools.get() {
            pools.shutdown().await;
        }
        self.runtime.shutdown().await;
    }
}

/// Delete servers whose TTL has passed; sleep until the next expiry (or a create wakes us).
async fn reap(manager: std::sync::Weak<SessionManager>, stop: CancellationToken) {
    const MAX_SLEEP: Duration = Duration::from_secs(30);
    loop {
        let Some(m) = manager.upgrade() else { return };
        let mut sleep = MAX_SLEEP;
        match m.runtime.list(&LabelSelector::default()).await {
            Ok(servers) => {
                let now = SystemTime::now();
                for s in servers {
                    match s.expires.duration_since(now) {
                        Ok(left) => sleep = sleep.min(left),
                        Err(_) => {
                            tracing::info!(server = %s.job_name, expired = %s.expires_at, "TTL expired; deleting");
                            if let Err(e) = m.delete(&s.job_name, false).await {
                                tracing::warn!(server = %s.job_name, error = %e, "could not delete an expired server");
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper could not list servers"),
        }
        let wake = m.reaper_wake.notified();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
            _ = wake => {}
        }
    }
}
