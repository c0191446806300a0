//! How a Job and its Pod map to the phases of the tool contract. Pure functions, so every
//! case a cluster can show is unit-tested without one.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};

use super::manifests::{
    ANNOTATION_CREATED, ANNOTATION_EXPIRES, ANNOTATION_LAST_ACTIVITY, ANNOTATION_READY, ANNOTATION_SPEC,
    ANNOTATION_STOPPED, CONTAINER, LABEL_IDLE_TIMEOUT, SpecAnnotation,
};
use crate::runtime::{LABEL_PRESET, Phase, Reason, ServerInfo, ServerSource, StopReason, Urls, startup::StartStep};

/// Container waiting reasons that never resolve on their own: the server has failed.
const FATAL_WAITING: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// What a pod is doing, as far as readiness is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodState {
    /// Not on a node yet.
    Unscheduled,
    /// On a node; the image is being pulled or the container created.
    Scheduled,
    /// The container runs; the server has not answered `initialize` yet.
    Started,
    Ready,
    /// It ended without error (the server exited 0).
    Succeeded,
    /// It cannot become ready.
    Failed {
        reason: String,
        message: String,
        exit_code: Option<i32>,
    },
    /// Being deleted.
    Terminating,
}

impl PodState {
    /// The progress step this state is (of [`STEPS`]).
    pub(crate) fn step(&self) -> Option<u32> {
        match self {
            PodState::Unscheduled => Some(0),
            PodState::Scheduled => Some(1),
            PodState::Started => Some(3),
            PodState::Ready => Some(4),
            _ => None,
        }
    }
}

/// Progress steps of a Kubernetes server becoming ready.
pub(crate) const STEPS: u32 = 4;

/// The timed step of a progress step (the last one, "ready", is timed by how it was seen).
pub(crate) fn start_step(step: u32) -> Option<StartStep> {
    match step {
        1 => Some(StartStep::Scheduled),
        2 => Some(StartStep::ImagePresent),
        3 => Some(StartStep::ContainerStarted),
        _ => None,
    }
}

pub(crate) fn step_message(step: u32, pod: &Pod) -> String {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    match step {
        1 => format!("pod {} scheduled on {node}", pod.metadata.name.as_deref().unwrap_or("?")),
        2 => "image present; starting the container".into(),
        3 => "container started; waiting for the server to answer initialize".into(),
        _ => "ready".into(),
    }
}

/// Whether the server's image is on the node (the container has been created at least once).
pub(crate) fn image_pulled(pod: &Pod) -> bool {
    container_status(pod).is_some_and(|c| {
        !c.image_id.is_empty() || c.state.as_ref().is_some_and(|s| s.running.is_some() || s.terminated.is_some())
    })
}

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)
        .or_else(|| status.container_statuses.as_ref()?.first())
}

fn condition(pod: &Pod, kind: &str) -> Option<(bool, Option<String>, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
}

/// Classify a pod.
pub(crate) fn pod_state(pod: &Pod) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    // An init container (the bridge copy of `image` servers) can fail too.
    let containers = status
        .into_iter()
        .flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()));
    for c in containers {
        let Some(state) = &c.state else { continue };
        if let Some(w) = &state.waiting {
            let reason = w.reason.clone().unwrap_or_default();
            if FATAL_WAITING.contains(&reason.as_str()) {
                let message = w.message.clone().unwrap_or_else(|| format!("container {} is waiting: {reason}", c.name));
                return PodState::Failed { reason, message, exit_code: None };
            }
        }
        if let Some(t) = &state.terminated
            && t.exit_code != 0
        {
            let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
            let message = t
                .message
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("container {} exited with code {}", c.name, t.exit_code));
            return PodState::Failed { reason, message, exit_code: Some(t.exit_code) };
        }
    }
    match phase {
        "Failed" => {
            let reason = status.and_then(|s| s.reason.clone()).unwrap_or_else(|| "PodFailed".into());
            let message = status.and_then(|s| s.message.clone()).unwrap_or_else(|| "the pod failed".into());
            return PodState::Failed { reason, message, exit_code: None };
        }
        "Succeeded" => return PodState::Succeeded,
        _ => {}
    }
    if let Some((false, Some(reason), message)) = condition(pod, "PodScheduled")
        && reason == "Unschedulable"
    {
        let message = message.unwrap_or_else(|| "no node can run the pod".into());
        return PodState::Failed { reason, message, exit_code: None };
    }
    if condition(pod, "Ready").is_some_and(|(ready, _, _)| ready) {
        return PodState::Ready;
    }
    if container_status(pod).and_then(|c| c.state.as_ref()).is_some_and(|s| s.running.is_some()) {
        return PodState::Started;
    }
    if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        || condition(pod, "PodScheduled").is_some_and(|(scheduled, _, _)| scheduled)
    {
        return PodState::Scheduled;
    }
    PodState::Unscheduled
}

