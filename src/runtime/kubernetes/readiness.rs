//! Waiting for a server to become Ready, by watching its Pod and Job (never by sleep-polling the
//! API): it returns as soon as the pod is Ready, and fails as soon as the pod shows a reason it
//! never will be (image pull errors, a crash, a bad config, no node), with the pod's events and
//! its last output in the message.
//!
//! The kubelet probes `/readyz` once a second; to save up to that second, once the container
//! runs the meta server asks `/readyz` itself, through the connection pool the gateway uses
//! (pod IP in cluster, port-forward outside), so the first call through the gateway finds a
//! tunnel already open. Each step is timed ([`Startup`]) for the create's answer.

use std::{
    ops::ControlFlow,
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::BoxStream};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Event, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, LogParams},
    runtime::watcher,
};

use super::{
    KubernetesRuntime, manifests, retry,
    status::{self, PodState},
};
use crate::{
    gateway::Pool,
    runtime::{
        Phase, ProgressFn, ProgressStep, Reason, RuntimeError, ServerInfo,
        startup::{StartStep, Startup},
    },
};

/// Consecutive watch errors before the API server is declared unusable (about 5 s of backoff).
const MAX_WATCH_ERRORS: u32 = 7;
/// Events and log lines quoted in a failure.
const EVENTS_SHOWN: usize = 5;
const LOG_LINES_SHOWN: i64 = 20;

/// A watch event of the server's Pod or Job. Both are large and there are only a handful per
/// wait, so the size difference clippy warns about costs nothing worth an allocation.
#[allow(clippy::large_enum_variant)]
enum Update {
    Pod(watcher::Result<watcher::Event<Pod>>),
    Job(watcher::Result<watcher::Event<Job>>),
}

/// Wait for `name` to become Ready.
pub(crate) async fn wait_ready(
    rt: &KubernetesRuntime,
    name: &str,
    timeout: Duration,
    progress: Option<ProgressFn>,
) -> Result<ServerInfo, RuntimeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let job = rt.get_job(name).await?;
    if let Some((reason, message)) = status::job_failure(&job) {
        return Err(RuntimeError::Failed { name: name.to_string(), reason: Reason::from_cluster(reason), message });
    }
    let mut updates = watch(rt, name);
    let mut wait = Wait {
        rt,
        name,
        progress,
        job,
        last_pod: None,
        reported: 0,
        pod_errors: 0,
        job_errors: 0,
        confirm: None,
        startup: Startup::new(),
    };
    loop {
        let update = tokio::select! {
            u = updates.next() => u,
            listening = async { wait.confirm.as_mut().expect("guarded").await }, if wait.confirm.is_some() => {
                return Ok(wait.confirmed(listening).await);
            }
            _ = tokio::time::sleep_until(deadline) => {
                let phase = rt.info(&wait.job, wait.last_pod.as_ref()).phase;
                return Err(RuntimeError::NotReadyInTime { name: name.to_string(), waited: timeout, phase });
            }
        };
        let Some(update) = update else {
            return Err(RuntimeError::Watch {
                action: format!("watching `{name}`"),
                detail: "the watch ended".into(),
                source: None,
            });
        };
        if let ControlFlow::Break(result) = wait.apply(update).await {
            return result;
        }
    }
}

/// The server's pods and its Job, as one stream of updates.
fn watch(rt: &KubernetesRuntime, name: &str) -> impl futures::Stream<Item = Update> + Send + Unpin + 'static {
    let selector = rt.pod_selector(name);
    let pods: BoxStream<'static, Update> =
        retry::backed_off(watcher(rt.pods(), watcher::Config::default().labels(&selector))).map(Update::Pod).boxed();
    let job = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let jobs: BoxStream<'static, Update> = retry::backed_off(watcher(rt.jobs(), job)).map(Update::Job).boxed();
    futures::stream::select(pods, jobs)
}

/// What one wait has seen of its server so far.
struct Wait<'a> {
    rt: &'a KubernetesRuntime,
    name: &'a str,
    progress: Option<ProgressFn>,
    job: Job,
    last_pod: Option<Pod>,
    /// Progress steps sent so far.
    reported: u32,
    /// Errors in a row of the pod watch and of the Job watch, each reset only by its own
    /// events: one watch that works does not hide another that keeps failing.
    pod_errors: u32,
    job_errors: u32,
    /// The meta server's own `/readyz` check, once the container runs; it resolves to when
    /// the bridge first answered.
    confirm: Option<BoxFuture<'static, Instant>>,
    startup: Startup,
}

type Outcome = ControlFlow<Result<ServerInfo, RuntimeError>>;

