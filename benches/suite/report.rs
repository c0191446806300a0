//! The results as markdown: machine, settings, goals (met / not met), then the tables. Printed
//! to stdout and written into `benches/README.md` between the results markers.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{
    gateway::{self, ColdStart, GatewayFigures, Route},
    measure::{Calls, Connect, Spread},
    meta::{Create, CreateFigures, Idle, Lifecycle, Outcome, Start, StopStart},
};

pub const BEGIN: &str = "<!-- suite results: begin (written by `cargo bench --bench suite`) -->";
pub const END: &str = "<!-- suite results: end -->";

pub const OURS: &str = "mcp-ephemeral";
pub const STDIO: &str = "stdio (direct)";

/// One tools/call figure.
pub struct CallRow {
    pub server: &'static str,
    /// `STDIO` or a bridge name.
    pub target: &'static str,
    /// `stdio`, `HTTP` or `SSE`.
    pub transport: &'static str,
    pub concurrency: usize,
    pub fig: Result<Calls, String>,
}

/// Memory and new-session figures of one bridge process (or of direct stdio: no memory).
pub struct SessionRow {
    pub server: &'static str,
    pub target: &'static str,
    pub transport: &'static str,
    pub rss_idle_kb: Option<u64>,
    /// The idle VmRSS split: anonymous memory and mapped files (mostly the program itself).
    pub rss_idle_anon_kb: Option<u64>,
    pub rss_idle_file_kb: Option<u64>,
    pub hwm_kb: Option<u64>,
    pub paced: Result<Connect, String>,
    pub burst: Result<Connect, String>,
}

pub struct ListFigure {
    pub servers: usize,
    pub median_ms: f64,
    pub n: usize,
}

pub struct MetaResults {
    pub start: Outcome<Start>,
    pub idle: Outcome<Idle>,
    pub creates: CreateFigures,
    /// Wake on request and the stop/start round trip, local runtime.
    pub lifecycle: Outcome<Lifecycle>,
    pub list: Outcome<ListFigure>,
    /// A local server directly and through the HTTP meta server's gateway.
    pub local_gateway: Outcome<GatewayFigures>,
}

#[derive(Default)]
pub struct Report {
    /// (name, value) lines about the machine and the run.
    pub machine: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    pub calls: Vec<CallRow>,
    pub sessions: Vec<SessionRow>,
    pub meta: Option<MetaResults>,
    pub kube: Option<KubeResults>,
    pub notes: Vec<String>,
}

/// `serve --runtime kubernetes` on the fake API server with its process kubelet.
pub struct KubeResults {
    pub gateway: Outcome<GatewayFigures>,
    pub cold: Outcome<ColdStart>,
    pub pool: Outcome<Create>,
    pub stop_start: Outcome<StopStart>,
    /// MCPServer applied → status Ready (cold, and with a warm member).
    pub declarative: Outcome<gateway::Declarative>,
}

/// CPU model, cores, kernel, date, git commit.
pub fn machine(repo: &Path) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let mut commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // The results in benches/README.md are what a run rewrites: they do not count as a change.
    if git(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!benches/README.md"])
        .is_some_and(|s| !s.is_empty())
    {
        commit.push_str(" (with uncommitted changes)");
    }
    vec![
        ("date".into(), humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        ("commit".into(), commit),
        ("CPU".into(), cpu),
        ("cores".into(), cores),
        ("kernel".into(), format!("Linux {kernel}")),
    ]
}

fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if !v.is_finite() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn ms_f(v: f64) -> String {
    ms(v * 1000.0)
}

fn mib(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "–".into())
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}×", a / b) } else { "–".into() }
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "n/a",
    }
}

impl Report {
    fn call(&self, server: &str, target: &str, transport: &str, c: usize) -> Option<&Calls> {
        self.calls
            .iter()
            .find(|r| r.server == server && r.target == target && r.transport == transport && r.concurrency == c)
            .and_then(|r| r.fig.as_ref().ok())
    }

