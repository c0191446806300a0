//! The meta server (`mcp-ephemeral serve`): start time and idle memory over stdio (raw
//! JSON-RPC, so nothing but the server is timed), create→ready of the `time` preset with a
//! cold uv cache, a warm one and a warm pool, and a stopped server's wake on request and
//! stop/start round trip (driven by rmcp's client).

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult},
    service::RunningService,
    transport::{StreamableHttpClientTransport, TokioChildProcess},
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    measure::{Spread, median, ms_since, sample_load, status_kb},
    procs::{Group, Proc},
    tools::Tools,
};

/// A figure that could be measured, was not measurable here, or failed.
pub enum Outcome<T> {
    Done(T),
    /// Why the figure does not exist (yet).
    NotAvailable(String),
    Failed(String),
}

impl<T> From<Result<T>> for Outcome<T> {
    fn from(r: Result<T>) -> Self {
        match r {
            Ok(v) => Outcome::Done(v),
            Err(e) => Outcome::Failed(format!("{e:#}")),
        }
    }
}

pub struct Start {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub n: usize,
}

pub struct Idle {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

/// create_mcp_server(preset=time, wait_for_ready=true) as the client sees it.
pub struct Create {
    /// Client-side time of the call, median.
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// The server's own `ready_after_ms`, median.
    pub ready_after_ms: f64,
    pub n: usize,
}

impl Create {
    /// Figures from client-side times and the servers' own `ready_after_ms`, one per create.
    fn from_samples(client: &[f64], server: &[f64]) -> Create {
        Create {
            median_ms: median(client),
            min_ms: client.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: client.iter().copied().fold(0.0, f64::max),
            ready_after_ms: median(server),
            n: client.len(),
        }
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"suite","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

/// `n` starts of `serve`, each timed from spawn to the answer to `initialize`.
pub async fn start_times(bin: &Path, tools: &Tools, n: usize) -> Result<Start> {
    let mut samples = Vec::new();
    for _ in 0..n {
        sample_load();
        let (mut proc, ms) = start_and_initialize(bin, tools).await?;
        samples.push(ms);
        proc.stop(Duration::from_secs(5)).await;
    }
    Ok(Start {
        median_ms: median(&samples),
        min_ms: samples.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: samples.iter().copied().fold(0.0, f64::max),
        n: samples.len(),
    })
}

/// VmRSS 2 s after initialize + tools/list, and VmHWM then.
pub async fn idle_memory(bin: &Path, tools: &Tools) -> Result<Idle> {
    let (mut proc, _) = start_and_initialize(bin, tools).await?;
    let result = async {
        let stdin = proc.child.stdin.as_mut().context("stdin")?;
        stdin.write_all(format!("{INITIALIZED}\n{TOOLS_LIST}\n").as_bytes()).await?;
        stdin.flush().await?;
        let stdout = proc.child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        read_answer(&mut lines, 2).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = proc.pid();
        Ok(Idle {
            rss_kb: status_kb(pid, "VmRSS").context("VmRSS")?,
            hwm_kb: status_kb(pid, "VmHWM").context("VmHWM")?,
        })
    }
    .await;
    proc.stop(Duration::from_secs(5)).await;
    result
}

async fn start_and_initialize(bin: &Path, tools: &Tools) -> Result<(Proc, f64)> {
    let mut cmd = Proc::logged_command(bin, &tools.root.join("logs/serve-start.log"))?;
    cmd.arg("serve").stdin(Stdio::piped()).stdout(Stdio::piped());
    let t0 = Instant::now();
    let mut proc = Proc::spawn("serve", cmd)?;
    let stdin = proc.child.stdin.as_mut().context("stdin")?;
    stdin.write_all(format!("{INITIALIZE}\n").as_bytes()).await?;
    stdin.flush().await?;
    let stdout = proc.child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    read_answer(&mut lines, 1).await?;
    let ms = ms_since(t0);
    proc.child.stdout = Some(lines.into_inner().into_inner());
    Ok((proc, ms))
}

/// Read stdout lines until the response with `id`.
async fn read_answer(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>, id: u64) -> Result<Value> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            if v["id"].as_u64() == Some(id) {
                if v.get("result").is_none() {
                    bail!("request {id} failed: {v}");
                }
                return Ok(v);
            }
        }
        bail!("serve closed stdout before answering request {id}")
    })
    .await
    .context("serve did not answer within 20 s")?
}

