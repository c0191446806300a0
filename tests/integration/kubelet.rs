//! `serve --runtime kubernetes` against the fake API server with its process kubelet: the pods'
//! containers are real processes (the built bridge, `uvx mcp-server-time`), their readiness
//! probes hit the real `/readyz`, and the gateway reaches them through real port-forward
//! tunnels. A wrong probe path or port, a bridge bound to 127.0.0.1, or a tunnel to the wrong
//! port fails here, where the scripted kubelet would pass.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::{
    fake_kube::{Delays, FakeConfig, FakeKube, Programs},
    kubernetes::{Cluster, cluster, kube_meta_with_env},
    support::*,
};

const NS: &str = "mcp-test";
/// Each test takes a few seconds; a hang fails at this limit instead of stalling CI.
const LIMIT: Duration = Duration::from_secs(45);

/// The image's programs: the bridge is the binary under test.
fn programs() -> Programs {
    Programs::new().program("mcp-ephemeral", BIN).program("/usr/local/bin/mcp-ephemeral", BIN)
}

/// The fake with its process kubelet, in namespace `mcp-test`.
pub(crate) async fn process_cluster() -> Cluster {
    cluster(FakeConfig::new(NS).processes(programs())).await
}

/// The meta server on stdio against `c`, with `env` added; its stderr is echoed and kept.
async fn meta(c: &Cluster, env: &[(&str, &str)]) -> (Client, Arc<Mutex<Vec<String>>>) {
    let m = kube_meta_with_env(c, &["--ready-timeout", "25s"], env).await;
    (m.client, m.logs)
}

/// The pod of `job`.
fn pod_of(fake: &FakeKube, job: &str) -> Pod {
    fake.objects::<Pod>(NS)
        .into_iter()
        .find(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with(&format!("{job}-"))))
        .unwrap_or_else(|| panic!("a pod of {job}"))
}