    fn servers(&self) -> Vec<&'static str> {
        let mut s: Vec<&'static str> = Vec::new();
        for r in &self.calls {
            if !s.contains(&r.server) {
                s.push(r.server);
            }
        }
        s
    }

    fn concurrencies(&self) -> Vec<usize> {
        let mut c: Vec<usize> = self.calls.iter().map(|r| r.concurrency).collect();
        c.sort();
        c.dedup();
        c
    }

    /// (goal, figure, met) rows.
    fn goals(&self) -> Vec<(String, String, Option<bool>)> {
        let mut goals = Vec::new();
        if !self.calls.is_empty() {
            // p50 overhead over direct stdio, sequential calls.
            let mut parts = Vec::new();
            let mut ok = Some(true);
            for server in self.servers() {
                for t in ["HTTP", "SSE"] {
                    match (self.call(server, OURS, t, 1), self.call(server, STDIO, "stdio", 1)) {
                        (Some(b), Some(d)) => {
                            let extra = (b.p50_us - d.p50_us) / 1000.0;
                            parts.push(format!("{server} {t} {extra:+.3} ms"));
                            if extra > 0.2 {
                                ok = Some(false);
                            }
                        }
                        _ => ok = ok.and(None),
                    }
                }
            }
            goals.push(("bridge adds ≤ 0.2 ms p50 over direct stdio (C=1)".into(), parts.join("; "), ok));

            // calls/s against the peers behind server-everything.
            let server = "server-everything";
            let mut worst: Option<(f64, String)> = None;
            let mut complete = true;
            for c in self.concurrencies() {
                for t in ["HTTP", "SSE"] {
                    let Some(ours) = self.call(server, OURS, t, c) else {
                        complete = false;
                        continue;
                    };
                    for peer in ["mcp-proxy", "supergateway"] {
                        match self.call(server, peer, t, c) {
                            Some(p) if p.per_s > 0.0 => {
                                let r = ours.per_s / p.per_s;
                                if worst.as_ref().is_none_or(|(w, _)| r < *w) {
                                    worst = Some((r, format!("vs {peer} {t} C={c}")));
                                }
                            }
                            _ => complete = false,
                        }
                    }
                }
            }
            let (fig, ok) = match &worst {
                Some((r, at)) => (format!("lowest {r:.2}× ({at})"), Some(*r >= 3.0)),
                None => ("no figures".into(), None),
            };
            let ok = if complete { ok } else { ok.filter(|m| !m) };
            goals.push(("behind server-everything ≥ 3× the calls/s of mcp-proxy and supergateway".into(), fig, ok));
        }
        let ours: Vec<&SessionRow> = self.sessions.iter().filter(|r| r.target == OURS).collect();
        if !ours.is_empty() {
            let idle = ours.iter().filter_map(|r| r.rss_idle_kb).max();
            let peak = ours.iter().filter_map(|r| r.hwm_kb).max();
            goals.push((
                "bridge RSS ≤ 10 MiB (children excluded; highest idle VmRSS and VmHWM)".into(),
                format!("idle {} MiB, peak {} MiB", mib(idle), mib(peak)),
                peak.map(|p| p <= 10 * 1024),
            ));
            let paced: Vec<(f64, String)> = ours
                .iter()
                .filter_map(|r| r.paced.as_ref().ok().map(|c| (c.p50_us, format!("{} {}", r.server, r.transport))))
                .collect();
            let worst = paced.iter().max_by(|a, b| a.0.total_cmp(&b.0));
            let all = paced.len() == ours.len();
            goals.push((
                "new session connect+initialize+tools/list ≤ 10 ms p50 (spare ready)".into(),
                worst.map(|(v, at)| format!("highest {} ms ({at})", ms(*v))).unwrap_or_else(|| "no figures".into()),
                worst.map(|(v, _)| *v <= 10_000.0).filter(|m| all || !m),
            ));
        }
        if let Some(m) = &self.meta {
            let (fig, ok) = match &m.start {
                Outcome::Done(s) => (format!("{} ms median", ms_f(s.median_ms)), Some(s.median_ms <= 20.0)),
                other => (outcome_text(other), None),
            };
            goals.push(("`serve` start to first initialize answer ≤ 20 ms".into(), fig, ok));
            let (fig, ok) = match &m.idle {
                Outcome::Done(i) => (format!("{} MiB", mib(Some(i.rss_kb))), Some(i.rss_kb <= 15 * 1024)),
                other => (outcome_text(other), None),
            };
            goals.push(("`serve` idle RSS ≤ 15 MiB".into(), fig, ok));
            let (fig, ok) = match &m.creates.pool {
                Outcome::Done(c) => (format!("{} ms median", ms_f(c.median_ms)), Some(c.median_ms < 50.0)),
                other => (outcome_text(other), None),
            };
            goals.push(("warm-pool create→ready < 50 ms".into(), fig, ok));
            goals.extend(lifecycle_goals(m));
        }
        if let Some(k) = &self.kube {
            goals.extend(kube_goals(k));
        }
        goals
    }

    pub fn render(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "### Run\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        for (k, v) in self.machine.iter().chain(&self.settings) {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        if !self.versions.is_empty() {
            let v: Vec<String> = self.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(md, "| tools | {} |", v.join(", "));
        }
        let _ = writeln!(md, "\n### Goals\n");
        let _ = writeln!(md, "| goal | figure | |\n|---|---|---|");
        for (goal, fig, ok) in self.goals() {
            let _ = writeln!(md, "| {goal} | {fig} | {} |", met(ok));
        }
        if !self.calls.is_empty() {
            self.render_calls(&mut md);
        }
        if !self.sessions.is_empty() {
            self.render_sessions(&mut md);
        }
        if let Some(m) = &self.meta {
            render_meta(&mut md, m);
        }
        if let Some(k) = &self.kube {
            render_kube(&mut md, k);
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n### Notes\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }

    fn render_calls(&self, md: &mut String) {
        let _ = writeln!(md, "\n### Bridges: tools/call\n");
        let _ = writeln!(
            md,
            "p50/p99: latency of one call; calls/s: all sessions together. \"p50 − stdio\": added latency \
             over calling the server directly. \"{OURS} ÷ this\": {OURS}'s calls/s over this row's, same \
             server, transport and C (above 1: {OURS} is faster).\n"
        );
        let _ = writeln!(
            md,
            "| server | C | transport | target | p50 ms | p99 ms | calls/s | p50 − stdio ms | {OURS} ÷ this | notes |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.calls {
            let head = format!("| {} | {} | {} | {} ", r.server, r.concurrency, r.transport, r.target);
            let c = match &r.fig {
                Err(e) => {
                    let _ = writeln!(md, "{head}| – | – | – | – | – | failed: {} |", e.replace('|', "/"));
                    continue;
                }
                Ok(c) => c,
            };
            let stdio = self.call(r.server, STDIO, "stdio", r.concurrency);
            let delta = match (r.target, stdio) {
                (STDIO, _) | (_, None) => "".into(),
                (_, Some(d)) => format!("{:+.2}", (c.p50_us - d.p50_us) / 1000.0),
            };
            let vs = match self.call(r.server, OURS, r.transport, r.concurrency) {
                Some(o) if r.target != OURS => ratio(o.per_s, c.per_s),
                _ => "".into(),
            };
            let mut notes = Vec::new();
            if c.errors > 0 {
                notes.push(format!(
                    "{} of {} calls failed ({})",
                    c.errors,
                    c.calls,
                    c.first_error.as_deref().unwrap_or("?").replace('|', "/")
                ));
            }
            if c.strays > 0 {
                notes.push(format!("{} responses sent to the wrong session", c.strays));
            }
            if c.client_cpu > 0.7 {
                notes.push(format!("client CPU {:.0}%: mcpbench may be the limit", c.client_cpu * 100.0));
            }
            let _ = writeln!(
                md,
                "{head}| {} | {} | {} | {delta} | {vs} | {} |",
                ms(c.p50_us),
                ms(c.p99_us),
                thousands(c.per_s),
                notes.join("; ")
            );
        }
    }

    fn render_sessions(&self, md: &mut String) {
        let _ = writeln!(md, "\n### Bridges: memory and new sessions\n");
        let _ = writeln!(
            md,
            "RSS: the bridge process alone (children excluded), VmRSS once ready and idle (split into \
             anonymous memory and mapped files, mostly the program's own code), VmHWM (peak) after all its \
             runs. New session: connect + initialize + tools/list; \"spare ready\" = one \
             session at a time with a pause before each (what a client that opens a session now and then \
             sees), \"burst\" = back to back (each waits for a server process to start where the bridge \
             starts one per session).\n"
        );
        let _ = writeln!(
            md,
            "| server | target | transport | RSS idle MiB | idle: anon + file MiB | RSS peak MiB \
             | new session p50 ms (spare ready) | p99 | p50 of initialize + tools/list | burst p50 ms | burst p99 |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        let conn = |c: &Result<Connect, String>| match c {
            Ok(c) if c.errors == 0 => (ms(c.p50_us), ms(c.p99_us)),
            Ok(c) => (
                ms(c.p50_us),
                format!(
                    "{} ({} failed: {})",
                    ms(c.p99_us),
                    c.errors,
                    c.first_error.as_deref().unwrap_or("?").replace('|', "/")
                ),
            ),
            Err(e) => ("failed".into(), e.replace('|', "/")),
        };
        for r in &self.sessions {
            let (p50, p99) = if r.target == STDIO { ("–".into(), "–".into()) } else { conn(&r.paced) };
            let split = match &r.paced {
                Ok(c) if r.target != STDIO => format!("{} + {}", ms(c.init_p50_us), ms(c.list_p50_us)),
                _ => "–".into(),
            };
            let (b50, b99) = conn(&r.burst);
            let anon_file = match (r.rss_idle_anon_kb, r.rss_idle_file_kb) {
                (Some(a), Some(f)) => format!("{} + {}", mib(Some(a)), mib(Some(f))),
                _ => "–".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {anon_file} | {} | {p50} | {p99} | {split} | {b50} | {b99} |",
                r.server,
                r.target,
                r.transport,
                mib(r.rss_idle_kb),
                mib(r.hwm_kb)
            );
        }
    }
}

