//! HTTP plumbing shared by every listener of this process: one way to serve (TCP_NODELAY,
//! graceful shutdown), the byte streams requests travel over, and the front-door checks
//! ([`guard`]). Requests to servers go through the gateway's connection pool.

pub mod capability;
pub(crate) mod guard;

use axum::Router;
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

/// How long requests in flight may take to finish once a listener stops. Streams through the
/// gateway end only when their server stops, which shutdown does after the listeners: without
/// a bound, an open session would hold the shutdown forever.
pub(crate) const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Serve `app` on `listener` until `stop` fires, then finish the requests in flight (for at
/// most [`DRAIN`]).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = axum::serve(nodelay(listener), app).with_graceful_shutdown(stop.clone().cancelled_owned());
    tokio::select! {
        served = graceful => served,
        () = async { stop.cancelled().await; tokio::time::sleep(DRAIN).await } => {
            tracing::debug!("requests still open {}s after the listener stopped; leaving them", DRAIN.as_secs());
            Ok(())
        }
    }
}

/// A byte stream a request can travel over: a TCP connection, a port-forward tunnel.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}