/// A failure recorded on the Job itself (deadline passed, backoff limit).
pub(crate) fn job_failure(job: &Job) -> Option<(String, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Failed" && c.status == "True").map(|c| {
        (
            c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
            c.message.clone().unwrap_or_else(|| "the Job failed".into()),
        )
    })
}

fn job_complete(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
}

fn parse_time(text: Option<&String>) -> Option<SystemTime> {
    text.and_then(|t| humantime::parse_rfc3339(t).ok())
}

/// Whether the Job is suspended: the server is Stopped (its pod is gone or going).
pub(crate) fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// The idle timeout of a Job's server, from its label.
pub(crate) fn idle_timeout(job: &Job) -> Option<Duration> {
    let text = job.metadata.labels.as_ref()?.get(LABEL_IDLE_TIMEOUT)?;
    text.parse().ok().filter(|s| *s > 0).map(Duration::from_secs)
}

/// The spec annotation of a Job (empty when missing or unreadable, e.g. a Job edited by hand).
pub(crate) fn spec_annotation(job: &Job) -> SpecAnnotation {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SPEC))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// A server as the tools show it, from its Job and (if there is one yet) its Pod.
pub(crate) fn server_info(job: &Job, pod: Option<&Pod>, urls: Urls) -> ServerInfo {
    let mut info = described(job, urls);
    if let Some(pod) = pod {
        info.restarts = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count.max(0) as u32)
            .sum();
    }
    if job.metadata.deletion_timestamp.is_some() {
        info.set_phase(Phase::Terminating, Reason::Deleting, "the Job is being deleted");
        return info;
    }
    if is_suspended(job) {
        let annotations = job.metadata.annotations.as_ref();
        let reason = annotations
            .and_then(|a| a.get(ANNOTATION_STOPPED))
            .and_then(|r| StopReason::parse(r))
            .unwrap_or(StopReason::StoppedByRequest);
        info.set_phase(Phase::Stopped, reason.reason(), reason.message());
        info.sessions = Some(0);
        info.last_activity = parse_time(annotations.and_then(|a| a.get(ANNOTATION_LAST_ACTIVITY)));
        return info;
    }
    if let Some((reason, message)) = job_failure(job) {
        // The pod's own failure (exit code, image error) says more than the Job's.
        match pod.map(pod_state) {
            Some(PodState::Failed { reason, message, exit_code }) => {
                info.exit_code = exit_code;
                info.set_phase(Phase::Failed, Reason::from_cluster(reason), message);
            }
            _ => info.set_phase(Phase::Failed, Reason::from_cluster(reason), message),
        }
        return info;
    }
    match pod {
        Some(pod) => set_pod_phase(&mut info, pod, confirmed_ready_at(job)),
        None if job_complete(job) => {
            info.set_phase(Phase::Succeeded, Reason::Completed, "the server exited without error")
        }
        None => info.set_phase(Phase::Pending, Reason::WaitingForPod, "the Job has no pod yet"),
    }
    info
}

