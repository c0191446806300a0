//! A local server's environment is minimal: what programs need (PATH, HOME, the locale, …, the
//! settings of uv and npm), the preset's and request's env, and what `--pass-env` names — not
//! the meta server's whole environment. server-everything's `get-env` tool shows what a child
//! got, and its start through `npx` shows that npx still finds its cache.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_server_sees_only_the_kept_the_passed_and_its_own_variables() {
    within(TEST_LIMIT, async {
        let env = [("SOME_CANARY", "canary-7f3a"), ("MY_PASSED", "passed-1"), ("LC_MESSAGES", "C")];
        let (meta, _) = meta_stdio_with_env(&["--pass-env", "MY_PASSED"], &env).await;
        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"preset": "everything", "env": {"REQ_VAR": "req-1"}, "secret_env": {"REQ_SECRET": "s-1"}, "wait_for_ready": true}),
        )
        .await;
        assert_eq!(server["phase"], "Ready", "npx found its cache and started: {server}");
        let client = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        let res = call(&client, "get-env", json!({})).await;
        let seen = text(&res);
        assert!(!seen.contains("SOME_CANARY") && !seen.contains("canary-7f3a"), "the meta server's variable leaked: {seen}");
        for expected in ["\"MY_PASSED\"", "passed-1", "\"REQ_VAR\"", "\"REQ_SECRET\"", "\"PATH\"", "\"HOME\"", "\"LC_MESSAGES\""] {
            assert!(seen.contains(expected), "{expected} missing from the child's environment: {seen}");
        }
        assert!(!seen.contains("MCP_EPHEMERAL_LOG"), "the meta server's own settings stay with it: {seen}");
        let _ = client.cancel().await;
    })
    .await;
}
