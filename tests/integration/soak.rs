//! Soak: churn and load on the local runtime, then check that nothing leaked. Ignored by default
//! (about three minutes on 2 cores in release); run it with
//! `cargo test --release --test integration soak -- --ignored --nocapture`.
//!
//! - 20 concurrent creates and deletes, in rounds (a small Python MCP server from
//!   tests/fixtures, so the churn measures us rather than `npx`);
//! - meanwhile 8 sessions × 2,000 `echo` calls through the bridge of one server-everything;
//! - and in each round 5 servers of the same fixture at once go through their whole life:
//!   create with a 2 s idle timeout → stopped by the idle check (`Stopped`/`IdleTimeout`) → a
//!   call through their URL wakes them → `stop_mcp_server` → `start_mcp_server` with
//!   `wait_for_ready` (and a call) → delete;
//! - afterwards: zero errors, no child process left, the meta server's RSS within 10% of its
//!   value after the warm-up round, and its open file descriptors back to the warm-up count.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const ROUNDS: usize = 5;
const WARM_UP_ROUNDS: usize = 2;
const CONCURRENT_CREATES: usize = 20;
const SESSIONS: usize = 8;
const CALLS_PER_SESSION: usize = 2_000;
/// Servers that go through create → idle stop → wake → stop → start → delete in each round.
const LIFECYCLE_SERVERS: usize = 5;
const IDLE_TIMEOUT_SECONDS: u64 = 2;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd dir").count()
}

/// One round: `CONCURRENT_CREATES` servers created at once (waiting for ready), then deleted at
/// once (waiting for deletion). Returns the number of errors.
async fn churn(meta: &Client) -> usize {
    let fixture = format!("{}/tests/fixtures/faulty_server.py", env!("CARGO_MANIFEST_DIR"));
    let creates = (0..CONCURRENT_CREATES).map(|_| {
        call(
            meta,
            "create_mcp_server",
            json!({"runtime_exec": "python3", "runtime_mcp": fixture, "runtime_args": ["ok"], "wait_for_ready": true, "labels": {"soak": "churn"}}),
        )
    });
    let created = futures::future::join_all(creates).await;
    let mut errors = created.iter().filter(|r| r.is_error == Some(true)).count();
    for r in created.iter().filter(|r| r.is_error == Some(true)) {
        eprintln!("create failed: {}", text(r));
    }
    let names: Vec<String> =
        created.iter().filter_map(|r| r.structured_content.as_ref()?["job_name"].as_str().map(String::from)).collect();
    let deletes =
        names.iter().map(|n| call(meta, "delete_mcp_server", json!({"job_name": n, "wait_for_deletion": true})));
    errors += futures::future::join_all(deletes).await.iter().filter(|r| r.is_error == Some(true)).count();
    errors
}

/// One `echo` call in a new session on `url`; an error message unless it answered.
async fn echo_once(url: &str, message: &str) -> Result<(), String> {
    let client = connect_http(url).await;
    let res = call(&client, "echo", json!({"message": message})).await;
    let _ = client.cancel().await;
    if res.is_error == Some(true) || !text(&res).contains(message) {
        return Err(format!("echo {message:?} answered {}", text(&res)));
    }
    Ok(())
}

