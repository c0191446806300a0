//! Runs of mcpbench (calls, connect-only), memory from /proc, load average, small statistics.

use std::{
    io::Write,
    path::PathBuf,
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::{procs::Proc, tools::Tools};

/// Longest one mcpbench run may take.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// 1-minute load averages seen before each measurement.
static LOADS: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// tools/call figures of one mcpbench run.
#[derive(Clone, Debug)]
pub struct Calls {
    pub p50_us: f64,
    pub p99_us: f64,
    pub per_s: f64,
    pub calls: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Legacy SSE: responses delivered to a session that did not ask for them.
    pub strays: u64,
    /// mcpbench's own CPU use during the calls (1.0 = one core).
    pub client_cpu: f64,
}

/// connect + initialize + tools/list figures.
#[derive(Clone, Debug)]
pub struct Connect {
    pub p50_us: f64,
    pub p99_us: f64,
    /// p50 of the initialize and tools/list parts.
    pub init_p50_us: f64,
    pub list_p50_us: f64,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// How mcpbench reaches the target: `--stdio -- CMD…`, `--http URL` or `--sse URL`.
pub type Target = Vec<String>;

pub fn stdio_target(argv: &[String]) -> Target {
    let mut t = vec!["--stdio".to_string(), "--".to_string()];
    t.extend(argv.iter().cloned());
    t
}

pub struct Bench<'a> {
    pub tools: &'a Tools,
    /// Every mcpbench JSON result, one per line, with its label.
    pub results: PathBuf,
}

impl Bench<'_> {
    /// `calls` tools/call over `concurrency` sessions (mcpbench's default warmup: 20 per session).
    pub async fn calls(
        &self,
        label: &str,
        target: &Target,
        tool: &str,
        args: &str,
        calls: usize,
        concurrency: usize,
    ) -> Result<Calls> {
        let mut a = strings(&["--tool", tool, "--args", args, "--calls", &calls.to_string()]);
        a.extend(strings(&["--concurrency", &concurrency.to_string()]));
        let j = self.run(label, a, target).await?;
        let lat = &j["latency_us"];
        Ok(Calls {
            p50_us: lat["p50"].as_f64().unwrap_or(f64::NAN),
            p99_us: lat["p99"].as_f64().unwrap_or(f64::NAN),
            per_s: j["calls_per_s"].as_f64().unwrap_or(0.0),
            calls: j["calls"].as_u64().unwrap_or(0) as usize,
            errors: j["errors"].as_u64().unwrap_or(0) as usize,
            first_error: j["first_error"].as_str().map(str::to_string),
            strays: j["stray_responses"].as_u64().unwrap_or(0),
            client_cpu: j["client_cpu_util"].as_f64().unwrap_or(0.0),
        })
    }

    /// `n` back-to-back new sessions (connect + initialize + tools/list each; 2 warmup cycles).
    pub async fn connects(&self, label: &str, target: &Target, n: usize) -> Result<Connect> {
        let j =
            self.run(label, strings(&["--connect-only", "--calls", &n.to_string(), "--warmup", "2"]), target).await?;
        Ok(connect_figure(&j))
    }

    /// `n` new sessions, one at a time with `pause` before each, so a bridge that starts its
    /// server ahead of time (a spare) has one ready: the cost of a new session as a client
    /// that does not open sessions in a burst sees it.
    pub async fn paced_connects(&self, label: &str, target: &Target, n: usize, pause: Duration) -> Result<Connect> {
        let (mut samples, mut inits, mut lists) = (Vec::new(), Vec::new(), Vec::new());
        let (mut errors, mut first_error) = (0, None);
        for i in 0..n {
            tokio::time::sleep(pause).await;
            let a = strings(&["--connect-only", "--calls", "1", "--warmup", "0"]);
            let j = self.run(&format!("{label}/{i}"), a, target).await?;
            let c = connect_figure(&j);
            if c.errors > 0 {
                errors += 1;
                first_error = first_error.or(c.first_error);
            } else {
                samples.push(c.p50_us);
                inits.push(c.init_p50_us);
                lists.push(c.list_p50_us);
            }
        }
        samples.sort_by(f64::total_cmp);
        Ok(Connect {
            p50_us: percentile(&samples, 50.0),
            p99_us: percentile(&samples, 99.0),
            init_p50_us: median(&inits),
            list_p50_us: median(&lists),
            errors,
            first_error,
        })
    }

    /// One mcpbench run; its JSON result.
    async fn run(&self, label: &str, args: Vec<String>, target: &Target) -> Result<Value> {
        sample_load();
        let mut cmd = tokio::process::Command::new(&self.tools.mcpbench);
        cmd.arg("--json").args(["--label", label]).args(&args).args(target);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut proc = Proc::spawn("mcpbench", cmd)?;
        let mut stdout = proc.child.stdout.take().context("stdout")?;
        let stderr = proc.child.stderr.take().context("stderr")?;
        let label_owned = label.to_string();
        let errs = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut kept = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("  [mcpbench {label_owned}] {line}");
                kept.push(line);
            }
            kept
        });
        let mut out = String::new();
        let waited = tokio::time::timeout(RUN_LIMIT, async {
            stdout.read_to_string(&mut out).await?;
            proc.child.wait().await
        })
        .await;
        let status = match waited {
            Ok(s) => s?,
            Err(_) => {
                proc.stop(Duration::from_millis(100)).await;
                bail!("mcpbench {label} took longer than {RUN_LIMIT:?}");
            }
        };
        proc.stop(Duration::ZERO).await; // its stdio servers, if any are left
        let err_lines = errs.await.unwrap_or_default();
        let json: Value = match serde_json::from_str(out.trim()) {
            Ok(j) => j,
            Err(_) => bail!("mcpbench {label} failed ({status}): {}", err_lines.join(" | ")),
        };
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.results) {
            let _ = writeln!(f, "{json}");
        }
        Ok(json)
    }
}

fn connect_figure(j: &Value) -> Connect {
    let lat = &j["latency_us"];
    Connect {
        p50_us: lat["p50"].as_f64().unwrap_or(f64::NAN),
        p99_us: lat["p99"].as_f64().unwrap_or(f64::NAN),
        init_p50_us: j["initialize_us"]["p50"].as_f64().unwrap_or(f64::NAN),
        list_p50_us: j["tools_list_us"]["p50"].as_f64().unwrap_or(f64::NAN),
        errors: j["errors"].as_u64().unwrap_or(0) as usize,
        first_error: j["first_error"].as_str().map(str::to_string),
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// The 1-minute load average now.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn sample_load() {
    LOADS.lock().unwrap_or_else(|e| e.into_inner()).push(load1());
}

/// (lowest, highest) 1-minute load average seen before the measurements.
pub fn load_range() -> (f64, f64) {
    let l = LOADS.lock().unwrap_or_else(|e| e.into_inner());
    let lo = l.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// Nearest-rank percentile of sorted samples (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Median of unsorted samples.
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

/// Milliseconds since `start`.
pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Median, p90 and range of a few timings, in milliseconds.
#[derive(Clone, Debug)]
pub struct Spread {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(samples_ms: &[f64]) -> Spread {
        let mut s = samples_ms.to_vec();
        s.sort_by(f64::total_cmp);
        Spread {
            median_ms: percentile(&s, 50.0),
            p90_ms: percentile(&s, 90.0),
            min_ms: s.first().copied().unwrap_or(f64::NAN),
            max_ms: s.last().copied().unwrap_or(f64::NAN),
            n: s.len(),
        }
    }
}
