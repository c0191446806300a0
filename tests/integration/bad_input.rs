use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_clear_error_and_changes_nothing() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        let big = "x".repeat(64 * 1024 + 1);
        let cases = [
            ("create_mcp_server", json!({"preset": "no-such-preset"}), "unknown preset"),
            ("create_mcp_server", json!({}), "say what to run"),
            ("create_mcp_server", json!({"preset": "time", "runtime_exec": "uvx"}), "only one of"),
            ("create_mcp_server", json!({"runtime_exec": ""}), "empty"),
            ("create_mcp_server", json!({"runtime_exec": "uvx mcp-server-time"}), "single program"),
            ("create_mcp_server", json!({"runtime_exec": "uvx", "runtime_args": "'unbalanced"}), "cannot be parsed"),
            (
                "create_mcp_server",
                json!({"preset": "time", "env": {"1BAD": "x"}}),
                "not a valid environment variable name",
            ),
            (
                "create_mcp_server",
                json!({"preset": "time", "env": {"A-B": "x"}}),
                "not a valid environment variable name",
            ),
            ("create_mcp_server", json!({"preset": "time", "env": {"BIG": big}}), "limit is 65536"),
            ("create_mcp_server", json!({"preset": "time", "secret_env": {"BIG": big}}), "limit is 65536"),
            ("create_mcp_server", json!({"preset": "time", "ttl_seconds": 0}), "ttl_seconds"),
            ("create_mcp_server", json!({"preset": "time", "labels": {"app.kubernetes.io/name": "x"}}), "reserved"),
            ("create_mcp_server", json!({"image": "ghcr.io/x/y:1"}), "Kubernetes runtime"),
            ("create_mcp_server", json!({"runtime_exec": "definitely-not-a-program-xyz"}), "not on PATH"),
            ("get_mcp_server_status", json!({"job_name": "nope-12345678"}), "no MCP server named"),
            ("get_mcp_server_logs", json!({"job_name": "nope-12345678"}), "no MCP server named"),
            ("get_mcp_server_logs", json!({"job_name": "x", "tail_lines": 0}), "tail_lines"),
            ("mount_mcp_server", json!({"job_name": "nope-12345678", "name": "n"}), "no MCP server named"),
            ("remove_mcp_server_mount", json!({"name": "nope"}), "no mount"),
            ("list_mcp_servers", json!({"label_selector": "a b"}), "selector"),
            (
                "create_mcp_server",
                json!({"preset": "time", "idle_timeout_seconds": 99_999_999}),
                "idle_timeout_seconds",
            ),
            (
                "create_mcp_server",
                json!({"preset": "time", "wait_for_capacity_seconds": 99_999}),
                "wait_for_capacity_seconds",
            ),
            ("stop_mcp_server", json!({"job_name": "nope-12345678"}), "no MCP server named"),
            ("start_mcp_server", json!({"job_name": "nope-12345678", "wait_for_ready": true}), "no MCP server named"),
        ];
        for (tool, args, expect) in cases {
            let msg = call_err(&meta, tool, args.clone()).await;
            assert!(
                msg.contains(expect),
                "{tool}({}) said {msg:?}, expected it to mention {expect:?}",
                truncate(&args)
            );
            // Still serving, and nothing was created.
            let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
            assert_eq!(list["servers"].as_array().unwrap().len(), 0, "{tool} left a server behind");
        }
        assert!(descendants(pid).is_empty(), "a bad request started a process");

        // Unknown arguments are refused too (a typo must not be silently ignored).
        let res = meta
            .call_tool(
                rmcp::model::CallToolRequestParams::new("create_mcp_server")
                    .with_arguments(json!({"preset": "time", "wait_for_redy": true}).as_object().unwrap().clone()),
            )
            .await;
        match res {
            Ok(r) => assert_eq!(r.is_error, Some(true), "a misspelled argument was accepted"),
            Err(e) => assert!(e.to_string().contains("wait_for_redy"), "{e}"),
        }
        // Deleting what is not there is not an error (idempotent delete).
        let gone = call_ok(&meta, "delete_mcp_server", json!({"job_name": "nope-12345678"})).await;
        assert_eq!(gone["already_gone"], true);
        // After all of that, the meta server still answers.
        let presets = call_ok(&meta, "list_presets", json!({})).await;
        assert!(presets["presets"].as_array().unwrap().iter().any(|p| p["name"] == "time"), "{presets}");
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

fn truncate(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 120 { format!("{}…", &s[..120]) } else { s }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_meta_server_refuses_wrong_tokens_and_unsafe_binds() {
    tokio::time::timeout(TEST_LIMIT, async {
        let token = "test-token-0123456789abcdef";
        let meta = HttpMeta::start(&["--auth-token", token]).await;
        let http = reqwest::Client::new();
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
        let post = |auth: Option<&str>| {
            let mut req = http
                .post(format!("{}/mcp", meta.base))
                .header("accept", "application/json, text/event-stream")
                .json(&init);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send()
        };
        assert_eq!(post(None).await.unwrap().status(), 401);
        assert_eq!(post(Some("Bearer wrong-token-0123456789abcd")).await.unwrap().status(), 401);
        assert_eq!(post(Some(&format!("Bearer {token}"))).await.unwrap().status(), 200);
        assert_eq!(http.get(format!("{}/healthz", meta.base)).send().await.unwrap().status(), 200);

        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--transport", "http", "--listen", "0.0.0.0:0"])
            .env_remove("MCP_EPHEMERAL_TOKEN")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--auth-token"));

        // Quota and idle flags are checked before anything starts, every problem at once.
        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--max-active", "no-such-preset=2", "--default-idle-timeout", "30d", "--max-ttl", "1d"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("--max-active: unknown preset `no-such-preset`"), "{stderr}");
        assert!(stderr.contains("--default-idle-timeout must be at most --max-ttl"), "{stderr}");
        let out = tokio::process::Command::new(BIN).args(["serve", "--max-active", "time=0"]).output().await.unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("a limit of 0"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
    .expect("test finished in time");
}
