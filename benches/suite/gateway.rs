//! `serve --runtime kubernetes` against the fake API server with its process kubelet (the pods'
//! containers are real processes: the built bridge and `uvx mcp-server-time`): tools/call and
//! new-session cost through the gateway's pooled port-forward tunnels, next to the same bridge
//! reached directly at its pod address; where the time of a cold create goes, step by step,
//! with a modelled kubelet; and a stop (the Job suspended, its pod gone) and start (resumed, Ready
//! again) of one server, with the same kubelet.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use k8s_openapi::{
    api::batch::v1::Job, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};

use crate::{
    fake_kube::{Delays, FakeConfig, FakeKube, Programs},
    measure::{Bench, Calls, Connect, Spread, median, ms_since, sample_load},
    meta::{Create, Meta, Outcome, StopStart},
    tools::Tools,
};

const NAMESPACE: &str = "mcp-bench";

/// The modelled kubelet of the cold-create figures: scheduling, then image present + container
/// created and started (a busybox Job reaches Ready in ~0.6 s on a real single node), and the
/// kubelet's status sync after a probe's verdict.
pub fn modelled_kubelet() -> Delays {
    Delays {
        schedule: Duration::from_millis(50),
        start: Duration::from_millis(300),
        probe_lag: Duration::from_millis(300),
        ..Delays::default()
    }
}

/// One route to the bridge: calls with one session and with `concurrency`, new sessions.
pub struct Route {
    pub c1: Outcome<Calls>,
    pub cn: Outcome<Calls>,
    pub session: Outcome<Connect>,
}

pub struct GatewayFigures {
    pub concurrency: usize,
    pub direct: Route,
    pub gateway: Route,
    /// Port-forward tunnels the fake opened while the gateway's figures were taken.
    pub tunnels: usize,
    pub calls: usize,
    pub sessions: usize,
}

/// The cold create → ready steps: per step, the median milliseconds since the create began.
pub struct ColdStart {
    pub n: usize,
    pub kubelet: String,
    pub steps: Vec<(String, f64)>,
    /// The client's own time for create(wait_for_ready), median.
    pub total_ms: f64,
}

/// Creates served from `--warm-pool time=2` on the fake.
pub async fn pool_hand_out(bin: &Path, tools: &Tools, n: usize) -> Result<Create> {
    let c = Cluster::start(bin, tools, modelled_kubelet(), &["--warm-pool", "time=2"], "serve-kube-pool.log").await?;
    let result = crate::meta::pool_creates(&c.meta, n).await;
    c.stop().await;
    result
}

/// `n` round trips of `stop_mcp_server` then `start_mcp_server(wait_for_ready)` on one `time`
/// server (created untimed first, which also warms the uv cache) with the [`modelled_kubelet`];
/// afterwards one call through the gateway checks that the started server answers.
pub async fn stop_start(bin: &Path, tools: &Tools, n: usize) -> Result<StopStart> {
    let c = Cluster::start(bin, tools, modelled_kubelet(), &[], "serve-kube-stop-start.log").await?;
    let result = async {
        let (job, server) = create(&c.meta).await?;
        let figures = crate::meta::stop_start(&c.meta, &job, n).await?;
        let url = server["urls"]["mcp"].as_str().context("urls.mcp")?;
        crate::meta::session_and_call(url).await.context("a call through the gateway after the starts")?;
        delete(&c.meta, &job).await?;
        Ok(figures)
    }
    .await;
    c.stop().await;
    result
}

/// A fake cluster whose kubelet runs the pods' containers, and a meta server on it.
struct Cluster {
    fake: FakeKube,
    meta: Meta,
}

impl Cluster {
    async fn start(bin: &Path, tools: &Tools, delays: Delays, extra: &[&str], log: &str) -> Result<Cluster> {
        Cluster::start_with(bin, tools, delays, extra, log, false).await
    }

