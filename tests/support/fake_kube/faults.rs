//! Faults a test injects at run time: error answers for matching requests, added latency, 403s
//! that mimic missing RBAC, a 409 on the next create, dropped watch streams, and faults *after
//! the write*: the request is carried out (the object is stored) and then answered with an
//! error or a dropped connection, as when an API server or a proxy fails between the two.
//!
//! A rule matches a request by RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
//! `delete`, `deletecollection`) and resource (`jobs`, `pods/log`, optionally `jobs.batch`); `"*"`
//! matches anything.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::watch;

use super::status::ApiError;

#[derive(Debug, Clone)]
enum Action {
    Fail(u16),
    Delay(Duration),
    Forbid,
    Conflict,
    /// Carry the request out, then answer with this code.
    FailAfterWrite(u16),
    /// Carry the request out, then break the connection in the middle of the answer.
    DropAfterWrite,
}

/// What happens to the answer of a request that was carried out.
#[derive(Debug)]
pub(crate) enum AfterWrite {
    Fail(ApiError),
    Drop,
}

#[derive(Debug, Clone)]
struct Rule {
    verb: String,
    resource: String,
    action: Action,
    /// How many more requests it applies to (None: until cleared or expired).
    remaining: Option<usize>,
    until: Option<Instant>,
}

impl Rule {
    fn matches(&self, verb: &str, group: &str, resource: &str) -> bool {
        let verb_ok = self.verb == "*" || self.verb == verb;
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            match resource.split_once('/') {
                Some((r, sub)) => format!("{r}.{group}/{sub}"),
                None => format!("{resource}.{group}"),
            }
        };
        let resource_ok = self.resource == "*" || self.resource == resource || self.resource == qualified;
        verb_ok && resource_ok
    }
}

struct FaultState {
    rules: Mutex<Vec<Rule>>,
    /// Bumped to end every open watch.
    drop_generation: watch::Sender<u64>,
    /// Every watch response ends after this many events (usize::MAX: never).
    drop_after: AtomicUsize,
    /// The status code of the ERROR event a dropped watch sends before it ends (0: none, a
    /// clean end).
    drop_error: AtomicUsize,
}

/// The handle a test uses to inject faults; cheap to clone, thread-safe.
#[derive(Clone)]
pub struct Faults(Arc<FaultState>);

/// What the fault rules decide for one request.
pub(crate) struct Decision {
    pub delay: Duration,
    pub error: Option<ApiError>,
    /// Answer this create with 409 Conflict (the name is only known once the body is read).
    pub conflict: bool,
    /// Carry the request out, then spoil its answer.
    pub after_write: Option<AfterWrite>,
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults(Arc::new(FaultState {
            rules: Mutex::new(Vec::new()),
            drop_generation: watch::channel(0).0,
            drop_after: AtomicUsize::new(usize::MAX),
            drop_error: AtomicUsize::new(0),
        }))
    }
}

impl Faults {
    fn push(&self, verb: &str, resource: &str, action: Action, remaining: Option<usize>, until: Option<Instant>) {
        self.0.rules.lock().expect("faults lock").push(Rule {
            verb: verb.into(),
            resource: resource.into(),
            action,
            remaining,
            until,
        });
    }

    /// Answer the next `n` matching requests with 500 InternalError.
    pub fn fail_next(&self, verb: &str, resource: &str, n: usize) {
        self.fail_next_with(verb, resource, n, 500);
    }

    /// Answer the next `n` matching requests with `code` (e.g. 503, which kube's client retries).
    pub fn fail_next_with(&self, verb: &str, resource: &str, n: usize, code: u16) {
        if n > 0 {
            self.push(verb, resource, Action::Fail(code), Some(n), None);
        }
    }

    /// Answer every matching request with 500 for `window`.
    pub fn fail_for(&self, verb: &str, resource: &str, window: Duration) {
        self.push(verb, resource, Action::Fail(500), None, Some(Instant::now() + window));
    }

    /// Add `delay` before answering matching requests (until `clear`).
    pub fn delay(&self, verb: &str, resource: &str, delay: Duration) {
        self.push(verb, resource, Action::Delay(delay), None, None);
    }