/// Poll the status of `job` (every 200 ms, at most `limit`) until its phase is `phase`; the
/// last status then.
async fn wait_phase(meta: &Client, job: &str, phase: &str, limit: Duration) -> Result<Value, String> {
    let start = Instant::now();
    loop {
        let res = call(meta, "get_mcp_server_status", json!({"job_name": job})).await;
        let status = res.structured_content.clone().ok_or_else(|| format!("status of {job}: {}", text(&res)))?;
        if status["phase"] == phase {
            return Ok(status);
        }
        if start.elapsed() > limit {
            return Err(format!("{job} not {phase} within {limit:?}: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The structured answer of a tool call that must succeed with `phase` (and `reason`, if
/// given).
async fn expect_phase(
    meta: &Client,
    tool: &str,
    args: Value,
    phase: &str,
    reason: Option<&str>,
) -> Result<Value, String> {
    let res = call(meta, tool, args.clone()).await;
    let v = match (&res.is_error, &res.structured_content) {
        (Some(true), _) | (_, None) => return Err(format!("{tool}({args}) failed: {}", text(&res))),
        (_, Some(v)) => v.clone(),
    };
    if v["phase"] != phase || reason.is_some_and(|r| v["reason"] != r) {
        return Err(format!("{tool}({args}) answered {v}, not {phase} {reason:?}"));
    }
    Ok(v)
}

/// One server's life: create (idle timeout 2 s) → the idle check stops it → a call through its
/// URL wakes it → stop → start (wait_for_ready) and a call → delete.
async fn life(meta: &Client, n: usize) -> Result<(), String> {
    let fixture = format!("{}/tests/fixtures/faulty_server.py", env!("CARGO_MANIFEST_DIR"));
    let args = json!({
        "runtime_exec": "python3", "runtime_mcp": fixture, "runtime_args": ["ok"], "wait_for_ready": true,
        "idle_timeout_seconds": IDLE_TIMEOUT_SECONDS, "labels": {"soak": "lifecycle"},
    });
    let server = expect_phase(meta, "create_mcp_server", args, "Ready", None).await?;
    let job = server["job_name"].as_str().ok_or("no job_name")?.to_string();
    let url = server["urls"]["mcp"].as_str().ok_or("no urls.mcp")?.to_string();
    let result = async {
        let stopped = wait_phase(meta, &job, "Stopped", Duration::from_secs(30)).await?;
        if stopped["reason"] != "IdleTimeout" {
            return Err(format!("{job} stopped, but not by the idle check: {stopped}"));
        }
        echo_once(&url, &format!("wake-{n}")).await.map_err(|e| format!("{job}: the wake: {e}"))?;
        let by_name = json!({"job_name": job});
        expect_phase(meta, "stop_mcp_server", by_name.clone(), "Stopped", Some("StoppedByRequest")).await?;
        let start = json!({"job_name": job, "wait_for_ready": true});
        expect_phase(meta, "start_mcp_server", start, "Ready", None).await?;
        echo_once(&url, &format!("started-{n}")).await.map_err(|e| format!("{job}: after the start: {e}"))
    }
    .await;
    let deleted = call(meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
    match (result, deleted.is_error) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(true)) => Err(format!("delete {job}: {}", text(&deleted))),
        (Ok(()), _) => Ok(()),
    }
}

/// `LIFECYCLE_SERVERS` lives at once. Returns the number of errors.
async fn lifecycle(meta: &Client) -> usize {
    let lives = futures::future::join_all((0..LIFECYCLE_SERVERS).map(|n| life(meta, n))).await;
    lives.into_iter().filter_map(Result::err).inspect(|e| eprintln!("lifecycle failed: {e}")).count()
}

/// `SESSIONS` clients, each making `CALLS_PER_SESSION` echo calls. Returns the number of errors.
async fn load(url: &str) -> usize {
    let sessions = (0..SESSIONS).map(|s| {
        let url = url.to_string();
        tokio::spawn(async move {
            let client = connect_http(&url).await;
            let mut errors = 0;
            for i in 0..CALLS_PER_SESSION {
                let message = format!("s{s}-{i}");
                let res = call(&client, "echo", json!({"message": message})).await;
                if res.is_error == Some(true) || !text(&res).contains(&message) {
                    errors += 1;
                }
            }
            let _ = client.cancel().await;
            errors
        })
    });
    futures::future::join_all(sessions).await.into_iter().map(|r| r.expect("session task")).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: a few minutes; run with --ignored"]
async fn churn_and_load_leave_no_process_memory_or_descriptor_behind() {
    let (meta, pid) = meta_stdio(&["--max-servers", "64"]).await;
    let tree = TreeWatch::start(pid);
    let started = Instant::now();

    let everything = call_ok(&meta, "create_mcp_server", json!({"preset": "everything", "wait_for_ready": true})).await;
    let url = everything["urls"]["mcp"].as_str().unwrap().to_string();
    let job = everything["job_name"].as_str().unwrap().to_string();

    // Warm-up: two rounds (allocator arenas and buffers reach their working size), then the
    // baseline.
    let mut errors = 0;
    for _ in 0..WARM_UP_ROUNDS {
        let (c, l, f) = tokio::join!(churn(&meta), load(&url), lifecycle(&meta));
        errors += c + l + f;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_base, fds_base) = (rss_kib(pid), open_fds(pid));
    eprintln!("after warm-up: RSS {rss_base} KiB, {fds_base} fds, {:.1?}", started.elapsed());

    for round in WARM_UP_ROUNDS..ROUNDS {
        let (c, l, f) = tokio::join!(churn(&meta), load(&url), lifecycle(&meta));
        errors += c + l + f;
        eprintln!("round {round}: RSS {} KiB, {} fds, {:.1?}", rss_kib(pid), open_fds(pid), started.elapsed());
    }
    call_ok(&meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_end, fds_end) = (rss_kib(pid), open_fds(pid));
    let left = wait_gone(&tree.seen(), Duration::from_secs(10)).await;
    eprintln!(
        "end: RSS {rss_end} KiB ({:+.1}%), {fds_end} fds, {} calls, {} creates, {} idle stops, wakes and \
         stop/starts, {:.1?}",
        (rss_end as f64 / rss_base as f64 - 1.0) * 100.0,
        ROUNDS * SESSIONS * CALLS_PER_SESSION,
        ROUNDS * (CONCURRENT_CREATES + LIFECYCLE_SERVERS),
        ROUNDS * LIFECYCLE_SERVERS,
        started.elapsed()
    );

    assert_eq!(errors, 0, "every create, delete, call, idle stop, wake, stop and start succeeded");
    assert!(left.is_empty(), "no child process left: {left:?}");
    assert!(rss_end <= rss_base + rss_base / 10, "RSS {rss_end} KiB is more than 10% over {rss_base} KiB");
    assert!(fds_end <= fds_base, "file descriptors leaked: {fds_base} after warm-up, {fds_end} at the end");
    let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
    assert_eq!(list["servers"].as_array().unwrap().len(), 0, "{list}");
    let _ = meta.cancel().await;
}