/// The meta server over stdio with an rmcp client.
pub struct Meta {
    client: RunningService<RoleClient, ()>,
    group: Group,
}

impl Meta {
    /// `serve EXTRA…` with `envs` added to its environment; its stderr goes to `logs/LOG`.
    pub async fn start(bin: &Path, tools: &Tools, extra: &[&str], envs: &[(&str, &Path)], log: &str) -> Result<Meta> {
        let log = std::fs::File::create(tools.root.join("logs").join(log))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("serve").args(extra).process_group(0);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some(dir) = &tools.uvx_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(dir.clone()).chain(std::env::split_paths(&path)))?;
            cmd.env("PATH", joined);
        }
        let (transport, _) = TokioChildProcess::builder(cmd).stderr(log).spawn().context("start serve")?;
        let group = Group::adopt(transport.id().context("serve pid")?);
        let client = ().serve(transport).await.context("initialize serve")?;
        Ok(Meta { client, group })
    }

    /// `serve --transport http EXTRA…` on a free loopback port, driven over streamable HTTP;
    /// its stderr goes to `logs/LOG`. Returns the meta server and its base URL.
    pub async fn start_http(bin: &Path, tools: &Tools, extra: &[&str], log: &str) -> Result<(Meta, String)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let base = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(tools.root.join("logs").join(log))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["serve", "--transport", "http", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        if let Some(dir) = &tools.uvx_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(dir.clone()).chain(std::env::split_paths(&path)))?;
            cmd.env("PATH", joined);
        }
        let child = cmd.spawn().context("start serve --transport http")?;
        let mut group = Group::adopt(child.id().context("serve pid")?);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                group.stop(Duration::from_secs(1)).await;
                bail!("serve --transport http did not answer /healthz within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let transport = StreamableHttpClientTransport::from_uri(format!("{base}/mcp"));
        let client = ().serve(transport).await.context("initialize serve over HTTP")?;
        Ok((Meta { client, group }, base))
    }

    pub async fn call(&self, tool: &str, args: Value) -> Result<Value> {
        let params =
            CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default());
        let res: CallToolResult = tokio::time::timeout(Duration::from_secs(300), self.client.call_tool(params))
            .await
            .with_context(|| format!("{tool}: no answer within 300 s"))??;
        if res.is_error == Some(true) {
            let text: Vec<String> = res.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
            bail!("{tool} failed: {}", text.join(" "));
        }
        res.structured_content.with_context(|| format!("{tool}: no structured content"))
    }

    /// create (time preset, wait_for_ready) → (client ms, server's ready_after_ms); then delete.
    pub async fn create_time(&self) -> Result<(f64, f64)> {
        sample_load();
        let t0 = Instant::now();
        let server = self.call("create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await?;
        let ms = ms_since(t0);
        let name = server["job_name"].as_str().context("job_name")?.to_string();
        let ready_after = server["ready_after_ms"].as_f64().unwrap_or(f64::NAN);
        self.call("delete_mcp_server", json!({"job_name": name, "wait_for_deletion": true})).await?;
        Ok((ms, ready_after))
    }

    /// Close stdin (the meta server then stops its servers and exits), then make sure.
    pub async fn stop(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(8), self.client.cancel()).await;
        self.group.stop(Duration::from_secs(2)).await;
    }
}

/// Repeated creates on one meta server, with `pause` before each.
async fn creates(meta: &Meta, n: usize, pause: Duration) -> Result<Create> {
    let (mut client, mut server) = (Vec::new(), Vec::new());
    for _ in 0..n {
        tokio::time::sleep(pause).await;
        let (c, s) = meta.create_time().await?;
        client.push(c);
        server.push(s);
    }
    Ok(Create::from_samples(&client, &server))
}

pub struct CreateFigures {
    pub cold: Outcome<Create>,
    pub warm: Outcome<Create>,
    pub pool: Outcome<Create>,
}

