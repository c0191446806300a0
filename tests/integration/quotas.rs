//! Quotas hold under concurrency: a create takes its slot before anything is made, so a burst
//! of creates against `--max-servers` makes exactly that many servers, on both runtimes.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use crate::{
    fake_kube::FakeConfig,
    kubernetes::{cluster, kube_meta_with_env},
    support::*,
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faulty_server.py");
const LIMIT: Duration = Duration::from_secs(60);

/// `n` creates of `args` at once on `client`: the created names and the error texts.
async fn burst(client: &Arc<Client>, args: Value, n: usize) -> (Vec<String>, Vec<String>) {
    let calls = (0..n).map(|_| {
        let (client, args) = (client.clone(), args.clone());
        async move { call(&client, "create_mcp_server", args).await }
    });
    let (mut made, mut refused) = (Vec::new(), Vec::new());
    for res in futures::future::join_all(calls).await {
        if res.is_error == Some(true) {
            refused.push(text(&res));
        } else {
            let v = res.structured_content.expect("a created server");
            made.push(v["job_name"].as_str().unwrap().to_string());
        }
    }
    (made, refused)
}

fn assert_exactly_ten(made: &[String], refused: &[String]) {
    assert_eq!(made.len(), 10, "exactly --max-servers servers are made; refused: {refused:?}");
    assert_eq!(refused.len(), 20);
    for e in refused {
        assert!(e.contains("--max-servers limit of 10"), "the error names the quota: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_local_creates_against_max_servers_10_make_exactly_ten() {
    within(LIMIT, async {
        let (client, _) = meta_stdio(&["--max-servers", "10"]).await;
        let client = Arc::new(client);
        let args = json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": ["ok"]});
        let (made, refused) = burst(&client, args.clone(), 30).await;
        assert_exactly_ten(&made, &refused);
        let listed = call_ok(&client, "list_mcp_servers", json!({})).await;
        assert_eq!(listed["servers"].as_array().unwrap().len(), 10);

        // A deleted server frees its slot.
        call_ok(&client, "delete_mcp_server", json!({"job_name": made[0], "wait_for_deletion": true})).await;
        call_ok(&client, "create_mcp_server", args.clone()).await;
        assert!(call_err(&client, "create_mcp_server", args).await.contains("--max-servers"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_kubernetes_creates_against_max_servers_10_make_exactly_ten() {
    within(LIMIT, async {
        let c = cluster(FakeConfig::new("mcp-test")).await;
        let meta = kube_meta_with_env(&c, &["--max-servers", "10"], &[]).await;
        let client = Arc::new(meta.client);
        let (made, refused) = burst(&client, json!({"preset": "time"}), 30).await;
        assert_exactly_ten(&made, &refused);
        assert_eq!(c.fake.objects::<Job>("mcp-test").len(), 10, "ten Jobs in the cluster");
    })
    .await;
}

fn quota_use(version: &Value, quota: &str, preset: Option<&str>) -> (u64, u64) {
    let q = version["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["quota"] == quota && q["preset"].as_str() == preset)
        .unwrap_or_else(|| panic!("quota {quota} {preset:?} in {version}"));
    (q["used"].as_u64().unwrap(), q["limit"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_active_refuses_a_second_server_or_lets_it_wait_until_the_first_is_stopped() {
    within(LIMIT, async {
        let (client, _) = meta_stdio(&["--max-active", "time=1"]).await;
        let first = call_ok(&client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let first = first["job_name"].as_str().unwrap().to_string();
        let version = call_ok(&client, "get_version", json!({})).await;
        assert_eq!(quota_use(&version, "max_active", Some("time")), (1, 1), "{version}");
        assert_eq!(quota_use(&version, "max_servers", None), (1, 100));

        let e = call_err(&client, "create_mcp_server", json!({"preset": "time"})).await;
        assert!(e.contains("--max-active limit of 1 for preset `time`") && e.contains("not Stopped"), "{e}");
        // Other presets are not held to it.
        let other = json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": ["ok"]});
        call_ok(&client, "create_mcp_server", other).await;

        // A create that may wait gets the slot the stop frees, and is told it waits.
        let client = Arc::new(client);
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move {
                let args = json!({"preset": "time", "wait_for_capacity_seconds": 30, "wait_for_ready": true});
                let token = rmcp::model::ProgressToken(rmcp::model::NumberOrString::String("wait-1".into()));
                let mut params = rmcp::model::CallToolRequestParams::new("create_mcp_server")
                    .with_arguments(args.as_object().unwrap().clone());
                params.meta = Some(rmcp::model::RequestMetaObject::with_progress_token(token));
                client.call_tool(params).await.expect("create")
            })
        };
        let told = client.service().wait_for_progress("for a slot").await;
        assert!(told.iter().any(|m| m.contains("waiting up to 30s for a slot: the --max-active limit")), "{told:?}");
        assert!(!waiting.is_finished(), "the second create waits for a slot");
        call_ok(&client, "stop_mcp_server", json!({"job_name": first})).await;
        let second = waiting.await.unwrap();
        assert_ne!(second.is_error, Some(true), "{}", text(&second));
        assert_eq!(second.structured_content.as_ref().unwrap()["phase"], "Ready");

        // A request to the stopped server's URL cannot wake it past the quota: a clear 503,
        // a JSON-RPC error for a POST.
        let stopped = call_ok(&client, "get_mcp_server_status", json!({"job_name": first})).await;
        let url = stopped["urls"]["mcp"].as_str().unwrap();
        let http = reqwest::Client::new();
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let post =
            http.post(url).header("accept", "application/json, text/event-stream").json(&init).send().await.unwrap();
        assert_eq!(post.status(), 503);
        let body: Value = post.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("is stopped and could not be started") && message.contains("--max-active"), "{body}");
        let sse = http.get(stopped["urls"]["sse"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(sse.status(), 503);
        assert!(sse.text().await.unwrap().contains("--max-active limit of 1"));
        let still = call_ok(&client, "get_mcp_server_status", json!({"job_name": first})).await;
        assert_eq!(still["phase"], "Stopped", "a refused wake leaves it stopped");

        // Starting the stopped one is held to the same quota; a short wait runs out cleanly.
        let e = call_err(&client, "start_mcp_server", json!({"job_name": first})).await;
        assert!(e.contains("--max-active limit of 1 for preset `time`"), "{e}");
        let e = call_err(&client, "start_mcp_server", json!({"job_name": first, "wait_for_capacity_seconds": 1})).await;
        assert!(e.contains("waited 1s"), "{e}");
        let version = call_ok(&client, "get_version", json!({})).await;
        assert_eq!(quota_use(&version, "max_active", Some("time")), (1, 1), "the stopped one does not count");
        assert_eq!(quota_use(&version, "max_servers", None), (3, 100), "Stopped servers count against max_servers");
    })
    .await;
}