fn outcome_text<T>(o: &Outcome<T>) -> String {
    match o {
        Outcome::Done(_) => "done".into(),
        Outcome::NotAvailable(why) => format!("not available: {why}"),
        Outcome::Failed(e) => format!("failed: {}", e.replace('|', "/").replace('\n', " ")),
    }
}

fn create_text(o: &Outcome<Create>) -> String {
    match o {
        Outcome::Done(c) if c.n > 1 => format!(
            "{} ms median (min {}, max {}, n={}); server's ready_after_ms median {}",
            ms_f(c.median_ms),
            ms_f(c.min_ms),
            ms_f(c.max_ms),
            c.n,
            ms_f(c.ready_after_ms)
        ),
        Outcome::Done(c) => {
            format!("{} ms (n=1); server's ready_after_ms {}", ms_f(c.median_ms), ms_f(c.ready_after_ms))
        }
        other => outcome_text(other),
    }
}

fn render_meta(md: &mut String, m: &MetaResults) {
    let _ = writeln!(md, "\n### Meta server (`serve`, stdio)\n");
    let _ = writeln!(md, "| what | figure |\n|---|---|");
    let start = match &m.start {
        Outcome::Done(s) => {
            format!("{} ms median (min {}, max {}, n={})", ms_f(s.median_ms), ms_f(s.min_ms), ms_f(s.max_ms), s.n)
        }
        other => outcome_text(other),
    };
    let _ = writeln!(md, "| start to the first `initialize` answer | {start} |");
    let idle = match &m.idle {
        Outcome::Done(i) => format!("{} MiB VmRSS (VmHWM {} MiB)", mib(Some(i.rss_kb)), mib(Some(i.hwm_kb))),
        other => outcome_text(other),
    };
    let _ = writeln!(md, "| idle RSS (2 s after initialize + tools/list) | {idle} |");
    let c = &m.creates;
    let _ = writeln!(md, "| create→ready, `time` preset, cold (empty `UV_CACHE_DIR`) | {} |", create_text(&c.cold));
    let _ = writeln!(md, "| create→ready, `time` preset, warm uv cache | {} |", create_text(&c.warm));
    let _ =
        writeln!(md, "| create→ready, `time` preset, warm pool (`--warm-pool time=2`) | {} |", create_text(&c.pool));
    match &m.lifecycle {
        Outcome::Done(l) => {
            let _ = writeln!(
                md,
                "| wake on request, `time` preset, warm uv cache: new session + first `get_current_time` on a Stopped \
                 server's `urls.mcp` | {} |",
                spread_text(&l.wake)
            );
            let _ = writeln!(md, "| the same on the Ready server (its spare ready) | {} |", spread_text(&l.ready));
            let _ = writeln!(
                md,
                "| stop/start round trip: `stop_mcp_server`, then `start_mcp_server` with `wait_for_ready` | {} |",
                stop_start_text(&l.stop_start)
            );
        }
        other => {
            let _ = writeln!(md, "| wake on request and stop/start round trip | {} |", outcome_text(other));
        }
    }
    let list = match &m.list {
        Outcome::Done(l) => format!("{} ms median (n={}) for {} servers", ms_f(l.median_ms), l.n, l.servers),
        other => outcome_text(other),
    };
    let _ = writeln!(md, "| `list_mcp_servers`, 200 servers, `--runtime kubernetes` (fake API server) | {list} |");
    let _ = writeln!(
        md,
        "\nA local `time` server: directly (the URL a stdio meta server hands out) and through the HTTP \
         meta server's gateway (`/servers/<name>/<token>/mcp` on its listener, what a remote agent gets). \
         New session as in the Kubernetes table below.\n"
    );
    match &m.local_gateway {
        Outcome::Done(g) => route_table(md, g, "direct (the server's listener)", "the meta server's gateway"),
        other => {
            let _ = writeln!(md, "local gateway figures: {}", outcome_text(other));
        }
    }
}

