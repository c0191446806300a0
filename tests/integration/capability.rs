//! Capability URLs: a server's URL carries its token, and without the token (or with a wrong
//! one) nothing of the server answers but its probes — locally, through the gateway, and at the
//! pod's bridge through the fake's port-forward. The token shows in no log line and, on
//! Kubernetes, in no Job field; a restarted meta server reads it back from the Secret.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use serde_json::{Value, json};

use crate::{
    fake_kube::FakeKube,
    kubelet::process_cluster,
    kubernetes::{Cluster, kube_meta_with_env},
    support::*,
};

const LIMIT: Duration = Duration::from_secs(90);
const NS: &str = "mcp-test";

/// An MCP `initialize` request.
fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
}

/// The token segment of a handed-out `…/<token>/mcp` URL.
fn token_of(url: &str) -> String {
    let path = url.strip_suffix("/mcp").unwrap_or_else(|| panic!("{url} ends in /mcp"));
    let token = path.rsplit('/').next().unwrap().to_string();
    assert!(token.len() >= 22 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{url}");
    token
}

/// `url` with its token swapped for another token-shaped string.
fn with_wrong_token(url: &str, token: &str) -> String {
    let wrong: String = token.chars().map(|c| if c == 'A' { 'B' } else { 'A' }).collect();
    url.replace(token, &wrong)
}

/// POST an `initialize` to `url`; the status.
async fn post_status(url: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .status()
        .as_u16()
}

async fn get_status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}")).status().as_u16()
}

/// The server answers a time call over streamable HTTP and over SSE at the URLs handed out.
async fn both_transports_answer(server: &Value) {
    let (mcp, sse) = (server["urls"]["mcp"].as_str().unwrap(), server["urls"]["sse"].as_str().unwrap());
    for client in [connect_http(mcp).await, connect_sse(sse).await] {
        let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        let _ = client.cancel().await;
    }
}

