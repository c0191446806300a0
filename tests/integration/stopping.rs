//! The life between create and delete: idle servers stop (`Stopped`/`IdleTimeout`), a request
//! to a stopped server's URL wakes it, `stop_mcp_server`/`start_mcp_server` are idempotent, a
//! stopped server's TTL still ends it, and on Kubernetes a stop is a suspended Job that a
//! restarted meta server keeps stopped and can start, with the deadline set to what is left of
//! the TTL. Local runtime and the fake API server with its process kubelet.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use serde_json::{Value, json};

use crate::{fake_kube::FakeKube, kubelet::process_cluster, kubernetes::kube_meta_with_env, support::*};

const NS: &str = "mcp-test";
const LIMIT: Duration = Duration::from_secs(90);

/// Poll the status of `job` until `done` holds (at most `limit`); the last status.
async fn status_until(client: &Client, job: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let status = call_ok(client, "get_mcp_server_status", json!({"job_name": job})).await;
        if done(&status) || start.elapsed() > limit {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One `get_current_time` call in a new session on `url`: the answer's text.
async fn time_call(url: &str) -> String {
    let client = connect_http(url).await;
    let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
    assert_ne!(res.is_error, Some(true), "{}", text(&res));
    let answer = text(&res);
    let _ = client.cancel().await;
    answer
}

fn listed<'a>(list: &'a Value, job: &str) -> Option<&'a Value> {
    list["servers"].as_array().unwrap().iter().find(|s| s["job_name"] == job)
}

/// Seconds from `rfc3339` to now (negative for a time to come).
fn seconds_since(rfc3339: &str) -> f64 {
    let t = humantime::parse_rfc3339(rfc3339).unwrap_or_else(|e| panic!("{rfc3339}: {e}"));
    match SystemTime::now().duration_since(t) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_local_server_stops_and_a_call_through_its_url_wakes_it() {
    within(LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"preset": "time", "idle_timeout_seconds": 2, "wait_for_ready": true}),
        )
        .await;
        assert_eq!(server["idle_timeout_seconds"], 2, "{server}");
        let (job, url) =
            (server["job_name"].as_str().unwrap().to_string(), server["urls"]["mcp"].as_str().unwrap().to_string());
        assert!(time_call(&url).await.contains("UTC"));
        let used = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert!(seconds_since(used["last_activity"].as_str().unwrap()) < 2.0, "the call was activity: {used}");
        assert!(!descendants(pid).is_empty(), "the server's processes run");

        let stopped = status_until(&meta, &job, Duration::from_secs(10), |s| s["phase"] == "Stopped").await;
        let bridge = reqwest::get(url.replace("/mcp", "/status")).await.unwrap().text().await.unwrap();
        assert_eq!(
            (stopped["phase"].as_str(), stopped["reason"].as_str()),
            (Some("Stopped"), Some("IdleTimeout")),
            "{stopped}; the bridge: {bridge}"
        );
        assert_eq!(stopped["urls"]["mcp"], url.as_str(), "a stopped server keeps its URL");
        let last = seconds_since(stopped["last_activity"].as_str().unwrap());
        assert!(last >= 2.0, "stopped only after 2 s without traffic (last activity {last:.1} s ago)");
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(listed(&list, &job).expect("listed")["phase"], "Stopped");
        let gone = wait_gone(&snapshot(pid), Duration::from_secs(5)).await;
        assert!(gone.is_empty(), "no process runs for a stopped server: {:?}", cmdlines(&gone));

        // The same URL, a new session: the request is held while the server starts.
        let woke = Instant::now();
        assert!(time_call(&url).await.contains("UTC"));
        eprintln!("wake on request (local): {:?}", woke.elapsed());
        let ready = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(ready["phase"], "Ready", "{ready}");
        assert!(ready.get("reason").is_none(), "{ready}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_are_idempotent_and_the_ttl_still_ends_a_stopped_server() {
    within(LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let url = server["urls"]["mcp"].as_str().unwrap().to_string();
        for _ in 0..2 {
            let s = call_ok(&meta, "stop_mcp_server", json!({"job_name": job})).await;
            assert_eq!((s["phase"].as_str(), s["reason"].as_str()), (Some("Stopped"), Some("StoppedByRequest")), "{s}");
        }
        let gone = wait_gone(&snapshot(pid), Duration::from_secs(5)).await;
        assert!(gone.is_empty(), "stopped: no process left: {:?}", cmdlines(&gone));
        let logs = call(&meta, "get_mcp_server_logs", json!({"job_name": job})).await;
        assert_ne!(logs.is_error, Some(true), "a stopped server's last output stays readable: {}", text(&logs));
        for _ in 0..2 {
            let s = call_ok(&meta, "start_mcp_server", json!({"job_name": job, "wait_for_ready": true})).await;
            assert_eq!(s["phase"], "Ready", "{s}");
            assert_eq!(s["urls"]["mcp"], url.as_str());
        }
        assert!(time_call(&url).await.contains("UTC"));

        for tool in ["stop_mcp_server", "start_mcp_server"] {
            let e = call_err(&meta, tool, json!({"job_name": "nope-00000000"})).await;
            assert!(e.contains("no MCP server named `nope-00000000`"), "{tool}: {e}");
        }

        let short = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "ttl_seconds": 3})).await;
        let short = short["job_name"].as_str().unwrap().to_string();
        call_ok(&meta, "stop_mcp_server", json!({"job_name": short})).await;
        let start = Instant::now();
        let ended = loop {
            let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
            if listed(&list, &short).is_none() {
                break true;
            }
            if start.elapsed() > Duration::from_secs(15) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(ended, "the TTL ends a stopped server");
    })
    .await;
}