/// "X ms median (p90 …, min …, max …, n=…)".
fn spread_text(s: &Spread) -> String {
    format!(
        "{} ms median (p90 {}, min {}, max {}, n={})",
        ms_f(s.median_ms),
        ms_f(s.p90_ms),
        ms_f(s.min_ms),
        ms_f(s.max_ms),
        s.n
    )
}

fn stop_start_text(s: &StopStart) -> String {
    format!(
        "{}; of which stop {} ms median (p90 {}), start → Ready {} ms median (p90 {})",
        spread_text(&s.total),
        ms_f(s.stop.median_ms),
        ms_f(s.stop.p90_ms),
        ms_f(s.start.median_ms),
        ms_f(s.start.p90_ms)
    )
}

/// A wake costs a start and a session, no more: the first answer within 200 ms of a warm
/// create→ready; a start is no slower than a create (10% margin).
fn lifecycle_goals(m: &MetaResults) -> Vec<(String, String, Option<bool>)> {
    let create = match &m.creates.warm {
        Outcome::Done(c) => Some(c.median_ms),
        _ => None,
    };
    let (wake, start) = match &m.lifecycle {
        Outcome::Done(l) => (Ok(l.wake.median_ms), Ok(l.stop_start.start.median_ms)),
        other => (Err(outcome_text(other)), Err(outcome_text(other))),
    };
    let against = |fig: &Result<f64, String>, limit: &dyn Fn(f64) -> f64| match (fig, create) {
        (Ok(f), Some(c)) => {
            (format!("{} ms against {} ms (create→ready, warm uv cache)", ms_f(*f), ms_f(c)), Some(*f <= limit(c)))
        }
        (Ok(f), None) => (format!("{} ms; no warm create→ready figure to compare", ms_f(*f)), None),
        (Err(e), _) => (e.clone(), None),
    };
    let (wake_fig, wake_ok) = against(&wake, &|c| c + 200.0);
    let (start_fig, start_ok) = against(&start, &|c| c * 1.1);
    vec![
        (
            "wake on request (local): first answer ≤ create→ready (warm uv cache) + 200 ms, medians".into(),
            wake_fig,
            wake_ok,
        ),
        (
            "`start_mcp_server(wait_for_ready)` (local) ≤ 110% of create→ready (warm uv cache), medians".into(),
            start_fig,
            start_ok,
        ),
    ]
}

