//! The pipe from a session to its server: two channels of JSON-RPC messages, and optionally a
//! way to say how the server ended. It must not know what is on the other end (a process, an
//! in-process handler): whoever builds an [`Upstream`] supplies the [`EndReason`].

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// A bidirectional JSON-RPC pipe to a server: a child's stdio or an in-process handler.
pub(crate) struct Upstream {
    pub(crate) tx: mpsc::Sender<Bytes>,
    pub(crate) rx: mpsc::Receiver<Bytes>,
    /// How the server ended, for error messages; `None` for in-process servers.
    pub(crate) end: Option<Box<dyn EndReason>>,
}

/// Says, once the upstream's messages have stopped, why: the sentence given to every client
/// request still waiting for an answer.
pub(crate) trait EndReason: Send {
    fn describe(self: Box<Self>) -> BoxFuture<'static, String>;
}

/// The error message for requests left unanswered when `end`'s upstream stopped.
pub(crate) async fn describe_end(end: Option<Box<dyn EndReason>>) -> String {
    match end {
        Some(end) => end.describe().await,
        None => "the MCP server closed the session before answering".to_string(),
    }
}
