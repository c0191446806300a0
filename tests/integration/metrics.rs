use std::{
    collections::{BTreeMap, HashMap},
    process::Stdio,
    time::Duration,
};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

const TOKEN: &str = "metrics-test-token-0123456789";

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed strictly as the Prometheus text format (0.0.4).
#[derive(Debug)]
pub(crate) struct Exposition {
    /// Family name (as in `# TYPE`) → its type.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parse `text`; panics on the first line that is not a well-formed HELP, TYPE or sample
    /// line, on a sample of no typed family, a family typed twice or a HELP after its TYPE, and
    /// on a histogram whose buckets are not cumulative or do not end in `+Inf` = `_count`.
    fn parse(text: &str) -> Exposition {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
                assert!(is_name(name), "bad family name in {line}");
                assert!(!help.trim().is_empty(), "empty HELP: {line}");
                assert!(!types.contains_key(name), "HELP after TYPE: {line}");
                helped.push(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without a type: {line}"));
                assert!(is_name(name), "bad family name in {line}");
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "bad type: {line}");
                assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "typed twice: {line}");
            } else if line.starts_with('#') {
                panic!("a comment that is neither HELP nor TYPE: {line}");
            } else {
                samples.push(parse_sample(line));
            }
        }
        for name in types.keys() {
            assert!(helped.contains(name), "{name} has no HELP");
        }
        let exposition = Exposition { types, samples };
        for s in &exposition.samples {
            let family =
                exposition.family_of(&s.name).unwrap_or_else(|| panic!("{} belongs to no typed family", s.name));
            assert!(family.starts_with("mcp_ephemeral_"), "{family} is not ours");
        }
        exposition.check_histograms();
        exposition
    }

    /// The typed family a sample name belongs to.
    fn family_of(&self, sample: &str) -> Option<&str> {
        if let Some((name, _)) = self.types.get_key_value(sample) {
            return Some(name);
        }
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find_map(|base| self.types.get_key_value(base).filter(|(_, k)| *k == "histogram").map(|(n, _)| n.as_str()))
    }

    fn check_histograms(&self) {
        for (name, _) in self.types.iter().filter(|(_, k)| *k == "histogram") {
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == format!("{name}_bucket")) {
                let le = s.labels.get("le").unwrap_or_else(|| panic!("{name} bucket without le"));
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le is a number") };
                let mut rest = s.labels.clone();
                rest.remove("le");
                series.entry(format!("{rest:?}")).or_default().push((le, s.value));
            }
            for (labels, buckets) in series {
                assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{name}{labels}: {buckets:?}");
                let (last_le, last) = *buckets.last().unwrap();
                assert!(last_le.is_infinite(), "{name}{labels} ends without +Inf");
                let count = self.samples.iter().find(|s| {
                    s.name == format!("{name}_count")
                        && format!("{:?}", {
                            let mut l = s.labels.clone();
                            l.remove("le");
                            l
                        }) == labels
                });
                assert_eq!(count.map(|c| c.value), Some(last), "{name}{labels}: +Inf bucket is not _count");
            }
        }
    }

    /// The value of the sample `name` with exactly `labels` (0 when there is none).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map_or(0.0, |s| s.value)
    }

    fn has_family(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{k="v",…} value`, label values with `\\`, `\"` and `\n` escapes.
fn parse_sample(line: &str) -> Sample {
    let end = line.find(['{', ' ']).unwrap_or_else(|| panic!("a sample without a value: {line}"));
    let name = &line[..end];
    assert!(is_name(name), "bad sample name: {line}");
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let key_start = chars.peek().map(|(i, _)| *i).unwrap_or_else(|| panic!("unclosed labels: {line}"));
            if inner[key_start..].starts_with('}') {
                rest = &inner[key_start + 1..];
                break;
            }
            let eq = inner[key_start..].find('=').unwrap_or_else(|| panic!("a label without =: {line}")) + key_start;
            let key = &inner[key_start..eq];
            assert!(is_name(key) && !key.starts_with("__"), "bad label name `{key}`: {line}");
            assert_eq!(inner[eq + 1..].chars().next(), Some('"'), "label value not quoted: {line}");
            while chars.next_if(|(i, _)| *i <= eq + 1).is_some() {}
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?}: {line}"),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            }
            assert!(labels.insert(key.to_string(), value).is_none(), "label `{key}` twice: {line}");
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    rest = &inner[i + 1..];
                    break;
                }
                other => panic!("expected , or }} after a label, got {other:?}: {line}"),
            }
        }
    }
    let mut parts = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line}")).split(' ');
    let value = parts.next().unwrap_or_default();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| panic!("bad value `{v}`: {line}")),
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>().unwrap_or_else(|_| panic!("bad timestamp: {line}"));
    }
    assert!(parts.next().is_none(), "trailing text: {line}");
    Sample { name: name.to_string(), labels, value }
}

