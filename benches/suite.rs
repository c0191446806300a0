//! Benchmark suite: `cargo bench --bench suite` (see benches/README.md).
//!
//! Prepares its tools under `target/bench-tools/`, then measures `mcp-ephemeral bridge` against
//! direct stdio, mcp-proxy and supergateway, and the meta server (`serve`); prints a markdown
//! report and writes it into benches/README.md. Without `--bench` (as `cargo test --all-targets`
//! runs it) it prints one line and exits.

// The fake Kubernetes API server of the integration tests; its lints are checked there.
#[allow(clippy::all)]
#[path = "../tests/support/fake_kube/mod.rs"]
mod fake_kube;
#[path = "suite/gateway.rs"]
mod gateway;
#[path = "suite/kube.rs"]
mod kube;
#[path = "suite/measure.rs"]
mod measure;
#[path = "suite/meta.rs"]
mod meta;
#[path = "suite/peers.rs"]
mod peers;
#[path = "../tests/support/procfs.rs"]
mod procfs;
#[path = "suite/procs.rs"]
mod procs;
#[path = "suite/report.rs"]
mod report;
#[path = "suite/tools.rs"]
mod tools;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    measure::{Bench, load_range, load1, sample_load, status_kb, stdio_target},
    peers::{Bridge, Server, Transport},
    report::{CallRow, MetaResults, Report, STDIO, SessionRow},
};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-ephemeral");

/// Settings, from the environment (see benches/README.md).
struct Config {
    calls: usize,
    concurrency: usize,
    connects: usize,
    paced: usize,
    starts: usize,
    creates: usize,
    lists: usize,
    list_servers: usize,
    servers: Vec<String>,
    sections: Vec<String>,
}

impl Config {
    fn from_env() -> Result<Config> {
        let num = |name: &str, default: usize| -> Result<usize> {
            match std::env::var(name) {
                Ok(v) => {
                    v.trim().parse().ok().filter(|n| *n > 0).with_context(|| format!("{name}={v}: want a number > 0"))
                }
                Err(_) => Ok(default),
            }
        };
        let list = |name: &str, all: &[&str]| -> Result<Vec<String>> {
            let v = std::env::var(name).unwrap_or_else(|_| all.join(","));
            let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            if let Some(bad) = items.iter().find(|i| !all.contains(&i.as_str())) {
                bail!("{name}: unknown {bad:?} (choose from {})", all.join(", "));
            }
            Ok(items)
        };
        Ok(Config {
            calls: num("BENCH_CALLS", 1000)?,
            concurrency: num("BENCH_CONCURRENCY", 8)?,
            connects: num("BENCH_CONNECTS", 20)?,
            paced: num("BENCH_PACED", 10)?,
            starts: num("BENCH_STARTS", 20)?,
            creates: num("BENCH_CREATES", 5)?,
            lists: num("BENCH_LISTS", 20)?,
            list_servers: num("BENCH_LIST_SERVERS", 200)?,
            servers: list("BENCH_SERVERS", &["time", "everything"])?,
            sections: list("BENCH_SECTIONS", &["bridge", "meta", "kube", "declarative"])?,
        })
    }

