//! The bridges under test and how to start and stop them: `mcp-ephemeral bridge`, `mcp-proxy`
//! (Python) and `supergateway` (Node), each in a fresh process per (server, transport), on a
//! free port of 127.0.0.1, with its output in `target/bench-tools/logs/`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{procs::Proc, tools::Tools};

/// How long a bridge may take to become ready.
const START_LIMIT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bridge {
    Ephemeral,
    McpProxy,
    Supergateway,
}

impl Bridge {
    pub const ALL: [Bridge; 3] = [Bridge::Ephemeral, Bridge::McpProxy, Bridge::Supergateway];

    pub fn name(self) -> &'static str {
        match self {
            Bridge::Ephemeral => "mcp-ephemeral",
            Bridge::McpProxy => "mcp-proxy",
            Bridge::Supergateway => "supergateway",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Sse,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Http, Transport::Sse];

    /// As shown in the report.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http => "HTTP",
            Transport::Sse => "SSE",
        }
    }

    /// mcpbench's flag for this transport.
    pub fn flag(self) -> &'static str {
        match self {
            Transport::Http => "--http",
            Transport::Sse => "--sse",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Transport::Http => "/mcp",
            Transport::Sse => "/sse",
        }
    }
}

/// A stdio MCP server and the call made on it.
pub struct Server {
    pub name: &'static str,
    pub argv: Vec<String>,
    pub tool: &'static str,
    pub args: &'static str,
}

pub fn servers(tools: &Tools) -> Vec<Server> {
    let path = |p: &Path| p.display().to_string();
    vec![
        Server {
            name: "mcp-server-time",
            argv: vec![path(&tools.time_server)],
            tool: "get_current_time",
            args: r#"{"timezone":"UTC"}"#,
        },
        Server {
            name: "server-everything",
            argv: vec![path(&tools.node), path(&tools.everything_js), "stdio".into()],
            tool: "echo",
            args: r#"{"message":"hi"}"#,
        },
    ]
}

/// A bridge serving one server on one transport.
pub struct Running {
    pub proc: Proc,
    pub url: String,
    pub log: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGTERM, then SIGKILL to its process group and anything left below it.
    pub async fn stop(mut self) {
        self.proc.stop(Duration::from_secs(3)).await;
    }
}

pub async fn start(
    bin: &Path,
    tools: &Tools,
    bridge: Bridge,
    transport: Transport,
    server: &Server,
) -> Result<Running> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let log = tools.root.join("logs").join(format!("{}-{}-{}.log", server.name, bridge.name(), transport.name()));
    std::fs::write(&log, "")?;
    let (cmd, ready_path) = match bridge {
        Bridge::Ephemeral => {
            let mut cmd = Proc::logged_command(bin, &log)?;
            cmd.args(["bridge", "--listen", &format!("127.0.0.1:{port}"), "--"]).args(&server.argv);
            (cmd, Some("/readyz"))
        }
        Bridge::McpProxy => {
            // Per-request logging down to warnings, like the others (its default logs every request).
            let mut cmd = Proc::logged_command(&tools.mcp_proxy, &log)?;
            cmd.args(["--port", &port.to_string(), "--host", "127.0.0.1", "--log-level", "WARNING", "--"])
                .args(&server.argv);
            (cmd, None)
        }
        Bridge::Supergateway => {
            let mut cmd = Proc::logged_command(&tools.node, &log)?;
            let output = match transport {
                Transport::Http => ["--outputTransport", "streamableHttp", "--stateful"].as_slice(),
                Transport::Sse => ["--outputTransport", "sse"].as_slice(),
            };
            cmd.arg("-r")
                .arg(&tools.preload)
                .arg(&tools.supergateway_js)
                .args(["--stdio", &shell_words::join(&server.argv), "--port", &port.to_string()])
                .args(output)
                .args(["--logLevel", "none", "--healthEndpoint", "/healthz"]);
            (cmd, Some("/healthz"))
        }
    };
    let mut proc = Proc::spawn(bridge.name(), cmd)?;
    let start = Instant::now();
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!("{} exited ({status}) before it was ready; log: {}\n{}", bridge.name(), log.display(), tail(&log));
        }
        let ready = match ready_path {
            Some(p) => http.get(format!("{base}{p}")).send().await.is_ok_and(|r| r.status().is_success()),
            None => tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok(),
        };
        if ready {
            break;
        }
        if start.elapsed() > START_LIMIT {
            proc.stop(Duration::from_secs(1)).await;
            bail!("{} not ready after {:?}; log: {}\n{}", bridge.name(), START_LIMIT, log.display(), tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Running { proc, url: format!("{base}{}", transport.path()), log })
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The last lines of a log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
