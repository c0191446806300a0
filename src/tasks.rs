//! The one task tree of a process. Every background task is spawned through a [`Tasks`]: a
//! cancellation token (the root's, or a child's for one part such as one server) and the
//! process-wide [`TaskTracker`]. Shutdown cancels the root and waits, bounded, for every task
//! to end, so nothing is left running detached and nothing is cut off mid-cleanup. Each task
//! remembers where it was spawned, so a shutdown that runs out of time can say which did not end.

use std::{
    collections::BTreeMap,
    future::Future,
    panic::Location,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A place in the task tree. Cloning shares it; [`Tasks::child`] makes a branch that stops
/// with its parent or on its own.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
    running: Running,
}

/// Where each running task was spawned, by task number.
#[derive(Clone, Debug, Default)]
struct Running {
    next: Arc<AtomicU64>,
    at: Arc<Mutex<BTreeMap<u64, &'static Location<'static>>>>,
}

/// Forgets its task's place when the task ends (also when it panics or is dropped).
struct Spawned {
    running: Running,
    id: u64,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.running.at.lock().expect("tasks poisoned").remove(&self.id);
    }
}

impl Running {
    fn enter(&self, at: &'static Location<'static>) -> Spawned {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.at.lock().expect("tasks poisoned").insert(id, at);
        Spawned { running: self.clone(), id }
    }
}

impl Tasks {
    /// A new root.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// A branch: cancelled with this one, or alone by [`Tasks::cancel`]; tracked by the same
    /// tracker, so the root's shutdown waits for its tasks too.
    pub fn child(&self) -> Tasks {
        Tasks { stop: self.stop.child_token(), tracker: self.tracker.clone(), running: self.running.clone() }
    }

    /// Run `task` in the background, tracked. It should watch [`Tasks::token`] (or end by
    /// itself soon) so that shutdown does not wait for it in vain.
    #[track_caller]
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let spawned = self.running.enter(Location::caller());
        self.tracker.spawn(async move {
            let _spawned = spawned;
            task.await
        })
    }

    /// Run `task` in the background until it ends or this branch is cancelled.
    #[track_caller]
    pub fn spawn_until_cancelled<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        })
    }

    /// The branch's cancellation token.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn cancel(&self) {
        self.stop.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when this branch is cancelled.
    pub async fn cancelled(&self) {
        self.stop.cancelled().await
    }

    /// Cancel everything and wait up to `limit` for every tracked task to end. Returns where
    /// the tasks still running then were spawned (`file:line`, empty when all ended).
    pub async fn shutdown(&self, limit: Duration) -> Vec<String> {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(limit, self.tracker.wait()).await.is_ok() {
            return Vec::new();
        }
        let at = self.running.at.lock().expect("tasks poisoned");
        at.values().map(|l| format!("{}:{}", l.file(), l.line())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_branches_and_waits_for_their_tasks() {
        let root = Tasks::new();
        let branch = root.child();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let watcher = branch.clone();
        branch.spawn(async move {
            watcher.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
        });
        branch.spawn_until_cancelled(std::future::pending());
        assert!(root.shutdown(Duration::from_secs(2)).await.is_empty());
        assert!(done_rx.await.is_ok(), "the task finished its cleanup before shutdown returned");

        let stuck = Tasks::new();
        stuck.spawn(std::future::pending::<()>());
        let left = stuck.shutdown(Duration::from_millis(50)).await;
        assert_eq!(left.len(), 1, "a task that ignores the token is named: {left:?}");
        assert!(left[0].starts_with("src/tasks.rs:"), "{left:?}");
    }

    #[tokio::test]
    async fn a_cancelled_branch_leaves_its_parent_running() {
        let root = Tasks::new();
        let branch = root.child();
        branch.cancel();
        assert!(branch.is_cancelled() && !root.is_cancelled());
    }
}
