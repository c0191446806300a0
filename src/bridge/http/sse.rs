//! The legacy HTTP+SSE face (MCP 2024-11-05) of a session table: `GET /sse` opens a session and
//! streams its messages after an `endpoint` event; `POST /messages?sessionId=` (also `/message`)
//! forwards one client message and answers 202. It must not depend on the streamable face.
//!
//! rmcp dropped its SSE transport in 0.11, yet many clients still speak only this, so the meta
//! server serves it too, through the same table and relay as the bridge.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures::StreamExt;
use serde::Deserialize;

use super::{
    batch::{jsonrpc_error, one_line, parse_batch},
    events::standalone_stream,
    session::SessionTable,
};

/// `/sse`, `/messages` and `/message` routes for `table`.
pub(crate) fn routes(table: Arc<SessionTable>) -> Router {
    Router::new()
        .route("/sse", get(open))
        .route("/messages", post(message))
        .route("/message", post(message))
        .with_state(table)
}

async fn open(State(table): State<Arc<SessionTable>>) -> Response {
    let session = match table.open().await {
        Ok(s) => s,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let rx = match session.relay.open_standalone() {
        Ok(rx) => rx,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    // The session lives exactly as long as this stream: closing it when the client goes away.
    let closer = CloseOnDrop { table: table.clone(), id: session.id.clone() };
    // Relative, so it resolves under any prefix the bridge is mounted at (the gateway's).
    let endpoint = Event::default().event("endpoint").data(format!("messages?sessionId={}", session.id));
    let messages = standalone_stream(&session, rx).map(move |event| {
        let _keep = &closer;
        event
    });
    let stream = futures::stream::once(async move { Ok(endpoint) }).chain(messages);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

struct CloseOnDrop {
    table: Arc<SessionTable>,
    id: String,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.table.close_later(std::mem::take(&mut self.id));
    }
}

#[derive(Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId", alias = "session_id")]
    session_id: Option<String>,
}

async fn message(State(table): State<Arc<SessionTable>>, Query(q): Query<SessionQuery>, body: Bytes) -> Response {
    let Some(id) = q.session_id else {
        return (StatusCode::BAD_REQUEST, "missing sessionId query parameter; GET /sse first").into_response();
    };
    let Some(session) = table.get(&id) else {
        return (StatusCode::NOT_FOUND, "session not found (its SSE stream closed); GET /sse again").into_response();
    };
    let batch = match parse_batch(&body) {
        Ok(b) => b,
        Err((code, e)) => return jsonrpc_error(StatusCode::BAD_REQUEST, None, code, &e),
    };
    for (raw, env) in batch.raw.iter().zip(&batch.envelopes) {
        if let Err(e) = session.relay.send(one_line(&body, raw), std::slice::from_ref(env), None).await {
            return (StatusCode::GONE, e.to_string()).into_response();
        }
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}
