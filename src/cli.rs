//! Command-line flags, raw, as clap parses them. [`crate::config`] turns them into a checked
//! configuration (the second stage), reporting every problem at once.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::runtime::RuntimeKind;

#[derive(Debug, Parser)]
#[command(
    name = "mcp-ephemeral",
    version,
    about = "A meta-MCP server: spawn MCP servers on demand and hand back their URLs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the meta-MCP server (stdio by default).
    Serve(Box<ServeArgs>),
    /// Serve a stdio MCP server over streamable HTTP (/mcp) and legacy SSE (/sse).
    Bridge(BridgeArgs),
    /// Print the presets.
    Presets {
        /// Directory of extra or overriding preset files (*.toml).
        #[arg(long, env = "MCP_EPHEMERAL_PRESETS_DIR")]
        presets_dir: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the MCPServer and MCPPool CustomResourceDefinitions as YAML (`| kubectl apply -f -`).
    Crds {
        /// Write them as DIR/mcpservers.yaml and DIR/mcppools.yaml instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print the version and git commit.
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Stdio,
    Http,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// How clients reach the meta server.
    #[arg(long, value_enum, default_value = "stdio", env = "MCP_EPHEMERAL_TRANSPORT")]
    pub transport: Transport,
    /// Address for --transport http.
    #[arg(long, default_value = "127.0.0.1:8000", env = "MCP_EPHEMERAL_LISTEN")]
    pub listen: SocketAddr,
    /// The base URL clients reach this meta server at (`https://mcp.example.com`), for the
    /// servers' URLs through its gateway (`--transport http`); default: the listen address, with
    /// 0.0.0.0 shown as 127.0.0.1.
    #[arg(long, env = "MCP_EPHEMERAL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where servers run.
    #[arg(long, value_enum, default_value = "local", env = "MCP_EPHEMERAL_RUNTIME")]
    pub runtime: RuntimeKind,
    /// Directory of extra or overriding preset files (*.toml).
    #[arg(long, env = "MCP_EPHEMERAL_PRESETS_DIR")]
    pub presets_dir: Option<PathBuf>,
    /// How long a server lives when the request gives no ttl_seconds (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub default_ttl: Duration,
    /// The longest TTL a request may ask for.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub max_ttl: Duration,
    /// Most servers that exist at once (Stopped ones count).
    #[arg(long, default_value_t = 100)]
    pub max_servers: usize,
    /// Most servers of PRESET that are not Stopped at once (repeatable; also `max_active = N`
    /// in a preset file). A create or start beyond it fails, or waits with
    /// wait_for_capacity_seconds.
    #[arg(long = "max-active", value_name = "PRESET=N", value_parser = parse_max_active)]
    pub max_active: Vec<(String, usize)>,
    /// Stop servers after this long without MCP traffic unless the request or preset says
    /// otherwise (e.g. 10m; default: never). A request to a stopped server's URL starts it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub default_idle_timeout: Option<Duration>,
    /// How long a server may take to answer initialize (wait_for_ready waits this long).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// Bearer token HTTP clients must send (Authorization: Bearer TOKEN).
    #[arg(long, env = "MCP_EPHEMERAL_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Serve HTTP on a non-loopback address without a token (only behind your own auth).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Serve /metrics (Prometheus text) on a listener of its own, e.g. 127.0.0.1:9464 (with
    /// --transport stdio the only way to reach it); behind --auth-token when one is set.
    #[arg(long, value_name = "ADDR", env = "MCP_EPHEMERAL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// What the servers' own doors check: `token` puts a random capability token in every URL
    /// handed out (other paths are 404); `none` lets whoever reaches a server's port use it.
    #[arg(long, value_enum, default_value = "token")]
    pub server_auth: ServerAuthArg,
    /// Extra Host names HTTP clients may use (the listen address and loopback are always allowed).
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Pass the meta server's variable NAME on to local servers (repeatable). They get only
    /// PATH, HOME, USER, the locale, TMPDIR, TZ, proxy and CA settings, XDG_*, UV_* and
    /// npm_config_* otherwise (plus the preset's and request's env).
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Keep N servers of PRESET started ahead, so create_mcp_server hands one out at once
    /// (repeatable; also `warm_pool = N` in a preset file).
    #[arg(long = "warm-pool", value_name = "PRESET=N", value_parser = parse_pool)]
    pub warm_pools: Vec<(String, usize)>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

fn parse_pool(text: &str) -> Result<(String, usize), String> {
    let (preset, n) = text.split_once('=').ok_or_else(|| format!("`{text}` is not PRESET=N, e.g. time=2"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("`{n}` in `{text}` is not a number of servers"))?;
    if n > 32 {
        return Err(format!("{n} servers in a warm pool is too many; the limit is 32"));
    }
    Ok((preset.trim().to_string(), n))
}

fn parse_max_active(text: &str) -> Result<(String, usize), String> {
    let (preset, n) = text.split_once('=').ok_or_else(|| format!("`{text}` is not PRESET=N, e.g. time=2"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("`{n}` in `{text}` is not a number of servers"))?;
    if n == 0 {
        return Err(format!("`{text}`: a limit of 0 would refuse every server of the preset"));
    }
    Ok((preset.trim().to_string(), n))
}

/// Settings of `--runtime kubernetes`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kubernetes runtime")]
pub struct KubeArgs {
    /// Namespace for servers (default: the pod's namespace in a cluster, else the kubeconfig context's, else `default`).
    #[arg(long, env = "MCP_EPHEMERAL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, env = "MCP_EPHEMERAL_CONTEXT")]
    pub context: Option<String>,
    /// Image for preset and runtime_exec servers: one with mcp-ephemeral, uvx and npx (this project's image).
    #[arg(long, env = "MCP_EPHEMERAL_SERVER_IMAGE")]
    pub server_image: Option<String>,
    /// How `image` servers speak MCP unless a request says: stdio (behind the bridge) or http (on --image-port).
    #[arg(long, value_enum, default_value = "stdio")]
    pub image_transport: ImageTransportArg,
    /// The port http images listen on unless a request says.
    #[arg(long, default_value_t = 8080)]
    pub image_port: u16,
    /// Out of cluster: where the gateway to spawned servers listens (default: the HTTP transport's
    /// own listener, or an ephemeral port on 127.0.0.1 with stdio).
    #[arg(long)]
    pub gateway_listen: Option<SocketAddr>,
    /// How long a finished server's Job (and its logs) stays before Kubernetes deletes it.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub keep_finished: Duration,
    /// Give each server a NetworkPolicy: only the meta server's pods (mcp-ephemeral.dev/role=meta)
    /// and --client-selector pods may reach it, and `egress: "none"` holds. Needs a network plugin
    /// that enforces NetworkPolicy.
    #[arg(long, value_enum, default_value = "on", env = "MCP_EPHEMERAL_NETWORK_POLICY")]
    pub network_policy: Switch,
    /// The pods (in the servers' namespace) that may call servers besides the meta server's: a
    /// label selector such as `team=a,agent` (`k=v`, `k!=v`, `k`, `!k`).
    #[arg(long, env = "MCP_EPHEMERAL_CLIENT_SELECTOR",
          default_value = crate::runtime::kubernetes::network_policy::DEFAULT_CLIENT_SELECTOR)]
    pub client_selector: String,
    /// Reconcile MCPServer and MCPPool resources: `auto` when their CRDs are installed.
    #[arg(long, value_enum, default_value = "auto", env = "MCP_EPHEMERAL_CONTROLLER")]
    pub controller: ControllerArg,
    /// Elect one leader among the meta server's replicas with a Lease (`mcp-ephemeral-leader`)
    /// in the namespace: only the leader reaps TTLs, stops idle servers and keeps warm pools;
    /// every replica serves the tools. `off`: this process always leads (run one replica).
    #[arg(long, value_enum, default_value = "on", env = "MCP_EPHEMERAL_LEADER_ELECTION")]
    pub leader_election: Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControllerArg {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerAuthArg {
    Token,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageTransportArg {
    Stdio,
    Http,
}

#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "MCP_EPHEMERAL_BRIDGE_LISTEN")]
    pub listen: SocketAddr,
    /// How long the server may take to answer initialize.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub init_timeout: Duration,
    /// Most client sessions (each has its own server process).
    #[arg(long, default_value_t = 64)]
    pub max_sessions: usize,
    /// Close a session after this long without requests or open streams.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,
    /// Server processes kept started ahead of new sessions.
    #[arg(long, default_value_t = 1)]
    pub spares: usize,
    /// Keep serving (with /readyz false) when the server fails to start, instead of exiting 1.
    #[arg(long)]
    pub stay_on_failure: bool,
    /// Host names clients may use; default: any when listening on 0.0.0.0, else loopback only.
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Serve MCP only under `/<token>/…`, the token read from this environment variable (which
    /// the server's process does not inherit); `/healthz` and `/readyz` stay open.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
    /// The stdio MCP server: `-- CMD ARGS…`.
    #[arg(trailing_var_arg = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}
