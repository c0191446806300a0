//! The `mcp-ephemeral` binary: parses flags, sets up logging (always on stderr: in stdio mode
//! stdout carries only JSON-RPC), and wires the library together.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use mcp_ephemeral::{
    bridge::{Bridge, BridgeConfig, ChildCommand, Readiness, http::SessionLimits},
    cli::{self, BridgeArgs, Cli, Command, ImageTransportArg, RuntimeKind, ServeArgs, Transport},
    gateway::{self, Dialer},
    http_guard::Guard,
    mcp::MetaServer,
    presets::Presets,
    runtime::{
        Runtime,
        kubernetes::{KubernetesRuntime, UrlMode, client, manifests::JobSettings, portforward::PodDialer},
        local::{LocalConfig, LocalRuntime},
    },
    session::{Policy, SessionManager},
    spec::ImageTransport,
    transport,
};
use tokio_util::sync::CancellationToken;

/// How long shutdown may take before we give up waiting (children are SIGKILLed well before).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MCP_EPHEMERAL_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "mcp_ephemeral=info,rmcp=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Bridge(args) => bridge(args).await,
        Command::Presets { presets_dir, json } => {
            let presets = Presets::load(presets_dir.as_deref())?;
            let list: Vec<_> = presets.iter().map(|p| p.summary()).collect();
            let mut text = String::new();
            if json {
                text = serde_json::to_string_pretty(&list)? + "\n";
            } else {
                for p in list {
                    text += &format!("{:<20} {}\n{:<20} $ {}\n", p.name, p.description, "", p.command.join(" "));
                    if !p.required_env.is_empty() {
                        text += &format!("{:<20} needs: {}\n", "", p.required_env.join(", "));
                    }
                }
            }
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("{} {} ({})", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), env!("MCP_EPHEMERAL_GIT_COMMIT"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Cancel `stop` on SIGINT or SIGTERM.
fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        stop.cancel();
    });
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Err(problems) = args.check() {
        bail!("{problems}");
    }
    let presets = Presets::load(args.presets_dir.as_deref())?;
    // HTTP binds first: out of cluster its address is the gateway's, and URLs name it.
    let listener = match args.transport {
        Transport::Http => Some(
            tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?,
        ),
        Transport::Stdio => None,
    };
    let stop = CancellationToken::new();
    let mut gateway_routes = None;
    let runtime: Arc<dyn Runtime> = match args.runtime {
        RuntimeKind::Local => {
            Arc::new(LocalRuntime::new(LocalConfig { init_timeout: args.ready_timeout, ..Default::default() }))
        }
        RuntimeKind::Kubernetes => {
            let (runtime, routes) = kubernetes_runtime(&args, listener.as_ref(), &stop).await?;
            gateway_routes = routes;
            runtime
        }
    };
    let policy = Policy {
        default_ttl: args.default_ttl,
        max_ttl: args.max_ttl,
        max_servers: args.max_servers,
        ready_timeout: args.ready_timeout,
    };
    let mut pools: std::collections::BTreeMap<String, usize> =
        presets.iter().filter(|p| p.warm_pool > 0).map(|p| (p.name.clone(), p.warm_pool)).collect();
    pools.extend(args.warm_pools.iter().cloned());
    let manager = SessionManager::new(presets, runtime, policy);
    manager.start_pools(&pools).context("--warm-pool")?;
    let server = MetaServer::new(manager.clone());
    stop_on_signals(stop.clone());
    tracing::info!(runtime = manager.runtime().kind(), transport = ?args.transport, "mcp-ephemeral {} starting", env!("CARGO_PKG_VERSION"));
    let served = match args.transport {
        Transport::Stdio => transport::serve_stdio(server, stop.clone()).await.context("stdio transport"),
        Transport::Http => {
            let listener = listener.expect("bound above");
            let guard = Guard {
                allowed_hosts: cli::allowed_hosts(args.listen, &args.allowed_hosts),
                token: args.auth_token.clone().filter(|t| !t.is_empty()),
            };
            transport::serve_http(listener, server, guard, stop.clone(), gateway_routes).await.context("HTTP transport")
        }
    };
    stop.cancel();
    if tokio::time::timeout(SHUTDOWN_LIMIT, manager.shutdown()).await.is_err() {
        tracing::warn!("shutdown took longer than {}s", SHUTDOWN_LIMIT.as_secs());
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Connect to the cluster and decide how callers reach servers: Service DNS names in the
/// cluster; outside, the gateway (on the HTTP listener, or its own loopback listener). Returns
/// the gateway routes when they go on the HTTP listener.
async fn kubernetes_runtime(
    args: &ServeArgs,
    http: Option<&tokio::net::TcpListener>,
    stop: &CancellationToken,
) -> anyhow::Result<(Arc<dyn Runtime>, Option<axum::Router>)> {
    let kube = &args.kube;
    let conn = client::connect(kube.context.as_deref(), kube.namespace.as_deref()).await?;
    let mut settings = JobSettings::default();
    if let Some(image) = &kube.server_image {
        settings.server_image = image.clone();
    }
    settings.image_transport = match kube.image_transport {
        ImageTransportArg::Stdio => ImageTransport::Stdio,
        ImageTransportArg::Http => ImageTransport::Http,
    };
    settings.image_port = kube.image_port;
    settings.keep_finished_secs = kube.keep_finished.as_secs().min(i32::MAX as u64) as i32;
    tracing::info!(server = %conn.server, namespace = %conn.namespace, in_cluster = conn.in_cluster, "connected to Kubernetes");
    if conn.in_cluster && kube.gateway_listen.is_none() {
        let runtime = KubernetesRuntime::new(conn, settings, UrlMode::ServiceDns);
        return Ok((runtime, None));
    }
    let dialer: Arc<dyn Dialer> = Arc::new(PodDialer::new(conn.client.clone(), &conn.namespace));
    let routes = gateway::router(dialer);
    let (base, routes) = match (http, kube.gateway_listen) {
        (Some(listener), None) => (base_url(listener.local_addr()?), Some(routes)),
        (_, listen) => {
            let listen = listen.unwrap_or(([127, 0, 0, 1], 0).into());
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} for the gateway"))?;
            let base = base_url(listener.local_addr()?);
            let guard = Guard { allowed_hosts: cli::allowed_hosts(listen, &[]), token: None };
            let app = guard.apply(routes);
            let stopped = stop.clone();
            tracing::info!(%base, "gateway to spawned servers listening");
            tokio::spawn(async move {
                let serve = axum::serve(mcp_ephemeral::bridge::nodelay(listener), app);
                if let Err(e) = serve.with_graceful_shutdown(stopped.cancelled_owned()).await {
                    tracing::warn!(error = %e, "gateway listener ended");
                }
            });
            (base, None)
        }
    };
    Ok((KubernetesRuntime::new(conn, settings, UrlMode::Gateway(base)), routes))
}

