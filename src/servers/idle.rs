//! The idle check: stops servers that carried no MCP traffic for their idle timeout (reason
//! `IdleTimeout`). It looks again when the next timeout can pass (at least [`MIN_INTERVAL`],
//! at most [`MAX_INTERVAL`] apart) or when a server with an idle timeout is made or started.
//! What one look costs is the runtime's: nothing on the local runtime; on Kubernetes one list
//! of the Jobs that have an idle timeout and one `/status` read per running one, through the
//! pooled connections.

use std::{sync::Weak, time::Duration};

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Servers;

/// The longest time between two looks.
pub(super) const MAX_INTERVAL: Duration = Duration::from_secs(15);
/// The shortest time between two looks.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A look a moment after a timeout passes finds it passed.
const SLACK: Duration = Duration::from_millis(50);

pub(super) async fn run(servers: Weak<Servers>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let next = match servers.upgrade() {
            Some(servers) => servers.stop_idle().await,
            None => return,
        };
        let next = (next + SLACK).clamp(MIN_INTERVAL, MAX_INTERVAL);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
            _ = wake.notified() => {}
        }
    }
}