    /// With `crds`, the MCPServer/MCPPool CRDs are registered before the meta server starts
    /// (so its controller runs).
    async fn start_with(
        bin: &Path,
        tools: &Tools,
        delays: Delays,
        extra: &[&str],
        log: &str,
        crds: bool,
    ) -> Result<Cluster> {
        let mut programs = Programs::new().program("mcp-ephemeral", bin).program("/usr/local/bin/mcp-ephemeral", bin);
        if let Some(dir) = &tools.uvx_dir {
            programs = programs.program("uvx", dir.join("uvx"));
        }
        let fake = FakeKube::start(FakeConfig::new(NAMESPACE).delays(delays).processes(programs)).await;
        if crds {
            let api: kube::Api<CustomResourceDefinition> = kube::Api::all(fake.client(NAMESPACE));
            for crd in mcp_ephemeral::runtime::kubernetes::crd::definitions() {
                api.create(&kube::api::PostParams::default(), &crd).await.context("register a CRD")?;
            }
        }
        let dir = tools.root.join("fake-kube-gateway");
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = fake.write_kubeconfig(&dir, NAMESPACE);
        let mut args = vec!["--runtime", "kubernetes", "--namespace", NAMESPACE, "--ready-timeout", "60s"];
        args.extend_from_slice(extra);
        let meta = Meta::start(bin, tools, &args, &[("KUBECONFIG", &kubeconfig)], log).await?;
        Ok(Cluster { fake, meta })
    }

    async fn stop(self) {
        self.meta.stop().await;
        drop(self.fake);
    }

    /// The bridge of `job` at its pod address (the process kubelet maps the pod's port to a
    /// port of its own loopback IP), under the capability token of its handed-out URL.
    fn direct_url(&self, job: &str, handed_out: &str) -> Result<String> {
        let process = self
            .fake
            .started_processes()
            .into_iter()
            .find(|p| p.pod.starts_with(&format!("{job}-")) && p.launch.container == "mcp")
            .context("the bridge process of the pod")?;
        let listen = process.launch.args.iter().skip_while(|a| *a != "--listen").nth(1).context("--listen")?;
        let port = listen.rsplit(':').next().context("a port")?;
        let token = handed_out.strip_suffix("/mcp").and_then(|u| u.rsplit('/').next()).context("a token")?;
        Ok(format!("http://127.0.0.1:{port}/{token}/mcp"))
    }
}

/// How much one route is measured.
#[derive(Clone, Copy)]
struct Shape {
    calls: usize,
    concurrency: usize,
    sessions: usize,
}