    /// Answer matching requests with RBAC's 403 Forbidden (until `clear`), e.g. `forbid("get", "namespaces")`.
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.push(verb, resource, Action::Forbid, None, None);
    }

    /// Carry out the next `n` matching requests, then answer each with 500 (the write is kept).
    pub fn fail_next_after_write(&self, verb: &str, resource: &str, n: usize) {
        if n > 0 {
            self.push(verb, resource, Action::FailAfterWrite(500), Some(n), None);
        }
    }

    /// Carry out the next `n` matching requests, then drop the connection mid-answer.
    pub fn drop_next_after_write(&self, verb: &str, resource: &str, n: usize) {
        if n > 0 {
            self.push(verb, resource, Action::DropAfterWrite, Some(n), None);
        }
    }

    /// Answer the next create of `resource` with 409 Conflict.
    pub fn conflict_next_create(&self, resource: &str) {
        self.push("create", resource, Action::Conflict, Some(1), None);
    }

    /// End the HTTP response of every open watch now (cleanly, as when the API server's watch
    /// timeout ends it).
    pub fn drop_watches(&self) {
        self.0.drop_error.store(0, Ordering::SeqCst);
        self.0.drop_generation.send_modify(|g| *g += 1);
    }

    /// End every open watch with an ERROR event carrying a `Status` of `code` (e.g. 500, or 410
    /// as an API server sends when the watch cache moved on), as a real watch can end.
    pub fn error_watches(&self, code: u16) {
        self.0.drop_error.store(code as usize, Ordering::SeqCst);
        self.0.drop_generation.send_modify(|g| *g += 1);
    }

    /// End every watch response (open or future) after it has sent `k` events; None: never.
    pub fn drop_watches_after(&self, k: Option<usize>) {
        self.0.drop_after.store(k.unwrap_or(usize::MAX), Ordering::SeqCst);
    }

    /// Remove every rule (watches already dropped stay dropped).
    pub fn clear(&self) {
        self.0.rules.lock().expect("faults lock").clear();
        self.drop_watches_after(None);
    }

    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.0.drop_generation.subscribe()
    }

    /// The ERROR event a dropped watch sends before it ends, if any.
    pub(crate) fn drop_error(&self) -> Option<ApiError> {
        let code = self.0.drop_error.load(Ordering::SeqCst) as u16;
        (code != 0).then(|| {
            ApiError::new(code, reason_for(code), "fake fault injected by the test: the watch ended with an error")
        })
    }

    pub(crate) fn drop_after(&self) -> usize {
        self.0.drop_after.load(Ordering::SeqCst)
    }

    pub(crate) fn decide(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Decision {
        let mut d = Decision { delay: Duration::ZERO, error: None, conflict: false, after_write: None };
        let now = Instant::now();
        let mut rules = self.0.rules.lock().expect("faults lock");
        rules.retain(|r| r.until.is_none_or(|u| u > now) && r.remaining != Some(0));
        for r in rules.iter_mut() {
            if !r.matches(verb, group, resource) {
                continue;
            }
            match r.action {
                Action::Delay(t) => d.delay += t,
                _ if d.error.is_some() || d.conflict || d.after_write.is_some() => continue,
                Action::Fail(code) => {
                    let msg = format!("fake fault injected by the test ({verb} {resource})");
                    d.error = Some(ApiError {
                        details: Some(json!({ "causes": [{ "message": msg }] })),
                        ..ApiError::new(code, reason_for(code), format!("Internal error occurred: {msg}"))
                    });
                }
                Action::Forbid => d.error = Some(ApiError::forbidden(verb, group, resource, ns, name)),
                Action::Conflict => d.conflict = true,
                Action::FailAfterWrite(code) => {
                    let msg = format!("fake fault injected by the test after the write ({verb} {resource})");
                    d.after_write = Some(AfterWrite::Fail(ApiError::new(
                        code,
                        reason_for(code),
                        format!("Internal error occurred: {msg}"),
                    )));
                }
                Action::DropAfterWrite => d.after_write = Some(AfterWrite::Drop),
            }
            if !matches!(r.action, Action::Delay(_))
                && let Some(n) = r.remaining.as_mut()
            {
                *n -= 1;
            }
        }
        rules.retain(|r| r.remaining != Some(0));
        d
    }
}