fn condition_time(pod: &Pod, type_: &str) -> Option<(String, String)> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.last_transition_time.as_ref()?.0.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_time_server_is_ready_only_once_its_bridge_answers_readyz() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        assert_eq!(server["phase"], "Ready", "{server}");
        let job = server["job_name"].as_str().unwrap().to_string();
        // Ready was seen through a real answer: the kubelet's probe, or the meta server's own
        // /readyz through a tunnel.
        assert!(
            c.fake.probes().iter().any(|p| p.success) || c.fake.tunnels_opened() > 0,
            "nothing reached the bridge before the server was called Ready"
        );

        // The kubelet's own probe makes the pod Ready, from a real 200 on /readyz.
        let ready = c
            .fake
            .wait_until(Duration::from_secs(10), |f| {
                condition_time(&pod_of(f, &job), "Ready").is_some_and(|(status, _)| status == "True")
            })
            .await;
        let probes = c.fake.probes();
        assert!(ready, "the kubelet's readiness probe passed; probes: {probes:#?}");
        let pod = pod_of(&c.fake, &job);
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP");
        assert!(ip.starts_with("127.0.") && ip != "127.0.0.1", "a loopback pod IP of its own: {ip}");
        let first_ok = probes.iter().find(|p| p.success).expect("a successful probe");
        assert_eq!((first_ok.kind, first_ok.path.as_str(), first_ok.port), ("httpGet", "/readyz", 8080));
        assert_eq!(first_ok.status, Some(200));
        assert!(first_ok.target.starts_with(&format!("{ip}:")), "probed at the pod IP: {first_ok:?}");
        let started = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone())
            .expect("the container runs")
            .0;
        let (_, ready_at) = condition_time(&pod, "Ready").unwrap();
        assert!(ready_at >= started.to_string(), "Ready ({ready_at}) came after the container started ({started})");
        let process = c.fake.started_processes().into_iter().find(|p| p.launch.container == "mcp").unwrap();
        let listen = process.launch.args.iter().skip_while(|a| *a != "--listen").nth(1).unwrap();
        assert!(listen.starts_with("0.0.0.0:") && listen != "0.0.0.0:8080", "the bridge's port is mapped: {listen}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_secret_env_reach_the_server_process_and_the_meta_servers_token_does_not() {
    within(LIMIT, async {
        // A shell command rather than a script file: a file under /tmp (where a checkout may
        // live) would be hidden by the pod's own /tmp.
        let show_then_run = "echo \"seen PLAIN=$PLAIN API_KEY=$API_KEY TOKEN=${MCP_EPHEMERAL_TOKEN:-unset}\" >&2; exec uvx mcp-server-time";
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[("MCP_EPHEMERAL_TOKEN", "meta-token-0123456789abcdef")]).await;
        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"runtime_exec": "sh", "runtime_args": ["-c", show_then_run],
                   "env": {"PLAIN": "1"}, "secret_env": {"API_KEY": "s3cr3t-42"}, "wait_for_ready": true}),
        )
        .await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let logs = call(&meta, "get_mcp_server_logs", json!({"job_name": job})).await;
        assert!(text(&logs).contains("seen PLAIN=1 API_KEY=s3cr3t-42 TOKEN=unset"), "{}", text(&logs));

        let pod = pod_of(&c.fake, &job).metadata.name.unwrap();
        let main = c.fake.started_processes().into_iter().find(|p| p.pod == pod && p.launch.container == "mcp").unwrap();
        let env = |k: &str| main.launch.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!((env("PLAIN"), env("API_KEY")), (Some("1"), Some("s3cr3t-42")));
        assert_eq!(env("MCP_EPHEMERAL_TOKEN"), None, "the meta server's token is not in the pod");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_gateway_reaches_the_time_server_over_a_port_forward_tunnel() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, logs) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let url = server["urls"]["mcp"].as_str().unwrap();
        let client = connect_http(url).await;
        let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        // The readiness check may have opened the pooled tunnel the call then reuses.
        assert!(c.fake.tunnels_opened() > 0, "the gateway went through a port-forward tunnel");
        assert!(
            c.fake.requests().iter().any(|r| r.resource == "pods/portforward" && r.status == 101),
            "a port-forward was upgraded to a websocket"
        );
        // The pooled tunnel's connection task does not hold the meta server's shutdown.
        let _ = meta.cancel().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !logs.lock().unwrap().iter().any(|l| l.contains("every task ended")) {
            let stuck = logs.lock().unwrap().iter().find(|l| l.contains("tasks still running")).cloned();
            assert!(stuck.is_none(), "{stuck:?}");
            assert!(Instant::now() < deadline, "the meta server shut down within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_server_leaves_no_process_of_its_pod_running() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let pod = pod_of(&c.fake, &job).metadata.name.unwrap();
        let pids: Vec<u32> = c.fake.started_processes().into_iter().filter(|p| p.pod == pod).map(|p| p.pid).collect();
        assert!(!pids.is_empty() && pids.iter().all(|p| alive(*p)), "the pod's processes run: {pids:?}");
        let mut processes: Vec<Seen> =
            pids.iter().filter_map(|p| Some(Seen { pid: *p, start: crate::procfs::start_time(*p)? })).collect();
        // The bridge's server processes (uvx, python) belong to the pod too.
        let below: Vec<Seen> = pids.iter().flat_map(|p| snapshot(*p)).collect();
        assert!(!below.is_empty(), "the bridge started its server");
        processes.extend(below);

        let deleted = call_ok(&meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted", "{deleted}");
        let left = wait_gone(&processes, Duration::from_secs(10)).await;
        let shown: Vec<String> = left.iter().map(|p| format!("{}: {}", p.pid, cmdline(p.pid))).collect();
        assert!(left.is_empty(), "still running: {shown:?}");
        let gone = c.fake.wait_until(Duration::from_secs(5), |f| f.objects::<Pod>(NS).is_empty()).await;
        assert!(gone, "the pod is gone");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_image_server_runs_through_the_init_container_copy_and_becomes_ready() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"image": "registry.example/time:1", "runtime_args": ["uvx", "mcp-server-time"], "wait_for_ready": true}),
        )
        .await;
        assert_eq!(server["phase"], "Ready", "{server}");
        let job = server["job_name"].as_str().unwrap().to_string();
        let pod = pod_of(&c.fake, &job);
        let status = pod.status.clone().unwrap();
        let init = &status.init_container_statuses.as_ref().expect("init container statuses")[0];
        let done = init.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("the init container finished");
        assert_eq!((done.exit_code, done.reason.as_deref()), (0, Some("Completed")));
        assert_eq!(condition_time(&pod, "Initialized").map(|c| c.0).as_deref(), Some("True"));
        let name = pod.metadata.name.unwrap();
        let started: Vec<_> = c.fake.started_processes().into_iter().filter(|p| p.pod == name).collect();
        assert_eq!(started.iter().map(|p| p.launch.container.as_str()).collect::<Vec<_>>(), ["bridge", "mcp"]);
        assert_eq!(started[0].launch.program, "cp");
        assert_eq!(started[0].launch.args[0], BIN, "the image's bridge is the binary under test");
        assert!(
            started[1].launch.program.ends_with("/volumes/bridge/mcp-ephemeral"),
            "the main container runs the copy from the shared volume: {}",
            started[1].launch.program
        );
        let client = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));
    })
    .await;
}

