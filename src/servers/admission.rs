//! Who may have a server now: the quotas a create or a start must fit (`--max-servers` for
//! every server that exists, `--max-active` per preset for those not Stopped), each slot taken
//! as a [`Reservation`](super::quota::Reservation) before anything is made or started, and the
//! line of requests that asked to wait for a slot (`wait_for_capacity_seconds`): first come,
//! first served among requests for the same preset.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::Notify;

use super::{
    Policy, ServersError,
    error::QuotaKind,
    quota::{Quota, Reservation},
};
use crate::{
    runtime::{Phase, ProgressFn, ProgressStep, Runtime, ServerInfo},
    spec::LabelSelector,
};

/// How often a waiter looks again when nothing told it a slot may be free (a TTL ran out, a
/// server was deleted elsewhere).
const POLL: Duration = Duration::from_millis(500);

/// What a request wants a slot for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// A new server: it counts against `--max-servers` and its preset's `--max-active`.
    Create,
    /// A Stopped server to run again: its preset's `--max-active` only.
    Start,
}

/// The quotas and the line of waiters.
pub(crate) struct Admission {
    servers: Quota,
    active: BTreeMap<String, Quota>,
    line: Mutex<Line>,
    /// Told when a slot may have been freed (a stop, a delete, a failed create).
    freed: Notify,
}

#[derive(Default)]
struct Line {
    next: u64,
    /// Tickets waiting, by preset (`""` for servers of no preset), oldest first.
    waiting: BTreeMap<String, VecDeque<u64>>,
}

/// The slots one create or start holds; given back when dropped unless settled.
#[derive(Default)]
pub(crate) struct Slots<'a> {
    held: Vec<Reservation<'a>>,
}

impl Slots<'_> {
    /// The request made or started server `name` (the runtime's name).
    pub(crate) fn settle(self, name: &str) {
        for r in self.held {
            r.settle(name);
        }
    }
}

/// One quota and how much of it is used, for get_version.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct QuotaUse {
    /// `max_servers`, or `max_active` with its preset.
    pub quota: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    pub limit: usize,
    /// Servers that count against it now.
    pub used: usize,
}

impl Admission {
    pub(crate) fn new(policy: &Policy) -> Admission {
        Admission {
            servers: Quota::new(policy.max_servers),
            active: policy.max_active.iter().map(|(p, n)| (p.clone(), Quota::new(*n))).collect(),
            line: Mutex::default(),
            freed: Notify::new(),
        }
    }

    /// A slot may be free now: waiters look again.
    pub(crate) fn freed(&self) {
        self.freed.notify_waiters();
    }

    /// What counts against each quota in `listed`.
    pub(crate) fn usage(&self, listed: &[ServerInfo]) -> Vec<QuotaUse> {
        let mut uses =
            vec![QuotaUse { quota: "max_servers".into(), preset: None, limit: self.servers.max(), used: listed.len() }];
        for (preset, q) in &self.active {
            let used = listed.iter().filter(|s| counts_active(s, preset)).count();
            uses.push(QuotaUse { quota: "max_active".into(), preset: Some(preset.clone()), limit: q.max(), used });
        }
        uses
    }

    /// Take the slots `want` needs for server `name` of `preset`, waiting up to `wait` (in
    /// line) when a quota is full.
    pub(crate) async fn take(
        &self,
        runtime: &Runtime,
        want: Want,
        name: &str,
        preset: Option<&str>,
        wait: Duration,
        progress: Option<&ProgressFn>,
    ) -> Result<Slots<'_>, ServersError> {
        if want == Want::Start && !preset.is_some_and(|p| self.active.contains_key(p)) {
            return Ok(Slots::default());
        }
        let began = Instant::now();
        if wait.is_zero() {
            return self
                .try_take(runtime, want, name, preset)
                .await?
                .map_err(|quota| ServersError::Quota { quota, waited: None });
        }
        let key = preset.unwrap_or_default().to_string();
        let in_line = InLine::join(self, &key);
        let mut told = false;
        loop {
            let freed = self.freed.notified();
            futures::pin_mut!(freed);
            freed.as_mut().enable();
            let out_of_time = began.elapsed() >= wait;
            if in_line.first() || out_of_time {
                match self.try_take(runtime, want, name, preset).await? {
                    Ok(slots) => return Ok(slots),
                    Err(quota) if out_of_time => {
                        return Err(ServersError::Quota { quota, waited: Some(began.elapsed()) });
                    }
                    Err(quota) if !told => {
                        told = true;
                        tracing::info!(server = name, %quota, "waiting for a slot");
                        if let Some(p) = progress {
                            let message = format!("waiting up to {}s for a slot: {quota}", wait.as_secs());
                            p(ProgressStep { step: 0, total: 0, message });
                        }
                    }
                    Err(_) => {}
                }
            }
            let left = wait.saturating_sub(began.elapsed());
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(left.min(POLL)) => {}
            }
        }
    }

    /// One try: list the servers, then take every slot or none.
    async fn try_take(
        &self,
        runtime: &Runtime,
        want: Want,
        name: &str,
        preset: Option<&str>,
        // The outer error is the runtime's; the inner is the full quota.
    ) -> Result<Result<Slots<'_>, QuotaKind>, ServersError> {
        let listed_at = Instant::now();
        let listed = runtime.list_brief(&LabelSelector::default()).await?;
        let mut held = Vec::new();
        if want == Want::Create {
            let names: Vec<String> = listed.iter().map(|s| s.job_name.clone()).collect();
            match self.servers.reserve(name, &names, listed_at) {
                Ok(r) => held.push(r),
                Err(full) => return Ok(Err(QuotaKind::Servers { max: full.max })),
            }
        }
        if let Some((preset, quota)) = preset.and_then(|p| self.active.get_key_value(p)) {
            let names: Vec<String> = listed
                .iter()
                .filter(|s| counts_active(s, preset) && s.job_name != name)
                .map(|s| s.job_name.clone())
                .collect();
            match quota.reserve(name, &names, listed_at) {
                Ok(r) => held.push(r),
                Err(full) => return Ok(Err(QuotaKind::Active { preset: preset.clone(), max: full.max })),
            }
        }
        Ok(Ok(Slots { held }))
    }
}

/// Whether `server` counts against `preset`'s `--max-active`.
fn counts_active(server: &ServerInfo, preset: &str) -> bool {
    server.preset.as_deref() == Some(preset) && server.phase != Phase::Stopped
}

/// A place in the line of one preset; leaving it (on drop) lets the next one look.
struct InLine<'a> {
    admission: &'a Admission,
    key: String,
    ticket: u64,
}

impl<'a> InLine<'a> {
    fn join(admission: &'a Admission, key: &str) -> InLine<'a> {
        let mut line = admission.line.lock().expect("line poisoned");
        let ticket = line.next;
        line.next += 1;
        line.waiting.entry(key.to_string()).or_default().push_back(ticket);
        InLine { admission, key: key.to_string(), ticket }
    }

    fn first(&self) -> bool {
        let line = self.admission.line.lock().expect("line poisoned");
        line.waiting.get(&self.key).and_then(|q| q.front()) == Some(&self.ticket)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut line = self.admission.line.lock().expect("line poisoned");
        if let Some(q) = line.waiting.get_mut(&self.key) {
            q.retain(|t| *t != self.ticket);
            if q.is_empty() {
                line.waiting.remove(&self.key);
            }
        }
        drop(line);
        self.admission.freed.notify_waiters();
    }
}
