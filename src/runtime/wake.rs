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

/// Whether a request to a stopped server should wake it: one that opens a session (a streamable
/// HTTP request without `Mcp-Session-Id`, a `GET /sse`). A request of an old session (its
/// stream's reconnect, its `DELETE`, a `POST /messages`) cannot be served by a new process: it
/// gets [`session_ended`], and a client that wants to go on opens a new session, which wakes
/// the server. So a client that only keeps retrying a stream never keeps a server awake.
pub(crate) fn opens_session(path: &str, headers: &axum::http::HeaderMap) -> bool {
    match path.trim_start_matches('/').split('/').next() {
        Some("mcp") => !headers.contains_key("mcp-session-id"),
        Some("sse") => true,
        _ => false,
    }
}

/// The answer to a request of a session that ended with its server's stop: 404, which tells an
/// MCP client to start a new session.
pub(crate) fn session_ended(job: &str) -> Response {
    let message = format!("server `{job}` was stopped and its sessions ended; start a new session");
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn only_requests_that_open_a_session_wake_a_server() {
        let none = HeaderMap::new();
        let mut session = HeaderMap::new();
        session.insert("mcp-session-id", HeaderValue::from_static("s-1"));
        assert!(opens_session("/mcp", &none));
        assert!(opens_session("/sse", &session));
        assert!(!opens_session("/mcp", &session), "a stream's reconnect or DELETE of an old session");
        assert!(!opens_session("/messages", &none));
        assert!(!opens_session("/status", &none));
    }
}
