//! The gateway: `/servers/{job_name}/…` on the meta server's own address, proxied to the
//! server's bridge. Out of cluster, pods are not reachable directly, so a [`Dialer`] opens a
//! byte stream to the pod (through the API server's port-forward), and a [`pool`] of keep-alive
//! HTTP/1.1 connections over such streams carries the exchanges. Responses stream through as
//! they come, so SSE works.
//!
//! The logic here is only routing and header hygiene; how bytes reach the pod is the dialer's.

mod pool;

pub(crate) use pool::Pool;

use axum::{
    Router,
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::any,
};
use futures::future::BoxFuture;

use std::sync::Arc;

use crate::{
    http::{
        Stream,
        capability::{self, Admit, Capability},
    },
    metrics::Metrics,
    runtime::wake::{self, Waker},
};

/// Why the gateway could not reach a server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error("no MCP server named `{0}` here; list_mcp_servers shows the servers there are")]
    NotFound(String),
    #[error(
        "server `{job}` has no running pod yet ({why}); wait_for_ready or get_mcp_server_status tells when it is up"
    )]
    NotRunning { job: String, why: String },
    #[error("cannot open a tunnel to server `{job}`: {why}")]
    Tunnel {
        job: String,
        #[source]
        why: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl GatewayError {
    fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::NotRunning { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Tunnel { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Opens a byte stream to the MCP port of server `job`.
pub(crate) trait Dialer: Send + Sync + 'static {
    fn dial<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Box<dyn Stream>, GatewayError>>;

    /// Whether `job` has a running pod as far as is known without asking the API; when it has
    /// not, the gateway asks for the server to be woken (a stopped one starts, a starting one
    /// is waited for) before it sends the request.
    fn has_pod(&self, _job: &str) -> bool {
        true
    }
}

/// What a server's door asks for, as far as the gateway knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// Requests must carry this token (`/servers/<job>/<token>/…`).
    Token(Capability),
    /// No token (`--server-auth none`, or a server made without one).
    Open,
}

/// Tells the gateway which token a server's URLs carry (`None`: no such server).
pub(crate) trait Keys: Send + Sync + 'static {
    fn key<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Option<Key>>;
}

/// What every gateway request needs.
#[derive(Clone)]
struct Gateway {
    /// Pooled connections to the servers.
    pool: Pool,
    /// Starts a stopped server a request is for.
    waker: Waker,
    /// The servers' tokens: a request under a wrong one is refused here, before it can wake
    /// a server or open a tunnel.
    keys: Arc<dyn Keys>,
}

/// `/servers/{job_name}/{token}/{path}` for every method, through `pool`; a request for a
/// server with no running pod (a stopped one) is held while `waker` starts it. The path goes
/// on with its token: the server's own door checks it too. Requests and `pool`'s tunnels are
/// counted in `metrics`.
pub(crate) fn router(pool: Pool, waker: Waker, keys: Arc<dyn Keys>, metrics: &Metrics) -> Router {
    pool.count_tunnels(metrics);
    metrics.track_gateway(Router::new().route("/servers/{job}/{*rest}", any(proxy)).with_state(Gateway {
        pool,
        waker,
        keys,
    }))
}

/// The URL path and query the server sees for a gateway request, or `None` for a name that
/// cannot be a server (so nothing is dialed for it).
pub(crate) fn upstream_uri(job: &str, rest: &str, query: Option<&str>) -> Option<Uri> {
    if !crate::names::is_rfc1123_label(job) || rest.split('/').any(|seg| seg == "..") {
        return None;
    }
    let text = match query {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    text.parse().ok()
}

/// Whether a request for `rest` is MCP traffic (which wakes a stopped server), not a probe.
fn is_mcp_path(rest: &str) -> bool {
    matches!(rest.split('/').next(), Some("mcp" | "sse" | "messages" | "message"))
}

/// Headers that belong to one hop (RFC 9110 §7.6.1) or to the gateway (the meta server's bearer
/// token must not reach a spawned server).
fn strip(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

fn error(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

async fn proxy(State(gw): State<Gateway>, Path((job, rest)): Path<(String, String)>, req: Request) -> Response {
    let Some(uri) = upstream_uri(&job, &rest, req.uri().query()) else {
        return error(StatusCode::NOT_FOUND, format!("`{job}` is not a server name"));
    };
    // The host names the server: the pool keeps connections per server.
    let Ok(uri) = format!("http://{job}{uri}").parse::<Uri>() else {
        return error(StatusCode::NOT_FOUND, format!("`{job}` is not a server name"));
    };
    let inner = match gw.keys.key(&job).await {
        None => return error(StatusCode::NOT_FOUND, GatewayError::NotFound(job).to_string()),
        Some(Key::Open) => rest.clone(),
        Some(Key::Token(token)) => match capability::admit(Some(&token), &format!("/{rest}")) {
            Admit::Refused => return capability::refused(),
            Admit::Open => rest.clone(),
            Admit::Inner(path) => path.trim_start_matches('/').to_string(),
        },
    };
    if !gw.pool.has_pod(&job) && is_mcp_path(&inner) {
        if !wake::opens_session(&inner, req.headers()) {
            return wake::session_ended(&job);
        }
        if let Err(e) = gw.waker.wake(&job).await {
            tracing::info!(server = %job, error = %e, "gateway could not wake the server");
            return wake::failed(req.method(), &job, &e);
        }
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    strip(&mut parts.headers);
    parts.headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    match gw.pool.send(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => match pool::dial_error(&e) {
            Some(dial) => {
                tracing::debug!(server = %job, error = %dial, "gateway cannot reach the server");
                error(dial.status(), dial.to_string())
            }
            None => error(StatusCode::BAD_GATEWAY, format!("server `{job}` did not answer: {}", describe(&e))),
        },
    }
}

/// A client error with its causes, for a person.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::SocketAddr};

    use axum::routing::{get, post};
    use futures::StreamExt;

    use super::*;
    use crate::tasks::Tasks;

    /// Dials local TCP listeners by job name, in place of a port-forward.
    struct Local(HashMap<String, SocketAddr>);

    impl Dialer for Local {
        fn dial<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Box<dyn Stream>, GatewayError>> {
            Box::pin(async move {
                let addr = self.0.get(job).ok_or_else(|| GatewayError::NotFound(job.to_string()))?;
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| GatewayError::Tunnel { job: job.to_string(), why: Box::new(e) })?;
                Ok(Box::new(s) as Box<dyn Stream>)
            })
        }
    }

    /// Every server of the test is open, but `locked-00000000`, whose token is all `A`s.
    struct TestKeys;

    impl Keys for TestKeys {
        fn key<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Option<Key>> {
            let key = match job {
                "nope-00000000" => None,
                "locked-00000000" => Some(Key::Token(Capability::parse(&"A".repeat(22)).unwrap())),
                _ => Some(Key::Open),
            };
            Box::pin(async move { key })
        }
    }

    async fn serve(app: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[test]
    fn paths_map_to_the_servers_own_paths() {
        assert_eq!(upstream_uri("time-ab12cd34", "mcp", None).unwrap(), "/mcp");
        assert_eq!(upstream_uri("time-ab12cd34", "messages", Some("sessionId=x1")).unwrap(), "/messages?sessionId=x1");
        assert!(upstream_uri("Not_A_Name", "mcp", None).is_none());
        assert!(upstream_uri("time-ab12cd34", "a/../../etc", None).is_none());
    }

    #[test]
    fn the_bearer_token_and_hop_headers_stay_here() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("mcp-session-id", HeaderValue::from_static("abc"));
        strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("mcp-session-id"));
    }

    #[tokio::test]
    async fn requests_bodies_and_streams_pass_through() {
        let upstream = Router::new()
            .route(&format!("/{}/mcp", "A".repeat(22)), post(|| async { "under the token" }))
            .route(
                "/mcp",
                post(|headers: HeaderMap, uri: Uri, body: String| async move {
                    let auth = headers.contains_key(header::AUTHORIZATION);
                    let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    ([("mcp-session-id", "s-1")], format!("{uri} {session} auth={auth} {body}"))
                }),
            )
            .route(
                "/sse",
                get(|| async {
                    let events =
                        futures::stream::iter(["event: endpoint\ndata: messages?sessionId=1\n\n", "data: two\n\n"])
                            .then(|e| async move {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                Ok::<_, std::convert::Infallible>(e)
                            });
                    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(events))
                }),
            );
        let up = serve(upstream).await;
        let dialer: Arc<dyn Dialer> =
            Arc::new(Local(HashMap::from([("time-ab12cd34".to_string(), up), ("locked-00000000".to_string(), up)])));
        let metrics = Metrics::meta();
        let gw = serve(router(Pool::new(dialer, Tasks::new()), Waker::default(), Arc::new(TestKeys), &metrics)).await;
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("http://{gw}/servers/time-ab12cd34/mcp?x=1"))
            .header("authorization", "Bearer meta-token")
            .header("mcp-session-id", "abc")
            .body("{\"jsonrpc\":\"2.0\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["mcp-session-id"], "s-1");
        assert_eq!(resp.text().await.unwrap(), "/mcp?x=1 abc auth=false {\"jsonrpc\":\"2.0\"}");

        let sse = client.get(format!("http://{gw}/servers/time-ab12cd34/sse")).send().await.unwrap();
        assert_eq!(sse.headers()[header::CONTENT_TYPE], "text/event-stream");
        let mut chunks = sse.bytes_stream();
        let first = chunks.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("messages?sessionId=1"), "first event arrives on its own");

        let missing = client.post(format!("http://{gw}/servers/nope-00000000/mcp")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        assert!(missing.text().await.unwrap().contains("list_mcp_servers"));
        let bad = client.post(format!("http://{gw}/servers/..%2F/mcp")).send().await.unwrap();
        assert_eq!(bad.status(), 404);

        // A server with a token: the wrong one, or none, is refused here; the right one goes
        // through with the path as the server's door expects it.
        let wrong = client.post(format!("http://{gw}/servers/locked-00000000/{}/mcp", "B".repeat(22))).send().await;
        assert_eq!(wrong.unwrap().status(), 404);
        let bare = client.post(format!("http://{gw}/servers/locked-00000000/mcp")).send().await.unwrap();
        assert_eq!(bare.status(), 404);
        let right = client.post(format!("http://{gw}/servers/locked-00000000/{}/mcp", "A".repeat(22))).send().await;
        assert_eq!(right.unwrap().text().await.unwrap(), "under the token");
        let text = metrics.render();
        assert!(text.contains(r#"mcp_ephemeral_gateway_requests_total{status="2xx"} 3"#), "{text}");
        assert!(text.contains(r#"mcp_ephemeral_gateway_requests_total{status="4xx"} 4"#), "{text}");
        assert!(!text.contains("mcp_ephemeral_gateway_tunnels 0"), "keep-alive tunnels stay open: {text}");
    }
}
