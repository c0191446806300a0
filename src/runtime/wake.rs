//! Wake on request: a request to a Stopped server's URL starts it, and is held until it is
//! ready. The door that holds the request (the local bridge's listener, the Kubernetes gateway)
//! belongs to the runtime, but starting a server is the owner's decision (quotas count it), so
//! the runtime asks through a [`Waker`] that the owner installs once it exists.

use std::sync::{Arc, OnceLock};

use axum::{
    body::Body,
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::future::BoxFuture;

/// Why a wake did not make the server ready.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WakeError {
    /// There is no such server.
    #[error("{0}")]
    NotFound(String),
    /// It could not be started (a quota, a failed start, a timeout, shutting down).
    #[error("{0}")]
    Unavailable(String),
}

type WakeFn = dyn Fn(String) -> BoxFuture<'static, Result<(), WakeError>> + Send + Sync;

/// How a runtime's doors ask the owner to start a server. Cloning shares it.
#[derive(Clone, Default)]
pub(crate) struct Waker(Arc<OnceLock<Box<WakeFn>>>);

impl Waker {
    /// Set how to wake a server (once; later calls are ignored).
    pub(crate) fn install(
        &self,
        wake: impl Fn(String) -> BoxFuture<'static, Result<(), WakeError>> + Send + Sync + 'static,
    ) {
        let _ = self.0.set(Box::new(wake));
    }

    /// Start server `name` and wait until it is ready (the owner bounds the wait).
    pub(crate) async fn wake(&self, name: &str) -> Result<(), WakeError> {
        match self.0.get() {
            Some(wake) => wake(name.to_string()).await,
            None => Err(WakeError::Unavailable("the meta server is still starting; try again in a moment".into())),
        }
    }
}

/// The answer to a request a wake could not serve: 404 for an unknown server, else 503; a POST
/// (a JSON-RPC message) gets a JSON-RPC error object with the reason, anything else plain text.
pub(crate) fn failed(method: &Method, job: &str, error: &WakeError) -> Response {
    let status = match error {
        WakeError::NotFound(_) => StatusCode::NOT_FOUND,
        WakeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let message = format!("server `{job}` is stopped and could not be started: {error}");
    if method == Method::POST {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32000, "message": message},
        });
        let mut response = (status, Body::from(body.to_string())).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}