/// Cold (`cache`, a UV_CACHE_DIR emptied first), warm cache (the same dir, now filled) and warm
/// pool (`--warm-pool time=2`, when this build has the flag). The caller removes `cache`.
pub async fn create_figures(bin: &Path, tools: &Tools, n: usize, cache: &Path) -> CreateFigures {
    let _ = std::fs::remove_dir_all(cache);
    if let Err(e) = std::fs::create_dir_all(cache) {
        let f = || Outcome::Failed(format!("create {}: {e}", cache.display()));
        return CreateFigures { cold: f(), warm: f(), pool: f() };
    }
    let (cold, warm) = match Meta::start(bin, tools, &[], &[("UV_CACHE_DIR", cache)], "serve-create.log").await {
        Err(e) => (Outcome::Failed(format!("{e:#}")), Outcome::Failed("serve did not start".into())),
        Ok(meta) => {
            let cold = creates(&meta, 1, Duration::ZERO).await.and_then(|c| {
                // Proof that uvx used the empty cache (and so really downloaded).
                match std::fs::read_dir(cache).map(|mut d| d.next().is_some()) {
                    Ok(true) => Ok(c),
                    _ => bail!("UV_CACHE_DIR={} stayed empty: uvx did not use it", cache.display()),
                }
            });
            let warm = match &cold {
                Ok(_) => creates(&meta, n, Duration::from_millis(500)).await.into(),
                Err(_) => Outcome::Failed("the cold create failed".into()),
            };
            meta.stop().await;
            (cold.into(), warm)
        }
    };
    let pool = if !has_flag(bin, "--warm-pool") {
        Outcome::NotAvailable("`serve --help` lists no --warm-pool in this build".into())
    } else {
        warm_pool(bin, tools, n, cache).await.into()
    };
    CreateFigures { cold, warm, pool }
}

/// `serve --warm-pool time=2`: before each create, wait until the pool is full again (its state
/// is in `get_version`), then create and check that the server came from the pool.
async fn warm_pool(bin: &Path, tools: &Tools, n: usize, cache: &Path) -> Result<Create> {
    let meta =
        Meta::start(bin, tools, &["--warm-pool", "time=2"], &[("UV_CACHE_DIR", cache)], "serve-warm-pool.log").await?;
    let result = pool_creates(&meta, n).await;
    meta.stop().await;
    result
}

/// `n` creates of the `time` preset on a meta server with a `time` pool, each once the pool is
/// full again, each checked to have come from the pool.
pub async fn pool_creates(meta: &Meta, n: usize) -> Result<Create> {
    let (mut client, mut server) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let before = meta.wait_pool_full("time").await?;
        let (c, s) = meta.create_time().await?;
        let after = meta.pool("time").await?;
        if after["handed_out"].as_u64() != before["handed_out"].as_u64().map(|h| h + 1) {
            bail!("the created server did not come from the warm pool (pool before {before}, after {after})");
        }
        client.push(c);
        server.push(s);
    }
    Ok(Create::from_samples(&client, &server))
}

impl Meta {
    /// The `get_version` pool entry of `preset`.
    async fn pool(&self, preset: &str) -> Result<Value> {
        let v = self.call("get_version", json!({})).await?;
        v["pools"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["preset"] == preset))
            .cloned()
            .with_context(|| format!("get_version lists no pool for {preset}: {v}"))
    }

    /// Wait (up to 3 minutes) until every member of the pool is ready; the pool entry then.
    async fn wait_pool_full(&self, preset: &str) -> Result<Value> {
        let start = Instant::now();
        loop {
            let p = self.pool(preset).await?;
            if p["ready"].as_u64().is_some_and(|r| Some(r) == p["size"].as_u64()) {
                return Ok(p);
            }
            if start.elapsed() > Duration::from_secs(180) {
                bail!("the {preset} pool did not fill within 3 minutes: {p}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether `serve --help` lists `flag`.
pub fn has_flag(bin: &Path, flag: &str) -> bool {
    std::process::Command::new(bin).args(["serve", "--help"]).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).split(|c: char| c.is_whitespace() || c == ',').any(|w| w == flag)
    })
}

/// `stop_mcp_server`, then `start_mcp_server` with `wait_for_ready`, as the client sees them.
pub struct StopStart {
    pub stop: Spread,
    /// From the start call to its answer (the server Ready again).
    pub start: Spread,
    /// Stop and start together, each round trip.
    pub total: Spread,
}

/// A Stopped local server woken by a request to its URL, and the stop/start round trip.
pub struct Lifecycle {
    /// New session + the first `get_current_time` on a Stopped server's `urls.mcp`.
    pub wake: Spread,
    /// The same on the Ready server, its spare ready.
    pub ready: Spread,
    pub stop_start: StopStart,
}

/// A new MCP session on `url` (streamable HTTP) and one `get_current_time` in it: the
/// milliseconds from the `initialize` request to the call's answer.
pub async fn session_and_call(url: &str) -> Result<f64> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_string());
    let args = json!({"timezone": "UTC"}).as_object().cloned().unwrap_or_default();
    let t0 = Instant::now();
    let timed = tokio::time::timeout(Duration::from_secs(150), async {
        let client = ().serve(transport).await.with_context(|| format!("initialize a session on {url}"))?;
        let res = client.call_tool(CallToolRequestParams::new("get_current_time").with_arguments(args)).await;
        let ms = ms_since(t0);
        let _ = client.cancel().await;
        let res = res.context("get_current_time")?;
        if res.is_error == Some(true) || res.content.is_empty() {
            bail!("get_current_time failed: {res:?}");
        }
        Ok(ms)
    })
    .await;
    timed.with_context(|| format!("no session and answer on {url} within 150 s"))?
}