/// Replace the results section of `readme` (between the markers) with `md`.
pub fn write_readme(readme: &Path, md: &str) -> Result<()> {
    let old = std::fs::read_to_string(readme).unwrap_or_default();
    let block = format!("{BEGIN}\n\n{md}\n{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => {
            format!("{}{}## Results\n\n{block}\n", old, if old.is_empty() || old.ends_with("\n\n") { "" } else { "\n" })
        }
    };
    std::fs::write(readme, new).with_context(|| format!("write {}", readme.display()))
}

/// The Kubernetes goals of issue 9 that the fake can show.
fn kube_goals(k: &KubeResults) -> Vec<(String, String, Option<bool>)> {
    let mut goals = Vec::new();
    let (fig, ok) = match &k.gateway {
        Outcome::Done(g) => match (&g.gateway.c1, &g.direct.c1) {
            (Outcome::Done(gw), Outcome::Done(d)) => {
                let share = gw.per_s / d.per_s;
                (
                    format!("{:.0}% ({} against {} calls/s)", share * 100.0, thousands(gw.per_s), thousands(d.per_s)),
                    Some(share >= 0.5 && gw.errors == 0),
                )
            }
            _ => ("no figures".into(), None),
        },
        other => (outcome_text(other), None),
    };
    goals.push(("gateway (fake port-forward) ≥ 50% of the direct bridge's calls/s, C=1".into(), fig, ok));
    let (fig, ok) = match &k.gateway {
        Outcome::Done(g) => match (&g.gateway.session, &g.direct.session) {
            (Outcome::Done(gw), Outcome::Done(d)) => (
                format!("{} ms against {} ms direct", ms(gw.p50_us), ms(d.p50_us)),
                Some(gw.p50_us <= 2.0 * d.p50_us && gw.errors == 0),
            ),
            _ => ("no figures".into(), None),
        },
        other => (outcome_text(other), None),
    };
    goals.push(("new session through the gateway ≤ 2× direct (p50)".into(), fig, ok));
    let (fig, ok) = match &k.pool {
        Outcome::Done(c) => (format!("{} ms median", ms_f(c.median_ms)), Some(c.median_ms <= 50.0)),
        other => (outcome_text(other), None),
    };
    goals.push(("warm-pool hand-out on Kubernetes (fake) ≤ 50 ms".into(), fig, ok));
    let (fig, ok) = match (&k.stop_start, &k.cold) {
        (Outcome::Done(s), Outcome::Done(c)) => (
            format!("{} ms against {} ms (cold create)", ms_f(s.start.median_ms), ms_f(c.total_ms)),
            Some(s.start.median_ms <= 1.1 * c.total_ms),
        ),
        (Outcome::Done(s), other) => {
            (format!("{} ms; cold create {}", ms_f(s.start.median_ms), outcome_text(other)), None)
        }
        (other, _) => (outcome_text(other), None),
    };
    goals.push((
        "`start_mcp_server(wait_for_ready)` on Kubernetes (fake) ≤ 110% of a cold create→ready, medians".into(),
        fig,
        ok,
    ));
    goals
}

