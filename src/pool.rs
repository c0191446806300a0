//! Warm pools: for a preset with `--warm-pool PRESET=N`, N servers are kept started and past
//! their `initialize` handshake, so `create_mcp_server` hands one out instead of waiting for
//! `uvx`/`npx`. A member is handed out once, never shared, and a replacement starts at once.
//!
//! Members are ordinary servers of the runtime carrying the label `mcp-ephemeral.dev/pool`;
//! runtimes leave them out of `list` (so they are not anyone's servers and the TTL reaper does
//! not see them). Handing one out ([`Runtime::adopt`]) gives it the caller's labels and TTL.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    runtime::{LABEL_POOL, Runtime},
    spec::ServerSpec,
};

/// Makes the spec of a new member of one preset's pool.
pub type MakeSpec = Box<dyn Fn() -> Option<ServerSpec> + Send + Sync>;

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
    /// A member's spec with the fields a request may not change for it to fit (name and times
    /// differ per member).
    template: ServerSpec,
    make: MakeSpec,
    members: Mutex<Members>,
    wake: Notify,
}

/// All warm pools of a meta server.
pub struct WarmPools {
    runtime: Arc<dyn Runtime>,
    pools: BTreeMap<String, Arc<Pool>>,
    ready_timeout: Duration,
    stop: CancellationToken,
}

impl WarmPools {
    /// Start keeping `size` members of each preset; `make` builds a member's spec.
    pub fn start(
        runtime: Arc<dyn Runtime>,
        sizes: Vec<(String, usize, MakeSpec)>,
        ready_timeout: Duration,
    ) -> Arc<WarmPools> {
        let stop = CancellationToken::new();
        let mut pools = BTreeMap::new();
        for (preset, size, make) in sizes {
            let Some(template) = make() else { continue };
            if size == 0 {
                continue;
            }
            let pool = Arc::new(Pool {
                preset: preset.clone(),
                size,
                template,
                make,
                members: Mutex::default(),
                wake: Notify::new(),
            });
            pools.insert(preset, pool);
        }
        let this = Arc::new(WarmPools { runtime, pools, ready_timeout, stop });
        for pool in this.pools.values() {
            tokio::spawn(keep_filled(this.clone(), pool.clone()));
        }
        this
    }

    /// A ready member that can serve `spec` as it is, taken out of its pool.
    pub fn take(&self, spec: &ServerSpec) -> Option<String> {
        let pool = self.pools.get(spec.preset.as_ref()?)?;
        let t = &pool.template;
        let fits = spec.source == t.source
            && spec.env == t.env
            && spec.secret_env.is_empty()
            && spec.resources == t.resources
            && spec.command_image == t.command_image;
        if !fits {
            return None;
        }
        let mut members = pool.members.lock().expect("pool poisoned");
        let name = members.ready.pop_front()?;
        members.handed_out += 1;
        drop(members);
        pool.wake.notify_one();
        Some(name)
    }

    pub fn status(&self) -> Vec<PoolStatus> {
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
    pub async fn shutdown(&self) {
        self.stop.cancel();
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
    let mut backoff = Duration::from_secs(1);
    loop {
        let wanted = {
            let m = pool.members.lock().expect("pool poisoned");
            pool.size.saturating_sub(m.ready.len() + m.starting)
        };
        if wanted == 0 {
            tokio::select! {
                _ = pool.wake.notified() => continue,
                _ = pools.stop.cancelled() => return,
            }
        }
        let Some(mut spec) = (pool.make)() else { return };
        spec.labels.insert(LABEL_POOL.into(), pool.preset.clone());
        let name = spec.name.clone();
        pool.members.lock().expect("pool poisoned").starting += 1;
        let started = tokio::select! {
            r = start_member(&pools, spec) => r,
            _ = pools.stop.cancelled() => Err("shutting down".to_string()),
        };
        let failed = {
            let mut m = pool.members.lock().expect("pool poisoned");
            m.starting -= 1;
            match started {
                Ok(()) if !pools.stop.is_cancelled() => {
                    tracing::info!(preset = %pool.preset, server = %name, "pool member ready");
                    m.ready.push_back(name.clone());
                    m.last_error = None;
                    None
                }
                result => {
                    let why = result.err().unwrap_or_else(|| "shutting down".into());
                    m.last_error = Some(why.clone());
                    Some(why)
                }
            }
        };
        let Some(why) = failed else {
            backoff = Duration::from_secs(1);
            continue;
        };
        let runtime = pools.runtime.clone();
        tokio::spawn(async move {
            let _ = runtime.delete(&name, false).await;
        });
        if pools.stop.is_cancelled() {
            return;
        }
        tracing::warn!(preset = %pool.preset, error = %why, retry_in = ?backoff, "cannot start a pool member");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = pools.stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn start_member(pools: &WarmPools, spec: ServerSpec) -> Result<(), String> {
    let name = spec.name.clone();
    pools.runtime.create(spec).await.map_err(|e| e.to_string())?;
    pools.runtime.wait_ready(&name, pools.ready_timeout, None).await.map_err(|e| e.to_string())?;
    Ok(())
}
