//! Where a server's start spends its time: the moments a create that waited for ready saw each
//! step, in milliseconds since the create began. They go into the create's answer (`startup`)
//! and into the progress messages, so a slow start can be explained from one call.

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

/// A step of a server's start, in the order it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartStep {
    /// The runtime accepted the server (local: process spawned; Kubernetes: Job created).
    Created,
    /// Its pod has a node.
    Scheduled,
    /// The image is on the node (the container was created).
    ImagePresent,
    /// The container runs.
    ContainerStarted,
    /// The bridge in the pod answered HTTP (not ready yet, or already).
    BridgeListening,
    /// The server answered `initialize` (the bridge's `/readyz` said 200).
    InitializeAnswered,
    /// The kubelet marked the pod Ready (when that came before the meta server's own check).
    PodReady,
    /// The readiness was recorded on the Job, for every later status and list.
    Recorded,
}

/// When one step was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct StartTiming {
    pub step: StartStep,
    /// Milliseconds since the create began.
    pub after_ms: u64,
}

/// The steps one wait has seen, timed from when it began.
#[derive(Debug)]
pub(crate) struct Startup {
    began: Instant,
    seen: Vec<StartTiming>,
}

impl Startup {
    pub(crate) fn new() -> Startup {
        Startup { began: Instant::now(), seen: Vec::new() }
    }

    /// Time since the wait began.
    pub(crate) fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// Record `step` as seen now (once: a step seen again keeps its first time).
    pub(crate) fn mark(&mut self, step: StartStep) {
        self.mark_at(step, Instant::now());
    }

    /// Record `step` as seen `at`.
    pub(crate) fn mark_at(&mut self, step: StartStep, at: Instant) {
        if self.seen.iter().all(|t| t.step != step) {
            let after_ms = at.saturating_duration_since(self.began).as_millis() as u64;
            self.seen.push(StartTiming { step, after_ms });
        }
    }

    /// The steps seen, in the order they happened.
    pub(crate) fn finish(mut self) -> Vec<StartTiming> {
        self.seen.sort_by_key(|t| (t.after_ms, t.step));
        self.seen
    }
}

/// The steps of a wait that began `created` after the create did, timed from the create, with
/// [`StartStep::Created`] first.
pub(crate) fn after_create(created: Duration, steps: Vec<StartTiming>) -> Vec<StartTiming> {
    let offset = created.as_millis() as u64;
    let shifted = steps.into_iter().map(|t| StartTiming { step: t.step, after_ms: t.after_ms + offset });
    std::iter::once(StartTiming { step: StartStep::Created, after_ms: offset }).chain(shifted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_keeps_its_first_time_and_the_create_comes_first() {
        let mut s = Startup::new();
        let t0 = s.began;
        s.mark_at(StartStep::ContainerStarted, t0 + Duration::from_millis(300));
        s.mark_at(StartStep::Scheduled, t0 + Duration::from_millis(10));
        s.mark_at(StartStep::Scheduled, t0 + Duration::from_millis(200));
        let steps: Vec<(StartStep, u64)> =
            after_create(Duration::from_millis(5), s.finish()).iter().map(|t| (t.step, t.after_ms)).collect();
        assert_eq!(steps, [(StartStep::Created, 5), (StartStep::Scheduled, 15), (StartStep::ContainerStarted, 305)]);
    }
}
