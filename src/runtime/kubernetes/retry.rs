//! Every API call goes through [`call`]: bounded in time, retried with backoff when the API
//! server is overloaded or briefly unreachable, and turned into an error a person can act on.

use std::{future::Future, time::Duration};

use futures::{Stream, StreamExt};
use kube::{Api, api::PostParams, runtime::watcher};
use serde::{Serialize, de::DeserializeOwned};

use crate::runtime::RuntimeError;

/// How long one API request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Delays between attempts: four attempts in all, about 1.4 s of waiting.
const BACKOFF: [Duration; 3] = [Duration::from_millis(100), Duration::from_millis(300), Duration::from_secs(1)];

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("no answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

impl ApiError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Kube(kube::Error::Api(s)) if s.is_not_found())
    }

    /// A create found the name taken (409 AlreadyExists, or Conflict).
    pub(crate) fn is_name_taken(&self) -> bool {
        matches!(self, ApiError::Kube(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict())
    }

    pub(crate) fn is_forbidden(&self) -> bool {
        matches!(self, ApiError::Kube(kube::Error::Api(s)) if s.is_forbidden())
    }

    /// Worth another attempt: 5xx, 429, timeouts and connection failures.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ApiError::Timeout => true,
            ApiError::Kube(kube::Error::Api(s)) => s.code >= 500 || s.code == 429,
            ApiError::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)) => true,
            ApiError::Kube(_) => false,
        }
    }

    /// What went wrong, for a person: the API's own message and status, and for 403 what to do.
    pub(crate) fn detail(&self) -> String {
        match self {
            ApiError::Kube(kube::Error::Api(s)) if s.is_forbidden() => format!(
                "{} (the meta server's service account lacks a permission: apply deploy/kubernetes/role.yaml)",
                s.message
            ),
            ApiError::Kube(kube::Error::Api(s)) => format!("{} ({} {})", s.message, s.code, s.reason),
            other => other.to_string(),
        }
    }

    /// The error for a tool result: what failed (`action`), keeping this error as its source.
    pub(crate) fn into_runtime(self, action: impl Into<String>) -> RuntimeError {
        RuntimeError::Api { action: action.into(), source: self }
    }
}

/// One attempt, bounded by [`REQUEST_TIMEOUT`].
pub(crate) async fn once<T, Fut>(fut: Fut) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiError::Timeout),
    }
}

/// Run `attempt` until it succeeds, fails for good, or the attempts are used up.
pub(crate) async fn call<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delays = BACKOFF.iter();
    loop {
        match once(attempt()).await {
            Err(e) if e.is_transient() => match delays.next() {
                Some(delay) => {
                    tracing::debug!(call = what, error = %e, retry_in = ?delay, "Kubernetes API call failed; retrying");
                    tokio::time::sleep(*delay).await;
                }
                None => {
                    tracing::warn!(call = what, error = %e, "Kubernetes API call failed; giving up");
                    return Err(e);
                }
            },
            other => return other,
        }
    }
}

/// Create `obj` (named) with the retries of [`call`], without ever leaving a second copy or an
/// orphan behind. An attempt whose answer was lost (a 5xx, a dropped connection, a timeout) may
/// have stored the object all the same: when a later attempt then finds the name taken, or when
/// the attempts run out, the object under that name is read, and if `ours` says it is the one
/// this call sent, it is the result. A name taken at the first attempt is someone else's.
pub(crate) async fn create<K>(what: &str, api: &Api<K>, obj: &K, ours: impl Fn(&K) -> bool) -> Result<K, ApiError>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let params = PostParams::default();
    let mut delays = BACKOFF.iter();
    let mut maybe_stored = false;
    loop {
        let error = match once(api.create(&params, obj)).await {
            Ok(created) => return Ok(created),
            Err(e) if e.is_name_taken() && maybe_stored => {
                tracing::debug!(call = what, object = %name, "name taken after a lost answer; is it ours?");
                return find_ours(api, &name, &ours).await.ok_or(e);
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        maybe_stored = true;
        match delays.next() {
            Some(delay) => {
                tracing::debug!(call = what, error = %error, retry_in = ?delay, "Kubernetes API call failed; retrying");
                tokio::time::sleep(*delay).await;
            }
            None => {
                tracing::warn!(call = what, error = %error, "Kubernetes API call failed; giving up");
                return find_ours(api, &name, &ours).await.ok_or(error);
            }
        }
    }
}

/// The object named `name`, when it is there and `ours` recognises it.
async fn find_ours<K>(api: &Api<K>, name: &str, ours: &impl Fn(&K) -> bool) -> Option<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let found = once(api.get(name)).await.ok().filter(|k| ours(k));
    if found.is_some() {
        tracing::info!(object = name, "the create was stored although its answer was lost; using it");
    }
    found
}

/// A watch stream that pauses after each error, longer each time ([`WatchBackoff`]), and
/// counts as healthy again only on a real event. kube's own `StreamBackoff` resets on any `Ok`,
/// and the watcher yields `Ok(Event::Init)` at the start of every re-list, so against an API
/// server whose lists keep failing it retried every 100 ms forever.
pub(crate) fn backed_off<K>(
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Send + 'static,
{
    let start = (Box::pin(stream), WatchBackoff::default(), None::<Duration>);
    futures::stream::unfold(start, |(mut stream, mut backoff, pause)| async move {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        let item = stream.next().await?;
        let pause = match &item {
            Err(_) => backoff.next(),
            // A re-list starting says nothing about whether it will work.
            Ok(watcher::Event::Init) => None,
            Ok(_) => {
                backoff = WatchBackoff::default();
                None
            }
        };
        Some((item, (stream, backoff, pause)))
    })
}

/// The backoff of long-running watches: quick first retries (a dropped watch resumes at once),
/// capped at 2 s.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchBackoff {
    attempt: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ms = 100u64.saturating_mul(1 << self.attempt.min(5)).min(2000);
        self.attempt += 1;
        Some(Duration::from_millis(ms))
    }
}
