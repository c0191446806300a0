//! Which pod runs each server, kept current by one watch over the namespace's managed pods (a
//! reflector), so that dialing a server and handing out a pool member cost no API request.
//! (Status and list still read the API: their answer must not lag a create that just returned.) The pod of a Job can change (a Job suspended and resumed runs a new pod), and
//! the watch sees that as it happens; a cache with an expiry would keep dialing the old one.
//!
//! The store can lag the cluster by a moment (a pod the readiness watch just saw Running may
//! still be Pending here), so a lookup that finds no running pod asks the API once.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    runtime::{reflector, watcher},
};

use super::{pods, retry};
use crate::{
    runtime::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY},
    tasks::Tasks,
};

/// The managed pods of one namespace, as a watch last saw them.
#[derive(Clone)]
pub(crate) struct PodDirectory {
    pods: Api<Pod>,
    store: reflector::Store<Pod>,
}

impl PodDirectory {
    /// The directory, with its watch running on `tasks` (it resumes after errors with backoff).
    pub(crate) fn start(pods: Api<Pod>, tasks: &Tasks) -> PodDirectory {
        let (store, writer) = reflector::store();
        let config = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let events = reflector::reflector(writer, retry::backed_off(watcher(pods.clone(), config)));
        tasks.spawn_until_cancelled(async move {
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::debug!(error = %e, "pod directory watch error; resuming");
                }
            }
        });
        PodDirectory { pods, store }
    }

    /// The pod of `job` ([`pods::pod_of_job`]) as the watch has it; `None` when it has none
    /// (or its first list has not arrived yet).
    pub(crate) fn cached(&self, job: &str) -> Option<Pod> {
        self.store.wait_until_ready().now_or_never()?.ok()?;
        let of_job = |p: &Pod| p.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(job);
        pods::pod_of_job(self.store.state_filter(of_job).into_iter().map(Arc::unwrap_or_clone).collect())
    }

    /// Whether the watch has a running pod of `job` (no copy of it is made: the gateway asks
    /// this for every request).
    pub(crate) fn has_running(&self, job: &str) -> bool {
        if self.store.wait_until_ready().now_or_never().is_none() {
            return false;
        }
        let of_job = |p: &Pod| p.labels().get(LABEL_INSTANCE).map(String::as_str) == Some(job);
        self.store.find(|p| of_job(p) && pods::is_running(p)).is_some()
    }

    /// The running pod of `job`: from the watch when it has one, else from the API.
    pub(crate) async fn running(&self, job: &str) -> Result<Option<Pod>, retry::ApiError> {
        match self.cached(job).filter(pods::is_running) {
            Some(pod) => Ok(Some(pod)),
            None => pods::find(&self.pods, job).await,
        }
    }
}
