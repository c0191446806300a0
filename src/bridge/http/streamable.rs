//! The streamable HTTP face of a session table (`POST`/`GET`/`DELETE /mcp`, MCP 2025-03-26 and
//! later), over the raw [`Relay`] so that every message kind passes through (notifications,
//! progress, server requests such as sampling). It never starts a server: the table opens sessions.
//!
//! A POST that carries requests is answered with an SSE stream that ends after the last
//! response (or with plain JSON when the client does not accept `text/event-stream`).

use std::{collections::HashSet, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
    routing::post,
};
use tokio::sync::mpsc;

use super::{
    batch::{jsonrpc_error, one_line, parse_batch},
    envelope::Envelope,
    events::{sse_event, standalone_stream},
    relay::Relay,
    session::{SessionTable, StreamGuard},
};

pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `/mcp` routes for `table`.
pub(crate) fn routes(table: Arc<SessionTable>) -> Router {
    Router::new().route("/mcp", post(post_message).get(open_stream).delete(delete_session)).with_state(table)
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok())
}

fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(mime) || v.contains("*/*"))
}

async fn post_message(State(table): State<Arc<SessionTable>>, headers: HeaderMap, body: Bytes) -> Response {
    let batch = match parse_batch(&body) {
        Ok(b) => b,
        Err((code, e)) => return jsonrpc_error(StatusCode::BAD_REQUEST, None, code, &e),
    };
    let init = batch.envelopes.iter().find(|e| e.method.as_deref() == Some("initialize"));
    let session = match (session_id(&headers), init) {
        (Some(id), _) => match table.get(id) {
            Some(s) => s,
            None => {
                return jsonrpc_error(
                    StatusCode::NOT_FOUND,
                    None,
                    -32001,
                    "session not found (it ended or expired); send initialize without Mcp-Session-Id to start a new one",
                );
            }
        },
        (None, Some(init)) => match table.open().await {
            Ok(s) => s,
            Err(e) => return jsonrpc_error(StatusCode::SERVICE_UNAVAILABLE, init.id, -32603, &e.to_string()),
        },
        (None, None) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                None,
                -32600,
                "missing Mcp-Session-Id header; start with an initialize request",
            );
        }
    };
    let session_header = HeaderValue::from_str(&session.id).expect("hex id");
    let expected: HashSet<Box<str>> =
        batch.envelopes.iter().filter(|e| e.is_request()).map(|e| e.id_key().into()).collect();

    let reply = if expected.is_empty() { None } else { Some(mpsc::channel::<Bytes>(64)) };
    for (raw, env) in batch.raw.iter().zip(&batch.envelopes) {
        let sent =
            session.relay.send(one_line(&body, raw), std::slice::from_ref(env), reply.as_ref().map(|(tx, _)| tx)).await;
        if let Err(e) = sent {
            return jsonrpc_error(StatusCode::NOT_FOUND, env.id, -32001, &e.to_string());
        }
    }
    let mut response = match reply {
        None => StatusCode::ACCEPTED.into_response(),
        Some((tx, rx)) => {
            let pending = PendingReplies {
                rx,
                expected,
                _forget: ForgetOnDrop { relay: session.relay.clone(), tx },
                _stream: session.stream_guard(),
            };
            if accepts(&headers, "text/event-stream") {
                sse_reply(pending).into_response()
            } else {
                json_reply(pending).await
            }
        }
    };
    response.headers_mut().insert(SESSION_HEADER, session_header);
    response
}

/// The replies a POST waits for; dropping it (client gone) forgets the routes.
struct PendingReplies {
    rx: mpsc::Receiver<Bytes>,
    expected: HashSet<Box<str>>,
    _forget: ForgetOnDrop,
    _stream: StreamGuard,
}

impl PendingReplies {
    /// The next message for this POST, or `None` once every response has been delivered.
    async fn next(&mut self) -> Option<(Bytes, bool)> {
        if self.expected.is_empty() {
            return None;
        }
        let msg = self.rx.recv().await?;
        let mut is_response = false;
        if let Ok(env) = serde_json::from_slice::<Envelope>(&msg)
            && env.is_response()
        {
            is_response = self.expected.remove(&*env.id_key());
        }
        Some((msg, is_response))
    }
}

struct ForgetOnDrop {
    relay: Arc<Relay>,
    tx: mpsc::Sender<Bytes>,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        self.relay.forget_stream(&self.tx);
    }
}

fn sse_reply(pending: PendingReplies) -> impl IntoResponse {
    let stream = futures::stream::unfold(pending, |mut p| async move {
        let (msg, _) = p.next().await?;
        Some((Ok::<_, Infallible>(sse_event(&msg)), p))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

async fn json_reply(mut pending: PendingReplies) -> Response {
    let mut replies = Vec::new();
    while let Some((msg, is_response)) = pending.next().await {
        if is_response {
            replies.push(msg);
        }
    }
    let body = match replies.len() {
        1 => replies.pop().expect("one reply"),
        _ => {
            let mut joined = Vec::from(&b"["[..]);
            for (i, r) in replies.iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(r);
            }
            joined.push(b']');
            Bytes::from(joined)
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn open_stream(State(table): State<Arc<SessionTable>>, headers: HeaderMap) -> Response {
    if !accepts(&headers, "text/event-stream") {
        return (StatusCode::NOT_ACCEPTABLE, "GET /mcp needs Accept: text/event-stream").into_response();
    }
    let Some(id) = session_id(&headers) else {
        return (StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header").into_response();
    };
    let Some(session) = table.get(id) else {
        return (StatusCode::NOT_FOUND, "session not found").into_response();
    };
    match session.relay.open_standalone() {
        Ok(rx) => {
            Sse::new(standalone_stream(&session, rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

async fn delete_session(State(table): State<Arc<SessionTable>>, headers: HeaderMap) -> Response {
    let Some(id) = session_id(&headers) else {
        return (StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header").into_response();
    };
    if table.close(id).await {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, "session not found").into_response()
    }
}
