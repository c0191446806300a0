//! Faults, through the real binary: a stdio server (tests/fixtures/faulty_server.py) that exits
//! mid-call, writes garbage on stdout, never answers `initialize`, floods stderr, or ignores
//! SIGTERM; run by `mcp-ephemeral bridge` over real HTTP/SSE and by `serve` through
//! `create_mcp_server`. Each must end in a clear error or status; nothing may hang (every wait
//! has a limit) or leak (processes, file descriptors, memory).

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faulty_server.py");
/// Limit for one HTTP exchange or tool call in these tests.
const CALL_LIMIT: Duration = Duration::from_secs(20);

/// The bridge's stderr: the last bytes, kept without printing a flood into the test output.
#[derive(Default)]
struct Output {
    tail: String,
    printed: usize,
}

impl Output {
    fn push(&mut self, line: &str) {
        if self.printed < 400 && !line.contains("flood f") && line.len() < 400 {
            self.printed += 1;
            eprintln!("[bridge] {line}");
        }
        self.tail.push_str(line);
        self.tail.push('\n');
        if self.tail.len() > 512 * 1024 {
            let mut cut = self.tail.len() - 256 * 1024;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
    }
}

/// `mcp-ephemeral bridge FLAGS -- python3 faulty_server.py MODE` on a free port.
struct BridgeProc {
    child: tokio::process::Child,
    base: String,
    output: Arc<Mutex<Output>>,
}

impl BridgeProc {
    async fn start(mode: &str, flags: &[&str]) -> BridgeProc {
        let mut child = tokio::process::Command::new(BIN)
            .args(["bridge", "--listen", "127.0.0.1:0"])
            .args(flags)
            .args(["--", "python3", FIXTURE, mode])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bridge");
        let output = Arc::new(Mutex::new(Output::default()));
        let (stderr, out) = (child.stderr.take().unwrap(), output.clone());
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut reader = BufReader::with_capacity(1 << 16, stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).await.is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                if let Some(addr) = bridge_listen_addr(&text)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                out.lock().unwrap().push(text.trim_end());
                line.clear();
            }
        });
        // The bridge logs the port it bound once it listens.
        let addr = tokio::time::timeout(Duration::from_secs(20), addr_rx)
            .await
            .expect("the bridge says where it listens within 20 s")
            .expect("the bridge says where it listens");
        let base = format!("http://{addr}");
        BridgeProc { child, base, output }
    }

    /// Start and wait for `/readyz` to say 200.
    async fn ready(mode: &str, flags: &[&str]) -> BridgeProc {
        let bridge = BridgeProc::start(mode, flags).await;
        let (status, body) = bridge.wait_readyz(Duration::from_secs(30)).await;
        assert_eq!(status, 200, "not ready: {body}");
        bridge
    }

    /// Poll `/readyz` until it leaves `starting` (or `limit`); returns the last status and body.
    async fn wait_readyz(&self, limit: Duration) -> (u16, String) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            let r = http.get(format!("{}/readyz", self.base)).send().await.expect("GET /readyz");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if body != "starting" || Instant::now() > deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("bridge running")
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().tail.clone()
    }

    /// SIGTERM the bridge; it must exit 0 within 6 s and leave no process behind.
    async fn stop(mut self) {
        let processes = snapshot(self.pid());
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let status =
            tokio::time::timeout(Duration::from_secs(6), self.child.wait()).await.expect("bridge exits within 6 s");
        assert!(status.unwrap().success());
        let left = wait_gone(&processes, Duration::from_secs(2)).await;
        assert!(left.is_empty(), "outlived the bridge: {:?}", cmdlines(&left));
    }
}

/// Processes below `pid` that run the fixture (children and grandchildren).
fn fixture_processes(pid: u32) -> Vec<Seen> {
    snapshot(pid).into_iter().filter(|p| cmdline(p.pid).contains("faulty")).collect()
}

