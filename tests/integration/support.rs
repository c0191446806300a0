//! Shared helpers: start the real `mcp-ephemeral` binary (stdio or HTTP), connect rmcp clients
//! over streamable HTTP and legacy SSE, call tools, and inspect this machine's processes.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientJsonRpcMessage, ServerJsonRpcMessage},
    service::{NotificationContext, RunningService},
    transport::{StreamableHttpClientTransport, TokioChildProcess},
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::watch,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-ephemeral");
/// Upper bound for any one test; nothing may hang.
pub const TEST_LIMIT: Duration = Duration::from_secs(240);

/// Run a test body, failing it (instead of hanging CI) when it takes longer than `limit`.
pub async fn within<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f).await.expect("the test finished within its time limit")
}

/// A client handler that counts `notifications/tools/list_changed`.
#[derive(Clone)]
pub struct Recorder {
    changes: Arc<watch::Sender<usize>>,
    /// Messages of the `notifications/progress` received.
    pub progress: Arc<std::sync::Mutex<Vec<String>>>,
    /// Bumped with every progress notification.
    progress_seen: Arc<watch::Sender<usize>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            changes: Arc::new(watch::channel(0).0),
            progress: Arc::default(),
            progress_seen: Arc::new(watch::channel(0).0),
        }
    }
}

impl Recorder {
    pub fn tool_list_changes(&self) -> usize {
        *self.changes.borrow()
    }

    /// Wait until at least `n` notifications arrived.
    pub async fn wait_for_changes(&self, n: usize) {
        let mut rx = self.changes.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n))
            .await
            .expect("tools/list_changed notification within 10 s")
            .expect("recorder alive");
    }

    /// Wait (at most 5 s) until a progress message containing `text` arrived; the messages.
    pub async fn wait_for_progress(&self, text: &str) -> Vec<String> {
        let mut rx = self.progress_seen.subscribe();
        let arrived = |p: &Recorder| p.progress.lock().unwrap().iter().any(|m| m.contains(text));
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !arrived(self) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.progress.lock().unwrap().clone()
    }
}

impl ClientHandler for Recorder {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changes.send_modify(|c| *c += 1);
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params.message.unwrap_or_default());
        self.progress_seen.send_modify(|n| *n += 1);
    }
}

pub type Client = RunningService<RoleClient, Recorder>;

/// The meta server on stdio, with its pid.
pub async fn meta_stdio(extra: &[&str]) -> (Client, u32) {
    meta_stdio_with_env(extra, &[]).await
}

/// [`meta_stdio`] with extra environment variables for the meta server.
pub async fn meta_stdio_with_env(extra: &[&str], env: &[(&str, &str)]) -> (Client, u32) {
    become_subreaper();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("serve").args(extra).envs(env.iter().copied()).env("MCP_EPHEMERAL_LOG", "mcp_ephemeral=debug");
    let (transport, stderr) = TokioChildProcess::builder(cmd).stderr(Stdio::piped()).spawn().expect("spawn meta");
    let pid = transport.id().expect("meta pid");
    if let Some(stderr) = stderr {
        drain("meta-stdio", stderr);
    }
    let client = Recorder::default().serve(transport).await.expect("initialize the meta server over stdio");
    (client, pid)
}

/// Every stderr line of a process, kept for asserts.
pub type Logs = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Start `cmd` as a meta server on stdio; its stderr is echoed under `tag` and kept.
pub async fn meta_stdio_kept(mut cmd: tokio::process::Command, tag: &'static str) -> (Client, Logs) {
    become_subreaper();
    cmd.env("MCP_EPHEMERAL_LOG", "mcp_ephemeral=debug");
    let (transport, stderr) = TokioChildProcess::builder(cmd).stderr(Stdio::piped()).spawn().expect("spawn meta");
    let logs = Logs::default();
    let kept = logs.clone();
    let stderr = stderr.expect("stderr");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{tag}] {line}");
            kept.lock().unwrap().push(line);
        }
    });
    let client = Recorder::default().serve(transport).await.expect("initialize the meta server");
    (client, logs)
}

/// A meta server on HTTP: the process and its `/mcp` URL.
pub struct HttpMeta {
    pub child: tokio::process::Child,
    pub base: String,
}

impl HttpMeta {
    pub async fn start(extra: &[&str]) -> HttpMeta {
        HttpMeta::start_with_env(extra, &[]).await
    }

    /// Like `start`, with extra environment variables for the meta server.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> HttpMeta {
        become_subreaper();
        let mut child = tokio::process::Command::new(BIN)
            .args(["serve", "--transport", "http", "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("MCP_EPHEMERAL_LOG", "mcp_ephemeral=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn meta over http");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let base = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                eprintln!("[meta-http] {line}");
                if let Some(at) = line.find("serving MCP at http://") {
                    let url = &line[at + "serving MCP at ".len()..];
                    return url.split("/mcp").next().expect("url").to_string();
                }
            }
            panic!("meta server exited before listening");
        })
        .await
        .expect("meta server listens within 20 s");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[meta-http] {line}");
            }
        });
        HttpMeta { child, base }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

fn drain(tag: &'static str, stderr: tokio::process::ChildStderr) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{tag}] {line}");
        }
    });
}