/// `get_current_time` calls at C=1 and C=`concurrency`, and new sessions one at a time with a
/// pause before each (so the bridge has its spare ready), against `url`.
async fn measure_route(bench: &Bench<'_>, label: String, url: String, shape: Shape) -> Route {
    let Shape { calls, concurrency, sessions } = shape;
    let target = vec!["--http".to_string(), url];
    let (tool, args) = ("get_current_time", r#"{"timezone":"UTC"}"#);
    let c1 = bench.calls(&format!("{label}/c1"), &target, tool, args, calls, 1).await.into();
    let cn = bench.calls(&format!("{label}/c{concurrency}"), &target, tool, args, calls, concurrency).await;
    let pause = Duration::from_secs(2);
    let session = bench.paced_connects(&format!("{label}/paced"), &target, sessions, pause).await;
    Route { c1, cn: cn.into(), session: session.into() }
}

/// Calls and new sessions through the gateway and directly, on one time server.
pub async fn gateway_figures(
    bench: &Bench<'_>,
    bin: &Path,
    calls: usize,
    concurrency: usize,
    sessions: usize,
) -> Result<GatewayFigures> {
    let c = Cluster::start(bin, bench.tools, Delays::default(), &[], "serve-kube-gateway.log").await?;
    let result = async {
        let server = c.meta.call("create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await?;
        let job = server["job_name"].as_str().context("job_name")?.to_string();
        let gateway_url = server["urls"]["mcp"].as_str().context("urls.mcp")?.to_string();
        let direct_url = c.direct_url(&job, &gateway_url)?;
        let shape = Shape { calls, concurrency, sessions };
        let route = |label: &'static str, url: String| measure_route(bench, format!("kube/{label}"), url, shape);
        sample_load();
        let direct = route("direct", direct_url).await;
        let before = c.fake.tunnels_opened();
        let gateway = route("gateway", gateway_url).await;
        let tunnels = c.fake.tunnels_opened() - before;
        Ok(GatewayFigures { concurrency, direct, gateway, tunnels, calls, sessions })
    }
    .await;
    c.stop().await;
    result
}

/// A local `time` server reached directly (the URL a stdio meta server hands out: its own
/// loopback listener) and through the HTTP meta server's gateway (`/servers/<name>/<token>/mcp`
/// on the meta listener, what a remote agent gets): what the extra hop costs.
pub async fn local_gateway_figures(
    bench: &Bench<'_>,
    bin: &Path,
    calls: usize,
    concurrency: usize,
    sessions: usize,
) -> Result<GatewayFigures> {
    let stdio = Meta::start(bin, bench.tools, &[], &[], "serve-local-direct.log").await?;
    let http = Meta::start_http(bin, bench.tools, &[], "serve-local-gateway.log").await;
    let (http, _) = match http {
        Ok(h) => h,
        Err(e) => {
            stdio.stop().await;
            return Err(e);
        }
    };
    let result = async {
        let create = json!({"preset": "time", "wait_for_ready": true});
        let direct = stdio.call("create_mcp_server", create.clone()).await?;
        let through = http.call("create_mcp_server", create).await?;
        let url = |v: &Value| v["urls"]["mcp"].as_str().map(String::from).context("urls.mcp");
        let (direct_url, gateway_url) = (url(&direct)?, url(&through)?);
        let shape = Shape { calls, concurrency, sessions };
        let route = |label: &'static str, url: String| measure_route(bench, format!("local/{label}"), url, shape);
        sample_load();
        let direct = route("direct", direct_url).await;
        let gateway = route("gateway", gateway_url).await;
        Ok(GatewayFigures { concurrency, direct, gateway, tunnels: 0, calls, sessions })
    }
    .await;
    stdio.stop().await;
    http.stop().await;
    result
}

/// An MCPServer applied, to its status Ready: the controller's whole path, with the modelled
/// kubelet. `cold`: a new server each; `warm`: each takes a Ready warm member of its MCPPool.
pub struct Declarative {
    pub cold: Spread,
    pub warm: Spread,
}

/// `n` MCPServers applied one after another (each deleted after), then `n` into a pool with
/// `warm: 1` (each once the pool's member is Ready again).
pub async fn declarative(bin: &Path, tools: &Tools, n: usize) -> Result<Declarative> {
    use mcp_ephemeral::runtime::kubernetes::crd::{MCPPool, MCPServer};
    let c = Cluster::start_with(bin, tools, modelled_kubelet(), &[], "serve-kube-declarative.log", true).await?;
    let result = async {
        let client = c.fake.client(NAMESPACE);
        let servers: kube::Api<MCPServer> = kube::Api::namespaced(client.clone(), NAMESPACE);
        let pools: kube::Api<MCPPool> = kube::Api::namespaced(client, NAMESPACE);
        let ready = |name: String| {
            let servers = servers.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                loop {
                    let status = servers.get(&name).await?.status.unwrap_or_default();
                    if status.phase.as_deref() == Some("Ready") {
                        return Ok::<_, anyhow::Error>(());
                    }
                    if std::time::Instant::now() > deadline {
                        bail!("MCPServer {name} not Ready within 120 s: {status:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let apply = |name: &str, spec: Value| -> Result<MCPServer> {
            Ok(serde_json::from_value(json!({
                "apiVersion": "mcp-ephemeral.dev/v1alpha1", "kind": "MCPServer",
                "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec,
            }))?)
        };
        let post = kube::api::PostParams::default();
        let gone = kube::api::DeleteParams::background();
        // One untimed round warms the uv cache.
        let mut cold = Vec::new();
        for i in 0..=n {
            let name = format!("cold-{i}");
            sample_load();
            let t0 = std::time::Instant::now();
            servers.create(&post, &apply(&name, json!({"preset": "time"}))?).await?;
            ready(name.clone()).await?;
            if i > 0 {
                cold.push(ms_since(t0));
            }
            servers.delete(&name, &gone).await?;
        }
        let pool: MCPPool = serde_json::from_value(json!({
            "apiVersion": "mcp-ephemeral.dev/v1alpha1", "kind": "MCPPool",
            "metadata": {"name": "warmed", "namespace": NAMESPACE},
            "spec": {"preset": "time", "warm": 1},
        }))?;
        pools.create(&post, &pool).await?;
        let mut warm = Vec::new();
        let mut handed: Vec<String> = Vec::new();
        // A member nobody has had yet: the pool's status is written by the look that made it,
        // so its warmReady from then on is this member's.
        let fresh_member = |handed: &[String]| {
            c.fake.objects::<Job>(NAMESPACE).iter().any(|j| {
                let warm = j.metadata.labels.as_ref().and_then(|l| l.get("mcp-ephemeral.dev/warm"));
                warm.is_some() && j.metadata.name.as_ref().is_some_and(|n| !handed.contains(n))
            })
        };
        for i in 0..n {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !fresh_member(&handed) || pools.get("warmed").await?.status.is_none_or(|s| s.warm_ready < 1) {
                if std::time::Instant::now() > deadline {
                    bail!("the pool's warm member was not Ready within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let name = format!("warm-{i}");
            sample_load();
            let t0 = std::time::Instant::now();
            servers.create(&post, &apply(&name, json!({"pool": "warmed"}))?).await?;
            ready(name.clone()).await?;
            warm.push(ms_since(t0));
            if let Some(job) = servers.get(&name).await?.status.and_then(|s| s.job_name) {
                handed.push(job);
            }
            servers.delete(&name, &gone).await?;
        }
        Ok(Declarative { cold: Spread::of(&cold), warm: Spread::of(&warm) })
    }
    .await;
    c.stop().await;
    result
}

/// `n` cold creates (a new Job and pod each, uv cache warm) with the [`modelled_kubelet`]: the
/// median time of each step the create's answer reports.
pub async fn cold_start(bin: &Path, tools: &Tools, n: usize) -> Result<ColdStart> {
    let delays = modelled_kubelet();
    let kubelet = format!(
        "schedule {} ms, image + container start {} ms, Ready shown {} ms after the probe passes (probe period 1 s)",
        delays.schedule.as_millis(),
        delays.start.as_millis(),
        delays.probe_lag.as_millis()
    );
    let c = Cluster::start(bin, tools, delays, &[], "serve-kube-cold.log").await?;
    let result = async {
        // One untimed create fills the uv cache and the first tunnel's code paths.
        let warm = create(&c.meta).await?;
        delete(&c.meta, &warm.0).await?;
        let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..n {
            tokio::time::sleep(Duration::from_millis(500)).await;
            sample_load();
            let t0 = std::time::Instant::now();
            let (job, server) = create(&c.meta).await?;
            totals.push(ms_since(t0));
            for s in server["startup"].as_array().context("no startup steps in the answer")? {
                let name = s["step"].as_str().unwrap_or("?").to_string();
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                steps.entry(name).or_default().push(s["after_ms"].as_f64().unwrap_or(f64::NAN));
            }
            delete(&c.meta, &job).await?;
        }
        let steps = order.into_iter().map(|name| {
            let m = median(&steps[&name]);
            (name, m)
        });
        Ok(ColdStart { n, kubelet, steps: steps.collect(), total_ms: median(&totals) })
    }
    .await;
    c.stop().await;
    result
}

async fn create(meta: &Meta) -> Result<(String, Value)> {
    let server = meta.call("create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await?;
    if server["phase"] != "Ready" {
        bail!("create answered {server}");
    }
    Ok((server["job_name"].as_str().context("job_name")?.to_string(), server))
}

async fn delete(meta: &Meta, job: &str) -> Result<()> {
    meta.call("delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await.map(|_| ())
}