/// `n` round trips of `stop_mcp_server` then `start_mcp_server(wait_for_ready)` on `job`,
/// half a second apart.
pub async fn stop_start(meta: &Meta, job: &str, n: usize) -> Result<StopStart> {
    let (mut stops, mut starts, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sample_load();
        let t0 = Instant::now();
        let stopped = meta.call("stop_mcp_server", json!({"job_name": job})).await?;
        let stop = ms_since(t0);
        if stopped["phase"] != "Stopped" {
            bail!("stop_mcp_server answered {stopped}");
        }
        let t1 = Instant::now();
        let started = meta.call("start_mcp_server", json!({"job_name": job, "wait_for_ready": true})).await?;
        starts.push(ms_since(t1));
        if started["phase"] != "Ready" {
            bail!("start_mcp_server answered {started}");
        }
        stops.push(stop);
        totals.push(ms_since(t0));
    }
    Ok(StopStart { stop: Spread::of(&stops), start: Spread::of(&starts), total: Spread::of(&totals) })
}

/// On one `time` server, with `cache` as UV_CACHE_DIR (the warm cache of [`create_figures`];
/// the untimed create also fills it): `n` wakes, each 3 s after the last session (as an idle
/// server would be: the spare that session left has started) a `stop_mcp_server` and then a
/// new session + first call on its URL (the request starts it); `n` of the same on the Ready
/// server, 3 s apart so that its spare is ready; then, 3 s later, `n` stop/start round trips.
pub async fn lifecycle(bin: &Path, tools: &Tools, n: usize, cache: &Path) -> Result<Lifecycle> {
    std::fs::create_dir_all(cache)?;
    let meta = Meta::start(bin, tools, &[], &[("UV_CACHE_DIR", cache)], "serve-lifecycle.log").await?;
    let result = async {
        let server = meta.call("create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await?;
        let job = server["job_name"].as_str().context("job_name")?.to_string();
        let url = server["urls"]["mcp"].as_str().context("urls.mcp")?.to_string();
        session_and_call(&url).await.context("the Ready server")?;
        let mut wakes = Vec::new();
        for _ in 0..n {
            // A stop while a spare is still starting waits for its SIGTERM (0.8 s), and the
            // start after it was slower; an idle server's spare is long up.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let stopped = meta.call("stop_mcp_server", json!({"job_name": job})).await?;
            if stopped["phase"] != "Stopped" {
                bail!("stop_mcp_server answered {stopped}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            sample_load();
            wakes.push(session_and_call(&url).await.context("wake on request")?);
            let status = meta.call("get_mcp_server_status", json!({"job_name": job})).await?;
            if status["phase"] != "Ready" {
                bail!("after the wake: {status}");
            }
        }
        let mut ready = Vec::new();
        for _ in 0..n {
            tokio::time::sleep(Duration::from_secs(3)).await;
            sample_load();
            ready.push(session_and_call(&url).await.context("the Ready server")?);
        }
        // The last session took the spare and a new one is starting: let it finish, so that
        // the first stop finds the server as the others do.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stop_start = stop_start(&meta, &job, n).await?;
        meta.call("delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await?;
        Ok(Lifecycle { wake: Spread::of(&wakes), ready: Spread::of(&ready), stop_start })
    }
    .await;
    meta.stop().await;
    result
}
