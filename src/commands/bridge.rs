//! `mcp-ephemeral bridge -- CMD…`: one stdio MCP server over HTTP, as a container's entrypoint
//! or on its own. It exits 1 when the server cannot start (unless told to stay), so a pod
//! fails fast.

use crate::{
    bridge::{Bridge, BridgeConfig, Readiness},
    cli::BridgeArgs,
    http::capability,
    metrics::Metrics,
    tasks::Tasks,
};

/// Serve until SIGINT/SIGTERM (or the server's failure); `Ok(false)` when the server failed.
pub async fn bridge(args: BridgeArgs) -> std::io::Result<bool> {
    let run = args.into_config().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tasks = Tasks::new();
    let listener = tokio::net::TcpListener::bind(run.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", run.listen)))?;
    let command = run.bridge.command.argv.clone();
    // Its own registry; /metrics sits under the token like /status.
    let metrics = Metrics::bridge_only();
    let bridge = Bridge::start(BridgeConfig { metrics: metrics.clone(), ..run.bridge }, &tasks);
    let guarded = run.token.is_some();
    let app = run.guard.apply(capability::guard(bridge.router().merge(metrics.router()), run.token));
    super::stop_on_signals(&tasks);
    let paths = if guarded { "/<token>/mcp, /<token>/sse" } else { "/mcp, /sse" };
    tracing::info!(addr = %listener.local_addr()?, ?command, "bridge listening ({paths})");
    let stop = tasks.token().clone();
    tasks.spawn(async move {
        if let Err(e) = crate::http::serve(listener, app, stop).await {
            tracing::warn!(error = %e, "listener ended");
        }
    });
    let mut ok = true;
    if !run.stay_on_failure {
        let mut readiness = bridge.subscribe();
        tokio::select! {
            _ = tasks.cancelled() => {}
            r = readiness.wait_for(|r| matches!(r, Readiness::Failed(_))) => {
                if r.is_ok() {
                    // The failure was logged with its stderr tail; exiting lets a pod fail fast.
                    ok = false;
                    tasks.cancel();
                }
            }
        }
    }
    tasks.cancelled().await;
    bridge.shutdown().await;
    super::finish(&tasks).await;
    Ok(ok)
}
