//! The message router of one session: client messages go to the upstream server unchanged, and
//! each upstream message is delivered to the HTTP stream that is waiting for it. It never
//! rewrites a message, and knows nothing of what the upstream is (see [`Upstream`]).
//!
//! Streamable HTTP opens one response stream per POST, so a response goes to the stream of the
//! POST that carried its request, a progress notification to the stream of the request that
//! asked for progress, and everything else (server requests, other notifications) to the GET
//! stream, else to any open POST stream, else to a small backlog handed to the next stream.
//! Legacy SSE has just one stream, the standalone one. Messages are forwarded as the bytes
//! the peer sent; only the envelope (`id`, `method`, progress token) is parsed.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use crate::tasks::Tasks;

use super::{
    envelope::{Envelope, id_key},
    upstream::{EndReason, Upstream, describe_end},
};

/// Messages kept for a stream that is not open yet; older ones are dropped past this.
const BACKLOG: usize = 256;
/// Buffer of each outgoing stream.
const STREAM_BUFFER: usize = 64;
/// Most unanswered standalone-stream requests remembered per session (a server need not
/// answer a cancelled request; past this, a new request just is not remembered).
const MAX_UNROUTED: usize = 1024;

#[derive(Default)]
struct Routes {
    /// Request id (its JSON text) → the stream waiting for the response.
    pending: HashMap<Box<str>, mpsc::Sender<Bytes>>,
    /// Progress token (JSON text) → the stream of the request that asked for progress.
    progress: HashMap<Box<str>, mpsc::Sender<Bytes>>,
    /// Request id → its progress token, to forget the token with the response.
    token_of: HashMap<Box<str>, Box<str>>,
    standalone: Option<mpsc::Sender<Bytes>>,
    /// Requests whose response goes to the standalone stream (legacy SSE), so that they can be
    /// answered with an error if the server ends first. At most [`MAX_UNROUTED`].
    unrouted: HashSet<Box<str>>,
    backlog: VecDeque<Bytes>,
    closed: bool,
}

/// One session's router. Cheap to share; closing it (or the upstream ending) ends every stream.
pub(crate) struct Relay {
    to_upstream: mpsc::Sender<Bytes>,
    routes: Arc<Mutex<Routes>>,
    closed: watch::Receiver<bool>,
    /// Counts the requests relayed (the bridge's metrics), if anywhere.
    calls: Option<Counter>,
}

/// Why a message could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("the MCP server of this session has exited; start a new session")]
    Closed,
}