/// `http://ADDR`, with an unspecified IP (0.0.0.0) replaced by loopback.
fn base_url(addr: std::net::SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { addr.ip() };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

async fn bridge(args: BridgeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = BridgeConfig::new(ChildCommand { argv: args.command.clone(), env: Vec::new() });
    cfg.init_timeout = args.init_timeout;
    cfg.spares = args.spares;
    cfg.limits = SessionLimits { max_sessions: args.max_sessions, idle_timeout: args.session_idle_timeout };
    cfg.echo_stderr = true;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bridge = Bridge::start(cfg);
    let guard = Guard { allowed_hosts: cli::allowed_hosts(args.listen, &args.allowed_hosts), token: None };
    let app = guard.apply(bridge.router());
    let stop = CancellationToken::new();
    stop_on_signals(stop.clone());
    tracing::info!(addr = %listener.local_addr()?, command = ?args.command, "bridge listening (/mcp, /sse)");
    let server = tokio::spawn(
        axum::serve(mcp_ephemeral::bridge::nodelay(listener), app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let mut code = ExitCode::SUCCESS;
    if !args.stay_on_failure {
        let mut readiness = bridge.subscribe();
        tokio::select! {
            _ = stop.cancelled() => {}
            r = readiness.wait_for(|r| matches!(r, Readiness::Failed(_))) => {
                if r.is_ok() {
                    // The failure was logged with its stderr tail; exiting lets a pod fail fast.
                    code = ExitCode::FAILURE;
                    stop.cancel();
                }
            }
        }
    }
    stop.cancelled().await;
    bridge.shutdown().await;
    let _ = tokio::time::timeout(SHUTDOWN_LIMIT, server).await;
    Ok(code)
}