/// A streamable HTTP client that sends `Authorization: Bearer <token>`.
pub async fn connect_http_bearer(url: &str, token: &str) -> Client {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(token.to_string());
    Recorder::default()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

pub async fn connect_http(url: &str) -> Client {
    Recorder::default()
        .serve(StreamableHttpClientTransport::from_uri(url.to_string()))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// A legacy SSE (2024-11-05) client: GET the stream, POST to the `endpoint` it names.
pub async fn connect_sse(url: &str) -> Client {
    let http = reqwest::Client::new();
    let resp = http
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let (tx, rx) = futures::channel::mpsc::unbounded::<ServerJsonRpcMessage>();
    let mut endpoint = None;
    while endpoint.is_none() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("endpoint event within 10 s")
            .expect("stream open")
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        for (event, data) in take_events(&mut buf) {
            if event == "endpoint" {
                endpoint = Some(data);
            }
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for (event, data) in take_events(&mut buf) {
                if event == "message" {
                    let msg: ServerJsonRpcMessage = serde_json::from_str(&data).expect("server message");
                    if tx.unbounded_send(msg).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let endpoint = endpoint.expect("endpoint");
    let post_url = if endpoint.starts_with("http") {
        endpoint
    } else if endpoint.starts_with('/') {
        let origin: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        format!("{origin}{endpoint}")
    } else {
        format!("{}/{endpoint}", url.rsplit_once('/').expect("url has a path").0)
    };
    let sink = futures::sink::unfold((http, post_url), |(http, post_url), msg: ClientJsonRpcMessage| async move {
        let status = http.post(&post_url).json(&msg).send().await.map_err(std::io::Error::other)?.status();
        if !status.is_success() {
            return Err(std::io::Error::other(format!("POST {post_url}: {status}")));
        }
        Ok((http, post_url))
    });
    Recorder::default().serve((Box::pin(sink), rx)).await.unwrap_or_else(|e| panic!("initialize over SSE {url}: {e}"))
}

/// Split complete SSE events off `buf`: (event name, data).
fn take_events(buf: &mut String) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let raw: String = buf.drain(..end + 2).collect();
        let (mut event, mut data) = ("message".to_string(), String::new());
        for line in raw.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            out.push((event, data));
        }
    }
    out
}

/// Call a tool; returns the whole result (tool errors included).
pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let params =
        CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default());
    tokio::time::timeout(Duration::from_secs(150), client.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{tool} answered within 150 s"))
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// Call a tool that must succeed; returns its structured content.
pub async fn call_ok(client: &Client, tool: &str, args: Value) -> Value {
    let res = call(client, tool, args).await;
    assert_ne!(res.is_error, Some(true), "{tool} failed: {}", text(&res));
    res.structured_content.clone().unwrap_or_else(|| panic!("{tool} gave no structured content: {res:?}"))
}

/// Call a tool that must fail; returns its message.
pub async fn call_err(client: &Client, tool: &str, args: Value) -> String {
    let res = call(client, tool, args.clone()).await;
    assert_eq!(res.is_error, Some(true), "{tool}({args}) should fail, got {}", text(&res));
    text(&res)
}

pub fn text(res: &CallToolResult) -> String {
    res.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

pub use crate::procfs::{Seen, alive, become_subreaper, descendants, snapshot};

/// Wait until none of `processes` runs; returns those still running after `limit`. A process
/// is matched by pid and start time, so it is found wherever it was re-parented.
pub async fn wait_gone(processes: &[Seen], limit: Duration) -> Vec<Seen> {
    let start = Instant::now();
    loop {
        let left: Vec<Seen> = processes.iter().copied().filter(Seen::alive).collect();
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The command lines of `processes`, for failure messages.
pub fn cmdlines(processes: &[Seen]) -> Vec<String> {
    processes.iter().map(|p| cmdline(p.pid)).collect()
}

/// Every process that appears below `pid` while it is watched, sampled every 20 ms: the
/// processes of a server that start and end between two looks at the tree are caught too.
pub struct TreeWatch {
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl TreeWatch {
    pub fn start(pid: u32) -> TreeWatch {
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let (kept, stopped) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let now = snapshot(pid);
                {
                    let mut seen = kept.lock().unwrap();
                    for p in now {
                        if !seen.contains(&p) {
                            seen.push(p);
                        }
                    }
                }
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        });
        TreeWatch { seen, stop }
    }

    /// Everything seen so far (and one more look now).
    pub fn seen(&self) -> Vec<Seen> {
        let mut seen = self.seen.lock().unwrap().clone();
        for p in snapshot_of_watched(&seen) {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen
    }
}

/// The processes below any of `seen` now (children started since the last sample).
fn snapshot_of_watched(seen: &[Seen]) -> Vec<Seen> {
    seen.iter().flat_map(|p| snapshot(p.pid)).collect()
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The address in a `mcp-ephemeral bridge` "listening" log line. Bridges in tests listen on
/// port 0 and report the port they got, so no test races another for a free port.
pub fn bridge_listen_addr(line: &str) -> Option<String> {
    if !line.contains("bridge listening") {
        return None;
    }
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr="))?;
    Some(addr.trim_matches('"').to_string())
}

/// The command line of a process, for failure messages.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}
