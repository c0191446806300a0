use std::{process::Stdio, time::Duration};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

/// Start `mcp-ephemeral bridge` on a free port; returns the process and its base URL.
async fn start_bridge(command: &[&str]) -> (tokio::process::Child, String) {
    let (child, base, _) = start_bridge_with(&[], &[], command).await;
    (child, base)
}

/// [`start_bridge`] with extra bridge flags and environment; its stderr lines are kept too.
async fn start_bridge_with(
    flags: &[&str],
    env: &[(&str, &str)],
    command: &[&str],
) -> (tokio::process::Child, String, Logs) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["bridge", "--listen", "127.0.0.1:0"])
        .args(flags)
        .arg("--")
        .args(command)
        .env("npm_config_yes", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn bridge");
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let logs = Logs::default();
    let kept = logs.clone();
    tokio::spawn(async move {
        let mut addr_tx = Some(addr_tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[bridge] {line}");
            if let Some(addr) = bridge_listen_addr(&line)
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr);
            }
            kept.lock().unwrap().push(line);
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(20), addr_rx)
        .await
        .expect("the bridge says where it listens within 20 s")
        .expect("the bridge says where it listens");
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "bridge not ready within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, base, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_token_env_the_bridge_answers_only_under_its_token_and_the_server_never_sees_it() {
    tokio::time::timeout(TEST_LIMIT, async {
        let token = "Tok3n_for-the-bridge-0123";
        let show = "echo \"seen=${BRIDGE_TOKEN:-unset}\" >&2; exec uvx mcp-server-time";
        let (mut bridge, base, logs) =
            start_bridge_with(&["--token-env", "BRIDGE_TOKEN"], &[("BRIDGE_TOKEN", token)], &["sh", "-c", show]).await;
        let http = reqwest::Client::new();
        let post =
            |url: String| http.post(url).header("accept", "application/json, text/event-stream").body("{}").send();
        assert_eq!(post(format!("{base}/mcp")).await.unwrap().status(), 404, "no token");
        assert_eq!(post(format!("{base}/{}/mcp", token.replace('T', "U"))).await.unwrap().status(), 404);
        assert_eq!(http.get(format!("{base}/sse")).send().await.unwrap().status(), 404);
        assert_eq!(http.get(format!("{base}/status")).send().await.unwrap().status(), 404);
        assert_eq!(http.get(format!("{base}/{token}/status")).send().await.unwrap().status(), 200);
        let client = connect_http(&format!("{base}/{token}/mcp")).await;
        let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        let sse = connect_sse(&format!("{base}/{token}/sse")).await;
        assert!(sse.list_all_tools().await.expect("tools over SSE").iter().any(|t| t.name == "get_current_time"));
        let _ = (client.cancel().await, sse.cancel().await);
        let _ = bridge.kill().await;
        let logs = logs.lock().unwrap().clone();
        assert!(logs.iter().any(|l| l.contains("seen=unset")), "the server's process printed what it saw");
        assert!(!logs.iter().any(|l| l.contains(token)), "the token reached the server or a log line");

        // A missing or weak token stops the bridge before it starts anything.
        for (env, says) in [(vec![], "not set"), (vec![("BRIDGE_TOKEN", "short")], "at least 22")] {
            let out = tokio::process::Command::new(BIN)
                .args(["bridge", "--listen", "127.0.0.1:0", "--token-env", "BRIDGE_TOKEN", "--", "true"])
                .env_remove("BRIDGE_TOKEN")
                .envs(env)
                .output()
                .await
                .unwrap();
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("--token-env BRIDGE_TOKEN") && err.contains(says), "{err}");
        }
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_on_one_bridge_get_only_their_own_answers() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (mut bridge, base) = start_bridge(&["npx", "@modelcontextprotocol/server-everything"]).await;
        let (mcp_url, sse_url) = (format!("{base}/mcp"), format!("{base}/sse"));
        let (a, b) = tokio::join!(connect_http(&mcp_url), connect_sse(&sse_url));
        let c = connect_http(&format!("{base}/mcp")).await;
        // Same request ids in every session, interleaved: each must get its own echo back.
        let run = |client: &'static Client, who: &'static str| async move {
            for i in 0..40 {
                let msg = format!("{who}-{i}");
                let res = call(client, "echo", json!({"message": msg})).await;
                assert!(text(&res).contains(&msg), "{who} got {}", text(&res));
            }
        };
        let (a, b, c): (&'static Client, &'static Client, &'static Client) =
            (Box::leak(Box::new(a)), Box::leak(Box::new(b)), Box::leak(Box::new(c)));
        tokio::join!(run(a, "alpha"), run(b, "beta"), run(c, "gamma"));

        // Each session has its own process: three sessions plus one spare.
        let processes = snapshot(bridge.id().unwrap());
        let servers = processes.iter().filter(|p| cmdline(p.pid).contains("server-everything")).count();
        assert!(servers >= 4, "expected a child per session and a spare, found {servers}");

        unsafe { libc::kill(bridge.id().unwrap() as i32, libc::SIGTERM) };
        let status =
            tokio::time::timeout(Duration::from_secs(6), bridge.wait()).await.expect("bridge exits within 6 s");
        assert!(status.unwrap().success());
        let left = wait_gone(&processes, Duration::from_secs(2)).await;
        assert!(left.is_empty(), "children outlived the bridge: {:?}", cmdlines(&left));
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_exits_with_the_reason_when_its_server_cannot_start() {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args(["bridge", "--listen", "127.0.0.1:0", "--", "sh", "-c", "echo no-such-module >&2; exit 7"])
            .output(),
    )
    .await
    .expect("bridge gives up quickly")
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exit code 7") && stderr.contains("no-such-module"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_rejects_requests_without_a_session_and_foreign_hosts() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (_bridge, base) = start_bridge(&["uvx", "mcp-server-time"]).await;
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("initialize"));
        let r = http
            .post(format!("{base}/mcp"))
            .header("mcp-session-id", "nope")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = http.post(format!("{base}/mcp")).header("host", "evil.example").body("{}").send().await.unwrap();
        assert_eq!(r.status(), 403);
        let r = http.post(format!("{base}/mcp")).body("not json").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = http.post(format!("{base}/messages?sessionId=unknown")).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 404);
    })
    .await
    .expect("test finished in time");
}
