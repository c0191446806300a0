//! When a bridge last carried MCP traffic, and what it carries now: the clock an idle timeout
//! reads. A request, each frame of a response and an open stream (an SSE `GET`, a streamed
//! `POST` answer) are activity; health probes and `/status` reads are not, or the meta server's
//! own checks would keep every server awake.
//!
//! It outlives one bridge: the local runtime keeps a server's [`Activity`] across a stop and a
//! start, so `last_activity` still tells when a stopped server was last used.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use http_body_util::BodyExt;

/// The activity of one server.
#[derive(Debug)]
pub struct Activity {
    /// Milliseconds since the Unix epoch of the last request, response frame or stream end.
    last_ms: AtomicU64,
    /// Requests being answered and streams open now.
    open: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        let activity = Activity { last_ms: AtomicU64::new(0), open: AtomicUsize::new(0) };
        activity.touch();
        activity
    }
}

impl Activity {
    /// Something happened now.
    pub fn touch(&self) {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.last_ms.fetch_max(now.as_millis() as u64, Ordering::Relaxed);
    }

    /// The last activity (the start of the bridge when there was none).
    pub fn last(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Requests being answered and streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// How long nothing has happened: zero while a request or stream is open.
    pub fn idle_for(&self) -> Duration {
        if self.open() > 0 {
            return Duration::ZERO;
        }
        self.last().elapsed().unwrap_or_default()
    }

    fn begin(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Open(self.clone())
    }
}

/// One request or stream in flight; its end is activity too.
struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware: count the request, every frame of its answer and the answer's end.
pub(crate) async fn track(activity: Arc<Activity>, req: Request, next: Next) -> Response {
    let open = activity.begin();
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    // The answer's body holds `open` until it ends (or the client goes away).
    let body = body.map_frame(move |frame| {
        open.0.touch();
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_stream_is_never_idle_and_its_end_is_activity() {
        let a = Arc::new(Activity::default());
        a.last_ms.store(0, Ordering::Relaxed);
        assert!(a.idle_for() > Duration::from_secs(3600), "idle since the epoch");
        let open = a.begin();
        assert_eq!(a.idle_for(), Duration::ZERO);
        assert_eq!(a.open(), 1);
        drop(open);
        assert_eq!(a.open(), 0);
        assert!(a.idle_for() < Duration::from_secs(1), "the stream's end was just now");
    }
}