/// What the Job says of the server (name, times, labels, the spec annotation), phase Pending.
fn described(job: &Job, urls: Urls) -> ServerInfo {
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut labels = job.metadata.labels.clone().unwrap_or_default();
    // Ours, not the user's: shown as `idle_timeout_seconds`.
    labels.remove(LABEL_IDLE_TIMEOUT);
    let annotations = job.metadata.annotations.clone().unwrap_or_default();
    let annotation = spec_annotation(job);
    let created = parse_time(annotations.get(ANNOTATION_CREATED))
        .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| SystemTime::from(t.0)))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let expires = parse_time(annotations.get(ANNOTATION_EXPIRES)).unwrap_or_else(|| {
        let deadline = job.spec.as_ref().and_then(|s| s.active_deadline_seconds).unwrap_or(0).max(0) as u64;
        created + Duration::from_secs(deadline)
    });
    let preset = labels.get(LABEL_PRESET).cloned().filter(|p| p != "custom").or(annotation.preset.clone());
    let source =
        if labels.contains_key(crate::runtime::LABEL_RESOURCE) { ServerSource::Resource } else { ServerSource::Tool };
    ServerInfo {
        source,
        preset,
        command: annotation.command,
        labels,
        env_names: annotation.env_names,
        secret_env_names: annotation.secret_env_names,
        idle_timeout_seconds: idle_timeout(job).map(|d| d.as_secs()),
        ..ServerInfo::new(name, Phase::Pending, urls, created, expires)
    }
}

/// The phase of a server whose Job runs `pod`.
/// When the meta server confirmed the server ready itself (the Job's `ready-at` annotation).
fn confirmed_ready_at(job: &Job) -> Option<SystemTime> {
    parse_time(job.metadata.annotations.as_ref()?.get(ANNOTATION_READY))
}

/// Whether the pod's `Ready` condition last changed after `t`: it turned (or stayed) not
/// ready since, rather than the kubelet not having caught up yet.
fn ready_condition_changed_after(pod: &Pod, t: SystemTime) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .is_some_and(|at| SystemTime::from(at.0) > t)
}

/// The phase of a server whose Job runs `pod`. A running pod the meta server has already
/// confirmed ready is Ready, though the kubelet's probe has not said so yet — unless its Ready
/// condition changed since the confirmation (it stopped being ready).
fn set_pod_phase(info: &mut ServerInfo, pod: &Pod, confirmed: Option<SystemTime>) {
    match pod_state(pod) {
        PodState::Started if confirmed.is_some_and(|t| !ready_condition_changed_after(pod, t)) => {
            info.phase = Phase::Ready;
            info.ready_after_ms = confirmed.and_then(|t| ms_after_creation(pod, t));
        }
        PodState::Unscheduled => info.set_phase(Phase::Pending, Reason::Unscheduled, "waiting for a node"),
        PodState::Scheduled => {
            info.set_phase(Phase::Pending, Reason::ContainerCreating, "pulling the image or creating the container")
        }
        PodState::Started => info.set_phase(
            Phase::Starting,
            Reason::WaitingForInitialize,
            "the container runs; it becomes Ready when the server answers initialize",
        ),
        PodState::Ready => {
            info.phase = Phase::Ready;
            info.ready_after_ms = ready_after_ms(pod);
        }
        PodState::Succeeded => info.set_phase(Phase::Succeeded, Reason::Completed, "the server exited without error"),
        PodState::Failed { reason, message, exit_code } => {
            info.exit_code = exit_code;
            info.set_phase(Phase::Failed, Reason::from_cluster(reason), message);
        }
        PodState::Terminating => info.set_phase(Phase::Terminating, Reason::Deleting, "the pod is being deleted"),
    }
}

/// From the pod's creation to its `Ready` condition.
fn ready_after_ms(pod: &Pod) -> Option<u64> {
    let ready_at = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| SystemTime::from(t.0))?;
    ms_after_creation(pod, ready_at)
}

