use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_no_child_process_behind() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut meta_proc = HttpMeta::start(&[]).await;
        let meta = connect_http(&format!("{}/mcp", meta_proc.base)).await;
        let time = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        call_ok(&meta, "create_mcp_server", json!({"preset": "everything", "wait_for_ready": true})).await;
        // An open client session has a process of its own, too.
        let session = connect_http(time["urls"]["mcp"].as_str().unwrap()).await;
        let processes = snapshot(meta_proc.pid());
        assert!(processes.len() >= 4, "expected several server processes, found {processes:?}");

        let start = Instant::now();
        unsafe { libc::kill(meta_proc.pid() as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(6), meta_proc.child.wait()).await.expect("meta exits");
        assert!(status.unwrap().success());
        let left = wait_gone(&processes, Duration::from_secs(5).saturating_sub(start.elapsed())).await;
        assert!(left.is_empty(), "left behind: {:?}", cmdlines(&left));
        assert!(start.elapsed() < Duration::from_secs(5), "shutdown took {:?}", start.elapsed());
        drop(session);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_eof_on_stdio_ends_every_child() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let processes = snapshot(pid);
        assert!(!processes.is_empty());
        let meta_proc = Seen { pid, start: crate::procfs::start_time(pid).expect("the meta server runs") };
        let start = Instant::now();
        // Cancelling the client closes the meta server's stdin.
        let _ = meta.cancel().await;
        let mut all = processes.clone();
        all.push(meta_proc);
        let left = wait_gone(&all, Duration::from_secs(5)).await;
        assert!(left.is_empty(), "left behind after stdin EOF: {:?}", cmdlines(&left));
        assert!(start.elapsed() < Duration::from_secs(5));
    })
    .await
    .expect("test finished in time");
}
