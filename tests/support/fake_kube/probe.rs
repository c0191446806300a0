//! Readiness probes of the process kubelet, run for real against `podIP:mappedPort`: `httpGet`
//! (a status from 200 to 399 passes, as in the kubelet) and `tcpSocket`, with
//! `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `successThreshold` and
//! `failureThreshold`. Every attempt is recorded; a change of verdict is sent to the pod's kubelet
//! after `Delays::probe_lag`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use super::{
    Shared,
    processes::ProbeRecord,
    programs::{PortMap, resolve_port},
};

/// What to probe and where.
pub(crate) struct ProbeTarget {
    pub pod: String,
    pub index: usize,
    pub container: Value,
    pub ip: String,
    pub ports: PortMap,
    pub lag: Duration,
}

fn seconds(probe: &Value, field: &str, default: u64) -> Duration {
    Duration::from_secs(probe[field].as_u64().unwrap_or(default))
}

/// Probe until the kubelet stops listening; sends `(container index, ready)` on each change.
pub(crate) async fn run(shared: Arc<Shared>, target: ProbeTarget, tx: mpsc::Sender<(usize, bool)>) {
    let probe = target.container["readinessProbe"].clone();
    let period = seconds(&probe, "periodSeconds", 10).max(Duration::from_secs(1));
    let timeout = seconds(&probe, "timeoutSeconds", 1).max(Duration::from_secs(1));
    let success_threshold = probe["successThreshold"].as_u64().unwrap_or(1).max(1);
    let failure_threshold = probe["failureThreshold"].as_u64().unwrap_or(3).max(1);
    tokio::time::sleep(seconds(&probe, "initialDelaySeconds", 0)).await;
    let (mut ready, mut successes, mut failures) = (false, 0u64, 0u64);
    loop {
        let started = tokio::time::Instant::now();
        let record = attempt(&probe, &target, timeout).await;
        let ok = record.success;
        shared.processes.record_probe(record);
        if ok {
            (successes, failures) = (successes + 1, 0);
        } else {
            (successes, failures) = (0, failures + 1);
        }
        let verdict = if !ready && successes >= success_threshold {
            Some(true)
        } else if ready && failures >= failure_threshold {
            Some(false)
        } else {
            None
        };
        if let Some(v) = verdict {
            ready = v;
            tokio::time::sleep(target.lag).await;
            if tx.send((target.index, v)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep_until(started + period).await;
    }
}

async fn attempt(probe: &Value, t: &ProbeTarget, timeout: Duration) -> ProbeRecord {
    let (kind, spec) =
        if probe["httpGet"].is_object() { ("httpGet", &probe["httpGet"]) } else { ("tcpSocket", &probe["tcpSocket"]) };
    let port = resolve_port(&spec["port"], &t.container, &PortMap::new());
    let mapped = resolve_port(&spec["port"], &t.container, &t.ports);
    let path = if kind == "httpGet" { spec["path"].as_str().unwrap_or("/").to_string() } else { String::new() };
    let target = format!("{}:{mapped}", t.ip);
    let result = tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(&target).await.map_err(|e| format!("dial tcp {target}: {e}"))?;
        if kind == "tcpSocket" {
            return Ok(0u16);
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            t.ip
        );
        s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the connection closed before a status line".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).ok_or_else(|| format!("bad status line {line:?}"))
    })
    .await
    .unwrap_or_else(|_| Err(format!("{kind} {target}: timeout after {timeout:?}")));
    let (status, error) = match result {
        Ok(code) => (Some(code), None),
        Err(e) => (None, Some(e)),
    };
    let success = match status {
        Some(code) if kind == "httpGet" => (200..400).contains(&code),
        Some(_) => true,
        None => false,
    };
    let error = match (&error, status) {
        (None, Some(code)) if !success => Some(format!("HTTP probe failed with statuscode: {code}")),
        _ => error,
    };
    ProbeRecord {
        pod: t.pod.clone(),
        container: t.container["name"].as_str().unwrap_or_default().to_string(),
        kind,
        path,
        port,
        target,
        status,
        error,
        success,
        at: Instant::now(),
    }
}