impl Wait<'_> {
    /// Send the progress steps up to `upto` not sent yet, and time them.
    fn report(&mut self, upto: u32, pod: &Pod) {
        while self.reported < upto {
            self.reported += 1;
            if let Some(step) = status::start_step(self.reported) {
                self.startup.mark(step);
            }
            if let Some(p) = &self.progress {
                let at = self.startup.elapsed().as_secs_f64();
                let message = format!("{} ({at:.2} s)", status::step_message(self.reported, pod));
                p(ProgressStep { step: self.reported, total: status::STEPS, message });
            }
        }
    }

    /// The answer for a Ready server, with the timed steps of its start.
    fn ready(&mut self, mut info: ServerInfo) -> ServerInfo {
        info.startup = std::mem::replace(&mut self.startup, Startup::new()).finish();
        info
    }

    async fn apply(&mut self, update: Update) -> Outcome {
        match update {
            Update::Pod(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                self.pod_errors = 0;
                self.on_pod(pod).await
            }
            Update::Job(Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job))) => {
                self.job_errors = 0;
                if let Some((reason, message)) = status::job_failure(&job) {
                    let pod = self.last_pod.take();
                    return ControlFlow::Break(Err(job_failed(self.rt, self.name, pod, reason, message).await));
                }
                self.job = job;
                ControlFlow::Continue(())
            }
            Update::Job(Ok(watcher::Event::Delete(_))) => {
                ControlFlow::Break(Err(RuntimeError::NotFound(self.name.to_string())))
            }
            // A re-list starting says nothing about whether it will work.
            Update::Pod(Ok(watcher::Event::Init)) | Update::Job(Ok(watcher::Event::Init)) => ControlFlow::Continue(()),
            Update::Pod(Ok(_)) => {
                self.pod_errors = 0;
                ControlFlow::Continue(())
            }
            Update::Job(Ok(_)) => {
                self.job_errors = 0;
                ControlFlow::Continue(())
            }
            Update::Pod(Err(e)) => match watch_error(self.name, &mut self.pod_errors, e) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(Err(e)),
            },
            Update::Job(Err(e)) => match watch_error(self.name, &mut self.job_errors, e) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(Err(e)),
            },
        }
    }

    async fn on_pod(&mut self, pod: Pod) -> Outcome {
        let (rt, name) = (self.rt, self.name);
        let state = status::pod_state(&pod);
        if let Some(step) = state.step() {
            let step = if step == 1 && status::image_pulled(&pod) { 2 } else { step };
            self.report(step, &pod);
        }
        let failed =
            |reason, message| ControlFlow::Break(Err(RuntimeError::Failed { name: name.to_string(), reason, message }));
        match state {
            PodState::Ready => {
                self.startup.mark(StartStep::PodReady);
                tracing::info!(server = name, pod = %pod.name_any(), "ready");
                let info = rt.info(&self.job, Some(&pod));
                return ControlFlow::Break(Ok(self.ready(info)));
            }
            PodState::Failed { reason, message, .. } => {
                let message = rt.explain(&pod, message).await;
                tracing::warn!(server = name, %reason, "failed while starting");
                return failed(Reason::from_cluster(reason), message);
            }
            PodState::Succeeded => {
                let message = rt.explain(&pod, "the server exited (code 0) before it became ready".into()).await;
                return failed(Reason::Completed, message);
            }
            PodState::Started if self.confirm.is_none() && rt.can_confirm(&self.job) => {
                self.confirm = Some(confirm_ready(rt.pool(), name.to_string()));
            }
            _ => {}
        }
        self.last_pod = Some(pod);
        ControlFlow::Continue(())
    }

    /// The answer once the meta server's own `/readyz` check succeeded. The confirmation is
    /// recorded on the Job, so that status, list and mount (here or in a restarted meta server)
    /// say Ready too, before the kubelet's next probe does.
    async fn confirmed(&mut self, listening: Instant) -> ServerInfo {
        let pod = self.last_pod.clone().expect("confirm needs a pod");
        self.startup.mark_at(StartStep::BridgeListening, listening);
        self.startup.mark(StartStep::InitializeAnswered);
        self.report(status::STEPS, &pod);
        let now = crate::runtime::rfc3339(std::time::SystemTime::now());
        let patch = kube::api::Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {manifests::ANNOTATION_READY: now}}}),
        );
        let (jobs, params) = (self.rt.jobs(), kube::api::PatchParams::default());
        match retry::call("patch job", || jobs.patch(self.name, &params, &patch)).await {
            Ok(job) => {
                self.job = job;
                self.startup.mark(StartStep::Recorded);
            }
            Err(e) => tracing::warn!(server = self.name, error = %e, "cannot record the readiness on the Job"),
        }
        let mut info = self.rt.info(&self.job, Some(&pod));
        info.phase = Phase::Ready;
        info.reason = None;
        info.message = None;
        tracing::info!(server = self.name, "ready (confirmed by /readyz)");
        self.ready(info)
    }
}

