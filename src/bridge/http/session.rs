//! Client sessions of an HTTP face (streamable HTTP or legacy SSE): each one owns a [`Relay`]
//! to its own upstream, opened through a [`SessionOpener`], and is closed on DELETE, when its
//! SSE stream drops, when its upstream ends, or after an idle timeout.
//!
//! The opener decides what an upstream is (a child process per session for the bridge, an
//! in-process rmcp handler for the meta server's legacy SSE face); the table never looks behind it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use rand::RngExt;

use super::{relay::Relay, upstream::Upstream};
use crate::tasks::Tasks;

/// Ends an upstream (terminates the child, cancels the handler); awaited on shutdown.
pub(crate) type Closer = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// An upstream for one new session, and how to end it.
pub(crate) struct Opened {
    pub(crate) upstream: Upstream,
    pub(crate) closer: Closer,
}

/// Why a session could not be opened; shown to the HTTP client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("the MCP server is not ready: {0}")]
    NotReady(String),
    #[error("the MCP server could not be started: {0}")]
    Spawn(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("too many sessions ({0}); close one (HTTP DELETE) and try again")]
    TooMany(usize),
    #[error("shutting down")]
    ShuttingDown,
}

/// Makes the upstream of a new session.
pub(crate) trait SessionOpener: Send + Sync + 'static {
    fn open(&self) -> BoxFuture<'_, Result<Opened, OpenError>>;

    /// Where the JSON-RPC requests relayed to its upstreams are counted, if anywhere.
    fn calls(&self) -> Option<prometheus_client::metrics::counter::Counter> {
        None
    }
}

pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) relay: Arc<Relay>,
    closer: Mutex<Option<Closer>>,
    last_active: Mutex<Instant>,
    streams: AtomicUsize,
}

impl Session {
    pub(crate) fn touch(&self) {
        *self.last_active.lock().expect("session poisoned") = Instant::now();
    }

    /// Count an open stream; the session is not idle while one is open.
    pub(crate) fn stream_guard(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    fn idle_for(&self) -> Duration {
        if self.streams.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.last_active.lock().expect("session poisoned").elapsed()
    }

    async fn close(&self) {
        let closer = self.closer.lock().expect("session poisoned").take();
        if let Some(close) = closer {
            close().await;
        }
    }
}

pub(crate) struct StreamGuard(Arc<Session>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Limits of a session table.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub idle_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { max_sessions: 64, idle_timeout: Duration::from_secs(15 * 60) }
    }
}

/// The live sessions of one HTTP face.
pub(crate) struct SessionTable {
    opener: Arc<dyn SessionOpener>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    limits: SessionLimits,
    /// Where the relays, the idle reaper and background closes run.
    tasks: Tasks,
}

impl SessionTable {
    /// A table whose idle sessions are reaped by a background task that lives as long as it
    /// (or until `tasks` is cancelled).
    pub fn start(opener: Arc<dyn SessionOpener>, limits: SessionLimits, tasks: &Tasks) -> Arc<SessionTable> {
        let table = Arc::new(SessionTable { opener, sessions: Mutex::default(), limits, tasks: tasks.clone() });
        let weak = Arc::downgrade(&table);
        let period = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tasks.spawn_until_cancelled(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(table) = weak.upgrade() else { break };
                table.reap_idle().await;
            }
        });
        table
    }

    /// Open a session with a fresh upstream.
    pub(crate) async fn open(self: &Arc<Self>) -> Result<Arc<Session>, OpenError> {
        if self.len() >= self.limits.max_sessions {
            return Err(OpenError::TooMany(self.limits.max_sessions));
        }
        let opened = self.opener.open().await?;
        let id = new_session_id();
        let session = Arc::new(Session {
            id: id.clone(),
            relay: Relay::start(opened.upstream, self.opener.calls(), &self.tasks),
            closer: Mutex::new(Some(opened.closer)),
            last_active: Mutex::new(Instant::now()),
            streams: AtomicUsize::new(0),
        });
        self.sessions.lock().expect("sessions poisoned").insert(id.clone(), session.clone());
        // Forget the session as soon as its upstream ends on its own.
        let (table, relay) = (Arc::downgrade(self), session.relay.clone());
        self.tasks.spawn_until_cancelled(async move {
            relay.closed().await;
            if let Some(table) = table.upgrade() {
                table.close(&id).await;
            }
        });
        Ok(session)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.sessions.lock().expect("sessions poisoned").get(id).cloned()?;
        session.touch();
        Some(session)
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().expect("sessions poisoned").len()
    }

    /// [`SessionTable::close`] in the background (from a `Drop`).
    pub(crate) fn close_later(self: &Arc<Self>, id: String) {
        let table = self.clone();
        self.tasks.spawn(async move {
            table.close(&id).await;
        });
    }

    /// Close one session; false when there was none by that id.
    pub(crate) async fn close(&self, id: &str) -> bool {
        let session = self.sessions.lock().expect("sessions poisoned").remove(id);
        match session {
            Some(s) => {
                s.close().await;
                tracing::debug!(session = id, "session closed");
                true
            }
            None => false,
        }
    }

    /// Close every session at once and wait for their upstreams to end.
    pub(crate) async fn close_all(&self) {
        let all: Vec<_> = self.sessions.lock().expect("sessions poisoned").drain().map(|(_, s)| s).collect();
        futures::future::join_all(all.iter().map(|s| s.close())).await;
    }

    async fn reap_idle(&self) {
        let idle: Vec<String> = self
            .sessions
            .lock()
            .expect("sessions poisoned")
            .values()
            .filter(|s| s.idle_for() >= self.limits.idle_timeout)
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            tracing::info!(session = %id, "closing idle session");
            self.close(&id).await;
        }
    }
}

fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
