//! A bridge's families: its open client sessions, the JSON-RPC requests it relays to its
//! children, and how its children ended. In the meta server they add up over every local
//! server's in-process bridge.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::watch;

use super::label_values;
use crate::{bridge::ExitInfo, tasks::Tasks};

label_values! {
    /// How a child process ended.
    pub(crate) enum ExitReason {
        /// Exit code 0 (what a server does on stdin EOF).
        Clean => "clean",
        /// A non-zero exit code.
        Error => "error",
        /// Ended by a signal (SIGTERM/SIGKILL from the bridge's termination, or a crash).
        Signal => "signal",
        /// The exit status could not be read.
        Unknown => "unknown",
    }
}

impl ExitReason {
    pub(crate) fn of(exit: &ExitInfo) -> ExitReason {
        match (exit.code, exit.signal) {
            (Some(0), _) => ExitReason::Clean,
            (Some(_), _) => ExitReason::Error,
            (None, Some(_)) => ExitReason::Signal,
            (None, None) => ExitReason::Unknown,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    reason: ExitReason,
}

/// See the module docs. Cloning shares the families.
#[derive(Debug, Clone)]
pub(crate) struct BridgeMetrics {
    sessions: Gauge,
    calls: Counter,
    exits: Family<ExitLabels, Counter>,
}

impl Default for BridgeMetrics {
    fn default() -> Self {
        let exits = Family::<ExitLabels, Counter>::default();
        for &reason in ExitReason::ALL {
            let _ = exits.get_or_create(&ExitLabels { reason });
        }
        BridgeMetrics { sessions: Gauge::default(), calls: Counter::default(), exits }
    }
}

/// Counts one open session until it is dropped.
pub(crate) struct OpenSession(Gauge);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl BridgeMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "bridge_sessions",
            "Client sessions open on bridges (each has its own child process)",
            self.sessions.clone(),
        );
        r.register(
            "bridge_calls",
            "JSON-RPC requests relayed from clients to bridges' child processes",
            self.calls.clone(),
        );
        r.register(
            "bridge_child_exits",
            "Child processes of bridges that ended, by how they ended",
            self.exits.clone(),
        );
    }

    /// A session opened; it counts as open until the returned guard is dropped.
    pub(crate) fn session_opened(&self) -> OpenSession {
        self.sessions.inc();
        OpenSession(self.sessions.clone())
    }

    /// The counter of relayed requests.
    pub(crate) fn calls(&self) -> Counter {
        self.calls.clone()
    }

    /// Count the child behind `exit` when it ends (on `tasks`; the task ends with the child).
    pub(crate) fn count_exit(&self, mut exit: watch::Receiver<Option<ExitInfo>>, tasks: &Tasks) {
        let exits = self.exits.clone();
        tasks.spawn(async move {
            if let Ok(info) = exit.wait_for(Option::is_some).await
                && let Some(info) = info.as_ref()
            {
                exits.get_or_create(&ExitLabels { reason: ExitReason::of(info) }).inc();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_counts_while_its_guard_lives() {
        let m = BridgeMetrics::default();
        let (a, b) = (m.session_opened(), m.session_opened());
        drop(a);
        assert_eq!(m.sessions.get(), 1);
        drop(b);
        assert_eq!(m.sessions.get(), 0);
    }

    #[tokio::test]
    async fn an_exit_is_counted_by_its_reason_once_it_happens() {
        let m = BridgeMetrics::default();
        let (tx, rx) = watch::channel(None);
        m.count_exit(rx, &Tasks::new());
        tx.send(Some(ExitInfo { code: None, signal: Some(15) })).unwrap();
        let signalled = || m.exits.get_or_create(&ExitLabels { reason: ExitReason::Signal }).get();
        for _ in 0..100 {
            if signalled() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(signalled(), 1);
        assert_eq!(ExitReason::of(&ExitInfo { code: Some(0), signal: None }), ExitReason::Clean);
        assert_eq!(ExitReason::of(&ExitInfo { code: Some(2), signal: None }), ExitReason::Error);
    }
}
