//! The servers-by-phase gauge and the warm-pool sizes, read for /metrics just before a scrape.
//! A scrape must not wait for the runtime nor cost a cluster list each: the local runtime's
//! list is a read of memory and is taken at every scrape; on Kubernetes a list (Jobs and pods; the
//! bridges are not asked) runs in the background at most every [`MAX_AGE`], and a scrape shows the
//! last one.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::FutureExt;

use super::Servers;
use crate::{runtime::Runtime, spec::LabelSelector};

/// How old the Kubernetes census may get before a scrape starts a new one.
const MAX_AGE: Duration = Duration::from_secs(30);

/// When the last Kubernetes census was started, and whether one runs now.
#[derive(Default)]
pub(super) struct Census {
    taken: Mutex<Option<Instant>>,
    running: AtomicBool,
}

/// Read the census and the pools into the metrics before every scrape.
pub(super) fn install(servers: &Arc<Servers>) {
    // Every phase reads 0 until the first census.
    servers.metrics.servers().census(servers.capabilities().kind.into(), []);
    let weak = Arc::downgrade(servers);
    servers.metrics.before_scrape(move || {
        if let Some(servers) = weak.upgrade() {
            servers.metrics.servers().pools(&servers.pool_status());
            take(&servers, &weak);
        }
    });
}

fn take(servers: &Arc<Servers>, weak: &Weak<Servers>) {
    let runtime = servers.capabilities().kind.into();
    // The local runtime answers without waiting.
    if let Runtime::Local(_) = &servers.runtime {
        if let Some(Ok(listed)) = servers.runtime.list(&LabelSelector::default()).now_or_never() {
            servers.metrics.servers().census(runtime, listed.iter().map(|s| s.phase));
        }
        return;
    }
    let census = &servers.census;
    let fresh = census.taken.lock().expect("census poisoned").is_some_and(|t| t.elapsed() < MAX_AGE);
    if fresh || census.running.swap(true, Ordering::AcqRel) {
        return;
    }
    *census.taken.lock().expect("census poisoned") = Some(Instant::now());
    let weak = weak.clone();
    servers.tasks.spawn_until_cancelled(async move {
        let Some(servers) = weak.upgrade() else { return };
        match servers.runtime.list_brief(&LabelSelector::default()).await {
            Ok(listed) => servers.metrics.servers().census(runtime, listed.iter().map(|s| s.phase)),
            Err(e) => tracing::debug!(error = %e, "the metrics census could not list the servers"),
        }
        servers.census.running.store(false, Ordering::Release);
    });
}
