//! The streamable HTTP face of a session table (`POST`/`GET`/`DELETE /mcp`, MCP 2025-03-26 and
//! later), written against the raw [`Relay`] so that every message kind passes through:
//! notifications, progress, and requests from the server such as sampling or elicitation.
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
        sse::{Event, KeepAlive, Sse},
    },
    routing::post,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{
    relay::{Envelope, Relay},
    session::{Session, SessionTable, StreamGuard},
};

pub const SESSION_HEADER: &str = "mcp-session-id";
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `/mcp` routes for `table`.
pub fn routes(table: Arc<SessionTable>) -> Router {
    Router::new().route("/mcp", post(post_message).get(open_stream).delete(delete_session)).with_state(table)
}

/// The messages of one POST body: a single JSON-RPC message or a batch.
pub(crate) struct Batch<'a> {
    pub raw: Vec<&'a RawValue>,
    pub envelopes: Vec<Envelope<'a>>,
}

/// Why a body is not a JSON-RPC message or batch: the JSON-RPC error code and a sentence.
pub(crate) type BatchError = (i64, String);

pub(crate) fn parse_batch(body: &[u8]) -> Result<Batch<'_>, BatchError> {
    const PARSE_ERROR: i64 = -32700;
    const INVALID_REQUEST: i64 = -32600;
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    let raw: Vec<&RawValue> = if body.get(start) == Some(&b'[') {
        serde_json::from_slice(body)
            .map_err(|e| (PARSE_ERROR, format!("Parse error: the body is not a JSON-RPC batch: {e}")))?
    } else {
        vec![
            serde_json::from_slice(body)
                .map_err(|e| (PARSE_ERROR, format!("Parse error: the body is not JSON: {e}")))?,
        ]
    };
    if raw.is_empty() {
        return Err((INVALID_REQUEST, "Invalid Request: the batch is empty".into()));
    }
    let envelopes = raw
        .iter()
        .map(|r| serde_json::from_str::<Envelope>(r.get()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (INVALID_REQUEST, format!("Invalid Request: not a JSON-RPC message: {e}")))?;
    for (raw, env) in raw.iter().zip(&envelopes) {
        // An array would pass for a message (serde reads a struct from a sequence too).
        if !raw.get().starts_with('{') {
            return Err((
                INVALID_REQUEST,
                format!("Invalid Request: a message must be a JSON object, got {}", preview(raw.get())),
            ));
        }
        // Only a string or a finite number can be matched to its response: servers re-encode
        // ids their own way (and write an out-of-range number as `Infinity`).
        if let Some(id) = env.id
            && !valid_id(id.get())
        {
            return Err((
                INVALID_REQUEST,
                format!("Invalid Request: the id must be a string or a number, got {}", preview(id.get())),
            ));
        }
    }
    Ok(Batch { raw, envelopes })
}

fn valid_id(text: &str) -> bool {
    match text.as_bytes()[0] {
        b'"' => true,
        b'-' | b'0'..=b'9' => text.parse::<f64>().is_ok_and(f64::is_finite),
        _ => false,
    }
}

/// The start of a client's text, for an error message.
fn preview(text: &str) -> &str {
    let mut cut = text.len().min(64);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// One message as a single line for a stdio server: the original bytes when they already are.
pub(crate) fn one_line(body: &Bytes, raw: &RawValue) -> Bytes {
    let text = raw.get();
    if text.contains(['\n', '\r']) {
        return match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => Bytes::from(v.to_string()),
            Err(_) => Bytes::from(text.replace(['\n', '\r'], " ")),
        };
    }
    let offset = text.as_ptr() as usize - body.as_ptr() as usize;
    body.slice(offset..offset + text.len())
}

pub(crate) fn jsonrpc_error(status: StatusCode, id: Option<&RawValue>, code: i64, message: &str) -> Response {
    let id = id.and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok());
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
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

pub(crate) fn sse_event(msg: &[u8]) -> Event {
    Event::default().event("message").data(String::from_utf8_lossy(msg))
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

/// A long-lived stream of one session's messages that belong to no request.
pub(crate) fn standalone_stream(
    session: &Arc<Session>,
    rx: mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let guard = session.stream_guard();
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let msg = rx.recv().await?;
        Some((Ok(sse_event(&msg)), (rx, guard)))
    })
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