/// The error for a Job that failed: the pod's own reason (an exit code, an image error) says
/// more than the Job's, so the pod is read again for its final state.
async fn job_failed(
    rt: &KubernetesRuntime,
    name: &str,
    last: Option<Pod>,
    reason: String,
    message: String,
) -> RuntimeError {
    let pod = rt.find_pod(name).await.ok().flatten().or(last);
    let (reason, message) = match pod.as_ref().map(status::pod_state) {
        Some(PodState::Failed { reason, message, .. }) => (reason, message),
        _ => (reason, message),
    };
    let message = match &pod {
        Some(pod) => rt.explain(pod, message).await,
        None => message,
    };
    RuntimeError::Failed { name: name.to_string(), reason: Reason::from_cluster(reason), message }
}

/// Count a watch error (the watcher resumes on its own); too many in a row fail the wait.
fn watch_error(name: &str, errors: &mut u32, e: watcher::Error) -> Result<(), RuntimeError> {
    *errors += 1;
    tracing::debug!(server = name, error = %e, errors = *errors, "watch error; resuming");
    if *errors >= MAX_WATCH_ERRORS {
        return Err(RuntimeError::Watch {
            action: format!("waiting for `{name}` to become ready"),
            detail: format!("the API server keeps failing ({errors} errors in a row); last: {e}"),
            source: Some(e),
        });
    }
    Ok(())
}

/// Resolves once the server's `/readyz` answers 200, to when the bridge first answered at all.
/// A bridge that is not listening yet fails a few tries; one that stays unreachable (no
/// `pods/portforward` permission, a network policy) makes it give up quietly, and the watch
/// reports readiness one kubelet probe later.
fn confirm_ready(pool: Pool, name: String) -> BoxFuture<'static, Instant> {
    const ANSWER_WAIT: Duration = Duration::from_secs(2);
    // Once the bridge listens, the tries share one keep-alive connection, so asking often is
    // cheap and readiness is seen within this long of the server's answer.
    const EVERY: Duration = Duration::from_millis(50);
    // Failed tries in a row (about 2 s and more) before giving up.
    const GIVE_UP_AFTER: u32 = 40;
    async move {
        let mut listening = None;
        let mut unreachable = 0;
        for attempt in 0..600u32 {
            match pool.get(&name, "/readyz", ANSWER_WAIT).await {
                Ok((code, _)) => {
                    unreachable = 0;
                    let first = *listening.get_or_insert_with(Instant::now);
                    if code == hyper::StatusCode::OK {
                        return first;
                    }
                }
                Err(why) => {
                    tracing::debug!(server = %name, error = %why, attempt, "cannot reach the pod to confirm readiness");
                    unreachable += 1;
                    if unreachable >= GIVE_UP_AFTER {
                        break;
                    }
                }
            }
            tokio::time::sleep(EVERY).await;
        }
        futures::future::pending::<Instant>().await
    }
    .boxed()
}

impl KubernetesRuntime {
    /// The failure `message`, with the pod's recent events and its last output.
    pub(super) async fn explain(&self, pod: &Pod, message: String) -> String {
        let pod_name = pod.name_any();
        let mut text = message;
        let events: Api<Event> = self.events();
        let params = ListParams::default().fields(&format!("involvedObject.name={pod_name}"));
        match retry::once(events.list(&params)).await {
            Ok(list) => {
                let mut items = list.items;
                // Oldest first; timestamps have second precision, so the resourceVersion breaks ties.
                items.sort_by_key(|e| {
                    let at = e.last_timestamp.clone().map(|t| t.0).or(e.event_time.clone().map(|t| t.0));
                    let version = e.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
                    (at, version)
                });
                let lines: Vec<String> = items
                    .iter()
                    .rev()
                    .take(EVENTS_SHOWN)
                    .rev()
                    .map(|e| {
                        format!(
                            "{} {}: {}",
                            e.type_.as_deref().unwrap_or("Normal"),
                            e.reason.as_deref().unwrap_or(""),
                            e.message.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                if !lines.is_empty() {
                    text.push_str("\nRecent events:\n  ");
                    text.push_str(&lines.join("\n  "));
                }
            }
            Err(e) => tracing::debug!(pod = %pod_name, error = %e, "cannot read events"),
        }
        let params = LogParams {
            container: Some(manifests::CONTAINER.into()),
            tail_lines: Some(LOG_LINES_SHOWN),
            ..Default::default()
        };
        if let Ok(log) = retry::once(self.pods().logs(&pod_name, &params)).await
            && !log.trim().is_empty()
        {
            text.push_str("\nLast output:\n  ");
            text.push_str(&log.trim_end().lines().collect::<Vec<_>>().join("\n  "));
        }
        text
    }
}
