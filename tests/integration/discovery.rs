//! `list_mcp_server_tools`: each tool as the server described it (with its schema), and its
//! prompts and resources; locally from the probe, on Kubernetes from the bridge's `/catalog`
//! through the gateway's pooled tunnel.

use serde_json::{Value, json};

use crate::{
    fake_kube::{FakeConfig, Programs},
    kubernetes::{cluster, kube_meta_with_env},
    support::*,
};

fn tool<'a>(listed: &'a Value, name: &str) -> &'a Value {
    listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {listed}"))
}

fn assert_time_tools(listed: &Value) {
    let t = tool(listed, "get_current_time");
    assert!(t["description"].as_str().is_some_and(|d| !d.is_empty()), "{t}");
    assert!(t["inputSchema"]["properties"]["timezone"].is_object(), "the schema names its timezone argument: {t}");
    assert!(listed["tools"].as_array().unwrap().iter().any(|t| t["name"] == "convert_time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_servers_tools_come_with_their_schemas_prompts_and_resources() {
    within(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let time = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = time["job_name"].as_str().unwrap().to_string();
        let listed = call_ok(&meta, "list_mcp_server_tools", json!({"job_name": job})).await;
        assert_eq!(listed["job_name"], job.as_str());
        assert_time_tools(&listed);

        let everything =
            call_ok(&meta, "create_mcp_server", json!({"preset": "everything", "wait_for_ready": true})).await;
        let all = call_ok(&meta, "list_mcp_server_tools", json!({"job_name": everything["job_name"]})).await;
        assert!(tool(&all, "echo")["inputSchema"]["properties"]["message"].is_object(), "{all}");
        assert!(!all["prompts"].as_array().expect("prompts").is_empty(), "{all}");
        assert!(!all["resources"].as_array().expect("resources").is_empty(), "{all}");

        call_ok(&meta, "stop_mcp_server", json!({"job_name": job})).await;
        let e = call_err(&meta, "list_mcp_server_tools", json!({"job_name": job})).await;
        assert!(e.contains("is Stopped, not Ready") && e.contains("start_mcp_server"), "{e}");
        let e = call_err(&meta, "list_mcp_server_tools", json!({"job_name": "nope-00000000"})).await;
        assert!(e.contains("no MCP server named"), "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kubernetes_the_tools_come_from_the_bridge_through_the_gateway() {
    within(TEST_LIMIT, async {
        let programs = Programs::new().program("mcp-ephemeral", BIN).program("/usr/local/bin/mcp-ephemeral", BIN);
        let c = cluster(FakeConfig::new("mcp-test").processes(programs)).await;
        let meta = kube_meta_with_env(&c, &[], &[]).await.client;
        let time = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let listed = call_ok(&meta, "list_mcp_server_tools", json!({"job_name": time["job_name"]})).await;
        assert_time_tools(&listed);
    })
    .await;
}
