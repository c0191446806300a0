//! "The pod of a Job", decided in one place: status, logs, readiness and the gateway all ask
//! here, so they never disagree about which pod a server is.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};

use super::{
    manifests,
    retry::{self, ApiError},
};

/// The pod of a Job that matters: a live one (not being deleted) if there is one, else the
/// newest. A Job runs one pod at a time (restartPolicy Never, backoffLimit 0), so there are at
/// most two: an old one going away and its replacement.
pub(super) fn pod_of_job(mut pods: Vec<Pod>) -> Option<Pod> {
    pods.sort_by_key(|p| (p.metadata.deletion_timestamp.is_none(), p.metadata.creation_timestamp.clone().map(|t| t.0)));
    pods.pop()
}

/// List the pods of `job` and pick [`pod_of_job`].
pub(super) async fn find(pods: &Api<Pod>, job: &str) -> Result<Option<Pod>, ApiError> {
    let params = ListParams::default().labels(&manifests::selector_query(job));
    let list = retry::call("list pods", || pods.list(&params)).await?;
    Ok(pod_of_job(list.items))
}

/// Whether the pod's containers run (phase `Running`), so a tunnel to it can be opened.
pub(super) fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The port the server's MCP endpoints answer on in `pod`.
pub(super) fn server_port(pod: &Pod) -> u16 {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == manifests::CONTAINER))
        .and_then(|c| c.ports.as_ref()?.first())
        .map(|p| p.container_port as u16)
        .unwrap_or(manifests::SERVER_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, created: &str, deleting: bool) -> Pod {
        let mut meta = serde_json::json!({"name": name, "creationTimestamp": created});
        if deleting {
            meta["deletionTimestamp"] = created.into();
        }
        serde_json::from_value(serde_json::json!({"metadata": meta})).unwrap()
    }

    #[test]
    fn a_live_pod_wins_over_a_newer_one_being_deleted() {
        let old = pod("a", "2026-01-01T00:00:00Z", false);
        let newer_going = pod("b", "2026-01-01T00:01:00Z", true);
        assert_eq!(pod_of_job(vec![newer_going, old]).unwrap().metadata.name.as_deref(), Some("a"));
        let newest = pod("c", "2026-01-01T00:02:00Z", false);
        let old = pod("a", "2026-01-01T00:00:00Z", false);
        assert_eq!(pod_of_job(vec![newest, old]).unwrap().metadata.name.as_deref(), Some("c"));
        assert!(pod_of_job(Vec::new()).is_none());
    }
}
