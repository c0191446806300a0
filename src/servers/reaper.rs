//! The TTL reaper: deletes servers whose time is up, even when every client forgot them. It
//! sleeps until the next expiry (at most 30 s, so servers made by another meta server are seen
//! too) or until a create wakes it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::{
    runtime::{Deleted, Runtime, RuntimeError, rfc3339},
    spec::LabelSelector,
};

/// The longest time between two looks.
pub(super) const MAX_SLEEP: Duration = Duration::from_secs(30);
/// The same with leader election: a server made through another replica does not wake this
/// one, so the reaper looks more often.
pub(super) const ELECTED_MAX_SLEEP: Duration = Duration::from_secs(5);

/// What the reaper needs, and nothing that keeps [`super::Servers`] alive.
#[derive(Clone)]
pub(super) struct Reaper {
    pub(crate) runtime: Runtime,
    pub(crate) deleted: broadcast::Sender<String>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) max_sleep: Duration,
}

impl Reaper {
    /// One term of leadership: sweep what half-made servers left, then delete each server
    /// when its TTL ends, until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        tokio::select! {
            _ = self.runtime.sweep_orphans() => {}
            _ = stop.cancelled() => return,
        }
        loop {
            let sleep = self.reap_expired().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Delete what has expired; returns how long until the next expiry (capped).
    async fn reap_expired(&self) -> Duration {
        let mut sleep = self.max_sleep;
        let servers = match self.runtime.list_brief(&LabelSelector::default()).await {
            Ok(servers) => servers,
            Err(e) => {
                tracing::warn!(error = %e, "reaper could not list servers");
                return sleep;
            }
        };
        let now = SystemTime::now();
        for s in servers {
            match s.expires_at.duration_since(now) {
                Ok(left) => sleep = sleep.min(left),
                Err(_) => {
                    tracing::info!(server = %s.job_name, expired = %rfc3339(s.expires_at), "TTL expired; deleting");
                    if let Err(e) = delete(&self.runtime, &self.deleted, &s.job_name, false).await {
                        tracing::warn!(server = %s.job_name, error = %e, "could not delete an expired server");
                    }
                }
            }
        }
        sleep
    }
}

/// Delete a server and tell whoever listens (mounts) that it is gone.
pub(super) async fn delete(
    runtime: &Runtime,
    deleted: &broadcast::Sender<String>,
    name: &str,
    wait: bool,
) -> Result<Deleted, RuntimeError> {
    // A server made for an MCPServer resource goes with its resource, or the controller would
    // make it again.
    runtime.delete_owner(name).await?;
    let result = runtime.delete(name, wait).await?;
    let _ = deleted.send(name.to_string());
    Ok(result)
}