fn route_cells(r: &Route) -> String {
    let calls = |c: &Outcome<Calls>| match c {
        Outcome::Done(c) if c.errors == 0 => format!("{} | {}", thousands(c.per_s), ms(c.p50_us)),
        Outcome::Done(c) => format!(
            "{} | {} ({} failed: {})",
            thousands(c.per_s),
            ms(c.p50_us),
            c.errors,
            c.first_error.as_deref().unwrap_or("?").replace('|', "/")
        ),
        other => format!("– | {}", outcome_text(other)),
    };
    let session = match &r.session {
        Outcome::Done(c) => format!("{} ({} + {})", ms(c.p50_us), ms(c.init_p50_us), ms(c.list_p50_us)),
        other => outcome_text(other),
    };
    format!("{} | {} | {session}", calls(&r.c1), calls(&r.cn))
}

/// The table of a direct route against the gateway's.
fn route_table(md: &mut String, g: &GatewayFigures, direct: &str, gateway: &str) {
    let c = g.concurrency;
    let _ = writeln!(md, "| route | calls/s C=1 | p50 ms C=1 | calls/s C={c} | p50 ms C={c} | new session p50 ms |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let _ = writeln!(md, "| {direct} | {} |", route_cells(&g.direct));
    let _ = writeln!(md, "| {gateway} | {} |", route_cells(&g.gateway));
}

fn render_kube(md: &mut String, k: &KubeResults) {
    let _ = writeln!(
        md,
        "
### Kubernetes runtime (fake API server, process kubelet)
"
    );
    let _ = writeln!(
        md,
        "The pods' containers are real processes (the bridge and `uvx mcp-server-time`); the gateway reaches \
         them through the fake's `pods/portforward` websocket, \"direct\" is the same bridge at its pod \
         address. New session: connect + initialize + tools/list, one at a time with 2 s before each (the \
         bridge's spare ready; p50 of initialize + tools/list in brackets).\n"
    );
    match &k.gateway {
        Outcome::Done(g) => {
            let c = g.concurrency;
            route_table(md, g, "direct (pod address)", "gateway (port-forward, pooled)");
            let _ = writeln!(
                md,
                "\nTunnels the gateway opened for 2 × {} calls (C=1 and C={c}, plus warmups) and {} new sessions: {}.",
                g.calls, g.sessions, g.tunnels
            );
        }
        other => {
            let _ = writeln!(md, "gateway figures: {}", outcome_text(other));
        }
    }
    match &k.cold {
        Outcome::Done(cold) => {
            let _ = writeln!(
                md,
                "\nCold create → ready, `time` preset (a new Job and pod each, uv cache warm), n={}, modelled \
                 kubelet: {}. Client time median {} ms.\n",
                cold.n,
                cold.kubelet,
                ms_f(cold.total_ms)
            );
            let _ = writeln!(md, "| step (the create's `startup`) | median ms since the create began |\n|---|---|");
            for (step, at) in &cold.steps {
                let _ = writeln!(md, "| {step} | {} |", ms_f(*at));
            }
        }
        other => {
            let _ = writeln!(md, "\ncold create steps: {}", outcome_text(other));
        }
    }
    let _ = writeln!(md, "\n| what | figure |\n|---|---|");
    let _ = writeln!(md, "| warm-pool hand-out (`--warm-pool time=2`) | {} |", create_text(&k.pool));
    let stop_start = match &k.stop_start {
        Outcome::Done(s) => stop_start_text(s),
        other => outcome_text(other),
    };
    let _ = writeln!(
        md,
        "| stop/start round trip, modelled kubelet: `stop_mcp_server` (the Job suspended, answered once its pod \
         is gone), then `start_mcp_server` with `wait_for_ready` (resumed, a new pod) | {stop_start} |"
    );
    let (cold, warm) = match &k.declarative {
        Outcome::Done(d) => (spread_text(&d.cold), spread_text(&d.warm)),
        other => (outcome_text(other), outcome_text(other)),
    };
    let _ = writeln!(
        md,
        "| an `MCPServer` applied → its status Ready (the controller's whole path), modelled kubelet | {cold} |"
    );
    let _ = writeln!(md, "| the same, into an `MCPPool` with a Ready warm member | {warm} |");
}