    fn settings(&self) -> Vec<(String, String)> {
        vec![(
            "settings".into(),
            format!(
                "BENCH_CALLS={} per figure, C=1 and C={} sessions, BENCH_CONNECTS={} (burst), BENCH_PACED={}, \
                 BENCH_STARTS={}, BENCH_CREATES={}, BENCH_LISTS={} over BENCH_LIST_SERVERS={}",
                self.calls,
                self.concurrency,
                self.connects,
                self.paced,
                self.starts,
                self.creates,
                self.lists,
                self.list_servers
            ),
        )]
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("suite: benchmarks run only under `cargo bench --bench suite` (see benches/README.md); skipped");
        return;
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        procs::kill_all();
        default_hook(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        procs::kill_all_on_signal();
        run().await
    });
    procs::kill_all();
    if let Err(e) = result {
        eprintln!("suite: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = PathBuf::from(BIN);
    let cfg = Config::from_env()?;
    let tools = tools::prepare(repo)?;
    let results = tools.root.join("results.jsonl");
    let _ = std::fs::remove_file(&results);
    let bench = Bench { tools: &tools, results };

    wait_for_quiet().await?;
    let load_start = load1();
    if load_start > 0.5 {
        eprintln!(
            "suite: WARNING: 1-minute load average is {load_start:.2} before the run; figures from a busy machine \
             are not comparable. Repeat on a quiet machine."
        );
    }
    let mut report = Report {
        machine: report::machine(repo),
        settings: cfg.settings(),
        versions: tools.versions.clone(),
        ..Report::default()
    };

    if cfg.sections.iter().any(|s| s == "bridge") {
        for server in peers::servers(&tools) {
            let short = if server.name.contains("time") { "time" } else { "everything" };
            if cfg.servers.iter().any(|s| s == short) {
                bridge_section(&bench, &cfg, &bin, &server, &mut report).await;
            }
        }
    }
    if cfg.sections.iter().any(|s| s == "meta") {
        report.meta = Some(meta_section(&bench, &bin, &tools, &cfg).await);
    }
    if cfg.sections.iter().any(|s| s == "kube") {
        report.kube = Some(kube_section(&bench, &bin, &cfg).await);
    } else if cfg.sections.iter().any(|s| s == "declarative") {
        // Only the controller's figures (they are part of the kube section).
        fn skipped<T>() -> meta::Outcome<T> {
            meta::Outcome::NotAvailable("not run (BENCH_SECTIONS=declarative)".into())
        }
        let declarative = gateway::declarative(&bin, bench.tools, cfg.creates).await.into();
        report.kube = Some(report::KubeResults {
            gateway: skipped(),
            cold: skipped(),
            pool: skipped(),
            stop_start: skipped(),
            declarative,
        });
    }

    let load_end = load1();
    let (lo, hi) = load_range();
    let (lo, hi) = (lo.min(load_start).min(load_end), hi.max(load_start).max(load_end));
    report.machine.push((
        "load (1-min average)".into(),
        format!("{load_start:.2} at start, {load_end:.2} at end, {lo:.2}–{hi:.2} over the run"),
    ));
    if load_start > 0.5 || hi > 3.0 {
        report.notes.push(format!(
            "The 1-minute load average was {load_start:.2} at the start and reached {hi:.2} (the suite alone keeps \
             it near 1–2): something else was using the CPUs, so these figures are not final. Repeat on a quiet \
             machine."
        ));
    }
    report.notes.push(
        "mcp-proxy runs with `--log-level WARNING` and supergateway with `--logLevel none` (their defaults log \
         every request); supergateway is run as `node -r bind-localhost.cjs …/supergateway/dist/index.js` (it has \
         no --host flag, and npx would add a wrapper process to the measured pid). Streamable HTTP on \
         supergateway uses `--stateful` (one server per session, like mcp-ephemeral); its SSE mode and mcp-proxy \
         share one server process among all sessions."
            .into(),
    );

    report.notes.extend(observations(&report));
    let md = report.render();
    println!("{md}");
    std::fs::write(tools.root.join("results.md"), &md)?;
    report::write_readme(&repo.join("benches/README.md"), &md)?;
    eprintln!("suite: written to benches/README.md (and {})", tools.root.join("results.md").display());
    Ok(())
}

/// Remarks that follow from the figures themselves.
fn observations(report: &Report) -> Vec<String> {
    let mut notes = Vec::new();
    let ours: Vec<&SessionRow> = report.sessions.iter().filter(|r| r.target == report::OURS).collect();
    let anon = ours.iter().filter_map(|r| r.rss_idle_anon_kb).max();
    let file = ours.iter().filter_map(|r| r.rss_idle_file_kb).max();
    if let (Some(anon), Some(file)) = (anon, file)
        && file > anon
    {
        notes.push(format!(
            "Most of mcp-ephemeral's bridge RSS is its own program file mapped in ({:.1} MiB file-backed against \
             {:.1} MiB anonymous when idle): the binary also carries the meta server and the Kubernetes client.",
            file as f64 / 1024.0,
            anon as f64 / 1024.0
        ));
    }
    if report.calls.iter().any(|r| r.fig.as_ref().is_ok_and(|c| c.strays > 0)) {
        notes.push(
            "\"responses sent to the wrong session\": in SSE mode supergateway sends every response to every \
             open SSE session (mcpbench ignores the ones it did not ask for, and counts them)."
                .into(),
        );
    }
    notes
}

/// With `BENCH_WAIT_QUIET=SECONDS`: wait up to that long for the 1-minute load average to drop
/// below 0.5 before measuring.
async fn wait_for_quiet() -> Result<()> {
    let Ok(v) = std::env::var("BENCH_WAIT_QUIET") else { return Ok(()) };
    let limit: u64 = v.trim().parse().with_context(|| format!("BENCH_WAIT_QUIET={v}: want seconds"))?;
    let start = std::time::Instant::now();
    while load1() >= 0.5 && start.elapsed().as_secs() < limit {
        eprintln!("suite: waiting for a quiet machine (1-minute load {:.2})", load1());
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
    Ok(())
}

/// Direct stdio, then each bridge on each transport, on one server.
async fn bridge_section(bench: &Bench<'_>, cfg: &Config, bin: &Path, server: &Server, report: &mut Report) {
    eprintln!("suite: == {} ==", server.name);
    let direct = stdio_target(&server.argv);
    let label = |parts: &[&str]| format!("{}/{}", server.name, parts.join("/"));
    for c in [1, cfg.concurrency] {
        let fig =
            bench.calls(&label(&["stdio", &format!("c{c}")]), &direct, server.tool, server.args, cfg.calls, c).await;
        report.calls.push(CallRow {
            server: server.name,
            target: STDIO,
            transport: "stdio",
            concurrency: c,
            fig: fig.map_err(|e| format!("{e:#}")),
        });
    }
    let direct_connect = bench.connects(&label(&["stdio", "connect"]), &direct, cfg.connects).await;
    // Long enough for a bridge to have a spare server started again: twice a direct start.
    let pause = match &direct_connect {
        Ok(c) if c.p50_us.is_finite() => Duration::from_secs_f64((2.0 * c.p50_us / 1e6).max(1.0)),
        _ => Duration::from_secs(3),
    };
    report.sessions.push(SessionRow {
        server: server.name,
        target: STDIO,
        transport: "stdio",
        rss_idle_kb: None,
        rss_idle_anon_kb: None,
        rss_idle_file_kb: None,
        hwm_kb: None,
        paced: Err("n/a (a new process each time: see burst)".into()),
        burst: direct_connect.map_err(|e| format!("{e:#}")),
    });

    for bridge in Bridge::ALL {
        for transport in Transport::ALL {
            eprintln!("suite: {} via {} ({})", server.name, bridge.name(), transport.name());
            let mut row = SessionRow {
                server: server.name,
                target: bridge.name(),
                transport: transport.name(),
                rss_idle_kb: None,
                rss_idle_anon_kb: None,
                rss_idle_file_kb: None,
                hwm_kb: None,
                paced: Err("not run".into()),
                burst: Err("not run".into()),
            };
            let running = match peers::start(bin, bench.tools, bridge, transport, server).await {
                Ok(r) => r,
                Err(e) => {
                    let e = format!("{e:#}");
                    eprintln!("suite: {e}");
                    for c in [1, cfg.concurrency] {
                        report.calls.push(CallRow {
                            server: server.name,
                            target: bridge.name(),
                            transport: transport.name(),
                            concurrency: c,
                            fig: Err(e.clone()),
                        });
                    }
                    row.paced = Err(e.clone());
                    row.burst = Err(e);
                    report.sessions.push(row);
                    continue;
                }
            };
            // Let start-up work (spares, imports, JIT) settle before the idle snapshot.
            tokio::time::sleep(Duration::from_secs(2)).await;
            sample_load();
            row.rss_idle_kb = status_kb(running.pid(), "VmRSS");
            row.rss_idle_anon_kb = status_kb(running.pid(), "RssAnon");
            row.rss_idle_file_kb = status_kb(running.pid(), "RssFile");
            let target = vec![transport.flag().to_string(), running.url.clone()];
            let name = format!("{}-{}", bridge.name(), transport.name());
            for c in [1, cfg.concurrency] {
                let fig = bench
                    .calls(&label(&[&name, &format!("c{c}")]), &target, server.tool, server.args, cfg.calls, c)
                    .await;
                report.calls.push(CallRow {
                    server: server.name,
                    target: bridge.name(),
                    transport: transport.name(),
                    concurrency: c,
                    fig: fig.map_err(|e| format!("{e:#}")),
                });
            }
            row.paced = bench
                .paced_connects(&label(&[&name, "paced"]), &target, cfg.paced, pause)
                .await
                .map_err(|e| format!("{e:#}"));
            row.burst =
                bench.connects(&label(&[&name, "burst"]), &target, cfg.connects).await.map_err(|e| format!("{e:#}"));
            row.hwm_kb = status_kb(running.pid(), "VmHWM");
            if row.hwm_kb.is_none() {
                row.burst = Err(format!("{} died during the runs; log: {}", bridge.name(), running.log.display()));
            }
            report.sessions.push(row);
            running.stop().await;
        }
    }
    // Keep the table order: per C, stdio then each transport's bridges.
    let order = |r: &CallRow| {
        let t = match r.transport {
            "stdio" => 0,
            "HTTP" => 1,
            _ => 2,
        };
        let b = Bridge::ALL.iter().position(|b| b.name() == r.target).map_or(0, |p| p + 1);
        (r.concurrency, t, b)
    };
    let first = report.calls.iter().position(|r| r.server == server.name).unwrap_or(0);
    report.calls[first..].sort_by_key(order);
}

async fn meta_section(bench: &Bench<'_>, bin: &Path, tools: &tools::Tools, cfg: &Config) -> MetaResults {
    eprintln!("suite: == meta server ==");
    let start = meta::start_times(bin, tools, cfg.starts).await.into();
    let idle = meta::idle_memory(bin, tools).await.into();
    eprintln!("suite: create→ready (cold uv cache first: downloads mcp-server-time from PyPI)");
    // The cold create fills it; the warm figures and the lifecycle share it.
    let cache = tools.root.join("uv-cache-bench");
    let creates = meta::create_figures(bin, tools, cfg.creates, &cache).await;
    eprintln!("suite: wake on request and stop/start round trips (local), n={}", cfg.creates);
    let lifecycle = meta::lifecycle(bin, tools, cfg.creates, &cache).await.into();
    let _ = std::fs::remove_dir_all(&cache);
    eprintln!("suite: list_mcp_servers with {} servers on the fake Kubernetes API", cfg.list_servers);
    let list = kube::list_servers(bin, tools, cfg.list_servers, cfg.lists).await.into();
    eprintln!("suite: a local server directly and through the HTTP meta server's gateway, {} calls", cfg.calls);
    let local_gateway = gateway::local_gateway_figures(bench, bin, cfg.calls, cfg.concurrency, cfg.paced).await.into();
    MetaResults { start, idle, creates, lifecycle, list, local_gateway }
}

/// The Kubernetes runtime on the fake API server with its process kubelet.
async fn kube_section(bench: &Bench<'_>, bin: &Path, cfg: &Config) -> report::KubeResults {
    eprintln!("suite: == Kubernetes runtime (fake API server, process kubelet) ==");
    eprintln!("suite: gateway against direct, {} calls", cfg.calls);
    let gateway = gateway::gateway_figures(bench, bin, cfg.calls, cfg.concurrency, cfg.paced).await.into();
    eprintln!("suite: cold create steps, n={}", cfg.creates);
    let cold = gateway::cold_start(bin, bench.tools, cfg.creates).await.into();
    eprintln!("suite: warm-pool hand-out on the fake");
    let pool = gateway::pool_hand_out(bin, bench.tools, cfg.creates).await.into();
    eprintln!("suite: stop/start round trips on the fake, n={}", cfg.creates);
    let stop_start = gateway::stop_start(bin, bench.tools, cfg.creates).await.into();
    eprintln!("suite: MCPServer applied → Ready on the fake (cold, and from a warm member), n={}", cfg.creates);
    let declarative = gateway::declarative(bin, bench.tools, cfg.creates).await.into();
    report::KubeResults { gateway, cold, pool, stop_start, declarative }
}
