//! Serve the meta server over stdio, or over HTTP: streamable HTTP at `/mcp` (rmcp's service)
//! and legacy SSE at `/sse` + `/messages` (the bridge's SSE face over an in-process session),
//! plus `/healthz` (open) and the `extra` routes (`/metrics`, the gateway), behind the [`Guard`].

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, routing::get};
use bytes::Bytes;
use futures::{SinkExt, StreamExt, future::BoxFuture};
use rmcp::{
    ServiceExt,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tokio::sync::mpsc;

use crate::{
    bridge::http::{OpenError, Opened, SessionLimits, SessionOpener, SessionTable, Upstream, sse_routes},
    http::Guard,
    mcp::MetaServer,
    tasks::Tasks,
};

/// Serve one client on stdin/stdout until it closes stdin or `stop` fires.
pub(crate) async fn serve_stdio(server: MetaServer, tasks: &Tasks) -> std::io::Result<()> {
    let running = match server.serve_with_ct(rmcp::transport::stdio(), tasks.token().child_token()).await {
        Ok(r) => r,
        // A client that goes away before initializing is not an error of ours.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            tracing::info!("stdin closed before initialize");
            return Ok(());
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let reason = running.waiting().await;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}

/// The HTTP app of the meta server.
/// `extra` routes (`/metrics`, the gateway) sit behind the same guard.
pub(crate) fn http_router(server: MetaServer, guard: Guard, tasks: &Tasks, extra: Option<Router>) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(tasks.token().child_token())
        // The Guard checks Host (with the listen address and --allowed-host) in front of it.
        .disable_allowed_hosts();
    let factory_server = server.clone();
    let streamable =
        StreamableHttpService::new(move || Ok(factory_server.clone()), LocalSessionManager::default().into(), config);
    let table =
        SessionTable::start(Arc::new(InProcess { server, tasks: tasks.clone() }), SessionLimits::default(), tasks);
    let mut app = Router::new().nest_service("/mcp", streamable).merge(sse_routes(table));
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    guard.apply(app).route("/healthz", get(|| async { "ok" }))
}

/// Serve HTTP on `listener` until `tasks` is cancelled.
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    server: MetaServer,
    guard: Guard,
    tasks: &Tasks,
    extra: Option<Router>,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "serving MCP at http://{addr}/mcp (SSE: /sse)");
    let app = http_router(server, guard, tasks, extra);
    crate::http::serve(listener, app, tasks.token().clone()).await
}

/// Opens legacy-SSE sessions on the meta server itself: its rmcp handler behind channels.
struct InProcess {
    server: MetaServer,
    tasks: Tasks,
}

impl SessionOpener for InProcess {
    fn open(&self) -> BoxFuture<'_, Result<Opened, OpenError>> {
        Box::pin(async move {
            if self.tasks.is_cancelled() {
                return Err(OpenError::ShuttingDown);
            }
            let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
            let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);
            let incoming = futures::stream::unfold(in_rx, |mut rx| async move {
                loop {
                    let bytes = rx.recv().await?;
                    match serde_json::from_slice::<ClientJsonRpcMessage>(&bytes) {
                        Ok(msg) => return Some((msg, rx)),
                        Err(e) => tracing::warn!(error = %e, "dropping a message that is not MCP"),
                    }
                }
            });
            let outgoing = futures::sink::unfold(out_tx, |tx, msg: ServerJsonRpcMessage| async move {
                let bytes = serde_json::to_vec(&msg).map_err(std::io::Error::other)?;
                tx.send(Bytes::from(bytes)).await.map_err(|_| std::io::Error::other("session closed"))?;
                Ok::<_, std::io::Error>(tx)
            });
            let ct = self.tasks.token().child_token();
            let server = self.server.clone();
            let service_ct = ct.clone();
            self.tasks.spawn(async move {
                match server.serve_with_ct((Box::pin(outgoing.sink_map_err(|e| e)), incoming.boxed()), service_ct).await
                {
                    Ok(running) => {
                        let _ = running.waiting().await;
                    }
                    Err(e) => tracing::debug!(error = %e, "SSE session ended before initialize"),
                }
            });
            Ok(Opened {
                upstream: Upstream { tx: in_tx, rx: out_rx, end: None },
                closer: Box::new(move || {
                    Box::pin(async move {
                        ct.cancel();
                    })
                }),
            })
        })
    }
}
