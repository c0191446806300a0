//! HTTP plumbing shared by every listener and every client of this process: one way to serve
//! (TCP_NODELAY, graceful shutdown), one way to send a request over a byte stream, and the
//! front-door checks ([`guard`]).

pub(crate) mod guard;

use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub(crate) use guard::Guard;

/// A listener whose connections send small writes at once. Without it, Nagle's algorithm and
/// the client's delayed ACK hold the end of every streamed response back by ~40 ms.
pub(crate) fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

/// Serve `app` on `listener` until `stop` fires, then finish the requests in flight.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(nodelay(listener), app).with_graceful_shutdown(stop.cancelled_owned()).await
}

/// A byte stream a request can travel over: a TCP connection, a port-forward tunnel.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Why a request over a stream got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("did not answer: {0}")]
    Send(#[source] hyper::Error),
}

/// Send one HTTP/1.1 request over `stream` and return the response as it starts (its body
/// streams on). The connection lives as long as the response body, on a task of its own.
pub(crate) async fn send_over<B>(
    stream: Box<dyn Stream>,
    request: hyper::Request<B>,
    tasks: &crate::tasks::Tasks,
) -> Result<hyper::Response<hyper::body::Incoming>, ExchangeError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(ExchangeError::Handshake)?;
    tasks.spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended");
        }
    });
    sender.send_request(request).await.map_err(ExchangeError::Send)
}

/// `GET path` over `stream`, its JSON body (at most 1 MiB) read as `T`; `None` when there was
/// no answer, it was not 200, or not that JSON.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    stream: Box<dyn Stream>,
    path: &str,
    tasks: &crate::tasks::Tasks,
) -> Option<T> {
    use http_body_util::BodyExt;
    let request = hyper::Request::get(path).header("host", "localhost").body(Empty::<Bytes>::new()).ok()?;
    let response = send_over(stream, request, tasks).await.ok()?;
    if response.status() != hyper::StatusCode::OK {
        return None;
    }
    let body = http_body_util::Limited::new(response.into_body(), 1 << 20).collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// `GET path` over `stream` with no body; the status, or `None` when there was no answer.
pub(crate) async fn get_status(
    stream: Box<dyn Stream>,
    path: &str,
    tasks: &crate::tasks::Tasks,
) -> Option<hyper::StatusCode> {
    let request = hyper::Request::get(path).header("host", "localhost").body(Empty::<Bytes>::new()).ok()?;
    send_over(stream, request, tasks).await.ok().map(|r| r.status())
}
