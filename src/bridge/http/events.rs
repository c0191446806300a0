//! The SSE events of a session's messages, shared by both faces: one `message` event per
//! JSON-RPC message, and the long-lived stream of messages that belong to no request. It must not
//! parse or route messages: the relay has already chosen the stream.

use std::{convert::Infallible, sync::Arc};

use axum::response::sse::Event;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::session::Session;

/// One message as an SSE `message` event.
pub(crate) fn sse_event(msg: &[u8]) -> Event {
    Event::default().event("message").data(String::from_utf8_lossy(msg))
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