fn assert_not_logged(logs: &Logs, token: &str) {
    let logs = logs.lock().unwrap();
    assert!(!logs.is_empty(), "the meta server logged nothing: the check would prove nothing");
    if let Some(line) = logs.iter().find(|l| l.contains(token)) {
        panic!("a log line carries the token: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_servers_url_carries_its_token_and_nothing_else_opens_it() {
    within(LIMIT, async {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("serve");
        let (meta, logs) = meta_stdio_kept(cmd, "meta-cap").await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let mcp = server["urls"]["mcp"].as_str().unwrap().to_string();
        let token = token_of(&mcp);
        assert!(mcp.starts_with("http://127.0.0.1:"), "stdio keeps direct URLs: {mcp}");
        assert_eq!(server["urls"]["sse"].as_str().unwrap(), mcp.replace("/mcp", "/sse"));
        both_transports_answer(&server).await;

        let origin = mcp.split(&format!("/{token}/")).next().unwrap().to_string();
        assert_eq!(post_status(&with_wrong_token(&mcp, &token)).await, 404, "a wrong token");
        assert_eq!(post_status(&format!("{origin}/mcp")).await, 404, "no token");
        assert_eq!(get_status(&format!("{origin}/sse")).await, 404, "no token (SSE)");
        assert_eq!(get_status(&with_wrong_token(&mcp, &token).replace("/mcp", "/sse")).await, 404);
        assert_eq!(get_status(&format!("{origin}/status")).await, 404, "status is behind the token too");
        assert_eq!(get_status(&format!("{origin}/{token}/status")).await, 200);
        assert_eq!(get_status(&format!("{origin}/healthz")).await, 200, "probes need no token");
        assert_eq!(post_status(&mcp).await, 200, "the URL as handed out");

        // A server made with --server-auth none has none.
        let _ = meta.cancel().await;
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["serve", "--server-auth", "none"]);
        let (open, _) = meta_stdio_kept(cmd, "meta-open").await;
        let server = call_ok(&open, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let url = server["urls"]["mcp"].as_str().unwrap();
        assert!(url.split('/').count() == 4, "no token segment: {url}");
        assert_eq!(post_status(url).await, 200);
        let _ = open.cancel().await;
        assert_not_logged(&logs, &token);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_local_servers_are_behind_the_meta_servers_door_and_token() {
    within(LIMIT, async {
        let meta_token = "meta-token-0123456789abcdef";
        let meta = HttpMeta::start(&["--auth-token", meta_token]).await;
        let client = connect_http_bearer(&format!("{}/mcp", meta.base), meta_token).await;
        let server = call_ok(&client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap();
        let mcp = server["urls"]["mcp"].as_str().unwrap().to_string();
        let token = token_of(&mcp);
        assert_eq!(mcp, format!("{}/servers/{job}/{token}/mcp", meta.base), "on the meta listener");

        assert_eq!(post_status(&mcp).await, 401, "the meta server's door wants its own token first");
        let through = connect_http_bearer(&mcp, meta_token).await;
        let res = call(&through, "get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        let _ = through.cancel().await;

        let http = reqwest::Client::new();
        let with_meta_token = |url: String| {
            http.post(url)
                .bearer_auth(meta_token)
                .header("accept", "application/json, text/event-stream")
                .json(&initialize())
                .send()
        };
        let wrong = with_meta_token(with_wrong_token(&mcp, &token)).await.unwrap();
        assert_eq!(wrong.status(), 404, "the server's token is still needed");
        let bare = with_meta_token(format!("{}/servers/{job}/mcp", meta.base)).await.unwrap();
        assert_eq!(bare.status(), 404);

        // A mount goes through the same door, with the meta server's token.
        call_ok(&client, "mount_mcp_server", json!({"job_name": job, "name": "clock"})).await;
        let res = call(&client, "clock_get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        let _ = client.cancel().await;
    })
    .await;
}

/// A raw HTTP/1.1 exchange with `pod`'s port 8080 through the API server's port-forward: what
/// a pod in the cluster that found the server's address could send, past the gateway.
async fn through_port_forward(fake: &FakeKube, ns: &str, pod: &str, method: &str, path: &str) -> u16 {
    let pods: kube::Api<Pod> = kube::Api::namespaced(fake.client(ns), ns);
    let mut forward = pods.portforward(pod, &[8080]).await.expect("port-forward");
    let stream = forward.take_stream(8080).expect("the stream of port 8080");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("HTTP over the tunnel");
    tokio::spawn(conn);
    let body = if method == "POST" { initialize().to_string() } else { String::new() };
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(request).await.expect("an answer through the tunnel");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

fn pod_of(c: &Cluster, job: &str) -> String {
    c.fake
        .objects::<Pod>(NS)
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .find(|n| n.starts_with(&format!("{job}-")))
        .unwrap_or_else(|| panic!("a pod of {job}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_servers_token_is_in_its_secret_only_and_every_door_checks_it() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let meta = kube_meta_with_env(&c, &["--ready-timeout", "25s"], &[]).await;
        let server =
            call_ok(&meta.client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let mcp = server["urls"]["mcp"].as_str().unwrap().to_string();
        let token = token_of(&mcp);
        assert!(mcp.contains(&format!("/servers/{job}/{token}/mcp")), "{mcp}");
        both_transports_answer(&server).await;

        // The gateway refuses a wrong or missing token before it opens a tunnel.
        assert_eq!(post_status(&with_wrong_token(&mcp, &token)).await, 404);
        assert_eq!(post_status(&mcp.replace(&format!("/{token}"), "")).await, 404);
        // And the pod's bridge refuses them on its own, through a tunnel of the test's.
        let pod = pod_of(&c, &job);
        let wrong = with_wrong_token(&format!("/{token}/mcp"), &token);
        assert_eq!(through_port_forward(&c.fake, NS, &pod, "POST", &wrong).await, 404);
        assert_eq!(through_port_forward(&c.fake, NS, &pod, "POST", "/mcp").await, 404);
        assert_eq!(through_port_forward(&c.fake, NS, &pod, "GET", "/sse").await, 404);
        assert_eq!(through_port_forward(&c.fake, NS, &pod, "GET", "/readyz").await, 200);
        let right = format!("/{token}/mcp");
        assert_eq!(through_port_forward(&c.fake, NS, &pod, "POST", &right).await, 200);

        // The token is in the Secret, which the pod reads through envFrom; nowhere on the Job,
        // its pod or the process's command line.
        let secret: Secret = c.fake.object(NS, &format!("{job}-env")).expect("the server's Secret");
        let stored = secret.data.unwrap_or_default();
        assert_eq!(stored.get("MCP_EPHEMERAL_SERVER_TOKEN").map(|b| b.0.clone()), Some(token.clone().into_bytes()));
        let job_text = serde_json::to_string(&c.fake.object::<Job>(NS, &job).expect("job")).unwrap();
        assert!(!job_text.contains(&token), "the token is on the Job");
        let pod_text = serde_json::to_string(&c.fake.object::<Pod>(NS, &pod).expect("pod")).unwrap();
        assert!(!pod_text.contains(&token), "the token is on the pod");
        let started = c.fake.started_processes();
        let bridge = started.iter().find(|p| p.pod == pod).expect("the pod's process");
        assert!(!bridge.launch.args.iter().any(|a| a.contains(&token)), "the token is on a command line");
        assert!(bridge.launch.args.windows(2).any(|w| w == ["--token-env", "MCP_EPHEMERAL_SERVER_TOKEN"]));

        // A new meta server reads the token back from the Secret.
        let _ = meta.client.cancel().await;
        let again = kube_meta_with_env(&c, &["--ready-timeout", "25s"], &[]).await;
        let status = call_ok(&again.client, "get_mcp_server_status", json!({"job_name": job})).await;
        let mcp_again = status["urls"]["mcp"].as_str().unwrap();
        assert_eq!(token_of(mcp_again), token, "{mcp_again}");
        let listed = call_ok(&again.client, "list_mcp_servers", json!({})).await;
        assert!(listed.to_string().contains(&format!("/{token}/mcp")), "{listed}");
        let resumed = connect_http(mcp_again).await;
        let res = call(&resumed, "get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        let _ = resumed.cancel().await;
        call_ok(&again.client, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        let _ = again.client.cancel().await;
        assert_not_logged(&meta.logs, &token);
        assert_not_logged(&again.logs, &token);
    })
    .await;
}