/// A kubelet slow to report its probe (`probe_lag`) leaves the decision to the meta server's own
/// `/readyz` check through a tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_slow_kubelet_the_meta_servers_own_readyz_check_through_a_tunnel_decides() {
    within(LIMIT, async {
        let delays = Delays { probe_lag: Duration::from_secs(8), ..Delays::default() };
        let c = cluster(FakeConfig::new(NS).delays(delays).processes(programs())).await;
        let (meta, logs) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        assert_eq!(server["phase"], "Ready", "{server}");
        let job = server["job_name"].as_str().unwrap().to_string();
        let pod = pod_of(&c.fake, &job);
        assert_ne!(
            condition_time(&pod, "Ready").map(|c| c.0).as_deref(),
            Some("True"),
            "the kubelet has not said Ready yet"
        );
        assert!(c.fake.tunnels_opened() > 0, "the meta server asked /readyz through a tunnel");
        assert!(logs.lock().unwrap().iter().any(|l| l.contains("confirmed by /readyz")), "confirmed by its own check");

        // The answer times each step of the start, in order, up to the recorded confirmation.
        let steps: Vec<(String, u64)> = server["startup"]
            .as_array()
            .unwrap_or_else(|| panic!("no startup steps: {server}"))
            .iter()
            .map(|s| (s["step"].as_str().unwrap().to_string(), s["after_ms"].as_u64().unwrap()))
            .collect();
        let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "created",
                "scheduled",
                "image_present",
                "container_started",
                "bridge_listening",
                "initialize_answered",
                "recorded"
            ],
            "{server}"
        );
        assert!(steps.windows(2).all(|w| w[0].1 <= w[1].1), "steps in time order: {steps:?}");
        assert!(steps.last().unwrap().1 < 8_000, "ready before the kubelet's lagging probe: {steps:?}");
    })
    .await;
}