/// GET `url`, with the bearer token when given: the status and, on 200, the parsed body (its
/// content type checked).
pub(crate) async fn scrape(url: &str, token: Option<&str>) -> (u16, Option<Exposition>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("GET /metrics");
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "content type {kind}");
    (status, Some(Exposition::parse(&resp.text().await.unwrap())))
}

/// The URL `--metrics-listen` serves at, as the meta server logged it (waits up to 5 s).
pub(crate) async fn metrics_url(logs: &std::sync::Mutex<Vec<String>>) -> String {
    let mut line = None;
    for _ in 0..100 {
        line = logs.lock().unwrap().iter().find(|l| l.contains("serving metrics at http://")).cloned();
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = line.expect("the metrics listener says where it is");
    let url = line[line.find("http://").unwrap()..].split_whitespace().next().unwrap().trim_matches('"').to_string();
    assert!(url.ends_with("/metrics"), "{url}");
    url
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok = "# HELP mcp_ephemeral_x_total X.\n# TYPE mcp_ephemeral_x_total counter\nmcp_ephemeral_x_total{a=\"q\\\"\\\\\"} 2\n";
    let parsed = Exposition::parse(ok);
    assert_eq!(parsed.value("mcp_ephemeral_x_total", &[("a", "q\"\\")]), 2.0);
    for bad in [
        "mcp_ephemeral_untyped 1\n",
        "# HELP mcp_ephemeral_x X.\n# TYPE mcp_ephemeral_x gauge\nmcp_ephemeral_x{a=b} 1\n",
        "# HELP mcp_ephemeral_x X.\n# TYPE mcp_ephemeral_x gauge\nmcp_ephemeral_x one\n",
        "# TYPE mcp_ephemeral_x gauge\nmcp_ephemeral_x 1\n",
    ] {
        assert!(std::panic::catch_unwind(|| Exposition::parse(bad)).is_err(), "accepted:\n{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_sit_behind_the_token_parse_and_count_a_create_a_call_and_a_delete() {
    tokio::time::timeout(TEST_LIMIT, async {
        let meta = HttpMeta::start(&["--auth-token", TOKEN]).await;
        let url = format!("{}/metrics", meta.base);
        assert_eq!(scrape(&url, None).await.0, 401, "no token");
        assert_eq!(scrape(&url, Some("wrong-token-wrong-token")).await.0, 401, "a wrong token");
        let (status, before) = scrape(&url, Some(TOKEN)).await;
        assert_eq!(status, 200);
        let before = before.unwrap();
        for family in mcp_ephemeral::metrics::META_FAMILIES {
            assert!(before.has_family(family), "{family} missing: {:?}", before.types.keys());
        }
        let success = [("outcome", "success")];
        let ready = [("phase", "Ready"), ("runtime", "local")];
        assert_eq!(before.value("mcp_ephemeral_servers", &ready), 0.0);
        assert_eq!(
            before.value("mcp_ephemeral_controller_reconciles_total", &[("kind", "mcpserver"), ("outcome", "success")]),
            0.0
        );

        let client = connect_http_bearer(&format!("{}/mcp", meta.base), TOKEN).await;
        let server = call_ok(&client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        assert_eq!(server["phase"], "Ready", "{server}");
        let job = server["job_name"].as_str().unwrap().to_string();
        // Through the gateway (the meta server's token, the server's in the path).
        let direct = connect_http_bearer(server["urls"]["mcp"].as_str().unwrap(), TOKEN).await;
        let res = call(&direct, "get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));

        let during = scrape(&url, Some(TOKEN)).await.1.unwrap();
        let moved = |after: &Exposition, name: &str, labels: &[(&str, &str)]| {
            after.value(name, labels) - before.value(name, labels)
        };
        assert_eq!(moved(&during, "mcp_ephemeral_creates_total", &success), 1.0);
        assert_eq!(moved(&during, "mcp_ephemeral_create_ready_seconds_count", &[]), 1.0);
        assert!(during.value("mcp_ephemeral_create_ready_seconds_sum", &[]) > 0.0);
        assert_eq!(during.value("mcp_ephemeral_servers", &ready), 1.0, "the census counts the Ready server");
        assert!(moved(&during, "mcp_ephemeral_gateway_requests_total", &[("status", "2xx")]) >= 2.0);
        assert!(during.value("mcp_ephemeral_gateway_tunnels", &[]) >= 1.0, "a keep-alive tunnel is open");
        assert!(during.value("mcp_ephemeral_bridge_sessions", &[]) >= 1.0);
        assert!(moved(&during, "mcp_ephemeral_bridge_calls_total", &[]) >= 2.0, "initialize and tools/call");

        let _ = direct.cancel().await;
        let deleted = call_ok(&client, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted");
        let exits = |after: &Exposition| -> f64 {
            ["clean", "error", "signal", "unknown"]
                .iter()
                .map(|r| moved(after, "mcp_ephemeral_bridge_child_exits_total", &[("reason", r)]))
                .sum()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let after = loop {
            let after = scrape(&url, Some(TOKEN)).await.1.unwrap();
            if exits(&after) >= 2.0 || std::time::Instant::now() > deadline {
                break after;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(exits(&after) >= 2.0, "the deleted server's children (its session's, its spare) ended");
        assert_eq!(moved(&after, "mcp_ephemeral_creates_total", &success), 1.0);
        assert_eq!(moved(&after, "mcp_ephemeral_deletes_total", &success), 1.0);
        assert_eq!(moved(&after, "mcp_ephemeral_deletes_total", &[("outcome", "failed")]), 0.0);
        assert_eq!(after.value("mcp_ephemeral_servers", &ready), 0.0);
        let _ = client.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_them_in_stdio_mode_behind_the_token() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["serve", "--metrics-listen", "127.0.0.1:0", "--auth-token", TOKEN]);
        let (meta, logs) = meta_stdio_kept(cmd, "meta-stdio").await;
        let url = metrics_url(&logs).await;
        assert_eq!(scrape(&url, None).await.0, 401);
        let before = scrape(&url, Some(TOKEN)).await.1.expect("metrics with the token");
        // A refused create is counted as such, in the same registry the tools record into.
        call_err(&meta, "create_mcp_server", json!({"preset": "no-such-preset"})).await;
        let after = scrape(&url, Some(TOKEN)).await.1.unwrap();
        let rejected = [("outcome", "rejected")];
        assert_eq!(
            after.value("mcp_ephemeral_creates_total", &rejected)
                - before.value("mcp_ephemeral_creates_total", &rejected),
            1.0
        );
        let _ = meta.cancel().await;

        // Off loopback it needs a token, like --listen.
        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--metrics-listen", "0.0.0.0:0"])
            .env_remove("MCP_EPHEMERAL_TOKEN")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--metrics-listen 0.0.0.0:0") && err.contains("--auth-token"), "{err}");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_bridge_counts_its_sessions_under_its_token() {
    tokio::time::timeout(TEST_LIMIT, async {
        let token = "Tok3n_for-the-bridge-metrics";
        let mut bridge = tokio::process::Command::new(BIN)
            .args(["bridge", "--listen", "127.0.0.1:0", "--token-env", "BRIDGE_TOKEN", "--", "uvx", "mcp-server-time"])
            .env("BRIDGE_TOKEN", token)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bridge");
        let mut lines = BufReader::new(bridge.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                eprintln!("[bridge] {line}");
                if let Some(addr) = bridge_listen_addr(&line) {
                    return addr;
                }
            }
            panic!("the bridge exited before listening");
        })
        .await
        .expect("the bridge listens within 20 s");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[bridge] {line}");
            }
        });
        let base = format!("http://{addr}");
        assert_eq!(scrape(&format!("{base}/metrics"), None).await.0, 404, "not without the token");
        let url = format!("{base}/{token}/metrics");
        let before = scrape(&url, None).await.1.expect("metrics under the token");
        assert!(before.has_family("mcp_ephemeral_bridge_sessions"));
        assert!(!before.has_family("mcp_ephemeral_creates_total"), "a bridge has only its own families");
        assert_eq!(before.value("mcp_ephemeral_bridge_sessions", &[]), 0.0);

        let client = connect_http(&format!("{base}/{token}/mcp")).await;
        let tools = client.list_all_tools().await.expect("tools");
        assert!(tools.iter().any(|t| t.name == "get_current_time"));
        let during = scrape(&url, None).await.1.unwrap();
        assert_eq!(during.value("mcp_ephemeral_bridge_sessions", &[]), 1.0);
        assert!(during.value("mcp_ephemeral_bridge_calls_total", &[]) >= 2.0, "initialize and tools/list");
        let _ = client.cancel().await;
        // The session ends with the client's DELETE.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = scrape(&url, None).await.1.unwrap();
            if now.value("mcp_ephemeral_bridge_sessions", &[]) == 0.0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the session still counts after the client left");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = bridge.kill().await;
    })
    .await
    .expect("test finished in time");
}