/// Wait until exactly `n` fixture processes run below `pid` (spares and sessions settle).
async fn settle_processes(pid: u32, n: usize, limit: Duration) -> Vec<Seen> {
    let deadline = Instant::now() + limit;
    loop {
        let now = fixture_processes(pid);
        if now.len() == n || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// A raw streamable HTTP session: every SSE event must be valid JSON.
struct Raw {
    http: reqwest::Client,
    url: String,
    sid: Option<String>,
}

impl Raw {
    fn new(base: &str) -> Raw {
        // No connection pool: closed sessions leave no idle connection (and fd) in the bridge.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        Raw { http, url: format!("{base}/mcp"), sid: None }
    }

    /// POST one body; returns the status, and the JSON messages of the reply (SSE or JSON).
    async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Vec<Value>, String) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(sid) = &self.sid {
            req = req.header("mcp-session-id", sid);
        }
        tokio::time::timeout(CALL_LIMIT, async {
            let r = req.send().await.expect("POST /mcp");
            let status = r.status().as_u16();
            let sse = r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let text = r.text().await.expect("reply body");
            let messages = if sse {
                sse_data(&text)
                    .into_iter()
                    .map(|d| {
                        serde_json::from_str(&d).unwrap_or_else(|e| panic!("an SSE event is not JSON ({e}): {d:.200}"))
                    })
                    .collect()
            } else {
                serde_json::from_str::<Value>(&text).map(|v| vec![v]).unwrap_or_default()
            };
            (status, messages, text)
        })
        .await
        .unwrap_or_else(|_| panic!("POST {} answered within {CALL_LIMIT:?}", self.url))
    }

    async fn initialize(base: &str) -> Raw {
        let mut raw = Raw::new(base);
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "faults", "version": "0"}}});
        let r = tokio::time::timeout(
            CALL_LIMIT,
            raw.http.post(&raw.url).header("accept", "application/json, text/event-stream").json(&init).send(),
        )
        .await
        .expect("initialize answered in time")
        .expect("POST initialize");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        raw.sid = Some(r.headers()["mcp-session-id"].to_str().unwrap().to_string());
        let _ = r.bytes().await;
        let (status, _, _) = raw.post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
        assert_eq!(status, 202);
        raw
    }

    /// Call a tool; returns the one response message for it.
    async fn call(&self, id: u64, tool: &str, args: Value) -> Value {
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        let (status, messages, text) = self.post(body.to_string()).await;
        assert_eq!(status, 200, "{text:.500}");
        let mut responses: Vec<Value> = messages.into_iter().filter(|m| m.get("method").is_none()).collect();
        assert_eq!(responses.len(), 1, "one response expected, got {responses:.500?}");
        let reply = responses.pop().unwrap();
        assert_eq!(reply["id"], id, "{reply:.300}");
        reply
    }

    async fn delete(&self) -> u16 {
        let req = self.http.delete(&self.url).header("mcp-session-id", self.sid.as_deref().unwrap());
        tokio::time::timeout(CALL_LIMIT, req.send()).await.expect("DELETE in time").expect("DELETE").status().as_u16()
    }
}