impl Relay {
    /// Start routing `upstream`'s messages; the requests sent to it are counted in `calls`.
    pub(crate) fn start(upstream: Upstream, calls: Option<Counter>, tasks: &Tasks) -> Arc<Relay> {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (closed_tx, closed_rx) = watch::channel(false);
        tasks.spawn(dispatch(upstream.rx, upstream.end, routes.clone(), closed_tx));
        Arc::new(Relay { to_upstream: upstream.tx, routes, closed: closed_rx, calls })
    }

    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the upstream has ended.
    pub(crate) async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Forward a client message; when `reply_to` is given, the responses to the requests among
    /// `envelopes` (and their progress) are delivered there instead of the standalone stream.
    pub(crate) async fn send(
        &self,
        message: Bytes,
        envelopes: &[Envelope<'_>],
        reply_to: Option<&mpsc::Sender<Bytes>>,
    ) -> Result<(), RelayError> {
        self.register(envelopes, reply_to)?;
        self.to_upstream.send(message).await.map_err(|_| RelayError::Closed)?;
        if let Some(calls) = &self.calls {
            calls.inc_by(envelopes.iter().filter(|e| e.is_request()).count() as u64);
        }
        Ok(())
    }

    /// Remember where the responses to the requests among `envelopes` go.
    fn register(&self, envelopes: &[Envelope<'_>], reply_to: Option<&mpsc::Sender<Bytes>>) -> Result<(), RelayError> {
        if !envelopes.iter().any(Envelope::is_request) {
            return Ok(());
        }
        let mut routes = self.routes.lock().expect("routes poisoned");
        if routes.closed {
            return Err(RelayError::Closed);
        }
        for env in envelopes.iter().filter(|e| e.is_request()) {
            let id: Box<str> = env.id_key().into();
            match reply_to {
                Some(stream) => {
                    if let Some(token) = env.request_progress_token() {
                        let token: Box<str> = id_key(token).into();
                        routes.progress.insert(token.clone(), stream.clone());
                        routes.token_of.insert(id.clone(), token);
                    }
                    routes.pending.insert(id, stream.clone());
                }
                None if routes.unrouted.len() < MAX_UNROUTED => {
                    routes.unrouted.insert(id);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// A stream for everything not tied to a request (the GET stream, or the SSE stream). It
    /// replaces any previous one and starts with the backlog.
    pub(crate) fn open_standalone(&self) -> Result<mpsc::Receiver<Bytes>, RelayError> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER + BACKLOG);
        let mut routes = self.routes.lock().expect("routes poisoned");
        if routes.closed {
            return Err(RelayError::Closed);
        }
        while let Some(msg) = routes.backlog.pop_front() {
            let _ = tx.try_send(msg);
        }
        routes.standalone = Some(tx);
        Ok(rx)
    }

    /// Forget the routes of requests whose stream went away (the client disconnected).
    pub(crate) fn forget_stream(&self, stream: &mpsc::Sender<Bytes>) {
        let mut routes = self.routes.lock().expect("routes poisoned");
        routes.pending.retain(|_, s| !s.same_channel(stream));
        routes.progress.retain(|_, s| !s.same_channel(stream));
    }
}

/// Route every upstream message until the upstream ends; then answer what is still pending with
/// an error, so no client waits for a response that will never come.
async fn dispatch(
    mut rx: mpsc::Receiver<Bytes>,
    end: Option<Box<dyn EndReason>>,
    routes: Arc<Mutex<Routes>>,
    closed: watch::Sender<bool>,
) {
    while let Some(msg) = rx.recv().await {
        let target = {
            let mut r = routes.lock().expect("routes poisoned");
            route(&mut r, &msg)
        };
        if let Some(stream) = target {
            // A full stream means a slow client: wait for it rather than drop the message.
            if stream.send(msg.clone()).await.is_err() {
                let mut r = routes.lock().expect("routes poisoned");
                r.pending.retain(|_, s| !s.same_channel(&stream));
                if r.standalone.as_ref().is_some_and(|s| s.same_channel(&stream)) {
                    r.standalone = None;
                }
                push_backlog(&mut r, msg);
            }
        }
    }
    let reason = describe_end(end).await;
    let (pending, unrouted, standalone) = {
        let mut r = routes.lock().expect("routes poisoned");
        r.closed = true;
        r.progress.clear();
        let standalone = r.standalone.take();
        let unrouted: Vec<_> = r.unrouted.drain().collect();
        (r.pending.drain().collect::<Vec<_>>(), unrouted, standalone)
    };
    let error = |id: &str| {
        let error = serde_json::json!({
            "jsonrpc": "2.0",
            "id": serde_json::from_str::<serde_json::Value>(id).unwrap_or_default(),
            "error": {"code": -32000, "message": reason},
        });
        Bytes::from(error.to_string())
    };
    for (id, stream) in pending {
        let _ = stream.send(error(&id)).await;
    }
    if let Some(stream) = standalone {
        for id in unrouted {
            let _ = stream.send(error(&id)).await;
        }
    }
    let _ = closed.send(true);
}

/// Pick the stream for one upstream message, or keep it in the backlog.
fn route(r: &mut Routes, msg: &Bytes) -> Option<mpsc::Sender<Bytes>> {
    let Ok(env) = serde_json::from_slice::<Envelope>(msg) else {
        tracing::warn!("upstream sent a message that is not a JSON-RPC object; passing it on");
        return general_target(r, msg);
    };
    if env.is_response() {
        let id = env.id_key();
        if let Some(token) = r.token_of.remove(&*id) {
            r.progress.remove(&token);
        }
        if let Some(stream) = r.pending.remove(&*id) {
            return Some(stream);
        }
        r.unrouted.remove(&*id);
    } else if env.method.as_deref() == Some("notifications/progress")
        && let Some(token) = env.params.as_ref().and_then(|p| p.progress_token)
        && let Some(stream) = r.progress.get(&*id_key(token))
    {
        return Some(stream.clone());
    }
    general_target(r, msg)
}

fn general_target(r: &mut Routes, msg: &Bytes) -> Option<mpsc::Sender<Bytes>> {
    if let Some(s) = r.standalone.as_ref().filter(|s| !s.is_closed()) {
        return Some(s.clone());
    }
    if let Some(s) = r.pending.values().find(|s| !s.is_closed()) {
        return Some(s.clone());
    }
    push_backlog(r, msg.clone());
    None
}

fn push_backlog(r: &mut Routes, msg: Bytes) {
    if r.backlog.len() == BACKLOG {
        r.backlog.pop_front();
    }
    r.backlog.push_back(msg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pipe() -> (Arc<Relay>, mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>) {
        let (to_server_tx, to_server_rx) = mpsc::channel(16);
        let (from_server_tx, from_server_rx) = mpsc::channel(16);
        let relay = Relay::start(Upstream { tx: to_server_tx, rx: from_server_rx, end: None }, None, &Tasks::new());
        (relay, to_server_rx, from_server_tx)
    }

    async fn next(rx: &mut mpsc::Receiver<Bytes>) -> String {
        let m = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.expect("timely").expect("open");
        String::from_utf8(m.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn responses_go_to_the_stream_of_their_request() {
        let (relay, mut server_in, server_out) = pipe();
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let (b_tx, mut b_rx) = mpsc::channel(8);
        for (id, tx) in [("1", &a_tx), ("\"1\"", &b_tx)] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
            let env: Envelope = serde_json::from_str(&text).unwrap();
            relay.send(Bytes::from(text.clone()), &[env], Some(tx)).await.unwrap();
            assert_eq!(next(&mut server_in).await, text);
        }
        server_out.send(Bytes::from(r#"{"jsonrpc":"2.0","id":"1","result":{}}"#)).await.unwrap();
        server_out.send(Bytes::from(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)).await.unwrap();
        assert!(next(&mut a_rx).await.contains(r#""id":1"#));
        assert!(next(&mut b_rx).await.contains(r#""id":"1""#));
    }

    #[tokio::test]
    async fn progress_follows_the_request_and_other_messages_wait_in_the_backlog() {
        let (relay, _server_in, server_out) = pipe();
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let text = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"_meta":{"progressToken":"p"}}}"#;
        let env: Envelope = serde_json::from_str(text).unwrap();
        relay.send(Bytes::from(text), &[env], Some(&a_tx)).await.unwrap();
        drop(a_tx);
        server_out
            .send(Bytes::from(
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}"#,
            ))
            .await
            .unwrap();
        assert!(next(&mut a_rx).await.contains("notifications/progress"));
        server_out.send(Bytes::from(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#)).await.unwrap();
        assert!(next(&mut a_rx).await.contains(r#""id":7"#));
        // No stream is waiting now: a log notification waits for the standalone stream.
        server_out
            .send(Bytes::from(r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut standalone = relay.open_standalone().unwrap();
        assert!(next(&mut standalone).await.contains("notifications/message"));
    }

    #[tokio::test]
    async fn a_server_that_ends_mid_call_answers_the_pending_request_with_an_error() {
        let (relay, _server_in, server_out) = pipe();
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let text = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call"}"#;
        let env: Envelope = serde_json::from_str(text).unwrap();
        relay.send(Bytes::from(text), &[env], Some(&a_tx)).await.unwrap();
        drop(server_out);
        let reply = next(&mut a_rx).await;
        assert!(reply.contains(r#""id":3"#) && reply.contains("error"), "{reply}");
        relay.closed().await;
        assert!(relay.is_closed());
    }

    #[tokio::test]
    async fn a_response_matches_its_request_however_the_server_spells_the_id() {
        let (relay, _server_in, server_out) = pipe();
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let text = r#"{"jsonrpc":"2.0","id":"é\u0041","method":"ping"}"#;
        let env: Envelope = serde_json::from_str(text).unwrap();
        relay.send(Bytes::from(text), &[env], Some(&a_tx)).await.unwrap();
        // Python's json module writes every non-ASCII character as an escape.
        server_out.send(Bytes::from(r#"{"jsonrpc":"2.0","id":"\u00e9A","result":{}}"#)).await.unwrap();
        assert!(next(&mut a_rx).await.contains("result"));
    }

    #[tokio::test]
    async fn requests_on_the_standalone_stream_get_an_error_when_the_server_ends() {
        let (relay, _server_in, server_out) = pipe();
        let mut standalone = relay.open_standalone().unwrap();
        for id in ["1", "2"] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call"}}"#);
            let env: Envelope = serde_json::from_str(&text).unwrap();
            relay.send(Bytes::from(text.clone()), &[env], None).await.unwrap();
        }
        server_out.send(Bytes::from(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)).await.unwrap();
        assert!(next(&mut standalone).await.contains("result"));
        drop(server_out);
        let reply = next(&mut standalone).await;
        assert!(reply.contains(r#""id":2"#) && reply.contains("closed the session"), "{reply}");
        assert!(tokio::time::timeout(Duration::from_secs(2), standalone.recv()).await.unwrap().is_none());
    }
}
