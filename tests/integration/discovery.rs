//! `list_mcp_server_tools`: each tool as the server described it (with its schema), and its
//! prompts and resources; locally from the probe, on Kubernetes from the bridge's `/catalog`
//! through the gateway's pooled tunnel. `discover_mcp_server_tools`: the same from a throwaway
//! server that is gone afterwards, whether it answered, failed or timed out.

use serde_json::{Value, json};

use crate::{kubelet::process_cluster, kubernetes::kube_meta_with_env, support::*};

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
        let c = process_cluster().await;
        let meta = kube_meta_with_env(&c, &[], &[]).await.client;
        let time = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let listed = call_ok(&meta, "list_mcp_server_tools", json!({"job_name": time["job_name"]})).await;
        assert_time_tools(&listed);

        // A discovery's Job, Service and pod are gone when it answers; only the first server is left.
        let found = call_ok(&meta, "discover_mcp_server_tools", json!({"preset": "time"})).await;
        assert_time_tools(&found);
        let jobs = c.fake.objects::<k8s_openapi::api::batch::v1::Job>("mcp-test");
        assert_eq!(
            jobs.len(),
            1,
            "only the first server's Job: {:?}",
            jobs.iter().map(|j| &j.metadata.name).collect::<Vec<_>>()
        );
        let services = c.fake.objects::<k8s_openapi::api::core::v1::Service>("mcp-test");
        assert_eq!(services.len(), 1, "the throwaway's Service went with it");
    })
    .await;
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faulty_server.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_leaves_nothing_behind_when_it_answers_fails_or_times_out() {
    within(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&["--ready-timeout", "3s"]).await;
        let watch = TreeWatch::start(pid);
        let nothing_left = |what: &'static str| {
            let meta = &meta;
            let seen = watch.seen();
            async move {
                let list = call_ok(meta, "list_mcp_servers", json!({})).await;
                assert_eq!(list["servers"].as_array().unwrap().len(), 0, "{what}: a server is left: {list}");
                let left = wait_gone(&seen, std::time::Duration::from_secs(5)).await;
                assert!(left.is_empty(), "{what}: processes left: {:?}", cmdlines(&left));
            }
        };
        // Answers: the fixture is a plain Python script, ready well within the 3 s.
        let found = call(
            &meta,
            "discover_mcp_server_tools",
            json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": ["ok"]}),
        )
        .await;
        assert_ne!(found.is_error, Some(true), "{}", text(&found));
        let found = found.structured_content.unwrap();
        assert!(tool(&found, "echo")["inputSchema"].is_object(), "{found}");
        assert!(found["took_ms"].as_u64().is_some(), "{found}");
        nothing_left("after an answer").await;

        let failed = call_err(&meta, "discover_mcp_server_tools", json!({"runtime_exec": "false"})).await;
        assert!(failed.contains("failed (ExitedBeforeInitialize)") && failed.contains("has been deleted"), "{failed}");
        nothing_left("after a failure").await;

        let slow = json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": ["no-init"]});
        let timed_out = call_err(&meta, "discover_mcp_server_tools", slow).await;
        assert!(timed_out.contains("has been deleted"), "{timed_out}");
        nothing_left("after a timeout").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovering_the_time_preset_gives_its_schemas_and_keeps_no_server() {
    within(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let found = call_ok(&meta, "discover_mcp_server_tools", json!({"preset": "time"})).await;
        assert_time_tools(&found);
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"].as_array().unwrap().len(), 0, "{list}");
    })
    .await;
}