/// Milliseconds from the pod's creation to `t`.
fn ms_after_creation(pod: &Pod, t: SystemTime) -> Option<u64> {
    let created = pod.metadata.creation_timestamp.as_ref().map(|c| SystemTime::from(c.0))?;
    t.duration_since(created).ok().map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        let mut base =
            serde_json::json!({"metadata": {"name": "time-abc-x1"}, "spec": {"containers": [{"name": "mcp"}]}});
        merge(&mut base, value);
        serde_json::from_value(base).expect("pod")
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn waiting(reason: &str) -> Pod {
        pod(serde_json::json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending", "containerStatuses": [
            {"name": "mcp", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
             "state": {"waiting": {"reason": reason, "message": format!("{reason}: details")}}}]}}))
    }

    #[test]
    fn pods_walk_from_unscheduled_to_ready() {
        assert_eq!(pod_state(&pod(serde_json::json!({"status": {"phase": "Pending"}}))), PodState::Unscheduled);
        assert_eq!(pod_state(&waiting("ContainerCreating")), PodState::Scheduled);
        let started =
            pod(serde_json::json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running", "containerStatuses": [
            {"name": "mcp", "ready": false, "restartCount": 0, "image": "x", "imageID": "sha",
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}));
        assert_eq!(pod_state(&started), PodState::Started);
        assert!(image_pulled(&started));
        let mut ready = started.clone();
        merge_conditions(&mut ready, "Ready", "True", None);
        assert_eq!(pod_state(&ready), PodState::Ready);
    }

    fn merge_conditions(p: &mut Pod, kind: &str, status: &str, reason: Option<&str>) {
        let mut v = serde_json::to_value(&*p).unwrap();
        merge(
            &mut v,
            serde_json::json!({"status": {"conditions": [{"type": kind, "status": status, "reason": reason, "message": "no nodes available"}]}}),
        );
        *p = serde_json::from_value(v).unwrap();
    }

    #[test]
    fn hopeless_waiting_reasons_fail_fast() {
        for reason in ["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError"] {
            match pod_state(&waiting(reason)) {
                PodState::Failed { reason: r, message, .. } => {
                    assert_eq!(r, reason);
                    assert!(message.contains("details"));
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_crashed_container_reports_its_exit_code() {
        let p = pod(serde_json::json!({"status": {"phase": "Failed", "containerStatuses": [
            {"name": "mcp", "ready": false, "restartCount": 0, "image": "x", "imageID": "sha",
             "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}}));
        assert_eq!(
            pod_state(&p),
            PodState::Failed {
                reason: "Error".into(),
                message: "container mcp exited with code 3".into(),
                exit_code: Some(3)
            }
        );
    }

    #[test]
    fn unschedulable_pods_fail_with_the_scheduler_message() {
        let mut p = pod(serde_json::json!({"status": {"phase": "Pending"}}));
        merge_conditions(&mut p, "PodScheduled", "False", Some("Unschedulable"));
        assert!(
            matches!(pod_state(&p), PodState::Failed { reason, message, .. } if reason == "Unschedulable" && message.contains("no nodes"))
        );
    }

    #[test]
    fn job_deadline_is_a_failure_and_deletion_is_terminating() {
        let urls = Urls { mcp: "m".into(), sse: "s".into() };
        let job: Job = serde_json::from_value(serde_json::json!({"metadata": {"name": "time-abc"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}})).unwrap();
        let info = server_info(&job, None, urls.clone());
        assert_eq!((info.phase, info.reason.as_ref().map(Reason::as_str)), (Phase::Failed, Some("DeadlineExceeded")));
        let deleting: Job = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "time-abc", "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        )
        .unwrap();
        assert_eq!(server_info(&deleting, None, urls).phase, Phase::Terminating);
    }

    #[test]
    fn a_running_pod_confirmed_ready_by_the_meta_server_is_ready_until_its_condition_changes() {
        let urls = Urls { mcp: "m".into(), sse: "s".into() };
        let job = |ready_at: Option<&str>| -> Job {
            let mut j = serde_json::json!({"metadata": {"name": "time-abc"}});
            if let Some(t) = ready_at {
                j["metadata"]["annotations"] = serde_json::json!({ANNOTATION_READY: t});
            }
            serde_json::from_value(j).unwrap()
        };
        let running = |ready_changed: &str| {
            pod(serde_json::json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"nodeName": "n"},
                "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": ready_changed}],
                    "containerStatuses": [{"name": "mcp", "image": "i", "imageID": "x", "ready": false, "restartCount": 0,
                        "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}}))
        };
        // The kubelet has not probed since the container started: the confirmation wins.
        let lagging = running("2026-01-01T00:00:01Z");
        assert_eq!(server_info(&job(None), Some(&lagging), urls.clone()).phase, Phase::Starting);
        let info = server_info(&job(Some("2026-01-01T00:00:02Z")), Some(&lagging), urls.clone());
        assert_eq!((info.phase, info.ready_after_ms), (Phase::Ready, Some(2000)));
        // The pod turned not ready after the confirmation: it is starting again.
        let turned = running("2026-01-01T00:05:00Z");
        assert_eq!(server_info(&job(Some("2026-01-01T00:00:02Z")), Some(&turned), urls).phase, Phase::Starting);
    }
}
