//! Pooled connections to servers through a [`Dialer`]: a hyper client whose connector dials
//! the server named by the request's host (the Job's name), so that one tunnel (one
//! port-forward websocket out of cluster) carries many HTTP exchanges with keep-alive instead
//! of one each. A long-lived exchange (an SSE stream, a streamed POST) holds its connection;
//! idle ones close after [`IDLE`]; a broken tunnel fails only the exchanges on it, and the next
//! exchange dials afresh.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::StatusCode;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioIo, TokioTimer},
};

use prometheus_client::metrics::gauge::Gauge;

use super::{Dialer, GatewayError};
use crate::{http::Stream, metrics::Metrics, tasks::Tasks};

/// How long an unused connection to a server is kept.
pub(crate) const IDLE: Duration = Duration::from_secs(60);

/// Keep-alive connections to servers, shared by the gateway and by whoever else asks a server
/// something (the readiness confirmation, status reads), so they reuse each other's tunnels.
#[derive(Clone)]
pub(crate) struct Pool {
    client: Client<Connector, axum::body::Body>,
    dialer: Arc<dyn Dialer>,
    /// Tunnels open now.
    tunnels: Gauge,
}

/// Why a request through the pool got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// The dial failed (its [`GatewayError`] is among the sources) or the exchange did.
    #[error("no answer: {0}")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("cannot read the answer: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The largest body [`Pool::get`] reads.
const GET_LIMIT: usize = 1 << 20;

impl Pool {
    /// A pool whose connections are dialed by `dialer` and whose connection tasks run on
    /// `tasks`.
    pub(crate) fn new(dialer: Arc<dyn Dialer>, tasks: Tasks) -> Pool {
        let tunnels = Gauge::default();
        let client = Client::builder(TasksExecutor(tasks))
            .pool_idle_timeout(IDLE)
            .pool_timer(TokioTimer::new())
            .build(Connector { dialer: dialer.clone(), tunnels: tunnels.clone() });
        Pool { client, dialer, tunnels }
    }

    /// Show the number of open tunnels in `metrics` (read at each scrape).
    pub(crate) fn count_tunnels(&self, metrics: &Metrics) {
        let (open, gateway) = (self.tunnels.clone(), metrics.gateway().clone());
        metrics.before_scrape(move || gateway.set_tunnels(open.get()));
    }

    /// Whether server `job` has something to dial now, as far as is known without asking.
    pub(crate) fn has_pod(&self, job: &str) -> bool {
        self.dialer.has_pod(job)
    }

    /// Send `request`, whose URI's host names the server (its Job's name).
    pub(crate) async fn send(
        &self,
        request: hyper::Request<axum::body::Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }

    /// `GET path` of server `job`: the status and the body (at most 1 MiB), within `limit`.
    pub(crate) async fn get(&self, job: &str, path: &str, limit: Duration) -> Result<(StatusCode, Bytes), PoolError> {
        use http_body_util::BodyExt;
        let exchange = async {
            let request = hyper::Request::get(format!("http://{job}{path}"))
                .header(hyper::header::HOST, "localhost")
                .body(axum::body::Body::empty())
                .expect("a job name and a path make a URI");
            let response = self.send(request).await.map_err(PoolError::Request)?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), GET_LIMIT)
                .collect()
                .await
                .map_err(PoolError::Body)?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(limit, exchange).await.map_err(|_| PoolError::Timeout(limit))?
    }
}

/// Dials the server named by a URI's host.
#[derive(Clone)]
pub(crate) struct Connector {
    dialer: Arc<dyn Dialer>,
    tunnels: Gauge,
}

impl tower_service::Service<hyper::Uri> for Connector {
    type Response = Tunnel;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Tunnel, GatewayError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let (dialer, tunnels) = (self.dialer.clone(), self.tunnels.clone());
        Box::pin(async move {
            let job = uri.host().unwrap_or_default().to_string();
            let stream = dialer.dial(&job).await?;
            tracing::debug!(server = %job, "gateway opened a connection to the server");
            tunnels.inc();
            Ok(Tunnel { io: TokioIo::new(stream), _open: OpenTunnel(tunnels) })
        })
    }
}

/// One connection to a server's bridge.
pub(crate) struct Tunnel {
    io: TokioIo<Box<dyn Stream>>,
    _open: OpenTunnel,
}

/// Counts a tunnel as open until it is dropped.
struct OpenTunnel(Gauge);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Connection for Tunnel {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Tunnel {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Tunnel {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Runs the pool's connection tasks on the task tree. A pooled connection's task lives as long
/// as its tunnel, idle or not: at shutdown it gets [`DRAIN`](crate::http::DRAIN) to finish an
/// exchange in flight, then it is dropped (the tunnel closes), so shutdown never waits on it.
#[derive(Clone)]
struct TasksExecutor(Tasks);

impl<F> hyper::rt::Executor<F> for TasksExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let stop = self.0.token().clone();
        self.0.spawn(async move {
            tokio::pin!(fut);
            tokio::select! {
                _ = &mut fut => {}
                () = stop.cancelled() => {
                    let _ = tokio::time::timeout(crate::http::DRAIN, fut).await;
                }
            }
        });
    }
}

/// The gateway's own error behind a client error (a dial that failed), if that is what it is.
pub(crate) fn dial_error(e: &hyper_util::client::legacy::Error) -> Option<&GatewayError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(g) = s.downcast_ref::<GatewayError>() {
            return Some(g);
        }
        source = s.source();
    }
    None
}
