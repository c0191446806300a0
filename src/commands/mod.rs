//! What each subcommand does, from a checked configuration to the end of the process: the
//! binary's `main` only parses flags, sets up logging and dispatches here.

mod bridge;
mod presets;
mod serve;

pub use bridge::bridge;
pub use presets::presets;
pub use serve::{ServeError, serve};

use crate::tasks::Tasks;

/// Cancel `tasks` on SIGINT or SIGTERM (the watcher itself ends with the tree).
fn stop_on_signals(tasks: &Tasks) {
    let stop = tasks.clone();
    tasks.spawn_until_cancelled(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        stop.cancel();
    });
}

/// Wait, bounded, for the task tree to end; say so when something did not.
async fn finish(tasks: &Tasks) {
    let left = tasks.shutdown(crate::config::SHUTDOWN_LIMIT).await;
    if !left.is_empty() {
        tracing::warn!(
            tasks = left.len(),
            spawned_at = %left.join(", "),
            "tasks still running after {}s; exiting anyway",
            crate::config::SHUTDOWN_LIMIT.as_secs()
        );
    } else {
        tracing::info!("shut down: every task ended");
    }
}
