//! `list_mcp_servers` with many servers on `serve --runtime kubernetes`, against the fake
//! Kubernetes API server of tests/support/fake_kube (in this process, on 127.0.0.1).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    fake_kube::{FakeConfig, FakeKube},
    measure::{median, ms_since, sample_load},
    meta::Meta,
    report::ListFigure,
    tools::Tools,
};

const NAMESPACE: &str = "mcp-bench";

/// Insert `count` labelled Jobs straight into the fake's store, start the meta server on it, and
/// time `n` calls of `list_mcp_servers` (after one untimed call that checks the count).
pub async fn list_servers(bin: &std::path::Path, tools: &Tools, count: usize, n: usize) -> Result<ListFigure> {
    let fake = FakeKube::start(FakeConfig::new(NAMESPACE)).await;
    let dir = tools.root.join("fake-kube");
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = fake.write_kubeconfig(&dir, NAMESPACE);
    let now = SystemTime::now();
    for i in 0..count {
        fake.insert_json("jobs", NAMESPACE, job(&format!("time-{i:08}"), now));
    }
    let meta = Meta::start(
        bin,
        tools,
        &["--runtime", "kubernetes", "--namespace", NAMESPACE],
        &[("KUBECONFIG", &kubeconfig)],
        "serve-kubernetes.log",
    )
    .await?;
    let result = async {
        let first = meta.call("list_mcp_servers", json!({})).await?;
        let listed = first["servers"].as_array().map_or(0, Vec::len);
        if listed != count {
            bail!("list_mcp_servers listed {listed} servers, not the {count} inserted");
        }
        let mut samples = Vec::new();
        for _ in 0..n {
            sample_load();
            let t0 = std::time::Instant::now();
            meta.call("list_mcp_servers", json!({})).await.context("list_mcp_servers")?;
            samples.push(ms_since(t0));
        }
        Ok(ListFigure { servers: count, median_ms: median(&samples), n })
    }
    .await;
    meta.stop().await;
    drop(fake);
    result
}

/// A Job as the kubernetes runtime labels and annotates its servers (status: running).
fn job(name: &str, now: SystemTime) -> Value {
    let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/managed-by": "mcp-ephemeral",
                "app.kubernetes.io/instance": name,
                "mcp-ephemeral.dev/preset": "time",
            },
            "annotations": {
                "mcp-ephemeral.dev/created-at": rfc3339(now),
                "mcp-ephemeral.dev/expires-at": rfc3339(now + Duration::from_secs(3600)),
            },
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/instance": name } },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "server", "image": "mcp-ephemeral:bench", "args": ["uvx", "mcp-server-time"] }],
                },
            },
        },
        "status": { "active": 1 },
    })
}
