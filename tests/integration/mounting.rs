use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_tools_appear_answer_and_disappear_with_notifications() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap().to_string();

        let before = meta.service().tool_list_changes();
        let mounted = call_ok(&meta, "mount_mcp_server", json!({"job_name": job, "name": "clock"})).await;
        assert!(mounted["tools"].to_string().contains("clock_get_current_time"), "{mounted}");
        meta.service().wait_for_changes(before + 1).await;

        let tools = meta.list_all_tools().await.expect("tools/list");
        assert!(tools.iter().any(|t| t.name == "clock_get_current_time"));
        let res = call(&meta, "clock_get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        assert!(text(&res).contains("UTC"), "{}", text(&res));

        let dup = call_err(&meta, "mount_mcp_server", json!({"job_name": job, "name": "clock"})).await;
        assert!(dup.contains("exists already"), "{dup}");

        call_ok(&meta, "remove_mcp_server_mount", json!({"name": "clock"})).await;
        meta.service().wait_for_changes(before + 2).await;
        let tools = meta.list_all_tools().await.expect("tools/list");
        assert!(!tools.iter().any(|t| t.name.starts_with("clock_")), "mounted tools remain after unmount");

        // Deleting a mounted server removes its mount too.
        call_ok(&meta, "mount_mcp_server", json!({"job_name": job, "name": "clock2"})).await;
        meta.service().wait_for_changes(before + 3).await;
        call_ok(&meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        meta.service().wait_for_changes(before + 4).await;
        let tools = meta.list_all_tools().await.expect("tools/list");
        assert!(!tools.iter().any(|t| t.name.starts_with("clock2_")));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}