/// The `data` of each event of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d)))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// `call_tool` through an rmcp client, bounded; the error text on failure.
async fn try_call(client: &Client, tool: &str, args: Value) -> Result<String, String> {
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap());
    match tokio::time::timeout(CALL_LIMIT, client.call_tool(params)).await {
        Err(_) => panic!("{tool} did not answer within {CALL_LIMIT:?}"),
        Ok(Ok(res)) => Ok(text(&res)),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

fn fixture_request(mode: &str, extra: Value) -> Value {
    let mut req =
        json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": [mode], "wait_for_ready": true});
    req.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    req
}

// ---------------------------------------------------------------------------------------------
// A child that exits in the middle of a call.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_answers_a_call_whose_child_exits_with_its_exit_status() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bridge = BridgeProc::ready("exit-mid-call", &[]).await;

        // Streamable HTTP, raw: the in-flight call gets a JSON-RPC error naming the exit status.
        let raw = Raw::initialize(&bridge.base).await;
        let echo = raw.call(2, "echo", json!({"message": "before"})).await;
        assert_eq!(echo["result"]["content"][0]["text"], "before");
        let reply = raw.call(3, "crash", json!({})).await;
        let message = reply["error"]["message"].as_str().unwrap_or_else(|| panic!("an error: {reply}"));
        assert!(message.contains("exit code 42"), "{message}");
        assert_eq!(reply["error"]["code"], -32000);
        // The session is over (forgotten as soon as the bridge has seen its child end); the next
        // request says so instead of hanging.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (status, text) = loop {
            let (status, _, text) = raw.post(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#).await;
            if text.contains("session not found") || Instant::now() > deadline {
                break (status, text);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status, 404, "{text}");
        assert!(text.contains("session not found"), "{text}");

        // rmcp over streamable HTTP.
        let client = connect_http(&format!("{}/mcp", bridge.base)).await;
        assert_eq!(try_call(&client, "echo", json!({"message": "hi"})).await.unwrap(), "hi");
        let err = try_call(&client, "crash", json!({})).await.unwrap_err();
        assert!(err.contains("exit code 42"), "{err}");

        // Legacy SSE: the call gets its error on the event stream too.
        let client = connect_sse(&format!("{}/sse", bridge.base)).await;
        assert_eq!(try_call(&client, "echo", json!({"message": "hi"})).await.unwrap(), "hi");
        let err = try_call(&client, "crash", json!({})).await.unwrap_err();
        assert!(err.contains("exit code 42"), "{err}");

        // A new session works, and what is left is the spare alone.
        let raw = Raw::initialize(&bridge.base).await;
        raw.call(2, "echo", json!({"message": "again"})).await;
        assert_eq!(raw.delete().await, 200);
        let left = settle_processes(bridge.pid(), 1, Duration::from_secs(5)).await;
        assert_eq!(left.len(), 1, "only the spare should run: {:?}", cmdlines(&left));
        assert!(bridge.output().contains("about to exit with code 42"));
        bridge.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_a_session_child_that_exits_mid_call_and_keeps_the_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        let tree = TreeWatch::start(pid);
        let server = call_ok(&meta, "create_mcp_server", fixture_request("exit-mid-call", json!({}))).await;
        assert_eq!(server["phase"], "Ready", "{server}");
        assert!(server["job_name"].as_str().unwrap().starts_with("faulty-server-py-"), "{server}");
        let job = server["job_name"].clone();
        let url = server["urls"]["mcp"].as_str().unwrap();
        let session = connect_http(url).await;
        let err = try_call(&session, "crash", json!({})).await.unwrap_err();
        assert!(err.contains("exit code 42") && err.contains("get_mcp_server_logs"), "{err}");
        let logs = call_ok(&meta, "get_mcp_server_logs", json!({"job_name": job})).await;
        assert!(logs["lines"].to_string().contains("about to exit with code 42"), "{logs}");
        // One session's process died, not the server: it stays Ready and takes new sessions.
        let status = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(status["phase"], "Ready", "{status}");
        let session = connect_http(url).await;
        assert_eq!(try_call(&session, "echo", json!({"message": "still here"})).await.unwrap(), "still here");
        let _ = session.cancel().await;
        call_ok(&meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        // Every process the server ever had, wherever it was re-parented.
        let seen = tree.seen();
        assert!(seen.len() >= 3, "the probe, the sessions and the spare were seen: {:?}", cmdlines(&seen));
        let left = wait_gone(&seen, Duration::from_secs(3)).await;
        assert!(left.is_empty(), "left behind: {:?}", cmdlines(&left));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------------------------
// Garbage on stdout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_logs_and_skips_garbage_on_stdout_while_replies_flow() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bridge = BridgeProc::ready("garbage", &[]).await;
        let baseline = vm_kib(bridge.pid(), "VmRSS");

        // Raw streamable HTTP: every event of every reply is JSON, and each call gets its answer.
        let raw = Raw::initialize(&bridge.base).await;
        for i in 0..5 {
            let reply = raw.call(10 + i, "echo", json!({"message": format!("m{i}")})).await;
            assert_eq!(reply["result"]["content"][0]["text"], format!("m{i}"));
        }
        // A big valid reply (5 MB) still flows…
        let reply = raw.call(20, "big", json!({"size": 5_000_000})).await;
        assert_eq!(reply["result"]["content"][0]["text"].as_str().map(str::len), Some(5_000_000));
        // …and so does the reply after a junk line longer than the 64 MiB line limit.
        let reply = raw.call(21, "big", json!({"size": 10, "junk_mb": 65})).await;
        assert_eq!(reply["result"]["content"][0]["text"], "bbbbbbbbbb");
        // The session's child lives on, but not the buffer of the overlong line (given back
        // once the line is dropped: wait for it, bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut rss = vm_kib(bridge.pid(), "VmRSS");
        while rss >= baseline + 48 * 1024 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            rss = vm_kib(bridge.pid(), "VmRSS");
        }
        assert!(rss < baseline + 48 * 1024, "RSS {rss} KiB after the junk, {baseline} KiB before");
        assert_eq!(raw.delete().await, 200);

        // rmcp clients over both transports.
        let client = connect_http(&format!("{}/mcp", bridge.base)).await;
        assert_eq!(try_call(&client, "echo", json!({"message": "http"})).await.unwrap(), "http");
        let _ = client.cancel().await;
        let client = connect_sse(&format!("{}/sse", bridge.base)).await;
        assert_eq!(try_call(&client, "echo", json!({"message": "sse"})).await.unwrap(), "sse");
        let _ = client.cancel().await;

        let out = bridge.output();
        for junk in ["[stdout, not JSON-RPC] Starting server... (a banner on stdout)", "not json either", "trailing}"] {
            assert!(out.contains(junk), "{junk:?} not logged");
        }
        assert!(out.contains("a line longer than 64 MiB, dropped: {jjjj"), "the overlong line is reported");
        bridge.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shows_stdout_garbage_in_the_logs_tool() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let server = call_ok(&meta, "create_mcp_server", fixture_request("garbage", json!({}))).await;
        assert_eq!(server["phase"], "Ready", "{server}");
        let session = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        assert_eq!(try_call(&session, "echo", json!({"message": "through"})).await.unwrap(), "through");
        let logs =
            call_ok(&meta, "get_mcp_server_logs", json!({"job_name": server["job_name"], "tail_lines": 2000})).await;
        let lines = logs["lines"].to_string();
        assert!(lines.contains("[stdout, not JSON-RPC] Starting server"), "{lines:.2000}");
        let _ = session.cancel().await;
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------------------------
// A server that never answers initialize.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_reports_an_initialize_timeout_on_readyz_and_to_clients() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bridge = BridgeProc::start("no-init", &["--init-timeout", "1500ms", "--stay-on-failure"]).await;
        let http = reqwest::Client::new();
        let r = http.get(format!("{}/readyz", bridge.base)).send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (503, "starting".to_string()));
        let (status, body) = bridge.wait_readyz(Duration::from_secs(10)).await;
        assert_eq!(status, 503);
        assert!(body.contains("did not answer initialize within 1s 500ms"), "{body}");
        assert!(body.contains("mode no-init"), "the stderr tail is quoted: {body}");

        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
        let r = http
            .post(format!("{}/mcp", bridge.base))
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["id"], 1);
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("not ready") && message.contains("did not answer initialize"), "{message}");
        let r = http.get(format!("{}/sse", bridge.base)).send().await.unwrap();
        assert_eq!(r.status(), 503);

        // The probe and the spare are gone; the bridge keeps serving /healthz.
        let left = settle_processes(bridge.pid(), 0, Duration::from_secs(5)).await;
        assert!(left.is_empty(), "{:?}", cmdlines(&left));
        assert_eq!(http.get(format!("{}/healthz", bridge.base)).send().await.unwrap().status(), 200);
        bridge.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_exits_1_after_the_init_timeout() {
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .args(["bridge", "--listen", "127.0.0.1:0", "--init-timeout", "1s", "--", "python3", FIXTURE, "no-init"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the bridge gives up after its init timeout")
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not answer initialize within 1s"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_marks_a_silent_server_failed_with_initialize_timeout() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&["--ready-timeout", "2s"]).await;
        let tree = TreeWatch::start(pid);
        for _ in 0..2 {
            let msg = call_err(&meta, "create_mcp_server", fixture_request("no-init", json!({}))).await;
            assert!(
                msg.contains("failed (InitializeTimeout)") && msg.contains("did not answer initialize within 2s"),
                "{msg}"
            );
        }
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"].as_array().unwrap().len(), 2, "both failed servers are listed: {list}");
        for server in list["servers"].as_array().unwrap() {
            assert_eq!(server["phase"], "Failed", "{server}");
            assert_eq!(server["reason"], "InitializeTimeout", "{server}");
            assert!(server["log_tail"].to_string().contains("mode no-init"), "{server}");
        }
        // A failed server keeps no process: none of those it ever had runs.
        let seen = tree.seen();
        assert!(!seen.is_empty(), "the probes were seen");
        let left = wait_gone(&seen, Duration::from_secs(5)).await;
        assert!(left.is_empty(), "{:?}", cmdlines(&left));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------------------------
// A stderr flood.

/// Start a 50 MiB flood in `client`'s session, keep calling `echo` while it runs, and return
/// once it is done; every echo must answer within 5 s.
async fn flood_and_stay_responsive(client: &Client) {
    assert_eq!(try_call(client, "flood", json!({"mb": 50})).await.unwrap(), "flooding");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut echoes = 0;
    loop {
        let params = CallToolRequestParams::new("echo")
            .with_arguments(json!({"message": "alive"}).as_object().cloned().unwrap());
        let res = tokio::time::timeout(Duration::from_secs(5), client.call_tool(params))
            .await
            .expect("echo answers within 5 s during the flood")
            .expect("echo");
        assert_eq!(text(&res), "alive");
        echoes += 1;
        let status =
            tokio::time::timeout(Duration::from_secs(5), client.call_tool(CallToolRequestParams::new("flood_status")))
                .await
                .expect("flood_status within 5 s")
                .expect("flood_status");
        let status = status.structured_content.expect("structured");
        if status["done"] == true {
            // The whole flood went through the bridge, and calls were answered while it ran.
            assert_eq!(status["written"].as_u64(), Some(50 << 20), "{status}");
            assert!(echoes >= 1, "echo answered during the flood");
            return;
        }
        assert!(Instant::now() < deadline, "the flood did not finish in 90 s: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_stays_responsive_and_bounded_under_a_stderr_flood() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bridge = BridgeProc::ready("stderr-flood", &[]).await;
        let client = connect_http(&format!("{}/mcp", bridge.base)).await;
        try_call(&client, "echo", json!({"message": "warm"})).await.unwrap();
        let before = vm_kib(bridge.pid(), "VmHWM");
        flood_and_stay_responsive(&client).await;
        // The flood ends with `flood-end`; give the bridge a moment to relay the last lines.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bridge.output().contains("flood-end") {
            assert!(Instant::now() < deadline, "the last stderr line was not echoed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let peak = vm_kib(bridge.pid(), "VmHWM");
        eprintln!("bridge peak RSS {before} KiB before the flood, {peak} KiB after");
        assert!(
            peak < before + 16 * 1024,
            "peak RSS grew from {before} KiB to {peak} KiB during a 50 MiB stderr flood"
        );
        let http = reqwest::Client::new();
        assert_eq!(http.get(format!("{}/readyz", bridge.base)).send().await.unwrap().status(), 200);
        let _ = client.cancel().await;
        bridge.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_the_last_lines_of_a_stderr_flood() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        let server = call_ok(&meta, "create_mcp_server", fixture_request("stderr-flood", json!({}))).await;
        let session = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        let before = vm_kib(pid, "VmHWM");
        flood_and_stay_responsive(&session).await;
        let job = server["job_name"].clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = call_ok(&meta, "get_mcp_server_logs", json!({"job_name": job, "tail_lines": 2})).await;
            let lines = logs["lines"].as_array().unwrap();
            if lines.last().and_then(Value::as_str).is_some_and(|l| l.ends_with("] flood-end")) {
                // The line before it is the huge one, cut.
                let giant = lines[0].as_str().unwrap();
                assert!(giant.ends_with(" …") && giant.len() < 5000, "{giant:.100}");
                break;
            }
            assert!(Instant::now() < deadline, "flood-end not in the logs: {logs:.300}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all = call_ok(&meta, "get_mcp_server_logs", json!({"job_name": job, "tail_lines": 2000})).await;
        assert_eq!(all["lines"].as_array().unwrap().len(), 2000, "the ring keeps the last 2000 lines");
        let peak = vm_kib(pid, "VmHWM");
        assert!(peak < before + 16 * 1024, "meta peak RSS grew from {before} KiB to {peak} KiB");
        let _ = session.cancel().await;
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------------------------
// Children that ignore SIGTERM (and stdin EOF).

/// EOF grace + SIGTERM grace (0.8 s + 1.5 s, see README "Processes"), plus scheduling slack.
const KILL_WITHIN: Duration = Duration::from_millis(2300 + 1200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_sigkills_children_that_ignore_sigterm() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bridge = BridgeProc::ready("ignore-sigterm", &[]).await;
        // The probe child (and its grandchild) ignore SIGTERM too: gone after the grace.
        let spare = settle_processes(bridge.pid(), 2, KILL_WITHIN + Duration::from_secs(1)).await;
        assert_eq!(spare.len(), 2, "the spare and its grandchild: {:?}", cmdlines(&spare));
        let raw = Raw::initialize(&bridge.base).await;
        raw.call(2, "echo", json!({"message": "x"})).await;

        let started = Instant::now();
        assert_eq!(raw.delete().await, 200);
        let left = wait_gone(&spare, KILL_WITHIN).await;
        assert!(left.is_empty(), "still running {:?} after DELETE: {:?}", started.elapsed(), cmdlines(&left));
        assert!(bridge.output().contains("staying alive anyway"), "stdin was closed first");
        // Shutdown kills the new spare the same way, within the bridge's own limit.
        let started = Instant::now();
        bridge.stop().await;
        assert!(started.elapsed() < KILL_WITHIN + Duration::from_secs(1), "shutdown took {:?}", started.elapsed());
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_deletes_a_sigterm_ignoring_server_completely() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        let server = call_ok(&meta, "create_mcp_server", fixture_request("ignore-sigterm", json!({}))).await;
        let session = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        assert_eq!(try_call(&session, "echo", json!({"message": "x"})).await.unwrap(), "x");
        let processes = snapshot(pid);
        assert!(processes.len() >= 4, "session + spare, each with a grandchild: {processes:?}");
        let started = Instant::now();
        let deleted =
            call_ok(&meta, "delete_mcp_server", json!({"job_name": server["job_name"], "wait_for_deletion": true}))
                .await;
        assert_eq!(deleted["phase"], "Deleted");
        assert!(started.elapsed() < KILL_WITHIN, "delete took {:?}", started.elapsed());
        let left = wait_gone(&processes, Duration::from_millis(500)).await;
        assert!(left.is_empty(), "left behind: {:?}", cmdlines(&left));
        let _ = session.cancel().await;
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

// ---------------------------------------------------------------------------------------------
// Leaks.

/// Open an SSE session by hand; returns the stream (drop it to end the session) and the POST URL.
async fn sse_session(
    base: &str,
    http: &reqwest::Client,
) -> (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>>, String) {
    let resp =
        tokio::time::timeout(CALL_LIMIT, http.get(format!("{base}/sse")).header("accept", "text/event-stream").send())
            .await
            .expect("GET /sse in time")
            .expect("GET /sse");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    loop {
        let chunk =
            tokio::time::timeout(CALL_LIMIT, body.next()).await.expect("endpoint event").expect("open").unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(at) = buf.find("messages?sessionId=") {
            let end = buf[at..].find('\n').map(|e| at + e).unwrap_or(buf.len());
            return (body, format!("{base}/{}", buf[at..end].trim()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sessions_leave_no_process_and_no_file_descriptor() {
    tokio::time::timeout(TEST_LIMIT, async {
        let bridge = BridgeProc::ready("exit-mid-call", &[]).await;
        let pid = bridge.pid();
        settle_processes(pid, 1, Duration::from_secs(5)).await;
        // The baseline once the fd count holds still (the spare's pipes are open by then).
        let mut baseline = open_fds(pid);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = open_fds(pid);
            if now == baseline || Instant::now() > deadline {
                break;
            }
            baseline = now;
        }

        for round in 0..3 {
            // Streamable HTTP sessions: one ended by DELETE, one by its child exiting mid-call.
            let a = Raw::initialize(&bridge.base).await;
            a.call(2, "echo", json!({"message": "a"})).await;
            assert_eq!(a.delete().await, 200);
            let b = Raw::initialize(&bridge.base).await;
            let reply = b.call(2, "crash", json!({})).await;
            assert!(reply["error"]["message"].as_str().unwrap().contains("exit code 42"), "{reply}");
            // Legacy SSE sessions: one ended by closing its stream, one by its child exiting.
            let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            for tool in ["echo", "crash"] {
                let (stream, post) = sse_session(&bridge.base, &http).await;
                let body = json!({"jsonrpc": "2.0", "id": round, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
                let r = tokio::time::timeout(CALL_LIMIT, http.post(&post).json(&body).send()).await.unwrap().unwrap();
                assert_eq!(r.status(), 202);
                // Close the stream once the call was answered on it (a result, or the error
                // of the child's exit).
                let mut stream = Box::pin(stream);
                let id = format!("\"id\":{round}");
                let answered = tokio::time::timeout(CALL_LIMIT, async {
                    let mut seen = String::new();
                    while let Some(Ok(chunk)) = stream.next().await {
                        // Python's json writes `"id": 0`; the bridge passes the bytes on as they are.
                        seen.push_str(&String::from_utf8_lossy(&chunk).replace(' ', ""));
                        if seen.contains(&id) {
                            return true;
                        }
                    }
                    false
                })
                .await;
                assert!(matches!(answered, Ok(true)), "the {tool} call was answered on the SSE stream");
                drop(stream);
            }
        }
        // Everything settles back: one spare process, and the fds of the start.
        let left = settle_processes(pid, 1, Duration::from_secs(10)).await;
        assert_eq!(left.len(), 1, "{:?}", cmdlines(&left));
        let deadline = Instant::now() + Duration::from_secs(10);
        while open_fds(pid) > baseline && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fds = open_fds(pid);
        assert!(fds <= baseline, "the bridge holds {fds} fds, {baseline} at the start");
        bridge.stop().await;
    })
    .await
    .expect("test finished in time");
}
