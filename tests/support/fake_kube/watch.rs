//! Watches: newline-delimited JSON events streamed in a chunked response, replayed from the
//! store's write history after the requested resourceVersion (or the current objects as ADDED when
//! it is absent or "0"), filtered by namespace and selectors (a MODIFIED that makes an object
//! enter or leave a label selector becomes ADDED or DELETED, as with the real watch cache), with
//! BOOKMARKs, `timeoutSeconds`, 410 Gone for a compacted resourceVersion, and the drop faults.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    http::header,
    response::Response,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Shared,
    discovery::{self, TypeId},
    selectors::{FieldSelector, LabelSelector},
    status::ApiError,
    store::{Change, ChangeType},
};

pub(crate) struct WatchParams {
    pub ty: TypeId,
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// None: absent or "0" (start with the current objects).
    pub resource_version: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&Event { kind, object }).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

impl WatchParams {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// What this watch sends for one write, if anything.
    fn translate<'c>(&self, c: &'c Change) -> Option<(&'static str, &'c Value)> {
        if c.ty != self.ty || self.ns.as_ref().is_some_and(|n| *n != c.ns) {
            return None;
        }
        let now = self.selects(&c.obj);
        match c.kind {
            ChangeType::Added => now.then_some(("ADDED", &*c.obj)),
            ChangeType::Deleted => now.then_some(("DELETED", &*c.obj)),
            ChangeType::Modified => {
                let before = c.old.as_ref().is_some_and(|o| self.selects(o));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", &*c.obj)),
                    (false, true) => Some(("ADDED", &*c.obj)),
                    (true, false) => Some(("DELETED", &*c.obj)),
                    (false, false) => None,
                }
            }
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let rt = discovery::type_of(self.ty);
        let mut meta = json!({ "resourceVersion": rv.to_string(), "creationTimestamp": null });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta })
    }
}

/// Start streaming; the response ends on timeout, on a drop fault, when the client goes away or
/// when the fake stops.
pub(crate) fn respond(shared: Arc<Shared>, p: WatchParams) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let body =
        Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>))));
    let cancel = shared.cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = stream(shared, p, tx) => {}
        }
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response")
}

async fn stream(shared: Arc<Shared>, p: WatchParams, tx: mpsc::Sender<Bytes>) {
    let mut changes = shared.changes.subscribe();
    let mut drops = shared.faults.drop_signal();
    drops.borrow_and_update();
    let deadline = tokio::time::Instant::now() + p.timeout;
    let mut sent = 0usize;
    let mut send = |b: Bytes, counts: bool| {
        if counts {
            sent += 1;
        }
        let limit_reached = sent >= shared.faults.drop_after();
        let tx = tx.clone();
        async move { tx.send(b).await.is_ok() && !limit_reached }
    };

    changes.borrow_and_update();
    let start: Result<(u64, Vec<Bytes>), Value> = {
        let store = shared.store.lock().expect("store lock");
        match p.resource_version {
            None => {
                let items: Vec<Bytes> = store
                    .list(p.ty, p.ns.as_deref())
                    .into_iter()
                    .filter(|(_, o)| p.selects(o))
                    .map(|(_, o)| line("ADDED", o))
                    .collect();
                Ok((store.rv(), items))
            }
            Some(rv) if rv < store.compacted() => Err(ApiError::gone(rv, store.compacted()).to_json()),
            Some(rv) => Ok((rv, Vec::new())),
        }
    };
    let (mut cursor, initial) = match start {
        Ok(s) => s,
        Err(gone) => {
            let _ = tx.send(line("ERROR", &gone)).await;
            return;
        }
    };
    for b in initial {
        if !send(b, true).await {
            return;
        }
    }
    if p.send_initial_events && !send(line("BOOKMARK", &p.bookmark(cursor, true)), false).await {
        return;
    }

    let mut next_bookmark = Instant::now() + shared.bookmark_interval;
    loop {
        changes.borrow_and_update();
        let batch: Result<Vec<Bytes>, Value> = {
            let store = shared.store.lock().expect("store lock");
            if cursor < store.compacted() {
                // The history moved on faster than this watch read it.
                Err(ApiError::gone(cursor, store.compacted()).to_json())
            } else {
                let out = store.history_after(cursor).filter_map(|c| p.translate(c)).map(|(k, o)| line(k, o)).collect();
                cursor = store.rv();
                Ok(out)
            }
        };
        match batch {
            Err(gone) => {
                let _ = tx.send(line("ERROR", &gone)).await;
                return;
            }
            Ok(lines) => {
                for b in lines {
                    if !send(b, true).await {
                        return;
                    }
                }
            }
        }
        let bookmark_at = tokio::time::Instant::from_std(next_bookmark);
        tokio::select! {
            // A drop requested before a write must end the watch before that write is sent.
            biased;
            _ = drops.changed() => {
                if let Some(e) = shared.faults.drop_error() {
                    let _ = tx.send(line("ERROR", &e.to_json())).await;
                }
                return;
            }
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(deadline) => return,
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(bookmark_at), if p.bookmarks => {
                next_bookmark = Instant::now() + shared.bookmark_interval;
                if !send(line("BOOKMARK", &p.bookmark(cursor, false)), false).await {
                    return;
                }
            }
        }
    }
}