fn pods_of(fake: &FakeKube, job: &str) -> usize {
    fake.objects::<Pod>(NS)
        .iter()
        .filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with(&format!("{job}-"))))
        .count()
}

fn job_of(fake: &FakeKube, job: &str) -> Job {
    fake.object::<Job>(NS, job).expect("the Job stays")
}

/// `activeDeadlineSeconds` of `job`, and what was left of its TTL (`expires_at`) when the Job
/// last started (its `startTime`, which Kubernetes resets on resume).
fn deadline_and_left(fake: &FakeKube, job: &str, expires_at: &str) -> (i64, f64) {
    let job = job_of(fake, job);
    let deadline = job.spec.unwrap().active_deadline_seconds.unwrap();
    let started = job.status.and_then(|s| s.start_time).expect("a started Job has a startTime").0;
    let started = humantime::format_rfc3339_seconds(SystemTime::from(started)).to_string();
    (deadline, seconds_since(&started) - seconds_since(expires_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kubernetes_an_idle_server_is_a_suspended_job_and_a_call_through_the_gateway_wakes_it() {
    within(LIMIT, async {
        let c = process_cluster().await;
        // One replica, always the leader: the requests counted below are the idle check's alone
        // (no Lease renewals, and the reaper looks at its usual pace).
        let meta = kube_meta_with_env(&c, &["--leader-election", "off"], &[]).await.client;
        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"preset": "time", "idle_timeout_seconds": 3, "ttl_seconds": 600, "wait_for_ready": true}),
        )
        .await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let url = server["urls"]["mcp"].as_str().unwrap().to_string();
        let expires = server["expires_at"].as_str().unwrap().to_string();
        assert!(time_call(&url).await.contains("UTC"));
        let used = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(used["idle_timeout_seconds"], 3, "{used}");
        assert!(seconds_since(used["last_activity"].as_str().expect("last_activity from the bridge")) < 3.0, "{used}");
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        let entry = listed(&list, &job).unwrap();
        assert!(entry["last_activity"].is_string() && entry["sessions"].is_number(), "list reads the bridge: {entry}");

        // No polling from here until it stopped: every API request is the meta server's own.
        c.fake.clear_requests();
        let stopped_in_time =
            c.fake.wait_until(Duration::from_secs(15), |f| job_of(f, &job).spec.unwrap().suspend == Some(true)).await;
        assert!(stopped_in_time, "the idle server's Job is suspended");
        assert!(c.fake.wait_until(Duration::from_secs(10), |f| pods_of(f, &job) == 0).await, "its pod is gone");
        let requests = c.fake.requests();
        let checks = requests.iter().filter(|r| r.resource == "jobs" && r.verb == "list").count();
        let stop: Vec<String> = requests
            .iter()
            .filter(|r| !(r.resource == "jobs" && r.verb == "list") && r.resource != "pods/portforward")
            .map(|r| format!("{} {}", r.verb, r.resource))
            .collect();
        eprintln!("idle checks until the stop: {checks} Job lists; the stop: {stop:?}");
        assert!((1..=4).contains(&checks), "one Job list per check, a few checks in 3 s: {checks}");
        let allowed = ["get jobs", "patch jobs", "list pods", "watch pods"];
        assert!(
            stop.iter().all(|r| allowed.contains(&r.as_str())),
            "the check and the stop read nothing else: {stop:?}"
        );

        let stopped = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(
            (stopped["phase"].as_str(), stopped["reason"].as_str()),
            (Some("Stopped"), Some("IdleTimeout")),
            "{stopped}"
        );
        assert!(c.fake.object::<k8s_openapi::api::core::v1::Service>(NS, &job).is_some(), "the Service stays");
        assert!(stopped["last_activity"].is_string(), "the last activity is kept on the Job: {stopped}");

        let woke = Instant::now();
        assert!(time_call(&url).await.contains("UTC"), "a call through the same URL wakes it and answers");
        eprintln!("wake on request (fake): {:?}", woke.elapsed());
        let ready = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(ready["phase"], "Ready", "{ready}");
        let (deadline, left) = deadline_and_left(&c.fake, &job, &expires);
        assert!(
            (deadline as f64 - left).abs() <= 2.0,
            "the deadline on resume is the TTL left: {deadline} vs {left:.1}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_meta_server_keeps_a_stopped_server_stopped_and_can_start_it() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let first = kube_meta_with_env(&c, &[], &[]).await.client;
        let server =
            call_ok(&first, "create_mcp_server", json!({"preset": "time", "ttl_seconds": 900, "wait_for_ready": true}))
                .await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let expires = server["expires_at"].as_str().unwrap().to_string();
        // One that the first meta server leaves idling: the next one stops it.
        let idler = call_ok(
            &first,
            "create_mcp_server",
            json!({"preset": "time", "idle_timeout_seconds": 4, "wait_for_ready": true}),
        )
        .await;
        let idler = idler["job_name"].as_str().unwrap().to_string();
        for _ in 0..2 {
            let s = call_ok(&first, "stop_mcp_server", json!({"job_name": job})).await;
            assert_eq!(s["phase"], "Stopped", "{s}");
        }
        assert_eq!(pods_of(&c.fake, &job), 0, "the stop answered once the pod was gone");
        let _ = first.cancel().await;

        let second = kube_meta_with_env(&c, &[], &[]).await.client;
        let list = call_ok(&second, "list_mcp_servers", json!({})).await;
        let entry = listed(&list, &job).expect("the stopped server is listed");
        assert_eq!((entry["phase"].as_str(), entry["reason"].as_str()), (Some("Stopped"), Some("StoppedByRequest")));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(pods_of(&c.fake, &job), 0, "the new meta server leaves it stopped");
        let idle_stopped = status_until(&second, &idler, Duration::from_secs(20), |s| s["phase"] == "Stopped").await;
        assert_eq!(idle_stopped["reason"], "IdleTimeout", "the idle timeout survives the restart: {idle_stopped}");

        let mut url = String::new();
        for _ in 0..2 {
            let s = call_ok(&second, "start_mcp_server", json!({"job_name": job, "wait_for_ready": true})).await;
            assert_eq!(s["phase"], "Ready", "{s}");
            // This meta server's gateway: the first one's listener went with it.
            url = s["urls"]["mcp"].as_str().unwrap().to_string();
        }
        let (deadline, left) = deadline_and_left(&c.fake, &job, &expires);
        assert!(
            (deadline as f64 - left).abs() <= 2.0,
            "activeDeadlineSeconds {deadline} is the TTL left ({left:.1} s)"
        );
        assert!(deadline < 900, "not the whole TTL again: {deadline}");
        assert!(time_call(&url).await.contains("UTC"));
        for tool in ["stop_mcp_server", "start_mcp_server"] {
            let e = call_err(&second, tool, json!({"job_name": "nope-00000000"})).await;
            assert!(e.contains("no MCP server named `nope-00000000`"), "{tool}: {e}");
        }
    })
    .await;
}