/// A Job of `sh` containers, straight through the kube client (no meta server).
fn sh_job(name: &str, init: &str, main: &str) -> k8s_openapi::api::batch::v1::Job {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "backoffLimit": 0, "template": { "spec": {
            "restartPolicy": "Never",
            "initContainers": [{ "name": "init", "image": "busybox", "command": ["sh", "-c", init] }],
            "containers": [{ "name": "main", "image": "busybox", "command": ["sh", "-c", main] }],
        }}},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_kubelet_reports_exit_codes_init_failures_and_log_lines_like_a_kubelet() {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::{Api, LogParams, PostParams};
    within(LIMIT, async {
        let c = process_cluster().await;
        let jobs: Api<Job> = Api::namespaced(c.fake.client(NS), NS);
        let pods: Api<Pod> = Api::namespaced(c.fake.client(NS), NS);
        let pp = PostParams::default();
        jobs.create(&pp, &sh_job("crash", "echo init-ran", "echo one; echo two; echo three >&2; exit 3"))
            .await
            .unwrap();
        jobs.create(&pp, &sh_job("bad-init", "exit 7", "echo never")).await.unwrap();
        let failed = |f: &FakeKube, job: &str| {
            f.objects::<Pod>(NS).into_iter().any(|p| {
                p.metadata.name.as_deref().is_some_and(|n| n.starts_with(&format!("{job}-")))
                    && p.status.and_then(|s| s.phase).as_deref() == Some("Failed")
            })
        };
        assert!(c.fake.wait_until(Duration::from_secs(10), |f| failed(f, "crash") && failed(f, "bad-init")).await);

        let crash = pod_of(&c.fake, "crash");
        let main = &crash.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        let t = main.state.as_ref().unwrap().terminated.as_ref().expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref(), main.restart_count), (3, Some("Error"), 0));
        let name = crash.metadata.name.clone().unwrap();
        let all = pods.logs(&name, &LogParams { container: Some("main".into()), ..Default::default() }).await.unwrap();
        for line in ["one", "two", "three"] {
            assert!(all.lines().any(|l| l == line), "{all:?}");
        }
        let tail = pods.logs(&name, &LogParams { tail_lines: Some(1), ..Default::default() }).await.unwrap();
        assert_eq!(tail.lines().count(), 1, "{tail:?}");
        let init = pods.logs(&name, &LogParams { container: Some("init".into()), ..Default::default() }).await.unwrap();
        assert_eq!(init, "init-ran\n");

        let bad = pod_of(&c.fake, "bad-init");
        let status = bad.status.clone().unwrap();
        let init = &status.init_container_statuses.as_ref().unwrap()[0];
        let t = init.state.as_ref().unwrap().terminated.as_ref().expect("init terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (7, Some("Error")));
        assert_eq!(condition_time(&bad, "Initialized").map(|c| c.0).as_deref(), Some("False"));
        let main = &status.container_statuses.as_ref().unwrap()[0];
        assert!(main.state.as_ref().unwrap().waiting.is_some(), "the main container never started: {main:?}");
        assert!(
            !c.fake
                .started_processes()
                .iter()
                .any(|p| p.pod == bad.metadata.name.clone().unwrap() && p.launch.container == "main")
        );
        let jobs_failed = c
            .fake
            .wait_until(Duration::from_secs(5), |f| {
                f.objects::<Job>(NS).iter().all(|j| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed"))
                })
            })
            .await;
        assert!(jobs_failed, "the Job controller turns the failed pods into failed Jobs");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_a_ready_create_status_list_and_mount_agree_though_the_kubelet_lags() {
    within(LIMIT, async {
        // The kubelet marks the pod Ready 3 s after its probe passes; the meta server's own
        // /readyz check through a tunnel answers the create long before.
        let delays = Delays { probe_lag: Duration::from_secs(3), ..Delays::default() };
        let c = cluster(FakeConfig::new(NS).processes(programs()).delays(delays)).await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        assert_eq!(server["phase"], "Ready", "{server}");
        let job = server["job_name"].as_str().unwrap().to_string();
        let status = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(status["phase"], "Ready", "status agrees with the create at once: {status}");
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"][0]["phase"], "Ready", "list agrees too: {list}");
        let pod = pod_of(&c.fake, &job);
        let kubelet = condition_time(&pod, "Ready").map(|c| c.0);
        assert_eq!(
            kubelet.as_deref(),
            Some("False"),
            "the kubelet had not caught up, so the checks above mean something"
        );
        let mounted = call_ok(&meta, "mount_mcp_server", json!({"job_name": job, "name": "t"})).await;
        assert!(mounted["tools"].to_string().contains("t_get_current_time"), "{mounted}");
        let res = call(&meta, "t_get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        assert!(text(&res).contains("UTC"), "the call went to the pod and back: {}", text(&res));
        let removed = call_ok(&meta, "remove_mcp_server_mount", json!({"name": "t"})).await;
        assert!(removed["tools_removed"].to_string().contains("t_get_current_time"), "{removed}");
        let params = rmcp::model::CallToolRequestParams::new("t_get_current_time");
        let gone = meta.call_tool(params).await;
        assert!(gone.is_err_and(|e| e.to_string().contains("unknown tool")), "an unmounted tool is gone");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_job_or_reaching_its_deadline_stops_the_pods_processes() {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    within(LIMIT, async {
        let c = process_cluster().await;
        let jobs: Api<Job> = Api::namespaced(c.fake.client(NS), NS);
        let pp = PostParams::default();
        jobs.create(&pp, &sh_job("suspended", "true", "sleep 600")).await.unwrap();
        let mut deadline = sh_job("deadline", "true", "sleep 600");
        deadline.spec.as_mut().unwrap().active_deadline_seconds = Some(2);
        jobs.create(&pp, &deadline).await.unwrap();
        let main_of = |f: &FakeKube, job: &str| {
            f.started_processes()
                .into_iter()
                .find(|p| p.pod.starts_with(&format!("{job}-")) && p.launch.container == "main")
                .map(|p| p.pid)
        };
        let running = c
            .fake
            .wait_until(Duration::from_secs(10), |f| {
                ["suspended", "deadline"].iter().all(|j| main_of(f, j).is_some_and(alive))
            })
            .await;
        assert!(running, "both Jobs' main containers run");
        let (suspended, deadline) = (main_of(&c.fake, "suspended").unwrap(), main_of(&c.fake, "deadline").unwrap());

        let patch = Patch::Merge(json!({"spec": {"suspend": true}}));
        jobs.patch("suspended", &PatchParams::default(), &patch).await.unwrap();
        let stopped = c
            .fake
            .wait_until(Duration::from_secs(10), |f| {
                !alive(suspended)
                    && !f
                        .objects::<Pod>(NS)
                        .iter()
                        .any(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("suspended-")))
            })
            .await;
        assert!(stopped, "a suspended Job's pod and its processes are gone");

        let failed = c
            .fake
            .wait_until(Duration::from_secs(10), |f| {
                !alive(deadline)
                    && f.object::<Job>(NS, "deadline").and_then(|j| j.status).and_then(|s| s.conditions).is_some_and(
                        |cs| cs.iter().any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("DeadlineExceeded")),
                    )
            })
            .await;
        assert!(failed, "past activeDeadlineSeconds the process is killed and the Job fails with DeadlineExceeded");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_gateway_reuse_their_tunnels_and_a_broken_tunnel_fails_only_its_exchanges() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let url = server["urls"]["mcp"].as_str().unwrap().to_string();
        let before = c.fake.tunnels_opened();
        c.fake.clear_requests();
        let client = connect_http(&url).await;
        for _ in 0..30 {
            let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
            assert!(text(&res).contains("UTC"), "{}", text(&res));
        }
        let opened = c.fake.tunnels_opened() - before;
        // The POSTs reuse the tunnel the readiness confirmation opened; the session's SSE
        // stream holds one of its own.
        eprintln!("tunnels opened by a session and 30 calls: {opened}");
        assert!(opened <= 2, "30 calls (and the session's setup) opened {opened} tunnels; they should be reused");
        // The pod to dial comes from the directory's watch, not from a lookup per dial (one
        // that names this server's Job or pod). The directory's own list of every managed pod
        // (when its watch is resumed, which a loaded machine can make happen here) is no dial.
        let job = server["job_name"].as_str().unwrap();
        let lookups: Vec<String> = c
            .fake
            .requests()
            .iter()
            .filter(|r| r.resource == "pods" && matches!(r.verb.as_str(), "get" | "list") && r.path.contains(job))
            .map(|r| r.path.clone())
            .collect();
        assert!(lookups.is_empty(), "dials looked the pod up: {lookups:?}");

        // Break the tunnels: the old session's next call answers or fails cleanly (it does not
        // hang), and a new session works at once.
        c.fake.drop_tunnels();
        let params = rmcp::model::CallToolRequestParams::new("get_current_time")
            .with_arguments(json!({"timezone": "UTC"}).as_object().unwrap().clone());
        let again = tokio::time::timeout(Duration::from_secs(15), client.call_tool(params)).await;
        match again.expect("a call on a broken tunnel does not hang") {
            Ok(res) => assert!(text(&res).contains("UTC") || res.is_error == Some(true), "{}", text(&res)),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let fresh = connect_http(&url).await;
        let res = call(&fresh, "get_current_time", json!({"timezone": "Europe/Paris"})).await;
        assert!(text(&res).contains("Europe/Paris"), "the next exchange dials afresh: {}", text(&res));
        assert!(c.fake.tunnels_opened() - before > opened, "a new tunnel was opened");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_suspend_and_resume_the_gateway_reaches_the_jobs_new_pod_at_once() {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::{Api, Patch, PatchParams};
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let (job, url) = (server["job_name"].as_str().unwrap().to_string(), server["urls"]["mcp"].as_str().unwrap());
        let first = connect_http(url).await;
        assert!(text(&call(&first, "get_current_time", json!({"timezone": "UTC"})).await).contains("UTC"));
        let old_pod = pod_of(&c.fake, &job).metadata.name.unwrap();

        let jobs: Api<Job> = Api::namespaced(c.fake.client(NS), NS);
        let suspend = |on: bool| Patch::Merge(json!({"spec": {"suspend": on}}));
        jobs.patch(&job, &PatchParams::default(), &suspend(true)).await.unwrap();
        let gone = c.fake.wait_until(Duration::from_secs(10), |f| f.get_json("pods", NS, &old_pod).is_none()).await;
        assert!(gone, "the suspended Job's pod is gone");
        jobs.patch(&job, &PatchParams::default(), &suspend(false)).await.unwrap();
        let ready = c
            .fake
            .wait_until(Duration::from_secs(20), |f| {
                f.objects::<Pod>(NS).iter().any(|p| {
                    p.metadata.name.as_deref().is_some_and(|n| n.starts_with(&format!("{job}-")) && n != old_pod)
                        && condition_time(p, "Ready").is_some_and(|(status, _)| status == "True")
                })
            })
            .await;
        assert!(ready, "the resumed Job runs a new pod that turns Ready");

        // The very first session after the resume goes to the new pod: the directory followed
        // the watch (a cached lookup would dial the old pod and answer 502 first).
        let fresh = connect_http(url).await;
        let res = call(&fresh, "get_current_time", json!({"timezone": "Asia/Tokyo"})).await;
        assert!(text(&res).contains("Asia/Tokyo"), "{}", text(&res));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_through_the_gateway_each_get_their_own_answers() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let url = server["urls"]["mcp"].as_str().unwrap().to_string();
        let zones = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Australia/Sydney"];
        let sessions = zones.iter().map(|zone| {
            let url = url.clone();
            async move {
                let client = connect_http(&url).await;
                for _ in 0..4 {
                    let res = call(&client, "get_current_time", json!({"timezone": zone})).await;
                    assert!(text(&res).contains(zone), "{zone} got {}", text(&res));
                }
            }
        });
        futures::future::join_all(sessions).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_kubernetes_shows_the_tools_and_sessions_the_bridge_reports() {
    within(LIMIT, async {
        let c = process_cluster().await;
        let (meta, _) = meta(&c, &[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap().to_string();
        let status = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        let tools: Vec<&str> =
            status["tools"].as_array().expect("tools in status").iter().filter_map(|t| t.as_str()).collect();
        assert!(tools.contains(&"get_current_time") && tools.contains(&"convert_time"), "{status}");
        assert_eq!(status["sessions"], 0, "{status}");
        assert!(status["ready_after_ms"].as_u64().is_some(), "{status}");
        let session = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        let status = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(status["sessions"], 1, "the open session is counted: {status}");
        let _ = session.cancel().await;
    })
    .await;
}
